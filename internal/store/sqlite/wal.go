package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"
)

// Keeping the WAL bounded. A WAL only starts again from its beginning when a writer finds
// it completely copied into the database (checkpointed) and no reader using it; until then
// every commit appends to it. Under continuous writes a background PASSIVE checkpoint never
// sees that moment (the writer has always appended more by the time it finishes), so the
// WAL, and the WAL index that SQLite keeps in memory for it, grew for as long as the load
// lasted: 13 GB in five minutes at 5,000 msg/s, and a restart after kill -9 spent 15 s
// reading it back.
//
// So the checkpointer (checkpointLoop) does two things. Every CheckpointInterval it runs a
// PASSIVE checkpoint on its own connection, which copies what is in the WAL into the
// database while the writer goes on writing: the bulk of the work, off the write path. Once
// the WAL holds WALRestartBytes, it runs a RESTART checkpoint on the writer's connection,
// between two of the writer's transactions: that copies the little the last PASSIVE
// checkpoint left, waits for readers still using the WAL (the store's own are kept out
// meanwhile by readGate; another process's are waited for at most RestartWait), and so
// makes the writer's next transaction write the WAL from its beginning again. Running it on
// the writer's own connection means it never contends with the writer for SQLite's write
// lock: it queues behind the transaction in progress like any other write. After a restart,
// journal_size_limit (WALSizeLimit) cuts the file back if a burst made it larger, and once
// nothing has been written for IdleTruncate the WAL is truncated to nothing.
//
// Durability is untouched (durable.go): a checkpoint syncs the WAL before copying it and the
// database after, and SQLite syncs the new WAL header before it writes frames after a
// restart, so nothing synced is overwritten before it is in the synced database file.

