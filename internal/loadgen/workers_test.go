package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/parley-chat/parley/internal/auth"
	"github.com/parley-chat/parley/internal/limit"
	"github.com/parley-chat/parley/internal/server"
	"github.com/parley-chat/parley/protocol"
)

// startServer runs a real server in this process on 127.0.0.1; stop shuts it down.
func startServer(t *testing.T) (url string, stop func()) {
	t.Helper()
	cfg := server.Config{Listen: "127.0.0.1:0", Data: t.TempDir()}
	cfg.API.Password = auth.Params{Memory: 64, Time: 1, Threads: 1}
	// The load generator plays many users from one address: limits raised, as bench does.
	many := limit.Rule{Rate: 1e6, Burst: 1e6}
	cfg.Limits = limit.Config{Send: many, Edit: many, React: many, Receipt: many, Typing: many, GroupCreate: many, Membership: many,
		LoginIP: many, LoginAccountIP: many, LoginAccount: many, SignupIP: many, RefreshIP: many, ConnsPerIP: 1e6}
	s, err := server.New(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	return "http://" + s.Addr(), stop
}

// idleWorkerRun runs IdleWorker in this process (so that -race sees it) on pipes.
type idleWorkerRun struct {
	in   *io.PipeWriter
	out  *bufio.Scanner
	done chan error
}

func startIdleWorkerRun(t *testing.T, job idleJob) *idleWorkerRun {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	r := &idleWorkerRun{in: inW, out: bufio.NewScanner(outR), done: make(chan error, 1)}
	go func() {
		err := IdleWorker(context.Background(), inR, outW)
		outW.CloseWithError(io.EOF)
		r.done <- err
	}()
	t.Cleanup(func() { inW.Close(); _, _ = io.Copy(io.Discard, outR) })
	go func() { _ = json.NewEncoder(inW).Encode(job) }()
	return r
}

func (r *idleWorkerRun) next(t *testing.T) idleReport {
	t.Helper()
	if !r.out.Scan() {
		t.Fatalf("worker ended: %v", r.out.Err())
	}
	var rep idleReport
	if bytes.Contains(r.out.Bytes(), []byte(`"error"`)) {
		t.Fatalf("worker failed: %s", r.out.Bytes())
	}
	if err := json.Unmarshal(r.out.Bytes(), &rep); err != nil {
		t.Fatalf("report %q: %v", r.out.Bytes(), err)
	}
	return rep
}

func idleTokens(t *testing.T, url string, n int) []string {
	t.Helper()
	users, err := Accounts(context.Background(), url, "iw", n)
	if err != nil {
		t.Fatal(err)
	}
	tokens := make([]string, n)
	for i, u := range users {
		tokens[i] = u.Tokens().AccessToken
	}
	return tokens
}

// TestIdleWorker: a worker connects every token, says so, heartbeats each connection every
// interval while it holds them, and on the end of its input reports what it did.
func TestIdleWorker(t *testing.T) {
	url, _ := startServer(t)
	const conns, beat = 20, 50 * time.Millisecond
	w := startIdleWorkerRun(t, idleJob{URL: url, Tokens: idleTokens(t, url, conns), Heartbeat: beat})
	if rep := w.next(t); rep.Connected != conns {
		t.Fatalf("first report %+v, want %d connected", rep, conns)
	}
	start := time.Now() // the worker's heartbeat starts before this
	time.Sleep(10 * beat)
	w.in.Close()
	rep := w.next(t)
	held := time.Since(start) // the worker stopped its heartbeat before this
	if !rep.Done || rep.Closed != 0 {
		t.Fatalf("final report %+v", rep)
	}
	if runtime.GOOS == "linux" && rep.RSSKiB <= 0 {
		t.Fatalf("no RSS in the final report %+v", rep)
	}
	// One ping per connection per interval: at most one more round than the time held (the
	// heartbeat started a little before the clock here), and at least a few, however
	// slowly a loaded machine runs the ticker.
	if most := int64(conns) * (int64(held/beat) + 1); rep.Pings < 2*conns || rep.Pings > most {
		t.Fatalf("%d heartbeats over %d connections in %v (%v each), want %d to %d", rep.Pings, conns, held, beat, 2*conns, most)
	}
	if err := <-w.done; err != nil {
		t.Fatal(err)
	}
}

// TestIdleWorkerReportsClose: when the server ends the connections, the worker says so at
// once (the coordinator stops the hold on it) and counts them in its final report.
func TestIdleWorkerReportsClose(t *testing.T) {
	url, stop := startServer(t)
	const conns = 10
	w := startIdleWorkerRun(t, idleJob{URL: url, Tokens: idleTokens(t, url, conns), Heartbeat: time.Second})
	if rep := w.next(t); rep.Connected != conns {
		t.Fatalf("first report %+v", rep)
	}
	stop()
	if rep := w.next(t); rep.Closed != 1 || rep.Done || rep.Reason == "" {
		t.Fatalf("report after the server stopped: %+v, want one close and its reason", rep)
	}
	// The others may or may not have seen their close before the worker closes them itself
	// (then they are not counted): at least the first was.
	w.in.Close()
	if rep := w.next(t); !rep.Done || rep.Closed < 1 || rep.Closed > conns {
		t.Fatalf("final report %+v, want 1 to %d closed", rep, conns)
	}
}

// TestReconnectWorker runs a reconnect worker in process (so that -race sees it): its
// clients connect and send, report ready, drop at the word, reconnect, catch up, and find
// every message their partners had acked.
func TestReconnectWorker(t *testing.T) {
	url, _ := startServer(t)
	const clients, messages = 10, 3
	users, err := Accounts(context.Background(), url, "rw", clients)
	if err != nil {
		t.Fatal(err)
	}
	job := reconnectJob{URL: url, Messages: messages, Dials: 4, HTTPConns: 4}
	for k := 0; k < clients; k += 2 {
		c, _, err := users[k].CreateDirect(context.Background(), users[k+1].Tokens().UserID)
		if err != nil {
			t.Fatal(err)
		}
		job.Clients = append(job.Clients, users[k].Tokens(), users[k+1].Tokens())
		job.Convs = append(job.Convs, c.ID)
	}
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := ReconnectWorker(context.Background(), inR, outW)
		outW.Close()
		done <- err
	}()
	t.Cleanup(func() { inW.Close(); _, _ = io.Copy(io.Discard, outR) })
	enc, out := json.NewEncoder(inW), bufio.NewScanner(outR)
	out.Buffer(nil, 1<<20)
	sent := make(chan error, 1)
	go func() { sent <- enc.Encode(job) }() // the pipe has no buffer: the worker reads it

	next := func() reconnectReport {
		t.Helper()
		if !out.Scan() {
			t.Fatalf("worker ended: %v (%v)", out.Err(), <-done)
		}
		var rep reconnectReport
		if bytes.Contains(out.Bytes(), []byte(`"error"`)) {
			t.Fatalf("worker failed: %s", out.Bytes())
		}
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
			t.Fatal(err)
		}
		return rep
	}
	if rep := next(); !rep.Ready {
		t.Fatalf("first report %+v, want ready", rep)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if err := enc.Encode(reconnectGo{Drop: true, At: time.Now().UnixNano()}); err != nil {
		t.Fatal(err)
	}
	rep := next()
	if !rep.Done || rep.Missing != 0 || rep.Reconnect.Count() != clients || rep.CatchUp.Count() != clients {
		t.Fatalf("final report %+v (reconnected %d, caught up %d)", rep, rep.Reconnect.Count(), rep.CatchUp.Count())
	}
	if rep.Requests < 2*clients {
		t.Fatalf("%d catch-up requests for %d clients: each syncs and reads its conversation", rep.Requests, clients)
	}
	inW.Close() // it holds its connections until then
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestSplitPairs: the clients are shared out in whole pairs, each with its conversation,
// every worker gets some, and none is lost or given twice.
func TestSplitPairs(t *testing.T) {
	for _, tc := range []struct{ pairs, procs int }{{1, 1}, {5, 1}, {5, 2}, {5, 5}, {9500, 2}, {7, 3}} {
		clients := make([]protocol.Tokens, 2*tc.pairs)
		convs := make([]string, tc.pairs)
		for k := range convs {
			convs[k] = "c" + strconv.Itoa(k)
			clients[2*k].UserID, clients[2*k+1].UserID = "a"+strconv.Itoa(k), "b"+strconv.Itoa(k)
		}
		jobs := splitPairs(clients, convs, tc.procs)
		seen := 0
		for w, j := range jobs {
			if len(j.Convs) == 0 || len(j.Clients) != 2*len(j.Convs) {
				t.Fatalf("%+v: worker %d has %d clients and %d conversations", tc, w, len(j.Clients), len(j.Convs))
			}
			for k, c := range j.Convs {
				n := c[1:]
				if j.Clients[2*k].UserID != "a"+n || j.Clients[2*k+1].UserID != "b"+n {
					t.Fatalf("%+v: worker %d has conversation %s with %s and %s", tc, w, c, j.Clients[2*k].UserID, j.Clients[2*k+1].UserID)
				}
				if c != convs[seen] {
					t.Fatalf("%+v: conversation %s where %s was due", tc, c, convs[seen])
				}
				seen++
			}
		}
		if seen != tc.pairs {
			t.Fatalf("%+v: %d pairs shared out", tc, seen)
		}
	}
}
