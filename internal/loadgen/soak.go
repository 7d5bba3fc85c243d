package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// SoakConfig is a soak: the rate scenario held for a long time (Direct.Duration), the
// server sampled every Every.
type SoakConfig struct {
	Direct DirectConfig // the load: Rate, Pairs, Duration, and the server (URL, ServerPID)
	Every  time.Duration
	// Settle is the warm-up that the slopes leave out: caches fill, the heap finds its size.
	Settle time.Duration
	// DataDir is the server's --data, whose files are sized at every sample ("" skips them).
	DataDir string
	// DebugURL is the server's debug listener (its --debug-listen), for its goroutine count
	// and the store's WAL figures ("" skips them).
	DebugURL string
	// MaxWAL is the size no WAL file under DataDir may ever reach.
	MaxWAL int64
	// Out gets a line for every sample as it is taken.
	Out io.Writer
	// Kill, if set, is called near the end of the run, while the senders are sending, to
	// kill the server (SIGKILL): sampling stops there, and what the kill cuts off (sends
	// never answered, acked messages not yet delivered) is not counted against the run.
	// VerifyAcked then checks, against the server restarted, that every acked message is
	// stored.
	Kill func()
}

// killLead is how long before the end of the run Kill is called.
func (c SoakConfig) killLead() time.Duration { return min(2*time.Second, c.Direct.Duration/4) }

// SoakSample is one reading of the server, taken every SoakConfig.Every.
type SoakSample struct {
	T          float64          `json:"t_s"` // since the measured window began
	Acked      uint64           `json:"acked"`
	Deliver    Summary          `json:"send_to_deliver"` // of the messages of this interval
	RSSKiB     int64            `json:"rss_kib"`
	Goroutines int              `json:"goroutines"` // -1: no debug listener
	Threads    int              `json:"threads"`
	FDs        int              `json:"fds"`
	Cores      float64          `json:"cores"`               // the server's CPU use in this interval
	WriteBytes int64            `json:"write_bytes"`         // written to disk by the server in this interval
	PerMsg     float64          `json:"write_bytes_per_msg"` // the same per message acked in it
	Files      map[string]int64 `json:"files,omitempty"`     // size of each file under DataDir
	Store      json.RawMessage  `json:"store,omitempty"`     // the store's figures, from the debug listener
}

// Series is one quantity's course over the samples after Settle.
type Series struct {
	Name     string  `json:"name"`
	Unit     string  `json:"unit"`
	First    float64 `json:"first"`
	Last     float64 `json:"last"`
	Min      float64 `json:"min"`
	Max      float64 `json:"max"`
	PerMin   float64 `json:"slope_per_min"` // least-squares slope
	Note     string  `json:"note,omitempty"`
	Failed   bool    `json:"failed"`
	Judgment string  `json:"judgment"`
}

// SoakResult is a soak's figures: the whole run's, the samples, and the slopes.
type SoakResult struct {
	Run      DirectResult `json:"run"`
	Samples  []SoakSample `json:"samples"`
	Series   []Series     `json:"series"`
	Failures []string     `json:"failures"`
	// KilledAt is when the server was killed (SoakConfig.Kill), in seconds into the
	// measured window; 0 if it was not.
	KilledAt float64 `json:"killed_at_s,omitempty"`
	// Pairs are the run's conversations with their last acked message, for VerifyAcked.
	pairs []pair
}

func (r SoakResult) String() string {
	var b strings.Builder
	b.WriteString(r.Run.String() + "\n")
	fmt.Fprintf(&b, "  %-22s %12s %12s %12s %12s %14s  %s\n", "after warm-up", "first", "last", "min", "max", "slope/min", "")
	for _, s := range r.Series {
		fmt.Fprintf(&b, "  %-22s %12s %12s %12s %12s %14s  %s\n", s.Name,
			fmtUnit(s.First, s.Unit), fmtUnit(s.Last, s.Unit), fmtUnit(s.Min, s.Unit), fmtUnit(s.Max, s.Unit),
			fmtUnit(s.PerMin, s.Unit), s.Judgment)
	}
	if len(r.Failures) == 0 {
		b.WriteString("  everything that should be flat is flat")
	} else {
		fmt.Fprintf(&b, "  NOT FLAT: %s", strings.Join(r.Failures, "; "))
	}
	if r.KilledAt > 0 {
		fmt.Fprintf(&b, "\n  the server was killed with SIGKILL %.1fs into the run, under load: %d sends never answered and %d acked messages not delivered by then (the kill's; not faults)",
			r.KilledAt, r.Run.Unanswered, r.Run.Lost)
	}
	return b.String()
}

