package server

import (
	"runtime"
	"testing"
	"time"

	"github.com/parley-chat/parley/protocol"
)

// TestIdleConnectionsHoldNoGoroutine: the gateway's connection layer is event-driven, so
// hundreds of open, idle connections add no goroutines to the server (the test's own
// clients start none either: they are read only when the test reads them).
func TestIdleConnectionsHoldNoGoroutine(t *testing.T) {
	ts := startServer(t, nil)
	accts := make([]account, 20)
	for i := range accts {
		accts[i] = ts.signup("idle" + string(rune('a'+i)))
	}
	settle := func() int {
		time.Sleep(200 * time.Millisecond) // let transient writer goroutines finish
		return runtime.NumGoroutine()
	}
	before := settle()
	const n = 300
	conns := make([]*rawWS, n)
	for i := range conns {
		conns[i] = ts.dialRaw(accts[i%len(accts)].AccessToken)
	}
	after := settle()
	if grew := after - before; grew > 20 {
		t.Fatalf("%d idle connections added %d goroutines, want about none", n, grew)
	}
	// And they all still work.
	for i, c := range conns {
		c.send(protocol.ClientFrame{Type: "ping", ID: "x"})
		if p := c.readType(protocol.FramePong); p.ID != "x" {
			t.Fatalf("conn %d: pong %+v", i, p)
		}
	}
	t.Logf("%d idle connections: goroutines %d → %d", n, before, after)
}

// TestHeartbeatTimeout: the server pings a silent connection after a heartbeat and closes
// it after three without an answer, freeing its slot; a client that answers stays.
func TestHeartbeatTimeout(t *testing.T) {
	const hb = 400 * time.Millisecond
	ts := startServer(t, func(c *Config) { c.Gateway.Heartbeat = hb })
	alice := ts.signup("alice")
	// The clock starts before the dial, so "took" is an upper bound on the silent
	// connection's life: a close before 3*hb is a real early close.
	start := time.Now()
	dead := ts.dialRaw(alice.AccessToken)  // never reads, never writes
	alive := ts.dialRaw(alice.AccessToken) // answers pings, as every client must
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = alive.tryRead(10 * hb) // reading answers the server's pings (wsutil does)
	}()
	// Both have read ready, so both are registered (TestReadyMeansRegistered).
	if got := ts.gateway.Len(); got != 2 {
		t.Fatalf("connections registered: %d, want 2", got)
	}
	for ts.gateway.Len() != 1 {
		if time.Since(start) > 20*hb {
			t.Fatalf("silent connection still open after %v", time.Since(start))
		}
		time.Sleep(hb / 10)
	}
	if took := time.Since(start); took < 3*hb {
		t.Fatalf("closed after %v, before three heartbeats", took)
	}
	<-done
	alive.send(protocol.ClientFrame{Type: "ping", ID: "alive"})
	if p := alive.readType(protocol.FramePong); p.ID != "alive" {
		t.Fatalf("pong %+v", p)
	}
	_ = dead
}

// TestReadyMeansRegistered: once a client has read ready, its connection is registered
// (subscribed to its user's events), so an event published from then on reaches it. The
// server once wrote ready from the writer goroutine before registering the connection: a
// client, or this test, could act on ready inside that gap.
func TestReadyMeansRegistered(t *testing.T) {
	ts := startServer(t, nil)
	accts := make([]account, 20)
	for i := range accts {
		accts[i] = ts.signup("ready" + string(rune('a'+i)))
	}
	const n = 300
	for i := range n {
		ts.dialRaw(accts[i%len(accts)].AccessToken) // returns once ready is read
		if got := ts.gateway.Len(); got != i+1 {
			t.Fatalf("dial %d: ready read with %d connections registered, want %d", i, got, i+1)
		}
	}
}
