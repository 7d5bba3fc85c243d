package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/parley-chat/parley/client"
	"github.com/parley-chat/parley/protocol"
)

// reconnectDials is how many dials the reconnect scenario keeps in flight over all its
// workers: beyond the server's listen backlog they only queue. reconnectHTTP is how many
// HTTP connections its catch-up requests use, over all its workers.
const (
	reconnectDials = 1024
	reconnectHTTP  = 256
)

// ReconnectConfig is the "reconnect" scenario: Clients connected clients in pairs (a
// direct conversation each) send Messages each to their partner; then every client drops
// at once, and all reconnect at once and catch up as a real client does: connect, then
// GET /sync and messages?after= for each conversation that moved. Worker processes hold the
// clients, a pair in one worker, so that each checks its own.
type ReconnectConfig struct {
	URL       string
	Clients   int
	Messages  int
	Prefix    string
	SourceIPs []string
	ServerPID int // to report the server's CPU use from the drop to the last catch-up; 0 = not
	// Procs is how many worker processes share the clients; 0 means one per ClientsPerProc.
	Procs int
	// Worker returns a command that runs ReconnectWorker on its standard input and output
	// (`parley bench reconnect-worker`).
	Worker func() *exec.Cmd
}

// ReconnectResult is what a reconnect run measured.
type ReconnectResult struct {
	Scenario   string  `json:"scenario"`
	Clients    int     `json:"clients"`
	Procs      int     `json:"procs"`
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
	return fmt.Sprintf(`reconnect: %d clients in %d %s dropped at once, %d messages each sent before the drop
  all reconnected in %.2fs, all caught up in %.2fs (%d HTTP requests)
  per client reconnect %s
  per client caught up %s
  missing %d  connect errors %d`,
		r.Clients, r.Procs, plural(r.Procs, "process", "processes"), r.Messages, r.ReconnectS, r.CaughtUpS, r.Requests,
		r.Reconnect, r.CatchUp, r.Missing, r.ConnectErrs) + r.Host.String()
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// reconnectJob is a reconnect worker's share: Clients in pairs, 2k and 2k+1 sharing the
// conversation Convs[k].
type reconnectJob struct {
	URL       string            `json:"url"`
	SourceIPs []string          `json:"source_ips,omitempty"`
	Messages  int               `json:"messages"`
	Dials     int               `json:"dials"`      // in flight at once
	HTTPConns int               `json:"http_conns"` // for the catch-up
	Clients   []protocol.Tokens `json:"clients"`
	Convs     []string          `json:"convs"`
}

// reconnectGo is the coordinator's word to drop, sent to every worker at once. At is when
// (Unix nanoseconds): the workers' times count from it.
type reconnectGo struct {
	Drop bool  `json:"drop"`
	At   int64 `json:"at"`
}

// reconnectReport is a reconnect worker's line: Ready once its clients are connected and
// have sent, then the figures once they have all caught up after the drop. Times count from
// reconnectGo.At.
type reconnectReport struct {
	Ready           bool       `json:"ready,omitempty"`
	Done            bool       `json:"done,omitempty"`
	Reconnect       *Histogram `json:"reconnect,omitempty"`
	CatchUp         *Histogram `json:"caught_up,omitempty"`
	LastConnectedNS int64      `json:"last_connected_ns,omitempty"`
	Missing         int        `json:"missing,omitempty"`
	Requests        int64      `json:"requests,omitempty"`
	ConnectErrs     int64      `json:"connect_errors,omitempty"`
}

// Reconnect runs the reconnect scenario: it creates the accounts and conversations, has
// the workers connect and send, tells them all to drop at once, and merges their figures.
func Reconnect(ctx context.Context, cfg ReconnectConfig) (ReconnectResult, error) {
	if cfg.Clients < 2 || cfg.Clients%2 != 0 || cfg.Messages <= 0 {
		return ReconnectResult{}, errors.New("reconnect: clients must be even and at least 2, messages positive")
	}
	if cfg.Worker == nil {
		return ReconnectResult{}, errors.New("reconnect: no worker command")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "r" + strconv.FormatInt(time.Now().UnixNano()%1e8, 36)
	}
	users, err := Accounts(ctx, cfg.URL, cfg.Prefix, cfg.Clients)
	if err != nil {
		return ReconnectResult{}, err
	}
	pairs := cfg.Clients / 2
	convs := make([]string, pairs)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64}, Timeout: 60 * time.Second}
	defer hc.CloseIdleConnections()
	if err := parallel(ctx, pairs, 64, func(k int) error {
		cl := client.New(cfg.URL, client.WithHTTPClient(hc))
		cl.SetTokens(users[2*k].Tokens())
		c, _, err := cl.CreateDirect(ctx, users[2*k+1].Tokens().UserID)
		if err != nil {
			return fmt.Errorf("create conversation: %w", err)
		}
		convs[k] = c.ID
		return nil
	}); err != nil {
		return ReconnectResult{}, err
	}
	hc.CloseIdleConnections()

	procs := min(procsFor(cfg.Procs, cfg.Clients, ClientsPerProc), pairs) // a pair stays in one worker
	res := ReconnectResult{Scenario: "reconnect", Clients: cfg.Clients, Procs: procs, Messages: cfg.Messages}
	tokens := make([]protocol.Tokens, len(users))
	for i, u := range users {
		tokens[i] = u.Tokens()
	}
	jobs := splitPairs(tokens, convs, procs)
	ctx, cancel := context.WithCancel(ctx) // ends every worker on a failure or Ctrl-C
	defer cancel()
	workers := make([]*proc, procs)
	defer func() {
		for _, w := range workers {
			if w != nil {
				w.kill()
			}
		}
	}()
	if err := startWorkers(ctx, cancel, procs, func(i int) error {
		j := &jobs[i]
		j.URL, j.SourceIPs, j.Messages, j.Dials = cfg.URL, cfg.SourceIPs, cfg.Messages, max(1, reconnectDials/procs)
		j.HTTPConns = max(1, reconnectHTTP/procs)
		w, err := startProc(ctx, "reconnect", cfg.Worker(), j)
		if err != nil {
			return err
		}
		var rep reconnectReport
		if err = w.read(&rep); err == nil && !rep.Ready {
			err = w.errorf("not ready")
		}
		if err != nil {
			w.kill()
			return err
		}
		workers[i] = w
		return nil
	}); err != nil {
		return res, err
	}

	// The drop, in every worker at once: they count from the same instant of this host's
	// clock, however late each reads the word.
	hostFrom := readHost(cfg.ServerPID)
	drop := reconnectGo{Drop: true, At: time.Now().UnixNano()}
	for _, w := range workers {
		if err := w.send(drop); err != nil {
			return res, w.errorf("sending the drop: %w", err)
		}
	}
	var recH, catchH Histogram
	var last time.Duration
	reports := make([]reconnectReport, procs)
	errs := make([]error, procs)
	var wg sync.WaitGroup
	for i, w := range workers {
		wg.Go(func() { errs[i] = w.read(&reports[i]) })
	}
	wg.Wait()
	res.Host = hostBetween(hostFrom, readHost(cfg.ServerPID))
	if err := ctx.Err(); err != nil {
		return res, err // Ctrl-C: the workers' figures are of clients that stopped
	}
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	for i, w := range workers {
		workers[i] = nil
		if err := w.wait(); err != nil {
			return res, err
		}
		r := reports[i]
		if !r.Done || r.Reconnect == nil || r.CatchUp == nil {
			return res, w.errorf("no figures in its report")
		}
		recH.Merge(r.Reconnect)
		catchH.Merge(r.CatchUp)
		last = max(last, time.Duration(r.LastConnectedNS))
		res.Missing += r.Missing
		res.Requests += r.Requests
		res.ConnectErrs += r.ConnectErrs
	}
	res.ReconnectS, res.CaughtUpS = last.Seconds(), catchH.Max().Seconds()
	res.Reconnect, res.CatchUp = recH.Summary(), catchH.Summary()
	return res, nil
}

