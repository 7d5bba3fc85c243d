package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	neturl "net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/parley-chat/parley/internal/limit"
	"github.com/parley-chat/parley/protocol"
)

// defaultLimits puts back the limits a plain `parley serve` has (startServer raises them for
// tests that sign up many users).
func defaultLimits(c *Config) { c.Limits = limit.Config{} }

// fromAddr is an HTTP client whose connections come from the loopback address src
// (127.0.0.2, …): another client address for the per-address limits.
func fromAddr(src string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

// post sends a raw body and returns the status, the headers and the decoded error, if any.
func (ts *testServer) post(client *http.Client, path string, body []byte, header http.Header) (int, http.Header, protocol.Error) {
	ts.t.Helper()
	req, err := http.NewRequest("POST", ts.base+path, bytes.NewReader(body))
	if err != nil {
		ts.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		ts.t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var eb protocol.ErrorBody
	_ = json.Unmarshal(data, &eb)
	return resp.StatusCode, resp.Header, eb.Error
}

func loginBody(user, password string) []byte {
	b, _ := json.Marshal(protocol.LoginRequest{Username: user, Password: password})
	return b
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestStrangerMemoryBounded: nothing sent before authentication makes the server keep memory
// in proportion to it. Before, a login's username became a rate-limit key as it was: 200
// logins with 60 KB usernames kept 12 MB, with 1 MB usernames 200 MB, until later traffic
// happened to sweep them.
func TestStrangerMemoryBounded(t *testing.T) {
	ts := startServer(t, defaultLimits)
	before := heapInUse()
	for i := range 200 {
		huge := strings.Repeat(string(rune('a'+i%26)), 1<<20) + fmt.Sprint(i)
		status, _, e := ts.post(http.DefaultClient, "/api/v1/auth/login", loginBody(huge, "whatever1"), nil)
		if status != http.StatusRequestEntityTooLarge || e.Code != protocol.CodeTooLarge {
			t.Fatalf("1 MB username: %d %+v, want 413 too_large", status, e)
		}
		// Under the 64 KiB bound: decoded, limited per account, refused.
		big := strings.Repeat(string(rune('a'+i%26)), 60_000) + fmt.Sprint(i)
		status, _, e = ts.post(fromAddr(fmt.Sprintf("127.0.%d.%d", 1+i/200, 2+i%200)), "/api/v1/auth/login", loginBody(big, "whatever1"), nil)
		if status != http.StatusUnauthorized {
			t.Fatalf("60 KB username: %d %+v, want 401", status, e)
		}
	}
	after := heapInUse()
	if after > before+4<<20 {
		t.Fatalf("heap grew from %d to %d bytes (+%d MiB) after 400 logins from strangers; want within 4 MiB",
			before, after, (after-before)>>20)
	}
	t.Logf("heap %d → %d bytes", before, after)
}

// TestUserSendLimit: one account cannot store a flood of messages, whichever of its
// connections they come on; what is over the limit is answered rate_limited with
// retry_after_ms, and what was acked is stored.
func TestUserSendLimit(t *testing.T) {
	for _, soft := range []string{"memory", "redis"} {
		t.Run(soft, func(t *testing.T) {
			testUserSendLimit(t, soft == "redis")
		})
	}
}

// testUserSendLimit is TestUserSendLimit with soft state in memory or, with redis, in the
// Redis of the scale-out tests (PARLEY_TEST_REDIS_URL), where the buckets are shared by
// every node.
func testUserSendLimit(t *testing.T, redis bool) {
	ts := startServer(t, func(c *Config) {
		defaultLimits(c)
		c.Limits.Send = limit.Rule{Rate: 10, Burst: 50}
		if redis {
			c.RedisURL, c.RedisPrefix = testRedis(t)
		}
	})
	alice, bob := ts.signup("alice"), ts.signup("bob")
	g := ts.group(alice, "flood", bob)
	conns := []*rawWS{ts.dialRaw(alice.AccessToken), ts.dialRaw(alice.AccessToken)}
	const n = 300
	start := time.Now()
	for i := range n {
		conns[i%2].send(protocol.ClientFrame{Type: "send", ID: uuid.NewString(), ConversationID: g.ID, Body: fmt.Sprint("m", i)})
	}
	acked, limited := 0, 0
	for _, c := range conns {
		// Each connection gets an answer per frame it sent, and the messages its twin
		// stored (a user's other connections see them), which are skipped here.
		for answers := 0; answers < n/2; {
			f := c.read()
			switch {
			case f.Type == protocol.FrameMessage:
				continue
			case f.Type == protocol.FrameAck:
				acked++
			case f.Type == protocol.FrameError && f.Code == protocol.CodeRateLimited:
				limited++
				if f.RetryAfterMS <= 0 || f.ID == "" {
					t.Fatalf("rate_limited frame without retry_after_ms or id: %+v", f)
				}
			default:
				t.Fatalf("unexpected frame %+v", f)
			}
			answers++
		}
	}
	allowed := 50 + int(10*time.Since(start).Seconds()) + 1
	if acked > allowed || acked < 50 || limited == 0 {
		t.Fatalf("%d acked and %d rate_limited of %d sent; want 50..%d acked", acked, limited, n, allowed)
	}
	stored := 0
	for _, m := range ts.history(bob, g.ID, 0) {
		if m.Kind == protocol.KindText {
			stored++
		}
	}
	if stored != acked {
		t.Fatalf("history holds %d messages, %d were acked", stored, acked)
	}
}

// testRedis returns the Redis of the scale-out tests and a key prefix of this test's own;
// it skips (fails, with PARLEY_TEST_REQUIRE_SERVICES=1) if none answers.
func testRedis(t *testing.T) (url, prefix string) {
	t.Helper()
	url = os.Getenv("PARLEY_TEST_REDIS_URL")
	if url == "" {
		url = "redis://127.0.0.1:6379/0"
	}
	u, err := neturl.Parse(url)
	if err != nil {
		t.Fatalf("PARLEY_TEST_REDIS_URL: %v", err)
	}
	conn, err := net.DialTimeout("tcp", u.Host, 2*time.Second)
	if err != nil {
		if os.Getenv("PARLEY_TEST_REQUIRE_SERVICES") == "1" {
			t.Fatalf("Redis at %s unreachable and PARLEY_TEST_REQUIRE_SERVICES=1: %v", u.Host, err)
		}
		t.Skipf("skipping: no Redis at %s (set PARLEY_TEST_REDIS_URL): %v", u.Host, err)
	}
	conn.Close()
	prefix = "parleytest:" + uuid.NewString()[:8] + ":"
	t.Cleanup(func() { // after the server's own cleanup (registered later, run first)
		opt, err := redis.ParseURL(url)
		if err != nil {
			return
		}
		c := redis.NewClient(opt)
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			c.Del(ctx, iter.Val())
		}
	})
	return url, prefix
}

// readUntilClose reads frames until the close frame and returns them and its code.
func readUntilClose(t *testing.T, c *rawWS, within time.Duration) ([]protocol.ServerFrame, ws.StatusCode, string) {
	t.Helper()
	var frames []protocol.ServerFrame
	_ = c.nc.SetReadDeadline(time.Now().Add(within))
	for {
		fr, err := ws.ReadFrame(c.r)
		if err != nil {
			t.Fatalf("connection ended without a close frame (after %d frames): %v", len(frames), err)
		}
		if fr.Header.Masked {
			ws.Cipher(fr.Payload, fr.Header.Mask, 0)
		}
		switch fr.Header.OpCode {
		case ws.OpClose:
			code, reason := ws.ParseCloseFrameData(fr.Payload)
			return frames, code, reason
		case ws.OpText:
			var f protocol.ServerFrame
			if err := json.Unmarshal(fr.Payload, &f); err != nil {
				t.Fatalf("decode %q: %v", fr.Payload, err)
			}
			frames = append(frames, f)
		}
	}
}

// TestLimitedConnectionClosed: a connection that keeps sending far past its limit for
// LimitedFor is closed with 1008, and only after every frame it sent was answered.
func TestLimitedConnectionClosed(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		defaultLimits(c)
		c.Limits.Send = limit.Rule{Rate: 1, Burst: 5}
		c.Gateway.LimitedFor = time.Second
	})
	alice, bob := ts.signup("alice"), ts.signup("bob")
	g := ts.group(alice, "flood", bob)
	c := ts.dialRaw(alice.AccessToken)
	sent := map[string]bool{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	var mu sync.Mutex
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			id := uuid.NewString()
			mu.Lock()
			sent[id] = true
			mu.Unlock()
			c.mu.Lock()
			err := ws.WriteFrame(c.nc, ws.MaskFrame(ws.NewTextFrame(mustJSON(protocol.ClientFrame{Type: "send", ID: id, ConversationID: g.ID, Body: "x"}))))
			c.mu.Unlock()
			if err != nil {
				return // closed
			}
		}
	}()
	start := time.Now()
	frames, code, reason := readUntilClose(t, c, 10*time.Second)
	close(stop)
	wg.Wait()
	if code != ws.StatusPolicyViolation || !strings.Contains(reason, "rate limit") {
		t.Fatalf("closed with %d %q, want 1008 about rate limits", code, reason)
	}
	if d := time.Since(start); d < time.Second {
		t.Fatalf("closed after %v, before LimitedFor (1s)", d)
	}
	limited := 0
	for _, f := range frames {
		if f.Type == protocol.FrameError && f.Code == protocol.CodeRateLimited {
			limited++
		}
	}
	if limited < 10 {
		t.Fatalf("%d rate_limited frames before the close; the client must learn why", limited)
	}
	// The last frame before the close answers one of the sends: the answers went out first.
	if last := frames[len(frames)-1]; !sent[last.ID] {
		t.Fatalf("last frame before the close is %+v, not an answer to a send", last)
	}
}

