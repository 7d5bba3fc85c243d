package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/parley-chat/parley/internal/loadgen"
)

const benchUsage = `usage: parley bench <scenario> [flags]

scenarios:
  direct     N sender/receiver pairs, each sender keeping K sends in flight
  rate       the same at a fixed offered rate (open loop)
  group      G groups of M online members, S senders each: fan-out
  idle       C authenticated, heartbeating connections held open; server RSS per connection
  reconnect  C clients drop at once and reconnect; time until all have caught up
  soak       rate for a long time (30m), sampling the server's memory, goroutines, open
             files and data files every 30s, and failing if any grows beyond the data
  paging     what a page costs as an account and a log grow: a user in 100,000
             conversations, a conversation of 1,000,000 events; list, sync and history pages

(idle-worker and reconnect-worker are the processes that idle and reconnect start to hold
their connections; not run by hand.)

Without --url, bench starts its own server (embedded defaults, in a temp dir) as a child
process, so that server and load generator are measured as separate processes. Every
scenario prints a summary and, with --json FILE, writes its result as JSON.
`

// benchFlags are the flags every scenario has.
type benchFlags struct {
	url, out, sources, cpuProfile, postgres *string
	pid                                     *int
}

func addBenchFlags(fs *flag.FlagSet) benchFlags {
	return benchFlags{
		url:        fs.String("url", "", "server to load (default: start one)"),
		out:        fs.String("json", "", "also write the result as JSON to this file"),
		sources:    fs.String("source-ips", "", "comma-separated local addresses to dial from (e.g. 127.0.0.2,127.0.0.3)"),
		pid:        fs.Int("server-pid", 0, "with --url: the server's pid, to read its RSS and CPU use"),
		cpuProfile: fs.String("cpuprofile", "", "write a CPU profile of the load generator itself to this file"),
		postgres:   fs.String("postgres-url", "", "without --url: the server stores into a fresh database on this PostgreSQL server (postgres://user@host:port), dropped at the end"),
	}
}

func (b benchFlags) sourceIPs() []string {
	if *b.sources == "" {
		return nil
	}
	return strings.Split(*b.sources, ",")
}

// server returns the URL and pid to load, starting a child server if no --url was given.
func (b benchFlags) server(ctx context.Context) (url string, pid int, stop func(), err error) {
	if *b.url != "" {
		return *b.url, *b.pid, func() {}, nil
	}
	var args []string
	drop := func() {}
	if *b.postgres != "" {
		dbURL, d, err := benchDatabase(ctx, *b.postgres)
		if err != nil {
			return "", 0, nil, err
		}
		args, drop = []string{"--postgres-url", dbURL}, d
	}
	srv, stopChild, err := startChild(ctx, args...)
	if err != nil {
		drop()
		return "", 0, nil, err
	}
	return srv.URL, srv.PID(), func() { stopChild(); drop() }, nil
}

func (b benchFlags) report(res fmt.Stringer) error {
	fmt.Println(res)
	if *b.out == "" {
		return nil
	}
	data, _ := json.MarshalIndent(res, "", "  ")
	return os.WriteFile(*b.out, append(data, '\n'), 0o644)
}

