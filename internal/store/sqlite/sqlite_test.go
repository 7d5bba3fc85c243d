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
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "data", "parley.db"))
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
	s, err := Open(ctx, path)
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
	_, token, err := s.Sync(ctx, "a", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(ctx, path)
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
	if cs, next, err := s.Sync(ctx, "a", token); err != nil || len(cs) != 1 || next <= token {
		t.Fatalf("Sync after reopen: %d conversations, next %d (token was %d), %v", len(cs), next, token, err)
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
		s, err := open(ctx, path, fsys)
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
	s, err := open(ctx, path, fsys)
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
