// Package postgres is Parley's scale-out store.Store on PostgreSQL: many Parley processes
// sharing one database, each with its own sequencer, held to the same contract as the SQLite
// store by the same conformance suite (storetest.Run and storetest.RunShared).
//
// What the database enforces, not a process's memory: a conversation's seqs are taken
// inside the batch's transaction under the conversation's row lock (every transaction locks
// the conversations it touches in id order, so overlapping batches cannot deadlock); a
// client's message id is a unique key; an append reads membership under the same lock, so a
// member removed by another process cannot append, and the member list an append returns
// for fan-out is the one in force when its events were stored. Sync tokens are transaction-
// id horizons (migrations/0002_conversations.sql, docs/architecture.md), which never skip a
// transaction that commits late.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/parley-chat/parley/internal/store"
)

// Options tune the store. Zero fields take the defaults.
type Options struct {
	Log *slog.Logger // default: discard
	// ActivityWindow is how far a conversation's last activity may move before it is
	// spread to its member rows again, for the conversation list (default 100 ms). Larger
	// windows write less on busy conversations and read more rows at a list page's end.
	ActivityWindow time.Duration
	// MaxConns bounds the pool (default: pgxpool's, max(4, cores)).
	MaxConns int32
}

// DB is an open PostgreSQL database with Parley's schema applied. It implements store.Store.
type DB struct {
	pool     *pgxpool.Pool
	log      *slog.Logger
	applied  int   // migrations this Open applied (tests check that others found none)
	windowMS int64 // Options.ActivityWindow in ms

	mu       sync.Mutex
	closed   bool
	inflight sync.WaitGroup
}

var _ store.Store = (*DB)(nil)

// Open connects to url (postgres://…), checks that commits are durable, and brings the
// schema up to date.
func Open(ctx context.Context, url string, opts Options) (*DB, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	window := opts.ActivityWindow
	if window <= 0 {
		window = 100 * time.Millisecond
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	// A batch that waits on a lock held by a session that went away must not wait forever.
	if cfg.ConnConfig.RuntimeParams == nil {
		cfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	defaults := map[string]string{
		"idle_in_transaction_session_timeout": "30s",
		// No JIT: it compiled the plan of a page's unread counts (16 partitions, a lateral
		// lookup per conversation) for half a second to run it for two milliseconds. Every
		// statement here is a short index lookup.
		"jit": "off",
		// Plan every execution with its parameters and the tables' current sizes. Generic
		// plans, cached per connection by pgx's prepared statements, are made once a
		// statement has run five times, and a plan made while a table was small can pick an
		// index that reads a whole conversation or a user's whole membership list per
		// lookup once the table is large, until the next ANALYZE: a new database's dedupe
		// probe ran at 8,400 msg/s instead of 26,700, and a 100,000-group setup that took
		// 7.5 minutes with custom plans did not end in 13 with generic ones. Custom plans
		// cost a few hundred microseconds of planning per batch (docs/benchmarks.md).
		"plan_cache_mode": "force_custom_plan",
	}
	for k, v := range defaults {
		if _, ok := cfg.ConnConfig.RuntimeParams[k]; !ok {
			cfg.ConnConfig.RuntimeParams[k] = v
		}
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	// An ack means on disk: a server configured to commit asynchronously would break that.
	var sc string
	if err := pool.QueryRow(ctx, `SHOW synchronous_commit`).Scan(&sc); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if sc == "off" {
		pool.Close()
		return nil, fmt.Errorf("postgres: synchronous_commit is %q: an acknowledged message could be lost; set it to on", sc)
	}
	ms, err := loadMigrations(migrationFiles)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: %w", err)
	}
	applied, err := migrate(ctx, pool, ms, log)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: %w", err)
	}
	return &DB{pool: pool, log: log, applied: applied, windowMS: window.Milliseconds()}, nil
}

// Stats are the pool's figures, for the debug listener.
func (db *DB) Stats() any {
	st := db.pool.Stat()
	return map[string]any{
		"conns_total": st.TotalConns(), "conns_idle": st.IdleConns(), "conns_max": st.MaxConns(),
		"acquires": st.AcquireCount(), "acquire_wait_ms": st.AcquireDuration().Milliseconds(),
		"empty_acquires": st.EmptyAcquireCount(),
	}
}

// enter admits a call, or returns store.ErrClosed once Close has begun.
func (db *DB) enter(op string) error {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.closed {
		return fmt.Errorf("postgres: %s: %w", op, store.ErrClosed)
	}
	db.inflight.Add(1)
	return nil
}

func (db *DB) leave() { db.inflight.Done() }

// Close waits for the calls in flight and closes the pool. Later calls return
// store.ErrClosed.
func (db *DB) Close() error {
	db.mu.Lock()
	if db.closed {
		db.mu.Unlock()
		return nil
	}
	db.closed = true
	db.mu.Unlock()
	db.inflight.Wait()
	db.pool.Close()
	return nil
}

// Probe implements store.Store: one durable write of a row no reader looks at.
func (db *DB) Probe(ctx context.Context) error {
	if err := db.enter("probe"); err != nil {
		return err
	}
	defer db.leave()
	_, err := db.pool.Exec(ctx, `INSERT INTO probe (id, pad) VALUES (1, $1)
		ON CONFLICT (id) DO UPDATE SET pad = EXCLUDED.pad`, make([]byte, 64<<10))
	return wrap("probe", err)
}

// unavailable reports an error that means the database cannot take the call now (it is
// down, restarting, refusing connections, out of disk or connections), as opposed to a bug
// or bad input: the caller may retry later.
func unavailable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code[:2] {
		case "08", // connection exception
			"53", // insufficient resources: disk full, out of memory, too many connections
			"57": // operator intervention: shutdown, cannot connect now
			return pe.Code != "57014" // a query cancelled by our own context is not an outage
		}
		return false
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	return pgconn.SafeToRetry(err) || errors.Is(err, net.ErrClosed)
}
