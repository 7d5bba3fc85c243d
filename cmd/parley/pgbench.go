package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
)

// benchDatabase makes a fresh database on the PostgreSQL server at base (its own database
// part, if any, is where it connects to create it) for a server the load generator starts,
// so that every run starts empty, and returns its URL and a func that drops it.
func benchDatabase(ctx context.Context, base string) (string, func(), error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", nil, fmt.Errorf("--postgres-url: %w", err)
	}
	admin := *u
	if admin.Path == "" || admin.Path == "/" {
		admin.Path = "/postgres"
	}
	conn, err := pgx.Connect(ctx, admin.String())
	if err != nil {
		return "", nil, fmt.Errorf("bench: PostgreSQL: %w", err)
	}
	defer conn.Close(context.Background())
	var r [4]byte
	_, _ = rand.Read(r[:])
	name := "parley_bench_" + hex.EncodeToString(r[:])
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", nil, fmt.Errorf("bench: create database: %w", err)
	}
	fmt.Fprintf(os.Stderr, "bench: the server stores into PostgreSQL database %s (dropped at the end)\n", name)
	drop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, admin.String())
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: drop database %s: %v\n", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			fmt.Fprintf(os.Stderr, "bench: drop database %s: %v\n", name, err)
		}
	}
	db := *u
	db.Path = "/" + name
	return db.String(), drop, nil
}
