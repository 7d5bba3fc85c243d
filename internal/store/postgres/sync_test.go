package postgres

import (
	"context"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/parley-chat/parley/internal/store"
	"github.com/parley-chat/parley/protocol"
)

// TestSyncLateCommit holds a batch's transaction open, stamped, while another batch to
// another conversation commits and a sync runs: the sync must not return a token past the
// open batch, so that once it commits the next sync reports it. Fails on a token that is
// the largest position seen (checked: with the horizon taken away, the second sync returns
// c2 and a token beyond c1's position, and c1's event is never reported).
func TestSyncLateCommit(t *testing.T) {
	ctx := t.Context()
	db := openTest(t, testDB(t))
	for _, u := range []string{"a", "b"} {
		if err := db.CreateUser(ctx, protocol.User{ID: u, Username: u}, "h"); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []string{"c1", "c2"} {
		if _, _, err := db.CreateGroup(ctx, protocol.Conversation{ID: c, Members: []protocol.Member{{UserID: "b"}}}, "a", 1); err != nil {
			t.Fatal(err)
		}
	}
	_, t0, _, err := db.Sync(ctx, "b", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	// The late batch: stamped now, committed at the end.
	tx, err := db.pool.BeginTx(ctx, pgx.TxOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := db.appendTx(ctx, tx, []store.AppendRequest{{ConversationID: "c1", SenderID: "a", ClientID: "late", Kind: protocol.KindText, Body: "x", TS: 2}}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Append(ctx, []store.AppendRequest{{ConversationID: "c2", SenderID: "a", ClientID: "early", Kind: protocol.KindText, Body: "y", TS: 3}}); err != nil {
		t.Fatal(err)
	}
	cs, t1, _, err := db.Sync(ctx, "b", t0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 0 {
		// c2 committed, but above the open batch's xid: reported next time, with c1.
		t.Logf("sync while c1's batch is open returned %v", ids(cs))
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	cs, _, _, err = db.Sync(ctx, "b", t1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(cs); !slices.Contains(got, "c1") {
		t.Fatalf("sync after the late batch committed = %v, want c1 in it", got)
	}
}

func ids(cs []protocol.Conversation) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.ID
	}
	slices.Sort(out)
	return out
}
