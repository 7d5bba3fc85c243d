package main

import (
	"context"
	"flag"
	"fmt"
	"strings"

	"github.com/parley-chat/parley/internal/auth"
	"github.com/parley-chat/parley/internal/limit"
	"github.com/parley-chat/parley/internal/server"
)

func serve(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var cfg server.Config
	var pgConns int
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:8080", "address to listen on")
	fs.StringVar(&cfg.Data, "data", "./data", "directory for the database, the bus's files and the signing key")
	fs.StringVar(&cfg.PostgresURL, "postgres-url", "", "PostgreSQL for durable data, shared by many nodes: postgres://user@host:5432/db (default: SQLite under --data)")
	fs.IntVar(&pgConns, "postgres-max-conns", 0, "connections to PostgreSQL per node (default max(4, cores))")
	fs.StringVar(&cfg.NATSURL, "nats-url", "", "external NATS server (default: NATS runs in-process)")
	fs.StringVar(&cfg.RedisURL, "redis-url", "", "Redis for soft state: presence, limits, tickets (default: in memory)")
	fs.DurationVar(&cfg.Presence.TTL, "presence-ttl", 0, "a device without a heartbeat for this long is offline (default 3x heartbeat)")
	fs.IntVar(&cfg.Chat.MaxBodyBytes, "max-body-bytes", 8192, "a message body's size limit")
	fs.IntVar(&cfg.Chat.MaxGroupMembers, "max-group-members", 100, "members of a group, creator included")
	fs.DurationVar(&cfg.Gateway.Heartbeat, "heartbeat", 0, "heartbeat interval told to clients; 3x silence closes (default 10s)")
	fs.IntVar(&cfg.Gateway.SendQueueBytes, "send-queue-bytes", 0, "bytes queued per connection before a slow client is cut off (default 1 MiB)")
	fs.IntVar(&cfg.Gateway.FramesPerSecond, "frames-per-second", 0, "per-connection frame rate limit (default 1000)")
	fs.DurationVar(&cfg.Chat.CommitInterval, "commit-interval", 0, "least time between the starts of two message transactions (default 2ms; negative: none)")
	fs.Int64Var(&cfg.SQLite.WALRestartBytes, "sqlite-wal-restart-bytes", 0, "the WAL is checkpointed and started over once it holds this many bytes (default 16 MiB)")
	fs.DurationVar(&cfg.SQLite.CheckpointInterval, "sqlite-checkpoint-interval", 0, "how often the WAL is copied into the database in the background (default 250ms)")
	fs.DurationVar(&cfg.API.AccessTTL, "access-ttl", 0, "access token lifetime (default 15m)")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", 0, "bound on a graceful shutdown (default 10s)")
	argonMem := fs.Uint("argon2-memory-kib", uint(auth.DefaultParams().Memory), "argon2id memory cost per password hash, KiB")
	argonTime := fs.Uint("argon2-time", uint(auth.DefaultParams().Time), "argon2id passes")
	fs.Var(limit.Flag{C: &cfg.Limits}, "limit", "set one rate limit, name=RATE/UNIT:BURST (repeatable; e.g. send=20/s:200); see docs/security.md")
	fs.IntVar(&cfg.Limits.ConnsPerUser, "conns-per-user", 0, "WebSocket connections one user may hold on this node (default 50)")
	fs.IntVar(&cfg.Limits.ConnsPerIP, "conns-per-ip", 0, "WebSocket connections one client address may hold on this node (default 1000)")
	fs.IntVar(&cfg.Limits.MaxDevices, "max-devices", 0, "logged-in devices per user; a login past it logs out the longest idle one (default 50)")
	fs.IntVar(&cfg.Limits.MaxContacts, "max-contacts", 0, "contacts per user (default 5000)")
	trusted := fs.String("trusted-proxies", "", "comma-separated addresses or CIDR prefixes of reverse proxies whose X-Forwarded-For is believed")
	origins := fs.String("allowed-origins", "", "comma-separated origins browsers may open WebSockets from (default: the server's own; * allows any)")
	fs.StringVar(&cfg.DebugListen, "debug-listen", "", "serve net/http/pprof on this address (e.g. 127.0.0.1:6060)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logJSON := fs.Bool("log-json", false, "log JSON lines instead of text")
	err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if cfg.Limits.TrustedProxies, err = limit.ParsePrefixes(*trusted); err != nil {
		return fmt.Errorf("--trusted-proxies: %w", err)
	}
	for _, o := range strings.Split(*origins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			cfg.Gateway.AllowedOrigins = append(cfg.Gateway.AllowedOrigins, o)
		}
	}
	cfg.Postgres.MaxConns = int32(pgConns)
	cfg.API.Password = auth.Params{Memory: uint32(*argonMem), Time: uint32(*argonTime), Threads: auth.DefaultParams().Threads}
	log, err := newLogger(*logLevel, *logJSON)
	if err != nil {
		return err
	}
	s, err := server.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	return s.Run(ctx)
}