// TestTypingFloodThrottled: alternating start and stop does not get around the typing
// throttle: 200 frames reach the other member as a few.
func TestTypingFloodThrottled(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		defaultLimits(c)
		c.Limits.Typing = limit.Rule{Rate: 1000, Burst: 1000} // the relay's throttle is under test
	})
	alice, bob := ts.signup("alice"), ts.signup("bob")
	g := ts.group(alice, "typing", bob)
	a, b := ts.dialRaw(alice.AccessToken), ts.dialRaw(bob.AccessToken)
	for i := range 200 {
		a.send(protocol.ClientFrame{Type: "typing", ConversationID: g.ID, State: []string{"start", "stop"}[i%2]})
	}
	a.send(protocol.ClientFrame{Type: "ping", ID: "done"})
	a.readType(protocol.FramePong) // every typing frame has been handled
	got := 0
	for {
		f, err := b.tryRead(300 * time.Millisecond)
		if err != nil {
			break
		}
		if f.Type == protocol.FrameTyping {
			got++
		}
	}
	if got == 0 || got > 8 {
		t.Fatalf("bob got %d typing frames for 200 alternated start/stop; want a few (1 to 8)", got)
	}
}

// TestRefreshReuseLogsDeviceOut: a rotated refresh token presented again is theft
// (RFC 9700 §4.14): it gets 401 and the device is logged out, so the newest refresh token,
// the access token and the device's socket stop working too.
func TestRefreshReuseLogsDeviceOut(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.API.RefreshGrace = time.Nanosecond })
	alice := ts.signup("alice")
	other := ts.login("alice") // another device of alice: unaffected
	c := ts.dialRaw(alice.AccessToken)
	var rotated protocol.Tokens
	if code := ts.call("POST", "/api/v1/auth/refresh", "", protocol.RefreshRequest{RefreshToken: alice.RefreshToken}, &rotated); code != 200 {
		t.Fatalf("first refresh: %d", code)
	}
	var eb protocol.ErrorBody
	if code := ts.call("POST", "/api/v1/auth/refresh", "", protocol.RefreshRequest{RefreshToken: alice.RefreshToken}, &eb); code != 401 {
		t.Fatalf("reused refresh token: %d %+v, want 401", code, eb)
	}
	if code := ts.call("POST", "/api/v1/auth/refresh", "", protocol.RefreshRequest{RefreshToken: rotated.RefreshToken}, nil); code != 401 {
		t.Fatalf("the newest refresh token after the reuse: %d, want 401 (the whole device is logged out)", code)
	}
	if code := ts.call("GET", "/api/v1/me", rotated.AccessToken, nil, nil); code != 401 {
		t.Fatalf("access token of the logged-out device: %d, want 401", code)
	}
	_, code, reason := readUntilClose(t, c, 5*time.Second)
	if code != ws.StatusPolicyViolation || reason != "logged out" {
		t.Fatalf("socket closed with %d %q, want 1008 logged out", code, reason)
	}
	if code := ts.call("GET", "/api/v1/me", other.AccessToken, nil, nil); code != 200 {
		t.Fatalf("alice's other device: %d, want 200", code)
	}
	// A token that was never issued is just invalid: no device to log out.
	if code := ts.call("POST", "/api/v1/auth/refresh", "", protocol.RefreshRequest{RefreshToken: "made-up"}, nil); code != 401 {
		t.Fatalf("made-up refresh token: %d", code)
	}
}

