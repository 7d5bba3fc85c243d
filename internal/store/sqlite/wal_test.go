package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/parley-chat/parley/internal/store"
	"github.com/parley-chat/parley/internal/store/storetest"
	"github.com/parley-chat/parley/protocol"
)

// manual is a checkpoint interval that keeps the background checkpointer out of a test,
// which runs the rounds itself (s.checkpoint).
const manual = time.Hour

func openWith(t testing.TB, opts Options) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "parley.db")
	s, err := Open(context.Background(), path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

// walSize is the size of the WAL file, 0 if there is none.
func walSize(t testing.TB, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path + "-wal")
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// testConv is a direct conversation of seedConvs and the user who writes in it.
type testConv struct{ id, sender string }

// seedConvs creates n direct conversations, each between two users of its own. Ids are
// UUIDv7 strings, as the server makes them, so that rows and index entries have their real
// sizes.
func seedConvs(t testing.TB, s *Store, n int) []testConv {
	t.Helper()
	ctx := context.Background()
	convs := make([]testConv, n)
	for i := range convs {
		var users [2]string
		for k := range users {
			users[k] = uuid.Must(uuid.NewV7()).String()
			name := fmt.Sprintf("u%d-%d", i, k)
			if err := s.CreateUser(ctx, protocol.User{ID: users[k], Username: name, DisplayName: name, CreatedTS: 1}, "h"); err != nil {
				t.Fatal(err)
			}
		}
		convs[i] = testConv{id: uuid.Must(uuid.NewV7()).String(), sender: users[0]}
		if _, _, err := s.CreateDirect(ctx, convs[i].id, users[0], users[1], 1); err != nil {
			t.Fatal(err)
		}
	}
	return convs
}

// appendSpread appends one batch of n text messages, the k-th in conversation
// (first+k) mod len(convs), as a busy server's batch is: each message in a different
// conversation. Bodies are as long as a send time in nanoseconds, like the load generator's.
func appendSpread(t testing.TB, s *Store, convs []testConv, first, n int) {
	t.Helper()
	reqs := make([]store.AppendRequest, n)
	for k := range reqs {
		c := convs[(first+k)%len(convs)]
		reqs[k] = store.AppendRequest{ConversationID: c.id, SenderID: c.sender,
			ClientID: uuid.Must(uuid.NewV7()).String(), Kind: protocol.KindText, Body: "1765123456789012345", TS: 2}
	}
	rs, err := s.Append(context.Background(), reqs)
	if err != nil {
		t.Error(err) // t.Fatal cannot be called from a test's other goroutines
		return
	}
	for _, r := range rs {
		if r.Err != nil {
			t.Error(r.Err)
			return
		}
	}
}

// TestConformanceRestartingWAL runs the store contract with the WAL restarting all the time,
// so that every kind of read and write meets restarts in progress.
func TestConformanceRestartingWAL(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, _ := openWith(t, Options{WALRestartBytes: 8 << 10, CheckpointInterval: time.Millisecond, IdleTruncate: 5 * time.Millisecond})
		return s
	})
}

