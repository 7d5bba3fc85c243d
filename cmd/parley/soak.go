package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/parley-chat/parley/internal/loadgen"
)

// benchSoak is `parley bench soak`: the rate scenario held for a long time, with the
// server's memory, goroutines, open files and data files sampled as it goes and judged
// for growth at the end. Without --url it runs its own server, which it can also kill -9
// near the end while the load runs, and restart (--kill), to time the recovery and check
// that every acked message survived it.
func benchSoak(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench soak", flag.ContinueOnError)
	bf := addBenchFlags(fs)
	rate := fs.Float64("rate", 5000, "messages per second offered, over all senders")
	pairs := fs.Int("pairs", 100, "sender/receiver pairs (conversations)")
	duration := fs.Duration("duration", 30*time.Minute, "how long the load runs")
	warmup := fs.Duration("warmup", time.Second, "unmeasured warm-up before it")
	every := fs.Duration("every", 30*time.Second, "time between samples of the server")
	settle := fs.Duration("settle", 2*time.Minute, "samples before this are left out of the slopes")
	data := fs.String("data", "", "with --url: the server's data directory, to size its files")
	debugURL := fs.String("debug-url", "", "with --url: the server's debug listener (--debug-listen), for its goroutines")
	maxWAL := fs.Int64("max-wal", 64<<20, "the size no WAL file may reach, in bytes")
	kill := fs.Bool("kill", false, "without --url: kill -9 the server near the end of the run, under load, restart it, time it until ready and check every acked message")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg := loadgen.SoakConfig{
		Direct: loadgen.DirectConfig{Pairs: *pairs, Rate: *rate, Duration: *duration, Warmup: *warmup,
			SourceIPs: bf.sourceIPs()},
		Every: *every, Settle: *settle, DataDir: *data, DebugURL: *debugURL, MaxWAL: *maxWAL, Out: os.Stdout,
	}

	var srv *loadgen.Server
	var serverArgs []string
	if *bf.url != "" {
		if *kill {
			return errors.New("bench soak: --kill needs a server of its own (no --url)")
		}
		if *bf.pid <= 0 {
			return errors.New("bench soak: --url needs --server-pid, to read the server's memory and files")
		}
		cfg.Direct.URL, cfg.Direct.ServerPID = *bf.url, *bf.pid
	} else {
		dir, err := os.MkdirTemp("", "parley-soak-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		serverArgs = append(slices.Clone(benchServerArgs), "--debug-listen", "127.0.0.1:0")
		if *bf.postgres != "" {
			dbURL, drop, err := benchDatabase(ctx, *bf.postgres)
			if err != nil {
				return err
			}
			defer drop()
			serverArgs = append(serverArgs, "--postgres-url", dbURL)
		}
		srv, err = loadgen.StartServer(ctx, exe, dir, serverArgs...)
		if err != nil {
			return fmt.Errorf("bench soak: %w", err)
		}
		defer func() { srv.Stop() }() // the restarted one, after --kill
		fmt.Fprintf(os.Stderr, "bench: started server pid %d at %s, data in %s\n", srv.PID(), srv.URL, dir)
		announceLimits()
		cfg.Direct.URL, cfg.Direct.ServerPID = srv.URL, srv.PID()
		cfg.DataDir, cfg.DebugURL = dir, srv.DebugURL
		serverArgs = append(serverArgs, "--listen", srv.Addr) // a restart comes back where clients are
		if *kill {
			cfg.Kill = srv.Kill
		}
	}

	res, err := loadgen.Soak(ctx, cfg)
	if err != nil {
		return err
	}
	if rerr := bf.report(res); rerr != nil {
		return rerr
	}
	if *kill {
		// What the kill cut off is the kill's; what it must not do is store twice.
		err = checked(nil, 0, res.Run.Duplicates, 0)
	} else {
		err = checked(nil, res.Run.Lost, res.Run.Duplicates, res.Run.Unanswered)
	}
	if len(res.Failures) > 0 {
		err = errors.Join(err, fmt.Errorf("soak: not flat: %v", res.Failures))
	}

	if *kill {
		if res.KilledAt == 0 {
			return errors.Join(err, errors.New("bench soak: the run ended before the server was killed"))
		}
		exe, _ := os.Executable()
		start := time.Now()
		restarted, rerr := loadgen.StartServer(ctx, exe, cfg.DataDir, serverArgs...)
		if rerr != nil {
			return errors.Join(err, fmt.Errorf("bench soak: restart after kill -9: %w", rerr))
		}
		srv = restarted
		ready := time.Since(start)
		n, verr := res.VerifyAcked(ctx)
		verdict := "all stored"
		if verr != nil {
			verdict = "MISSING: " + verr.Error()
		}
		fmt.Printf("restarted after the kill: ready again in %.2fs (process start to /readyz); the last acked message of each of %d conversations: %s\n",
			ready.Seconds(), n, verdict)
		err = errors.Join(err, verr)
	}
	return err
}
