package loadgen

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// idleHeartbeat is how often a worker pings each connection: half the server's default
// heartbeat, as a client does.
const idleHeartbeat = 5 * time.Second

// IdleConfig is the "idle" scenario: Conns authenticated connections spread over Users
// accounts, held open and heartbeating by worker processes, while the server's memory is
// read.
type IdleConfig struct {
	URL       string
	Conns     int
	Users     int
	Hold      time.Duration // how long to hold them after the last one connected
	ServerPID int           // read RSS from /proc/<pid>; 0 = not measured
	Prefix    string
	// Settle is how long to wait after account setup before the first RSS reading, so
	// that the server has returned the setup's free heap to the OS (its sweeper runs
	// every half heartbeat, 5 s by default). `parley bench idle` waits 7 s.
	Settle time.Duration
	// SourceIPs to dial from, round-robin (e.g. 127.0.0.2..9), so that more connections than
	// one address's ephemeral ports can be held. Empty: the system's choice.
	SourceIPs []string
	// Procs is how many worker processes share the connections; 0 means one per
	// ConnsPerProc. Each process may hold at most 20,000 open files here, and the
	// workers' memory is measured apart from the coordinator's.
	Procs int
	// Worker returns a command that runs IdleWorker on its standard input and output
	// (`parley bench idle-worker`). Idle starts it Procs times.
	Worker func() *exec.Cmd
}

// IdleResult is what an idle run measured.
type IdleResult struct {
	Scenario          string  `json:"scenario"`
	Conns             int     `json:"conns"`
	Procs             int     `json:"procs"`
	ServerRSSBeforeKB int64   `json:"server_rss_before_kib"`
	ServerRSSAfterKB  int64   `json:"server_rss_after_kib"`
	ServerKBPerConn   float64 `json:"server_kib_per_conn"`
	ClientRSSKB       int64   `json:"client_rss_kib"` // the workers', summed
	ConnectS          float64 `json:"connect_s"`
	Pings             int64   `json:"pings"` // heartbeats sent, over all connections, from connecting to the end
}

func (r IdleResult) String() string {
	return fmt.Sprintf(`idle: %d connections held by %d %s (connected in %.1fs, %d heartbeats sent)
  server RSS %d KiB → %d KiB: %.2f KiB per connection
  client RSS %d KiB`, r.Conns, r.Procs, plural(r.Procs, "process", "processes"), r.ConnectS, r.Pings, r.ServerRSSBeforeKB, r.ServerRSSAfterKB,
		r.ServerKBPerConn, r.ClientRSSKB)
}

// idleJob is what the coordinator sends a worker, as one JSON value on its standard input.
type idleJob struct {
	URL       string        `json:"url"`
	SourceIPs []string      `json:"source_ips,omitempty"`
	Tokens    []string      `json:"tokens"` // one connection each
	Heartbeat time.Duration `json:"heartbeat"`
}

// idleReport is a line a worker writes on its standard output: one when its connections
// are up (or it failed), one at the first connection the server closes, if any, and a
// final one (Done) when its standard input has closed.
type idleReport struct {
	Connected int     `json:"connected,omitempty"`
	ConnectS  float64 `json:"connect_s,omitempty"`
	Done      bool    `json:"done,omitempty"`
	Closed    int     `json:"closed,omitempty"` // connections the server ended during the hold
	Reason    string  `json:"reason,omitempty"` // why, for one of them
	Pings     int64   `json:"pings,omitempty"`
	RSSKiB    int64   `json:"rss_kib,omitempty"` // measured while still holding them
}

