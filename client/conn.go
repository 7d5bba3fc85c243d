package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/parley-chat/parley/protocol"
)

// Defaults of a Conn. None of them is in the wire contract; they are the client's choices.
const (
	defaultEventBuffer = 256
	defaultMinBackoff  = 100 * time.Millisecond
	defaultMaxBackoff  = 5 * time.Second
	defaultDialTimeout = 10 * time.Second
	// defaultHeartbeat is used when the ready frame says nothing (heartbeat_ms 0).
	defaultHeartbeat = 25 * time.Second
	// writeTimeout bounds one frame write; a peer that stops reading for that long is dead.
	writeTimeout = 10 * time.Second
	// maxMessageSize bounds one incoming WebSocket message. The contract sets no limit; a
	// frame this large from a chat server is a bug, and reading it whole would hurt.
	maxMessageSize = 16 << 20
	// historyPage is the page size for history fetches: the contract's maximum.
	historyPage = 200
	// fetchTimeout bounds one history or sync request made by the Conn itself.
	fetchTimeout = 30 * time.Second
	// gapAttempts is how often the reader tries to fill a gap before it hands the
	// conversation to the run loop's catch-up.
	gapAttempts = 3
	// rateLimitWait is how long the Conn waits, after an id-less rate_limited error frame,
	// before resending the requests that may have been the rejected ones. The server's
	// limit is per second.
	rateLimitWait = time.Second
	// bigBuffer is the size above which a reused buffer is dropped after use, so one huge
	// frame does not pin its memory for the connection's lifetime.
	bigBuffer = 1 << 20
)

// ErrClosed is returned by calls on a Conn that is closed, or that stopped for good; in the
// latter case the returned error also wraps the reason (see Conn.Err).
var ErrClosed = errors.New("client: connection closed")

// ConnectOption configures a Conn.
type ConnectOption func(*connConfig)

type connConfig struct {
	resumeFromStart bool
	ticket          bool
	eventBuffer     int
	minBackoff      time.Duration
	maxBackoff      time.Duration
	dialTimeout     time.Duration
	rateLimitWait   time.Duration
}

// ResumeFromStart makes Events start at each conversation's first event: the first connect
// syncs from the empty token and fetches every conversation's history, and a conversation
// first seen later is also delivered from its start. Without it, Events starts at the
// moment Connect returns.
func ResumeFromStart() ConnectOption { return func(c *connConfig) { c.resumeFromStart = true } }

// WithTicket authenticates every handshake with a fresh one-time ticket (POST /ws/ticket, as
// ?ticket=) instead of the Authorization header.
func WithTicket() ConnectOption { return func(c *connConfig) { c.ticket = true } }

// WithEventBuffer sets the capacity of the Events channel (default 256; minimum 1).
func WithEventBuffer(n int) ConnectOption {
	return func(c *connConfig) { c.eventBuffer = max(n, 1) }
}

// WithBackoff sets the reconnect backoff: the first retry waits about first, each further
// one doubles, up to limit (defaults 100ms and 5s). Every delay is jittered to between half and
// all of its value so that clients dropped together do not come back together.
func WithBackoff(first, limit time.Duration) ConnectOption {
	return func(c *connConfig) {
		if first > 0 {
			c.minBackoff = first
		}
		if limit >= c.minBackoff {
			c.maxBackoff = limit
		}
	}
}

// WithDialTimeout bounds each connection attempt: TCP, TLS, handshake and ready frame
// (default 10s).
func WithDialTimeout(d time.Duration) ConnectOption {
	return func(c *connConfig) {
		if d > 0 {
			c.dialTimeout = d
		}
	}
}

