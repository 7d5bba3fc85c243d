// Package pgtest gives tests a PostgreSQL database of their own on the server of the
// scale-out tests (PARLEY_TEST_POSTGRES_URL, default postgres://postgres@127.0.0.1:5432),
// created for the test and dropped when it ends. With no server it skips the test, unless
// PARLEY_TEST_REQUIRE_SERVICES=1 (set by .ci/run), where it fails it.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Base is the server's URL, without a database.
func Base() string {
	if u := os.Getenv("PARLEY_TEST_POSTGRES_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432"
}

// URL creates a database for t and returns its URL.
func URL(t testing.TB) string {
	t.Helper()
	base := Base()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, base+"/postgres")
	if err != nil {
		if os.Getenv("PARLEY_TEST_REQUIRE_SERVICES") == "1" {
			t.Fatalf("PostgreSQL at %s (PARLEY_TEST_POSTGRES_URL) unreachable and PARLEY_TEST_REQUIRE_SERVICES=1: %v", base, err)
		}
		t.Skipf("skipping: no PostgreSQL at %s (set PARLEY_TEST_POSTGRES_URL, or PARLEY_TEST_REQUIRE_SERVICES=1 to fail instead): %v", base, err)
	}
	defer admin.Close(context.Background())
	var r [6]byte
	_, _ = rand.Read(r[:])
	name := "parley_test_" + hex.EncodeToString(r[:])
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, base+"/postgres")
		if err != nil {
			t.Errorf("drop database %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}
