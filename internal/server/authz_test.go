package server

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/parley-chat/parley/internal/api"
	"github.com/parley-chat/parley/internal/auth"
	"github.com/parley-chat/parley/internal/gateway"
	"github.com/parley-chat/parley/protocol"
)

// The actors of the authorization matrix. In each fresh group (world.group) the admin
// created it, the author and the member are members (the author wrote its one message),
// the removed member was removed, and the stranger never belonged.
const (
	admin     = "admin"
	author    = "author"
	member    = "member"
	stranger  = "stranger"
	removed   = "removed"
	loggedOut = "logged-out"
	expired   = "expired"
)

var actors = []string{admin, author, member, stranger, removed, loggedOut, expired}

// world holds the accounts of the matrix and makes a fresh group per check, so that checks
// that change a group (rename, add, remove) do not depend on one another.
type world struct {
	ts     *testServer
	acct   map[string]account // admin, author, member, stranger, removed
	tokens map[string]string  // every actor's access token
	zed    account            // a user outside every group: a target for contacts and adds
}

func newWorld(t *testing.T, ts *testServer) *world {
	w := &world{ts: ts, acct: map[string]account{}, tokens: map[string]string{}}
	for _, a := range []string{admin, author, member, stranger, removed} {
		w.acct[a] = ts.signup(strings.ReplaceAll(a, "-", ""))
		w.tokens[a] = w.acct[a].AccessToken
	}
	w.zed = ts.signup("zed")
	out := ts.signup("leaver")
	if code := ts.call("POST", "/api/v1/auth/logout", out.AccessToken, nil, nil); code != 204 {
		t.Fatalf("logout: %d", code)
	}
	w.tokens[loggedOut] = out.AccessToken
	// An access token that was valid and has expired: signed with the server's key, an hour
	// in the past.
	key, err := os.ReadFile(filepath.Join(ts.Server.cfg.Data, "auth.key"))
	if err != nil {
		t.Fatal(err)
	}
	old, err := auth.NewTokens(key, 15*time.Minute, func() time.Time { return time.Now().Add(-time.Hour) })
	if err != nil {
		t.Fatal(err)
	}
	ex := ts.signup("expiring")
	if w.tokens[expired], _, err = old.IssueAccess(ex.UserID, ex.DeviceID); err != nil {
		t.Fatal(err)
	}
	return w
}

// group makes a fresh group as described at the top, and returns it with the seq of the
// author's message.
func (w *world) group(t *testing.T) (protocol.Conversation, int64) {
	ts := w.ts
	g := ts.group(w.acct[admin], "matrix", w.acct[author], w.acct[member], w.acct[removed])
	if code := ts.call("DELETE", "/api/v1/conversations/"+g.ID+"/members/"+w.acct[removed].UserID, w.tokens[admin], nil, nil); code != 204 {
		t.Fatalf("remove member: %d", code)
	}
	c := ts.dialRaw(w.tokens[author])
	id := uuid.NewString()
	c.send(protocol.ClientFrame{Type: "send", ID: id, ConversationID: g.ID, Body: "the author's message"})
	ack := c.readType(protocol.FrameAck)
	c.nc.Close()
	return g, ack.Seq
}

// allowed maps actors to the status they get; anyone not listed gets the row's other.
type allowed map[string]int

