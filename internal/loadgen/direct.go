package loadgen

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-chat/parley/client"
	"github.com/parley-chat/parley/protocol"
)

// DirectConfig is the "direct" scenario: Pairs sender/receiver pairs, each sender keeping
// InFlight sends outstanding, for Duration after Warmup.
type DirectConfig struct {
	URL      string
	Pairs    int
	InFlight int
	Duration time.Duration
	Warmup   time.Duration
	Prefix   string // username prefix, so runs against one server do not collide
}

// DirectResult is what a direct run measured. Latencies count only sends scheduled after
// the warm-up.
type DirectResult struct {
	Scenario      string  `json:"scenario"`
	Pairs         int     `json:"pairs"`
	InFlight      int     `json:"inflight"`
	DurationS     float64 `json:"duration_s"`
	Acked         uint64  `json:"acked"`
	Delivered     uint64  `json:"delivered"`
	AckedPerS     float64 `json:"acked_per_s"`
	DeliveredPerS float64 `json:"delivered_per_s"`
	SendToAck     Summary `json:"send_to_ack"`
	SendToDeliver Summary `json:"send_to_deliver"`
	// Correctness, over the whole run: acked messages never delivered, and deliveries of a
	// seq already delivered.
	Lost       int `json:"lost"`
	Duplicates int `json:"duplicates"`
	Errors     int `json:"errors"`
}

func (r DirectResult) String() string {
	return fmt.Sprintf(`direct: %d pairs, %d in flight each, %.1fs
  acked      %9.0f msg/s  (%d)
  delivered  %9.0f msg/s  (%d)
  send→ack     %s
  send→deliver %s
  lost %d  duplicates %d  errors %d`,
		r.Pairs, r.InFlight, r.DurationS, r.AckedPerS, r.Acked, r.DeliveredPerS, r.Delivered,
		r.SendToAck, r.SendToDeliver, r.Lost, r.Duplicates, r.Errors)
}

// pair is one sender and one receiver in a direct conversation.
type pair struct {
	conv     string
	sender   *client.Conn
	receiver *client.Conn

	mu        sync.Mutex
	acked     map[int64]bool // seq → delivered yet
	delivered map[int64]int
}

// Direct runs the direct scenario against cfg.URL.
func Direct(ctx context.Context, cfg DirectConfig) (DirectResult, error) {
	if cfg.Pairs <= 0 || cfg.InFlight <= 0 || cfg.Duration <= 0 {
		return DirectResult{}, errors.New("direct: pairs, inflight and duration must be positive")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "b" + strconv.FormatInt(time.Now().UnixNano()%1e8, 36)
	}
	pairs, cleanup, err := setupPairs(ctx, cfg)
	defer cleanup()
	if err != nil {
		return DirectResult{}, err
	}

	var ackH, delH Histogram
	var acked, delivered atomic.Uint64
	var errs atomic.Int64
	start := time.Now()
	measureFrom := start.Add(cfg.Warmup)
	end := measureFrom.Add(cfg.Duration)
	runCtx, stop := context.WithDeadline(ctx, end)
	defer stop()

	var readers sync.WaitGroup
	readCtx, stopReaders := context.WithCancel(context.Background())
	for _, p := range pairs {
		readers.Go(func() { drain(readCtx, p.sender) })
		readers.Go(func() {
			for {
				select {
				case <-readCtx.Done():
					return
				case ev, ok := <-p.receiver.Events():
					if !ok {
						return
					}
					if ev.Type != client.EventMessage || ev.Message.ConversationID != p.conv {
						continue
					}
					now := time.Now()
					p.mu.Lock()
					p.delivered[ev.Message.Seq]++
					p.mu.Unlock()
					if sent, err := strconv.ParseInt(ev.Message.Body, 10, 64); err == nil {
						if t0 := time.Unix(0, sent); !t0.Before(measureFrom) && !t0.After(end) {
							delH.Record(now.Sub(t0))
							delivered.Add(1)
						}
					}
				}
			}
		})
	}

	var senders sync.WaitGroup
	for _, p := range pairs {
		for range cfg.InFlight {
			senders.Go(func() {
				for runCtx.Err() == nil {
					t0 := time.Now()
					ack, err := p.sender.Send(runCtx, p.conv, strconv.FormatInt(t0.UnixNano(), 10))
					if err != nil {
						if runCtx.Err() == nil {
							errs.Add(1)
						}
						continue
					}
					p.mu.Lock()
					p.acked[ack.Seq] = true
					p.mu.Unlock()
					if !t0.Before(measureFrom) {
						ackH.Record(time.Since(t0))
						acked.Add(1)
					}
				}
			})
		}
	}
	senders.Wait()
	elapsed := min(time.Since(measureFrom), cfg.Duration)
	// Let deliveries in flight arrive before checking that each acked message came once.
	settle(pairs, 5*time.Second)
	stopReaders()
	readers.Wait()

	res := DirectResult{
		Scenario: "direct", Pairs: cfg.Pairs, InFlight: cfg.InFlight, DurationS: elapsed.Seconds(),
		Acked: acked.Load(), Delivered: delivered.Load(),
		SendToAck: ackH.Summary(), SendToDeliver: delH.Summary(), Errors: int(errs.Load()),
	}
	res.AckedPerS = float64(res.Acked) / elapsed.Seconds()
	res.DeliveredPerS = float64(res.Delivered) / elapsed.Seconds()
	for _, p := range pairs {
		p.mu.Lock()
		for seq := range p.acked {
			if p.delivered[seq] == 0 {
				res.Lost++
			}
		}
		for _, n := range p.delivered {
			if n > 1 {
				res.Duplicates += n - 1
			}
		}
		p.mu.Unlock()
	}
	return res, nil
}