// Conn is a WebSocket connection to the server that survives network failures: it owns a
// run goroutine that reconnects and resumes, and one reader goroutine per underlying
// connection. All methods are safe for concurrent use. Close stops everything it started.
//
// Events: see Events for the delivery guarantee. Requests: Send, Edit, Delete, React and
// Ping are resent with the same id after a reconnect until answered; Receipt and Typing are
// written once.
type Conn struct {
	cl  *Client
	cfg connConfig
	log *slog.Logger

	ctx       context.Context // cancelled by Close: bounds every goroutine and request of the Conn
	cancel    context.CancelFunc
	events    chan Event
	done      chan struct{} // closed when every goroutine of the Conn has returned
	err       error         // why the Conn stopped on its own; written before done is closed
	closeOnce sync.Once

	// mu guards the live session and the requests waiting for an answer.
	mu        sync.Mutex
	cur       *session      // the live session; nil while (re)connecting
	liveCh    chan struct{} // closed when cur becomes non-nil; replaced when it goes nil again
	nextGen   uint64
	waiters   map[string]*waiter
	nextOrder uint64
	ready     protocol.ReadyFrame

	// dmu guards delivery: what each conversation has delivered, and resume state. It is
	// held while an event is handed to the events channel, which is what keeps every
	// conversation's events in seq order across the reader and the run loop.
	dmu     sync.Mutex
	convs   map[string]*convState
	stale   map[string]struct{} // conversations whose gap the reader could not fill
	stashed map[string]struct{} // conversations with acked own events waiting for a gap
	since   string              // sync token of the last completed catch-up
	staleCh chan struct{}       // capacity 1: tells the run loop that stale is not empty
}

// Connect dials the WebSocket, waits for the ready frame and takes the resume baseline
// (GET /sync), then returns a Conn that stays connected until Close. ctx bounds only this
// first connection; a 401 at the handshake refreshes the tokens once and retries. Later
// reconnects happen in the background and never fail the Conn, except for authentication
// that cannot be repaired (see Conn.Err).
func (c *Client) Connect(ctx context.Context, opts ...ConnectOption) (*Conn, error) {
	cfg := connConfig{
		eventBuffer: defaultEventBuffer,
		minBackoff:  defaultMinBackoff,
		maxBackoff:  defaultMaxBackoff,
		dialTimeout: defaultDialTimeout,
		// Not an option: tests in this package shorten it.
		rateLimitWait: rateLimitWait,
	}
	for _, o := range opts {
		o(&cfg)
	}
	cctx, cancel := context.WithCancel(context.Background())
	cn := &Conn{
		cl:      c,
		cfg:     cfg,
		log:     c.log,
		ctx:     cctx,
		cancel:  cancel,
		events:  make(chan Event, cfg.eventBuffer),
		done:    make(chan struct{}),
		liveCh:  make(chan struct{}),
		waiters: make(map[string]*waiter),
		convs:   make(map[string]*convState),
		stale:   make(map[string]struct{}),
		stashed: make(map[string]struct{}),
		staleCh: make(chan struct{}, 1),
	}
	s, err := cn.dial(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("client: connect: %w", err)
	}
	if err := cn.baseline(ctx); err != nil {
		s.kill()
		s.release()
		cancel()
		return nil, fmt.Errorf("client: connect: %w", err)
	}
	go cn.run(s)
	return cn, nil
}

// Events returns the channel of server events. It is closed after Close, or after the Conn
// stops on its own (see Err).
//
// Guarantee: for every conversation, message events (Type EventMessage) arrive exactly once
// each and in seq order with no gap, across reconnects: duplicates are dropped by
// (conversation_id, seq), and a gap, whether found live or after a reconnect, is filled from
// history first (those events have Resumed set). A conversation starts at the baseline:
// without ResumeFromStart, the events after its last_seq at Connect, or, for a
// conversation first seen live later, that event; with it, the conversation's first event.
// Events this Conn sent itself are delivered too, built from the ack (sender = this user)
// if the server does not echo them to the sending connection. Receipts, typing, presence,
// goaway and unmatched error frames are passed through as they arrive, never replayed.
//
// Backpressure: the channel is buffered (WithEventBuffer). When it is full the reader
// waits for the consumer, so acks, pongs and further events wait too and Send calls are
// slowed by a slow consumer rather than the Conn buffering without bound. The consumer must
// therefore not wait on this Conn's Send from the goroutine that drains Events.
func (c *Conn) Events() <-chan Event { return c.events }