// ReconnectWorker is one reconnect worker process (`parley bench reconnect-worker`): it
// reads its job from in, connects its clients, has each send its messages and take a sync
// token, and reports ready on out; at the word to drop it closes every connection, then
// reconnects them all at once, has each catch up over HTTP and checks that it holds every
// message its partner had acked, and reports the figures.
func ReconnectWorker(ctx context.Context, in io.Reader, out io.Writer) error {
	r := newReporter(out)
	dec := json.NewDecoder(in)
	var job reconnectJob
	if err := dec.Decode(&job); err != nil {
		return r.fail(fmt.Errorf("reading the job: %w", err))
	}
	n := len(job.Clients)
	if n == 0 || n%2 != 0 || len(job.Convs) != n/2 || job.Messages <= 0 {
		return r.fail(fmt.Errorf("a job of %d clients, %d conversations, %d messages", n, len(job.Convs), job.Messages))
	}
	pool := max(1, job.HTTPConns)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: pool, MaxConnsPerHost: pool}, Timeout: 60 * time.Second}
	// Clients that share the pooled transport, for the catch-up requests.
	apis := make([]*client.Client, n)
	for i, t := range job.Clients {
		apis[i] = client.New(job.URL, client.WithHTTPClient(hc))
		apis[i].SetTokens(t)
	}
	d := newDialer(job.URL, job.SourceIPs)
	conns := make([]*lconn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.close()
			}
		}
	}()
	if err := parallel(ctx, n, 256, func(i int) error {
		c, err := d.dial(ctx, job.Clients[i].AccessToken)
		conns[i] = c
		return err
	}); err != nil {
		return r.fail(fmt.Errorf("connect: %w", err))
	}

	// Before the drop: each client sends its messages and records the acked seqs, then a
	// sync token is taken as a client would have from its last sync.
	acked := make([][]int64, n) // seqs client i sent
	since := make([]string, n)
	if err := parallel(ctx, n, 256, func(i int) error {
		sb, err := apis[i].Sync(ctx, "")
		if err != nil {
			return err
		}
		since[i] = sb.NextSince
		c := conns[i]
		for range job.Messages {
			id := uuid.Must(uuid.NewV7()).String()
			if err := c.send(id, job.Convs[i/2], "x"); err != nil {
				return err
			}
			for {
				// A server that never acks must not hang the run, nor leave an orphan worker
				// when the coordinator is gone (it is read only for the word to drop).
				_ = c.nc.SetReadDeadline(time.Now().Add(30 * time.Second))
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
		return r.fail(fmt.Errorf("send before the drop: %w", err))
	}
	if err := r.say(reconnectReport{Ready: true}); err != nil {
		return err
	}
	var g reconnectGo
	if err := dec.Decode(&g); err != nil {
		return fmt.Errorf("waiting for the drop: %w", err) // the coordinator is gone
	}
	if !g.Drop || g.At == 0 {
		return r.fail(fmt.Errorf("waiting for the drop, got %+v", g))
	}

	// The drop: every connection at once, before reading what the partners sent.
	start := time.Unix(0, g.At)
	for i, c := range conns {
		c.close()
		conns[i] = nil
	}
	var (
		rep           = reconnectReport{Done: true, Reconnect: new(Histogram), CatchUp: new(Histogram)}
		requests      atomic.Int64
		connectErrs   atomic.Int64
		lastConnected atomic.Int64
		missing       = make([]int, n)
		wg            sync.WaitGroup
		sem           = make(chan struct{}, max(1, job.Dials))
	)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			var c *lconn
			var err error
			for attempt := 0; attempt < 20 && ctx.Err() == nil; attempt++ {
				if c, err = d.dial(ctx, job.Clients[i].AccessToken); err == nil {
					break
				}
				connectErrs.Add(1)
				time.Sleep(time.Duration(50*(attempt+1)) * time.Millisecond)
			}
			<-sem
			if c == nil {
				missing[i] = job.Messages
				return
			}
			conns[i] = c
			rep.Reconnect.Record(time.Since(start))
			for {
				el := int64(time.Since(start))
				if m := lastConnected.Load(); el <= m || lastConnected.CompareAndSwap(m, el) {
					break
				}
			}
			// Catch up: what moved since the last sync, then the conversation's events after
			// the last seq seen (none were read after the drop's sends).
			partner := i ^ 1
			sb, err := apis[i].Sync(ctx, since[i])
			requests.Add(1)
			if err != nil {
				missing[i] = job.Messages
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
						if m.SenderID == job.Clients[partner].UserID {
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
			rep.CatchUp.Record(time.Since(start))
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return r.fail(err) // not figures: the clients stopped
	}
	rep.LastConnectedNS, rep.Requests, rep.ConnectErrs = lastConnected.Load(), requests.Load(), connectErrs.Load()
	for _, m := range missing {
		rep.Missing += m
	}
	if err := r.say(rep); err != nil {
		return err
	}
	// Hold the connections until the coordinator has every worker's report: closing them
	// now would put this worker's hang-ups into the others' catch-up.
	_, _ = io.Copy(io.Discard, io.MultiReader(dec.Buffered(), in))
	return nil
}

// splitPairs shares the clients (pairs 2k and 2k+1, with the conversation convs[k]) among
// procs workers, in contiguous runs of pairs, so that a pair is always in one worker.
func splitPairs(clients []protocol.Tokens, convs []string, procs int) []reconnectJob {
	pairs := len(convs)
	jobs := make([]reconnectJob, procs)
	for k := range pairs {
		j := &jobs[k*procs/pairs]
		j.Clients = append(j.Clients, clients[2*k], clients[2*k+1])
		j.Convs = append(j.Convs, convs[k])
	}
	return jobs
}

// parallel runs f(0..n-1), at most width at a time, and returns one of their errors.
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
