package server

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/gobwas/ws"
	"github.com/google/uuid"

	"github.com/parley-chat/parley/protocol"
)

// TestBadInput sends every kind of bad frame over one connection: each gets its error, the
// connection stays usable (a ping still gets its pong and a good send its ack), and nothing
// is stored by a rejected frame.
func TestBadInput(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.Chat.MaxBodyBytes = 1000; c.Gateway.MaxFrameBytes = 4096 })
	alice, bob, carol := ts.signup("alice"), ts.signup("bob"), ts.signup("carol")
	conv := ts.direct(alice, bob)
	c := ts.dialRaw(carol.AccessToken)

	tests := []struct {
		name  string
		frame []byte
		code  string
	}{
		{"non-member send", mustJSON(protocol.ClientFrame{Type: "send", ID: uuid.NewString(), ConversationID: conv.ID, Body: "hi"}), protocol.CodeForbidden},
		{"no such conversation", mustJSON(protocol.ClientFrame{Type: "send", ID: uuid.NewString(), ConversationID: "nope", Body: "hi"}), protocol.CodeForbidden},
		{"malformed JSON", []byte(`{"type":"send",`), protocol.CodeBadRequest},
		{"not an object", []byte(`[1,2,3]`), protocol.CodeBadRequest},
		{"unknown type", []byte(`{"type":"teleport"}`), protocol.CodeBadRequest},
		{"no type", []byte(`{"id":"x"}`), protocol.CodeBadRequest},
		{"id not a uuid", mustJSON(protocol.ClientFrame{Type: "send", ID: "42", ConversationID: conv.ID, Body: "hi"}), protocol.CodeBadRequest},
		{"empty body", mustJSON(protocol.ClientFrame{Type: "send", ID: uuid.NewString(), ConversationID: conv.ID}), protocol.CodeBadRequest},
		{"body over limit", mustJSON(protocol.ClientFrame{Type: "send", ID: uuid.NewString(), ConversationID: conv.ID, Body: strings.Repeat("x", 1001)}), protocol.CodeTooLarge},
		{"frame over limit", bytes.Repeat([]byte("x"), 10000), protocol.CodeTooLarge},
		{"bad receipt status", []byte(`{"type":"receipt","conversation_id":"` + conv.ID + `","status":"seen","seq":1}`), protocol.CodeBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.writeText(tt.frame)
			f := c.readType(protocol.FrameError)
			if f.Code != tt.code {
				t.Errorf("code = %q (%s), want %q", f.Code, f.ErrMessage, tt.code)
			}
			if f.ErrMessage == "" {
				t.Error("error frame has no message")
			}
			c.send(protocol.ClientFrame{Type: "ping", ID: "p-" + tt.name})
			if p := c.readType(protocol.FramePong); p.ID != "p-"+tt.name {
				t.Errorf("pong id = %q", p.ID)
			}
		})
	}
	if n := len(ts.history(alice, conv.ID, 0)); n != 0 {
		t.Fatalf("rejected frames stored %d messages", n)
	}
	// The connection still works for a real send: carol's own direct conversation.
	mine := ts.direct(carol, alice)
	id := uuid.NewString()
	c.send(protocol.ClientFrame{Type: "send", ID: id, ConversationID: mine.ID, Body: "still here"})
	if ack := c.readType(protocol.FrameAck); ack.ID != id || ack.Seq != 1 {
		t.Fatalf("ack = %+v, want id %s seq 1", ack, id)
	}
}