// Done is closed when the Conn has stopped and every goroutine it started has returned.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns why the Conn stopped on its own (authentication that refresh could not
// repair), or nil while it runs or after a plain Close.
func (c *Conn) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// Ready returns the ready frame of the most recent connection (user, device, heartbeat).
func (c *Conn) Ready() protocol.ReadyFrame {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ready
}

// Close closes the connection, stops every goroutine of the Conn and waits for them. Calls
// waiting for an answer return ErrClosed. It is safe to call more than once.
func (c *Conn) Close() error {
	c.closeOnce.Do(c.cancel)
	<-c.done
	return nil
}

// closedErr is what calls return once the Conn is done.
func (c *Conn) closedErr() error {
	if c.err != nil {
		return fmt.Errorf("%w: %w", ErrClosed, c.err)
	}
	return ErrClosed
}

// session is one underlying WebSocket connection. Its reader goroutine is owned by the run
// loop, which waits for readerDone before it dials the next one.
type session struct {
	gen   uint64
	nc    net.Conn
	br    *bufio.Reader
	poolB bool // br came from the ws package's pool (Dial returned it); give it back
	ready protocol.ReadyFrame

	rd   wsutil.Reader // used by the dialer, then only by the reader goroutine
	rbuf bytes.Buffer
	cbuf bytes.Buffer // control frame payloads

	readerDone chan struct{}
	readErr    error              // why the reader stopped; written before readerDone closes
	goaway     chan time.Duration // capacity 1: the server asked us to reconnect after this
	limited    chan struct{}      // capacity 1: an id-less rate_limited error arrived

	killOnce sync.Once

	wmu  sync.Mutex // serialises writes; guards the fields below
	jbuf bytes.Buffer
	enc  *json.Encoder
	out  bytes.Buffer
	hdr  [ws.MaxHeaderSize]byte
}

func newSession(gen uint64, nc net.Conn, br *bufio.Reader) *session {
	s := &session{
		gen:        gen,
		nc:         nc,
		br:         br,
		poolB:      br != nil,
		readerDone: make(chan struct{}),
		goaway:     make(chan time.Duration, 1),
		limited:    make(chan struct{}, 1),
	}
	if s.br == nil {
		s.br = bufio.NewReaderSize(nc, 8<<10)
	}
	s.rd = wsutil.Reader{
		Source:         s.br,
		State:          ws.StateClientSide,
		MaxMessageSize: maxMessageSize,
		OnIntermediate: s.control,
	}
	s.enc = json.NewEncoder(&s.jbuf)
	s.enc.SetEscapeHTML(false)
	return s
}

// heartbeat is how often the client pings: the server's heartbeat_ms.
func (s *session) heartbeat() time.Duration {
	if s.ready.HeartbeatMS > 0 {
		return time.Duration(s.ready.HeartbeatMS) * time.Millisecond
	}
	return defaultHeartbeat
}

// readTimeout is how long the reader waits for any frame before declaring the connection
// dead. The run loop pings every heartbeat and the server answers each ping, so silence for
// two heartbeats means the connection is gone even if TCP has not noticed.
func (s *session) readTimeout() time.Duration { return 2*s.heartbeat() + 5*time.Second }

// kill closes the network connection, which ends the reader and fails pending writes.
func (s *session) kill() { s.killOnce.Do(func() { _ = s.nc.Close() }) }

// release returns pooled memory. Only after kill and after the reader has returned.
func (s *session) release() {
	if s.poolB {
		ws.PutReader(s.br)
		s.poolB = false
	}
}

