package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/parley-chat/parley/client"
	"github.com/parley-chat/parley/protocol"
)

// ReconnectConfig is the "reconnect" scenario: Clients connected clients in pairs (a
// direct conversation each) send Messages each to their partner; then every client drops
// at once, and all reconnect at once and catch up as a real client does: connect, then
// GET /sync and messages?after= for each conversation that moved.
type ReconnectConfig struct {
	URL       string
	Clients   int
	Messages  int
	Prefix    string
	SourceIPs []string
	ServerPID int // to report the server's CPU use from the drop to the last catch-up; 0 = not
}

// ReconnectResult is what a reconnect run measured.
type ReconnectResult struct {
	Scenario   string  `json:"scenario"`
	Clients    int     `json:"clients"`
	Messages   int     `json:"messages_each"`
	ReconnectS float64 `json:"all_reconnected_s"`
	CaughtUpS  float64 `json:"all_caught_up_s"`
	Reconnect  Summary `json:"reconnect"`
	CatchUp    Summary `json:"caught_up"`
	Missing    int     `json:"missing"`
	// Host is how the machine's CPU was spent from the drop until every client had caught
	// up (Linux).
	Host        *HostCPU `json:"host,omitempty"`
	Requests    int64    `json:"http_requests"`
	ConnectErrs int64    `json:"connect_errors"`
}

func (r ReconnectResult) String() string {
	return fmt.Sprintf(`reconnect: %d clients dropped at once, %d messages each sent before the drop
  all reconnected in %.2fs, all caught up in %.2fs (%d HTTP requests)
  per client reconnect %s
  per client caught up %s
  missing %d  connect errors %d`,
		r.Clients, r.Messages, r.ReconnectS, r.CaughtUpS, r.Requests, r.Reconnect, r.CatchUp, r.Missing, r.ConnectErrs) + r.Host.String()
}

// Reconnect runs the reconnect scenario.
func Reconnect(ctx context.Context, cfg ReconnectConfig) (ReconnectResult, error) {
	if cfg.Clients < 2 || cfg.Clients%2 != 0 || cfg.Messages <= 0 {
		return ReconnectResult{}, errors.New("reconnect: clients must be even and at least 2, messages positive")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "r" + strconv.FormatInt(time.Now().UnixNano()%1e8, 36)
	}
	users, err := Accounts(ctx, cfg.URL, cfg.Prefix, cfg.Clients)
	if err != nil {
		return ReconnectResult{}, err
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}, Timeout: 60 * time.Second}
	var requests atomic.Int64
	// Clients that share the pooled transport, for the catch-up requests.
	apis := make([]*client.Client, len(users))
	for i, u := range users {
		apis[i] = client.New(cfg.URL, client.WithHTTPClient(hc))
		apis[i].SetTokens(u.Tokens())
	}
	convs := make([]string, cfg.Clients/2)
	for i := range convs {
		c, _, err := apis[2*i].CreateDirect(ctx, users[2*i+1].Tokens().UserID)
		if err != nil {
			return ReconnectResult{}, fmt.Errorf("create conversation: %w", err)
		}
		convs[i] = c.ID
	}
	d := newDialer(cfg.URL, cfg.SourceIPs)
	conns := make([]*lconn, cfg.Clients)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.close()
			}
		}
	}()
	if err := parallel(ctx, cfg.Clients, 256, func(i int) error {
		c, err := d.dial(ctx, users[i].Tokens().AccessToken)
		conns[i] = c
		return err
	}); err != nil {
		return ReconnectResult{}, fmt.Errorf("connect: %w", err)
	}

	// Before the drop: each client sends its messages and records the acked seqs, then a
	// sync token is taken as a client would have from its last sync.
	acked := make([][]int64, cfg.Clients) // seqs client i sent
	since := make([]string, cfg.Clients)
	if err := parallel(ctx, cfg.Clients, 256, func(i int) error {
		sb, err := apis[i].Sync(ctx, "")
		if err != nil {
			return err
		}
		since[i] = sb.NextSince
		c := conns[i]
		for range cfg.Messages {
			id := uuid.Must(uuid.NewV7()).String()
			if err := c.send(id, convs[i/2], "x"); err != nil {
				return err
			}
			for {
				p, err := c.next()
				if err != nil {
					return err
				}
				if f := parse(p); f.typ == protocol.FrameAck && f.id == id {
					acked[i] = append(acked[i], f.seq)
					break
				}
			}
		}
		return nil
	}); err != nil {
		return ReconnectResult{}, fmt.Errorf("send before the drop: %w", err)
	}
	// The drop: every connection at once, before reading what the partners sent.
	for i, c := range conns {
		c.close()
		conns[i] = nil
	}

	var recH, catchH Histogram
	var connectErrs atomic.Int64
	missing := make([]int, cfg.Clients)
	var lastConnected atomic.Int64
	hostFrom := readHost(cfg.ServerPID)
	start := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 1024) // dials in flight: beyond the listen backlog they only queue
	for i := range cfg.Clients {
		wg.Go(func() {
			sem <- struct{}{}
			var c *lconn
			var err error
			for attempt := 0; attempt < 20; attempt++ {
				if c, err = d.dial(ctx, users[i].Tokens().AccessToken); err == nil {
					break
				}
				connectErrs.Add(1)
				time.Sleep(time.Duration(50*(attempt+1)) * time.Millisecond)
			}
			<-sem
			if err != nil {
				missing[i] = cfg.Messages
				return
			}
			conns[i] = c
			recH.Record(time.Since(start))
			for {
				n := int64(time.Since(start))
				if m := lastConnected.Load(); n <= m || lastConnected.CompareAndSwap(m, n) {
					break
				}
			}
			// Catch up: what moved since the last sync, then the conversation's events after
			// the last seq seen (none were read after the drop's sends).
			partner := i ^ 1
			sb, err := apis[i].Sync(ctx, since[i])
			requests.Add(1)
			if err != nil {
				missing[i] = cfg.Messages
				return
			}
			got := map[int64]bool{}
			for _, cv := range sb.Conversations {
				after := int64(0)
				for {
					page, err := apis[i].Messages(ctx, cv.ID, 0, after, 200)
					requests.Add(1)
					if err != nil {
						break
					}
					for _, m := range page.Messages {
						if m.SenderID == users[partner].Tokens().UserID {
							got[m.Seq] = true
						}
						after = m.Seq
					}
					if !page.HasMore || len(page.Messages) == 0 {
						break
					}
				}
			}
			for _, seq := range acked[partner] {
				if !got[seq] {
					missing[i]++
				}
			}
			catchH.Record(time.Since(start))
		})
	}
	wg.Wait()
	res := ReconnectResult{
		Host:     hostBetween(hostFrom, readHost(cfg.ServerPID)),
		Scenario: "reconnect", Clients: cfg.Clients, Messages: cfg.Messages,
		ReconnectS: time.Duration(lastConnected.Load()).Seconds(), CaughtUpS: catchH.Max().Seconds(),
		Reconnect: recH.Summary(), CatchUp: catchH.Summary(), Requests: requests.Load(), ConnectErrs: connectErrs.Load(),
	}
	for _, m := range missing {
		res.Missing += m
	}
	return res, nil
}

// parallel runs f(0..n-1) with at most width at a time and returns the first error.
func parallel(ctx context.Context, n, width int, f func(i int) error) error {
	sem := make(chan struct{}, width)
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := f(i); err != nil {
				select {
				case errc <- err:
				default:
				}
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return ctx.Err()
	}
}
