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