// Options tune the store. Zero fields take the defaults.
type Options struct {
	// PageSize is the page size of a new database file (default 1024). A commit writes
	// every page it changes to the WAL whole, and a message changes a few pages in
	// different places (its conversation's place in the (conversation, seq) index, the end
	// of the table, the dedupe index, the conversation's head), so bytes written per
	// message follow the page size; docs/benchmarks.md ("Write amplification") has the
	// measurements. An existing database keeps the page size it was made with.
	PageSize int
	// WALRestartBytes is how large the WAL may grow before the checkpointer restarts it
	// (default 16 MiB).
	WALRestartBytes int64
	// WALSizeLimit is the size a WAL file larger than it is cut back to when it restarts
	// (SQLite's journal_size_limit; default twice WALRestartBytes).
	WALSizeLimit int64
	// CheckpointInterval is how often the checkpointer copies the WAL into the database
	// (default 250ms).
	CheckpointInterval time.Duration
	// IdleTruncate is how long the store must go without a write before the checkpointer
	// truncates the WAL to nothing (default 5s).
	IdleTruncate time.Duration
	// RestartWait bounds how long a restart waits for another process's readers still
	// using the WAL (the store's own are kept out), holding up the writer meanwhile
	// (default 10ms); if they outlast it, a later round tries again.
	RestartWait time.Duration
	// ActivityWindow is how far a conversation's last activity may move before it is
	// spread to its member rows again, for the conversation list (default 100 ms; see
	// migrations/0007_spread.sql).
	ActivityWindow time.Duration
	// Log gets the checkpointer's warnings (default: discarded).
	Log *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.PageSize == 0 {
		o.PageSize = 1024
	}
	if o.WALRestartBytes <= 0 {
		o.WALRestartBytes = 16 << 20
	}
	if o.WALSizeLimit <= 0 {
		o.WALSizeLimit = 2 * o.WALRestartBytes
	}
	if o.CheckpointInterval <= 0 {
		o.CheckpointInterval = 250 * time.Millisecond
	}
	if o.IdleTruncate <= 0 {
		o.IdleTruncate = 5 * time.Second
	}
	if o.RestartWait <= 0 {
		o.RestartWait = 10 * time.Millisecond
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o
}

// WALStats are the checkpointer's figures since Open.
type WALStats struct {
	Frames      int64 // frames in the WAL at the last checkpoint
	Bytes       int64 // the same in bytes: frames × (page size + frame header)
	Checkpoints int64 // PASSIVE checkpoints run
	Restarts    int64 // RESTART checkpoints that completed: the WAL starts over
	HeldOff     int64 // restarts that readers (or an error) kept from completing
	Truncations int64 // idle truncations
	// RestartTime is the writer's time spent in restarts (and truncations), completed or
	// not: what the bound costs the write path. RestartMax is the longest one.
	RestartTime, RestartMax time.Duration
	// CheckpointTime is the checkpointer's time in PASSIVE checkpoints, off the write path.
	CheckpointTime time.Duration
	// Syncs counts the WAL syncs that made commits durable; SyncMax is the longest.
	Syncs   int64
	SyncMax time.Duration
}

// walState is what the checkpointer knows; the atomics are read by WALStats.
type walState struct {
	frameSize                                         int64 // page size + 24
	frames, checkpoints, restarts, heldOff, truncates atomic.Int64
	restartNanos, restartMax, passiveNanos            atomic.Int64

	// Owned by the checkpointer's goroutine.
	lastCommits   uint64    // s.sync.started at the previous round
	quietSince    time.Time // when lastCommits last changed
	restartedAt   uint64    // s.sync.started at the last completed restart
	retryAt       time.Time // after a restart held off, none is tried before this
	backoff       time.Duration
	lastWarning   time.Time
	truncatedIdle bool // the WAL was truncated and nothing was written since
}

// WALStats returns the checkpointer's figures.
func (s *Store) WALStats() WALStats {
	w := &s.wal
	f := w.frames.Load()
	return WALStats{Frames: f, Bytes: f * w.frameSize, Checkpoints: w.checkpoints.Load(),
		Restarts: w.restarts.Load(), HeldOff: w.heldOff.Load(), Truncations: w.truncates.Load(),
		RestartTime: time.Duration(w.restartNanos.Load()), RestartMax: time.Duration(w.restartMax.Load()),
		CheckpointTime: time.Duration(w.passiveNanos.Load()),
		Syncs:          s.sync.syncs.Load(), SyncMax: time.Duration(s.sync.syncMax.Load())}
}

// startCheckpointer reads the page size and starts checkpointLoop.
func (s *Store) startCheckpointer(ctx context.Context) error {
	var pageSize int64
	if err := s.ckpt.QueryRowContext(ctx, "PRAGMA page_size").Scan(&pageSize); err != nil {
		return fmt.Errorf("page size: %w", err)
	}
	s.wal.frameSize = pageSize + 24
	if pageSize != int64(s.opts.PageSize) {
		// Only a rewrite of the whole file can change it; that is the operator's call.
		s.opts.Log.Warn("the database keeps the page size it was made with; a new one would use another, which writes less per message",
			"page_size", pageSize, "new_databases", s.opts.PageSize,
			"convert_with_the_server_stopped", fmt.Sprintf("sqlite3 parley.db 'PRAGMA journal_mode=DELETE; PRAGMA page_size=%d; VACUUM; PRAGMA journal_mode=WAL'", s.opts.PageSize))
	}
	s.wal.quietSince = time.Now()
	s.stopCkpt, s.ckptDone = make(chan struct{}), make(chan struct{})
	go s.checkpointLoop()
	return nil
}

// checkpointLoop runs a checkpoint round every CheckpointInterval until Close.
func (s *Store) checkpointLoop() {
	defer close(s.ckptDone)
	t := time.NewTicker(s.opts.CheckpointInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stopCkpt:
			return
		case now := <-t.C:
			s.checkpoint(now)
		}
	}
}

// checkpoint is one round of the checkpointer: a PASSIVE checkpoint, then a restart if the
// WAL has reached WALRestartBytes, or a truncation if the store has been idle.
func (s *Store) checkpoint(now time.Time) {
	if s.sync.failed() != nil {
		return // the store refuses everything; leave the files as they are
	}
	w := &s.wal
	commits := s.sync.started.Load()
	if commits != w.lastCommits {
		w.lastCommits, w.quietSince, w.truncatedIdle = commits, now, false
	}
	frames, err := s.passive()
	if err != nil {
		s.opts.Log.Warn("WAL checkpoint failed", "err", err)
		return
	}
	switch {
	case now.Before(w.retryAt):
	case frames*w.frameSize >= s.opts.WALRestartBytes && commits != w.restartedAt:
		// Copy what the writer added during that checkpoint too, still off its path, so
		// that the restart, which holds the writer up, has little left to copy.
		if _, err := s.passive(); err != nil {
			s.opts.Log.Warn("WAL checkpoint failed", "err", err)
			return
		}
		if s.restarted(now, s.restartWAL("RESTART")) {
			w.restarts.Add(1)
			w.restartedAt = commits
		}
	case !w.truncatedIdle && now.Sub(w.quietSince) >= s.opts.IdleTruncate:
		if s.restarted(now, s.restartWAL("TRUNCATE")) {
			w.truncates.Add(1)
			w.truncatedIdle = true
			w.frames.Store(0)
		}
	}
}

