// Package natsbus implements bus.Bus on NATS: Embedded runs a NATS server inside the process
// (no TCP port, JetStream on disk) and Connect dials an external server or cluster, so
// scaling out changes only how the Bus is built.
//
// A gateway holds one subscription per online user, tens of thousands per process, so a
// subscription must cost a few hundred bytes, not a goroutine. Every subscription of a Bus
// therefore feeds one shared buffered channel (nats.go's ChanSubscribe), and one dispatcher
// goroutine owned by the Bus looks the handler up by *nats.Subscription and calls it. When
// that channel is full nats.go drops the message instead of blocking the connection's read
// loop; the Bus counts the drops (Stats) and logs them at most once per slowLogEvery.
// Dropping is within the bus contract: delivery is at most once, and a subscriber catches up
// from the store.
//
// Handlers may keep the data slice they are given: nats.go allocates every message's payload
// afresh, and nothing in this package reuses it.
package natsbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	neturl "net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/parley-chat/parley/internal/bus"
)

const (
	// bufferSize is the capacity of the channel shared by all subscriptions of a Bus: 64K
	// pointers (512 KiB), enough to absorb a burst of fan-out while the dispatcher catches up.
	bufferSize = 1 << 16
	// slowLogEvery bounds how often slow-consumer drops and other asynchronous errors are
	// logged, so an overloaded node does not also flood its log.
	slowLogEvery = 10 * time.Second
	// closeFlushTimeout bounds how long Close waits for the server to acknowledge what was
	// published before the connection is closed.
	closeFlushTimeout = 5 * time.Second
	// defaultFlushTimeout applies to Flush when the caller's context has no deadline
	// (nats.go refuses to wait on such a context, to avoid waiting forever on a dead link).
	defaultFlushTimeout = 30 * time.Second
	// defaultConnectTimeout applies to dialing when the caller's context has no deadline.
	defaultConnectTimeout = 10 * time.Second
	// reconnectBufSize is how many bytes of publishes nats.go keeps while reconnecting;
	// beyond it Publish fails (and the subscribers catch up from the store).
	reconnectBufSize = 8 << 20
)

// ErrClosed is returned (wrapped) by Subscribe after Close.
var ErrClosed = errors.New("natsbus: bus closed")

var _ bus.Bus = (*Bus)(nil)

// Bus is a bus.Bus on one NATS connection. All methods are safe for concurrent use.
type Bus struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	log *slog.Logger
	srv *server.Server // set by Embedded only: shut down by Close

	msgs chan *nats.Msg // shared by every subscription; read only by dispatch
	stop chan struct{}  // closed by Close: dispatch drains msgs and returns
	done chan struct{}  // closed by dispatch when it returns

	mu          sync.RWMutex
	subs        map[*nats.Subscription]bus.Handler
	closed      bool
	droppedGone uint64 // drops counted on subscriptions already cancelled

	closeOnce sync.Once
	closeErr  error

	slowEvents atomic.Uint64

	warnMu     sync.Mutex
	lastWarn   time.Time
	suppressed uint64
}

// Stats are a Bus's counters, for metrics and tests.
type Stats struct {
	// Subscriptions is the number of active subscriptions.
	Subscriptions int
	// Buffered is the number of received messages waiting for the dispatcher.
	Buffered int
	// Dropped counts messages dropped because the shared buffer was full.
	Dropped uint64
	// SlowConsumerEvents counts the times a subscription started dropping (nats.go reports
	// a subscription once until one of its messages gets through again).
	SlowConsumerEvents uint64
}

// Connect returns a Bus on the NATS server or cluster at url (comma-separated URLs allowed).
// The first connection must succeed, within ctx's deadline if it has one; after that
// nats.go reconnects forever, keeping up to 8 MiB of publishes while disconnected, and
// re-subscribes everything on reconnect. Messages published by others while the link is
// down are lost to this node (at most once; subscribers catch up from the store).
func Connect(ctx context.Context, url string, log *slog.Logger) (*Bus, error) {
	b := newBus(log, bufferSize)
	if err := b.connect(ctx, url); err != nil {
		return nil, fmt.Errorf("natsbus: connect to %s: %w", redactURLs(url), err)
	}
	return b, nil
}

