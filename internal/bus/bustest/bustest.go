// Package bustest is the conformance suite for bus.Bus implementations, in the manner of
// testing/fstest: each implementation's tests call Run with a constructor, and every
// sentence of the bus package's contract is checked the same way against each of them.
package bustest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-chat/parley/internal/bus"
)

const (
	// waitTimeout bounds every wait for a delivery; generous for -race on a small machine.
	waitTimeout = 20 * time.Second
	// settle is how long a test waits to see that nothing more arrives.
	settle = 100 * time.Millisecond
	// goroutineSlack is how far the goroutine count may stray from its baseline.
	goroutineSlack = 2
)

// Run checks the bus.Bus contract on buses made by open. open must return a new, open Bus
// on every call (it may fail t); Run closes each one, possibly twice, ignoring the second
// result. Buses may share a server with other runs: every test uses subjects under a fresh
// random token. Run counts goroutines, so nothing else in the process should start or stop
// goroutines while it runs (do not call it from a parallel test).
func Run(t *testing.T, open func(t *testing.T) bus.Bus) {
	t.Run("PublishReachesSubscribersOfSubjectOnly", func(t *testing.T) { testFanOut(t, open) })
	t.Run("WildcardSuffix", func(t *testing.T) { testWildcard(t, open) })
	t.Run("OrderPerPublisherAndSubject", func(t *testing.T) { testOrder(t, open) })
	t.Run("HandlersShareOneGoroutine", func(t *testing.T) { testOneGoroutine(t, open) })
	t.Run("UnsubscribeStopsDelivery", func(t *testing.T) { testUnsubscribe(t, open) })
	t.Run("ManySubscriptionsNoGoroutineEach", func(t *testing.T) { testManySubscriptions(t, open) })
	t.Run("DataValidAfterHandlerReturns", func(t *testing.T) { testDataRetained(t, open) })
	t.Run("CloseStopsGoroutinesAndPublish", func(t *testing.T) { testClose(t, open) })
	t.Run("BadSubjectsRefused", func(t *testing.T) { testBadSubjects(t, open) })
}

// openBus opens a bus that is closed when the test ends.
func openBus(t *testing.T, open func(t *testing.T) bus.Bus) bus.Bus {
	t.Helper()
	b := open(t)
	if b == nil {
		t.Fatal("open returned a nil Bus")
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// prefix returns a subject prefix no other test or run uses.
func prefix(t *testing.T) string {
	t.Helper()
	var r [8]byte
	_, _ = rand.Read(r[:])
	return "bustest." + hex.EncodeToString(r[:])
}

func flush(t *testing.T, b bus.Bus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := b.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
}

func publish(t *testing.T, b bus.Bus, subject string, data []byte) {
	t.Helper()
	if err := b.Publish(subject, data); err != nil {
		t.Fatalf("Publish(%q): %v", subject, err)
	}
}

func subscribe(t *testing.T, b bus.Bus, subject string, h bus.Handler) bus.Subscription {
	t.Helper()
	s, err := b.Subscribe(subject, h)
	if err != nil {
		t.Fatalf("Subscribe(%q): %v", subject, err)
	}
	return s
}

// msg is one delivery as a handler saw it.
type msg struct {
	subject string
	data    []byte // kept as given, not copied
}

// recorder is a handler that keeps every delivery.
type recorder struct {
	mu   sync.Mutex
	msgs []msg
	cond chan struct{} // signalled (non-blocking) on every delivery
}

func newRecorder() *recorder { return &recorder{cond: make(chan struct{}, 1)} }

func (r *recorder) handle(subject string, data []byte) {
	r.mu.Lock()
	r.msgs = append(r.msgs, msg{subject, data})
	r.mu.Unlock()
	select {
	case r.cond <- struct{}{}:
	default:
	}
}

func (r *recorder) snapshot() []msg {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.msgs)
}

// waitN waits until r has at least n deliveries and returns them.
func (r *recorder) waitN(t *testing.T, n int, what string) []msg {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		got := r.snapshot()
		if len(got) >= n {
			return got
		}
		select {
		case <-r.cond:
		case <-deadline.C:
			t.Fatalf("%s: %d of %d messages arrived within %s", what, len(got), n, waitTimeout)
		}
	}
}

func subjects(ms []msg) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.subject + "=" + string(m.data)
	}
	return out
}