// TestRefreshReuseGrace: the old token presented again just after its rotation (two tabs
// refreshing at once, a retry after a lost answer) is refused without logging the device out.
func TestRefreshReuseGrace(t *testing.T) {
	ts := startServer(t, nil) // the default grace, 30 s
	alice := ts.signup("alice")
	var rotated protocol.Tokens
	if code := ts.call("POST", "/api/v1/auth/refresh", "", protocol.RefreshRequest{RefreshToken: alice.RefreshToken}, &rotated); code != 200 {
		t.Fatalf("refresh: %d", code)
	}
	if code := ts.call("POST", "/api/v1/auth/refresh", "", protocol.RefreshRequest{RefreshToken: alice.RefreshToken}, nil); code != 401 {
		t.Fatalf("the old token at once: %d, want 401", code)
	}
	if code := ts.call("POST", "/api/v1/auth/refresh", "", protocol.RefreshRequest{RefreshToken: rotated.RefreshToken}, nil); code != 200 {
		t.Fatalf("the newest token after a reuse within the grace: %d, want 200 (device kept)", code)
	}
}

// TestLoginLimits: guessing one account's password from one address is slowed there without
// locking the owner out of it from elsewhere; spraying many accounts from one address is
// slowed too; behind a trusted proxy the client address is X-Forwarded-For's.
func TestLoginLimits(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		defaultLimits(c)
		c.Limits.SignupIP = limit.Rule{Rate: 1000, Burst: 1000}
		c.Limits.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.9/32")}
	})
	for i := range 40 {
		ts.call("POST", "/api/v1/auth/signup", "", protocol.SignupRequest{Username: fmt.Sprint("user", i), Password: "correct horse"}, nil)
	}
	attacker := fromAddr("127.0.0.2")
	var codes []int
	var retry string
	for range 12 {
		status, h, _ := ts.post(attacker, "/api/v1/auth/login", loginBody("user0", "wrong password"), nil)
		codes = append(codes, status)
		retry = h.Get("Retry-After")
	}
	if codes[0] != 401 || codes[len(codes)-1] != 429 || retry == "" {
		t.Fatalf("guessing from one address: %v (Retry-After %q); want 401s then 429 with Retry-After", codes, retry)
	}
	// The owner, from another address, is not locked out.
	if status, _, e := ts.post(fromAddr("127.0.0.3"), "/api/v1/auth/login", loginBody("user0", "correct horse"), nil); status != 200 {
		t.Fatalf("owner from another address: %d %+v, want 200", status, e)
	}
	// A guess from many addresses empties the account-wide bucket: the owner still gets in
	// from an address it logged in from before, not from a new one (that waits it out).
	if status, _, _ := ts.post(fromAddr("127.0.0.5"), "/api/v1/auth/login", loginBody("user5", "correct horse"), nil); status != 200 {
		t.Fatalf("owner's first login: %d", status)
	}
	for a := range 10 {
		guesser := fromAddr(fmt.Sprintf("127.0.1.%d", 10+a))
		for range 10 {
			ts.post(guesser, "/api/v1/auth/login", loginBody("user5", "wrong password"), nil)
		}
	}
	if status, _, e := ts.post(fromAddr("127.0.0.6"), "/api/v1/auth/login", loginBody("user5", "correct horse"), nil); status != 429 {
		t.Fatalf("owner from a new address during a distributed guess: %d %+v, want 429", status, e)
	}
	if status, _, e := ts.post(fromAddr("127.0.0.5"), "/api/v1/auth/login", loginBody("user5", "correct horse"), nil); status != 200 {
		t.Fatalf("owner from a known address during a distributed guess: %d %+v, want 200", status, e)
	}
	// Spraying: one password over many accounts from one address.
	sprayer := fromAddr("127.0.0.4")
	limited := 0
	for i := range 40 {
		status, _, e := ts.post(sprayer, "/api/v1/auth/login", loginBody(fmt.Sprint("user", i), "password1"), nil)
		if status == 429 {
			limited++
			if e.RetryAfterMS <= 0 {
				t.Fatalf("429 without retry_after_ms: %+v", e)
			}
		}
	}
	if limited == 0 {
		t.Fatalf("40 accounts sprayed from one address, none limited")
	}
	// Behind a trusted proxy, each forwarded client has its own budget; an untrusted peer's
	// X-Forwarded-For is ignored.
	proxy := fromAddr("127.0.0.9")
	for i := range 3 {
		fwd := http.Header{"X-Forwarded-For": {fmt.Sprintf("203.0.113.%d", 10+i)}}
		if status, _, e := ts.post(proxy, "/api/v1/auth/login", loginBody("user1", "correct horse"), fwd); status != 200 {
			t.Fatalf("via trusted proxy for client %d: %d %+v", i, status, e)
		}
	}
	spoof := http.Header{"X-Forwarded-For": {"198.51.100.1"}}
	if status, _, _ := ts.post(sprayer, "/api/v1/auth/login", loginBody("user2", "correct horse"), spoof); status != 429 {
		t.Fatalf("an untrusted peer's X-Forwarded-For was believed: %d, want 429 (its own address is over its limit)", status)
	}
}

