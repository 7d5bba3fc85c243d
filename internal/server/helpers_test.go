package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/parley-chat/parley/internal/auth"
	"github.com/parley-chat/parley/internal/limit"
	"github.com/parley-chat/parley/protocol"
)

// testServer is a real server on 127.0.0.1 with its data in a temp dir.
type testServer struct {
	*Server // nil for a server in another process
	t       *testing.T
	addr    string
	base    string
	stop    func()
}

// testLimits are the defaults with the limits on strangers and on sends raised: tests sign
// up, log in and send from one address far faster than people do. Tests of the limits start
// from defaultLimits instead.
func testLimits() limit.Config {
	l := limit.Defaults()
	many := limit.Rule{Rate: 100_000, Burst: 100_000}
	l.Send, l.Edit, l.React, l.Receipt, l.Typing, l.GroupCreate, l.Membership = many, many, many, many, many, many, many
	l.LoginIP, l.LoginAccountIP, l.LoginAccount, l.SignupIP, l.RefreshIP = many, many, many, many, many
	return l
}

// cheapPasswords keeps argon2id honest but fast enough for tests that sign up many users.
var cheapPasswords = auth.Params{Memory: 64, Time: 1, Threads: 1}

func startServer(t *testing.T, mod func(*Config)) *testServer {
	t.Helper()
	return startServerLogging(t, mod, nil)
}

// startServerLogging is startServer with the server's log handler wrapped by wrap (nil: as
// is), for tests that check what is logged.
func startServerLogging(t *testing.T, mod func(*Config), wrap func(slog.Handler) slog.Handler) *testServer {
	t.Helper()
	cfg := Config{Listen: "127.0.0.1:0", Data: t.TempDir()}
	cfg.API.Password = cheapPasswords
	cfg.Limits = testLimits()
	if mod != nil {
		mod(&cfg)
	}
	var h slog.Handler = slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})
	if wrap != nil {
		h = wrap(h)
	}
	log := slog.New(h)
	s, err := New(context.Background(), cfg, log)
	if err != nil {
		t.Fatalf("start server: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	ts := &testServer{Server: s, t: t, addr: s.Addr(), base: "http://" + s.Addr()}
	var once bool
	ts.stop = func() {
		if once {
			return
		}
		once = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server shutdown: %v", err)
		}
	}
	t.Cleanup(ts.stop)
	return ts
}

// testWriter sends server logs to the test's log, so they show only for a failing test.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// call makes an HTTP request with a JSON body (nil for none) and decodes the JSON answer
// into out (nil to skip). It returns the status code.
func (ts *testServer) call(method, path, token string, body, out any) int {
	ts.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			ts.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, ts.base+path, rd)
	if err != nil {
		ts.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		ts.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			ts.t.Fatalf("%s %s: decode %q: %v", method, path, data, err)
		}
	}
	return resp.StatusCode
}

// account is a signed-up user logged in on one device.
type account struct {
	protocol.Tokens
	Username string
}

func (ts *testServer) signup(name string) account {
	ts.t.Helper()
	if code := ts.call("POST", "/api/v1/auth/signup", "", protocol.SignupRequest{Username: name, Password: "correct horse"}, nil); code != http.StatusCreated {
		ts.t.Fatalf("signup %s: status %d", name, code)
	}
	return ts.login(name)
}

// login logs name in again: a new device.
func (ts *testServer) login(name string) account {
	ts.t.Helper()
	var tok protocol.Tokens
	if code := ts.call("POST", "/api/v1/auth/login", "", protocol.LoginRequest{Username: name, Password: "correct horse"}, &tok); code != http.StatusOK {
		ts.t.Fatalf("login %s: status %d", name, code)
	}
	return account{Tokens: tok, Username: name}
}

func (ts *testServer) group(owner account, name string, members ...account) protocol.Conversation {
	ts.t.Helper()
	ids := make([]string, len(members))
	for i, m := range members {
		ids[i] = m.UserID
	}
	var body protocol.ConversationBody
	if code := ts.call("POST", "/api/v1/conversations", owner.AccessToken, protocol.CreateConversationRequest{Type: protocol.Group, Name: name, MemberIDs: ids}, &body); code != http.StatusCreated {
		ts.t.Fatalf("create group: status %d", code)
	}
	return body.Conversation
}

