//go:build linux

package server

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/google/uuid"
	"golang.org/x/sys/unix"

	"github.com/parley-chat/parley/protocol"
)

// TestHangUpWithLastFrame: a client whose last frame and FIN arrive together (one segment)
// gets that frame handled and is forgotten at once, not a heartbeat sweep later. The
// kernel returns the frame to the first read and the EOF only to the next, and an
// edge-triggered socket reports the hang-up once: a reader that stopped at the short read
// would leave the connection registered (online, subscribed, fanned out to) for 3 heartbeats.
func TestHangUpWithLastFrame(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.Gateway.Heartbeat = 10 * time.Second })
	alice, bob := ts.signup("alice"), ts.signup("bob")
	conv := ts.direct(alice, bob)
	c := ts.dialRaw(alice.AccessToken)
	// It has read ready, so it is registered (TestReadyMeansRegistered).
	if got := ts.gateway.Len(); got != 1 {
		t.Fatalf("connections registered: %d, want 1", got)
	}
	tc := c.nc.(*net.TCPConn)
	rc, err := tc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	// Corked, the frame waits in the kernel and leaves with the FIN that CloseWrite queues.
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_CORK, 1)
	}); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	var b bytes.Buffer
	last := mustJSON(protocol.ClientFrame{Type: "send", ID: uuid.NewString(), ConversationID: conv.ID, Body: "last words"})
	if err := ws.WriteFrame(&b, ws.MaskFrameInPlace(ws.NewTextFrame(last))); err != nil {
		t.Fatal(err)
	}
	if _, err := tc.Write(b.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := tc.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for ts.gateway.Len() != 0 {
		if time.Since(start) > 2*time.Second {
			t.Fatalf("connection still registered %v after the client hung up", time.Since(start))
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The frame that came with the FIN was handled: the message is stored.
	for h := ts.history(bob, conv.ID, 0); len(h) != 1 || h[0].Body != "last words"; h = ts.history(bob, conv.ID, 0) {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("history %+v, want the last words", h)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
