// Package gateway terminates client WebSocket connections: it authenticates the handshake,
// decodes client frames and hands them to chat, and delivers events from the bus to every
// connection of their recipients.
//
// The connection layer is event-driven: one epoll goroutine watches every socket, a few
// reader goroutines (more only while they are all busy) read the connections that have
// bytes, a writer goroutine exists only while a connection has bytes to write, and an idle
// connection holds no goroutine and no buffer. That is what lets one process hold tens of
// thousands of connections in a few KiB each (see docs/architecture.md).
package gateway

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"net/http"
	"net/url"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"

	"github.com/parley-chat/parley/internal/bus"
	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/frame"
	"github.com/parley-chat/parley/internal/limit"
	"github.com/parley-chat/parley/protocol"
)

// Authenticator identifies the user and device behind a WebSocket handshake, from its
// Authorization header or its one-time ?ticket=.
type Authenticator interface {
	AuthenticateWS(r *http.Request) (userID, deviceID string, err error)
}

// Presence is told when a device shows signs of life: on connect, and then at most every
// half heartbeat while frames (pongs included) keep arriving.
type Presence interface {
	Heartbeat(ctx context.Context, userID, deviceID string)
}

// Config tunes the gateway. Zero fields take the defaults.
type Config struct {
	Heartbeat     time.Duration // advertised in ready; silence for 3× this closes (default 10s)
	WriteTimeout  time.Duration // bound on writing queued frames (default 10s)
	MaxFrameBytes int           // a client frame's size limit (default 64 KiB)
	// SendQueueBytes bounds the bytes queued for a connection (beyond what its socket
	// buffers hold): a client that lets more pile up is too slow and is cut off (default
	// 1 MiB). Bytes, not frames, so that a burst of small acks is never mistaken for a
	// stuck reader while a stuck member of a busy group is found quickly.
	SendQueueBytes  int
	FramesPerSecond int // per-connection frame rate limit, with a burst of twice that (default 1000)
	MaxStrikes      int // consecutive bad frames before close 1008 (default 10)
	// LimitedFor is how long a connection may go on sending only frames that are over their
	// limits (answered rate_limited) before it is closed with 1008 (default 5s).
	LimitedFor time.Duration
	// AllowedOrigins are the origins ("https://chat.example.com") from which browsers may
	// open a WebSocket. A handshake with any other Origin gets 403; one without Origin is
	// not from a browser and is judged by its credentials alone. Empty: the server's own
	// origin only (the Host the handshake was sent to).
	AllowedOrigins []string
}

