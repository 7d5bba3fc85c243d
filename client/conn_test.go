package client

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-chat/parley/protocol"
)

func newTestClient(f *fakeServer) *Client {
	cl := New(f.srv.URL)
	cl.SetTokens(protocol.Tokens{AccessToken: "a0", RefreshToken: "r0", UserID: "u1"})
	return cl
}

// connect connects with fast backoff and closes the Conn when the test ends.
func connect(t *testing.T, cl *Client, opts ...ConnectOption) *Conn {
	t.Helper()
	opts = append([]ConnectOption{WithBackoff(5*time.Millisecond, 50*time.Millisecond)}, opts...)
	c, err := cl.Connect(testCtx(t), opts...)
	if err != nil {
		t.Fatalf(
			"Connect: %v",
			err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// ev is a message event reduced to what the delivery guarantee is about.
type ev struct {
	conv    string
	seq     int64
	resumed bool
}

func (e ev) String() string {
	r := ""
	if e.resumed {
		r = "r"
	}
	return fmt.Sprintf("%s/%d%s", e.conv, e.seq, r)
}

// nextMessages reads n message events, skipping other event types.
func nextMessages(t *testing.T, c *Conn, n int) []ev {
	t.Helper()
	var out []ev
	timeout := time.After(5 * time.Second)
	for len(out) < n {
		select {
		case e, ok := <-c.Events():
			if !ok {
				t.Fatalf(
					"events closed after %v",
					out)
			}
			if e.Type == EventMessage {
				out = append(out, ev{conv: e.Message.ConversationID, seq: e.Message.Seq, resumed: e.Resumed})
			}
		case <-timeout:
			t.Fatalf(
				"got %v, want %d message events",
				out, n)
		}
	}
	return out
}

// expectQuiet fails if a message event arrives within d.
func expectQuiet(t *testing.T, c *Conn, d time.Duration) {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case e, ok := <-c.Events():
			if ok && e.Type == EventMessage {
				t.Fatalf(
					"unexpected event %v",
					ev{conv: e.Message.ConversationID, seq: e.Message.Seq, resumed: e.Resumed})
			}
			if !ok {
				return
			}
		case <-timeout:
			return
		}
	}
}

// byConv splits events per conversation, keeping their order.
func byConv(evs []ev) map[string][]ev {
	out := map[string][]ev{}
	for _, e := range evs {
		out[e.conv] = append(out[e.conv], e)
	}
	return out
}

// TestSendResendsSameIDAfterDrop: the connection dies after the server got a send but
// before the ack; the client resends the same id on the next connection and Send returns
// the ack once, for a message stored once.
func TestSendResendsSameIDAfterDrop(t *testing.T) {
	cases := []struct {
		name        string
		storeFirst  bool // the server stored the message before the connection died
		wantUpgrade int32
	}{
		{
			name:        "stored then dropped",
			storeFirst:  true,
			wantUpgrade: 2,
		},
		{
			name:        "dropped before storing",
			storeFirst:  false,
			wantUpgrade: 2,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			f.addConv("c1")
			var dropped atomic.Bool
			f.set(func(f *fakeServer) {
				f.onFrame = func(fc *fakeConn, cf protocol.ClientFrame) bool {
					if cf.Type != protocol.FrameSend || dropped.Swap(true) {
						return false
					}
					if tc.storeFirst {
						f.store(cf)
					}
					fc.nc.Close()
					return true
				}
			})
			c := connect(t, newTestClient(f))
			ack, err := c.SendID(testCtx(t), "11111111-1111-1111-1111-111111111111", "c1", "hello")
			if err != nil {
				t.Fatalf(
					"Send: %v",
					err)
			}
			if ack.Seq != 1 || ack.ID != "11111111-1111-1111-1111-111111111111" || ack.ConversationID != "c1" {
				t.Errorf(
					"ack = %+v",
					ack)
			}
			if n := f.seenCount(ack.ID); n != 2 {
				t.Errorf(
					"server saw the id %d times, want 2",
					n)
			}
			if n := f.convLen("c1"); n != 1 {
				t.Errorf(
					"server stored %d messages, want 1",
					n)
			}
			if n := f.upgrades.Load(); n != tc.wantUpgrade {
				t.Errorf(
					"upgrades = %d, want %d",
					n, tc.wantUpgrade)
			}
			got := nextMessages(t, c, 1)
			if got[0].conv != "c1" || got[0].seq != 1 {
				t.Errorf(
					"events = %v, want c1/1",
					got)
			}
			expectQuiet(t, c, 100*time.Millisecond)
		})
	}
}

