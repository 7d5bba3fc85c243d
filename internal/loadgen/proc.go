package loadgen

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
)

// ConnsPerProc is how many connections one idle worker process holds at most when
// IdleConfig.Procs is zero: half of the 20,000 open files a process may have here, which
// leaves room for the process's own files.
//
// ClientsPerProc is the same for the reconnect scenario, as high as the open files allow
// (19,000 WebSockets and 256 HTTP connections for the catch-up): on this 2-core machine
// two worker processes for 19,000 clients took 8.5–8.8 s to catch up against 7.0–7.2 s for
// one, since each process's runtime takes its share of the cores from the server.
const (
	ConnsPerProc   = 10000
	ClientsPerProc = 19000
)

// procsFor is how many worker processes hold conns connections: procs if positive, else one
// per perProc.
func procsFor(procs, conns, perProc int) int {
	if procs <= 0 {
		procs = (conns + perProc - 1) / perProc
	}
	return max(1, min(procs, conns))
}

// startWorkers runs start(i) for each of n workers at once. The first to fail cancels ctx
// (through cancel), which kills the workers already started (see startProc) and stops the
// others dialing on; its error is returned, not the errors of the workers killed for it.
func startWorkers(ctx context.Context, cancel context.CancelFunc, n int, start func(i int) error) error {
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for i := range n {
		wg.Go(func() {
			if err := start(i); err != nil {
				once.Do(func() { first = err })
				cancel()
			}
		})
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

// proc is a scenario's worker process, seen from the coordinator. It is sent its job as
// JSON values on its standard input and reports JSON lines on its standard output; a line
// with an "error" field is its failure. The end of its input tells it to finish.
type proc struct {
	name   string // the scenario, for errors
	cmd    *exec.Cmd
	in     io.WriteCloser
	enc    *json.Encoder
	out    *bufio.Scanner
	unhook func() bool // stops the kill on the run's context
}

// startProc starts cmd and sends it job. The process is killed if ctx ends before wait or
// kill.
func startProc(ctx context.Context, name string, cmd *exec.Cmd, job any) (*proc, error) {
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: starting a worker: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, in: in, enc: json.NewEncoder(in), out: bufio.NewScanner(out)}
	p.out.Buffer(make([]byte, 64<<10), 64<<20) // final reports carry histograms
	p.unhook = context.AfterFunc(ctx, func() { _ = cmd.Process.Kill() })
	if err := p.send(job); err != nil {
		p.kill()
		return nil, fmt.Errorf("%s: sending a worker its job: %w", name, err)
	}
	return p, nil
}

func (p *proc) send(v any) error { return p.enc.Encode(v) }

// read decodes the worker's next line into v.
func (p *proc) read(v any) error {
	if !p.out.Scan() {
		err := p.out.Err()
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return p.errorf("%w", err)
	}
	line := p.out.Bytes()
	var failed struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(line, &failed); err != nil {
		return p.errorf("wrote %q: %w", line, err)
	}
	if failed.Error != "" {
		return p.errorf("%s", failed.Error)
	}
	if err := json.Unmarshal(line, v); err != nil {
		return p.errorf("wrote %q: %w", line, err)
	}
	return nil
}

// wait closes the worker's input and waits for it to exit. No read may be in progress.
func (p *proc) wait() error {
	p.in.Close()
	err := p.cmd.Wait()
	p.unhook()
	if err != nil {
		return p.errorf("%w", err)
	}
	return nil
}

// kill ends the worker and waits for it. No read may be in progress.
func (p *proc) kill() {
	p.unhook()
	p.in.Close()
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
}

func (p *proc) errorf(format string, args ...any) error {
	return fmt.Errorf("%s: worker pid %d: %w", p.name, p.cmd.Process.Pid, fmt.Errorf(format, args...))
}

// reporter writes a worker's report lines; it is safe for concurrent use.
type reporter struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func newReporter(w io.Writer) *reporter { return &reporter{enc: json.NewEncoder(w)} }

func (r *reporter) say(v any) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.enc.Encode(v)
}

// fail reports err as the worker's failure and returns it.
func (r *reporter) fail(err error) error {
	_ = r.say(struct {
		Error string `json:"error"`
	}{err.Error()})
	return err
}