func (c Config) withDefaults() Config {
	if c.Heartbeat <= 0 {
		c.Heartbeat = 10 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.MaxFrameBytes <= 0 {
		c.MaxFrameBytes = 64 << 10
	}
	if c.SendQueueBytes <= 0 {
		c.SendQueueBytes = 1 << 20
	}
	if c.FramesPerSecond <= 0 {
		c.FramesPerSecond = 1000
	}
	if c.MaxStrikes <= 0 {
		c.MaxStrikes = 10
	}
	if c.LimitedFor <= 0 {
		c.LimitedFor = 5 * time.Second
	}
	return c
}

// poller watches connections for readability and calls Conn.readReady, one goroutine per
// connection at a time. readReady reads until the socket has nothing more (a read shorter
// than its buffer) and then calls drained, which reports whether bytes arrived meanwhile
// that the same goroutine should read.
type poller interface {
	add(c *Conn) error
	drained(c *Conn) (again bool)
	remove(c *Conn)
	close()
}

// Gateway owns the connections of this node. Create it with New; stop it with Drain then
// Close.
type Gateway struct {
	cfg  Config
	chat *chat.Service
	bus  bus.Bus
	auth Authenticator
	pres Presence
	lim  *limit.Limiter
	log  *slog.Logger
	poll poller

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	nextID atomic.Uint64
	// origin prefixes this node's connection ids into names unique across nodes (see
	// Conn.origin): deliveries from any node name the connection they skip.
	origin string

	// users and conns hold an entry per connection open on this node (and per user with
	// one), removed when it closes: bounded by the sockets the process may hold.
	mu       sync.RWMutex
	users    map[string]*userConns
	conns    map[uint64]*Conn
	ips      map[string]int32 // open connections per client address
	draining bool

	stop    chan struct{}
	stopped chan struct{}
	ping    []byte // the shared WebSocket ping frame
}

// userConns is the connections of one user on this node and its bus subscription.
type userConns struct {
	conns []*Conn
	sub   bus.Subscription
}

// New builds a gateway and starts its poller and heartbeat sweeper. lim holds the per-user
// limits on what connections send, and how many connections a user or address may hold.
func New(cfg Config, c *chat.Service, b bus.Bus, auth Authenticator, pres Presence, lim *limit.Limiter, log *slog.Logger) (*Gateway, error) {
	ctx, cancel := context.WithCancel(context.Background())
	g := &Gateway{
		cfg:     cfg.withDefaults(),
		chat:    c,
		bus:     b,
		auth:    auth,
		pres:    pres,
		lim:     lim,
		log:     log,
		ctx:     ctx,
		cancel:  cancel,
		origin:  rand.Text()[:10] + ".",
		users:   make(map[string]*userConns),
		conns:   make(map[uint64]*Conn),
		ips:     make(map[string]int32),
		stop:    make(chan struct{}),
		stopped: make(chan struct{}),
		ping:    frame.Build(frame.OpPing, nil),
	}
	p, err := newPoller(func(err error) {
		log.Error("epoll loop stopped: connections are no longer read", "err", err)
	})
	if err != nil {
		cancel()
		return nil, err
	}
	g.poll = p
	go g.sweep()
	return g, nil
}

// Len returns the number of open connections.
func (g *Gateway) Len() int {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return len(g.conns)
}

// ServeHTTP authenticates and upgrades GET /api/v1/ws. Authentication fails with 401 before
// the upgrade; a draining gateway answers 503 so the client tries again elsewhere.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.mu.RLock()
	draining := g.draining
	g.mu.RUnlock()
	if draining {
		w.Header().Set("Retry-After", "1")
		httpError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "server is shutting down; reconnect")
		return
	}
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		w.Header().Set("Upgrade", "websocket")
		httpError(w, http.StatusBadRequest, protocol.CodeBadRequest, "this endpoint takes a WebSocket handshake (Upgrade: websocket)")
		return
	}
	if !g.originAllowed(r) {
		httpError(w, http.StatusForbidden, protocol.CodeForbidden, "WebSocket connections from origin "+chat.Clip(r.Header.Get("Origin"))+" are not allowed")
		return
	}
	// The address is judged before the credentials, so that a handshake refused for it does
	// not use up a one-time ticket.
	ip := g.lim.ClientIP(r)
	if err := g.admitAddr(ip); err != nil {
		w.Header().Set("Retry-After", "10")
		httpError(w, http.StatusTooManyRequests, protocol.CodeRateLimited, err.Error())
		return
	}
	userID, deviceID, err := g.auth.AuthenticateWS(r)
	if err != nil {
		code, msg := chat.Code(err)
		status := http.StatusUnauthorized
		switch code {
		case protocol.CodeUnauthorized:
		case protocol.CodeInternal, protocol.CodeUnavailable:
			// Not the client's fault: it must retry, not give up on its credentials.
			g.log.Error("websocket authentication", "err", err)
			status, code, msg = http.StatusServiceUnavailable, protocol.CodeUnavailable, "cannot check credentials now; retry"
			w.Header().Set("Retry-After", "1")
		default:
			code = protocol.CodeUnauthorized
		}
		httpError(w, status, code, msg)
		return
	}
	if err := g.admitUser(userID); err != nil {
		w.Header().Set("Retry-After", "10")
		httpError(w, http.StatusTooManyRequests, protocol.CodeRateLimited, err.Error())
		return
	}
	nc, rw, _, err := ws.UpgradeHTTP(r, w)
	if err != nil {
		g.log.Debug("websocket upgrade failed", "err", err)
		if nc != nil {
			_ = nc.Close()
		}
		return
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		_ = nc.Close()
		g.log.Error("websocket: connection has no file descriptor", "type", fmt.Sprintf("%T", nc))
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		_ = nc.Close()
		return
	}
	c := &Conn{g: g, id: g.nextID.Add(1), nc: nc, rc: rc, userID: userID, deviceID: deviceID, ip: ip}
	c.lastRead.Store(time.Now().UnixMilli())
	c.tokens = float64(2 * g.cfg.FramesPerSecond)
	c.tokenTS = time.Now().UnixMicro()
	c.lastBeat = c.lastRead.Load()
	// ready goes first in the queue, before the connection is visible to deliveries, and
	// is written only once the connection is registered: a client that has read it gets
	// every event published from then on (and a sync it starts then misses nothing). No
	// writer runs until then; c is not shared yet, so no lock is needed to say so.
	c.writing = true
	c.enqueue(frame.MustJSON(protocol.ReadyFrame{
		Type: protocol.FrameReady, UserID: userID, DeviceID: deviceID,
		HeartbeatMS: g.cfg.Heartbeat.Milliseconds(),
	}))
	if err := g.register(c); err != nil {
		g.log.Warn("register connection", "user", userID, "err", err)
		c.close(ws.StatusInternalServerError, "server busy")
		return
	}
	go c.flush()
	g.pres.Heartbeat(g.ctx, userID, deviceID)
	// Bytes the client sent right behind its handshake are already in the handshake's
	// reader, where the poller cannot see them: handle them here first.
	if rw != nil && rw.Reader.Buffered() > 0 {
		pending, _ := rw.Reader.Peek(rw.Reader.Buffered())
		rest, err := c.consume(append([]byte(nil), pending...))
		if err != nil {
			c.closeFor(err)
			return
		}
		c.in = rest
	}
	if err := g.poll.add(c); err != nil {
		g.log.Error("poll connection", "err", err)
		c.close(ws.StatusInternalServerError, "server error")
	}
}

