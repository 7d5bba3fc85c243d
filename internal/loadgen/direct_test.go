package loadgen

import (
	"slices"
	"testing"
	"time"
)

// TestTrackerLost: an acked seq that a receiver has not got is lost, one got twice is a
// duplicate, and the report names the lost ones.
func TestTrackerLost(t *testing.T) {
	tr := newTracker(2, 0)
	for seq := int64(1); seq <= 6; seq++ {
		tr.ack(seq, "")
	}
	for _, seq := range []int64{1, 1, 2, 2, 3, 4, 4, 4, 6, 6} {
		tr.deliver(seq)
	}
	lost, dups := tr.check()
	if lost != 3 || dups != 1 { // 3 once, 5 never: 1+2; 4 three times
		t.Fatalf("lost %d, duplicates %d; want 3 and 1", lost, dups)
	}
	if got := tr.lostSeqs(8); !slices.Equal(got, []int64{3, 5}) {
		t.Fatalf("lost seqs %v, want [3 5]", got)
	}
	if got := lostDetail([]*tracker{newTracker(1, 0), tr}, "pair"); got != "pair 1 seqs [3 5]" {
		t.Fatalf("lost detail %q", got)
	}
}

// TestTrackerWindow: a long run's tracker holds only the seqs in flight, and still counts a
// delivery of a seq it has forgotten as a duplicate; a group's tracker starts after the
// seqs the conversation had before the run.
func TestTrackerWindow(t *testing.T) {
	tr := newTracker(2, 3)
	for seq := int64(4); seq <= 100_000; seq++ {
		tr.deliver(seq)
		tr.ack(seq, "m")
		tr.deliver(seq)
		if n := tr.pending(); n > 1 {
			t.Fatalf("at seq %d the tracker holds %d seqs", seq, n)
		}
	}
	tr.ack(100_001, "last")
	tr.deliver(50) // again
	if lost, dups := tr.check(); lost != 2 || dups != 1 {
		t.Fatalf("lost %d, duplicates %d; want 2 (both receivers of the last) and 1", lost, dups)
	}
	if last := tr.lastAcked(); last.seq != 100_001 || last.id != "last" {
		t.Fatalf("last acked %+v", last)
	}
}

// TestSettleWaitsForAnswers: the end of a run waits for the answer to every send and the
// delivery of every acked message. Checking deliveries alone passed while an ack was still
// on its way, and its message, delivered a moment later, counted as lost.
func TestSettleWaitsForAnswers(t *testing.T) {
	m := &meter{}
	tr := newTracker(1, 0)
	s := &sender{t0: map[string]time.Time{"a": time.Now()}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(30 * time.Millisecond)
		m.ack(s, frameInfo{typ: "ack", id: "a", seq: 1}, tr)
		time.Sleep(30 * time.Millisecond)
		tr.deliver(1)
	}()
	if n := settle([]*tracker{tr}, []*sender{s}, 10*time.Second); n != 0 {
		t.Fatalf("%d unanswered", n)
	}
	tr.mu.Lock()
	complete := tr.floor
	tr.mu.Unlock()
	if complete != 1 {
		t.Fatalf("settle returned before seq 1 was acked and delivered (complete up to %d)", complete)
	}
	<-done

	never := &sender{t0: map[string]time.Time{"b": time.Now()}}
	if n := settle(nil, []*sender{never}, 50*time.Millisecond); n != 1 {
		t.Fatalf("a send never answered: settle says %d unanswered, want 1", n)
	}
}

// TestWhoMissed: a lost seq of a group names the members of that group that did not get
// it, marking senders, and no member of another group.
func TestWhoMissed(t *testing.T) {
	a, b := newTracker(2, 0), newTracker(1, 0)
	a.ack(7, "")
	a.deliver(7) // one of two receivers
	b.ack(7, "")
	b.deliver(7)
	got := func(seqs ...int64) *seqSet {
		s := &seqSet{}
		for _, q := range seqs {
			s.add(q)
		}
		return s
	}
	sc := &lconn{}
	members := []groupMember{
		{c: sc, tr: a, got: got(7)}, // acked for its own message
		{c: &lconn{}, tr: a, got: got(7)},
		{c: &lconn{}, tr: a, got: got(1, 2)},
		{c: &lconn{}, tr: b, got: got()}, // other group: b lost nothing
	}
	if s := whoMissed([]*tracker{a, b}, members, map[*lconn]*sender{sc: {}}); s != "group 0 seq 7 by connections 2" {
		t.Fatalf("whoMissed = %q", s)
	}
	members[2].c = sc
	if s := whoMissed([]*tracker{a, b}, members, map[*lconn]*sender{sc: {}}); s != "group 0 seq 7 by connections 2 (a sender)" {
		t.Fatalf("whoMissed = %q", s)
	}
}
