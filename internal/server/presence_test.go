package server

import (
	"net/http"
	"testing"
	"time"

	"github.com/parley-chat/parley/protocol"
)

// TestPresence: a user goes online on connect, stays online through a 5-second network
// stall shorter than the TTL, and goes offline after the TTL once every device is gone,
// with the right last_seen_ts. Only contacts and direct partners hear of it; a non-contact
// learns nothing.
func TestPresence(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a real TTL")
	}
	const hb, ttl = 2 * time.Second, 7 * time.Second
	ts := startServer(t, func(c *Config) {
		c.Gateway.Heartbeat = hb
		c.Presence.TTL = ttl
		c.Presence.Sweep = 100 * time.Millisecond
	})
	alice, bob, carol, dave := ts.signup("alice"), ts.signup("bob"), ts.signup("carol"), ts.signup("dave")
	// Alice lists bob: she lets him see her. Carol lists alice, which lets alice see carol,
	// not carol see alice.
	if code := ts.call("PUT", "/api/v1/contacts/"+bob.UserID, alice.AccessToken, nil, nil); code != http.StatusNoContent {
		t.Fatalf("contact: %d", code)
	}
	if code := ts.call("PUT", "/api/v1/contacts/"+alice.UserID, carol.AccessToken, nil, nil); code != http.StatusNoContent {
		t.Fatalf("contact: %d", code)
	}
	ts.direct(dave, alice) // a direct partner sees presence too
	bobWS, carolWS, daveWS := ts.dialRaw(bob.AccessToken), ts.dialRaw(carol.AccessToken), ts.dialRaw(dave.AccessToken)
	for _, w := range []*rawWS{bobWS, carolWS, daveWS} {
		w.keepalive(500 * time.Millisecond)
	}

	presence := func(viewer account, id string) []protocol.Presence {
		var body protocol.PresenceBody
		if code := ts.call("GET", "/api/v1/presence?user_ids="+id, viewer.AccessToken, nil, &body); code != http.StatusOK {
			t.Fatalf("GET /presence: %d", code)
		}
		return body.Presence
	}
	if p := presence(bob, alice.UserID); len(p) != 1 || p[0].Status != "offline" || p[0].LastSeenTS != 0 {
		t.Fatalf("before alice connects: %+v", p)
	}

	connected := time.Now()
	aliceWS := ts.dialRaw(alice.AccessToken)
	for _, w := range []*rawWS{bobWS, daveWS} {
		f := w.readType(protocol.FramePresence)
		if f.UserID != alice.UserID || f.Status != "online" {
			t.Fatalf("presence frame = %+v, want alice online", f)
		}
	}
	if p := presence(bob, alice.UserID); p[0].Status != "online" {
		t.Fatalf("GET /presence while connected: %+v", p)
	}

	// A network stall: alice neither reads nor writes for 5 s (the server's pings go
	// unanswered), then resumes. The stall is shorter than the TTL: nobody hears of it.
	time.Sleep(5 * time.Second)
	aliceWS.send(protocol.ClientFrame{Type: "ping", ID: "back"})
	aliceWS.readType(protocol.FramePong)
	lastBeat := time.Now()
	if f, err := bobWS.tryRead(500 * time.Millisecond); err == nil {
		t.Fatalf("bob got %+v during alice's stall; want nothing", f)
	}
	if p := presence(bob, alice.UserID); p[0].Status != "online" {
		t.Fatalf("after the stall: %+v", p)
	}

	// Every device gone: offline once the TTL has passed since the last heartbeat.
	aliceWS.nc.Close()
	f := bobWS.readTypeWithin(protocol.FramePresence, ttl+5*time.Second)
	offlineAt := time.Now()
	if f.UserID != alice.UserID || f.Status != "offline" {
		t.Fatalf("presence frame = %+v, want alice offline", f)
	}
	seen := time.UnixMilli(f.LastSeenTS)
	if seen.Before(lastBeat.Add(-time.Second)) || seen.After(lastBeat.Add(100*time.Millisecond)) {
		t.Fatalf("last_seen_ts %v, want about the last heartbeat %v", seen, lastBeat)
	}
	if wait := offlineAt.Sub(seen); wait < ttl-time.Second || wait > ttl+2*time.Second {
		t.Fatalf("offline announced %v after the last heartbeat, want about the TTL %v", wait, ttl)
	}
	if d := daveWS.readType(protocol.FramePresence); d.Status != "offline" || d.LastSeenTS != f.LastSeenTS {
		t.Fatalf("dave got %+v", d)
	}
	if p := presence(bob, alice.UserID); p[0].Status != "offline" || p[0].LastSeenTS != f.LastSeenTS {
		t.Fatalf("GET /presence after: %+v", p)
	}

	// Carol is neither a contact nor a partner: no frames, and GET /presence leaves alice out.
	if f, err := carolWS.tryRead(200 * time.Millisecond); err == nil {
		t.Fatalf("carol got %+v", f)
	}
	if p := presence(carol, alice.UserID); len(p) != 0 {
		t.Fatalf("carol sees %+v", p)
	}
	if p := presence(carol, carol.UserID+","+alice.UserID); len(p) != 1 || p[0].UserID != carol.UserID {
		t.Fatalf("carol asking for herself and alice: %+v", p)
	}
	t.Logf("online at connect (%v), stall of 5s unnoticed, offline %v after the last heartbeat", connected.Format("15:04:05.000"), offlineAt.Sub(seen).Round(10*time.Millisecond))
	if code := ts.call("GET", "/api/v1/presence", bob.AccessToken, nil, nil); code != http.StatusBadRequest {
		t.Fatalf("GET /presence without ids: %d", code)
	}
}
