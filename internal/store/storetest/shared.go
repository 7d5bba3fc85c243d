package storetest

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/parley-chat/parley/internal/store"
	"github.com/parley-chat/parley/protocol"
)

// RunShared runs the two-handle mode of the suite: open returns two Stores on one database
// (two processes' views of it), and the cases write through both at once. What one handle
// remembers of the database must never outlive what the other wrote.
func RunShared(t *testing.T, open func(t *testing.T) (a, b store.Store)) {
	tests := []struct {
		name string
		fn   func(t *testing.T, a, b store.Store)
	}{
		{"Shared/AppendsGapless", testSharedAppends},
		{"Shared/RemovedMemberRefused", testSharedRemovedMember},
		{"Shared/MemberListFromOtherHandle", testSharedMemberList},
		{"Shared/SyncWhileWriting", testSharedSyncWhileWriting},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := open(t)
			tc.fn(t, a, b)
		})
	}
}

// testSharedAppends: two handles appending to the same conversations at once give every
// conversation gapless seqs and store each (sender, client id) once. Fails on a store that
// keeps conversation heads in memory without checking them against the database (the SQLite
// store's hot cache before it read data_version: the second handle reuses a seq and its
// batch fails on the unique key).
func testSharedAppends(t *testing.T, a, b store.Store) {
	mkUsers(t, a, "u1", "u2")
	mkDirect(t, a, "c1", "u1", "u2")
	mkGroup(t, a, "c2", "u1", "u2")
	const perHandle, batch = 60, 4
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for h, s := range []store.Store{a, b} {
		sender := []string{"u1", "u2"}[h]
		wg.Go(func() {
			for i := 0; i < perHandle; i += batch {
				var reqs []store.AppendRequest
				for j := i; j < i+batch; j++ {
					conv := []string{"c1", "c2"}[j%2]
					reqs = append(reqs, text(conv, sender, fmt.Sprintf("%s-%d", sender, j), "x", ts0))
				}
				rs, err := s.Append(t.Context(), reqs)
				if err == nil {
					for _, r := range rs {
						if r.Err != nil {
							err = r.Err
						}
					}
				}
				if err != nil {
					errs[h] = fmt.Errorf("handle %d batch at %d: %w", h, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []string{"c1", "c2"} {
		for _, s := range []store.Store{a, b} {
			h := history(t, s, c, "u1")
			seen := map[string]bool{}
			texts := 0
			for i, m := range h {
				if m.Seq != int64(i+1) {
					t.Fatalf("%s: history[%d].Seq = %d, want %d (gapless)", c, i, m.Seq, i+1)
				}
				if m.Kind == protocol.KindText {
					if seen[m.SenderID+"/"+m.ID] {
						t.Fatalf("%s: %s stored twice", c, m.ID)
					}
					seen[m.SenderID+"/"+m.ID] = true
					texts++
				}
			}
			if texts != perHandle { // half of each handle's appends went to each conversation
				t.Fatalf("%s: %d messages, want %d", c, texts, perHandle)
			}
		}
	}
}

// testSharedRemovedMember: a member removed through one handle can no longer append through
// the other, though that handle had just seen them append. Fails on a store that trusts a
// membership or a log head it remembers (the SQLite store's hot cache before it read
// data_version: the append is taken, at a seq the removal's event already has).
func testSharedRemovedMember(t *testing.T, a, b store.Store) {
	mkUsers(t, a, "u1", "u2")
	mkGroup(t, a, "g1", "u1", "u2")
	appendOK(t, b, text("g1", "u2", "before", "hello", ts0)) // b now knows u2 is a member
	if _, err := a.ChangeMembership(t.Context(), "g1", ts0+1, func(protocol.Conversation) (store.MemberChange, error) {
		return store.MemberChange{
			Remove:  []string{"u2"},
			Event:   protocol.SystemEvent{Action: protocol.SysMemberRemoved, ActorID: "u1", UserIDs: []string{"u2"}},
			ActorID: "u1",
		}, nil
	}); err != nil {
		t.Fatalf("remove u2 through a: %v", err)
	}
	rs := appendAll(t, b, text("g1", "u2", "after", "still here?", ts0+2))
	wantErr(t, "Append through b by a member removed through a", rs[0].Err, store.ErrNotMember)
	// And the log goes on, gapless, through b.
	m := appendOK(t, b, text("g1", "u1", "next", "x", ts0+3))
	if want := int64(len(history(t, a, "g1", "u1"))); m.Seq != want {
		t.Fatalf("next seq through b = %d, want %d", m.Seq, want)
	}
}

// testSharedMemberList: a member list cached by version (chat's fan-out cache) is corrected
// by the append itself when another handle changed the membership: the result carries the
// list in force when the event was stored. Fails on a store that answers from what the
// handle remembers (checked: with the SQLite hot cache trusted without its data_version
// check, the append through b does not even see the change, and reuses its seq).
func testSharedMemberList(t *testing.T, a, b store.Store) {
	mkUsers(t, a, "u1", "u2", "u3")
	mkGroup(t, a, "g1", "u1", "u2")
	r := appendAll(t, b, text("g1", "u1", "m1", "x", ts0))[0]
	if r.Err != nil || r.Members == nil {
		t.Fatalf("first append through b = %+v, want the member list", r)
	}
	v := r.Members.Version
	r = appendAll(t, b, withVersion(text("g1", "u1", "m2", "x", ts0), v))[0]
	if r.Err != nil || r.Members != nil {
		t.Fatalf("append with the current version = %+v, want no list", r)
	}
	if _, err := a.ChangeMembership(t.Context(), "g1", ts0+1, func(protocol.Conversation) (store.MemberChange, error) {
		return store.MemberChange{Add: []protocol.Member{{UserID: "u3", Role: protocol.RoleMember}}, ActorID: "u1",
			Event: protocol.SystemEvent{Action: protocol.SysMembersAdded, ActorID: "u1", UserIDs: []string{"u3"}}}, nil
	}); err != nil {
		t.Fatal(err)
	}
	r = appendAll(t, b, withVersion(text("g1", "u1", "m3", "x", ts0+2), v))[0]
	if r.Err != nil || r.Members == nil || r.Members.Version == v || !slices.Contains(r.Members.IDs, "u3") {
		t.Fatalf("append through b after u3 was added through a = %+v, want the new list with u3", r)
	}
	l, err := b.Members(t.Context(), "g1")
	if err != nil || l.Version != r.Members.Version || !slices.Equal(l.IDs, r.Members.IDs) {
		t.Fatalf("Members(g1) = %+v, %v; want %+v", l, err, *r.Members)
	}
}

func withVersion(r store.AppendRequest, v int64) store.AppendRequest {
	r.MemberVersion = v
	return r
}

// testSharedSyncWhileWriting: while both handles append, move cursors and change membership,
// a user syncs through one of them with each token it is given; once the writers stop, one
// more sync from the last token must leave the user with every conversation's final state.
// Fails on a store whose token is the largest change position it has seen (checked on the
// PostgreSQL store with the horizon taken away: a batch that took its position before a
// later one but committed after the sync had passed it was never reported, and the user's
// view of a conversation stayed behind its log).
func testSharedSyncWhileWriting(t *testing.T, a, b store.Store) {
	ctx := t.Context()
	mkUsers(t, a, "u1", "u2", "u3")
	convs := []string{"c0", "c1", "c2", "c3"}
	for _, c := range convs {
		mkGroup(t, a, c, "u1", "u2")
	}
	const rounds = 40
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	stop := make(chan struct{})
	for h, s := range []store.Store{a, b} {
		for w := range 2 {
			wg.Go(func() {
				sender := []string{"u1", "u2"}[w]
				for i := range rounds {
					var reqs []store.AppendRequest
					for j := range 3 {
						c := convs[(i+j+h)%len(convs)]
						reqs = append(reqs, text(c, sender, fmt.Sprintf("h%d-w%d-%d-%d", h, w, i, j), "x", ts0+int64(i)))
					}
					rs, err := s.Append(ctx, reqs)
					if err == nil {
						for _, r := range rs {
							if r.Err != nil {
								err = r.Err
							}
						}
					}
					if err == nil && w == 1 {
						_, err = s.SetCursors(ctx, []store.CursorUpdate{{ConversationID: convs[i%len(convs)], UserID: "u1",
							Status: "read", Seq: rs[0].Message.Seq, TS: ts0 + int64(i)}})
					}
					if err != nil {
						errs <- fmt.Errorf("handle %d writer %d: %w", h, w, err)
						return
					}
				}
			})
		}
	}
	wg.Go(func() { // u3 joins and leaves c3 through a, over and over
		for i := range rounds / 4 {
			ch := store.MemberChange{Add: []protocol.Member{{UserID: "u3"}}, ActorID: "u1",
				Event: protocol.SystemEvent{Action: protocol.SysMembersAdded, ActorID: "u1", UserIDs: []string{"u3"}}}
			if i%2 == 1 {
				ch = store.MemberChange{Remove: []string{"u3"}, ActorID: "u1",
					Event: protocol.SystemEvent{Action: protocol.SysMemberRemoved, ActorID: "u1", UserIDs: []string{"u3"}}}
			}
			if _, err := a.ChangeMembership(ctx, "c3", ts0, func(protocol.Conversation) (store.MemberChange, error) { return ch, nil }); err != nil {
				errs <- err
				return
			}
		}
	})
	seen := map[string]protocol.Conversation{}
	token := ""
	syncAll := func() error {
		for pages := 0; pages < 1000; pages++ {
			cs, next, more, err := a.Sync(ctx, "u1", token, 2)
			if err != nil {
				return err
			}
			for _, c := range cs {
				seen[c.ID] = c
			}
			token = next
			if !more {
				return nil
			}
		}
		return fmt.Errorf("sync does not end")
	}
	var readerErr error
	reader := make(chan struct{})
	go func() {
		defer close(reader)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := syncAll(); err != nil {
				readerErr = err
				return
			}
		}
	}()
	wg.Wait()
	close(stop)
	<-reader
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if readerErr != nil {
		t.Fatal(readerErr)
	}
	if err := syncAll(); err != nil {
		t.Fatal(err)
	}
	for _, id := range convs {
		want := conv(t, b, id, "u1")
		got, ok := seen[id]
		if !ok || got.LastSeq != want.LastSeq || got.LastReadSeq != want.LastReadSeq || len(got.Members) != len(want.Members) {
			t.Errorf("%s: synced LastSeq %d, read %d, %d members; the store has %d, %d, %d",
				id, got.LastSeq, got.LastReadSeq, len(got.Members), want.LastSeq, want.LastReadSeq, len(want.Members))
		}
	}
}
