package loadgen

import (
	"slices"
	"testing"
)

// TestTrackerLost: an acked seq that a receiver has not got is lost, one got twice is a
// duplicate, and the report names the lost ones.
func TestTrackerLost(t *testing.T) {
	tr := newTracker(2)
	for seq := int64(1); seq <= 6; seq++ {
		tr.ack(seq)
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
	if got := lostDetail([]*tracker{newTracker(1), tr}, "pair"); got != "pair 1 seqs [3 5]" {
		t.Fatalf("lost detail %q", got)
	}
}
