package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/parley-chat/parley/internal/loadgen"
)

const benchUsage = `usage: parley bench <scenario> [flags]

scenarios:
  direct   N sender/receiver pairs, each sender keeping K sends in flight
  idle     C authenticated, heartbeating connections held open; server RSS per connection

Without --url, bench starts its own server (embedded defaults, in a temp dir) as a child
process, so server and load generator are measured as separate processes.
`

func bench(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, benchUsage)
		return flag.ErrHelp
	}
	switch args[0] {
	case "direct":
		return benchDirect(ctx, args[1:])
	case "idle":
		return benchIdle(ctx, args[1:])
	default:
		fmt.Fprint(os.Stderr, benchUsage)
		return flag.ErrHelp
	}
}

func benchIdle(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench idle", flag.ContinueOnError)
	url := fs.String("url", "", "server to load (default: start one)")
	pid := fs.Int("server-pid", 0, "with --url: the server's pid, to read its RSS")
	var cfg loadgen.IdleConfig
	fs.IntVar(&cfg.Conns, "conns", 5000, "connections to hold")
	fs.IntVar(&cfg.Users, "users", 1000, "accounts the connections are spread over")
	fs.DurationVar(&cfg.Hold, "hold", 10*time.Second, "how long to hold them, heartbeating")
	sources := fs.String("source-ips", "", "comma-separated local addresses to dial from (e.g. 127.0.0.2,127.0.0.3)")
	out := fs.String("json", "", "also write the result as JSON to this file")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *sources != "" {
		cfg.SourceIPs = strings.Split(*sources, ",")
	}
	cfg.URL, cfg.ServerPID = *url, *pid
	if cfg.URL == "" {
		srv, err := startChild(ctx)
		if err != nil {
			return err
		}
		defer srv.stop()
		cfg.URL, cfg.ServerPID = srv.url, srv.cmd.Process.Pid
	}
	res, err := loadgen.Idle(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Println(res)
	return writeJSON(*out, res)
}

func writeJSON(path string, v any) error {
	if path == "" {
		return nil
	}
	data, _ := json.MarshalIndent(v, "", "  ")
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

func benchDirect(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench direct", flag.ContinueOnError)
	url := fs.String("url", "", "server to load (default: start one)")
	var cfg loadgen.DirectConfig
	fs.IntVar(&cfg.Pairs, "pairs", 50, "sender/receiver pairs")
	fs.IntVar(&cfg.InFlight, "inflight", 8, "sends each sender keeps in flight")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "measured duration")
	fs.DurationVar(&cfg.Warmup, "warmup", time.Second, "unmeasured warm-up before it")
	out := fs.String("json", "", "also write the result as JSON to this file")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg.URL = *url
	if cfg.URL == "" {
		srv, err := startChild(ctx)
		if err != nil {
			return err
		}
		defer srv.stop()
		cfg.URL = srv.url
		fmt.Fprintf(os.Stderr, "bench: started server pid %d at %s\n", srv.cmd.Process.Pid, srv.url)
	}
	res, err := loadgen.Direct(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Println(res)
	if err := writeJSON(*out, res); err != nil {
		return err
	}
	if res.Lost > 0 || res.Duplicates > 0 {
		return fmt.Errorf("correctness: %d acked messages lost, %d duplicates", res.Lost, res.Duplicates)
	}
	return nil
}

// child is a `parley serve` started by bench.
type child struct {
	cmd  *exec.Cmd
	url  string
	data string
}

// startChild runs this binary's serve in a temp dir, with cheap password hashing (account
// setup is not what is measured) and no per-connection rate limit.
func startChild(ctx context.Context) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	data, err := os.MkdirTemp("", "parley-bench-")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "serve", "--listen", "127.0.0.1:0", "--data", data, "--log-json",
		"--argon2-memory-kib", "64", "--argon2-time", "1", "--frames-per-second", "1000000")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, data: data}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var line struct {
				Msg    string `json:"msg"`
				Listen string `json:"listen"`
				Level  string `json:"level"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "parley started" {
				addr <- line.Listen
			} else if line.Level == "ERROR" || line.Level == "WARN" {
				fmt.Fprintln(os.Stderr, "server:", sc.Text())
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	select {
	case a := <-addr:
		c.url = "http://" + a
	case <-time.After(30 * time.Second):
		c.stop()
		return nil, errors.New("bench: server did not start within 30s")
	case <-ctx.Done():
		c.stop()
		return nil, ctx.Err()
	}
	if resp, err := http.Get(c.url + "/readyz"); err != nil || resp.StatusCode != 200 {
		c.stop()
		return nil, fmt.Errorf("bench: server not ready: %v", err)
	}
	return c, nil
}

func (c *child) stop() {
	_ = c.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
	_ = os.RemoveAll(c.data)
}