// register adds c to its user's connections, subscribing to the user's events on the first.
func (g *Gateway) register(c *Conn) error {
	flush := false
	defer func() {
		// With an external NATS, a subscription takes effect once the server has it: wait
		// for that, so that no event published after the client's next sync is missed.
		if flush {
			ctx, cancel := context.WithTimeout(g.ctx, 5*time.Second)
			_ = g.bus.Flush(ctx)
			cancel()
		}
	}()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.draining {
		return errors.New("draining")
	}
	u := g.users[c.userID]
	if u == nil {
		sub, err := g.bus.Subscribe(bus.UserSubject(c.userID), g.deliver)
		if err != nil {
			return err
		}
		u = &userConns{sub: sub}
		g.users[c.userID] = u
		flush = true
	}
	u.conns = append(u.conns, c)
	g.conns[c.id] = c
	g.ips[c.ip]++
	return nil
}

// admitAddr refuses a connection past ConnsPerIP from ip on this node, admitUser one past
// ConnsPerUser of userID. (Two handshakes at once may both pass: the bound is loose by the
// handshakes in flight, not unbounded.)
func (g *Gateway) admitAddr(ip string) error {
	max := g.lim.Config().ConnsPerIP
	g.mu.RLock()
	defer g.mu.RUnlock()
	if int(g.ips[ip]) >= max {
		return fmt.Errorf("too many connections from this address (%d)", max)
	}
	return nil
}

func (g *Gateway) admitUser(userID string) error {
	max := g.lim.Config().ConnsPerUser
	g.mu.RLock()
	defer g.mu.RUnlock()
	if u := g.users[userID]; u != nil && len(u.conns) >= max {
		return fmt.Errorf("too many connections for this user (%d); close one", max)
	}
	return nil
}

// originAllowed checks a browser handshake's Origin against AllowedOrigins (default: the
// origin of the server itself, as the browser addressed it). Without the check any web page
// a user visits could open a socket with a ticket it obtained, or ride on credentials the
// browser attaches.
func (g *Gateway) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true // not a browser: the credentials decide
	}
	if len(g.cfg.AllowedOrigins) == 0 {
		u, err := url.Parse(origin)
		return err == nil && (u.Scheme == "http" || u.Scheme == "https") && strings.EqualFold(u.Host, r.Host)
	}
	for _, o := range g.cfg.AllowedOrigins {
		if o == "*" || strings.EqualFold(strings.TrimSuffix(o, "/"), origin) {
			return true
		}
	}
	return false
}

// unregister forgets c, unsubscribing its user when it was the last connection.
func (g *Gateway) unregister(c *Conn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.conns[c.id]; !ok {
		return
	}
	delete(g.conns, c.id)
	if g.ips[c.ip]--; g.ips[c.ip] <= 0 {
		delete(g.ips, c.ip)
	}
	u := g.users[c.userID]
	if u == nil {
		return
	}
	for i, x := range u.conns {
		if x == c {
			u.conns = append(u.conns[:i:i], u.conns[i+1:]...)
			break
		}
	}
	if len(u.conns) == 0 {
		_ = u.sub.Unsubscribe()
		delete(g.users, c.userID)
	}
}

// deliver is the bus handler for user subjects: it enqueues the event's frame, as is, on
// every connection of the user except the connection that produced it.
func (g *Gateway) deliver(subject string, data []byte) {
	except, f, control, err := frame.ParseDelivery(data)
	if err != nil {
		g.log.Warn("bad delivery on bus", "subject", subject, "err", err)
		return
	}
	var skip uint64 // 0: no connection of this node is skipped (ids start at 1)
	if id, ok := strings.CutPrefix(except, g.origin); ok {
		skip, _ = strconv.ParseUint(id, 36, 64)
	}
	var ctl chat.Control
	if control != nil {
		var err error
		if ctl, err = decodeControl(control); err != nil {
			g.log.Warn("bad control message on bus", "subject", subject, "err", err)
			return
		}
	}
	userID := bus.UserFromSubject(subject)
	g.mu.RLock()
	defer g.mu.RUnlock()
	u := g.users[userID]
	if u == nil {
		return
	}
	for _, c := range u.conns {
		switch {
		case control != nil:
			if ctl.DisconnectDevice == c.deviceID {
				// Not under g.mu: close unregisters.
				go c.close(ws.StatusPolicyViolation, "logged out")
			}
		case c.id != skip:
			c.enqueue(f)
		}
	}
}