// testFanOut: "Publish sends data to every current subscriber of subject", and to nobody
// subscribed to another subject, including ones that share a prefix.
func testFanOut(t *testing.T, open func(t *testing.T) bus.Bus) {
	b := openBus(t, open)
	p := prefix(t)
	subj := p + ".a"
	same1, same2 := newRecorder(), newRecorder()
	subscribe(t, b, subj, same1.handle)
	subscribe(t, b, subj, same2.handle)
	others := map[string]*recorder{}
	for _, s := range []string{p + ".ab", p + ".a.b", p + ".b", p} {
		others[s] = newRecorder()
		subscribe(t, b, s, others[s].handle)
	}
	flush(t, b)

	publish(t, b, subj, []byte("one"))
	publish(t, b, p+".b", []byte("two"))
	flush(t, b)

	for i, r := range []*recorder{same1, same2} {
		got := r.waitN(t, 1, fmt.Sprintf("subscriber %d of %s", i+1, subj))
		if len(got) != 1 || got[0].subject != subj || string(got[0].data) != "one" {
			t.Errorf("subscriber %d of %s got %q, want [%s=one]", i+1, subj, subjects(got), subj)
		}
	}
	others[p+".b"].waitN(t, 1, "subscriber of "+p+".b")
	time.Sleep(settle)
	for s, r := range others {
		want := 0
		if s == p+".b" {
			want = 1
		}
		if got := r.snapshot(); len(got) != want {
			t.Errorf("subscriber of %s got %q, want %d message(s)", s, subjects(got), want)
		}
	}
	for i, r := range []*recorder{same1, same2} {
		if got := r.snapshot(); len(got) != 1 {
			t.Errorf("subscriber %d of %s got %d messages after settling, want 1: %q", i+1, subj, len(got), subjects(got))
		}
	}
}

// testWildcard: "Subjects may end in ">" (any suffix)"; the handler sees the concrete subject.
func testWildcard(t *testing.T, open func(t *testing.T) bus.Bus) {
	b := openBus(t, open)
	p, other := prefix(t), prefix(t)
	r := newRecorder()
	subscribe(t, b, p+".>", r.handle)
	flush(t, b)

	want := []string{p + ".a=1", p + ".a.b.c=2", p + ".z=3"}
	publish(t, b, p+".a", []byte("1"))
	publish(t, b, other+".a", []byte("x"))
	publish(t, b, p+".a.b.c", []byte("2"))
	publish(t, b, p+"x.a", []byte("x"))
	publish(t, b, p+".z", []byte("3"))
	flush(t, b)

	r.waitN(t, len(want), "wildcard subscriber")
	time.Sleep(settle)
	got := subjects(r.snapshot())
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("subscriber of %s.> got %q, want %q", p, got, want)
	}

	// ">" is a wildcard only as a whole token: "x.a>" is a subject like any other.
	lit := newRecorder()
	subscribe(t, b, other+".a>", lit.handle)
	flush(t, b)
	publish(t, b, other+".abc", []byte("no"))
	publish(t, b, other+".a.b", []byte("no"))
	publish(t, b, other+".a>", []byte("yes"))
	flush(t, b)
	lit.waitN(t, 1, "subscriber of "+other+".a>")
	time.Sleep(settle)
	if got := subjects(lit.snapshot()); !slices.Equal(got, []string{other + ".a>=yes"}) {
		t.Errorf("subscriber of %s.a> got %q, want only the message published to that subject", other, got)
	}
}

// testOrder: "in order per (publisher, subject)". Two subjects are interleaved, each checked.
func testOrder(t *testing.T, open func(t *testing.T) bus.Bus) {
	const n = 10_000
	b := openBus(t, open)
	p := prefix(t)
	subjs := []string{p + ".one", p + ".two"}
	recs := []*recorder{newRecorder(), newRecorder()}
	for i, s := range subjs {
		subscribe(t, b, s, recs[i].handle)
	}
	flush(t, b)

	var buf [8]byte
	for i := range n {
		for _, s := range subjs {
			binary.BigEndian.PutUint64(buf[:], uint64(i))
			publish(t, b, s, buf[:])
		}
	}
	flush(t, b)

	for k, r := range recs {
		got := r.waitN(t, n, "subscriber of "+subjs[k])
		for i, m := range got {
			if seq := binary.BigEndian.Uint64(m.data); seq != uint64(i) {
				t.Fatalf("%s: message %d carries seq %d: order not preserved (or a message was lost on an idle subscriber)", subjs[k], i, seq)
			}
		}
	}
}