// redactURLs hides the passwords of a comma-separated URL list, for error messages.
func redactURLs(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		if u, err := neturl.Parse(strings.TrimSpace(p)); err == nil {
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}

func newBus(log *slog.Logger, size int) *Bus {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Bus{
		log:  log,
		msgs: make(chan *nats.Msg, size),
		stop: make(chan struct{}),
		done: make(chan struct{}),
		subs: make(map[*nats.Subscription]bus.Handler),
	}
}

// connect dials url with the Bus's options plus extra and starts the dispatcher.
func (b *Bus) connect(ctx context.Context, url string, extra ...nats.Option) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	timeout := defaultConnectTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	opts := []nats.Option{
		nats.Name("parley"),
		nats.Timeout(timeout),
		nats.MaxReconnects(-1),
		nats.ReconnectBufSize(reconnectBufSize),
		nats.NoCallbacksAfterClientClose(),
		nats.ErrorHandler(b.asyncError),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				b.log.Warn("bus: disconnected from NATS, reconnecting", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			b.log.Info("bus: reconnected to NATS", "url", nc.ConnectedUrlRedacted())
		}),
	}
	nc, err := nats.Connect(url, append(opts, extra...)...)
	if err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return fmt.Errorf("jetstream context: %w", err)
	}
	b.nc, b.js = nc, js
	go b.dispatch()
	return nil
}

// Conn returns the underlying connection, for features beyond bus.Bus (request/reply,
// JetStream). Do not Close it or Drain it: the Bus owns it; Close the Bus instead.
func (b *Bus) Conn() *nats.Conn { return b.nc }

// JetStream returns a JetStream context on the Bus's connection, for durable job queues.
// The embedded server stores streams under the directory given to Embedded, so they survive
// restarts; with Connect, the external server must have JetStream enabled.
func (b *Bus) JetStream() jetstream.JetStream { return b.js }

// Publish sends data to subject. It only copies data into the connection's write buffer
// (nats.go flushes it in the background), so the caller may reuse data at once. It fails
// after Close, and while reconnecting once the reconnect buffer is full.
func (b *Bus) Publish(subject string, data []byte) error {
	if err := b.nc.Publish(subject, data); err != nil {
		return fmt.Errorf("natsbus: publish to %q: %w", subject, err)
	}
	return nil
}

// Subscribe calls h, on the Bus's dispatcher goroutine, for every message on subject.
// The subscription is registered at the server in order with this Bus's later publishes;
// for publishes from other connections it is in effect once a later Flush returns.
func (b *Bus) Subscribe(subject string, h bus.Handler) (bus.Subscription, error) {
	if h == nil {
		return nil, fmt.Errorf("natsbus: subscribe to %q: nil handler", subject)
	}
	// Holding mu across ChanSubscribe makes sure the dispatcher cannot look up a message of
	// the new subscription before its handler is in the map.
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, fmt.Errorf("natsbus: subscribe to %q: %w", subject, ErrClosed)
	}
	ns, err := b.nc.ChanSubscribe(subject, b.msgs)
	if err != nil {
		return nil, fmt.Errorf("natsbus: subscribe to %q: %w", subject, err)
	}
	b.subs[ns] = h
	return &subscription{b: b, ns: ns}, nil
}

// Flush returns once everything published so far has reached the server. Without a
// deadline on ctx it waits at most defaultFlushTimeout (30 s).
func (b *Bus) Flush(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultFlushTimeout)
		defer cancel()
	}
	if err := b.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("natsbus: flush: %w", err)
	}
	return nil
}

// Stats returns the Bus's counters. It walks every subscription, so call it for metrics,
// not per message.
func (b *Bus) Stats() Stats {
	b.mu.RLock()
	defer b.mu.RUnlock()
	st := Stats{
		Subscriptions:      len(b.subs),
		Buffered:           len(b.msgs),
		Dropped:            b.droppedGone,
		SlowConsumerEvents: b.slowEvents.Load(),
	}
	for ns := range b.subs {
		if n, err := ns.Dropped(); err == nil {
			st.Dropped += uint64(n)
		}
	}
	return st
}