// TestSignupLimit: one address can create a few dozen accounts quickly, not 60.
func TestSignupLimit(t *testing.T) {
	ts := startServer(t, defaultLimits)
	created := 0
	for i := range 60 {
		b, _ := json.Marshal(protocol.SignupRequest{Username: fmt.Sprint("user", i), Password: "correct horse"})
		status, h, e := ts.post(http.DefaultClient, "/api/v1/auth/signup", b, nil)
		switch status {
		case 201:
			created++
		case 429:
			if h.Get("Retry-After") == "" || e.Code != protocol.CodeRateLimited {
				t.Fatalf("429 without Retry-After or code: %v %+v", h, e)
			}
		default:
			t.Fatalf("signup %d: %d %+v", i, status, e)
		}
	}
	if created < 20 || created >= 60 {
		t.Fatalf("one address created %d of 60 accounts; want at least 20, not all", created)
	}
}

// TestResourceLimits: connections per user and per address, devices per user, contacts and
// groups created are bounded.
func TestResourceLimits(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		c.Limits.ConnsPerUser = 2
		c.Limits.ConnsPerIP = 3
		c.Limits.MaxDevices = 2
		c.Limits.MaxContacts = 1
		c.Limits.GroupCreate = limit.Rule{Rate: 0.001, Burst: 2}
		c.Limits.Membership = limit.Rule{Rate: 0.001, Burst: 3}
	})
	alice, bob, carol := ts.signup("alice"), ts.signup("bob"), ts.signup("carol")

	t.Run("connections per user", func(t *testing.T) {
		ts.dialRaw(alice.AccessToken)
		ts.dialRaw(alice.AccessToken)
		if _, err := ts.tryDialRaw(alice.AccessToken); err == nil || !strings.Contains(err.Error(), "429") {
			t.Fatalf("third connection of one user: %v, want 429", err)
		}
	})
	t.Run("connections per address", func(t *testing.T) {
		ts.dialRaw(bob.AccessToken) // the 3rd from 127.0.0.1
		if _, err := ts.tryDialRaw(carol.AccessToken); err == nil || !strings.Contains(err.Error(), "429") {
			t.Fatalf("fourth connection from one address: %v, want 429", err)
		}
	})
	t.Run("devices", func(t *testing.T) {
		d2 := ts.login("carol") // carol's second device
		ts.login("carol")       // a third: the longest idle (the signup's) is logged out
		if code := ts.call("GET", "/api/v1/me", carol.AccessToken, nil, nil); code != 401 {
			t.Fatalf("oldest device after a login past the limit: %d, want 401", code)
		}
		if code := ts.call("GET", "/api/v1/me", d2.AccessToken, nil, nil); code != 200 {
			t.Fatalf("second device: %d, want 200", code)
		}
	})
	t.Run("contacts", func(t *testing.T) {
		if code := ts.call("PUT", "/api/v1/contacts/"+bob.UserID, alice.AccessToken, nil, nil); code != 204 {
			t.Fatalf("first contact: %d", code)
		}
		if code := ts.call("PUT", "/api/v1/contacts/"+bob.UserID, alice.AccessToken, nil, nil); code != 204 {
			t.Fatalf("the same contact again: %d, want 204", code)
		}
		var eb protocol.ErrorBody
		if code := ts.call("PUT", "/api/v1/contacts/"+carol.UserID, alice.AccessToken, nil, &eb); code != 409 {
			t.Fatalf("contact past the limit: %d %+v, want 409", code, eb)
		}
	})
	t.Run("groups created", func(t *testing.T) {
		req := protocol.CreateConversationRequest{Type: protocol.Group, Name: "g", MemberIDs: []string{bob.UserID}}
		for i := range 2 {
			if code := ts.call("POST", "/api/v1/conversations", bob.AccessToken, req, nil); code != 201 {
				t.Fatalf("group %d: %d", i, code)
			}
		}
		var eb protocol.ErrorBody
		if code := ts.call("POST", "/api/v1/conversations", bob.AccessToken, req, &eb); code != 429 || eb.Error.RetryAfterMS <= 0 {
			t.Fatalf("third group at once: %d %+v, want 429 with retry_after_ms", code, eb)
		}
	})
	t.Run("membership changes", func(t *testing.T) {
		// Adding and removing a member over and over would flood them with system events.
		g := ts.group(alice, "churn")
		path := "/api/v1/conversations/" + g.ID + "/members"
		calls := []func() int{
			func() int {
				return ts.call("POST", path, alice.AccessToken, protocol.AddMembersRequest{UserIDs: []string{bob.UserID}}, nil)
			},
			func() int { return ts.call("DELETE", path+"/"+bob.UserID, alice.AccessToken, nil, nil) },
			func() int {
				return ts.call("PATCH", "/api/v1/conversations/"+g.ID, alice.AccessToken, protocol.PatchConversationRequest{Name: ptr("x")}, nil)
			},
		}
		for i, call := range calls {
			if code := call(); code >= 400 {
				t.Fatalf("change %d: %d", i, code)
			}
		}
		if code := calls[0](); code != 429 {
			t.Fatalf("fourth change at once: %d, want 429", code)
		}
	})
}