// testOneGoroutine: handlers of all subscriptions run on one shared goroutine, so never at
// the same time.
func testOneGoroutine(t *testing.T, open func(t *testing.T) bus.Bus) {
	const n = 2_000
	b := openBus(t, open)
	p := prefix(t)
	var inFlight, maxInFlight, count atomic.Int64
	done := make(chan struct{})
	h := func(string, []byte) {
		v := inFlight.Add(1)
		for m := maxInFlight.Load(); v > m && !maxInFlight.CompareAndSwap(m, v); m = maxInFlight.Load() {
		}
		runtime.Gosched() // give an overlapping handler, if any, the chance to run
		inFlight.Add(-1)
		if count.Add(1) == 4*n {
			close(done)
		}
	}
	for i := range 4 {
		subscribe(t, b, fmt.Sprintf("%s.s%d", p, i), h)
	}
	flush(t, b)
	for range n {
		for i := range 4 {
			publish(t, b, fmt.Sprintf("%s.s%d", p, i), []byte("x"))
		}
	}
	flush(t, b)
	select {
	case <-done:
	case <-time.After(waitTimeout):
		t.Fatalf("%d of %d messages arrived within %s", count.Load(), 4*n, waitTimeout)
	}
	if m := maxInFlight.Load(); m != 1 {
		t.Errorf("up to %d handlers ran at once; the contract says they share one goroutine", m)
	}
}

// testUnsubscribe: "after it returns h is called at most for a message whose handling had
// already begun": with a publisher running, at most one more call after Unsubscribe returns.
func testUnsubscribe(t *testing.T, open func(t *testing.T) bus.Bus) {
	b := openBus(t, open)
	p := prefix(t)
	subj := p + ".u"
	var count atomic.Int64
	progress := make(chan struct{}, 1)
	sub := subscribe(t, b, subj, func(string, []byte) {
		count.Add(1)
		select {
		case progress <- struct{}{}:
		default:
		}
	})
	sentinel := newRecorder()
	subscribe(t, b, p+".sentinel", sentinel.handle)
	flush(t, b)

	stop := make(chan struct{})
	pubDone := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				pubDone <- nil
				return
			default:
			}
			for range 10 {
				if err := b.Publish(subj, []byte("m")); err != nil {
					pubDone <- err
					return
				}
			}
			time.Sleep(time.Millisecond)
		}
	}()
	deadline := time.After(waitTimeout)
	for count.Load() < 50 {
		select {
		case <-progress:
		case <-deadline:
			close(stop)
			t.Fatalf("only %d messages arrived within %s while publishing", count.Load(), waitTimeout)
		}
	}
	if err := sub.Unsubscribe(); err != nil {
		close(stop)
		t.Fatalf("Unsubscribe: %v", err)
	}
	atReturn := count.Load()
	time.Sleep(20 * time.Millisecond) // keep publishing after Unsubscribe
	close(stop)
	if err := <-pubDone; err != nil {
		t.Fatalf("Publish: %v", err)
	}
	flush(t, b)
	publish(t, b, p+".sentinel", []byte("s"))
	flush(t, b)
	sentinel.waitN(t, 1, "sentinel")
	time.Sleep(settle)
	if after := count.Load() - atReturn; after > 1 {
		t.Errorf("handler ran %d times after Unsubscribe returned, want at most 1 (a handling already begun)", after)
	}
}

// testManySubscriptions: a subscription must not cost a goroutine (the gateway holds one per
// online user).
func testManySubscriptions(t *testing.T, open func(t *testing.T) bus.Bus) {
	const n = 5_000
	b := openBus(t, open)
	p := prefix(t)
	warm := newRecorder()
	subscribe(t, b, p+".warm", warm.handle)
	publish(t, b, p+".warm", []byte("w"))
	flush(t, b)
	warm.waitN(t, 1, "warm-up subscriber")
	before := runtime.NumGoroutine()

	recs := make([]*recorder, n)
	subs := make([]bus.Subscription, n)
	for i := range n {
		recs[i] = newRecorder()
		subs[i] = subscribe(t, b, fmt.Sprintf("%s.user.%d", p, i), recs[i].handle)
	}
	flush(t, b)
	after := runtime.NumGoroutine()
	if added := after - before; added > 50 {
		t.Fatalf("%d subscriptions added %d goroutines (%d -> %d); a subscription must not cost a goroutine", n, added, before, after)
	}
	t.Logf("%d subscriptions: goroutines %d -> %d", n, before, after)

	probe := []int{0, n / 2, n - 1}
	for _, i := range probe {
		publish(t, b, fmt.Sprintf("%s.user.%d", p, i), []byte(fmt.Sprint(i)))
	}
	flush(t, b)
	for _, i := range probe {
		got := recs[i].waitN(t, 1, fmt.Sprintf("subscriber %d", i))
		if string(got[0].data) != fmt.Sprint(i) {
			t.Errorf("subscriber %d got %q", i, got[0].data)
		}
	}
	for i, s := range subs {
		if err := s.Unsubscribe(); err != nil {
			t.Fatalf("Unsubscribe %d: %v", i, err)
		}
	}
	flush(t, b)
	if g := runtime.NumGoroutine(); g-before > 50 {
		t.Errorf("after %d Unsubscribes: %d goroutines, was %d", n, g, before)
	}
}