// writeJSON encodes v once into a reused buffer and writes it as one masked text frame.
// A failed write kills the session: the run loop then reconnects and resends.
func (s *session) writeJSON(v any) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.jbuf.Reset()
	if err := s.enc.Encode(v); err != nil {
		return fmt.Errorf("encode frame: %w", err)
	}
	p := s.jbuf.Bytes()
	err := s.writeFrameLocked(ws.OpText, p[:len(p)-1], writeTimeout) // Encode appends a newline
	if s.jbuf.Cap() > bigBuffer {
		s.jbuf = bytes.Buffer{}
	}
	return err
}

// writeFrame writes one frame with the given opcode (control frames).
func (s *session) writeFrame(op ws.OpCode, p []byte, timeout time.Duration) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.writeFrameLocked(op, p, timeout)
}

func (s *session) writeFrameLocked(op ws.OpCode, p []byte, timeout time.Duration) error {
	h := ws.Header{Fin: true, OpCode: op, Masked: true, Mask: ws.NewMask(), Length: int64(len(p))}
	s.out.Reset()
	if err := ws.WriteHeaderBuffer(&s.out, h, s.hdr[:]); err != nil {
		return fmt.Errorf("ws write: %w", err)
	}
	n := s.out.Len()
	s.out.Write(p)
	ws.Cipher(s.out.Bytes()[n:], h.Mask, 0)
	_ = s.nc.SetWriteDeadline(time.Now().Add(timeout))
	_, err := s.nc.Write(s.out.Bytes())
	if s.out.Cap() > bigBuffer {
		s.out = bytes.Buffer{}
	}
	if err != nil {
		s.kill()
		return fmt.Errorf("ws write: %w", err)
	}
	return nil
}

// errBadFrame marks a text frame that is not valid JSON: logged and skipped, not fatal.
var errBadFrame = errors.New("undecodable frame")

// nextFrame reads the next text message and decodes it, answering control frames on the way.
func (s *session) nextFrame() (*protocol.ServerFrame, error) {
	for {
		hdr, err := s.rd.NextFrame()
		if err != nil {
			return nil, err
		}
		if hdr.OpCode.IsControl() {
			if err := s.control(hdr, &s.rd); err != nil {
				return nil, err
			}
			continue
		}
		if hdr.OpCode != ws.OpText { // binary frames are not part of the contract
			if err := s.rd.Discard(); err != nil {
				return nil, err
			}
			continue
		}
		s.rbuf.Reset()
		if _, err := s.rbuf.ReadFrom(&s.rd); err != nil {
			return nil, err
		}
		f := new(protocol.ServerFrame)
		err = json.Unmarshal(s.rbuf.Bytes(), f)
		if s.rbuf.Cap() > bigBuffer {
			s.rbuf = bytes.Buffer{}
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errBadFrame, err)
		}
		return f, nil
	}
}

// control answers a ping with a pong, ignores a pong, and answers a close with a close and
// wsutil.ClosedError. It is also the reader's OnIntermediate hook.
func (s *session) control(h ws.Header, r io.Reader) error {
	s.cbuf.Reset()
	if _, err := s.cbuf.ReadFrom(r); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	p := s.cbuf.Bytes()
	switch h.OpCode {
	case ws.OpPing:
		return s.writeFrame(ws.OpPong, p, writeTimeout)
	case ws.OpClose:
		code, reason := ws.ParseCloseFrameData(p)
		var body []byte
		if len(p) >= 2 {
			body = p[:2] // echo the code, as RFC 6455 section 5.5.1 suggests
		}
		_ = s.writeFrame(ws.OpClose, body, time.Second)
		return wsutil.ClosedError{Code: code, Reason: reason}
	}
	return nil
}