func (ts *testServer) direct(a, b account) protocol.Conversation {
	ts.t.Helper()
	var body protocol.ConversationBody
	code := ts.call("POST", "/api/v1/conversations", a.AccessToken, protocol.CreateConversationRequest{Type: protocol.Direct, MemberIDs: []string{b.UserID}}, &body)
	if code != http.StatusCreated && code != http.StatusOK {
		ts.t.Fatalf("create direct: status %d", code)
	}
	return body.Conversation
}

func (ts *testServer) history(a account, convID string, after int64) []protocol.Message {
	ts.t.Helper()
	var all []protocol.Message
	for {
		var page protocol.MessagesBody
		if code := ts.call("GET", fmt.Sprintf("/api/v1/conversations/%s/messages?after=%d&limit=200", convID, after), a.AccessToken, nil, &page); code != http.StatusOK {
			ts.t.Fatalf("history: status %d", code)
		}
		all = append(all, page.Messages...)
		if !page.HasMore || len(page.Messages) == 0 {
			return all
		}
		after = page.Messages[len(page.Messages)-1].Seq
	}
}

// rawWS is a bare WebSocket client for tests that need to send what a good client never
// would: malformed JSON, huge frames, dropped connections.
type rawWS struct {
	t  *testing.T
	nc net.Conn
	r  io.Reader  // nc, or the handshake's reader while it holds frames that came with it
	mu sync.Mutex // serialises writes (keepalive writes from its own goroutine)
}

// keepalive sends a WebSocket ping every interval until the test ends, as a live client's
// heartbeat would, without producing any text frame for the test to read.
func (c *rawWS) keepalive(interval time.Duration) {
	stop := make(chan struct{})
	done := make(chan struct{})
	c.t.Cleanup(func() { close(stop); <-done })
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				c.mu.Lock()
				_ = ws.WriteFrame(c.nc, ws.MaskFrame(ws.NewPingFrame(nil)))
				c.mu.Unlock()
			}
		}
	}()
}

func (ts *testServer) dialRaw(token string) *rawWS {
	ts.t.Helper()
	c, err := ts.tryDialRaw(token)
	if err != nil {
		ts.t.Fatalf("dial: %v", err)
	}
	return c
}

func (ts *testServer) tryDialRaw(token string) (*rawWS, error) {
	d := ws.Dialer{Timeout: 5 * time.Second, Header: ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Bearer " + token}})}
	nc, br, _, err := d.Dial(context.Background(), "ws://"+ts.addr+"/api/v1/ws")
	if err != nil {
		return nil, err
	}
	c := &rawWS{t: ts.t, nc: nc, r: nc}
	if br != nil {
		c.r = br
	}
	ts.t.Cleanup(func() { nc.Close() })
	if f := c.read(); f.Type != protocol.FrameReady {
		return nil, fmt.Errorf("first frame is %q, want ready", f.Type)
	}
	return c, nil
}

func (c *rawWS) writeText(p []byte) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := wsutil.WriteClientText(c.nc, p); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *rawWS) send(v any) {
	c.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	c.writeText(b)
}

// read returns the next data frame, answering pings; it fails the test after 5s.
func (c *rawWS) read() protocol.ServerFrame {
	c.t.Helper()
	f, err := c.tryRead(5 * time.Second)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return f
}

func (c *rawWS) tryRead(timeout time.Duration) (protocol.ServerFrame, error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(timeout))
	for {
		data, op, err := wsutil.ReadServerData(struct {
			io.Reader
			io.Writer
		}{c.r, c.nc})
		if err != nil {
			return protocol.ServerFrame{}, err
		}
		if op != ws.OpText {
			continue
		}
		var f protocol.ServerFrame
		if err := json.Unmarshal(data, &f); err != nil {
			return protocol.ServerFrame{}, fmt.Errorf("decode %q: %w", data, err)
		}
		return f, nil
	}
}

// readType reads frames until one of type typ arrives, returning it; it fails the test if
// none does within 5s.
func (c *rawWS) readType(typ string) protocol.ServerFrame {
	c.t.Helper()
	return c.readTypeWithin(typ, 5*time.Second)
}

func (c *rawWS) readTypeWithin(typ string, d time.Duration) protocol.ServerFrame {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for {
		f, err := c.tryRead(time.Until(deadline))
		if err != nil {
			c.t.Fatalf("waiting for a %s frame: %v", typ, err)
		}
		if f.Type == typ {
			return f
		}
	}
}

func timeIn(seconds int) time.Time { return time.Now().Add(time.Duration(seconds) * time.Second) }
