package sqlite

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-chat/parley/internal/store"
)

// Durability is pipelined. The writer connection runs with synchronous=NORMAL, so a commit
// writes its WAL frames and returns without waiting for the disk; walSyncer then syncs the
// WAL file on its own goroutine, and a write is reported durable once a sync that began
// after its commit has finished. One sync covers every commit made before it started, so
// while one batch's sync is in flight the next batch's transaction runs instead of waiting.
// On this project's machine a sync is 0.2–0.7 ms, about 40% of a small batch's commit with
// synchronous=FULL (docs/benchmarks.md).
//
// Why this is as safe as synchronous=FULL: WAL recovery keeps the longest prefix of frames
// whose checksum chain is intact, so a crash keeps exactly the commits whose frames reached
// the disk, in order, and loses only later ones, none of which was reported durable. A
// checkpoint syncs the WAL before copying it and the database after (SQLite does that on
// the checkpointer's own connection), and the WAL is only restarted after a complete
// checkpoint, so nothing that was synced is overwritten before it is in the database file.
//
// Reads must not show what could still be lost: a reader that saw an unsynced commit and
// reported it (a history page, a sync) would contradict the store after a power loss. So a
// read, once it has its answer, waits until every commit that may have been visible to it
// is synced (seen): usually nothing, at most one sync.

// walSyncer makes the writer's commits durable by syncing the WAL file.
type walSyncer struct {
	path string // the WAL file: the database path plus "-wal"

	mu      sync.Mutex
	f       *os.File
	fi      os.FileInfo // of f, to notice the WAL being replaced
	written uint64      // commits that have finished writing their frames (or failed)
	closed  bool
	changed chan struct{} // closed (and replaced) whenever synced, err or closed changes

	// synced counts the commits known to be on stable storage. Set under mu; atomic so
	// that wait, which every read calls, takes no lock when there is nothing to wait for.
	synced atomic.Uint64
	// err is a failed sync: sticky, since the kernel may have dropped the pages. Set under
	// mu; atomic so that failed, which every store call asks, takes no lock.
	err atomic.Pointer[error]

	// started counts commits begun: read without mu by readers. commitMu makes commits
	// take their numbers in the order they are written.
	started  atomic.Uint64
	commitMu sync.Mutex

	wake chan struct{} // cap 1: there are written commits to sync
	stop chan struct{}
	done chan struct{}

	// syncs counts the WAL syncs, and syncMax is the longest, in nanoseconds.
	syncs, syncMax atomic.Int64

	// beforeSync, if set (tests), runs at the start of every sync round.
	beforeSync atomic.Pointer[func()]
}

// newWALSyncer opens the WAL file of the database at dbPath, syncs it (covering whatever
// was written before, such as migrations) and starts the syncing goroutine.
func newWALSyncer(dbPath string) (*walSyncer, error) {
	w := &walSyncer{
		path:    dbPath + "-wal",
		changed: make(chan struct{}),
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	if err := w.reopen(); err != nil {
		return nil, err
	}
	if err := syncData(w.f); err != nil {
		w.f.Close()
		return nil, fmt.Errorf("sync %s: %w", w.path, err)
	}
	go w.loop()
	return w, nil
}

// reopen opens the WAL file at w.path (SQLite creates it; creating it here first is
// harmless, an empty WAL is no WAL) and closes the previous one. Called with mu held or
// before the loop starts.
func (w *walSyncer) reopen() error {
	f, err := os.OpenFile(w.path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("open %s: %w", w.path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat %s: %w", w.path, err)
	}
	if w.f != nil {
		w.f.Close()
	}
	w.f, w.fi = f, fi
	return nil
}

// commit runs fn, which commits one transaction (or runs one autocommit statement) on the
// writer, and returns its number for wait. The number is taken before fn so that a reader
// that sees the commit also sees it counted.
func (w *walSyncer) commit(fn func() error) (uint64, error) {
	w.commitMu.Lock()
	n := w.started.Add(1)
	err := fn()
	w.mu.Lock()
	w.written = n
	w.mu.Unlock()
	w.commitMu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return n, err
}

// wait returns once commit n is synced, or the error that keeps it from being so. It does
// not take a context: a sync is bounded by the disk, and a caller that gave up could not
// tell whether its write was durable.
func (w *walSyncer) wait(n uint64) error {
	if w.synced.Load() >= n {
		return nil // the usual case for a read
	}
	for {
		w.mu.Lock()
		synced, err, closed, ch := w.synced.Load(), w.failed(), w.closed, w.changed
		w.mu.Unlock()
		switch {
		case synced >= n:
			return nil
		case err != nil:
			return err
		case closed:
			return store.ErrClosed
		}
		<-ch
	}
}

// seen is called by a read once it has its answer: it waits until every commit the read may
// have seen is synced, and returns the error of a failed sync, after which a read that may
// have seen a commit that is not durable must not be answered.
func (w *walSyncer) seen() error {
	return w.wait(w.started.Load())
}

// durable returns the store.Durable for commit n.
func (w *walSyncer) durable(n uint64) store.Durable {
	return func(context.Context) error {
		if err := w.wait(n); err != nil {
			// A sync that failed for want of space or on an I/O error is the store being
			// unable to write (it stays so until a restart: see walSyncer.err).
			return fmt.Errorf("sqlite: durable: %w", unavailable(err))
		}
		return nil
	}
}

func (w *walSyncer) loop() {
	defer close(w.done)
	for {
		select {
		case <-w.wake:
			w.round()
		case <-w.stop:
			w.round() // whatever was written before Close
			w.mu.Lock()
			w.closed = true
			w.broadcast()
			w.mu.Unlock()
			w.f.Close()
			return
		}
	}
}

// round syncs the WAL once, covering every commit written before it starts.
func (w *walSyncer) round() {
	if f := w.beforeSync.Load(); f != nil {
		(*f)()
	}
	w.mu.Lock()
	target := w.written
	if target <= w.synced.Load() || w.failed() != nil {
		w.mu.Unlock()
		return
	}
	f, err := w.current()
	w.mu.Unlock()
	if err == nil {
		start := time.Now()
		err = syncData(f)
		took := int64(time.Since(start))
		w.syncs.Add(1)
		if took > w.syncMax.Load() {
			w.syncMax.Store(took) // only the loop stores it
		}
	}
	w.mu.Lock()
	if err != nil {
		err = fmt.Errorf("WAL sync failed, the store refuses every call from now on: %w", err)
		w.err.Store(&err)
	} else {
		w.synced.Store(target)
	}
	w.broadcast()
	w.mu.Unlock()
}

// current returns the open WAL file, reopening it if the file at w.path is no longer the
// one open: SQLite deletes the WAL when its last connection closes and creates a new one
// on the next open. The store keeps its connections open, so this is a guard, not a path
// taken in practice; a sync of a file SQLite no longer writes would be silently useless.
// Called with mu held.
func (w *walSyncer) current() (*os.File, error) {
	fi, err := os.Stat(w.path)
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", w.path, err)
	}
	if !os.SameFile(fi, w.fi) {
		if err := w.reopen(); err != nil {
			return nil, err
		}
	}
	return w.f, nil
}

func (w *walSyncer) broadcast() {
	close(w.changed)
	w.changed = make(chan struct{})
}

// close syncs what was written and stops the goroutine; later waits for commits it covered
// return nil, others store.ErrClosed.
func (w *walSyncer) close() {
	close(w.stop)
	<-w.done
}

// failed returns the error of a failed sync, or nil.
func (w *walSyncer) failed() error {
	if p := w.err.Load(); p != nil {
		return *p
	}
	return nil
}