// handshake sends a WebSocket upgrade request with the given headers and returns the status
// and the error body.
func (ts *testServer) handshake(token, origin string, upgrade bool) (int, protocol.Error) {
	ts.t.Helper()
	req, _ := http.NewRequest("GET", ts.base+"/api/v1/ws", nil)
	if upgrade {
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("Sec-WebSocket-Version", "13")
		req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		ts.t.Fatal(err)
	}
	defer resp.Body.Close()
	var eb protocol.ErrorBody
	if resp.StatusCode != http.StatusSwitchingProtocols {
		if err := json.NewDecoder(resp.Body).Decode(&eb); err != nil {
			ts.t.Fatalf("handshake answer %d is not the JSON error shape: %v", resp.StatusCode, err)
		}
	}
	return resp.StatusCode, eb.Error
}

// TestWebSocketOrigin: browsers may open a socket only from an allowed origin (default: the
// server's own); a handshake without Origin is not a browser's and is judged by its token.
func TestWebSocketOrigin(t *testing.T) {
	tests := []struct {
		name    string
		allowed []string
		origin  string
		want    int
	}{
		{"own origin", nil, "SELF", 101},
		{"no origin", nil, "", 101},
		{"foreign origin", nil, "https://evil.example", 403},
		{"null origin", nil, "null", 403},
		{"listed origin", []string{"https://chat.example.com"}, "https://chat.example.com", 101},
		{"unlisted origin", []string{"https://chat.example.com"}, "https://evil.example", 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, func(c *Config) { c.Gateway.AllowedOrigins = tt.allowed })
			alice := ts.signup("alice")
			origin := strings.ReplaceAll(tt.origin, "SELF", ts.base)
			if got, e := ts.handshake(alice.AccessToken, origin, true); got != tt.want {
				t.Fatalf("Origin %q: %d %+v, want %d", origin, got, e, tt.want)
			}
		})
	}
}