// settle waits until every acked message has been delivered, or the timeout passes.
func settle(pairs []*pair, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		done := true
		for _, p := range pairs {
			p.mu.Lock()
			for seq := range p.acked {
				if p.delivered[seq] == 0 {
					done = false
					break
				}
			}
			p.mu.Unlock()
			if !done {
				break
			}
		}
		if done {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// drain discards a connection's events (a sender's own messages come back from its acks),
// so that the SDK's backpressure never stalls it.
func drain(ctx context.Context, c *client.Conn) {
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-c.Events():
			if !ok {
				return
			}
		}
	}
}

// setupPairs creates the accounts and conversations, and connects, before timing starts.
func setupPairs(ctx context.Context, cfg DirectConfig) ([]*pair, func(), error) {
	var conns []*client.Conn
	cleanup := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	users, err := Accounts(ctx, cfg.URL, cfg.Prefix, 2*cfg.Pairs)
	if err != nil {
		return nil, cleanup, err
	}
	pairs := make([]*pair, cfg.Pairs)
	for i := range pairs {
		s, r := users[2*i], users[2*i+1]
		conv, _, err := s.CreateDirect(ctx, r.Tokens().UserID)
		if err != nil {
			return nil, cleanup, fmt.Errorf("create conversation: %w", err)
		}
		sc, err := s.Connect(ctx, client.WithEventBuffer(8192))
		if err != nil {
			return nil, cleanup, fmt.Errorf("connect: %w", err)
		}
		conns = append(conns, sc)
		rc, err := r.Connect(ctx, client.WithEventBuffer(8192))
		if err != nil {
			return nil, cleanup, fmt.Errorf("connect: %w", err)
		}
		conns = append(conns, rc)
		pairs[i] = &pair{conv: conv.ID, sender: sc, receiver: rc, acked: map[int64]bool{}, delivered: map[int64]int{}}
	}
	return pairs, cleanup, nil
}

// Accounts signs up and logs in n users named prefix-0..n-1, a few at a time, and returns
// a client for each.
func Accounts(ctx context.Context, url, prefix string, n int) ([]*client.Client, error) {
	out := make([]*client.Client, n)
	errc := make(chan error, n)
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			cl := client.New(url)
			name := fmt.Sprintf("%s-%d", prefix, i)
			const pw = "bench-password"
			if _, err := cl.Signup(ctx, name, pw, ""); err != nil && client.ErrorCode(err) != protocol.CodeConflict {
				errc <- fmt.Errorf("signup %s: %w", name, err)
				return
			}
			if _, err := cl.Login(ctx, name, pw, "bench"); err != nil {
				errc <- fmt.Errorf("login %s: %w", name, err)
				return
			}
			out[i] = cl
		})
	}
	wg.Wait()
	close(errc)
	return out, <-errc
}
