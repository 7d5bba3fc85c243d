// Package natsbus implements bus.Bus on NATS: Embedded runs a NATS server inside the process
// (no TCP port, JetStream on disk) and Connect dials an external server or cluster, so
// scaling out changes only how the Bus is built.
//
// A Bus delivers to its own subscribers itself. A message published on this node for a
// subscriber on this node (a user connected to this node's gateway, which is nearly every
// delivery on one node) is put straight on the dispatcher's queue, copied once; NATS carries
// only what other nodes need. The connection is made with NoEcho, so the server never sends a
// Bus back its own publishes and nothing arrives twice. The embedded server has no port, so
// no other node can subscribe to it or publish through it: there a Bus keeps core pub/sub
// entirely in the process and registers no subscription at the server (JetStream, for
// durable queues, is the server's). Going through the in-process server cost five goroutine
// hand-offs and about 830 bytes per subscription for messages that never leave the process;
// docs/benchmarks.md has the measurements.
//
// A gateway holds one subscription per online user, tens of thousands per process, so a
// subscription must cost a few hundred bytes, not a goroutine. Every subscription of a Bus
// therefore feeds one dispatcher goroutine owned by the Bus: messages from NATS arrive on
// one shared buffered channel (nats.go's ChanSubscribe), local ones on another, and the
// dispatcher calls the handlers. When a channel is full the message is dropped instead of
// blocking the publisher or the connection's read loop; the Bus counts the drops (Stats)
// and logs them at most once per slowLogEvery. Dropping is within the bus contract: delivery
// is at most once, and a subscriber catches up from the store.
//
// Handlers may keep the data slice they are given and must not modify it: nats.go allocates
// every message's payload afresh, a local publish copies data once for all its local
// subscribers, and nothing in this package reuses either.
package natsbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	neturl "net/url"
	"slices"
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
	// srv is set by Embedded only, and shut down by Close. It is embedded without a port:
	// nothing but this Bus can publish or subscribe there, so while srv is set core
	// pub/sub never goes to the server.
	srv *server.Server

	msgs  chan *nats.Msg // from NATS (other nodes' publishes), nil with srv; read only by dispatch
	local chan localMsg  // this Bus's publishes to its own subscribers; read only by dispatch
	stop  chan struct{}  // closed by Close: dispatch drains both channels and returns
	done  chan struct{}  // closed by dispatch when it returns

	// exact and byNATS hold an entry per live subscription (the gateway's, one per user
	// online on this node), removed when it is unsubscribed.
	mu          sync.RWMutex
	exact       map[string][]*subscription // by subject, for subjects without a wildcard
	wild        []*subscription            // subjects ending in ">"
	byNATS      map[*nats.Subscription]*subscription
	closed      bool
	droppedGone uint64 // drops counted on subscriptions already cancelled
	dropsMoved  bool   // close has added every subscription's drops to droppedGone

	closeOnce sync.Once
	closeErr  error

	slowEvents   atomic.Uint64
	localDropped atomic.Uint64
	localSlow    atomic.Bool // the local queue dropped since a message last got through

	warnMu     sync.Mutex
	lastWarn   time.Time
	suppressed uint64
}