// testDataRetained: a handler may keep data after returning (the gateway enqueues it as an
// immutable frame), and the publisher may reuse its buffer once Publish returns.
func testDataRetained(t *testing.T, open func(t *testing.T) bus.Bus) {
	const n = 1_000
	b := openBus(t, open)
	p := prefix(t)
	subj := p + ".d"
	r := newRecorder()
	subscribe(t, b, subj, r.handle)
	flush(t, b)

	want := func(i int) []byte { return bytes.Repeat(fmt.Appendf(nil, "msg-%04d;", i), 32) }
	buf := make([]byte, 0, 512)
	for i := range n {
		buf = append(buf[:0], want(i)...)
		publish(t, b, subj, buf)
		clear(buf) // the caller may reuse data once Publish returns
	}
	flush(t, b)
	got := r.waitN(t, n, "subscriber")
	for i, m := range got {
		if !bytes.Equal(m.data, want(i)) {
			t.Fatalf("message %d changed after its handler returned (or arrived out of order): got %.40q…, want %.40q…", i, m.data, want(i))
		}
	}
}

// testClose: "Close drains subscriptions and stops the bus's goroutines"; a closed bus
// refuses to publish. Buses are opened and closed closeRounds times, so that a leak of even
// one goroutine per bus exceeds the slack allowed for the runtime's own comings and goings.
func testClose(t *testing.T, open func(t *testing.T) bus.Bus) {
	const closeRounds = 3
	before := runtime.NumGoroutine()
	for round := range closeRounds {
		b := openBus(t, open)
		p := prefix(t)
		r := newRecorder()
		for i := range 100 {
			subscribe(t, b, fmt.Sprintf("%s.c%d", p, i), r.handle)
		}
		publish(t, b, p+".c7", []byte("x"))
		flush(t, b)
		r.waitN(t, 1, "subscriber")
		if err := b.Close(); err != nil {
			t.Fatalf("round %d: Close: %v", round, err)
		}
		if err := b.Publish(p+".c7", []byte("late")); err == nil {
			t.Errorf("round %d: Publish after Close returned nil, want an error", round)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	g := runtime.NumGoroutine()
	for g > before+goroutineSlack && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		g = runtime.NumGoroutine()
	}
	if g > before+goroutineSlack {
		var dump strings.Builder
		_ = pprof.Lookup("goroutine").WriteTo(&dump, 1)
		t.Errorf("after opening and closing %d buses: %d goroutines, %d before (slack %d)\n%s", closeRounds, g, before, goroutineSlack, dump.String())
	}
	t.Logf("goroutines: %d before, %d after %d buses were opened and closed", before, g, closeRounds)
}

// testBadSubjects: subjects are dot-separated tokens, and only a subscription may end in
// ">". A refused call changes nothing: the bus goes on delivering.
func testBadSubjects(t *testing.T, open func(t *testing.T) bus.Bus) {
	b := openBus(t, open)
	p := prefix(t)
	nop := func(string, []byte) {}
	for _, s := range []string{"", ".", p + ".", "." + p, p + "..a", p + ".a b", p + ".*", p + ".>.a"} {
		if _, err := b.Subscribe(s, nop); err == nil {
			t.Errorf("Subscribe(%q) = nil error, want one", s)
		}
	}
	for _, s := range []string{"", p + "..a", p + ".a b", p + ".>", p + ".*"} {
		if err := b.Publish(s, []byte("x")); err == nil {
			t.Errorf("Publish(%q) = nil error, want one", s)
		}
	}
	r := newRecorder()
	subscribe(t, b, p+".ok", r.handle)
	flush(t, b)
	publish(t, b, p+".ok", []byte("after"))
	if got := r.waitN(t, 1, "subscriber after refused calls"); string(got[0].data) != "after" {
		t.Errorf("got %q, want [after]", subjects(got))
	}
}
