package storetest

import (
	"fmt"
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