// decodeControl is apart from deliver so that the Control it decodes into escapes to the
// heap only for control messages, not for every delivery.
func decodeControl(data []byte) (chat.Control, error) {
	var ctl chat.Control
	err := json.Unmarshal(data, &ctl)
	return ctl, err
}

// heapTrimmer returns free heap memory to the OS when there is much of it and the server is
// quiet. A burst of connections leaves its handshakes' garbage (net/http's buffers, about
// 10 KiB each) in the heap, which the runtime keeps as headroom and returns only slowly; a
// server holding tens of thousands of idle connections in a few KiB each should not sit on
// it. Under load the headroom is in use, and trimming would only make the heap grow back
// page by page, so a busy server (allocating more than 8 MiB/s; 19,000 idle connections
// heartbeating allocate about 2 MiB/s, 10,000 messages/s about 50) is left alone. Reading the
// metrics does not stop the world; a trim is one full collection.
type heapTrimmer struct {
	samples []metrics.Sample
	allocs  uint64 // bytes allocated as of the last check
}

func newHeapTrimmer() *heapTrimmer {
	return &heapTrimmer{samples: []metrics.Sample{
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/gc/heap/allocs:bytes"},
	}}
}

func (h *heapTrimmer) check(interval time.Duration) {
	metrics.Read(h.samples)
	free, live, allocs := h.samples[0].Value.Uint64(), h.samples[1].Value.Uint64(), h.samples[2].Value.Uint64()
	rate := float64(allocs-h.allocs) / interval.Seconds()
	h.allocs = allocs
	if free > 16<<20 && free > live/4 && rate < 8<<20 {
		debug.FreeOSMemory()
	}
}

// sweep pings connections that have been silent for a heartbeat and closes those silent for
// three: a peer that vanished without a FIN must not hold its slot forever.
func (g *Gateway) sweep() {
	defer close(g.stopped)
	t := time.NewTicker(g.cfg.Heartbeat / 2)
	defer t.Stop()
	var conns []*Conn
	trim := newHeapTrimmer()
	for {
		select {
		case <-g.stop:
			return
		case <-t.C:
		}
		trim.check(g.cfg.Heartbeat / 2)
		now := time.Now().UnixMilli()
		hb := g.cfg.Heartbeat.Milliseconds()
		conns = g.snapshot(conns[:0])
		for _, c := range conns {
			switch silent := now - c.lastRead.Load(); {
			case silent > 3*hb:
				go c.close(ws.StatusGoingAway, "no heartbeat")
			case silent > hb:
				c.enqueue(g.ping)
			}
		}
		clear(conns)
	}
}

func (g *Gateway) snapshot(dst []*Conn) []*Conn {
	g.mu.RLock()
	defer g.mu.RUnlock()
	for _, c := range g.conns {
		dst = append(dst, c)
	}
	return dst
}

// Drain stops taking connections and tells every client to reconnect elsewhere (goaway).
// Connections stay open so that acks of sends in flight still reach them.
func (g *Gateway) Drain(reconnect time.Duration) {
	g.mu.Lock()
	g.draining = true
	g.mu.Unlock()
	f := frame.MustJSON(protocol.GoawayFrame{Type: protocol.FrameGoaway, ReconnectMS: reconnect.Milliseconds(), Reason: "server shutting down"})
	for _, c := range g.snapshot(nil) {
		c.enqueue(f)
	}
}

// Close waits (until ctx ends) for queued frames to be written, then closes every connection
// with 1001 (going away) and stops the gateway's goroutines.
func (g *Gateway) Close(ctx context.Context) error {
	g.mu.Lock()
	g.draining = true
	g.mu.Unlock()
	conns := g.snapshot(nil)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
wait:
	for _, c := range conns {
		for !c.idle() {
			select {
			case <-ctx.Done():
				break wait
			case <-tick.C:
			}
		}
	}
	late := 0
	for _, c := range conns {
		if ctx.Err() != nil {
			// Out of time: do not wait on full sockets. Not cut, which logs each one.
			if !c.idle() {
				late++
			}
			c.end(ws.StatusGoingAway, "server shutting down", 10*time.Millisecond, true)
		} else {
			c.close(ws.StatusGoingAway, "server shutting down")
		}
	}
	if late > 0 {
		g.log.Warn("shutdown: connections closed with frames still queued", "connections", late)
	}
	close(g.stop)
	<-g.stopped
	// Before the poller waits for its readers: none stays blocked on g.ctx. (A reader can
	// also block handing a frame to chat, whose queues take no context; the server closes
	// chat before the gateway, which unblocks them.)
	g.cancel()
	g.poll.close()
	return nil
}

func httpError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(protocol.ErrorBody{Error: protocol.Error{Code: code, Message: msg}})
}
