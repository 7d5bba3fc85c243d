package postgres

import (
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/parley-chat/parley/internal/store"
	"github.com/parley-chat/parley/internal/store/postgres/pgtest"
	"github.com/parley-chat/parley/internal/store/storetest"
)

// testDB creates a database of this test's own (pgtest.URL).
func testDB(t *testing.T) string { return pgtest.URL(t) }

// TestMigrateOnce: three processes starting at once on an empty database migrate it once
// between them (the advisory lock); a later start applies nothing; every table is there.
// (Checked against a migrate without the lock: one of the others fails with "duplicate key
// value violates unique constraint pg_type_typname_nsp_index", a table created twice.)
func TestMigrateOnce(t *testing.T) {
	u := testDB(t)
	ctx := t.Context()
	var wg sync.WaitGroup
	dbs := make([]*DB, 3)
	errs := make([]error, 3)
	for i := range 3 {
		wg.Go(func() { dbs[i], errs[i] = Open(ctx, u, Options{}) })
	}
	wg.Wait()
	applied := 0
	for i := range 3 {
		if errs[i] != nil {
			t.Fatalf("Open %d: %v", i, errs[i])
		}
		applied += dbs[i].applied
		defer dbs[i].Close()
	}
	ms, err := loadMigrations(migrationFiles)
	if err != nil {
		t.Fatal(err)
	}
	if applied != len(ms) {
		t.Fatalf("%d migrations applied over three concurrent opens, want %d (each once)", applied, len(ms))
	}
	again, err := Open(ctx, u, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if again.applied != 0 {
		t.Fatalf("a later Open applied %d migrations, want 0", again.applied)
	}
	for _, table := range []string{"users", "devices", "refresh_rotated", "contacts", "schema_migrations"} {
		var n int
		if err := again.pool.QueryRow(ctx, `SELECT count(*) FROM `+table).Scan(&n); err != nil {
			t.Errorf("table %s: %v", table, err)
		}
	}
	var rows int
	if err := again.pool.QueryRow(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&rows); err != nil || rows != len(ms) {
		t.Fatalf("schema_migrations holds %d rows (%v), want %d", rows, err, len(ms))
	}
}

// TestMigrationErrors: a failing migration leaves nothing half applied and is reported by
// name; a database newer than the build is refused; a misnamed file is refused.
func TestMigrationErrors(t *testing.T) {
	u := testDB(t)
	ctx := t.Context()
	db, err := Open(ctx, u, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ms, _ := loadMigrations(migrationFiles)
	next := ms[len(ms)-1].version + 1
	bad := append(ms, migration{version: next, name: fmt.Sprintf("%04d_bad.sql", next),
		sql: `CREATE TABLE half (x int); SELECT * FROM no_such_table;`})
	if _, err := migrate(ctx, db.pool, bad, discard()); err == nil {
		t.Fatal("a failing migration was applied")
	}
	var exists bool
	if err := db.pool.QueryRow(ctx, `SELECT to_regclass('half') IS NOT NULL`).Scan(&exists); err != nil || exists {
		t.Fatalf("the failing migration's first statement stayed (exists=%v, %v)", exists, err)
	}
	good := append(ms, migration{version: next, name: fmt.Sprintf("%04d_good.sql", next), sql: `CREATE TABLE later (x int)`})
	if n, err := migrate(ctx, db.pool, good, discard()); err != nil || n != 1 {
		t.Fatalf("migrate a newer schema: %d, %v", n, err)
	}
	if _, err := migrate(ctx, db.pool, ms, discard()); err == nil {
		t.Fatal("an older build migrated a database with a newer schema")
	}
	if _, err := loadMigrations(fstest.MapFS{"migrations/one.sql": {Data: []byte("SELECT 1")}}); err == nil {
		t.Fatal("a migration without a version number was loaded")
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// openTest opens a store on a database of the test's own.
func openTest(t *testing.T, url string) *DB {
	t.Helper()
	db, err := Open(t.Context(), url, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// TestConformance runs the whole store suite, each case on a database of its own.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openTest(t, testDB(t)) })
}

// TestSharedConformance: two DBs (two processes' pools) on one database.
func TestSharedConformance(t *testing.T) {
	storetest.RunShared(t, func(t *testing.T) (store.Store, store.Store) {
		url := testDB(t)
		return openTest(t, url), openTest(t, url)
	})
}
