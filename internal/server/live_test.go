package server

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/parley-chat/parley/protocol"
)

func (ts *testServer) conversation(a account, id string) protocol.Conversation {
	ts.t.Helper()
	var body protocol.ConversationBody
	if code := ts.call("GET", "/api/v1/conversations/"+id, a.AccessToken, nil, &body); code != http.StatusOK {
		ts.t.Fatalf("GET conversation: %d", code)
	}
	return body.Conversation
}

// sendAck sends a text message on a raw connection and returns its ack.
func (c *rawWS) sendAck(conv, body string) protocol.ServerFrame {
	c.t.Helper()
	id := uuid.NewString()
	c.send(protocol.ClientFrame{Type: "send", ID: id, ConversationID: conv, Body: body})
	for {
		f := c.read()
		if f.Type == protocol.FrameError && f.ID == id {
			c.t.Fatalf("send: %s %s", f.Code, f.ErrMessage)
		}
		if f.Type == protocol.FrameAck && f.ID == id {
			return f
		}
	}
}

// TestReceiptsAndUnread: cumulative read and delivered cursors in a five-member group, with
// one member on three devices: unread counts, receipt frames to the sender, the other
// members and the reader's other devices, and never backwards.
func TestReceiptsAndUnread(t *testing.T) {
	ts := startServer(t, nil)
	var m [5]account
	for i := range m {
		m[i] = ts.signup(fmt.Sprintf("member%d", i))
	}
	g := ts.group(m[0], "five", m[1], m[2], m[3], m[4]) // seq 1: created
	phone, laptop, tablet := ts.dialRaw(m[0].AccessToken), ts.dialRaw(ts.login(m[0].Username).AccessToken), ts.dialRaw(ts.login(m[0].Username).AccessToken)
	sender := ts.dialRaw(m[1].AccessToken)
	other := ts.dialRaw(m[2].AccessToken)

	for i := range 10 {
		sender.sendAck(g.ID, fmt.Sprint("message ", i)) // seqs 2..11
	}
	// Members start having read the group's "created" event (seq 1).
	if c := ts.conversation(m[0], g.ID); c.UnreadCount != 10 || c.LastReadSeq != 1 || c.LastSeq != 11 {
		t.Fatalf("before reading: unread %d read %d last %d", c.UnreadCount, c.LastReadSeq, c.LastSeq)
	}
	// Own messages never count as unread.
	phone.sendAck(g.ID, "mine") // seq 12
	if c := ts.conversation(m[0], g.ID); c.UnreadCount != 10 {
		t.Fatalf("own message counted: unread %d", c.UnreadCount)
	}

	// Read up to 6 on the phone: the laptop and tablet, the sender and the others hear it.
	phone.send(protocol.ClientFrame{Type: "receipt", ConversationID: g.ID, Status: "read", Seq: 6})
	for name, w := range map[string]*rawWS{"laptop": laptop, "tablet": tablet, "sender": sender, "other": other} {
		f := w.readType(protocol.FrameReceipt)
		if f.ConversationID != g.ID || f.UserID != m[0].UserID || f.Status != "read" || f.Seq != 6 || f.TS == 0 {
			t.Fatalf("%s got receipt %+v", name, f)
		}
	}
	if c := ts.conversation(m[0], g.ID); c.UnreadCount != 5 || c.LastReadSeq != 6 || c.LastDeliveredSeq != 6 {
		t.Fatalf("after read 6: unread %d read %d delivered %d", c.UnreadCount, c.LastReadSeq, c.LastDeliveredSeq)
	}
	// Backwards changes nothing and tells nobody.
	laptop.send(protocol.ClientFrame{Type: "receipt", ConversationID: g.ID, Status: "read", Seq: 3})
	if f, err := tablet.tryRead(300 * time.Millisecond); err == nil {
		t.Fatalf("a backwards receipt was relayed: %+v", f)
	}
	// Delivered from another member; then the tablet reads everything.
	other.send(protocol.ClientFrame{Type: "receipt", ConversationID: g.ID, Status: "delivered", Seq: 12})
	if f := sender.readType(protocol.FrameReceipt); f.UserID != m[2].UserID || f.Status != "delivered" || f.Seq != 12 {
		t.Fatalf("delivered receipt = %+v", f)
	}
	tablet.send(protocol.ClientFrame{Type: "receipt", ConversationID: g.ID, Status: "read", Seq: 100}) // clamped to 12
	for {
		f := phone.readType(protocol.FrameReceipt)
		if f.UserID != m[0].UserID {
			continue // member 2's delivered receipt
		}
		if f.Seq != 12 || f.Status != "read" {
			t.Fatalf("phone got %+v", f)
		}
		break
	}
	if c := ts.conversation(m[0], g.ID); c.UnreadCount != 0 || c.LastReadSeq != 12 {
		t.Fatalf("after reading all: unread %d read %d", c.UnreadCount, c.LastReadSeq)
	}
	if c := ts.conversation(m[2], g.ID); c.UnreadCount != 11 || c.LastDeliveredSeq != 12 || c.LastReadSeq != 1 {
		t.Fatalf("member 2: unread %d delivered %d read %d", c.UnreadCount, c.LastDeliveredSeq, c.LastReadSeq)
	}
	// An outsider's receipt is refused.
	outsider := ts.dialRaw(ts.signup("outsider").AccessToken)
	outsider.send(protocol.ClientFrame{Type: "receipt", ConversationID: g.ID, Status: "read", Seq: 2})
	if f := outsider.readType(protocol.FrameError); f.Code != protocol.CodeForbidden {
		t.Fatalf("outsider's receipt: %+v", f)
	}
}