// dial makes one connection attempt, refreshing the tokens (or taking a new ticket) and
// trying once more if the handshake answers 401.
func (c *Conn) dial(ctx context.Context) (*session, error) {
	for attempt := 0; ; attempt++ {
		s, token, err := c.dialOnce(ctx)
		if err == nil {
			return s, nil
		}
		if attempt > 0 || errorStatus(err) != http.StatusUnauthorized || (!c.cfg.ticket && !c.cl.canRefresh()) {
			return nil, err
		}
		if !c.cfg.ticket {
			// The refresh error decides what happens next: a refused refresh token is
			// final, a network failure is not.
			if rerr := c.cl.refreshAfter(ctx, token); rerr != nil {
				return nil, fmt.Errorf("refresh after handshake 401: %w", rerr)
			}
		}
	}
}

// dialOnce dials, upgrades and waits for the ready frame. It returns the access token it
// used, for the refresh decision.
func (c *Conn) dialOnce(ctx context.Context) (*session, string, error) {
	u := c.cl.wsURL
	d := ws.Dialer{Timeout: c.cfg.dialTimeout, TLSConfig: c.cl.tlsConfig()}
	token := ""
	if c.cfg.ticket {
		t, err := c.cl.WSTicket(ctx)
		if err != nil {
			return nil, "", fmt.Errorf("ws ticket: %w", err)
		}
		u += "?ticket=" + url.QueryEscape(t.Ticket)
	} else if token = c.cl.accessToken(); token != "" {
		d.Header = ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Bearer " + token}})
	}
	var rejected *APIError
	d.OnStatusError = func(status int, _ []byte, resp io.Reader) {
		rejected = readRejection(status, resp)
	}
	nc, br, _, err := d.Dial(ctx, u)
	if err != nil {
		var se ws.StatusError
		if errors.As(err, &se) {
			if rejected == nil {
				rejected = &APIError{Status: int(se), Code: codeForStatus(int(se)), Message: http.StatusText(int(se))}
			}
			rejected.Op = "ws handshake"
			return nil, token, rejected
		}
		return nil, token, fmt.Errorf("ws dial %s: %w", c.cl.wsURL, err)
	}
	c.mu.Lock()
	c.nextGen++
	gen := c.nextGen
	c.mu.Unlock()
	s := newSession(gen, nc, br)
	_ = nc.SetReadDeadline(time.Now().Add(c.cfg.dialTimeout))
	f, err := s.nextFrame()
	if err == nil {
		switch f.Type {
		case protocol.FrameReady:
		case protocol.FrameError:
			err = &APIError{Op: "ws handshake", Code: f.Code, Message: f.ErrMessage}
		default:
			err = fmt.Errorf("first frame is %q, want ready", f.Type)
		}
	}
	if err != nil {
		s.kill()
		s.release()
		return nil, token, fmt.Errorf("ws waiting for ready: %w", err)
	}
	s.ready = protocol.ReadyFrame{Type: f.Type, UserID: f.UserID, DeviceID: f.DeviceID, HeartbeatMS: f.HeartbeatMS}
	c.mu.Lock()
	c.ready = s.ready
	c.mu.Unlock()
	return s, token, nil
}

// readRejection decodes a non-101 handshake answer like any HTTP error.
func readRejection(status int, resp io.Reader) *APIError {
	r, err := http.ReadResponse(bufio.NewReader(resp), nil)
	if err != nil {
		return nil
	}
	defer r.Body.Close()
	return decodeAPIError("ws handshake", status, r.Header, r.Body)
}

// baseline takes the resume starting point right after the first connect; see Events.
func (c *Conn) baseline(ctx context.Context) error {
	body, err := c.cl.Sync(ctx, "")
	if err != nil {
		return fmt.Errorf("initial sync: %w", err)
	}
	c.dmu.Lock()
	defer c.dmu.Unlock()
	for _, cv := range body.Conversations {
		if c.cfg.resumeFromStart {
			c.convs[cv.ID] = &convState{}
			if cv.LastSeq > 0 {
				c.stale[cv.ID] = struct{}{}
			}
		} else {
			c.convs[cv.ID] = &convState{high: cv.LastSeq}
		}
	}
	c.since = body.NextSince
	return nil
}