// TestLiveDedupAndGaps: duplicates are dropped, gaps are filled from history before the
// event that revealed them, and a conversation first seen live starts at that event.
func TestLiveDedupAndGaps(t *testing.T) {
	cases := []struct {
		name      string
		conv      string // "c1" exists at Connect (empty); others are new
		store     int    // events stored quietly after Connect
		push      []int64
		want      []ev
		wantFetch bool
	}{
		{
			name:  "duplicates dropped",
			conv:  "c1",
			store: 2,
			push:  []int64{1, 1, 2, 1, 2},
			want:  []ev{{"c1", 1, false}, {"c1", 2, false}},
		},
		{
			name:      "gap filled from history",
			conv:      "c1",
			store:     4,
			push:      []int64{1, 4},
			want:      []ev{{"c1", 1, false}, {"c1", 2, true}, {"c1", 3, true}, {"c1", 4, false}},
			wantFetch: true,
		},
		{
			name:      "late live copies of filled events dropped",
			conv:      "c1",
			store:     4,
			push:      []int64{1, 4, 3, 2, 4},
			want:      []ev{{"c1", 1, false}, {"c1", 2, true}, {"c1", 3, true}, {"c1", 4, false}},
			wantFetch: true,
		},
		{
			name:      "gap at the very start",
			conv:      "c1",
			store:     3,
			push:      []int64{3},
			want:      []ev{{"c1", 1, true}, {"c1", 2, true}, {"c1", 3, false}},
			wantFetch: true,
		},
		{
			name:      "new conversation starts at its first live event",
			conv:      "c9",
			store:     5,
			push:      []int64{3, 5},
			want:      []ev{{"c9", 3, false}, {"c9", 4, true}, {"c9", 5, false}},
			wantFetch: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			f.addConv("c1")
			c := connect(t, newTestClient(f))
			f.appendQuiet(tc.conv, tc.store)
			for _, seq := range tc.push {
				f.push(tc.conv, seq)
			}
			got := nextMessages(t, c, len(tc.want))
			if !slices.Equal(got, tc.want) {
				t.Errorf(
					"events = %v, want %v",
					got, tc.want)
			}
			expectQuiet(t, c, 100*time.Millisecond)
			if fetched := f.messagesCalls.Load() > 0; fetched != tc.wantFetch {
				t.Errorf(
					"history fetched = %v, want %v",
					fetched, tc.wantFetch)
			}
		})
	}
}

// TestGapFillFailure: when history cannot fill a gap, the live event is not delivered out
// of order; the run loop's catch-up delivers it from history once history works again. A
// conversation whose history is gone (404) delivers the live event anyway.
func TestGapFillFailure(t *testing.T) {
	cases := []struct {
		name string
		fail []int
		want []ev
	}{
		{
			name: "reader attempts fail, catch-up succeeds",
			fail: []int{500, 500, 500},
			want: []ev{{"c1", 1, false}, {"c1", 2, true}, {"c1", 3, true}},
		},
		{
			name: "first catch-up fails too",
			fail: []int{500, 503, 500, 500},
			want: []ev{{"c1", 1, false}, {"c1", 2, true}, {"c1", 3, true}},
		},
		{
			name: "history gone",
			fail: []int{404},
			want: []ev{{"c1", 1, false}, {"c1", 3, false}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			f.addConv("c1")
			c := connect(t, newTestClient(f))
			f.appendQuiet("c1", 3)
			f.set(func(f *fakeServer) { f.historyFail = tc.fail })
			f.push("c1", 1)
			f.push("c1", 3)
			got := nextMessages(t, c, len(tc.want))
			if !slices.Equal(got, tc.want) {
				t.Errorf(
					"events = %v, want %v",
					got, tc.want)
			}
			expectQuiet(t, c, 100*time.Millisecond)
			// Live delivery goes on in order afterwards.
			f.post("c1")
			if got := nextMessages(t, c, 1); got[0] != (ev{"c1", 4, false}) {
				t.Errorf(
					"next live event = %v, want c1/4",
					got)
			}
		})
	}
}