// TestWALRestartsWhileWriting: with a checkpointer running round after round while a writer
// appends without pause and a reader reads without pause, the WAL restarts again and again,
// no restart is held off by the reader, and the file stays within a few times the restart
// threshold; without restarts it would hold everything written.
func TestWALRestartsWhileWriting(t *testing.T) {
	const threshold = 128 << 10
	// RestartWait is shorter than a restart takes (1–3 ms): it must bound only a wait for
	// readers, of which there is none here, not the restart itself.
	s, path := openWith(t, Options{WALRestartBytes: threshold, CheckpointInterval: manual, IdleTruncate: manual,
		RestartWait: time.Millisecond})
	convs := seedConvs(t, s, 50)
	if _, _, err := walCheckpoint(context.Background(), s.writer, "TRUNCATE"); err != nil {
		t.Fatal(err) // the seeding's frames, written with no checkpointer
	}

	// Each batch puts its 10 messages in 10 conversations, so it writes at least 10 pages:
	// 600 batches write more than 45 thresholds' worth of WAL.
	const batches = 600
	var done atomic.Bool
	var maxSize atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		defer done.Store(true)
		for i := range batches {
			appendSpread(t, s, convs, i*10, 10)
			if n := walSize(t, path); n > maxSize.Load() {
				maxSize.Store(n)
			}
		}
	})
	// Readers too: a restart must wait for them to leave the WAL, and they must not keep
	// it from ever restarting.
	wg.Go(func() {
		for !done.Load() {
			if _, _, err := s.Messages(context.Background(), convs[0].id, convs[0].sender, 0, -1, 20); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for !done.Load() {
		s.checkpoint(time.Now())
	}
	wg.Wait()

	st := s.WALStats()
	t.Logf("largest WAL file %d KiB, %+v", maxSize.Load()>>10, st)
	if st.Restarts < 10 {
		t.Errorf("%d restarts in %d batches with a %d KiB threshold", st.Restarts, batches, threshold>>10)
	}
	if st.HeldOff != 0 {
		t.Errorf("%d restarts held off: the store's own readers must be kept out of a restart's way", st.HeldOff)
	}
	if max := maxSize.Load(); max > 4*threshold {
		t.Errorf("the WAL file reached %d KiB, more than 4 times the %d KiB threshold", max>>10, threshold>>10)
	}
}

// TestWALShrinksAfterBurst: a reader that holds a snapshot keeps the WAL from restarting, so
// it grows past its size limit; once the reader is gone the next round restarts it and the
// next write cuts the file back to the limit; after a quiet spell it is truncated to
// nothing.
func TestWALShrinksAfterBurst(t *testing.T) {
	const threshold, limit = 64 << 10, 256 << 10
	opts := Options{WALRestartBytes: threshold, WALSizeLimit: limit, CheckpointInterval: manual, IdleTruncate: time.Minute}
	s, path := openWith(t, opts)
	convs := seedConvs(t, s, 20)
	ctx := context.Background()

	// A reader of its own, holding a read transaction on the WAL.
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := tx.QueryRow(`SELECT count(*) FROM messages`).Scan(&n); err != nil {
		t.Fatal(err)
	}

	for i := 0; walSize(t, path) < 4*limit; i++ {
		appendSpread(t, s, convs, i*10, 10)
		s.checkpoint(time.Now())
	}
	burst := walSize(t, path)
	// One try, held off; the next waits (maxRestartBackoff at most), not every round.
	if st := s.WALStats(); st.HeldOff != 1 || st.Restarts != 0 {
		t.Fatalf("with a reader holding the WAL: %+v, want one restart tried and held off", st)
	}

	tx.Rollback()
	s.checkpoint(time.Now().Add(maxRestartBackoff)) // past the wait after restarts held off
	if st := s.WALStats(); st.Restarts != 1 {
		t.Fatalf("after the reader left: %+v, want one restart", st)
	}
	appendSpread(t, s, convs, 0, 10)
	after := walSize(t, path)
	t.Logf("WAL file: %d KiB in the burst, %d KiB after the restart and one more write", burst>>10, after>>10)
	if after > limit {
		t.Errorf("WAL file is %d KiB after the restart, want at most the %d KiB limit", after>>10, limit>>10)
	}

	// Idle: nothing written for IdleTruncate (the round is told it is later than it is).
	s.checkpoint(time.Now()) // notes the last write
	s.checkpoint(time.Now().Add(opts.IdleTruncate))
	if n := walSize(t, path); n != 0 {
		t.Errorf("WAL file is %d bytes after an idle spell, want 0", n)
	}
	if st := s.WALStats(); st.Truncations != 1 {
		t.Errorf("%+v, want one truncation", st)
	}
	// And the store goes on as before.
	appendSpread(t, s, convs, 0, 10)
	ms, _, err := s.Messages(ctx, convs[0].id, convs[0].sender, 0, -1, 1000)
	if err != nil || len(ms) == 0 {
		t.Fatalf("Messages after truncation: %d, %v", len(ms), err)
	}
}

// TestNewDatabasePageSize: a new file gets the configured page size, and an existing one
// keeps its own.
func TestNewDatabasePageSize(t *testing.T) {
	ctx := context.Background()
	s, path := openWith(t, Options{})
	pageSize := func(s *Store) int {
		var n int
		if err := s.reader.QueryRowContext(ctx, `PRAGMA page_size`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := pageSize(s); n != 1024 {
		t.Errorf("new database: page size %d, want 1024", n)
	}
	s.Close()
	s2, err := Open(ctx, path, Options{PageSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if n := pageSize(s2); n != 1024 {
		t.Errorf("reopened with another page size: %d, want the file's 1024", n)
	}
	if s2.wal.frameSize != 1024+24 {
		t.Errorf("frame size %d, want 1048", s2.wal.frameSize)
	}
}