// run is the Conn's supervisor goroutine: it serves each session, and reconnects with
// backoff when one ends, until Close or an authentication failure refresh cannot repair.
// It owns every reader goroutine and is the only goroutine that closes events and done.
func (c *Conn) run(s *session) {
	defer func() {
		close(c.events)
		close(c.done)
	}()
	attempt := 0
	resync := false // the first session needs no sync: baseline just took it
	for {
		start := time.Now()
		wait, goaway := c.serve(s, resync)
		c.down(s)
		if c.ctx.Err() != nil {
			return
		}
		resync = true
		var delay time.Duration
		switch {
		case goaway:
			delay = wait
			c.log.Info("parley: server going away, reconnecting", "after", wait)
		default:
			if time.Since(start) > 2*c.cfg.maxBackoff {
				attempt = 0 // it was up for a while: this is a fresh failure
			}
			attempt++
			delay = c.backoff(attempt)
			c.log.Info("parley: connection lost, reconnecting", "err", s.readErr, "after", delay)
		}
		for {
			if !c.sleep(delay) {
				return
			}
			ns, err := c.dial(c.ctx)
			if err == nil {
				s = ns
				break
			}
			if c.ctx.Err() != nil {
				return
			}
			if terminal(err) {
				c.err = err
				c.log.Error("parley: giving up reconnecting", "err", err)
				return
			}
			attempt++
			delay = c.backoff(attempt)
			var ae *APIError
			if errors.As(err, &ae) && ae.RetryAfter > delay {
				delay = ae.RetryAfter
			}
			c.log.Warn("parley: reconnect failed", "err", err, "retry_after", delay)
		}
	}
}

// terminal reports whether a reconnect error cannot be cured by waiting: the server refuses
// this device (4xx other than timeouts and rate limits), or there is no token to refresh.
func terminal(err error) bool {
	if errors.Is(err, ErrNoRefreshToken) {
		return true
	}
	st := errorStatus(err)
	return st >= 400 && st < 500 && st != http.StatusRequestTimeout && st != http.StatusTooManyRequests
}

// serve runs one session until it ends: it starts the reader, resends what is unanswered,
// then pings every heartbeat and runs catch-ups (resync after a reconnect, and conversations
// the reader could not repair). It returns the goaway delay if the server asked to move.
func (c *Conn) serve(s *session, resync bool) (wait time.Duration, goaway bool) {
	go c.read(s)
	if !c.goLive(s) {
		return 0, false
	}
	hb := s.heartbeat()
	ticker := time.NewTicker(hb)
	defer ticker.Stop()
	var catchC <-chan time.Time
	if resync || c.hasStale() {
		catchC = time.After(0)
	}
	catchAttempt := 0
	var (
		limitC    <-chan time.Time
		limitMark uint64
	)
	for {
		select {
		case <-c.ctx.Done():
			// Best effort: say goodbye, but do not hold Close up for a stuck peer.
			_ = s.writeFrame(ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""), time.Second)
			return 0, false
		case <-s.readerDone:
			return 0, false
		case d := <-s.goaway:
			return d, true
		case <-ticker.C:
			_ = s.writeJSON(&pingFrame) // a failure kills the session; readerDone follows
			if c.checkStashes(hb) && catchC == nil {
				catchC = time.After(0)
			}
		case <-c.staleCh:
			if catchC == nil {
				catchC = time.After(0)
			}
		case <-s.limited:
			if limitC == nil {
				limitC, limitMark = time.After(c.cfg.rateLimitWait), c.lastOrder()
			}
		case <-limitC:
			limitC = nil
			c.resendUnanswered(s, limitMark)
		case <-catchC:
			catchC = nil
			if err := c.catchUp(resync); err != nil {
				if c.ctx.Err() != nil {
					return 0, false
				}
				catchAttempt++
				d := c.backoff(catchAttempt)
				c.log.Warn("parley: resume failed, retrying", "err", err, "after", d)
				catchC = time.After(d)
				continue
			}
			resync, catchAttempt = false, 0
		}
	}
}