// Soak runs the rate scenario for cfg.Direct.Duration and samples the server every
// cfg.Every: its memory, goroutines, threads, open files, CPU, bytes written to disk, and
// the size of every file under its data directory. At the end it fits a line to each
// quantity over the samples after cfg.Settle and judges it: memory, goroutines and open
// files must stay flat, WAL files under cfg.MaxWAL, the database grow in step with the
// messages stored, every other file stay as it is. The result's Failures name what did
// not; the run's own correctness (nothing lost or doubled) is in Run.
func Soak(ctx context.Context, cfg SoakConfig) (SoakResult, error) {
	if cfg.Direct.Rate <= 0 || cfg.Direct.ServerPID <= 0 {
		return SoakResult{}, errors.New("soak: needs a rate and the server's pid")
	}
	if cfg.Every <= 0 {
		cfg.Every = 30 * time.Second
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	var (
		mu      sync.Mutex // held by a sample being taken, and by the kill
		killed  bool
		res     SoakResult
		prev    = readProc(cfg.Direct.ServerPID)
		prevAck uint64
		killer  sync.WaitGroup
		noKill  = make(chan struct{}) // closed when the run is over: no kill after that
	)
	hooks := &directHooks{
		every: cfg.Every,
		started: func(ps []pair, m *meter) {
			res.pairs = ps
			if cfg.Kill == nil {
				return
			}
			killer.Go(func() {
				t := time.NewTimer(time.Until(m.win.to.Add(-cfg.killLead())))
				defer t.Stop()
				select {
				case <-t.C:
				case <-noKill:
					return
				}
				mu.Lock()
				defer mu.Unlock()
				killed = true
				res.KilledAt = time.Since(m.win.from).Seconds()
				cfg.Kill()
			})
		},
		tick: func(m *meter) {
			mu.Lock()
			defer mu.Unlock()
			if killed {
				return
			}
			now := readProc(cfg.Direct.ServerPID)
			iv := m.ivDel.Swap(new(Histogram))
			acked := m.acked.Load()
			s := SoakSample{
				T:       time.Since(m.win.from).Seconds(),
				Acked:   acked,
				Deliver: iv.Summary(),
				RSSKiB:  now.rssKiB, Threads: now.threads, FDs: now.fds, Goroutines: -1,
				WriteBytes: now.writeBytes - prev.writeBytes,
			}
			if secs := now.at.Sub(prev.at).Seconds(); secs > 0 {
				s.Cores = float64(now.cpuTicks-prev.cpuTicks) / clockTicks / secs
			}
			if n := acked - prevAck; n > 0 {
				s.PerMsg = float64(s.WriteBytes) / float64(n)
			}
			prev, prevAck = now, acked
			if cfg.DataDir != "" {
				s.Files = fileSizes(cfg.DataDir)
			}
			if cfg.DebugURL != "" {
				s.Goroutines, s.Store = debugStats(ctx, cfg.DebugURL)
			}
			fmt.Fprintln(cfg.Out, s.line())
			res.Samples = append(res.Samples, s)
		},
	}
	run, err := runDirect(ctx, cfg.Direct, hooks)
	close(noKill)
	killer.Wait()
	res.Run = run
	res.Run.Scenario = "soak"
	if err != nil {
		return res, err
	}
	res.Series, res.Failures = judge(res.Samples, cfg)
	return res, nil
}

// line is a sample as one line of progress.
func (s SoakSample) line() string {
	var b strings.Builder
	fmt.Fprintf(&b, "soak %5.0fs  acked %9d  p99 %6.2fms p99.9 %6.2fms max %6.2fms  rss %s  goroutines %d  threads %d  fds %d  cpu %.2f  disk %s (%.0f B/msg)",
		s.T, s.Acked, s.Deliver.P99, s.Deliver.P999, s.Deliver.Max, fmtUnit(float64(s.RSSKiB)*1024, "B"),
		s.Goroutines, s.Threads, s.FDs, s.Cores, fmtUnit(float64(s.WriteBytes), "B"), s.PerMsg)
	names := slices.Sorted(maps.Keys(s.Files))
	for _, n := range names {
		fmt.Fprintf(&b, "  %s %s", n, fmtUnit(float64(s.Files[n]), "B"))
	}
	if len(s.Store) > 0 {
		fmt.Fprintf(&b, "  store %s", s.Store)
	}
	return b.String()
}

// judge fits each quantity over the samples after cfg.Settle and says which are not flat.
func judge(samples []SoakSample, cfg SoakConfig) ([]Series, []string) {
	var after []SoakSample
	for _, s := range samples {
		if s.T >= cfg.Settle.Seconds() {
			after = append(after, s)
		}
	}
	if len(after) < 3 {
		return nil, []string{fmt.Sprintf("only %d samples after the %s warm-up: run longer, or sample more often", len(after), cfg.Settle)}
	}
	var series []Series
	var failures []string
	add := func(s Series, failed bool, why string) {
		s.Failed = failed
		if failed {
			s.Judgment = "NOT FLAT: " + why
			failures = append(failures, s.Name+": "+why)
		} else {
			s.Judgment = "ok: " + why
		}
		series = append(series, s)
	}
	t := make([]float64, len(after))
	for i, s := range after {
		t[i] = s.T / 60
	}
	span := t[len(t)-1] - t[0]
	fit := func(name, unit string, y []float64) Series {
		s := Series{Name: name, Unit: unit, First: y[0], Last: y[len(y)-1], Min: slices.Min(y), Max: slices.Max(y),
			PerMin: slope(t, y)}
		return s
	}
	// A quantity is flat if the median of the last third of the samples is not above the
	// median of the first third by more than tolerance. Medians, not the fitted slope
	// (which is reported): goroutines come and go with the load (a connection has a writer
	// goroutine only while it has frames queued), and one sample taken in such a moment
	// must not pass for growth, while a leak moves every sample.
	flat := func(name, unit string, y []float64, tolerance float64) {
		s := fit(name, unit, y)
		third := max(1, len(y)/3)
		rise := median(y[len(y)-third:]) - median(y[:third])
		add(s, rise > tolerance, fmt.Sprintf("rise %s over %.1f min (allowed %s)",
			fmtUnit(rise, unit), span, fmtUnit(tolerance, unit)))
	}
	ys := func(f func(SoakSample) float64) []float64 {
		y := make([]float64, len(after))
		for i, s := range after {
			y[i] = f(s)
		}
		return y
	}
	mean := func(y []float64) float64 {
		var sum float64
		for _, v := range y {
			sum += v
		}
		return sum / float64(len(y))
	}

	rss := ys(func(s SoakSample) float64 { return float64(s.RSSKiB) * 1024 })
	flat("server RSS", "B", rss, max(0.10*mean(rss), 16<<20))
	if after[0].Goroutines >= 0 {
		g := ys(func(s SoakSample) float64 { return float64(s.Goroutines) })
		flat("goroutines", "", g, max(0.10*mean(g), 10))
	}
	th := ys(func(s SoakSample) float64 { return float64(s.Threads) })
	flat("threads", "", th, max(0.25*mean(th), 8))
	fds := ys(func(s SoakSample) float64 { return float64(s.FDs) })
	flat("open files", "", fds, 10)
	perMsg := ys(func(s SoakSample) float64 { return s.PerMsg })
	series = append(series, func() Series {
		s := fit("disk writes", "B/msg", perMsg)
		s.Judgment = fmt.Sprintf("mean %.0f B a message", mean(perMsg))
		return s
	}())

	// Files: every name seen after the warm-up.
	names := map[string]bool{}
	for _, s := range after {
		for n := range s.Files {
			names[n] = true
		}
	}
	acked := ys(func(s SoakSample) float64 { return float64(s.Acked) })
	for _, n := range slices.Sorted(maps.Keys(names)) {
		y := ys(func(s SoakSample) float64 { return float64(s.Files[n]) })
		switch {
		case strings.HasSuffix(n, "-wal"):
			s := fit(n, "B", y)
			add(s, cfg.MaxWAL > 0 && s.Max > float64(cfg.MaxWAL),
				fmt.Sprintf("largest %s (bound %s)", fmtUnit(s.Max, "B"), fmtUnit(float64(cfg.MaxWAL), "B")))
		case n == "parley.db":
			// The database grows with the data: the same bytes a message in the second half
			// of the run as in the first.
			s := fit(n, "B", y)
			h := len(y) / 2
			first := (y[h] - y[0]) / max(1, acked[h]-acked[0])
			second := (y[len(y)-1] - y[h]) / max(1, acked[len(y)-1]-acked[h])
			s.Note = fmt.Sprintf("%.0f then %.0f B a message", first, second)
			add(s, second > 1.25*first+64, fmt.Sprintf("grows with the messages: %s", s.Note))
		default:
			flat(n, "B", y, 1<<20)
		}
	}
	return series, failures
}

// median returns the median of y.
func median(y []float64) float64 {
	c := slices.Clone(y)
	slices.Sort(c)
	if n := len(c); n%2 == 0 {
		return (c[n/2-1] + c[n/2]) / 2
	}
	return c[len(c)/2]
}

// slope is the least-squares slope of y over x.
func slope(x, y []float64) float64 {
	n := float64(len(x))
	var sx, sy, sxx, sxy float64
	for i := range x {
		sx += x[i]
		sy += y[i]
		sxx += x[i] * x[i]
		sxy += x[i] * y[i]
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}

// procSample is what /proc says of the server at one moment.
type procSample struct {
	at           time.Time
	rssKiB       int64
	threads, fds int
	writeBytes   int64
	cpuTicks     uint64
}

// readProc reads the server's memory, threads, open files, disk writes and CPU time from
// /proc (Linux); fields it cannot read stay zero.
func readProc(pid int) procSample {
	s := procSample{at: time.Now()}
	dir := "/proc/" + strconv.Itoa(pid)
	if b, err := os.ReadFile(dir + "/status"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			k, v, _ := strings.Cut(line, ":")
			f := strings.Fields(v)
			if len(f) == 0 {
				continue
			}
			n, _ := strconv.ParseInt(f[0], 10, 64)
			switch k {
			case "VmRSS":
				s.rssKiB = n
			case "Threads":
				s.threads = int(n)
			}
		}
	}
	if es, err := os.ReadDir(dir + "/fd"); err == nil {
		s.fds = len(es)
	}
	if b, err := os.ReadFile(dir + "/io"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "write_bytes: "); ok {
				s.writeBytes, _ = strconv.ParseInt(v, 10, 64)
			}
		}
	}
	s.cpuTicks = cpuTicks(pid)
	return s
}

