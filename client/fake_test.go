package client

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/parley-chat/parley/protocol"
)

// fakeServer is a tiny in-memory Parley server on a real 127.0.0.1 socket: enough of the
// REST API (refresh, me, sync, messages, ticket) and of the WebSocket (ready, send/edit/
// delete/react with idempotent ids, ping) to drive the client, plus knobs to misbehave.
type fakeServer struct {
	srv *httptest.Server

	mu        sync.Mutex
	userID    string
	access    map[string]bool // valid access tokens
	refresh   string          // the one valid refresh token
	tokN      int
	tickets   map[string]bool
	convs     map[string]*fakeConv
	changes   int64            // sync token: bumped on every stored event
	stored    map[string]int64 // client id → seq, for idempotent resends
	conns     map[*fakeConn]struct{}
	echo      bool // push the sender's own events back to its connection
	rejectWS  int  // answer handshakes with this status while non-zero
	onFrame   func(fc *fakeConn, f protocol.ClientFrame) bool
	seen      map[string]int // frames received, by id
	received  []protocol.ClientFrame
	heartbeat int64
	// refreshGate, if set, holds refresh answers until it is closed.
	refreshGate chan struct{}
	// historyFail lists HTTP statuses for the next history requests to fail with.
	historyFail []int
	// visibleFrom hides a conversation's events below that seq from history.
	visible map[string]int64

	refreshCalls  atomic.Int32
	upgrades      atomic.Int32
	messagesCalls atomic.Int32
	syncCalls     atomic.Int32
}

type fakeConv struct {
	msgs    []protocol.Message
	changed int64
}

type fakeConn struct {
	srv *fakeServer
	nc  net.Conn
	wmu sync.Mutex
}

func newFake(t testing.TB) *fakeServer {
	t.Helper()
	f := &fakeServer{
		userID:    "u1",
		access:    map[string]bool{"a0": true},
		refresh:   "r0",
		tickets:   map[string]bool{},
		convs:     map[string]*fakeConv{},
		stored:    map[string]int64{},
		conns:     map[*fakeConn]struct{}{},
		seen:      map[string]int{},
		heartbeat: 1000,
		visible:   map[string]int64{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/auth/refresh", f.handleRefresh)
	mux.HandleFunc("GET /api/v1/me", f.authed(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, protocol.UserBody{User: protocol.User{ID: f.userID, Username: "alice"}})
	}))
	mux.HandleFunc("GET /api/v1/sync", f.authed(f.handleSync))
	mux.HandleFunc("GET /api/v1/conversations/{id}/messages", f.authed(f.handleMessages))
	mux.HandleFunc("POST /api/v1/ws/ticket", f.authed(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.tokN++
		tk := "t" + strconv.Itoa(f.tokN)
		f.tickets[tk] = true
		f.mu.Unlock()
		writeJSON(w, 200, protocol.TicketBody{Ticket: tk, ExpiresIn: 30})
	}))
	mux.HandleFunc("GET /api/v1/ws", f.handleWS)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.close)
	return f
}

// close ends every WebSocket (their handlers are outstanding requests) and the server.
func (f *fakeServer) close() {
	f.dropAll()
	f.srv.Close()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, protocol.ErrorBody{Error: protocol.Error{Code: code, Message: msg}})
}

func (f *fakeServer) tokenOK(r *http.Request) bool {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	f.mu.Lock()
	defer f.mu.Unlock()
	return ok && f.access[tok]
}

func (f *fakeServer) authed(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !f.tokenOK(r) {
			writeErr(w, 401, protocol.CodeUnauthorized, "bad token")
			return
		}
		h(w, r)
	}
}

func (f *fakeServer) handleRefresh(w http.ResponseWriter, r *http.Request) {
	f.refreshCalls.Add(1)
	time.Sleep(20 * time.Millisecond) // widen the window for concurrent refreshes
	f.mu.Lock()
	gate := f.refreshGate
	f.mu.Unlock()
	if gate != nil {
		<-gate
	}
	var req protocol.RefreshRequest
	_ = json.NewDecoder(r.Body).Decode(&req)
	f.mu.Lock()
	defer f.mu.Unlock()
	if req.RefreshToken == "" || req.RefreshToken != f.refresh {
		writeErr(w, 401, protocol.CodeUnauthorized, "refresh token revoked")
		return
	}
	f.tokN++
	n := strconv.Itoa(f.tokN)
	f.access = map[string]bool{"a" + n: true} // old access tokens stop working too
	f.refresh = "r" + n
	writeJSON(w, 200, protocol.Tokens{AccessToken: "a" + n, RefreshToken: "r" + n, ExpiresIn: 900})
}