// TestHistoryNotFromSeqOne: with ResumeFromStart, a member whose visible history starts
// late (the server hides earlier events) still gets that history, oldest first.
func TestHistoryNotFromSeqOne(t *testing.T) {
	f := newFake(t)
	f.appendQuiet("c1", 300)
	f.set(func(f *fakeServer) { f.visible["c1"] = 250 })
	c := connect(t, newTestClient(f), ResumeFromStart())
	got := nextMessages(t, c, 51)
	for i, e := range got {
		if e.seq != int64(250+i) || !e.resumed {
			t.Fatalf(
				"event %d = %v, want c1/%dr",
				i, e, 250+i)
		}
	}
	expectQuiet(t, c, 100*time.Millisecond)
}

// TestResumeAfterReconnect: events stored while the client was away arrive after the
// reconnect, from history, exactly once; conversations that did not move cost nothing.
func TestResumeAfterReconnect(t *testing.T) {
	f := newFake(t)
	f.addConv("c1")
	f.appendQuiet("c0", 3) // history before Connect: not delivered (no ResumeFromStart)
	f.addConv("cq")        // quiet the whole time
	c := connect(t, newTestClient(f))

	f.post("c1")
	if got := nextMessages(t, c, 1); got[0] != (ev{"c1", 1, false}) {
		t.Fatalf(
			"first event = %v",
			got)
	}

	f.set(func(f *fakeServer) { f.rejectWS = 503 })
	f.dropAll()
	f.appendQuiet("c1", 2)
	f.appendQuiet("c0", 1)
	f.appendQuiet("c2", 2) // a conversation created while away
	f.messagesCalls.Store(0)
	f.set(func(f *fakeServer) { f.rejectWS = 0 })

	got := byConv(nextMessages(t, c, 5))
	want := map[string][]ev{
		"c0": {{"c0", 4, true}},
		"c1": {{"c1", 2, true}, {"c1", 3, true}},
		"c2": {{"c2", 1, true}, {"c2", 2, true}},
	}
	for conv, w := range want {
		if !slices.Equal(got[conv], w) {
			t.Errorf(
				"%s events = %v, want %v",
				conv, got[conv], w)
		}
	}
	expectQuiet(t, c, 100*time.Millisecond)
	if n := f.messagesCalls.Load(); n != 3 {
		t.Errorf(
			"history requests = %d, want 3 (one per moved conversation)",
			n)
	}

	// Live delivery continues seamlessly after the resume.
	f.post("c1")
	if got := nextMessages(t, c, 1); got[0] != (ev{"c1", 4, false}) {
		t.Errorf(
			"after resume = %v, want c1/4",
			got)
	}
}

// TestResumeFromStart delivers every conversation's whole history, paging past the
// server's maximum page.
func TestResumeFromStart(t *testing.T) {
	f := newFake(t)
	f.appendQuiet("c1", 450)
	f.appendQuiet("c2", 3)
	c := connect(t, newTestClient(f), ResumeFromStart())
	got := byConv(nextMessages(t, c, 453))
	for conv, n := range map[string]int{"c1": 450, "c2": 3} {
		evs := got[conv]
		if len(evs) != n {
			t.Fatalf(
				"%s: %d events, want %d",
				conv, len(evs), n)
		}
		for i, e := range evs {
			if e.seq != int64(i+1) || !e.resumed {
				t.Fatalf(
					"%s: event %d = %v, want seq %d resumed",
					conv, i, e, i+1)
			}
		}
	}
	expectQuiet(t, c, 100*time.Millisecond)
}

