// Package server wires Parley together. It is the one place that reads configuration and
// decides which implementation each interface gets: the embedded defaults (SQLite, NATS
// in-process) or, later, the scale-out engines. Every component takes its dependencies as
// arguments; nothing here is global.
package server

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/parley-chat/parley/internal/api"
	"github.com/parley-chat/parley/internal/bus"
	"github.com/parley-chat/parley/internal/bus/natsbus"
	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/gateway"
	"github.com/parley-chat/parley/internal/limit"
	"github.com/parley-chat/parley/internal/presence"
	"github.com/parley-chat/parley/internal/state"
	"github.com/parley-chat/parley/internal/state/memstate"
	"github.com/parley-chat/parley/internal/state/redisstate"
	"github.com/parley-chat/parley/internal/store"
	"github.com/parley-chat/parley/internal/store/postgres"
	"github.com/parley-chat/parley/internal/store/sqlite"
	"github.com/parley-chat/parley/web"
)

// Config is everything `parley serve` can be told. Zero fields take the defaults.
type Config struct {
	Listen string // address to listen on (default 127.0.0.1:8080)
	Data   string // directory for the database, the bus's files and the signing key (default ./data)

	// PostgresURL selects the PostgreSQL store (postgres://…), which many nodes can share;
	// empty keeps the SQLite file under Data.
	PostgresURL string
	NATSURL     string // external NATS; empty runs NATS in-process
	RedisURL    string // Redis for soft state (presence, limits, tickets); empty keeps it in memory
	// RedisPrefix starts every key Parley writes in Redis (default "parley:"), so that
	// deployments or test runs can share one Redis.
	RedisPrefix string

	Chat    chat.Config
	Gateway gateway.Config
	// SQLite tunes the embedded store (its Log is set here).
	SQLite sqlite.Options
	// Postgres tunes the PostgreSQL store (its Log is set here).
	Postgres postgres.Options
	API      api.Config
	Presence presence.Config
	// Limits are the abuse limits (zero fields: limit.Defaults).
	Limits limit.Config

	// ShutdownTimeout bounds a graceful shutdown (default 10s).
	ShutdownTimeout time.Duration
	// GoawayDelay is how long clients are told to wait before reconnecting (default 500ms).
	GoawayDelay time.Duration
	// DebugListen, if set, serves net/http/pprof there (keep it on loopback).
	DebugListen string
}

// Server is a running Parley node.
type Server struct {
	cfg     Config
	log     *slog.Logger
	store   store.Store
	bus     bus.Bus
	state   state.State
	pres    *presence.Service
	chat    *chat.Service
	api     *api.API
	gateway *gateway.Gateway
	http    *http.Server
	ln      net.Listener
	debug   *http.Server // pprof, when Config.DebugListen is set
	// storeStats returns the store's own figures for the debug listener (the SQLite
	// store's WAL checkpointer).
	storeStats func() any
	ready      atomic.Bool
}