func (f *fakeServer) handleSync(w http.ResponseWriter, r *http.Request) {
	f.syncCalls.Add(1)
	since, _ := strconv.ParseInt(r.URL.Query().Get("since"), 10, 64)
	f.mu.Lock()
	defer f.mu.Unlock()
	out := protocol.SyncBody{Conversations: []protocol.Conversation{}, NextSince: strconv.FormatInt(f.changes, 10)}
	for id, c := range f.convs {
		if c.changed > since || since == 0 {
			out.Conversations = append(out.Conversations, protocol.Conversation{ID: id, Type: protocol.Group, LastSeq: int64(len(c.msgs))})
		}
	}
	writeJSON(w, 200, out)
}

// handleMessages pages like the store contract: after < seq < before, ascending, the
// newest page when there is no after bound.
func (f *fakeServer) handleMessages(w http.ResponseWriter, r *http.Request) {
	f.messagesCalls.Add(1)
	q := r.URL.Query()
	before, _ := strconv.ParseInt(q.Get("before"), 10, 64)
	after, _ := strconv.ParseInt(q.Get("after"), 10, 64)
	limit, _ := strconv.Atoi(q.Get("limit"))
	if limit <= 0 {
		limit = 50
	}
	limit = min(limit, 200)
	f.mu.Lock()
	if len(f.historyFail) > 0 {
		status := f.historyFail[0]
		f.historyFail = f.historyFail[1:]
		f.mu.Unlock()
		writeErr(w, status, codeForStatus(status), "history says no")
		return
	}
	c := f.convs[r.PathValue("id")]
	from := f.visible[r.PathValue("id")]
	var in []protocol.Message
	if c != nil {
		for _, m := range c.msgs {
			if m.Seq > after && (before == 0 || m.Seq < before) && m.Seq >= from {
				in = append(in, m)
			}
		}
	}
	f.mu.Unlock()
	if c == nil {
		writeErr(w, 404, protocol.CodeNotFound, "no such conversation")
		return
	}
	more := len(in) > limit
	switch {
	case more && after > 0:
		in = in[:limit]
	case more:
		in = in[len(in)-limit:]
	}
	if in == nil {
		in = []protocol.Message{}
	}
	writeJSON(w, 200, protocol.MessagesBody{Messages: in, HasMore: more})
}

func (f *fakeServer) handleWS(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	reject := f.rejectWS
	tk := r.URL.Query().Get("ticket")
	ticketOK := f.tickets[tk]
	delete(f.tickets, tk)
	f.mu.Unlock()
	if reject != 0 {
		writeErr(w, reject, codeForStatus(reject), "not now")
		return
	}
	if !ticketOK && !f.tokenOK(r) {
		writeErr(w, 401, protocol.CodeUnauthorized, "bad token")
		return
	}
	nc, rw, _, err := ws.UpgradeHTTP(r, w)
	if err != nil {
		return
	}
	f.upgrades.Add(1)
	fc := &fakeConn{srv: f, nc: nc}
	f.mu.Lock()
	f.conns[fc] = struct{}{}
	hb := f.heartbeat
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.conns, fc)
		f.mu.Unlock()
		nc.Close()
	}()
	fc.write(protocol.ReadyFrame{Type: protocol.FrameReady, UserID: f.userID, DeviceID: "d1", HeartbeatMS: hb})
	rwc := struct {
		io.Reader
		io.Writer
	}{rw.Reader, fc}
	for {
		data, op, err := wsutil.ReadClientData(rwc)
		if err != nil {
			return
		}
		if op != ws.OpText {
			continue
		}
		var cf protocol.ClientFrame
		if err := json.Unmarshal(data, &cf); err != nil {
			fc.write(protocol.ErrorFrame{Type: protocol.FrameError, Code: protocol.CodeBadRequest, Message: err.Error()})
			continue
		}
		f.mu.Lock()
		f.seen[cf.ID]++
		f.received = append(f.received, cf)
		hook := f.onFrame
		f.mu.Unlock()
		if hook != nil && hook(fc, cf) {
			continue
		}
		f.handleFrame(fc, cf)
	}
}

// Write writes raw bytes (control frame answers of wsutil) under the connection's lock.
func (fc *fakeConn) Write(p []byte) (int, error) {
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	return fc.nc.Write(p)
}

func (fc *fakeConn) write(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	_ = wsutil.WriteServerText(fc.nc, b)
}