// TestOwnEvents: a Conn's own sends appear once in Events whether or not the server echoes
// them to the sending connection, without history fetches.
func TestOwnEvents(t *testing.T) {
	cases := []struct {
		name string
		echo bool
	}{
		{
			name: "no echo: built from the ack",
			echo: false,
		},
		{
			name: "echo: duplicate dropped",
			echo: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			f.addConv("c1")
			f.set(func(f *fakeServer) { f.echo = tc.echo })
			c := connect(t, newTestClient(f))
			ctx := testCtx(t)
			if _, err := c.Send(ctx, "c1", "one"); err != nil {
				t.Fatalf(
					"Send: %v",
					err)
			}
			if _, err := c.React(ctx, "c1", 1, "👍", false); err != nil {
				t.Fatalf(
					"React: %v",
					err)
			}
			if _, err := c.Edit(ctx, "c1", 1, "uno"); err != nil {
				t.Fatalf(
					"Edit: %v",
					err)
			}
			if _, err := c.Delete(ctx, "c1", 1); err != nil {
				t.Fatalf(
					"Delete: %v",
					err)
			}
			f.post("c1")
			var got []Event
			for range 5 {
				got = append(got, <-c.Events())
			}
			if m := got[0].Message; m == nil || m.Seq != 1 || m.Body != "one" || m.SenderID != "u1" || m.Kind != protocol.KindText {
				t.Errorf(
					"own message event = %+v",
					m)
			}
			if m := got[1].Message; m == nil || m.Seq != 2 || m.Kind != protocol.KindReaction || m.Emoji != "👍" || m.TargetSeq != 1 {
				t.Errorf(
					"own reaction event = %+v",
					m)
			}
			if m := got[2].Message; m == nil || m.Seq != 3 || m.Kind != protocol.KindEdit || m.Body != "uno" || m.TargetSeq != 1 {
				t.Errorf(
					"own edit event = %+v",
					m)
			}
			if m := got[3].Message; m == nil || m.Seq != 4 || m.Kind != protocol.KindDelete || m.TargetSeq != 1 {
				t.Errorf(
					"own delete event = %+v",
					m)
			}
			if m := got[4].Message; m == nil || m.Seq != 5 || m.SenderID != "u2" {
				t.Errorf(
					"other's event = %+v",
					m)
			}
			expectQuiet(t, c, 100*time.Millisecond)
			if n := f.messagesCalls.Load(); n != 0 {
				t.Errorf(
					"history requests = %d, want 0",
					n)
			}
		})
	}
}

// TestOwnAckOvertakesOthers: the ack of our send arrives before the live event stored just
// before it; the own event waits for it instead of fetching history.
func TestOwnAckOvertakesOthers(t *testing.T) {
	f := newFake(t)
	f.addConv("c1")
	f.set(func(f *fakeServer) {
		f.onFrame = func(fc *fakeConn, cf protocol.ClientFrame) bool {
			if cf.Type != protocol.FrameSend {
				return false
			}
			f.appendQuiet("c1", 1) // someone else's event, pushed only after our ack
			f.handleFrame(fc, cf)
			f.push("c1", 1)
			return true
		}
	})
	c := connect(t, newTestClient(f))
	ack, err := c.Send(testCtx(t), "c1", "mine")
	if err != nil || ack.Seq != 2 {
		t.Fatalf(
			"Send = %+v, %v",
			ack, err)
	}
	got := nextMessages(t, c, 2)
	if want := []ev{{"c1", 1, false}, {"c1", 2, false}}; !slices.Equal(got, want) {
		t.Errorf(
			"events = %v, want %v",
			got, want)
	}
	if n := f.messagesCalls.Load(); n != 0 {
		t.Errorf(
			"history requests = %d, want 0",
			n)
	}
}