// New opens (creating them if needed) the store and the bus under cfg.Data, builds every
// component, and binds the listener. Serve starts answering.
func New(ctx context.Context, cfg Config, log *slog.Logger) (_ *Server, err error) {
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:8080"
	}
	if cfg.Data == "" {
		cfg.Data = "data"
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	if cfg.GoawayDelay <= 0 {
		cfg.GoawayDelay = 500 * time.Millisecond
	}
	if err := os.MkdirAll(cfg.Data, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	s := &Server{cfg: cfg, log: log}
	// On failure, undo what was opened, newest first.
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()

	start := time.Now()
	if cfg.PostgresURL != "" {
		cfg.Postgres.Log = log.With("component", "store")
		st, err := postgres.Open(ctx, cfg.PostgresURL, cfg.Postgres)
		if err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
		s.store = st
		s.storeStats = func() any { return st.Stats() }
	} else {
		cfg.SQLite.Log = log.With("component", "store")
		st, err := sqlite.Open(ctx, filepath.Join(cfg.Data, "parley.db"), cfg.SQLite)
		if err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
		s.store = st
		s.storeStats = func() any { return st.WALStats() }
	}
	undo = append(undo, func() { _ = s.store.Close() })

	if cfg.NATSURL != "" {
		s.bus, err = natsbus.Connect(ctx, cfg.NATSURL, log)
	} else {
		s.bus, err = natsbus.Embedded(ctx, filepath.Join(cfg.Data, "nats"), log)
	}
	if err != nil {
		return nil, fmt.Errorf("start bus: %w", err)
	}
	undo = append(undo, func() { _ = s.bus.Close() })

	if cfg.RedisURL != "" {
		prefix := cfg.RedisPrefix
		if prefix == "" {
			prefix = "parley:"
		}
		s.state, err = redisstate.New(ctx, cfg.RedisURL, prefix)
		if err != nil {
			return nil, fmt.Errorf("connect soft state: %w", err)
		}
	} else {
		s.state = memstate.New()
	}
	undo = append(undo, func() { _ = s.state.Close() })

	key, err := loadKey(filepath.Join(cfg.Data, "auth.key"))
	if err != nil {
		return nil, err
	}

	s.chat, err = chat.New(s.store, s.bus, cfg.Chat, log.With("component", "chat"))
	if err != nil {
		return nil, fmt.Errorf("start chat: %w", err)
	}
	undo = append(undo, func() { _ = s.chat.Close(context.Background()) })

	if cfg.Presence.TTL <= 0 && cfg.Gateway.Heartbeat > 0 {
		cfg.Presence.TTL = 3 * cfg.Gateway.Heartbeat
	}
	s.pres = presence.New(cfg.Presence, s.state, s.store, s.bus, log.With("component", "presence"))
	undo = append(undo, s.pres.Close)

	var softTimeout time.Duration
	if cfg.RedisURL != "" {
		softTimeout = 100 * time.Millisecond // a frame waits this long at most for Redis
	}
	lim := limit.New(cfg.Limits, s.state, softTimeout, log.With("component", "limit"))
	a, err := api.New(cfg.API, s.store, s.chat, s.pres, s.state, lim, s.bus, key, log.With("component", "api"))
	if err != nil {
		return nil, err
	}
	s.api = a
	undo = append(undo, func() { _ = a.Close() })
	s.gateway, err = gateway.New(cfg.Gateway, s.chat, s.bus, a, s.pres, lim, log.With("component", "gateway"))
	if err != nil {
		return nil, fmt.Errorf("start gateway: %w", err)
	}
	undo = append(undo, func() { _ = s.gateway.Close(context.Background()) })

	mux := http.NewServeMux()
	a.Routes(mux)
	mux.Handle("GET /api/v1/ws", s.gateway)
	mux.Handle("/", web.Handler()) // no method in the pattern: it would conflict with /api/v1/
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "not ready\n", http.StatusServiceUnavailable)
			return
		}
		if err := s.chat.Ready(r.Context()); err != nil {
			http.Error(w, "not ready: the store cannot write\n", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	s.http = &http.Server{
		Handler:           api.WithRequestLog(log, mux),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	s.ln, err = net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	if cfg.DebugListen != "" {
		dln, err := net.Listen("tcp", cfg.DebugListen)
		if err != nil {
			_ = s.ln.Close()
			return nil, fmt.Errorf("debug listen: %w", err)
		}
		dmux := http.NewServeMux()
		dmux.HandleFunc("/debug/pprof/", pprof.Index)
		dmux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		dmux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		dmux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		dmux.HandleFunc("/debug/parley", s.debugStats)
		s.debug = &http.Server{Handler: dmux, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = s.debug.Serve(dln) }()
		log.Info("debug server", "listen", dln.Addr().String())
	}
	log.Info("parley started", "listen", s.ln.Addr().String(), "data", cfg.Data,
		"store", map[bool]string{true: "postgres", false: "sqlite"}[cfg.PostgresURL != ""],
		"bus", map[bool]string{true: "nats " + cfg.NATSURL, false: "embedded nats"}[cfg.NATSURL != ""],
		"startup_ms", time.Since(start).Milliseconds())
	return s, nil
}

// debugStats answers the debug listener's /debug/parley: figures that a soak watches for
// growth (`parley bench soak`).
func (s *Server) debugStats(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(struct {
		Goroutines int `json:"goroutines"`
		Store      any `json:"store"`
	}{runtime.NumGoroutine(), s.storeStats()})
}

// Addr is the address the server listens on (useful with port 0).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Run serves until ctx is cancelled, then shuts down gracefully: it stops accepting, tells
// every client to go away, finishes the sends in flight and their acks, closes connections,
// then the bus, then the store.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	s.ready.Store(true)
	go func() { errc <- s.http.Serve(s.ln) }()
	select {
	case err := <-errc:
		s.shutdown()
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	return s.shutdown()
}

func (s *Server) shutdown() error {
	start := time.Now()
	s.log.Info("shutting down", "connections", s.gateway.Len())
	s.ready.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	// 1. No new HTTP requests or connections; hijacked WebSockets are not affected.
	s.gateway.Drain(s.cfg.GoawayDelay)
	herr := s.http.Shutdown(ctx)
	// Frames clients sent before they read the goaway are still handled: give them until
	// they leave, at most the reconnect delay the goaway announced.
	for deadline := time.Now().Add(s.cfg.GoawayDelay); s.gateway.Len() > 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	// 2. Every send already accepted is stored and acked.
	cerr := s.chat.Close(ctx)
	// 3. Acks and goaways are written; connections close with 1001.
	gerr := s.gateway.Close(ctx)
	if s.debug != nil {
		_ = s.debug.Close()
	}
	s.pres.Close()
	_ = s.api.Close()
	berr := s.bus.Close()
	sterr := s.state.Close()
	serr := s.store.Close()
	err := errors.Join(herr, cerr, gerr, berr, sterr, serr)
	s.log.Info("stopped", "duration_ms", time.Since(start).Milliseconds(), "err", err)
	return err
}

// loadKey reads the token signing key, creating it on first start. It lives in the data
// directory so that tokens survive restarts.
func loadKey(path string) ([]byte, error) {
	key, err := os.ReadFile(path)
	switch {
	case err == nil && len(key) >= 32:
		return key, nil
	case err == nil:
		// Replacing it would log every device out: a person must look at this.
		return nil, fmt.Errorf("signing key %s is %d bytes, want 32; restore it or delete it to log every device out", path, len(key))
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("read signing key: %w", err)
	}
	key = make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	// Written whole or not at all: a crash must not leave a short key behind.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, key, 0o600); err != nil {
		return nil, fmt.Errorf("write signing key: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("write signing key: %w", err)
	}
	return key, nil
}