// Close drains and stops the Bus: no new subscriptions; it waits (at most 5 s) until the
// server has acknowledged what was published, which also means every message the server
// sent before is in the buffer; it closes the connection, which ends every subscription at
// the server at once (rather than nats.go's Drain, which starts a goroutine per
// subscription); the dispatcher delivers what is buffered and exits; then, for Embedded,
// the server shuts down and Close waits for it. Calling Close again returns the first
// result. Do not call Close from a handler: it waits for the dispatcher, which runs handlers.
func (b *Bus) Close() error {
	b.closeOnce.Do(func() { b.closeErr = b.close() })
	return b.closeErr
}

func (b *Bus) close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()

	var errs []error
	if b.nc.IsConnected() {
		if err := b.nc.FlushTimeout(closeFlushTimeout); err != nil {
			errs = append(errs, fmt.Errorf("natsbus: close: flush: %w", err))
		}
	}
	// After Close returns, nats.go has marked every subscription closed under its lock, so
	// the read loop sends nothing more to b.msgs.
	b.nc.Close()
	close(b.stop)
	<-b.done

	b.mu.Lock()
	clear(b.subs)
	b.mu.Unlock()

	if b.srv != nil {
		b.srv.Shutdown()
		b.srv.WaitForShutdown()
	}
	return errors.Join(errs...)
}

// dispatch is the Bus's one delivery goroutine.
func (b *Bus) dispatch() {
	defer close(b.done)
	for {
		select {
		case m := <-b.msgs:
			b.deliver(m)
		case <-b.stop:
			for {
				select {
				case m := <-b.msgs:
					b.deliver(m)
				default:
					return
				}
			}
		}
	}
}

// deliver calls m's handler unless its subscription was cancelled.
func (b *Bus) deliver(m *nats.Msg) {
	b.mu.RLock()
	h := b.subs[m.Sub]
	b.mu.RUnlock()
	if h != nil {
		h(m.Subject, m.Data)
	}
}

// asyncError receives nats.go's asynchronous errors, on its one callback goroutine.
func (b *Bus) asyncError(_ *nats.Conn, sub *nats.Subscription, err error) {
	var subject string
	if sub != nil {
		subject = sub.Subject
	}
	if errors.Is(err, nats.ErrSlowConsumer) {
		total := b.slowEvents.Add(1)
		b.warnLimited("bus: dispatch buffer full, dropping messages (slow handlers)",
			"subject", subject, "buffered", len(b.msgs), "capacity", cap(b.msgs),
			"slow_consumer_events", total)
		return
	}
	b.warnLimited("bus: NATS error", "subject", subject, "err", err)
}

// warnLimited logs at most once per slowLogEvery and says how many lines it held back.
func (b *Bus) warnLimited(msg string, args ...any) {
	now := time.Now()
	b.warnMu.Lock()
	if !b.lastWarn.IsZero() && now.Sub(b.lastWarn) < slowLogEvery {
		b.suppressed++
		b.warnMu.Unlock()
		return
	}
	suppressed := b.suppressed
	b.suppressed = 0
	b.lastWarn = now
	b.warnMu.Unlock()
	b.log.Warn(msg, append(args, "suppressed_since_last", suppressed)...)
}

// subscription is a bus.Subscription of a Bus.
type subscription struct {
	b  *Bus
	ns *nats.Subscription
}

// Unsubscribe stops delivery at once: the handler is removed before the server is told, so
// messages already buffered for it are skipped. Calling it again, or after Close, is a no-op.
func (s *subscription) Unsubscribe() error {
	b := s.b
	b.mu.Lock()
	_, ok := b.subs[s.ns]
	if ok {
		delete(b.subs, s.ns)
		if n, err := s.ns.Dropped(); err == nil {
			b.droppedGone += uint64(n)
		}
	}
	closed := b.closed
	b.mu.Unlock()
	if !ok || closed {
		return nil
	}
	if err := s.ns.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		return fmt.Errorf("natsbus: unsubscribe from %q: %w", s.ns.Subject, err)
	}
	return nil
}
