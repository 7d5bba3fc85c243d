// Package sqlite implements store.Store on one SQLite file, with the pure-Go driver
// modernc.org/sqlite (no cgo).
//
// Concurrency model: every write goes through one connection (a *sql.DB limited to one open
// connection) in BEGIN IMMEDIATE transactions, so writes are serialised in the process and
// never fail with SQLITE_BUSY against each other; that single writer is what makes a
// conversation's seq gapless and lets Append group-commit a whole batch with one sync.
// Reads use a separate pool of query-only connections which, in WAL mode, see a consistent
// snapshot without blocking the writer or being blocked by it.
//
// Durability: journal_mode=WAL. A write returns once its transaction's WAL frames have been
// synced to stable storage, so it survives SIGKILL and power loss. The sync is pipelined off
// the writer (durable.go): the writer commits with synchronous=NORMAL and goes on to the
// next transaction while walSyncer syncs the WAL; Append's callers (the chat sequencer) can
// use that to overlap one batch's sync with the next batch's transaction, and reads never
// show a commit before it is synced.
//
// What it keeps, and its bounds: on disk the database and a WAL of at most about
// Options.WALSizeLimit, restarted by the checkpointer (wal.go); in memory SQLite's page
// caches (writerCacheKiB for the writer, readerCacheKiB for each of the readerConns readers,
// SQLite's default 2 MiB for the checkpointer), the WAL index (a few KiB per MiB of WAL), the
// writer's hot cache of log heads and memberships (maxHot conversations) and two caches of
// prepared statements (maxCachedStmts each). A cache's bound is in bytes of pages; each page
// also costs SQLite a header of about 200 bytes.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/parley-chat/parley/internal/store"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// readerConns is the size of the read pool. Readers do not block each other or the writer in
// WAL mode; a handful covers the server's concurrent history and sync reads.
const readerConns = 4

// The page caches, in KiB (SQLite's cache_size with a minus sign): the writer's holds the
// pages every batch goes through (each conversation's end of the log, the indexes' right
// edges, the heads); each reader's the pages of recent history.
const (
	writerCacheKiB = 65536
	readerCacheKiB = 16384
)

// busyTimeoutMS is how long a connection waits for a lock another holds: in the process
// only a checkpoint can (writes are serialised on the writer), so in practice this is the
// wait for another process.
const busyTimeoutMS = 10000

// defaultLimit is the page size used when a caller passes a limit <= 0.
const defaultLimit = 50

// Store is the SQLite store. It is safe for concurrent use.
type Store struct {
	// mu is read-held by every call for its whole duration and write-held by Close, so that
	// Close waits for in-flight calls and later calls see closed.
	mu     sync.RWMutex
	closed bool

	writer *sql.DB    // one connection: every write, serialised
	sync   *walSyncer // makes the writer's commits durable
	reader *sql.DB    // query-only pool
	// readGate is held shared by every use of the reader pool and exclusively by the
	// checkpointer while it restarts the WAL (wal.go): a restart must wait until no reader
	// is on the WAL, and readers that come and go without pause can keep that moment from
	// ever arriving (seen here: one restart in a few hundred waited out its whole limit
	// with one reader looping). Reads wait a restart out instead: the write in progress,
	// then the restart itself, a few milliseconds.
	readGate sync.RWMutex
	ckpt     *sql.DB // one connection for the background checkpointer

	// writeMu is held by the writes that the hot cache describes (Append, ChangeMembership)
	// for their transaction and their cache update together.
	writeMu sync.Mutex
	hot     *hotCache

	opts     Options
	wal      walState      // the checkpointer's figures (wal.go)
	stopCkpt chan struct{} // closed by Close to stop the checkpointer
	ckptDone chan struct{} // closed when the checkpointer has returned

	w  writeStmts // prepared on writer: the Append hot path
	wc *stmtCache // every other writer query, prepared on first use
	rc *stmtCache // every other reader query, prepared on first use
	wv viewStmts  // prepared on writer: views built inside write transactions
	rv viewStmts  // prepared on reader: views and history

	// applied is the number of migrations this Open applied (tests check re-opening applies
	// none).
	applied int
}

var _ store.Store = (*Store)(nil)

// Open opens (creating it, and its directory, if needed) the database file at path, applies
// pending migrations and prepares the hot statements. Zero fields of opts take the defaults.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	return open(ctx, path, migrationFiles, opts)
}