// TestPlainGetOnWebSocketPath: a GET without an upgrade gets the JSON error shape, not a
// library's plain text.
func TestPlainGetOnWebSocketPath(t *testing.T) {
	ts := startServer(t, nil)
	alice := ts.signup("alice")
	if status, e := ts.handshake(alice.AccessToken, "", false); status != 400 || e.Code != protocol.CodeBadRequest {
		t.Fatalf("plain GET: %d %+v, want 400 bad_request", status, e)
	}
}

// TestMethodNotAllowed: a path that exists, with the wrong method, is 405 with Allow.
func TestMethodNotAllowed(t *testing.T) {
	ts := startServer(t, nil)
	alice := ts.signup("alice")
	tests := []struct {
		method, path, allow string
	}{
		{"GET", "/api/v1/auth/login", "POST"},
		{"DELETE", "/api/v1/me", "GET, HEAD, PATCH"},
		{"POST", "/api/v1/contacts", "GET, HEAD"},
		{"PUT", "/api/v1/conversations", "GET, HEAD, POST"},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(tt.method, ts.base+tt.path, nil)
		req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var eb protocol.ErrorBody
		_ = json.NewDecoder(resp.Body).Decode(&eb)
		resp.Body.Close()
		if resp.StatusCode != 405 || resp.Header.Get("Allow") != tt.allow || eb.Error.Code != protocol.CodeMethodNotAllowed {
			t.Errorf("%s %s: %d Allow %q %+v; want 405 Allow %q method_not_allowed", tt.method, tt.path, resp.StatusCode, resp.Header.Get("Allow"), eb, tt.allow)
		}
	}
	if code := ts.call("GET", "/api/v1/nothing-here", alice.AccessToken, nil, nil); code != 404 {
		t.Fatalf("unknown path: %d, want 404", code)
	}
}

