package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
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
		srv, stop, err := startChild(ctx)
		if err != nil {
			return err
		}
		defer stop()
		cfg.URL, cfg.ServerPID = srv.URL, srv.PID()
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
		srv, stop, err := startChild(ctx)
		if err != nil {
			return err
		}
		defer stop()
		cfg.URL = srv.URL
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

// startChild runs this binary's serve in a temp dir, with cheap password hashing (account
// setup is not what is measured) and no per-connection rate limit. stop also removes the
// directory.
func startChild(ctx context.Context) (srv *loadgen.Server, stop func(), err error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	data, err := os.MkdirTemp("", "parley-bench-")
	if err != nil {
		return nil, nil, err
	}
	srv, err = loadgen.StartServer(ctx, exe, data,
		"--argon2-memory-kib", "64", "--argon2-time", "1", "--frames-per-second", "1000000")
	if err != nil {
		_ = os.RemoveAll(data)
		return nil, nil, fmt.Errorf("bench: %w", err)
	}
	fmt.Fprintf(os.Stderr, "bench: started server pid %d at %s\n", srv.PID(), srv.URL)
	return srv, func() { srv.Stop(); _ = os.RemoveAll(data) }, nil
}
