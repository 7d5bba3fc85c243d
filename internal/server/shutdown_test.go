package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/google/uuid"

	"github.com/parley-chat/parley/protocol"
)

// TestGracefulShutdown: on shutdown every connected client gets goaway, every send the
// server read is answered (ack, or unavailable once the sequencer has closed), the
// connection closes with 1001, and every acked message is there after a restart.
func TestGracefulShutdown(t *testing.T) {
	data := t.TempDir()
	ts := startServer(t, func(c *Config) { c.Data = data })
	alice, bob := ts.signup("alice"), ts.signup("bob")
	conv := ts.direct(alice, bob)
	c := ts.dialRaw(alice.AccessToken)
	watcher := ts.dialRaw(bob.AccessToken)

	const n = 200
	sent := map[string]bool{}
	for i := range n {
		id := uuid.NewString()
		sent[id] = true
		c.send(protocol.ClientFrame{Type: "send", ID: id, ConversationID: conv.ID, Body: "x" + string(rune('a'+i%26))})
	}
	acked := map[string]int64{}
	// Shut down while sends are in flight: after the first ack, before the last.
	first := c.readType(protocol.FrameAck)
	acked[first.ID] = first.Seq
	go ts.stop()

	var goaway bool
	unavailable := 0
	var closeCode ws.StatusCode
	_ = c.nc.SetReadDeadline(time.Now().Add(15 * time.Second))
	for closeCode == 0 {
		f, err := ws.ReadFrame(c.r)
		if err != nil {
			t.Fatalf("connection ended without a close frame: %v", err)
		}
		if f.Header.Masked {
			ws.Cipher(f.Payload, f.Header.Mask, 0)
		}
		switch f.Header.OpCode {
		case ws.OpClose:
			closeCode, _ = ws.ParseCloseFrameData(f.Payload)
		case ws.OpText:
			var sf protocol.ServerFrame
			if err := json.Unmarshal(f.Payload, &sf); err != nil {
				t.Fatal(err)
			}
			switch sf.Type {
			case protocol.FrameGoaway:
				goaway = true
			case protocol.FrameAck:
				acked[sf.ID] = sf.Seq
			case protocol.FrameError:
				unavailable++
				if sf.Code != protocol.CodeUnavailable {
					t.Errorf("error during shutdown: %s %s", sf.Code, sf.ErrMessage)
				}
			}
		}
	}
	if !goaway {
		t.Error("no goaway before close")
	}
	if closeCode != ws.StatusGoingAway {
		t.Errorf("close code %d, want 1001", closeCode)
	}
	if _, err := watcher.tryRead(5 * time.Second); err != nil {
		t.Logf("watcher: %v", err)
	}

	// Restart on the same data: every acked message is stored, with its seq.
	s2, err := New(context.Background(), Config{Listen: "127.0.0.1:0", Data: data, API: ts.Server.cfg.API}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s2.Run(ctx) }()
	defer func() { cancel(); <-done }()
	ts2 := &testServer{Server: s2, t: t, addr: s2.Addr(), base: "http://" + s2.Addr()}
	hist := ts2.history(ts2.login("alice"), conv.ID, 0)
	stored := map[string]int64{}
	for _, m := range hist {
		stored[m.ID] = m.Seq
	}
	for id, seq := range acked {
		if stored[id] != seq {
			t.Fatalf("acked %s at seq %d, stored at %d", id, seq, stored[id])
		}
	}
	if len(acked)+unavailable != n {
		t.Errorf("%d sends acked and %d refused as unavailable, of %d read: some got no answer", len(acked), unavailable, n)
	}
	t.Logf("%d of %d sends acked during shutdown; %d stored", len(acked), n, len(hist))
}

// TestFragmentedFrames: a message split over several frames, with a ping between them, is
// reassembled and handled.
func TestFragmentedFrames(t *testing.T) {
	ts := startServer(t, nil)
	alice, bob := ts.signup("alice"), ts.signup("bob")
	conv := ts.direct(alice, bob)
	c := ts.dialRaw(alice.AccessToken)
	id := uuid.NewString()
	msg := mustJSON(protocol.ClientFrame{Type: "send", ID: id, ConversationID: conv.ID, Body: "in three parts"})
	parts := [][]byte{msg[:10], msg[10:30], msg[30:]}
	frames := []ws.Frame{
		ws.NewFrame(ws.OpText, false, parts[0]),
		ws.NewPingFrame([]byte("mid")),
		ws.NewFrame(ws.OpContinuation, false, parts[1]),
		ws.NewFrame(ws.OpContinuation, true, parts[2]),
	}
	for _, f := range frames {
		if err := ws.WriteFrame(c.nc, ws.MaskFrameInPlace(f)); err != nil {
			t.Fatal(err)
		}
	}
	if ack := c.readType(protocol.FrameAck); ack.ID != id || ack.Seq != 1 {
		t.Fatalf("ack = %+v", ack)
	}
	if h := ts.history(bob, conv.ID, 0); len(h) != 1 || h[0].Body != "in three parts" {
		t.Fatalf("history = %+v", h)
	}
}

// TestBurstInOneWrite: frames that arrive together, more than one read buffer's worth (a
// send of about 8 KiB, then 200 pings), are all handled, in order. The gateway's sockets
// are edge-triggered: a reader that stopped before draining the socket would never be
// told about the rest.
func TestBurstInOneWrite(t *testing.T) {
	ts := startServer(t, nil)
	alice, bob := ts.signup("alice"), ts.signup("bob")
	conv := ts.direct(alice, bob)
	c := ts.dialRaw(alice.AccessToken)
	id := uuid.NewString()
	body := strings.Repeat("long message ", 600) // 7,800 bytes, under the 8 KiB body limit
	var burst bytes.Buffer
	put := func(p []byte) {
		if err := ws.WriteFrame(&burst, ws.MaskFrameInPlace(ws.NewTextFrame(p))); err != nil {
			t.Fatal(err)
		}
	}
	put(mustJSON(protocol.ClientFrame{Type: "send", ID: id, ConversationID: conv.ID, Body: body}))
	const pings = 200
	for i := range pings {
		put(mustJSON(protocol.ClientFrame{Type: "ping", ID: fmt.Sprint(i)}))
	}
	if _, err := c.nc.Write(burst.Bytes()); err != nil {
		t.Fatal(err)
	}
	// Pongs are answered at once, the ack after the commit: they interleave.
	acked, pong := false, 0
	for !acked || pong < pings {
		switch f := c.read(); f.Type {
		case protocol.FrameAck:
			if acked || f.ID != id || f.Seq != 1 {
				t.Fatalf("ack = %+v", f)
			}
			acked = true
		case protocol.FramePong:
			if f.ID != fmt.Sprint(pong) {
				t.Fatalf("pong %d: %+v", pong, f)
			}
			pong++
		}
	}
	if h := ts.history(bob, conv.ID, 0); len(h) != 1 || h[0].Body != body {
		t.Fatalf("history has %d messages, want the one sent", len(h))
	}
}
