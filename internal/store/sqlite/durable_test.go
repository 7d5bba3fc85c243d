package sqlite

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/parley-chat/parley/internal/store"
	"github.com/parley-chat/parley/protocol"
)

// heldSyncs makes s's syncer stop before each sync until release is called; the returned
// channel receives once per sync round that reached the hold.
func heldSyncs(t *testing.T, s *Store) (reached <-chan struct{}, release func()) {
	t.Helper()
	gate := make(chan struct{})
	r := make(chan struct{}, 16)
	hold := func() {
		select {
		case r <- struct{}{}:
		default:
		}
		<-gate
	}
	s.sync.beforeSync.Store(&hold)
	released := false
	release = func() {
		if !released {
			released = true
			close(gate)
		}
	}
	t.Cleanup(release)
	return r, release
}

// waitCommitted waits until a commit has begun and every commit begun is written (visible,
// not necessarily synced).
func waitCommitted(t *testing.T, s *Store) {
	t.Helper()
	written := func() bool {
		s.sync.mu.Lock()
		defer s.sync.mu.Unlock()
		return s.sync.written >= s.sync.started.Load()
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.sync.started.Load() == 0 || !written() {
		if time.Now().After(deadline) {
			t.Fatal("no commit was written")
		}
		time.Sleep(time.Millisecond)
	}
}

func seedDirect(t *testing.T, s *Store) {
	t.Helper()
	ctx := t.Context()
	for _, id := range []string{"a", "b"} {
		if err := s.CreateUser(ctx, protocol.User{ID: id, Username: id, DisplayName: id}, "h"); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := s.CreateDirect(ctx, "d1", "a", "b", 1); err != nil {
		t.Fatal(err)
	}
}

// TestUnsyncedIsNeitherDurableNorVisible: while the WAL sync of a committed batch is held
// back, its durable does not return and no read shows the batch; both go ahead once the
// sync runs. This is what lets acks and reads never get ahead of the disk.
func TestUnsyncedIsNeitherDurableNorVisible(t *testing.T) {
	s := openTemp(t)
	seedDirect(t, s)
	ctx := t.Context()
	reached, release := heldSyncs(t, s)

	rs, durable, err := s.AppendCommitted(ctx, []store.AppendRequest{{
		ConversationID: "d1", SenderID: "a", ClientID: "m1", Kind: protocol.KindText, Body: "hi", TS: 2,
	}})
	if err != nil || rs[0].Err != nil || rs[0].Message.Seq != 1 {
		t.Fatalf("AppendCommitted = %+v, %v", rs, err)
	}
	select {
	case <-reached:
	case <-time.After(5 * time.Second):
		t.Fatal("the syncer never started a sync for the commit")
	}

	durableDone := make(chan error, 1)
	go func() { durableDone <- durable(ctx) }()
	type page struct {
		ms  []protocol.Message
		err error
	}
	readDone := make(chan page, 1)
	go func() {
		ms, _, err := s.Messages(ctx, "d1", "b", 0, 0, 10)
		readDone <- page{ms, err}
	}()

	select {
	case err := <-durableDone:
		t.Fatalf("durable returned %v while the sync was held", err)
	case p := <-readDone:
		t.Fatalf("Messages returned %d messages (err %v) while the sync was held", len(p.ms), p.err)
	case <-time.After(200 * time.Millisecond):
	}

	release()
	if err := <-durableDone; err != nil {
		t.Fatalf("durable after the sync: %v", err)
	}
	p := <-readDone
	if p.err != nil || len(p.ms) != 1 || p.ms[0].ID != "m1" {
		t.Fatalf("Messages after the sync = %+v, %v; want m1", p.ms, p.err)
	}
}

// TestNextBatchCommitsDuringSync: a batch commits while the previous batch's sync is still
// held, which is the whole point of AppendCommitted; one sync then covers both.
func TestNextBatchCommitsDuringSync(t *testing.T) {
	s := openTemp(t)
	seedDirect(t, s)
	ctx := t.Context()
	reached, release := heldSyncs(t, s)

	req := func(id string) []store.AppendRequest {
		return []store.AppendRequest{{ConversationID: "d1", SenderID: "a", ClientID: id, Kind: protocol.KindText, Body: id, TS: 2}}
	}
	_, first, err := s.AppendCommitted(ctx, req("m1"))
	if err != nil {
		t.Fatal(err)
	}
	<-reached
	committed := make(chan store.Durable, 1)
	go func() {
		rs, d, err := s.AppendCommitted(ctx, req("m2"))
		if err != nil || rs[0].Message.Seq != 2 {
			t.Errorf("second AppendCommitted = %+v, %v", rs, err)
		}
		committed <- d
	}()
	var second store.Durable
	select {
	case second = <-committed:
	case <-time.After(5 * time.Second):
		t.Fatal("the second batch did not commit while the first one's sync was held")
	}
	release()
	for i, d := range []store.Durable{first, second} {
		if d == nil {
			t.Fatalf("durable %d is nil", i)
		}
		if err := d(ctx); err != nil {
			t.Fatalf("durable %d: %v", i, err)
		}
	}
}

// TestFailedSyncIsSticky: when a sync fails the batch is reported not durable, and from then
// on the store refuses writes and reads alike, since the kernel may have dropped the pages
// it could not write and what a read would show might not survive a crash.
func TestFailedSyncIsSticky(t *testing.T) {
	s := openTemp(t)
	seedDirect(t, s)
	ctx := t.Context()
	// A closed file makes the next sync fail the way a failing disk would.
	s.sync.mu.Lock()
	s.sync.f.Close()
	s.sync.mu.Unlock()

	_, err := s.Append(ctx, []store.AppendRequest{{
		ConversationID: "d1", SenderID: "a", ClientID: "m1", Kind: protocol.KindText, Body: "hi", TS: 2,
	}})
	if err == nil {
		t.Fatal("Append succeeded although its sync failed")
	}
	t.Logf("Append: %v", err)
	if err := s.CreateUser(ctx, protocol.User{ID: "c", Username: "c"}, "h"); err == nil || !errors.Is(err, s.sync.failed()) {
		t.Errorf("CreateUser after a failed sync = %v; want the sync's error", err)
	}
	if ms, _, err := s.Messages(ctx, "d1", "b", 0, 0, 10); err == nil {
		t.Errorf("Messages after a failed sync = %d messages, nil error; want the sync's error", len(ms))
	}
	if _, err := s.UserByID(ctx, "a"); err == nil {
		t.Error("UserByID after a failed sync: nil error; want the sync's error")
	}
	closeCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case <-done:
	case <-closeCtx.Done():
		t.Fatal("Close hung after a failed sync")
	}
}

// TestFailedWriteWaitsForWhatItSaw: a write refused because of an earlier commit (a
// username taken) is not answered before that commit is durable: a crash could otherwise
// lose the first user after the second caller was told the name was taken.
func TestFailedWriteWaitsForWhatItSaw(t *testing.T) {
	s := openTemp(t)
	ctx := t.Context()
	_, release := heldSyncs(t, s)
	first := make(chan error, 1)
	go func() { first <- s.CreateUser(ctx, protocol.User{ID: "a1", Username: "alice"}, "h") }()
	waitCommitted(t, s) // the first user: visible to the writer, not synced
	second := make(chan error, 1)
	go func() { second <- s.CreateUser(ctx, protocol.User{ID: "a2", Username: "alice"}, "h") }()
	select {
	case err := <-second:
		t.Fatalf("the conflicting CreateUser answered (%v) before the first user was synced", err)
	case err := <-first:
		t.Fatalf("the first CreateUser answered (%v) before its sync", err)
	case <-time.After(200 * time.Millisecond):
	}
	release()
	if err := <-first; err != nil {
		t.Fatalf("first CreateUser: %v", err)
	}
	if err := <-second; !errors.Is(err, store.ErrConflict) {
		t.Fatalf("second CreateUser = %v, want ErrConflict", err)
	}
}

// TestReadInFlightWhenSyncFails: a point read (not made through s.read) that saw a commit
// whose sync then fails answers with the failure, not with what it saw, as reads through
// s.read do.
func TestReadInFlightWhenSyncFails(t *testing.T) {
	s := openTemp(t)
	ctx := t.Context()
	_, release := heldSyncs(t, s)
	created := make(chan error, 1)
	go func() { created <- s.CreateUser(ctx, protocol.User{ID: "a1", Username: "alice"}, "h") }()
	waitCommitted(t, s)
	type answer struct {
		u   protocol.User
		err error
	}
	read := make(chan answer, 1)
	go func() {
		u, err := s.UserByID(ctx, "a1")
		read <- answer{u, err}
	}()
	select {
	case a := <-read:
		t.Fatalf("UserByID answered (%+v, %v) before the user was synced", a.u, a.err)
	case <-time.After(200 * time.Millisecond):
	}
	// A closed file makes the held sync fail the way a failing disk would.
	s.sync.mu.Lock()
	s.sync.f.Close()
	s.sync.mu.Unlock()
	release()
	if err := <-created; err == nil {
		t.Fatal("CreateUser succeeded although its sync failed")
	}
	if a := <-read; a.err == nil {
		t.Fatalf("UserByID = %+v, nil error, after the sync of what it read failed", a.u)
	}
}