// fileSizes returns the size of every regular file under dir, by path relative to it.
func fileSizes(dir string) map[string]int64 {
	sizes := map[string]int64{}
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil // a file removed while walking, or an unreadable directory
		}
		if fi, err := d.Info(); err == nil && fi.Mode().IsRegular() {
			rel, _ := filepath.Rel(dir, path)
			sizes[rel] = fi.Size()
		}
		return nil
	})
	return sizes
}

// debugStats asks the server's debug listener for its goroutine count and store figures
// (/debug/parley); -1 goroutines if it does not answer.
func debugStats(ctx context.Context, url string) (int, json.RawMessage) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(url, "/")+"/debug/parley", nil)
	if err != nil {
		return -1, nil
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1, nil
	}
	defer resp.Body.Close()
	var body struct {
		Goroutines int             `json:"goroutines"`
		Store      json.RawMessage `json:"store"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&body) != nil {
		return -1, nil
	}
	return body.Goroutines, body.Store
}

// VerifyAcked checks, against the server at url (the soak's server, restarted after a crash,
// say), that the last acked message of every conversation of the run is stored: its seq
// holds the message id that was acked. Acks are given in seq order and seqs are gapless, so
// that is every acked message. It returns how many conversations it checked.
func (r SoakResult) VerifyAcked(ctx context.Context) (int, error) {
	var errs []error
	for i, p := range r.pairs {
		last := p.tr.lastAcked()
		if last.seq == 0 {
			continue
		}
		page, err := p.sender.Messages(ctx, p.conv, last.seq+1, 0, 1)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("pair %d: %w", i, err))
		case len(page.Messages) != 1 || page.Messages[0].Seq != last.seq || page.Messages[0].ID != last.id:
			errs = append(errs, fmt.Errorf("pair %d: acked seq %d (id %s) is not stored as acked: %+v", i, last.seq, last.id, page.Messages))
		}
	}
	return len(r.pairs), errors.Join(errs...)
}

// fmtUnit formats v in unit, with binary prefixes for bytes.
func fmtUnit(v float64, unit string) string {
	switch unit {
	case "B":
		a := math.Abs(v)
		switch {
		case a >= 1<<30:
			return fmt.Sprintf("%.2fGiB", v/(1<<30))
		case a >= 1<<20:
			return fmt.Sprintf("%.1fMiB", v/(1<<20))
		case a >= 1<<10:
			return fmt.Sprintf("%.1fKiB", v/(1<<10))
		}
		return fmt.Sprintf("%.0fB", v)
	case "":
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f%s", v, unit)
}
