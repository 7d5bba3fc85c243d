//go:build linux

package gateway

import "testing"

// TestReaderTurns: readiness reported while a reader is at work makes that reader go round
// again instead of starting a second one, and a reader's turn ends only when nothing was
// reported during it.
func TestReaderTurns(t *testing.T) {
	p := &epoll{}
	c := &Conn{}
	type step struct {
		op    string // "wake" or "drained"
		want  bool   // wake: start a reader; drained: read again
		state int32  // rstate after the step
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"quiet turn", []step{{"wake", true, readBusy}, {"drained", false, readIdle}}},
		{"bytes during the turn", []step{
			{"wake", true, readBusy}, {"wake", false, readAgain}, {"wake", false, readAgain},
			{"drained", true, readBusy}, {"drained", false, readIdle},
		}},
		{"bytes after the turn", []step{
			{"wake", true, readBusy}, {"drained", false, readIdle}, {"wake", true, readBusy},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.rstate.Store(readIdle)
			for i, s := range tc.steps {
				var got bool
				if s.op == "wake" {
					got = p.wake(c)
				} else {
					got = p.drained(c)
				}
				if got != s.want || c.rstate.Load() != s.state {
					t.Fatalf("step %d (%s): got %v, state %d; want %v, state %d", i, s.op, got, c.rstate.Load(), s.want, s.state)
				}
			}
		})
	}
}