// Idle runs the idle scenario: it creates the accounts, starts the workers, holds the
// connections for cfg.Hold and reads the server's RSS before and after. It fails if the
// server closed any connection during the hold, since the figure would then be per
// connection that was not there.
func Idle(ctx context.Context, cfg IdleConfig) (IdleResult, error) {
	if cfg.Conns <= 0 || cfg.Users <= 0 {
		return IdleResult{}, errors.New("idle: conns and users must be positive")
	}
	if cfg.Worker == nil {
		return IdleResult{}, errors.New("idle: no worker command")
	}
	procs := procsFor(cfg.Procs, cfg.Conns, ConnsPerProc)
	if cfg.Prefix == "" {
		cfg.Prefix = "i" + strconv.FormatInt(time.Now().UnixNano()%1e8, 36)
	}
	users, err := Accounts(ctx, cfg.URL, cfg.Prefix, cfg.Users)
	if err != nil {
		return IdleResult{}, err
	}
	res := IdleResult{Scenario: "idle", Conns: cfg.Conns, Procs: procs}
	if err := sleep(ctx, cfg.Settle); err != nil {
		return res, err
	}
	res.ServerRSSBeforeKB = rssKiB(cfg.ServerPID)

	jobs := make([]idleJob, procs)
	for i := range cfg.Conns {
		j := &jobs[i%procs]
		j.Tokens = append(j.Tokens, users[i%len(users)].Tokens().AccessToken)
	}
	// Cancelled on a failed start or when ctx ends (Ctrl-C): every worker still running is
	// killed then, whatever it is waiting for.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	workers := make([]*idleWorker, procs)
	defer func() {
		for _, w := range workers {
			if w != nil {
				w.kill()
			}
		}
	}()
	start := time.Now()
	if err := startWorkers(ctx, cancel, procs, func(i int) error {
		j := &jobs[i]
		j.URL, j.SourceIPs, j.Heartbeat = cfg.URL, cfg.SourceIPs, idleHeartbeat
		w, err := startIdleWorker(ctx, cfg.Worker(), *j)
		workers[i] = w // nil on failure: startIdleWorker has killed it
		return err
	}); err != nil {
		return res, err
	}
	res.ConnectS = time.Since(start).Seconds()

	// Hold, unless the server closes a connection first: then the run has failed, and
	// there is no point holding the rest.
	broke := make(chan struct{}, procs)
	for _, w := range workers {
		w.watching = true
		go w.watch(broke)
	}
	hold := time.NewTimer(cfg.Hold)
	defer hold.Stop()
	select {
	case <-ctx.Done():
		return res, ctx.Err()
	case <-broke:
	case <-hold.C:
		res.ServerRSSAfterKB = rssKiB(cfg.ServerPID)
		res.ServerKBPerConn = float64(res.ServerRSSAfterKB-res.ServerRSSBeforeKB) / float64(cfg.Conns)
	}

	closed, reason := 0, ""
	for i, w := range workers {
		rep, err := w.finish()
		workers[i] = nil
		if err != nil {
			return res, err
		}
		res.ClientRSSKB += rep.RSSKiB
		res.Pings += rep.Pings
		closed += rep.Closed
		if rep.Reason != "" {
			reason = rep.Reason
		}
	}
	if closed > 0 {
		return res, fmt.Errorf("idle: the server closed %d of %d connections during the hold (%s)", closed, cfg.Conns, reason)
	}
	return res, nil
}

// idleWorker is one running idle worker, seen from the coordinator.
type idleWorker struct {
	*proc
	final    chan idleFinal // from watch
	watching bool           // watch runs
}

type idleFinal struct {
	rep idleReport
	err error
}

// startIdleWorker starts cmd, hands it its job and waits until it holds every connection.
// The worker is killed if ctx ends before finish or kill.
func startIdleWorker(ctx context.Context, cmd *exec.Cmd, job idleJob) (*idleWorker, error) {
	p, err := startProc(ctx, "idle", cmd, job)
	if err != nil {
		return nil, err
	}
	w := &idleWorker{proc: p, final: make(chan idleFinal, 1)}
	var rep idleReport
	err = w.read(&rep)
	if err == nil && rep.Closed > 0 {
		err = fmt.Errorf("idle: the server closed a connection before the worker had reported (%s)", rep.Reason)
	}
	if err == nil && rep.Connected != len(job.Tokens) {
		err = fmt.Errorf("idle: a worker connected %d of %d", rep.Connected, len(job.Tokens))
	}
	if err != nil {
		w.kill()
		return nil, err
	}
	return w, nil
}

// watch reads the worker's reports after the first until its final one, which it hands to
// finish. It signals broke when the worker says a connection was closed, and when the
// worker ends or fails before it is asked to: either way the hold has failed.
func (w *idleWorker) watch(broke chan<- struct{}) {
	signal := func() {
		select {
		case broke <- struct{}{}:
		default: // one signal is enough
		}
	}
	for {
		var rep idleReport
		err := w.read(&rep)
		if err == nil && !rep.Done {
			if rep.Closed > 0 {
				signal()
			}
			continue
		}
		signal() // harmless after the hold: nobody reads broke then
		w.final <- idleFinal{rep, err}
		return
	}
}

// finish closes the worker's input, which tells it to report and exit, and waits for it.
// watch must be running.
func (w *idleWorker) finish() (idleReport, error) {
	w.in.Close()
	f := <-w.final
	if err := w.wait(); err != nil && f.err == nil {
		f.err = err
	}
	return f.rep, f.err
}

