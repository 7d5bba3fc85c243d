package server

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-chat/parley/client"
)

// proxy is a TCP relay in front of the server that the test can unplug: cut closes every
// relayed connection and refuses new ones until restore, like a device losing its network.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]bool
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.relay(c)
		}
	}()
	return p
}

func (p *proxy) relay(c net.Conn) {
	p.mu.Lock()
	if p.down {
		p.mu.Unlock()
		c.Close()
		return
	}
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		p.mu.Unlock()
		c.Close()
		return
	}
	p.conns[c], p.conns[s] = true, true
	p.mu.Unlock()
	go func() { _, _ = io.Copy(s, c); s.Close() }()
	_, _ = io.Copy(c, s)
	c.Close()
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *proxy) restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// countingTransport counts the API requests a client makes, by kind.
type countingTransport struct {
	syncs, pages atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	switch {
	case strings.HasSuffix(r.URL.Path, "/sync"):
		c.syncs.Add(1)
	case strings.HasSuffix(r.URL.Path, "/messages"):
		c.pages.Add(1)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// TestOfflineCatchUp: a device offline while 1,000 events arrive in 20 of its 25
// conversations reconnects by itself and receives exactly those events, in order, with no
// duplicate and no gap, using one sync and about one page request per conversation that
// changed (none for the quiet ones).
func TestOfflineCatchUp(t *testing.T) {
	ts := startServer(t, nil)
	reader := ts.signup("reader")
	writers := make([]account, 5)
	for i := range writers {
		writers[i] = ts.signup(fmt.Sprintf("writer%d", i))
	}
	type conv struct {
		id    string
		start int64 // last seq before the reader went offline
		w     *rawWS
	}
	var busy, quiet []conv
	for i := range 25 {
		w := writers[i%len(writers)]
		var c conv
		if i < 5 {
			c = conv{id: ts.direct(w, reader).ID}
		} else {
			c = conv{id: ts.group(w, fmt.Sprint("group ", i), reader, writers[(i+1)%len(writers)]).ID, start: 1}
		}
		if i < 20 {
			busy = append(busy, c)
		} else {
			quiet = append(quiet, c)
		}
	}

	px := newProxy(t, ts.addr)
	counter := &countingTransport{}
	cl := client.New("http://"+px.ln.Addr().String(), client.WithHTTPClient(&http.Client{Transport: counter}))
	cl.SetTokens(reader.Tokens)
	conn, err := cl.Connect(context.Background(), client.WithEventBuffer(4096), client.WithBackoff(50*time.Millisecond, 200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	got := map[string][]int64{}
	resumed := 0
	var mu sync.Mutex
	go func() {
		for ev := range conn.Events() {
			if ev.Type != client.EventMessage {
				continue
			}
			mu.Lock()
			got[ev.Message.ConversationID] = append(got[ev.Message.ConversationID], ev.Message.Seq)
			if ev.Resumed {
				resumed++
			}
			mu.Unlock()
		}
	}()

	px.cut() // the reader's device loses its network
	conns := map[string]*rawWS{}
	for _, w := range writers {
		conns[w.UserID] = ts.dialRaw(w.AccessToken)
	}
	const per = 50
	for i, c := range busy {
		w := conns[writers[i%len(writers)].UserID]
		for n := range per {
			w.sendAck(c.id, fmt.Sprintf("%d-%d", i, n))
		}
	}
	syncs0, pages0 := counter.syncs.Load(), counter.pages.Load()
	px.restore()

	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		total := 0
		for _, s := range got {
			total += len(s)
		}
		mu.Unlock()
		if total >= per*len(busy) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("caught up on %d of %d events", total, per*len(busy))
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // anything extra would show now
	mu.Lock()
	defer mu.Unlock()
	for _, c := range busy {
		seqs := got[c.id]
		if len(seqs) != per {
			t.Fatalf("conversation %s: %d events, want %d", c.id, len(seqs), per)
		}
		for i, s := range seqs {
			if s != c.start+int64(i)+1 {
				t.Fatalf("conversation %s: event %d is seq %d, want %d", c.id, i, s, c.start+int64(i)+1)
			}
		}
	}
	for _, c := range quiet {
		if len(got[c.id]) != 0 {
			t.Fatalf("quiet conversation %s produced %v", c.id, got[c.id])
		}
	}
	syncs, pages := counter.syncs.Load()-syncs0, counter.pages.Load()-pages0
	t.Logf("caught up on %d events in %d conversations (%d resumed) with %d sync and %d page requests", per*len(busy), len(busy), resumed, syncs, pages)
	if syncs > 2 || pages > int64(len(busy))+2 {
		t.Fatalf("%d syncs and %d page requests for %d changed conversations: not proportional", syncs, pages, len(busy))
	}
	if resumed != per*len(busy) {
		t.Fatalf("%d of %d events marked resumed", resumed, per*len(busy))
	}
}