// TestEditDeleteReact: permissions are enforced; history and sync show the current state.
func TestEditDeleteReact(t *testing.T) {
	ts := startServer(t, nil)
	alice, bob, carol := ts.signup("alice"), ts.signup("bob"), ts.signup("carol")
	g := ts.group(alice, "edits", bob, carol) // alice admin; seq 1
	a, b := ts.dialRaw(alice.AccessToken), ts.dialRaw(bob.AccessToken)
	first := b.sendAck(g.ID, "helo")   // 2, bob's
	second := a.sendAck(g.ID, "hello") // 3, alice's
	var since protocol.SyncBody
	ts.call("GET", "/api/v1/sync", carol.AccessToken, nil, &since)

	// reply_to is kept.
	reply := protocol.ClientFrame{Type: "send", ID: uuid.NewString(), ConversationID: g.ID, Body: "re", ReplyTo: first.Seq}
	b.send(reply)
	replyAck := b.readType(protocol.FrameAck) // 4

	frames := []struct {
		name string
		by   *rawWS
		f    protocol.ClientFrame
		code string // "" = ack
	}{
		{"alice cannot edit bob's", a, protocol.ClientFrame{Type: "edit", ConversationID: g.ID, TargetSeq: first.Seq, Body: "x"}, protocol.CodeForbidden},
		{"bob edits his own", b, protocol.ClientFrame{Type: "edit", ConversationID: g.ID, TargetSeq: first.Seq, Body: "hello!"}, ""},
		{"bob cannot delete alice's", b, protocol.ClientFrame{Type: "delete", ConversationID: g.ID, TargetSeq: second.Seq}, protocol.CodeForbidden},
		{"edit of a missing message", b, protocol.ClientFrame{Type: "edit", ConversationID: g.ID, TargetSeq: 99, Body: "x"}, protocol.CodeNotFound},
		{"bob reacts", b, protocol.ClientFrame{Type: "react", ConversationID: g.ID, TargetSeq: second.Seq, Emoji: "👍"}, ""},
		{"alice reacts", a, protocol.ClientFrame{Type: "react", ConversationID: g.ID, TargetSeq: second.Seq, Emoji: "👍"}, ""},
		{"alice reacts again", a, protocol.ClientFrame{Type: "react", ConversationID: g.ID, TargetSeq: second.Seq, Emoji: "🎉"}, ""},
		{"alice takes one back", a, protocol.ClientFrame{Type: "react", ConversationID: g.ID, TargetSeq: second.Seq, Emoji: "🎉", Remove: true}, ""},
		{"react without emoji", a, protocol.ClientFrame{Type: "react", ConversationID: g.ID, TargetSeq: second.Seq}, protocol.CodeBadRequest},
		{"admin deletes bob's reply", a, protocol.ClientFrame{Type: "delete", ConversationID: g.ID, TargetSeq: replyAck.Seq}, ""},
		{"edit of a deleted message", b, protocol.ClientFrame{Type: "edit", ConversationID: g.ID, TargetSeq: replyAck.Seq, Body: "x"}, protocol.CodeNotFound},
		{"reply to a seq not yet there", b, protocol.ClientFrame{Type: "send", ConversationID: g.ID, Body: "re", ReplyTo: 999}, protocol.CodeNotFound},
		{"attachments not an array", b, protocol.ClientFrame{Type: "send", ConversationID: g.ID, Body: "x", Attachments: []byte(`{"a":1}`)}, protocol.CodeBadRequest},
	}
	for _, tt := range frames {
		tt.f.ID = uuid.NewString()
		tt.by.send(tt.f)
		var f protocol.ServerFrame
		for f.ID != tt.f.ID {
			f = tt.by.read()
		}
		if tt.code == "" && f.Type != protocol.FrameAck {
			t.Fatalf("%s: %s %s, want ack", tt.name, f.Code, f.ErrMessage)
		}
		if tt.code != "" && (f.Type != protocol.FrameError || f.Code != tt.code) {
			t.Fatalf("%s: %+v, want error %s", tt.name, f, tt.code)
		}
	}

	hist := ts.history(carol, g.ID, 0)
	bySeq := map[int64]protocol.Message{}
	for _, m := range hist {
		bySeq[m.Seq] = m
	}
	if m := bySeq[first.Seq]; m.Body != "hello!" || m.EditedTS == 0 {
		t.Errorf("edited message in history: %+v", m)
	}
	if m := bySeq[second.Seq]; len(m.Reactions) != 1 || m.Reactions[0].Emoji != "👍" || m.Reactions[0].Count != 2 || len(m.Reactions[0].UserIDs) != 2 {
		t.Errorf("reactions in history: %+v", m.Reactions)
	}
	if m := bySeq[replyAck.Seq]; !m.Deleted || m.Body != "" || m.ReplyTo != first.Seq {
		t.Errorf("deleted reply in history: %+v", m)
	}
	kinds := map[string]int{}
	for _, m := range hist {
		kinds[m.Kind]++
	}
	if kinds[protocol.KindEdit] != 1 || kinds[protocol.KindDelete] != 1 || kinds[protocol.KindReaction] != 4 {
		t.Errorf("event kinds in history: %v", kinds)
	}
	for i, m := range hist {
		if m.Seq != int64(i+1) {
			t.Fatalf("history seqs not gapless: %d at %d", m.Seq, i)
		}
	}
	var sync protocol.SyncBody
	ts.call("GET", "/api/v1/sync?since="+since.NextSince, carol.AccessToken, nil, &sync)
	if len(sync.Conversations) != 1 || sync.Conversations[0].LastSeq != int64(len(hist)) {
		t.Fatalf("sync after edits: %+v", sync.Conversations)
	}
	// The last text message is the deleted reply: a tombstone without its body.
	if lm := sync.Conversations[0].LastMessage; lm == nil || lm.Seq != replyAck.Seq || !lm.Deleted || lm.Body != "" {
		t.Fatalf("last message in sync: %+v", lm)
	}
}