// open is Open with the migrations taken from fsys (a "migrations" directory), so tests can
// add migrations.
func open(ctx context.Context, path string, fsys fs.FS, opts Options) (_ *Store, err error) {
	if path == "" || strings.ContainsRune(path, '?') {
		return nil, fmt.Errorf("sqlite: open %q: path must be non-empty and contain no '?'", path)
	}
	opts = opts.withDefaults()
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
		}
	}
	if err := create(ctx, path, opts.PageSize); err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	s := &Store{hot: newHotCache(), opts: opts}
	defer func() {
		if err != nil {
			s.closeDBs()
		}
	}()

	// busy_timeout only matters against other processes (and the checkpointer): inside the
	// process writes are serialised by the single writer connection.
	pragmas := func(synchronous string) url.Values {
		v := url.Values{}
		v.Add("_pragma", "busy_timeout("+strconv.Itoa(busyTimeoutMS)+")")
		v.Add("_pragma", "journal_mode(WAL)")
		v.Add("_pragma", "synchronous("+synchronous+")")
		v.Add("_pragma", "foreign_keys(ON)")
		return v
	}

	// The writer's commits do not wait for the disk: walSyncer syncs the WAL behind them,
	// and every write waits for that before it is reported (durable.go).
	wq := pragmas("NORMAL")
	wq.Set("_txlock", "immediate")
	wq.Add("_pragma", "cache_size(-"+strconv.Itoa(writerCacheKiB)+")")
	// Checkpoints are the checkpointer's (wal.go), not the commit's of whichever append
	// crossed SQLite's threshold: that moved about a fifth of the sequencer's time off its
	// path in profiles of the direct benchmark. journal_size_limit cuts the WAL file back
	// when the writer restarts it after a burst that made it larger.
	wq.Add("_pragma", "wal_autocheckpoint(0)")
	wq.Add("_pragma", "journal_size_limit("+strconv.FormatInt(opts.WALSizeLimit, 10)+")")
	s.writer, err = sql.Open("sqlite", path+"?"+wq.Encode())
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: writer: %w", path, err)
	}
	s.writer.SetMaxOpenConns(1)
	s.writer.SetMaxIdleConns(1)
	s.writer.SetConnMaxLifetime(0)
	s.writer.SetConnMaxIdleTime(0)
	if err := s.writer.PingContext(ctx); err != nil {
		return nil, fmt.Errorf("sqlite: open %s: writer: %w", path, err)
	}

	s.applied, err = migrate(ctx, s.writer, fsys)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	// Starting the syncer syncs the WAL, which makes the migrations durable too.
	s.sync, err = newWALSyncer(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}

	// The reader opens after the migrations, so that it never sees a half-made schema and
	// its journal_mode pragma finds the file already in WAL mode.
	rq := pragmas("FULL")
	rq.Add("_pragma", "query_only(ON)")
	rq.Add("_pragma", "cache_size(-"+strconv.Itoa(readerCacheKiB)+")")
	s.reader, err = sql.Open("sqlite", path+"?"+rq.Encode())
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: reader: %w", path, err)
	}
	s.reader.SetMaxOpenConns(readerConns)
	s.reader.SetMaxIdleConns(readerConns)
	s.reader.SetConnMaxLifetime(0)
	s.reader.SetConnMaxIdleTime(0)
	if err := s.reader.PingContext(ctx); err != nil {
		return nil, fmt.Errorf("sqlite: open %s: reader: %w", path, err)
	}

	s.ckpt, err = sql.Open("sqlite", path+"?"+pragmas("FULL").Encode())
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: checkpointer: %w", path, err)
	}
	s.ckpt.SetMaxOpenConns(1)
	s.ckpt.SetConnMaxIdleTime(0)

	s.wc, s.rc = newStmtCache(s.writer, nil), newStmtCache(s.reader, &s.readGate)
	if err := s.w.prepare(ctx, s.writer); err != nil {
		return nil, fmt.Errorf("sqlite: open %s: prepare: %w", path, err)
	}
	if err := s.wv.prepare(ctx, s.writer); err != nil {
		return nil, fmt.Errorf("sqlite: open %s: prepare: %w", path, err)
	}
	if err := s.rv.prepare(ctx, s.reader); err != nil {
		return nil, fmt.Errorf("sqlite: open %s: prepare: %w", path, err)
	}
	// Last: from here on the reader pool is used only under readGate.
	if err := s.startCheckpointer(ctx); err != nil {
		return nil, fmt.Errorf("sqlite: open %s: checkpointer: %w", path, err)
	}
	return s, nil
}

// create makes a new database file at path with the given page size, in WAL mode, unless a
// database is there already (in the file, or still only in its WAL). The page size must be
// set before the file turns to WAL mode, which the connections' DSN pragmas do first thing;
// an existing database keeps its own.
func create(ctx context.Context, path string, pageSize int) error {
	for _, p := range []string{path, path + "-wal"} {
		if fi, err := os.Stat(p); err == nil && fi.Size() > 0 {
			return nil
		}
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, "PRAGMA page_size = "+strconv.Itoa(pageSize)); err != nil {
		return fmt.Errorf("page size: %w", err)
	}
	var mode string
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode = WAL").Scan(&mode); err != nil || mode != "wal" {
		return fmt.Errorf("journal mode: %q, %v", mode, err)
	}
	return nil
}