// TestBadRESTInput: malformed cursors and bodies are the client's error, said in API terms.
func TestBadRESTInput(t *testing.T) {
	ts := startServer(t, nil)
	alice := ts.signup("alice")
	auth := http.Header{"Authorization": {"Bearer " + alice.AccessToken}, "Content-Type": {"application/json"}}
	tests := []struct {
		name, method, path, body string
		want                     int
		says, never              string
	}{
		{"malformed query string", "GET", "/api/v1/conversations?cursor=%%%", "", 400, "query string", ""},
		{"cursor of garbage base64", "GET", "/api/v1/conversations?cursor=bm9wZQ", "", 400, "cursor", ""},
		{"negative after", "GET", "/api/v1/conversations/x/messages?after=-3", "", 400, "after", ""},
		{"limit not a number", "GET", "/api/v1/conversations?limit=ten", "", 400, "limit", ""},
		{"since not a token", "GET", "/api/v1/sync?since=yesterday", "", 400, "since", ""},
		{"trailing garbage", "PATCH", "/api/v1/me", `{"display_name":"Al"} {"x":1}`, 400, "after the JSON", ""},
		{"wrong type", "PATCH", "/api/v1/me", `{"display_name":5}`, 400, `"display_name"`, "Go"},
		{"not an object", "PATCH", "/api/v1/me", `[1,2]`, 400, "JSON object", "Go"},
		{"truncated", "PATCH", "/api/v1/me", `{"display_name":"A`, 400, "not valid JSON", ""},
		{"bidi override in name", "PATCH", "/api/v1/me", `{"display_name":"Al\u202eice"}`, 400, "bidirectional", ""},
		{"isolate in name", "PATCH", "/api/v1/me", `{"display_name":"\u2067Al"}`, 400, "bidirectional", ""},
		{"invisible name", "PATCH", "/api/v1/me", `{"display_name":"\u200b\u3164 \u200d"}`, 400, "visible", ""},
		{"group named with an override", "POST", "/api/v1/conversations", `{"type":"group","name":"x\u202egpj.exe"}`, 400, "bidirectional", ""},
		{"signup field of the wrong type", "POST", "/api/v1/auth/signup", `{"username":5,"password":"correct horse"}`, 400, `"username"`, "SignupRequest"},
		{"auth body over 64 KiB", "POST", "/api/v1/auth/refresh", `{"refresh_token":"` + strings.Repeat("x", 70<<10) + `"}`, 413, "larger", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, ts.base+tt.path, strings.NewReader(tt.body))
			req.Header = auth.Clone()
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var eb protocol.ErrorBody
			_ = json.NewDecoder(resp.Body).Decode(&eb)
			if resp.StatusCode != tt.want || !strings.Contains(eb.Error.Message, tt.says) ||
				(tt.never != "" && strings.Contains(eb.Error.Message, tt.never)) {
				t.Fatalf("%d %+v; want %d saying %q (never %q)", resp.StatusCode, eb.Error, tt.want, tt.says, tt.never)
			}
		})
	}
	// Names are stored NFC-normalised: "é" typed as e + combining acute is stored as U+00E9.
	var ub protocol.UserBody
	if code := ts.call("PATCH", "/api/v1/me", alice.AccessToken, protocol.PatchMeRequest{DisplayName: ptr("Rene\u0301")}, &ub); code != 200 || ub.User.DisplayName != "Ren\u00e9" {
		t.Fatalf("display name %q (%d), want NFC %q", ub.User.DisplayName, code, "Ren\u00e9")
	}
}