// handleFrame is the well-behaved server.
func (f *fakeServer) handleFrame(fc *fakeConn, cf protocol.ClientFrame) {
	switch cf.Type {
	case protocol.FrameSend, protocol.FrameEdit, protocol.FrameDelete, protocol.FrameReact:
		m, _ := f.store(cf)
		fc.write(protocol.AckFrame{Type: protocol.FrameAck, ID: cf.ID, ConversationID: m.ConversationID, Seq: m.Seq, TS: m.TS})
	case protocol.FramePing:
		fc.write(protocol.PongFrame{Type: protocol.FramePong, ID: cf.ID})
	}
}

// store appends the event a client frame asks for, once per id, and with echo pushes it
// live (every connection in these tests is the sender's). It returns the stored event and
// whether it is new.
func (f *fakeServer) store(cf protocol.ClientFrame) (protocol.Message, bool) {
	f.mu.Lock()
	c := f.convs[cf.ConversationID]
	if c == nil {
		c = &fakeConv{}
		f.convs[cf.ConversationID] = c
	}
	if seq, dup := f.stored[cf.ID]; dup {
		m := c.msgs[seq-1]
		f.mu.Unlock()
		return m, false
	}
	kind := map[string]string{protocol.FrameSend: protocol.KindText, protocol.FrameEdit: protocol.KindEdit,
		protocol.FrameDelete: protocol.KindDelete, protocol.FrameReact: protocol.KindReaction}[cf.Type]
	m := f.appendLocked(cf.ConversationID, protocol.Message{ID: cf.ID, SenderID: f.userID, Kind: kind, Body: cf.Body,
		TargetSeq: cf.TargetSeq, Emoji: cf.Emoji, Remove: cf.Remove})
	f.stored[cf.ID] = m.Seq
	conns := f.connsLocked()
	echo := f.echo
	f.mu.Unlock()
	if echo { // every connection in these tests is the sender's
		f.pushTo(conns, m)
	}
	return m, true
}

func (f *fakeServer) connsLocked() []*fakeConn {
	out := make([]*fakeConn, 0, len(f.conns))
	for fc := range f.conns {
		out = append(out, fc)
	}
	return out
}

// pushTo sends m live to conns.
func (f *fakeServer) pushTo(conns []*fakeConn, m protocol.Message) {
	for _, fc := range conns {
		fc.write(protocol.MessageFrame{Type: protocol.FrameMessage, Message: m})
	}
}

func (f *fakeServer) appendLocked(convID string, m protocol.Message) protocol.Message {
	c := f.convs[convID]
	if c == nil {
		c = &fakeConv{}
		f.convs[convID] = c
	}
	f.changes++
	c.changed = f.changes
	m.ConversationID = convID
	m.Seq = int64(len(c.msgs)) + 1
	m.TS = time.Now().UnixMilli()
	if m.Kind == "" {
		m.Kind = protocol.KindText
	}
	c.msgs = append(c.msgs, m)
	return m
}

// addConv creates an empty conversation.
func (f *fakeServer) addConv(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.convs[id] == nil {
		f.convs[id] = &fakeConv{}
		f.changes++
		f.convs[id].changed = f.changes
	}
}

// appendQuiet stores n events from another user without pushing them.
func (f *fakeServer) appendQuiet(convID string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for range n {
		f.appendLocked(convID, protocol.Message{ID: fmt.Sprintf("x%d", f.changes), SenderID: "u2", Body: "hi"})
	}
}

// post stores one event from another user and pushes it to every connection.
func (f *fakeServer) post(convID string) protocol.Message {
	f.mu.Lock()
	m := f.appendLocked(convID, protocol.Message{ID: fmt.Sprintf("x%d", f.changes), SenderID: "u2", Body: "hi"})
	conns := f.connsLocked()
	f.mu.Unlock()
	f.pushTo(conns, m)
	return m
}

// push sends the stored event seq of convID again, live, to every connection.
func (f *fakeServer) push(convID string, seq int64) {
	f.mu.Lock()
	m := f.convs[convID].msgs[seq-1]
	conns := f.connsLocked()
	f.mu.Unlock()
	f.pushTo(conns, m)
}

// sendAll writes a frame to every connection.
func (f *fakeServer) sendAll(v any) {
	f.mu.Lock()
	conns := f.connsLocked()
	f.mu.Unlock()
	for _, fc := range conns {
		fc.write(v)
	}
}

// dropAll closes every WebSocket abruptly.
func (f *fakeServer) dropAll() {
	f.mu.Lock()
	conns := f.connsLocked()
	f.mu.Unlock()
	for _, fc := range conns {
		fc.nc.Close()
	}
}

func (f *fakeServer) set(fn func(f *fakeServer)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeServer) seenCount(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seen[id]
}

func (f *fakeServer) convLen(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := f.convs[id]; c != nil {
		return len(c.msgs)
	}
	return 0
}

func (f *fakeServer) connCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.conns)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
