package server

import (
	"context"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parley-chat/parley/internal/loadgen"
	"github.com/parley-chat/parley/internal/store/postgres/pgtest"
)

// TestBenchSmoke runs `parley bench` scenarios as a user would: each starts its own server
// and fails unless every acked message reached every recipient exactly once. It asserts
// correctness only, never speed.
func TestBenchSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the load generator for about 16 s")
	}
	bin := buildParley(t)
	for _, tc := range []struct {
		name string
		args []string
		want []string // what says that nothing was lost
	}{
		{"direct", []string{"direct", "--duration", "5s", "--warmup", "500ms", "--pairs", "4", "--inflight", "4"}, []string{"lost 0  duplicates 0  errors 0"}},
		{"rate", []string{"rate", "--duration", "2s", "--warmup", "500ms", "--pairs", "4", "--rate", "400"}, []string{"lost 0  duplicates 0  errors 0"}},
		{"group", []string{"group", "--duration", "2s", "--warmup", "500ms", "--groups", "1", "--members", "10", "--senders", "2", "--inflight", "2"}, []string{"lost 0  duplicates 0  errors 0"}},
		// Two workers' figures merged: both histograms hold all 40 clients.
		{"reconnect", []string{"reconnect", "--clients", "40", "--procs", "2"}, []string{"(n=40)\n  per client caught up p50", "(n=40)\n  missing 0  connect errors 0"}},
		// idle fails unless every connection stays open through the hold.
		{"idle", []string{"idle", "--conns", "40", "--procs", "2", "--hold", "1s", "--settle", "0s"}, []string{"40 connections held by 2 processes"}},
		// A short soak: samples with the goroutines (from the debug listener) and the data
		// files, the judgment, and the kill -9 under load and the restart, with the acked
		// messages checked.
		{"soak", []string{"soak", "--duration", "6s", "--every", "500ms", "--settle", "1s", "--pairs", "4", "--rate", "400", "--kill"},
			[]string{"goroutines", "parley.db-wal", "everything that should be flat is flat", "killed with SIGKILL",
				"the last acked message of each of 4 conversations: all stored"}},
		// Every read timed, at a size where each list and history read has full pages.
		{"paging", []string{"paging", "--conversations", "120", "--small", "60", "--messages", "300", "--reps", "3"},
			[]string{"conversations, page 3 (120)", "sync, first page of 60 (120)", "sync, one change since the token (120)", "history, oldest page"}},
		// The same against PostgreSQL, each on a database the load generator makes and drops.
		{"direct-postgres", []string{"direct", "--postgres-url", "PG", "--duration", "2s", "--warmup", "500ms", "--pairs", "4", "--inflight", "4"}, []string{"lost 0  duplicates 0  errors 0"}},
		{"paging-postgres", []string{"paging", "--postgres-url", "PG", "--conversations", "120", "--small", "60", "--messages", "300", "--reps", "3"},
			[]string{"conversations, page 3 (120)", "sync, first page of 60 (120)", "sync, one change since the token (120)", "history, oldest page"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if i := slices.Index(tc.args, "PG"); i >= 0 {
				pgtest.URL(t) // skips (or fails in CI) without a server
				tc.args[i] = pgtest.Base()
			}
			out, err := exec.Command(bin, append([]string{"bench"}, tc.args...)...).CombinedOutput()
			t.Logf("%s", out)
			if err != nil {
				t.Fatalf("parley bench %s: %v", tc.name, err)
			}
			for _, want := range tc.want {
				if !strings.Contains(string(out), want) {
					t.Fatalf("no %q in the summary: messages lost, duplicated or missing, or figures not merged", want)
				}
			}
			// How the machine's CPU was spent in the measured window (read from /proc).
			if runtime.GOOS == "linux" && tc.name != "idle" && !strings.HasPrefix(tc.name, "paging") && !strings.Contains(string(out), "\n  machine ") {
				t.Fatal("no machine line")
			}
		})
	}
}

// TestIdleFailsWhenConnectionsClose: the idle scenario's figure is per held connection, so
// a connection the server ends during the hold must fail the run, not shrink the figure.
func TestIdleFailsWhenConnectionsClose(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	bin := buildParley(t)
	ts := startServer(t, nil)
	const conns = 30
	done := make(chan error, 1)
	go func() {
		_, err := loadgen.Idle(context.Background(), loadgen.IdleConfig{
			URL: ts.base, Conns: conns, Users: 10, Hold: 30 * time.Second, Procs: 2,
			Worker: func() *exec.Cmd { return exec.Command(bin, "bench", "idle-worker") },
		})
		done <- err
	}()
	for ts.gateway.Len() < conns {
		select {
		case err := <-done:
			t.Fatalf("idle ended before holding %d connections: %v", conns, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	ts.stop() // closes every connection with "server shutting down"
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "the server closed") {
			t.Fatalf("idle after the server closed its connections: %v", err)
		}
	case <-time.After(20 * time.Second): // well before the 30 s hold: it stops at the first close
		t.Fatal("idle did not end")
	}
}