// TestSendErrorFrames: error frames answer the request with the same id; only server-side
// failures are retried, with the same id.
func TestSendErrorFrames(t *testing.T) {
	cases := []struct {
		name     string
		codes    []string // error codes answered, in order, before acking normally
		wantCode string   // "" = success
		wantSeen int
	}{
		{
			name:     "bad request returned",
			codes:    []string{protocol.CodeBadRequest},
			wantCode: protocol.CodeBadRequest,
			wantSeen: 1,
		},
		{
			name:     "rate limited retried with the same id",
			codes:    []string{protocol.CodeRateLimited},
			wantSeen: 2,
		},
		{
			name:     "internal retried with the same id",
			codes:    []string{protocol.CodeInternal, protocol.CodeUnavailable},
			wantSeen: 3,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			f.addConv("c1")
			var n atomic.Int32
			f.set(func(f *fakeServer) {
				f.onFrame = func(fc *fakeConn, cf protocol.ClientFrame) bool {
					if cf.Type != protocol.FrameSend {
						return false
					}
					i := int(n.Add(1)) - 1
					if i >= len(tc.codes) {
						return false
					}
					fc.write(protocol.ErrorFrame{Type: protocol.FrameError, ID: cf.ID, Code: tc.codes[i], Message: "no"})
					return true
				}
			})
			c := connect(t, newTestClient(f))
			ack, err := c.SendID(testCtx(t), "22222222-2222-2222-2222-222222222222", "c1", "x")
			if got := ErrorCode(err); got != tc.wantCode {
				t.Fatalf(
					"Send error = %v, want code %q",
					err, tc.wantCode)
			}
			if tc.wantCode != "" {
				var ae *APIError
				if !errors.As(err, &ae) || ae.Status != 0 || !strings.Contains(ae.Op, "send") {
					t.Errorf(
						"error = %#v, want a WebSocket *APIError",
						err)
				}
			} else if ack.Seq != 1 {
				t.Errorf(
					"ack = %+v",
					ack)
			}
			if got := f.seenCount("22222222-2222-2222-2222-222222222222"); got != tc.wantSeen {
				t.Errorf(
					"server saw the id %d times, want %d",
					got, tc.wantSeen)
			}
		})
	}
}

// TestRateLimitedWithoutID: the server rejects a frame over its rate with an error frame
// that has no id; the Send it belonged to is resent after a while instead of waiting for an
// ack that will never come.
func TestRateLimitedWithoutID(t *testing.T) {
	f := newFake(t)
	f.addConv("c1")
	var rejected atomic.Bool
	f.set(func(f *fakeServer) {
		f.onFrame = func(fc *fakeConn, cf protocol.ClientFrame) bool {
			if cf.Type != protocol.FrameSend || rejected.Swap(true) {
				return false
			}
			fc.write(protocol.ErrorFrame{Type: protocol.FrameError, Code: protocol.CodeRateLimited, Message: "slow down"})
			return true
		}
	})
	c := connect(t, newTestClient(f), func(c *connConfig) { c.rateLimitWait = 20 * time.Millisecond })
	ack, err := c.SendID(testCtx(t), "44444444-4444-4444-4444-444444444444", "c1", "x")
	if err != nil || ack.Seq != 1 {
		t.Fatalf(
			"Send = %+v, %v",
			ack, err)
	}
	if n := f.seenCount(ack.ID); n != 2 {
		t.Errorf(
			"server saw the id %d times, want 2",
			n)
	}
	if e := <-c.Events(); e.Type != EventError || e.Error.Code != protocol.CodeRateLimited {
		t.Errorf(
			"first event = %+v, want the rate_limited error",
			e)
	}
}

// TestUnmatchedErrorFrameIsAnEvent: an error frame for no pending request reaches Events.
func TestUnmatchedErrorFrameIsAnEvent(t *testing.T) {
	f := newFake(t)
	c := connect(t, newTestClient(f))
	f.sendAll(protocol.ErrorFrame{Type: protocol.FrameError, Code: protocol.CodeBadRequest, Message: "bad frame"})
	e := <-c.Events()
	if e.Type != EventError || e.Error == nil || e.Error.Code != protocol.CodeBadRequest {
		t.Fatalf(
			"event = %+v",
			e)
	}
}

// TestHandshake401 refreshes once and retries; a refused refresh fails Connect.
func TestHandshake401(t *testing.T) {
	cases := []struct {
		name       string
		refresh    string
		wantStatus int
	}{
		{
			name:    "refresh repairs",
			refresh: "r0",
		},
		{
			name:       "refresh refused",
			refresh:    "revoked",
			wantStatus: 401,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			cl := New(f.srv.URL)
			cl.SetTokens(protocol.Tokens{AccessToken: "expired", RefreshToken: tc.refresh})
			c, err := cl.Connect(testCtx(t))
			if c != nil {
				defer c.Close()
			}
			if got := errorStatus(err); got != tc.wantStatus || (tc.wantStatus == 0 && err != nil) {
				t.Fatalf(
					"Connect error = %v, want status %d",
					err, tc.wantStatus)
			}
			if n := f.refreshCalls.Load(); n != 1 {
				t.Errorf(
					"refresh calls = %d, want 1",
					n)
			}
			if tc.wantStatus == 0 && c.Ready().UserID != "u1" {
				t.Errorf(
					"ready = %+v",
					c.Ready())
			}
		})
	}
}