// localMsg is a local publish queued for one local subscription.
type localMsg struct {
	sub     *subscription
	subject string
	data    []byte
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
	b := newBus(log, bufferSize, nil)
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

// newBus makes a Bus with dispatch buffers of size; srv is the embedded server, or nil.
func newBus(log *slog.Logger, size int, srv *server.Server) *Bus {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var msgs chan *nats.Msg
	if srv == nil {
		msgs = make(chan *nats.Msg, size)
	}
	return &Bus{
		log:    log,
		srv:    srv,
		msgs:   msgs,
		local:  make(chan localMsg, size),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
		exact:  make(map[string][]*subscription),
		byNATS: make(map[*nats.Subscription]*subscription),
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
		// The Bus hands its own publishes to its own subscribers (Publish), so the server
		// must not send them back as well.
		nats.NoEcho(),
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

// Publish sends data to subject: to this Bus's own subscribers of it directly (data is
// copied once for all of them), and, unless the server is in-process, to NATS for every
// other subscriber. The caller may reuse data at once. It fails after Close, for a subject
// that is empty, has an empty token or white space, or holds a wildcard, and while
// reconnecting once the reconnect buffer is full.
func (b *Bus) Publish(subject string, data []byte) error {
	if err := checkSubject(subject, false); err != nil {
		return fmt.Errorf("natsbus: publish to %q: %w", subject, err)
	}
	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		return fmt.Errorf("natsbus: publish to %q: %w", subject, ErrClosed)
	}
	var cp []byte
	queue := func(s *subscription) {
		if cp == nil {
			cp = append(make([]byte, 0, len(data)), data...)
		}
		select {
		case b.local <- localMsg{sub: s, subject: subject, data: cp}:
		default:
			b.localDropped.Add(1)
			if !b.localSlow.Swap(true) {
				b.slowConsumer(subject, len(b.local), cap(b.local))
			}
		}
	}
	for _, s := range b.exact[subject] {
		queue(s)
	}
	for _, s := range b.wild {
		if strings.HasPrefix(subject, s.prefix) {
			queue(s)
		}
	}
	b.mu.RUnlock()
	if b.srv != nil {
		return nil
	}
	if err := b.nc.Publish(subject, data); err != nil {
		return fmt.Errorf("natsbus: publish to %q: %w", subject, err)
	}
	return nil
}

// Subscribe calls h, on the Bus's dispatcher goroutine, for every message on subject.
// The subscription is in effect at once for this Bus's own later publishes; for publishes
// from other connections, once a later Flush returns.
func (b *Bus) Subscribe(subject string, h bus.Handler) (bus.Subscription, error) {
	if h == nil {
		return nil, fmt.Errorf("natsbus: subscribe to %q: nil handler", subject)
	}
	if err := checkSubject(subject, true); err != nil {
		return nil, fmt.Errorf("natsbus: subscribe to %q: %w", subject, err)
	}
	s := &subscription{b: b, subject: subject, h: h}
	// Holding mu across ChanSubscribe makes sure the dispatcher cannot look up a message of
	// the new subscription before it is in the map.
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, fmt.Errorf("natsbus: subscribe to %q: %w", subject, ErrClosed)
	}
	if b.srv == nil {
		ns, err := b.nc.ChanSubscribe(subject, b.msgs)
		if err != nil {
			return nil, fmt.Errorf("natsbus: subscribe to %q: %w", subject, err)
		}
		s.ns = ns
		b.byNATS[ns] = s
	}
	if p, ok := wildcardPrefix(subject); ok {
		s.prefix = p
		b.wild = append(b.wild, s)
	} else {
		b.exact[subject] = append(b.exact[subject], s)
	}
	s.active = true
	return s, nil
}

// wildcardPrefix returns what a subject matching subject must begin with, if subject ends in
// the token ">" (as in NATS, ">" inside a longer token is an ordinary character).
func wildcardPrefix(subject string) (string, bool) {
	if subject == ">" {
		return "", true
	}
	if p, ok := strings.CutSuffix(subject, ">"); ok && strings.HasSuffix(p, ".") {
		return p, true // with its dot: "a.>" matches "a.b", not "ab"
	}
	return "", false
}

// checkSubject enforces the subjects the bus contract allows: dot-separated non-empty
// tokens without white space, and (for subscriptions only) a last token of ">". NATS's "*"
// is not part of the contract, so it is refused rather than half supported.
func checkSubject(subject string, subscribe bool) error {
	if subject == "" {
		return errors.New("empty subject")
	}
	rest := subject
	for rest != "" {
		tok, after, more := strings.Cut(rest, ".")
		switch {
		case tok == "":
			return errors.New("empty token")
		case strings.ContainsAny(tok, " \t\r\n"):
			return errors.New("white space in subject")
		case strings.Contains(tok, "*"):
			return errors.New(`"*" wildcards are not supported`)
		case tok == ">":
			if !subscribe {
				return errors.New("wildcard in a published subject")
			}
			if more {
				return errors.New(`">" must be the last token`)
			}
		}
		if more && after == "" {
			return errors.New("empty token")
		}
		rest = after
	}
	return nil
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
		Buffered:           len(b.msgs) + len(b.local),
		Dropped:            b.droppedGone + b.localDropped.Load(),
		SlowConsumerEvents: b.slowEvents.Load(),
	}
	for _, subs := range b.exact {
		st.Subscriptions += len(subs)
	}
	st.Subscriptions += len(b.wild)
	if !b.dropsMoved {
		for ns := range b.byNATS {
			if n, err := ns.Dropped(); err == nil {
				st.Dropped += uint64(n)
			}
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
	// Count the subscriptions' drops while nats.go still answers for them, so that Stats
	// does not go down after Close. byNATS stays until the dispatcher has delivered what is
	// buffered: deliver looks subscriptions up there.
	b.mu.Lock()
	for ns := range b.byNATS {
		if n, err := ns.Dropped(); err == nil {
			b.droppedGone += uint64(n)
		}
	}
	b.dropsMoved = true
	b.mu.Unlock()
	// After Close returns, nats.go has marked every subscription closed under its lock, so
	// the read loop sends nothing more to b.msgs.
	b.nc.Close()
	close(b.stop)
	<-b.done

	b.mu.Lock()
	for _, subs := range b.exact {
		for _, s := range subs {
			s.active = false
		}
	}
	for _, s := range b.wild {
		s.active = false
	}
	clear(b.exact)
	b.wild = nil
	clear(b.byNATS)
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
		case m := <-b.local:
			b.deliverLocal(m)
		case m := <-b.msgs:
			b.deliver(m)
		case <-b.stop:
			for {
				select {
				case m := <-b.local:
					b.deliverLocal(m)
				case m := <-b.msgs:
					b.deliver(m)
				default:
					return
				}
			}
		}
	}
}

