package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/parley-chat/parley/client"
	"github.com/parley-chat/parley/protocol"
)

// PagingConfig is the "paging" scenario: what a page costs as an account and a log grow. One
// user is a member of Conversations groups, another of Small; a direct conversation holds
// Messages messages. Each read is then timed Reps times: a conversation-list page (the
// first, and one deep in the list), a sync without a token, and history pages at the newest
// end, the middle and the oldest end of the log. A list or history page should cost the same
// however large the account or the log is (issue 14, item 8).
type PagingConfig struct {
	URL           string
	Conversations int // memberships of the large account (default 100,000)
	Small         int // memberships of the small one (default 100)
	Messages      int // events in the long conversation (default 1,000,000)
	Reps          int // timings of each read (default 30)
	Prefix        string
}

// PagingResult is one row per read.
type PagingResult struct {
	Scenario      string       `json:"scenario"`
	Conversations int          `json:"conversations"`
	Small         int          `json:"small"`
	Messages      int          `json:"messages"`
	SetupS        float64      `json:"setup_s"`
	Reads         []PagingRead `json:"reads"`
}

// PagingRead is the timings of one read.
type PagingRead struct {
	Name  string  `json:"name"`
	P50MS float64 `json:"p50_ms"`
	P90MS float64 `json:"p90_ms"`
	MaxMS float64 `json:"max_ms"`
	Bytes int     `json:"bytes"` // of the answer, as JSON
	Items int     `json:"items"` // conversations or messages in it
}

func (r PagingResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "paging: a user in %d conversations, one in %d; a conversation of %d events (setup %.0fs)\n",
		r.Conversations, r.Small, r.Messages, r.SetupS)
	fmt.Fprintf(&b, "  %-44s %9s %9s %9s %10s %7s\n", "read", "p50 ms", "p90 ms", "max ms", "bytes", "items")
	for _, rd := range r.Reads {
		fmt.Fprintf(&b, "  %-44s %9.2f %9.2f %9.2f %10d %7d\n", rd.Name, rd.P50MS, rd.P90MS, rd.MaxMS, rd.Bytes, rd.Items)
	}
	return strings.TrimRight(b.String(), "\n")
}

// Paging runs the paging scenario against cfg.URL.
func Paging(ctx context.Context, cfg PagingConfig) (PagingResult, error) {
	if cfg.Conversations <= 0 {
		cfg.Conversations = 100_000
	}
	if cfg.Small <= 0 {
		cfg.Small = 100
	}
	if cfg.Messages <= 0 {
		cfg.Messages = 1_000_000
	}
	if cfg.Reps <= 0 {
		cfg.Reps = 30
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "p" + strconv.FormatInt(time.Now().UnixNano()%1e8, 36)
	}
	res := PagingResult{Scenario: "paging", Conversations: cfg.Conversations, Small: cfg.Small, Messages: cfg.Messages}
	start := time.Now()
	users, err := Accounts(ctx, cfg.URL, cfg.Prefix, 3)
	if err != nil {
		return res, err
	}
	large, small, partner := users[0], users[1], users[2]
	if err := makeGroups(ctx, large, cfg.Conversations); err != nil {
		return res, err
	}
	if err := makeGroups(ctx, small, cfg.Small); err != nil {
		return res, err
	}
	long, _, err := partner.CreateDirect(ctx, large.Tokens().UserID)
	if err != nil {
		return res, fmt.Errorf("paging: direct conversation: %w", err)
	}
	if err := fill(ctx, partner, long.ID, cfg.Messages); err != nil {
		return res, err
	}
	res.SetupS = time.Since(start).Seconds()

	pageAt := func(c *client.Client, n int) (string, error) { // the cursor of the nth page
		cursor := ""
		for range n - 1 {
			page, err := c.Conversations(ctx, cursor, 50)
			if err != nil {
				return "", err
			}
			cursor = page.NextCursor
		}
		return cursor, nil
	}
	// A page deep in the list (the 20th, or the last there is), and the small account's last.
	nLarge, nSmall := min(20, (cfg.Conversations+49)/50), (cfg.Small+49)/50
	deepLarge, err := pageAt(large, nLarge)
	if err != nil {
		return res, err
	}
	deepSmall, err := pageAt(small, nSmall)
	if err != nil {
		return res, err
	}
	// A sync token from after everything, then one change for each account: an incremental
	// sync should cost what the change costs, whatever the account holds.
	tokenAfterOne := func(c *client.Client) (string, error) {
		all, err := c.Sync(ctx, "")
		if err != nil {
			return "", err
		}
		page, err := c.Conversations(ctx, "", 5)
		if err != nil {
			return "", err
		}
		for _, cv := range page.Conversations {
			if cv.Type == protocol.Group {
				return all.NextSince, c.RenameConversation(ctx, cv.ID, "renamed")
			}
		}
		return "", fmt.Errorf("paging: no group to rename")
	}
	sinceLarge, err := tokenAfterOne(large)
	if err != nil {
		return res, err
	}
	sinceSmall, err := tokenAfterOne(small)
	if err != nil {
		return res, err
	}
	last := int64(cfg.Messages) + 1 // the created event, then the messages
	reads := []struct {
		name string
		do   func() (any, int, error)
	}{
		{fmt.Sprintf("conversations, first page (%d)", cfg.Small), listPage(ctx, small, "")},
		{fmt.Sprintf("conversations, first page (%d)", cfg.Conversations), listPage(ctx, large, "")},
		{fmt.Sprintf("conversations, page %d (%d)", nSmall, cfg.Small), listPage(ctx, small, deepSmall)},
		{fmt.Sprintf("conversations, page %d (%d)", nLarge, cfg.Conversations), listPage(ctx, large, deepLarge)},
		// Sync pages of the same size for both accounts (the small one's whole list), and
		// the default page of 500.
		{fmt.Sprintf("sync, first page of %d (%d)", cfg.Small, cfg.Small), syncPage(ctx, small, cfg.Small)},
		{fmt.Sprintf("sync, first page of %d (%d)", cfg.Small, cfg.Conversations), syncPage(ctx, large, cfg.Small)},
		{fmt.Sprintf("sync, first page of 500 (%d)", cfg.Conversations), syncPage(ctx, large, 500)},
		{fmt.Sprintf("sync, one change since the token (%d)", cfg.Small), syncSince(ctx, small, sinceSmall)},
		{fmt.Sprintf("sync, one change since the token (%d)", cfg.Conversations), syncSince(ctx, large, sinceLarge)},
		{"history, newest page", historyPage(ctx, large, long.ID, 0)},
		{"history, middle page", historyPage(ctx, large, long.ID, last/2)},
		{"history, oldest page", historyPage(ctx, large, long.ID, 51)},
	}
	for _, rd := range reads {
		var times []time.Duration
		var size, items int
		for range cfg.Reps {
			t0 := time.Now()
			v, n, err := rd.do()
			if err != nil {
				return res, fmt.Errorf("paging: %s: %w", rd.name, err)
			}
			times = append(times, time.Since(t0))
			if size == 0 {
				b, _ := json.Marshal(v)
				size, items = len(b), n
			}
		}
		slices.Sort(times)
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		res.Reads = append(res.Reads, PagingRead{Name: rd.name, P50MS: ms(times[len(times)/2]),
			P90MS: ms(times[len(times)*9/10]), MaxMS: ms(times[len(times)-1]), Bytes: size, Items: items})
	}
	return res, nil
}