// TestReconnectRefreshesAndGivesUp: an expired token at reconnect is refreshed; a revoked
// device stops the Conn with the reason.
func TestReconnectRefreshesAndGivesUp(t *testing.T) {
	f := newFake(t)
	c := connect(t, newTestClient(f))

	f.set(func(f *fakeServer) { f.access = map[string]bool{} }) // access token expired
	f.dropAll()
	waitFor(t, "reconnect with a refreshed token", func() bool { return f.upgrades.Load() == 2 })
	if n := f.refreshCalls.Load(); n != 1 {
		t.Errorf(
			"refresh calls = %d, want 1",
			n)
	}

	f.set(func(f *fakeServer) { f.access, f.refresh = map[string]bool{}, "" }) // device revoked
	f.dropAll()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Conn did not stop")
	}
	if errorStatus(c.Err()) != 401 {
		t.Errorf(
			"Err = %v, want a 401",
			c.Err())
	}
	if _, err := c.Send(testCtx(t), "c1", "x"); !errors.Is(err, ErrClosed) || errorStatus(err) != 401 {
		t.Errorf(
			"Send after stop = %v, want ErrClosed wrapping the 401",
			err)
	}
}

func TestTicket(t *testing.T) {
	f := newFake(t)
	c := connect(t, newTestClient(f), WithTicket())
	if _, err := c.Ping(testCtx(t)); err != nil {
		t.Fatalf(
			"Ping: %v",
			err)
	}
	f.mu.Lock()
	issued, left := f.tokN, len(f.tickets)
	f.mu.Unlock()
	if issued != 1 || left != 0 {
		t.Errorf(
			"tickets issued %d, unused %d; want 1, 0",
			issued, left)
	}
}

// TestGoaway reconnects after reconnect_ms and passes the frame on.
func TestGoaway(t *testing.T) {
	f := newFake(t)
	c := connect(t, newTestClient(f))
	f.sendAll(protocol.GoawayFrame{Type: protocol.FrameGoaway, ReconnectMS: 30, Reason: "drain"})
	e := <-c.Events()
	if e.Type != EventGoaway || e.Goaway.ReconnectMS != 30 {
		t.Fatalf(
			"event = %+v",
			e)
	}
	waitFor(t, "reconnect after goaway", func() bool { return f.upgrades.Load() == 2 && f.connCount() == 1 })
	if _, err := c.Ping(testCtx(t)); err != nil {
		t.Fatalf(
			"Ping after goaway: %v",
			err)
	}
}

// TestPingReceiptTypingHeartbeat checks the frames that are not acked.
func TestPingReceiptTypingHeartbeat(t *testing.T) {
	f := newFake(t)
	f.set(func(f *fakeServer) { f.heartbeat = 20 })
	c := connect(t, newTestClient(f))
	ctx := testCtx(t)
	if _, err := c.Ping(ctx); err != nil {
		t.Fatalf(
			"Ping: %v",
			err)
	}
	if err := c.Receipt(ctx, "c1", ReceiptRead, 7); err != nil {
		t.Fatalf(
			"Receipt: %v",
			err)
	}
	if err := c.Typing(ctx, "c1", true); err != nil {
		t.Fatalf(
			"Typing: %v",
			err)
	}
	waitFor(t, "receipt, typing and heartbeats", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		var receipt, typing bool
		heartbeats := 0
		for _, cf := range f.received {
			switch {
			case cf.Type == protocol.FrameReceipt:
				receipt = cf.ConversationID == "c1" && cf.Status == "read" && cf.Seq == 7
			case cf.Type == protocol.FrameTyping:
				typing = cf.State == "start"
			case cf.Type == protocol.FramePing && cf.ID == "":
				heartbeats++
			}
		}
		return receipt && typing && heartbeats >= 2
	})
}