// kill ends a worker that is not to finish, and waits for it (and for watch, if it runs,
// since its reads must end before the pipe is closed).
func (w *idleWorker) kill() {
	if w.watching {
		w.unhook()
		_ = w.cmd.Process.Kill()
		<-w.final
	}
	w.proc.kill()
}

// IdleWorker is one idle worker process (`parley bench idle-worker`): it reads its job
// from in, dials every connection, reports on out, then heartbeats them, answering the
// server's pings and discarding what else comes, until in is closed; then it writes its
// final report (its own RSS, measured while it still holds the connections) and closes
// them. One goroutine per connection reads; one goroutine heartbeats them all, spread over
// the interval as real clients' heartbeats are.
func IdleWorker(ctx context.Context, in io.Reader, out io.Writer) error {
	r := newReporter(out) // reports come from the readers too
	say, fail := func(rep idleReport) error { return r.say(rep) }, r.fail
	var job idleJob
	dec := json.NewDecoder(in)
	if err := dec.Decode(&job); err != nil {
		return fail(fmt.Errorf("reading the job: %w", err))
	}
	if len(job.Tokens) == 0 {
		return fail(errors.New("no connections to hold"))
	}
	if job.Heartbeat <= 0 {
		job.Heartbeat = idleHeartbeat
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var (
		conns    = make([]*lconn, len(job.Tokens))
		stopping atomic.Bool // set before we close the connections ourselves
		closed   atomic.Int64
		pings    atomic.Int64
		mu       sync.Mutex
		reason   string
		first    sync.Once
		readers  sync.WaitGroup
	)
	closeAll := func() {
		stopping.Store(true)
		for _, c := range conns {
			if c != nil {
				c.close()
			}
		}
		readers.Wait()
	}
	defer closeAll()
	// A connection's reader starts as soon as it is dialed, so that the server's pings are
	// answered however long the others take.
	read := func(c *lconn) {
		for {
			if _, err := c.next(); err != nil {
				if !stopping.Load() {
					closed.Add(1)
					mu.Lock()
					reason = err.Error()
					mu.Unlock()
					// Say so at once: the coordinator stops the hold.
					first.Do(func() { _ = say(idleReport{Closed: 1, Reason: err.Error()}) })
				}
				return
			}
		}
	}
	d := newDialer(job.URL, job.SourceIPs)
	start := time.Now()
	if err := parallel(ctx, len(conns), 64, func(i int) error {
		c, err := d.dial(ctx, job.Tokens[i])
		if err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		conns[i] = c
		readers.Go(func() { read(c) })
		return nil
	}); err != nil {
		return fail(err)
	}
	if err := say(idleReport{Connected: len(conns), ConnectS: time.Since(start).Seconds()}); err != nil {
		return err
	}

	var beats sync.WaitGroup
	beats.Go(func() { heartbeat(ctx, conns, job.Heartbeat, &pings) })
	// Hold until the coordinator closes our input (or dies, which closes it too).
	_, _ = io.Copy(io.Discard, io.MultiReader(dec.Buffered(), in))
	rep := idleReport{Done: true, RSSKiB: rssKiB(os.Getpid())}
	cancel()
	beats.Wait()
	closeAll()
	rep.Closed, rep.Pings, rep.Reason = int(closed.Load()), pings.Load(), reason
	return say(rep)
}

// heartbeat pings every connection once per interval, spread evenly over it, until ctx
// ends. A failed write is left to the connection's reader to report.
func heartbeat(ctx context.Context, conns []*lconn, interval time.Duration, sent *atomic.Int64) {
	ping := []byte(`{"type":"ping"}`)
	n := int64(len(conns))
	// Wake at most every 10 ms and ping the connections due by then: ping number k is due
	// k*interval/n after the start.
	t := time.NewTicker(max(interval/time.Duration(n), 10*time.Millisecond))
	defer t.Stop()
	start := time.Now()
	for k := int64(0); ; {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		el := int64(time.Since(start))
		due := el/int64(interval)*n + el%int64(interval)*n/int64(interval) // whole rounds, then the part
		for ; k < due; k++ {
			if conns[k%n].writeWithin(ping, time.Second) == nil {
				sent.Add(1)
			}
		}
	}
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// rssKiB reads a process's resident set size from /proc, or 0.
func rssKiB(pid int) int64 {
	if pid <= 0 {
		return 0
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}
