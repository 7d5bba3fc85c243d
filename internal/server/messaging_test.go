package server

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/parley-chat/parley/client"
	"github.com/parley-chat/parley/protocol"
)

// device is one logged-in SDK connection and what it has received.
type device struct {
	name string
	cl   *client.Client
	conn *client.Conn

	mu      sync.Mutex
	got     map[string][]protocol.Message // by conversation, in arrival order
	resumed int                           // events recovered from history rather than live
}

func (ts *testServer) connect(t *testing.T, name string, a account) *device {
	t.Helper()
	cl := client.New(ts.base)
	cl.SetTokens(a.Tokens)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := cl.Connect(ctx, client.WithEventBuffer(4096))
	if err != nil {
		t.Fatalf("%s: connect: %v", name, err)
	}
	d := &device{name: name, cl: cl, conn: conn, got: map[string][]protocol.Message{}}
	t.Cleanup(func() { conn.Close() })
	go func() {
		for ev := range conn.Events() {
			if ev.Type != client.EventMessage {
				continue
			}
			d.mu.Lock()
			d.got[ev.Message.ConversationID] = append(d.got[ev.Message.ConversationID], *ev.Message)
			if ev.Resumed {
				d.resumed++
			}
			d.mu.Unlock()
		}
	}()
	return d
}

