package sqlite

import (
	"database/sql"
	"fmt"
	"testing"
	"time"
)

// TestStmtCacheInsideWriterTx: a query first run inside a writer transaction (the writer
// pool's only connection is taken) neither waits for itself nor fails; it is prepared in the
// background once the transaction ends, and later runs use the cached statement.
func TestStmtCacheInsideWriterTx(t *testing.T) {
	s := openTemp(t)
	ctx := t.Context()
	const q = `SELECT count(*) FROM users WHERE id <> ?`
	done := make(chan error, 1)
	go func() {
		done <- s.write(ctx, func(tx *sql.Tx) error {
			var n int
			return s.wtx(tx).QueryRowContext(ctx, q, "x").Scan(&n)
		})
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("write: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a query inside a writer transaction hung (waiting for the pool's only connection?)")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if st, _ := s.wc.stmt(ctx, q, true); st != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the query was never prepared in the background")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Bad SQL is reported by the call, in or out of a transaction.
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := s.wtx(tx).ExecContext(ctx, `UPDATE no_such_table SET x = 1`)
		return err
	})
	if err == nil {
		t.Error("bad SQL inside a transaction: no error")
	}
	if _, err := s.rq().QueryContext(ctx, `SELECT nope FROM users`); err == nil {
		t.Error("bad SQL on the reader: no error")
	}
}

// TestStmtCacheBound: past maxCachedStmts distinct texts, queries still run, unprepared.
func TestStmtCacheBound(t *testing.T) {
	s := openTemp(t)
	ctx := t.Context()
	for i := range maxCachedStmts + 10 {
		var n int
		if err := s.rq().QueryRowContext(ctx, fmt.Sprintf(`SELECT %d`, i)).Scan(&n); err != nil || n != i {
			t.Fatalf("query %d = %d, %v", i, n, err)
		}
	}
	s.rc.mu.Lock()
	n := len(s.rc.m)
	s.rc.mu.Unlock()
	if n > maxCachedStmts {
		t.Errorf("%d statements cached, bound is %d", n, maxCachedStmts)
	}
}