// TestCloseStopsEverything: Close fails waiting calls, closes Events and leaves no
// goroutine of the Conn behind.
func TestCloseStopsEverything(t *testing.T) {
	f := newFake(t)
	f.addConv("c1")
	f.set(func(f *fakeServer) {
		f.onFrame = func(fc *fakeConn, cf protocol.ClientFrame) bool { return cf.Type == protocol.FrameSend } // never ack
	})
	c := connect(t, newTestClient(f))
	errc := make(chan error, 1)
	go func() {
		_, err := c.SendID(context.Background(), "33333333-3333-3333-3333-333333333333", "c1", "x")
		errc <- err
	}()
	waitFor(t, "send reaches the server", func() bool { return f.seenCount("33333333-3333-3333-3333-333333333333") == 1 })
	if err := c.Close(); err != nil {
		t.Fatalf(
			"Close: %v",
			err)
	}
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Errorf(
			"pending Send = %v, want ErrClosed",
			err)
	}
	for range c.Events() { // must be closed
	}
	if _, err := c.Send(testCtx(t), "c1", "y"); !errors.Is(err, ErrClosed) {
		t.Errorf(
			"Send after Close = %v, want ErrClosed",
			err)
	}
	_ = c.Close() // idempotent
	// A goroutine that has closed the channel its owner waits on is done, but may still be
	// on its way out when Close returns (seen under load: the reader at its return): give
	// such stragglers a moment, and fail on any that stays.
	buf := make([]byte, 1<<20)
	stacks := ""
	deadline := time.Now().Add(5 * time.Second)
	for {
		stacks = string(buf[:runtime.Stack(buf, true)])
		if !strings.Contains(stacks, "client.(*Conn)") || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if strings.Contains(stacks, "client.(*Conn)") {
		t.Errorf(
			"goroutines of the Conn still running:\n%s",
			stacks)
	}
	waitFor(t, "server sees the close", func() bool { return f.connCount() == 0 })
}

// TestConcurrentSendsSurviveDrops: many concurrent Sends over a connection that keeps
// dying, sometimes after storing a message and before acking it. Every Send returns one
// ack, every message is stored once, and Events shows the conversation exactly once, in
// order, without gaps.
func TestConcurrentSendsSurviveDrops(t *testing.T) {
	const senders, each = 8, 15
	f := newFake(t)
	f.addConv("c1")
	var frames atomic.Int32
	f.set(func(f *fakeServer) {
		f.onFrame = func(fc *fakeConn, cf protocol.ClientFrame) bool {
			if cf.Type != protocol.FrameSend {
				return false
			}
			switch n := frames.Add(1); {
			case n%7 == 0: // stored, ack lost
				f.store(cf)
				fc.nc.Close()
				return true
			case n%11 == 0: // lost before storing
				fc.nc.Close()
				return true
			}
			return false
		}
	})
	c := connect(t, newTestClient(f))
	ctx := testCtx(t)

	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		seqs []int64
	)
	for g := range senders {
		wg.Go(func() {
			for i := range each {
				ack, err := c.Send(ctx, "c1", fmt.Sprintf("%d-%d", g, i))
				if err != nil {
					t.Errorf(
						"Send %d-%d: %v",
						g, i, err)
					return
				}
				mu.Lock()
				seqs = append(seqs, ack.Seq)
				mu.Unlock()
			}
		})
	}
	got := nextMessages(t, c, senders*each)
	wg.Wait()

	slices.Sort(seqs)
	for i, s := range seqs {
		if s != int64(i+1) {
			t.Fatalf(
				"ack seqs not 1..%d: %v",
				senders*each, seqs)
		}
	}
	if n := f.convLen("c1"); n != senders*each {
		t.Errorf(
			"stored %d messages, want %d",
			n, senders*each)
	}
	for i, e := range got {
		if e.conv != "c1" || e.seq != int64(i+1) {
			t.Fatalf(
				"event %d = %v, want c1/%d (all: %v)",
				i, e, i+1, got)
		}
	}
	expectQuiet(t, c, 100*time.Millisecond)
	if f.upgrades.Load() < 2 {
		t.Errorf(
			"the test dropped no connection")
	}
}