// migration is one numbered SQL file.
type migration struct {
	version int
	name    string
	sql     string
}

// loadMigrations reads migrations/NNNN_name.sql from fsys, ordered by version.
func loadMigrations(fsys fs.FS) ([]migration, error) {
	entries, err := fs.ReadDir(fsys, "migrations")
	if err != nil {
		return nil, err
	}
	var ms []migration
	seen := map[int]string{}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".sql") {
			continue
		}
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must be NNNN_name.sql", name)
		}
		if prev, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations %s and %s share version %d", prev, name, v)
		}
		seen[v] = name
		b, err := fs.ReadFile(fsys, "migrations/"+name)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: name, sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	return ms, nil
}

// migrate applies, in version order, each migration not yet recorded in schema_migrations,
// each in its own transaction together with its record, and returns how many it applied.
func migrate(ctx context.Context, db *sql.DB, fsys fs.FS) (int, error) {
	ms, err := loadMigrations(fsys)
	if err != nil {
		return 0, fmt.Errorf("migrate: %w", err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT NOT NULL,
		applied_ts INTEGER NOT NULL
	)`); err != nil {
		return 0, fmt.Errorf("migrate: %w", err)
	}
	applied := 0
	for _, m := range ms {
		err := inTx(ctx, db, func(tx *sql.Tx) error {
			var n int
			if err := tx.QueryRowContext(ctx,
				`SELECT count(*) FROM schema_migrations WHERE version = ?`, m.version).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return nil
			}
			if _, err := tx.ExecContext(ctx, m.sql); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx,
				`INSERT INTO schema_migrations (version, name, applied_ts) VALUES (?, ?, ?)`,
				m.version, m.name, time.Now().UnixMilli()); err != nil {
				return err
			}
			applied++
			return nil
		})
		if err != nil {
			return applied, fmt.Errorf("migrate %s: %w", m.name, err)
		}
	}
	return applied, nil
}

// Close waits for in-flight calls, then closes both connection pools. Later calls return
// store.ErrClosed; closing twice is not an error.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.stopCkpt != nil {
		close(s.stopCkpt)
		<-s.ckptDone
		// Fold the WAL into the database so the next start opens a small WAL.
		_, _ = s.ckpt.Exec("PRAGMA wal_checkpoint(TRUNCATE)")
	}
	// Syncs whatever was committed and not yet synced, so that a Durable obtained before
	// Close still answers nil.
	s.sync.close()
	if err := s.closeDBs(); err != nil {
		return fmt.Errorf("sqlite: close: %w", err)
	}
	return nil
}

// closeDBs closes the statements and both pools, whichever exist.
func (s *Store) closeDBs() error {
	s.w.close()
	s.wv.close()
	s.rv.close()
	s.wc.close()
	s.rc.close()
	var errs []error
	if s.stopCkpt != nil && !s.closed {
		close(s.stopCkpt) // a failed open: the loop may have started
		<-s.ckptDone
	}
	if s.sync != nil && !s.closed {
		s.sync.close()
	}
	if s.ckpt != nil {
		errs = append(errs, s.ckpt.Close())
	}
	if s.reader != nil {
		errs = append(errs, s.reader.Close())
	}
	if s.writer != nil {
		errs = append(errs, s.writer.Close())
	}
	return errors.Join(errs...)
}

// enter admits a call unless the store is closed; every admitted call must call s.leave.
func (s *Store) enter(op string) error {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return fmt.Errorf("sqlite: %s: %w", op, store.ErrClosed)
	}
	// After a failed sync nothing the store says can be trusted to survive a crash, writes
	// and reads alike: it refuses everything, as PostgreSQL stops on a failed fsync.
	if err := s.sync.failed(); err != nil {
		s.mu.RUnlock()
		return fmt.Errorf("sqlite: %s: %w", op, err)
	}
	return nil
}

func (s *Store) leave() { s.mu.RUnlock() }

// enterRead is enter for a read not made with s.read: it also holds readGate until
// leaveRead. Such a method must not call s.read (readGate is not reentrant).
func (s *Store) enterRead(op string) error {
	if err := s.enter(op); err != nil {
		return err
	}
	s.readGate.RLock()
	return nil
}

// leaveRead is leave for a read begun with enterRead: before the answer is returned it waits
// until every commit the read may have seen is durable (durable.go), so nothing a crash
// could take back is ever shown; after a failed sync *err becomes that error instead of
// the answer, as with read. Deferred, with err the method's named result.
func (s *Store) leaveRead(err *error) {
	s.readGate.RUnlock()
	*err = s.answered(*err)
	s.mu.RUnlock()
}

// answered is the end of every read: it waits until every commit the read may have seen is
// durable, and returns the read's result, err, or after a failed sync that failure in
// place of an answer.
func (s *Store) answered(err error) error {
	if serr := s.sync.seen(); err == nil {
		return serr
	}
	return err
}

// inTx runs fn in a transaction on db and commits it if fn returns nil. On the writer the
// transaction is BEGIN IMMEDIATE (see the DSN), so it holds the write lock from the start.
func inTx(ctx context.Context, db *sql.DB, fn func(tx *sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	// Rolls back if fn fails or panics; a no-op after Commit. Without it a panic would
	// leave the writer's only connection inside a transaction forever.
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// write runs fn in a write transaction and returns once the transaction is durable.
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	n, err := s.commit(ctx, fn)
	if err != nil {
		// The failure may rest on what earlier commits wrote (a username taken by a user
		// not yet synced): it is as much an answer as a read's, and waits the same way.
		return s.answered(err)
	}
	return unavailable(s.sync.wait(n))
}

// commit runs fn in a write transaction and commits it if fn returns nil. It returns once
// the commit is written, with its number for s.sync (0 if nothing was committed); the
// transaction is durable once s.sync.wait of that number returns nil.
func (s *Store) commit(ctx context.Context, fn func(tx *sql.Tx) error) (uint64, error) {
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return 0, unavailable(err)
	}
	defer tx.Rollback() // see inTx
	if err := fn(tx); err != nil {
		return 0, unavailable(err)
	}
	n, err := s.sync.commit(tx.Commit)
	return n, unavailable(err)
}

// unavailable marks an error of a write that failed for want of disk (SQLITE_FULL, an I/O
// error, ENOSPC, EDQUOT) with store.ErrUnavailable: not the client's fault, nor a bug, and
// it may pass.
func unavailable(err error) error {
	if err == nil || errors.Is(err, store.ErrUnavailable) {
		return err
	}
	var se *sqlite.Error
	full := errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EIO)
	if errors.As(err, &se) {
		switch se.Code() & 0xff { // the primary code of an extended one
		case sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR:
			full = true
		}
	}
	if !full {
		return err
	}
	return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
}

// Probe implements store.Store: it rewrites the probe row (64 KiB) and waits for the sync.
func (s *Store) Probe(ctx context.Context) error {
	const op = "probe"
	if err := s.enter(op); err != nil {
		return err
	}
	defer s.leave()
	return wrap(op, s.write(ctx, func(tx *sql.Tx) error {
		_, err := s.wtx(tx).ExecContext(ctx, `INSERT OR REPLACE INTO probe (id, pad) VALUES (1, zeroblob(65536))`)
		return err
	}))
}

// rq runs a query on the reader pool; rtx and wtx inside a transaction of the reader or the
// writer. All three prepare each query text once (stmtCache).
func (s *Store) rq() cached            { return cached{c: s.rc} }
func (s *Store) rtx(tx *sql.Tx) cached { return cached{c: s.rc, tx: tx} }
func (s *Store) wtx(tx *sql.Tx) cached { return cached{c: s.wc, tx: tx} }

// read runs fn in a read transaction: all its queries see one snapshot. It returns once
// every commit the snapshot may hold is durable (durable.go), whether fn found an answer or
// an error (a "not found" rests on the snapshot too); after a failed sync it returns that
// error instead of the answer. Methods that read only through it leave with s.leave.
func (s *Store) read(ctx context.Context, fn func(tx *sql.Tx) error) error {
	s.readGate.RLock()
	err := inTx(ctx, s.reader, fn)
	s.readGate.RUnlock()
	return s.answered(err)
}

// bumpVersion increments the global sync version and returns the new value. Every write
// transaction that changes what Sync reports calls it once and stamps the rows it changes.
// The statement is prepared once on the writer: Append runs it hundreds of times a second.
func (s *Store) bumpVersion(ctx context.Context, tx *sql.Tx) (int64, error) {
	var v int64
	err := tx.StmtContext(ctx, s.w.bump).QueryRowContext(ctx).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("bump version: %w", err)
	}
	return v, nil
}

// isConstraint reports whether err is a UNIQUE or PRIMARY KEY violation.
func isConstraint(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() {
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return true
	}
	return false
}

// wrap adds the operation to err, keeping nil nil.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("sqlite: %s: %w", op, err)
}

// limitOrDefault maps a non-positive limit to defaultLimit.
func limitOrDefault(limit int) int {
	if limit <= 0 {
		return defaultLimit
	}
	return limit
}

// boolInt is SQLite's storage of a bool.
func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