// waitFor waits until the device holds n events of conv, and returns them.
func (d *device) waitFor(t *testing.T, conv string, n int) []protocol.Message {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		d.mu.Lock()
		got := slices.Clone(d.got[conv])
		d.mu.Unlock()
		if len(got) >= n || time.Now().After(deadline) {
			if len(got) != n {
				t.Fatalf("%s: %d events in %s, want %d", d.name, len(got), conv, n)
			}
			return got
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkSeqs fails unless ms are exactly seqs first..first+len-1 in order.
func checkSeqs(t *testing.T, who string, ms []protocol.Message, first int64) {
	t.Helper()
	for i, m := range ms {
		if m.Seq != first+int64(i) {
			t.Fatalf("%s: event %d has seq %d, want %d (no gap, no duplicate)", who, i, m.Seq, first+int64(i))
		}
	}
}

// TestThreeDevices: two users on three devices exchange direct and group messages; every
// device gets every event, live, the sender's other device included.
func TestThreeDevices(t *testing.T) {
	ts := startServer(t, nil)
	alice, bob := ts.signup("alice"), ts.signup("bob")
	alice2 := ts.login("alice")
	direct := ts.direct(alice, bob)
	group := ts.group(alice, "pair", bob) // seq 1 is its "created" event

	devs := []*device{
		ts.connect(t, "alice-phone", alice),
		ts.connect(t, "alice-laptop", alice2),
		ts.connect(t, "bob", bob),
	}
	const perDevice = 10
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, d := range devs {
		wg.Go(func() {
			for i := range perDevice {
				for _, conv := range []string{direct.ID, group.ID} {
					if _, err := d.conn.Send(ctx, conv, fmt.Sprintf("%s says %d", d.name, i)); err != nil {
						t.Errorf("%s: send: %v", d.name, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	n := perDevice * len(devs)
	var want map[string][]protocol.Message
	for _, d := range devs {
		got := map[string][]protocol.Message{
			direct.ID: d.waitFor(t, direct.ID, n),
			group.ID:  d.waitFor(t, group.ID, n),
		}
		checkSeqs(t, d.name+" direct", got[direct.ID], 1)
		checkSeqs(t, d.name+" group", got[group.ID], 2)
		if d.resumed != 0 {
			t.Errorf("%s: %d events came from history, want all live", d.name, d.resumed)
		}
		if want == nil {
			want = got
			continue
		}
		for conv := range got {
			for i := range got[conv] {
				if g, w := got[conv][i], want[conv][i]; g.ID != w.ID || g.Body != w.Body || g.SenderID != w.SenderID {
					t.Fatalf("%s sees %+v at %d, %s sees %+v", d.name, g, i, devs[0].name, w)
				}
			}
		}
	}
	// Both of alice's devices and bob's show the same per-sender counts.
	senders := map[string]int{}
	for _, m := range want[direct.ID] {
		senders[m.SenderID]++
	}
	if senders[alice.UserID] != 2*perDevice || senders[bob.UserID] != perDevice {
		t.Fatalf("messages per sender = %v", senders)
	}
}

// TestConcurrentSendersOneGroup: 50 members send at once into one group; every member ends
// with the same events, seq 1..N, no gap, no duplicate, in the same order.
func TestConcurrentSendersOneGroup(t *testing.T) {
	const senders, each = 50, 20
	ts := startServer(t, nil)
	accts := make([]account, senders)
	for i := range accts {
		accts[i] = ts.signup(fmt.Sprintf("member%02d", i))
	}
	g := ts.group(accts[0], "crowd", accts[1:]...)
	devs := make([]*device, senders)
	for i, a := range accts {
		devs[i] = ts.connect(t, a.Username, a)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := make(chan struct{})
	var wg sync.WaitGroup
	for _, d := range devs {
		wg.Go(func() {
			<-start
			for i := range each {
				if _, err := d.conn.Send(ctx, g.ID, fmt.Sprintf("%s #%d", d.name, i)); err != nil {
					t.Errorf("%s: send: %v", d.name, err)
					return
				}
			}
		})
	}
	close(start)
	wg.Wait()
	n := senders * each
	ref := devs[0].waitFor(t, g.ID, n)
	checkSeqs(t, devs[0].name, ref, 2)
	ids := map[string]bool{}
	for _, m := range ref {
		if ids[m.ID] {
			t.Fatalf("id %s twice", m.ID)
		}
		ids[m.ID] = true
	}
	resumed := 0
	for _, d := range devs[1:] {
		got := d.waitFor(t, g.ID, n)
		for i := range got {
			if got[i].Seq != ref[i].Seq || got[i].ID != ref[i].ID {
				t.Fatalf("%s: event %d = seq %d id %s; %s has seq %d id %s", d.name, i, got[i].Seq, got[i].ID, devs[0].name, ref[i].Seq, ref[i].ID)
			}
		}
		resumed += d.resumed
	}
	hist := ts.history(accts[0], g.ID, 1)
	if len(hist) != n || hist[0].Seq != 2 || hist[n-1].Seq != int64(n+1) {
		t.Fatalf("history has %d events", len(hist))
	}
	t.Logf("%d senders x %d messages: %d events to each of %d members; %d recovered from history", senders, each, n, senders, resumed)
}

// TestResendAfterDrop: a send whose connection drops before the ack is sent again with the
// same id after reconnecting, and exactly one message exists, with the seq of the ack.
func TestResendAfterDrop(t *testing.T) {
	ts := startServer(t, nil)
	alice, bob := ts.signup("alice"), ts.signup("bob")
	conv := ts.direct(alice, bob)
	const tries = 20
	for i := range tries {
		id := uuid.NewString()
		c := ts.dialRaw(alice.AccessToken)
		c.send(protocol.ClientFrame{Type: "send", ID: id, ConversationID: conv.ID, Body: fmt.Sprint("try ", i)})
		c.nc.Close() // gone before any ack could be read
		c2 := ts.dialRaw(alice.AccessToken)
		c2.send(protocol.ClientFrame{Type: "send", ID: id, ConversationID: conv.ID, Body: fmt.Sprint("try ", i)})
		ack := c2.readType(protocol.FrameAck)
		if ack.ID != id || ack.Seq != int64(i+1) {
			t.Fatalf("try %d: ack %+v, want id %s seq %d", i, ack, id, i+1)
		}
		// A third resend, on the same connection, changes nothing either.
		c2.send(protocol.ClientFrame{Type: "send", ID: id, ConversationID: conv.ID, Body: "again"})
		if again := c2.readType(protocol.FrameAck); again.Seq != ack.Seq {
			t.Fatalf("try %d: second resend got seq %d, first %d", i, again.Seq, ack.Seq)
		}
		c2.nc.Close()
	}
	hist := ts.history(bob, conv.ID, 0)
	if len(hist) != tries {
		t.Fatalf("%d messages stored for %d ids", len(hist), tries)
	}
	checkSeqs(t, "history", hist, 1)

	// The SDK does the same by itself: Send retries under one id until acked.
	d := ts.connect(t, "alice-sdk", alice)
	ack, err := d.conn.Send(context.Background(), conv.ID, "via sdk")
	if err != nil || ack.Seq != tries+1 {
		t.Fatalf("sdk send: %+v %v", ack, err)
	}
}

// TestTabsOfOneDevice: two connections with the same login (browser tabs share one device
// id) are told of each other's sends and receipts; only the sending connection is skipped.
func TestTabsOfOneDevice(t *testing.T) {
	ts := startServer(t, nil)
	alice, bob := ts.signup("alice"), ts.signup("bob")
	conv := ts.direct(alice, bob)
	tab1, tab2 := ts.dialRaw(alice.AccessToken), ts.dialRaw(alice.AccessToken)
	bobWS := ts.dialRaw(bob.AccessToken)

	tab1.send(protocol.ClientFrame{Type: protocol.FrameSend, ID: "0195f0a0-0000-7000-8000-000000000001",
		ConversationID: conv.ID, Body: "from tab 1"})
	if f := tab1.readType(protocol.FrameAck); f.Seq != 1 {
		t.Fatalf("tab 1 got %+v, want the ack of seq 1", f)
	}
	for name, c := range map[string]*rawWS{"tab 2": tab2, "bob": bobWS} {
		if f := c.readType(protocol.FrameMessage); f.Seq != 1 || f.Body != "from tab 1" {
			t.Fatalf("%s got %+v, want seq 1 from tab 1", name, f)
		}
	}

	tab1.send(protocol.ClientFrame{Type: protocol.FrameReceipt, ConversationID: conv.ID, Status: "read", Seq: 1})
	if f := tab2.readType(protocol.FrameReceipt); f.UserID != alice.UserID || f.Status != "read" || f.Seq != 1 {
		t.Fatalf("tab 2 got %+v, want alice's read receipt", f)
	}
	// The sending tab hears neither its own event nor its own receipt (presence frames may
	// come); its pong proves the connection is past both.
	tab1.send(protocol.ClientFrame{Type: protocol.FramePing})
	for f := tab1.read(); f.Type != protocol.FramePong; f = tab1.read() {
		if f.Type == protocol.FrameMessage || f.Type == protocol.FrameReceipt {
			t.Fatalf("tab 1 got its own %s: %+v", f.Type, f)
		}
	}
}

// TestCommitPacing: with a commit interval, sends that each wait for their ack are stored
// no faster than one transaction per interval, and all of them are stored, in order. (A
// lower bound on time cannot fail by the machine being slow.)
func TestCommitPacing(t *testing.T) {
	const interval = 40 * time.Millisecond
	const n = 8
	ts := startServer(t, func(c *Config) { c.Chat.CommitInterval = interval })
	alice, bob := ts.signup("alice"), ts.signup("bob")
	conv := ts.direct(alice, bob)
	c := ts.dialRaw(alice.AccessToken)
	start := time.Now()
	for i := range n {
		if ack := c.sendAck(conv.ID, fmt.Sprint("m", i)); ack.Seq != int64(i+1) {
			t.Fatalf("send %d: ack %+v", i, ack)
		}
	}
	// The first commit may start at once; each later one waits for the interval.
	if took, least := time.Since(start), (n-1)*interval; took < least {
		t.Errorf("%d acked sends took %s, less than %s: commits were not paced", n, took, least)
	}
	checkSeqs(t, "history", ts.history(bob, conv.ID, 0), 1)
}