func listPage(ctx context.Context, c *client.Client, cursor string) func() (any, int, error) {
	return func() (any, int, error) {
		p, err := c.Conversations(ctx, cursor, 50)
		return p, len(p.Conversations), err
	}
}

func syncPage(ctx context.Context, c *client.Client, limit int) func() (any, int, error) {
	return func() (any, int, error) {
		s, err := c.SyncPage(ctx, "", limit)
		return s, len(s.Conversations), err
	}
}

func syncSince(ctx context.Context, c *client.Client, since string) func() (any, int, error) {
	return func() (any, int, error) {
		s, err := c.SyncPage(ctx, since, 0)
		if err == nil && len(s.Conversations) != 1 {
			err = fmt.Errorf("%d conversations changed since the token, want 1", len(s.Conversations))
		}
		return s, len(s.Conversations), err
	}
}

func historyPage(ctx context.Context, c *client.Client, conv string, before int64) func() (any, int, error) {
	return func() (any, int, error) {
		m, err := c.Messages(ctx, conv, before, 0, 50)
		return m, len(m.Messages), err
	}
}

// makeGroups makes n groups of which c is the only member, 16 requests at a time.
func makeGroups(ctx context.Context, c *client.Client, n int) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(n); i = next.Add(1) {
				if _, err := c.CreateGroup(ctx, "g"+strconv.FormatInt(i, 10), nil); err != nil {
					errc <- fmt.Errorf("paging: group %d: %w", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	return <-errc
}

// fill sends n messages into conv from c, many in flight.
func fill(ctx context.Context, c *client.Client, conv string, n int) error {
	conn, err := c.Connect(ctx)
	if err != nil {
		return fmt.Errorf("paging: connect: %w", err)
	}
	defer conn.Close()
	go func() { // the Conn's events (its own messages among them) must be read
		for range conn.Events() {
		}
	}()
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	for range 256 {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(n) && failed.Load() == nil; i = next.Add(1) {
				if _, err := conn.SendID(ctx, uuid.NewString(), conv, "m"+strconv.FormatInt(i, 10)); err != nil {
					err = fmt.Errorf("paging: send %d: %w", i, err)
					failed.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	wg.Wait()
	if p := failed.Load(); p != nil {
		return *p
	}
	return nil
}