// TestRepeatedBadFramesClose checks the one case where bad input ends a connection: a client
// that sends bad frames over and over is closed with 1008, and the server is unharmed.
func TestRepeatedBadFramesClose(t *testing.T) {
	ts := startServer(t, nil)
	alice := ts.signup("alice")
	c := ts.dialRaw(alice.AccessToken)
	for range 10 {
		c.writeText([]byte("garbage"))
	}
	var closeCode ws.StatusCode
	for {
		_ = c.nc.SetReadDeadline(timeIn(5))
		fr, err := ws.ReadFrame(c.r)
		if err != nil {
			t.Fatalf("connection ended without a close frame: %v", err)
		}
		if fr.Header.OpCode == ws.OpClose {
			closeCode, _ = ws.ParseCloseFrameData(fr.Payload)
			break
		}
	}
	if closeCode != ws.StatusPolicyViolation {
		t.Fatalf("close code = %d, want 1008", closeCode)
	}
	// A fresh connection of the same user works.
	c2 := ts.dialRaw(alice.AccessToken)
	c2.send(protocol.ClientFrame{Type: "ping", ID: "again"})
	c2.readType(protocol.FramePong)
}

// TestHandshakeAuth: without valid credentials the handshake fails with 401 before the
// upgrade; a ticket works exactly once.
func TestHandshakeAuth(t *testing.T) {
	ts := startServer(t, nil)
	alice := ts.signup("alice")
	tests := []struct {
		name, header, query string
	}{
		{"no credentials", "", ""},
		{"garbage token", "Bearer not-a-token", ""},
		{"wrong scheme", "Basic YWxpY2U6eA==", ""},
		{"bad ticket", "", "?ticket=nope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", ts.base+"/api/v1/ws"+tt.query, nil)
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Upgrade", "websocket")
			req.Header.Set("Sec-WebSocket-Version", "13")
			req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
			if tt.header != "" {
				req.Header.Set("Authorization", tt.header)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body protocol.ErrorBody
			_ = json.NewDecoder(resp.Body).Decode(&body)
			if resp.StatusCode != http.StatusUnauthorized || body.Error.Code != protocol.CodeUnauthorized {
				t.Fatalf("status %d code %q, want 401 unauthorized", resp.StatusCode, body.Error.Code)
			}
		})
	}

	var tk protocol.TicketBody
	if code := ts.call("POST", "/api/v1/ws/ticket", alice.AccessToken, nil, &tk); code != http.StatusOK || tk.Ticket == "" {
		t.Fatalf("ticket: status %d", code)
	}
	url := "ws://" + ts.addr + "/api/v1/ws?ticket=" + tk.Ticket
	nc, _, _, err := ws.Dial(context.Background(), url)
	if err != nil {
		t.Fatalf("dial with ticket: %v", err)
	}
	nc.Close()
	if _, _, _, err := ws.Dial(context.Background(), url); err == nil {
		t.Fatal("a used ticket was accepted again")
	}

	// Logout makes the device's access token stop working at once, and closes its open
	// connections, but not those of the user's other devices.
	open := ts.dialRaw(alice.AccessToken)
	other := ts.dialRaw(ts.login("alice").AccessToken)
	if code := ts.call("POST", "/api/v1/auth/logout", alice.AccessToken, nil, nil); code != http.StatusNoContent {
		t.Fatalf("logout: %d", code)
	}
	_ = open.nc.SetReadDeadline(timeIn(5))
	for {
		f, err := ws.ReadFrame(open.r)
		if err != nil {
			t.Fatalf("logged-out connection: no close frame: %v", err)
		}
		if f.Header.OpCode == ws.OpClose {
			if code, reason := ws.ParseCloseFrameData(f.Payload); code != ws.StatusPolicyViolation || reason != "logged out" {
				t.Fatalf("close %d %q", code, reason)
			}
			break
		}
	}
	other.send(protocol.ClientFrame{Type: "ping", ID: "still"})
	other.readType(protocol.FramePong)
	if _, err := ts.tryDialRaw(alice.AccessToken); err == nil {
		t.Fatal("a logged-out device's token opened a WebSocket")
	}
	if code := ts.call("GET", "/api/v1/me", alice.AccessToken, nil, nil); code != http.StatusUnauthorized {
		t.Fatalf("GET /me after logout: %d, want 401", code)
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