// maxRestartBackoff bounds the wait between tries at a restart that readers keep holding
// off.
const maxRestartBackoff = 8 * time.Second

// restarted notes whether a restart completed and returns ok. One held off is tried again
// after a wait that doubles each time, up to maxRestartBackoff: a reader of another
// process that holds the WAL for long (a backup, a person in the sqlite3 shell) would
// otherwise cost the writer RestartWait every round.
func (s *Store) restarted(now time.Time, ok bool) bool {
	w := &s.wal
	if ok {
		w.backoff, w.retryAt = 0, time.Time{}
		return true
	}
	w.backoff = min(max(2*w.backoff, s.opts.CheckpointInterval), maxRestartBackoff)
	w.retryAt = now.Add(w.backoff)
	return false
}

// passive runs a PASSIVE checkpoint on the checkpointer's connection and returns the
// frames in the WAL.
func (s *Store) passive() (int64, error) {
	start := time.Now()
	_, frames, err := walCheckpoint(context.Background(), s.ckpt, "PASSIVE")
	s.wal.passiveNanos.Add(int64(time.Since(start)))
	if err != nil {
		return 0, err
	}
	s.wal.checkpoints.Add(1)
	s.wal.frames.Store(frames)
	return frames, nil
}

// restartWAL runs a RESTART or TRUNCATE checkpoint on the writer's connection and reports
// whether it completed: everything copied and no reader left on the WAL, so that the next
// write starts it over (TRUNCATE has also cut the file to nothing).
func (s *Store) restartWAL(mode string) bool {
	w := &s.wal
	// The store's own readers are kept out (readGate); the wait for readers is then only
	// for another process's. The gate is taken first, so that the writer is not held up
	// while the reads in progress end.
	s.readGate.Lock()
	defer s.readGate.Unlock()
	ctx := context.Background()
	conn, err := s.writer.Conn(ctx) // free once the transaction in progress ends
	if err != nil {
		w.heldOff.Add(1)
		return false
	}
	defer conn.Close()
	// The wait for readers is bounded with the connection's busy timeout, not with a
	// deadline on the context, which bounds whatever the driver does at its expiry, not
	// just SQLite's busy handler.
	if _, err := conn.ExecContext(ctx, "PRAGMA busy_timeout = "+strconv.FormatInt(max(1, s.opts.RestartWait.Milliseconds()), 10)); err != nil {
		w.heldOff.Add(1)
		return false
	}
	defer func() {
		if _, err := conn.ExecContext(ctx, "PRAGMA busy_timeout = "+strconv.Itoa(busyTimeoutMS)); err != nil {
			// A writer left with the short timeout would fail against another process's
			// lock: drop the connection; the next one gets the DSN's settings.
			s.opts.Log.Warn("WAL restart: busy timeout not restored; the writer's connection is replaced", "err", err)
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
	}()
	var busy, frames, done int64
	start := time.Now()
	err = conn.QueryRowContext(ctx, "PRAGMA wal_checkpoint("+mode+")").Scan(&busy, &frames, &done)
	took := int64(time.Since(start))
	w.restartNanos.Add(took)
	if took > w.restartMax.Load() {
		w.restartMax.Store(took) // only this goroutine stores it
	}
	if err == nil && busy == 0 {
		return true
	}
	w.heldOff.Add(1)
	s.opts.Log.Debug("WAL restart held off", "mode", mode, "busy", busy, "frames", frames, "err", err)
	if size := frames * w.frameSize; size > s.opts.WALSizeLimit && time.Since(w.lastWarning) > 30*time.Second {
		w.lastWarning = time.Now()
		s.opts.Log.Warn("WAL above its size limit: readers keep it from restarting",
			"wal_bytes", size, "limit", s.opts.WALSizeLimit, "err", err)
	}
	return false
}

// walCheckpoint runs PRAGMA wal_checkpoint(mode) on db and returns SQLite's answer: whether
// it could not finish (busy), and the frames in the WAL.
func walCheckpoint(ctx context.Context, db *sql.DB, mode string) (busy bool, frames int64, err error) {
	var b, done int64
	if err := db.QueryRowContext(ctx, "PRAGMA wal_checkpoint("+mode+")").Scan(&b, &frames, &done); err != nil {
		return false, 0, err
	}
	return b != 0, frames, nil
}