func ptr[T any](v T) *T { return &v }

// TestBadFrameInput: bodies that are empty in all but name, NUL characters and attachments
// that are not media ids are refused; a text frame that is not UTF-8 closes with 1007.
func TestBadFrameInput(t *testing.T) {
	ts := startServer(t, nil)
	alice, bob := ts.signup("alice"), ts.signup("bob")
	g := ts.group(alice, "g", bob)
	c := ts.dialRaw(alice.AccessToken)
	tests := []struct {
		name string
		f    protocol.ClientFrame
	}{
		{"whitespace body", protocol.ClientFrame{Type: "send", Body: " \n\t\u3000 "}},
		{"NUL in body", protocol.ClientFrame{Type: "send", Body: "a\x00b"}},
		{"URL attachment", protocol.ClientFrame{Type: "send", Body: "see", Attachments: json.RawMessage(`["https://evil.example/x.png"]`)}},
		{"object attachment", protocol.ClientFrame{Type: "send", Body: "see", Attachments: json.RawMessage(`[{"url":"https://evil.example"}]`)}},
		{"too many attachments", protocol.ClientFrame{Type: "send", Body: "see", Attachments: json.RawMessage(`[` + strings.Repeat(`"`+uuid.NewString()+`",`, 10) + `"` + uuid.NewString() + `"]`)}},
		{"whitespace edit", protocol.ClientFrame{Type: "edit", TargetSeq: 1, Body: "   "}},
		{"no body, empty attachments", protocol.ClientFrame{Type: "send", Attachments: json.RawMessage(`[]`)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.f.ID, tt.f.ConversationID = uuid.NewString(), g.ID
			c.send(tt.f)
			if f := c.read(); f.Type != protocol.FrameError || f.Code != protocol.CodeBadRequest || f.ID != tt.f.ID {
				t.Fatalf("got %+v, want bad_request for %s", f, tt.f.ID)
			}
		})
	}
	if got := len(ts.history(alice, g.ID, 1)); got != 0 {
		t.Fatalf("%d messages stored from refused frames", got)
	}
	c.writeText([]byte(`{"type":"send","body":"` + "\xff\xfe" + `"}`))
	_, code, _ := readUntilClose(t, c, 5*time.Second)
	if code != ws.StatusInvalidFramePayloadData {
		t.Fatalf("invalid UTF-8 text frame: close %d, want 1007", code)
	}
}