// TestAuthorizationMatrix checks every REST route and every client frame type against every
// actor: each gets exactly what it may. A route or frame type without a row fails the test.
func TestAuthorizationMatrix(t *testing.T) {
	ts := startServer(t, nil)
	w := newWorld(t, ts)
	everyone := allowed{admin: 0, author: 0, member: 0, stranger: 0, removed: 0}
	with := func(m allowed, status int) allowed {
		out := allowed{}
		for k := range m {
			out[k] = status
		}
		return out
	}
	members := allowed{admin: 0, author: 0, member: 0}

	rest := []struct {
		pattern string
		// req builds the request for one actor's check: path and body.
		req   func(t *testing.T, actor string) (string, any)
		allow allowed
		other int // the status of every actor not in allow (401 is implied for logged-out and expired)
	}{
		{"POST /api/v1/auth/logout", func(*testing.T, string) (string, any) { return "/api/v1/auth/logout", nil }, with(everyone, 204), 0},
		{"GET /api/v1/me", path("/api/v1/me"), with(everyone, 200), 0},
		{"PATCH /api/v1/me", func(*testing.T, string) (string, any) {
			return "/api/v1/me", protocol.PatchMeRequest{DisplayName: ptr("Someone")}
		}, with(everyone, 200), 0},
		{"GET /api/v1/users/{id}", path("/api/v1/users/" + w.zed.UserID), with(everyone, 200), 0},
		{"GET /api/v1/users", path("/api/v1/users?prefix=z"), with(everyone, 200), 0},
		{"PUT /api/v1/contacts/{user_id}", path("/api/v1/contacts/" + w.zed.UserID), with(everyone, 204), 0},
		{"DELETE /api/v1/contacts/{user_id}", path("/api/v1/contacts/" + w.zed.UserID), with(everyone, 204), 0},
		{"GET /api/v1/contacts", path("/api/v1/contacts"), with(everyone, 200), 0},
		{"POST /api/v1/conversations", func(*testing.T, string) (string, any) {
			return "/api/v1/conversations", protocol.CreateConversationRequest{Type: protocol.Group, Name: "own", MemberIDs: []string{w.zed.UserID}}
		}, with(everyone, 201), 0},
		{"GET /api/v1/conversations", path("/api/v1/conversations"), with(everyone, 200), 0},
		{"GET /api/v1/conversations/{id}", func(t *testing.T, _ string) (string, any) {
			g, _ := w.group(t)
			return "/api/v1/conversations/" + g.ID, nil
		}, with(members, 200), 404},
		{"PATCH /api/v1/conversations/{id}", func(t *testing.T, _ string) (string, any) {
			g, _ := w.group(t)
			return "/api/v1/conversations/" + g.ID, protocol.PatchConversationRequest{Name: ptr("renamed")}
		}, allowed{admin: 200, author: 403, member: 403}, 404},
		{"POST /api/v1/conversations/{id}/members", func(t *testing.T, _ string) (string, any) {
			g, _ := w.group(t)
			return "/api/v1/conversations/" + g.ID + "/members", protocol.AddMembersRequest{UserIDs: []string{w.zed.UserID}}
		}, allowed{admin: 200, author: 403, member: 403}, 404},
		{"DELETE /api/v1/conversations/{id}/members/{user_id}", func(t *testing.T, _ string) (string, any) {
			g, _ := w.group(t) // the member is the one removed: by the admin, or leaving
			return "/api/v1/conversations/" + g.ID + "/members/" + w.acct[member].UserID, nil
		}, allowed{admin: 204, author: 403, member: 204}, 404},
		{"GET /api/v1/conversations/{id}/messages", func(t *testing.T, _ string) (string, any) {
			g, _ := w.group(t)
			return "/api/v1/conversations/" + g.ID + "/messages", nil
		}, with(members, 200), 404},
		{"GET /api/v1/sync", path("/api/v1/sync"), with(everyone, 200), 0},
		{"POST /api/v1/ws/ticket", path("/api/v1/ws/ticket"), with(everyone, 200), 0},
		{"GET /api/v1/presence", path("/api/v1/presence?user_ids=" + w.zed.UserID), with(everyone, 200), 0},
	}

	var covered []string
	for _, row := range rest {
		covered = append(covered, row.pattern)
		method, _, _ := strings.Cut(row.pattern, " ")
		t.Run(row.pattern, func(t *testing.T) {
			for _, actor := range actors {
				want, ok := row.allow[actor]
				if !ok {
					want = row.other
				}
				if actor == loggedOut || actor == expired {
					want = 401
				}
				token := w.tokens[actor]
				if row.pattern == "POST /api/v1/auth/logout" && want == 204 {
					token = ts.login(w.acct[actor].Username).AccessToken // a device of its own to log out
				}
				p, body := row.req(t, actor)
				var eb protocol.ErrorBody
				if got := ts.call(method, p, token, body, &eb); got != want {
					t.Errorf("%s: %d %+v, want %d", actor, got, eb.Error, want)
				}
			}
		})
	}
	public := []string{"POST /api/v1/auth/signup", "POST /api/v1/auth/login", "POST /api/v1/auth/refresh"}
	for _, p := range api.Patterns() {
		if !slices.Contains(covered, p) && !slices.Contains(public, p) {
			t.Errorf("route %s has no row in the authorization matrix", p)
		}
	}

	// The WebSocket: who may connect, then what each connected actor may send.
	t.Run("GET /api/v1/ws", func(t *testing.T) {
		for _, actor := range actors {
			want := 101
			if actor == loggedOut || actor == expired {
				want = 401
			}
			if got, e := ts.handshake(w.tokens[actor], "", true); got != want {
				t.Errorf("%s: %d %+v, want %d", actor, got, e, want)
			}
		}
	})
	frames := []struct {
		typ string
		// frame builds the frame for a fresh group and the author's message in it.
		frame func(g protocol.Conversation, seq int64) protocol.ClientFrame
		// allow lists actors whose frame succeeds; the others get forbid.
		allow  []string
		forbid string
	}{
		{protocol.FrameSend, func(g protocol.Conversation, _ int64) protocol.ClientFrame {
			return protocol.ClientFrame{Type: "send", ConversationID: g.ID, Body: "hi"}
		}, []string{admin, author, member}, protocol.CodeForbidden},
		{protocol.FrameEdit, func(g protocol.Conversation, seq int64) protocol.ClientFrame {
			return protocol.ClientFrame{Type: "edit", ConversationID: g.ID, TargetSeq: seq, Body: "changed"}
		}, []string{author}, protocol.CodeForbidden},
		{protocol.FrameDelete, func(g protocol.Conversation, seq int64) protocol.ClientFrame {
			return protocol.ClientFrame{Type: "delete", ConversationID: g.ID, TargetSeq: seq}
		}, []string{admin, author}, protocol.CodeForbidden},
		{protocol.FrameReact, func(g protocol.Conversation, seq int64) protocol.ClientFrame {
			return protocol.ClientFrame{Type: "react", ConversationID: g.ID, TargetSeq: seq, Emoji: "👍"}
		}, []string{admin, author, member}, protocol.CodeForbidden},
		{protocol.FrameReceipt, func(g protocol.Conversation, seq int64) protocol.ClientFrame {
			return protocol.ClientFrame{Type: "receipt", ConversationID: g.ID, Status: "read", Seq: seq}
		}, []string{admin, author, member}, protocol.CodeForbidden},
		{protocol.FrameTyping, func(g protocol.Conversation, _ int64) protocol.ClientFrame {
			return protocol.ClientFrame{Type: "typing", ConversationID: g.ID, State: "start"}
		}, []string{admin, author, member}, protocol.CodeForbidden},
		{protocol.FramePing, func(protocol.Conversation, int64) protocol.ClientFrame {
			return protocol.ClientFrame{Type: "ping"}
		}, []string{admin, author, member, stranger, removed}, ""},
	}
	var coveredFrames []string
	for _, row := range frames {
		coveredFrames = append(coveredFrames, row.typ)
		t.Run("frame "+row.typ, func(t *testing.T) {
			for _, actor := range []string{admin, author, member, stranger, removed} {
				g, seq := w.group(t)
				c := ts.dialRaw(w.tokens[actor])
				f := row.frame(g, seq)
				f.ID = uuid.NewString()
				c.send(f)
				got := answerTo(t, c, f)
				want := "ok"
				if !slices.Contains(row.allow, actor) {
					want = row.forbid
				}
				if got != want {
					t.Errorf("%s: %s, want %s", actor, got, want)
				}
				c.nc.Close()
			}
		})
	}
	for _, typ := range gateway.FrameTypes() {
		if !slices.Contains(coveredFrames, typ) {
			t.Errorf("frame type %s has no row in the authorization matrix", typ)
		}
	}
}

// answerTo returns what the server made of frame f: "ok" for an ack, a pong, or no answer
// at all (receipts and typing are not acked), else the error code.
func answerTo(t *testing.T, c *rawWS, f protocol.ClientFrame) string {
	t.Helper()
	switch f.Type {
	case protocol.FrameReceipt, protocol.FrameTyping:
		// Silence is success: an error, if any, comes within moments (receipts are checked
		// in batches, apart from the frame).
		deadline := time.Now().Add(500 * time.Millisecond)
		for {
			r, err := c.tryRead(time.Until(deadline))
			if err != nil {
				return "ok"
			}
			if r.Type == protocol.FrameError && r.ID == f.ID {
				return r.Code
			}
		}
	}
	for {
		r := c.read()
		switch {
		case r.Type == protocol.FrameError && r.ID == f.ID:
			return r.Code
		case (r.Type == protocol.FrameAck || r.Type == protocol.FramePong) && r.ID == f.ID:
			return "ok"
		}
	}
}

func path(p string) func(*testing.T, string) (string, any) {
	return func(*testing.T, string) (string, any) { return p, nil }
}