// TestTyping: floods are throttled, indicators end by themselves, and typing never reaches
// history or sync.
func TestTyping(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		c.Chat.TypingTTL = 400 * time.Millisecond
		c.Chat.TypingRefresh = 300 * time.Millisecond
	})
	alice, bob := ts.signup("alice"), ts.signup("bob")
	conv := ts.direct(alice, bob)
	var before protocol.SyncBody
	ts.call("GET", "/api/v1/sync", bob.AccessToken, nil, &before)
	a, b := ts.dialRaw(alice.AccessToken), ts.dialRaw(bob.AccessToken)

	for range 50 {
		a.send(protocol.ClientFrame{Type: "typing", ConversationID: conv.ID, State: "start"})
	}
	if f := b.readType(protocol.FrameTyping); f.UserID != alice.UserID || f.State != "start" || f.ConversationID != conv.ID {
		t.Fatalf("typing frame %+v", f)
	}
	// No more starts for the flood; then, with no refresh, the server ends it.
	f := b.readType(protocol.FrameTyping)
	if f.State != "stop" {
		t.Fatalf("after a flood of 50 starts, bob got another %q; want the flood throttled to one start, then stop", f.State)
	}
	// An explicit stop after a start.
	a.send(protocol.ClientFrame{Type: "typing", ConversationID: conv.ID, State: "start"})
	a.send(protocol.ClientFrame{Type: "typing", ConversationID: conv.ID, State: "stop"})
	if f := b.readType(protocol.FrameTyping); f.State != "start" {
		t.Fatalf("got %+v", f)
	}
	if f := b.readType(protocol.FrameTyping); f.State != "stop" {
		t.Fatalf("got %+v", f)
	}
	// Bad state and non-members get errors.
	a.send(protocol.ClientFrame{Type: "typing", ConversationID: conv.ID, State: "thinking"})
	if f := a.readType(protocol.FrameError); f.Code != protocol.CodeBadRequest {
		t.Fatalf("bad state: %+v", f)
	}
	c := ts.dialRaw(ts.signup("carol").AccessToken)
	c.send(protocol.ClientFrame{Type: "typing", ConversationID: conv.ID, State: "start"})
	if f := c.readType(protocol.FrameError); f.Code != protocol.CodeForbidden {
		t.Fatalf("outsider typing: %+v", f)
	}

	if h := ts.history(bob, conv.ID, 0); len(h) != 0 {
		t.Fatalf("typing in history: %+v", h)
	}
	var after protocol.SyncBody
	ts.call("GET", "/api/v1/sync?since="+before.NextSince, bob.AccessToken, nil, &after)
	if len(after.Conversations) != 0 {
		t.Fatalf("typing changed sync: %+v", after.Conversations)
	}
}
