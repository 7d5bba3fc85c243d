package sqlite

import (
	"fmt"
	"testing"

	"github.com/parley-chat/parley/internal/store"
	"github.com/parley-chat/parley/protocol"
)

// BenchmarkAppend measures the hot path: one Append of a batch of new text messages, one
// durable transaction (one WAL sync) per op, spread over a number of conversations. rows/s
// is appended events per second. "/pipelined" runs the batches as the chat sequencer does:
// AppendCommitted, with each batch's durable awaited on another goroutine while the next
// batch commits.
func BenchmarkAppend(b *testing.B) {
	// batch=16/convs=50 is the rate scenario's shape: 10,000 msg/s offered over 50 pairs
	// gives transactions of 10–24 messages; its ns/op is the sequencer's cost per commit.
	for _, c := range []struct {
		batchSize, convs int
		pipelined        bool
	}{{256, 1, false}, {256, 64, false}, {16, 50, false}, {16, 50, true}} {
		name := fmt.Sprintf("batch=%d/convs=%d", c.batchSize, c.convs)
		if c.pipelined {
			name += "/pipelined"
		}
		b.Run(name, func(b *testing.B) { benchAppend(b, c.batchSize, c.convs, c.pipelined) })
	}
}

func benchAppend(b *testing.B, batchSize, convs int, pipelined bool) {
	ctx := b.Context()
	s := openTemp(b)
	for i := range convs + 1 {
		u := fmt.Sprintf("u%03d", i)
		if err := s.CreateUser(ctx, protocol.User{ID: u, Username: u}, "h"); err != nil {
			b.Fatal(err)
		}
	}
	// Direct conversations u000–uNNN: u000 is in all of them and sends everything.
	ids := make([]string, convs)
	for i := range convs {
		c, _, err := s.CreateDirect(ctx, fmt.Sprintf("c%03d", i), "u000", fmt.Sprintf("u%03d", i+1), 0)
		if err != nil {
			b.Fatal(err)
		}
		ids[i] = c.ID
	}
	// The waiter stands in for chat's publisher: it waits for each batch's durable, in order.
	durables := make(chan store.Durable, 64)
	waited := make(chan error, 1)
	go func() {
		var first error
		for d := range durables {
			if err := d(ctx); err != nil && first == nil {
				first = err
			}
		}
		waited <- first
	}()
	body := "a typical chat message, about sixty bytes long, give or take"
	reqs := make([]store.AppendRequest, batchSize)
	n := 0
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		for i := range reqs {
			reqs[i] = store.AppendRequest{
				ConversationID: ids[n%convs],
				SenderID:       "u000",
				ClientID:       fmt.Sprintf("%036d", n),
				Kind:           protocol.KindText,
				Body:           body,
				TS:             int64(n),
			}
			n++
		}
		var rs []store.AppendResult
		var err error
		if pipelined {
			var d store.Durable
			rs, d, err = s.AppendCommitted(ctx, reqs)
			if err == nil {
				durables <- d
			}
		} else {
			rs, err = s.Append(ctx, reqs)
		}
		if err != nil {
			b.Fatal(err)
		}
		if rs[0].Err != nil || rs[0].Duplicate {
			b.Fatalf("result: %+v", rs[0])
		}
	}
	close(durables)
	if err := <-waited; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "rows/s")
}