// pingFrame is the heartbeat: a ping without id, whose pong is ignored.
var pingFrame = protocol.ClientFrame{Type: protocol.FramePing}

// down retires s: no new writes go to it, its connection is closed, and its reader has
// returned when down returns.
func (c *Conn) down(s *session) {
	c.mu.Lock()
	if c.cur == s {
		c.cur = nil
		c.liveCh = make(chan struct{})
	}
	c.mu.Unlock()
	s.kill()
	<-s.readerDone
	s.release()
}

// read is a session's reader goroutine: it decodes frames and dispatches them until the
// connection fails or is killed.
func (c *Conn) read(s *session) {
	defer close(s.readerDone)
	timeout := s.readTimeout()
	for {
		_ = s.nc.SetReadDeadline(time.Now().Add(timeout))
		f, err := s.nextFrame()
		if errors.Is(err, errBadFrame) {
			c.log.Warn("parley: skipping bad frame", "err", err)
			continue
		}
		if err != nil {
			s.readErr = err
			return
		}
		c.dispatch(s, f)
	}
}

// dispatch routes one server frame.
func (c *Conn) dispatch(s *session, f *protocol.ServerFrame) {
	switch f.Type {
	case protocol.FrameAck:
		c.onAck(f)
	case protocol.FrameError:
		if f.ID == "" && f.Code == protocol.CodeRateLimited {
			// The server rejects a frame over its rate before reading its id. Whichever
			// request it was is resent after a while; see resendUnanswered.
			select {
			case s.limited <- struct{}{}:
			default:
			}
		}
		c.onError(f)
	case protocol.FramePong:
		if f.ID != "" {
			c.resolve(f.ID, result{}, true)
		}
	case protocol.FrameMessage:
		c.onMessage(&f.Message, false)
	case protocol.FrameReceipt:
		c.emit(Event{Type: EventReceipt, Receipt: &protocol.ReceiptFrame{
			Type: f.Type, ConversationID: f.ConversationID, UserID: f.UserID, Status: f.Status, Seq: f.Seq, TS: f.TS,
		}})
	case protocol.FrameTyping:
		c.emit(Event{Type: EventTyping, Typing: &protocol.TypingFrame{
			Type: f.Type, ConversationID: f.ConversationID, UserID: f.UserID, State: f.State,
		}})
	case protocol.FramePresence:
		c.emit(Event{Type: EventPresence, Presence: &protocol.PresenceFrame{
			Type: f.Type, UserID: f.UserID, Status: f.Status, LastSeenTS: f.LastSeenTS,
		}})
	case protocol.FrameGoaway:
		select { // signal first: the consumer may be slow to take the event
		case s.goaway <- time.Duration(f.ReconnectMS) * time.Millisecond:
		default:
		}
		c.emit(Event{Type: EventGoaway, Goaway: &protocol.GoawayFrame{
			Type: f.Type, ReconnectMS: f.ReconnectMS, Reason: f.Reason,
		}})
	default:
		c.log.Debug("parley: ignoring frame", "type", f.Type)
	}
}

// backoff is the jittered exponential delay before retry number attempt (1-based).
func (c *Conn) backoff(attempt int) time.Duration {
	d := c.cfg.minBackoff
	for i := 1; i < attempt && d < c.cfg.maxBackoff; i++ {
		d *= 2
	}
	d = min(d, c.cfg.maxBackoff)
	return d/2 + rand.N(d/2+1)
}

// sleep waits d, or returns false if the Conn is closed first.
func (c *Conn) sleep(d time.Duration) bool {
	if d <= 0 {
		return c.ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.ctx.Done():
		return false
	}
}