// deliver calls the handler of a message from NATS unless its subscription was cancelled.
func (b *Bus) deliver(m *nats.Msg) {
	b.mu.RLock()
	s := b.byNATS[m.Sub]
	b.mu.RUnlock()
	if s != nil {
		s.h(m.Subject, m.Data)
	}
}

// deliverLocal calls the handler of a local publish unless its subscription was cancelled.
func (b *Bus) deliverLocal(m localMsg) {
	b.localSlow.Store(false)
	b.mu.RLock()
	active := m.sub.active
	b.mu.RUnlock()
	if active {
		m.sub.h(m.subject, m.data)
	}
}

// asyncError receives nats.go's asynchronous errors, on its one callback goroutine.
func (b *Bus) asyncError(_ *nats.Conn, sub *nats.Subscription, err error) {
	var subject string
	if sub != nil {
		subject = sub.Subject
	}
	if errors.Is(err, nats.ErrSlowConsumer) {
		b.slowConsumer(subject, len(b.msgs), cap(b.msgs))
		return
	}
	b.warnLimited("bus: NATS error", "subject", subject, "err", err)
}

// slowConsumer counts and reports a dispatch buffer (local or NATS) found full.
func (b *Bus) slowConsumer(subject string, buffered, capacity int) {
	total := b.slowEvents.Add(1)
	b.warnLimited("bus: dispatch buffer full, dropping messages (slow handlers)",
		"subject", subject, "buffered", buffered, "capacity", capacity, "slow_consumer_events", total)
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
	b       *Bus
	subject string
	prefix  string // for a subject ending in ">": the subject without it
	h       bus.Handler
	ns      *nats.Subscription // nil when the server is in-process
	active  bool               // guarded by b.mu
}

// Unsubscribe stops delivery at once: the subscription is removed before the server is
// told, so messages already buffered for it are skipped. Calling it again, or after Close,
// is a no-op.
func (s *subscription) Unsubscribe() error {
	b := s.b
	b.mu.Lock()
	if !s.active {
		b.mu.Unlock()
		return nil
	}
	s.active = false
	if _, ok := wildcardPrefix(s.subject); ok {
		b.wild = slices.DeleteFunc(b.wild, func(o *subscription) bool { return o == s })
	} else {
		subs := slices.DeleteFunc(b.exact[s.subject], func(o *subscription) bool { return o == s })
		if len(subs) == 0 {
			delete(b.exact, s.subject)
		} else {
			b.exact[s.subject] = subs
		}
	}
	if s.ns != nil {
		delete(b.byNATS, s.ns)
		if n, err := s.ns.Dropped(); err == nil {
			b.droppedGone += uint64(n)
		}
	}
	closed := b.closed
	b.mu.Unlock()
	if s.ns == nil || closed {
		return nil
	}
	if err := s.ns.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		return fmt.Errorf("natsbus: unsubscribe from %q: %w", s.subject, err)
	}
	return nil
}

// ServerSubscriptions returns how many subscriptions the embedded server holds (0 for a Bus
// made by Connect), for tests and metrics.
func (b *Bus) ServerSubscriptions() uint32 {
	if b.srv == nil {
		return 0
	}
	return b.srv.NumSubscriptions()
}