func bench(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, benchUsage)
		return flag.ErrHelp
	}
	scenario := args[0]
	switch scenario {
	case "idle-worker":
		return loadgen.IdleWorker(ctx, os.Stdin, os.Stdout)
	case "reconnect-worker":
		return loadgen.ReconnectWorker(ctx, os.Stdin, os.Stdout)
	case "soak":
		return benchSoak(ctx, args[1:])
	}
	fs := flag.NewFlagSet("bench "+scenario, flag.ContinueOnError)
	bf := addBenchFlags(fs)
	duration := fs.Duration("duration", 10*time.Second, "measured duration")
	warmup := fs.Duration("warmup", time.Second, "unmeasured warm-up before it")
	var run func(url string, pid int) (fmt.Stringer, error)
	switch scenario {
	case "direct", "rate":
		pairs := fs.Int("pairs", 50, "sender/receiver pairs")
		inflight := fs.Int("inflight", 8, "direct: sends each sender keeps in flight")
		rate := fs.Float64("rate", 10000, "rate: messages per second offered, over all senders")
		run = func(url string, pid int) (fmt.Stringer, error) {
			cfg := loadgen.DirectConfig{URL: url, Pairs: *pairs, InFlight: *inflight, Duration: *duration, Warmup: *warmup,
				SourceIPs: bf.sourceIPs(), ServerPID: pid}
			if scenario == "rate" {
				cfg.InFlight, cfg.Rate = 0, *rate
			}
			res, err := loadgen.Direct(ctx, cfg)
			return res, checked(err, res.Lost, res.Duplicates, res.Unanswered)
		}
	case "group":
		groups := fs.Int("groups", 2, "groups")
		members := fs.Int("members", 100, "online members per group")
		senders := fs.Int("senders", 4, "senders per group")
		inflight := fs.Int("inflight", 8, "sends each sender keeps in flight")
		nodes := fs.String("node-urls", "", "with --url: comma-separated URLs of other nodes sharing its database and NATS; members connect to each in turn")
		run = func(url string, pid int) (fmt.Stringer, error) {
			var others []string
			if *nodes != "" {
				others = strings.Split(*nodes, ",")
			}
			res, err := loadgen.Group(ctx, loadgen.GroupConfig{URL: url, NodeURLs: others, Groups: *groups, Members: *members, Senders: *senders,
				InFlight: *inflight, Duration: *duration, Warmup: *warmup, SourceIPs: bf.sourceIPs(), ServerPID: pid})
			return res, checked(err, res.Lost, res.Duplicates, res.Unanswered)
		}
	case "paging":
		convs := fs.Int("conversations", 100_000, "memberships of the large account")
		small := fs.Int("small", 100, "memberships of the small account")
		messages := fs.Int("messages", 1_000_000, "events in the long conversation")
		reps := fs.Int("reps", 30, "timings of each read")
		run = func(url string, pid int) (fmt.Stringer, error) {
			return loadgen.Paging(ctx, loadgen.PagingConfig{URL: url, Conversations: *convs, Small: *small,
				Messages: *messages, Reps: *reps})
		}
	case "idle":
		conns := fs.Int("conns", 5000, "connections to hold")
		users := fs.Int("users", 0, "accounts the connections are spread over (default: one each)")
		hold := fs.Duration("hold", 10*time.Second, "how long to hold them, heartbeating")
		procs := fs.Int("procs", 0, fmt.Sprintf("worker processes holding the connections (default: one per %d)", loadgen.ConnsPerProc))
		settle := fs.Duration("settle", 7*time.Second, "wait after account setup before the first RSS reading")
		run = func(url string, pid int) (fmt.Stringer, error) {
			if *users == 0 {
				*users = *conns
			}
			worker, err := workerCommand("idle-worker")
			if err != nil {
				return nil, err
			}
			res, err := loadgen.Idle(ctx, loadgen.IdleConfig{URL: url, Conns: *conns, Users: *users, Hold: *hold, ServerPID: pid,
				SourceIPs: bf.sourceIPs(), Procs: *procs, Settle: *settle, Worker: worker})
			if err != nil {
				return nil, err // a figure from a failed hold is not one
			}
			return res, nil
		}
	case "reconnect":
		clients := fs.Int("clients", 2000, "clients (an even number: they come in pairs)")
		messages := fs.Int("messages", 1, "messages each client sends its partner before the drop")
		procs := fs.Int("procs", 0, fmt.Sprintf("worker processes holding the clients (default: one per %d)", loadgen.ClientsPerProc))
		run = func(url string, pid int) (fmt.Stringer, error) {
			worker, err := workerCommand("reconnect-worker")
			if err != nil {
				return nil, err
			}
			res, err := loadgen.Reconnect(ctx, loadgen.ReconnectConfig{URL: url, Clients: *clients, Messages: *messages,
				SourceIPs: bf.sourceIPs(), ServerPID: pid, Procs: *procs, Worker: worker})
			return res, checked(err, res.Missing, 0, 0)
		}
	default:
		fmt.Fprint(os.Stderr, benchUsage)
		return flag.ErrHelp
	}
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	url, pid, stop, err := bf.server(ctx)
	if err != nil {
		return err
	}
	defer stop()
	if *bf.cpuProfile != "" {
		f, err := os.Create(*bf.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	res, err := run(url, pid)
	if res != nil {
		if rerr := bf.report(res); rerr != nil && err == nil {
			err = rerr
		}
	}
	return err
}

// workerCommand returns what makes a worker process of a scenario: this binary's
// `bench <name>`.
func workerCommand(name string) (func() *exec.Cmd, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return func() *exec.Cmd { return exec.Command(exe, "bench", name) }, nil
}

// checked turns a run's correctness figures into its error.
func checked(err error, lost, dups, unanswered int) error {
	if err == nil && (lost > 0 || dups > 0 || unanswered > 0) {
		err = fmt.Errorf("correctness: %d acked messages not delivered, %d delivered twice, %d sends never answered", lost, dups, unanswered)
	}
	return err
}

// benchServerArgs are the flags of a server the load generator starts: cheap password
// hashing (account setup is not what is measured) and limits raised far above what one person
// does, since one process here plays thousands of users from one address at machine speed.
// The limits are raised, never switched off: every check still runs on every frame.
var benchServerArgs = []string{
	"--argon2-memory-kib", "64", "--argon2-time", "1", "--frames-per-second", "1000000",
	"--limit", "send=1000000/s:1000000", "--limit", "edit=1000000/s:1000000",
	"--limit", "react=1000000/s:1000000", "--limit", "receipt=1000000/s:1000000",
	"--limit", "typing=1000000/s:1000000", "--limit", "group-create=1000000/s:1000000",
	"--limit", "membership=1000000/s:1000000",
	"--limit", "login-ip=1000000/s:1000000", "--limit", "login-account-ip=1000000/s:1000000",
	"--limit", "login-account=1000000/s:1000000", "--limit", "signup-ip=1000000/s:1000000",
	"--limit", "refresh-ip=1000000/s:1000000",
	"--conns-per-ip", "1000000", "--conns-per-user", "10000",
}

// announceLimits says, once, that the server under load runs with raised limits.
func announceLimits() {
	fmt.Fprintln(os.Stderr, "bench: the server runs with its abuse limits raised for load (each at 1,000,000/s; connections per address 1,000,000): they are checked, not off")
}

// startChild runs this binary's serve in a temp dir with benchServerArgs. stop also removes
// the directory.
func startChild(ctx context.Context, extra ...string) (srv *loadgen.Server, stop func(), err error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	data, err := os.MkdirTemp("", "parley-bench-")
	if err != nil {
		return nil, nil, err
	}
	srv, err = loadgen.StartServer(ctx, exe, data, append(slices.Clone(benchServerArgs), extra...)...)
	if err != nil {
		_ = os.RemoveAll(data)
		return nil, nil, fmt.Errorf("bench: %w", err)
	}
	announceLimits()
	fmt.Fprintf(os.Stderr, "bench: started server pid %d at %s\n", srv.PID(), srv.URL)
	return srv, func() { srv.Stop(); _ = os.RemoveAll(data) }, nil
}
