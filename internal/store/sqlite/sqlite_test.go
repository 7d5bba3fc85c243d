package sqlite

import (
	"context"
	"database/sql"
	"io/fs"
	"path/filepath"
	"testing"
	"testing/fstest"

	"github.com/parley-chat/parley/internal/store"
	"github.com/parley-chat/parley/internal/store/storetest"
	"github.com/parley-chat/parley/protocol"
)

// openTemp opens a store on a new file in a test directory (in a subdirectory that does not
// exist yet, so Open's directory creation is exercised too) and closes it at cleanup.
func openTemp(t testing.TB) *Store {
	t.Helper()
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "data", "parley.db"), Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openTemp(t) })
}

// TestReopen checks that data survives closing and reopening the file, and that reopening
// applies no migration twice.
func TestReopen(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "parley.db")
	s, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	all, err := loadMigrations(migrationFiles)
	if err != nil {
		t.Fatal(err)
	}
	if s.applied != len(all) || len(all) == 0 {
		t.Fatalf("first Open applied %d migrations, want all %d", s.applied, len(all))
	}
	for _, u := range []string{"a", "b"} {
		if err := s.CreateUser(ctx, protocol.User{ID: u, Username: u, CreatedTS: 1}, "h"); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := s.CreateDirect(ctx, "d1", "a", "b", 1); err != nil {
		t.Fatal(err)
	}
	rs, err := s.Append(ctx, []store.AppendRequest{
		{ConversationID: "d1", SenderID: "a", ClientID: "c1", Kind: protocol.KindText, Body: "kept", TS: 2},
	})
	if err != nil || rs[0].Err != nil {
		t.Fatalf("Append: %v, %+v", err, rs)
	}
	if _, err := s.SetCursor(ctx, "d1", "b", "read", 1, 3); err != nil {
		t.Fatal(err)
	}
	_, token, _, err := s.Sync(ctx, "a", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(ctx, path, Options{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	if s.applied != 0 {
		t.Fatalf("reopen applied %d migrations, want 0", s.applied)
	}
	var n int
	if err := s.reader.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil || n != len(all) {
		t.Fatalf("schema_migrations has %d rows (%v), want %d", n, err, len(all))
	}
	c, err := s.Conversation(ctx, "d1", "b")
	if err != nil || c.LastSeq != 1 || c.LastReadSeq != 1 || c.LastMessage == nil || c.LastMessage.Body != "kept" {
		t.Fatalf("after reopen: %+v, %v", c, err)
	}
	// The sequence and the dedupe key continue, and so does the sync token.
	rs, err = s.Append(ctx, []store.AppendRequest{
		{ConversationID: "d1", SenderID: "a", ClientID: "c1", Kind: protocol.KindText, Body: "again", TS: 4},
		{ConversationID: "d1", SenderID: "b", ClientID: "c2", Kind: protocol.KindText, Body: "next", TS: 5},
	})
	if err != nil || !rs[0].Duplicate || rs[0].Message.Seq != 1 || rs[1].Message.Seq != 2 {
		t.Fatalf("Append after reopen: %v, %+v", err, rs)
	}
	if cs, next, _, err := s.Sync(ctx, "a", token, 0); err != nil || len(cs) != 1 || next == token {
		t.Fatalf("Sync after reopen: %d conversations, next %s (token was %s), %v", len(cs), next, token, err)
	}
}

// TestMigrationsIncremental checks that a migration added later is applied on the next Open,
// after the ones already applied and only once, and that a failing migration leaves no trace.
func TestMigrationsIncremental(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "parley.db")
	base, err := fstestFS(migrationFiles)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name    string
		add     map[string]string
		applied int
		wantErr bool
	}{
		{"initial", nil, len(base), false},
		{"add 9002", map[string]string{"migrations/9002_extra.sql": `CREATE TABLE extra (x INTEGER);`}, 1, false},
		{"nothing new", nil, 0, false},
		{"failing 9003", map[string]string{"migrations/9003_bad.sql": `CREATE TABLE extra2 (x INTEGER); INSERT INTO nowhere VALUES (1);`}, 0, true},
	}
	fsys := base
	for _, st := range steps {
		for name, sql := range st.add {
			fsys[name] = &fstest.MapFile{Data: []byte(sql)}
		}
		s, err := open(ctx, path, fsys, Options{})
		if st.wantErr {
			if err == nil {
				s.Close()
				t.Fatalf("%s: Open succeeded, want the migration's error", st.name)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if s.applied != st.applied {
			t.Fatalf("%s: applied %d, want %d", st.name, s.applied, st.applied)
		}
		s.Close()
	}
	// The failed migration's first statement was rolled back with it.
	delete(fsys, "migrations/9003_bad.sql")
	s, err := open(ctx, path, fsys, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var n int
	if err := s.reader.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE name = 'extra2'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("failed migration left table extra2 (%d, %v)", n, err)
	}
	if err := s.reader.QueryRowContext(ctx, `SELECT max(version) FROM schema_migrations`).Scan(&n); err != nil || n != 9002 {
		t.Fatalf("last recorded migration = %d (%v), want 9002", n, err)
	}
}

// fstestFS copies the migrations of fsys into a MapFS that a test can add to.
func fstestFS(fsys fs.FS) (fstest.MapFS, error) {
	m := fstest.MapFS{}
	ms, err := loadMigrations(fsys)
	for _, mg := range ms {
		m["migrations/"+mg.name] = &fstest.MapFile{Data: []byte(mg.sql)}
	}
	return m, err
}

// TestPragmas checks the settings durability and the concurrency model rest on, on both pools:
// WAL; synchronous=NORMAL (1) on the writer, whose commits walSyncer makes durable, and FULL
// (2) elsewhere; foreign keys; and a read pool that cannot write.
func TestPragmas(t *testing.T) {
	s := openTemp(t)
	ctx := t.Context()
	for _, db := range []struct {
		name string
		q    interface {
			QueryRowContext(context.Context, string, ...any) *sql.Row
		}
		queryOnly   int
		synchronous int
	}{{"writer", s.writer, 0, 1}, {"reader", s.reader, 1, 2}} {
		var mode string
		var syncMode, fk, qo int
		if err := db.q.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
			t.Errorf("%s: journal_mode = %q, %v; want wal", db.name, mode, err)
		}
		if err := db.q.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&syncMode); err != nil || syncMode != db.synchronous {
			t.Errorf("%s: synchronous = %d, %v; want %d", db.name, syncMode, err, db.synchronous)
		}
		if err := db.q.QueryRowContext(ctx, `PRAGMA foreign_keys`).Scan(&fk); err != nil || fk != 1 {
			t.Errorf("%s: foreign_keys = %d, %v; want 1", db.name, fk, err)
		}
		if err := db.q.QueryRowContext(ctx, `PRAGMA query_only`).Scan(&qo); err != nil || qo != db.queryOnly {
			t.Errorf("%s: query_only = %d, %v; want %d", db.name, qo, err, db.queryOnly)
		}
	}
	if _, err := s.reader.ExecContext(ctx, `UPDATE meta SET version = 0`); err == nil {
		t.Error("the read pool accepted a write")
	}
}

// TestMigrateCompactKeys: a database written by the schema before 0004 (conversations keyed
// by their text id throughout) comes through the migration with its history, reactions,
// cursors and heads intact, and goes on from where it was.
func TestMigrateCompactKeys(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "parley.db")
	all, err := fstestFS(migrationFiles)
	if err != nil {
		t.Fatal(err)
	}
	before := fstest.MapFS{}
	for name, f := range all {
		if name < "migrations/0004" {
			before[name] = f
		}
	}
	db, err := sql.Open("sqlite", path+"?_pragma=foreign_keys(ON)")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := migrate(ctx, db, before); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `
		INSERT INTO users (id, username, display_name, password_hash, created_ts) VALUES
			('a', 'a', 'A', 'h', 1), ('b', 'b', 'B', 'h', 1), ('c', 'c', 'C', 'h', 1);
		INSERT INTO conversations (id, type, name, direct_key, last_seq, last_text_seq, created_ts, updated_ts, version) VALUES
			('d1', 'direct', '', 'a|b', 3, 2, 1, 5, 4),
			('g1', 'group', 'G', NULL, 2, 2, 2, 6, 5);
		INSERT INTO members (conversation_id, user_id, role, joined_ts, last_read_seq, last_delivered_seq, version) VALUES
			('d1', 'a', 'member', 1, 0, 0, 1), ('d1', 'b', 'member', 1, 1, 2, 4),
			('g1', 'a', 'admin', 2, 1, 1, 2), ('g1', 'c', 'member', 2, 1, 1, 2);
		INSERT INTO messages (conversation_id, seq, client_id, sender_id, kind, body, target_seq, emoji, system, ts) VALUES
			('d1', 1, 'm1', 'a', 'text', 'one', 0, '', NULL, 3),
			('d1', 2, 'm2', 'a', 'text', 'two', 0, '', NULL, 4),
			('d1', 3, 'm3', 'b', 'reaction', '', 1, '👍', NULL, 5),
			('g1', 1, 's1', 'a', 'system', '', 0, '', '{"action":"created","actor_id":"a","user_ids":["a","c"],"name":"G"}', 2),
			('g1', 2, 'm4', 'c', 'text', 'hi', 0, '', NULL, 6);
		INSERT INTO reactions (conversation_id, target_seq, emoji, user_id, seq) VALUES ('d1', 1, '👍', 'b', 3);
		UPDATE meta SET version = 5;`); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.applied != 4 {
		t.Fatalf("applied %d migrations, want 4 (0004 to 0007)", s.applied)
	}
	ms, _, err := s.Messages(ctx, "d1", "b", 0, -1, 10)
	if err != nil || len(ms) != 3 {
		t.Fatalf("d1 history: %+v, %v", ms, err)
	}
	if ms[0].Body != "one" || ms[0].ConversationID != "d1" || len(ms[0].Reactions) != 1 || ms[0].Reactions[0].UserIDs[0] != "b" ||
		ms[1].Body != "two" || ms[2].Kind != protocol.KindReaction || ms[2].TargetSeq != 1 {
		t.Fatalf("d1 history after the migration: %+v", ms)
	}
	c, err := s.Conversation(ctx, "d1", "b")
	if err != nil || c.LastSeq != 3 || c.UpdatedTS != 5 || c.LastReadSeq != 1 || c.LastDeliveredSeq != 2 ||
		c.LastMessage == nil || c.LastMessage.Seq != 2 || c.UnreadCount != 1 {
		t.Fatalf("d1 as b sees it: %+v, %v", c, err)
	}
	gs, _, err := s.Messages(ctx, "g1", "c", 0, -1, 10)
	if err != nil || len(gs) != 2 || gs[0].System == nil || gs[0].System.Name != "G" || gs[1].Body != "hi" {
		t.Fatalf("g1 history: %+v, %v", gs, err)
	}
	cs, next, _, err := s.Sync(ctx, "a", "4", 0)
	if err != nil || len(cs) != 1 || cs[0].ID != "g1" || next != "5" {
		t.Fatalf("Sync since 4: %+v, next %s, %v", cs, next, err)
	}

	// The logs go on: a duplicate is found across the migration, a new event takes the next
	// seq, and a new conversation a new number.
	rs, err := s.Append(ctx, []store.AppendRequest{
		{ConversationID: "d1", SenderID: "a", ClientID: "m2", Kind: protocol.KindText, Body: "two", TS: 7},
		{ConversationID: "d1", SenderID: "b", ClientID: "m5", Kind: protocol.KindText, Body: "four", TS: 7},
		{ConversationID: "d1", SenderID: "a", ClientID: "m6", Kind: protocol.KindReaction, TargetSeq: 2, Emoji: "🎉", TS: 7},
	})
	if err != nil || !rs[0].Duplicate || rs[0].Message.Seq != 2 || rs[1].Message.Seq != 4 || rs[2].Err != nil || rs[2].Message.Seq != 5 {
		t.Fatalf("Append after the migration: %+v, %v", rs, err)
	}
	if _, _, err := s.CreateDirect(ctx, "d2", "b", "c", 8); err != nil {
		t.Fatal(err)
	}
	var nums []int64
	rows, err := s.reader.QueryContext(ctx, `SELECT num FROM conversations ORDER BY num`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var n int64
		rows.Scan(&n)
		nums = append(nums, n)
	}
	rows.Close()
	if len(nums) != 3 || nums[0] != 1 || nums[1] != 2 || nums[2] != 3 {
		t.Fatalf("conversation numbers %v, want [1 2 3]", nums)
	}
}

// TestSharedConformance: two Stores on one file, as two processes would have them.
func TestSharedConformance(t *testing.T) {
	storetest.RunShared(t, func(t *testing.T) (store.Store, store.Store) {
		path := filepath.Join(t.TempDir(), "parley.db")
		var ss [2]store.Store
		for i := range ss {
			s, err := Open(t.Context(), path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			ss[i] = s
		}
		return ss[0], ss[1]
	})
}
