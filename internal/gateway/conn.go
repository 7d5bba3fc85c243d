package gateway

import (
	"encoding/json"
	"errors"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/frame"
	"github.com/parley-chat/parley/internal/limit"
	"github.com/parley-chat/parley/protocol"
)

// Conn is one authenticated WebSocket connection of one device.
//
// While idle it holds no goroutine and no buffer: reads happen on one of the poller's reader
// goroutines (or one it starts when they are all busy) when the socket has bytes, using a
// pooled buffer; writes happen on a goroutine that exists only while the send queue is not
// empty.
type Conn struct {
	g        *Gateway
	id       uint64
	nc       net.Conn
	rc       syscall.RawConn
	userID   string
	deviceID string
	ip       string       // the client address, for the per-address connection count
	lastRead atomic.Int64 // unix ms when bytes last arrived

	// Reader state: touched only under rmu, by the one goroutine reading the connection.
	// rstate (the epoll poller's) makes it one: bytes that arrive while a reader is at work
	// make that reader read again instead of starting another. rmu orders the state between
	// successive readers, and keeps any poller honest.
	rstate atomic.Int32
	// hup is set by the poller when the peer has shut down or the socket has an error: the
	// reader must then read on to the end or the error, since a short read no longer means
	// that it will be told of what follows (the kernel returns the last bytes first and the
	// EOF only to the next read, and an edge-triggered socket reports the hang-up once).
	hup     atomic.Bool
	rmu     sync.Mutex
	in      []byte // bytes of a frame not yet complete; nil when none
	discard int64  // payload bytes still to skip of a frame that was too large
	msg     []byte // a fragmented message so far; nil when none
	msgDrop bool   // the fragmented message in progress is too large and is being skipped
	// msgBinary: the message in progress (or just completed) was sent as binary.
	msgBinary bool
	strikes   int // consecutive bad frames
	// A run of frames answered rate_limited: when it began, when its last frame came (unix
	// ms) and how many frames it has. It ends after LimitedFor without one.
	limitedSince, lastLimited int64
	limitedN                  int
	// lastBeat is when presence last heard of this connection (unix ms).
	lastBeat int64
	tokens   float64
	tokenTS  int64

	mu      sync.Mutex
	queue   [][]byte // complete frames waiting for the writer
	queued  int      // bytes in queue and in the writer's hands
	writing bool     // a writer goroutine is running
	cutting bool     // a cut was started for a full queue
	closed  bool
}

// errEOF is the peer closing its side.
var errEOF = errors.New("connection closed by peer")

// closeError asks for the connection to be closed with a WebSocket status code.
type closeError struct {
	code   uint16
	reason string
}

func (e *closeError) Error() string { return e.reason }

var errClosed = errors.New("connection closed")

// readBufPool holds the buffers a readiness event reads into: 4 KiB, since client frames are
// small; a read that fills the buffer is followed by another. Every connection that wakes at
// once takes one (a heartbeat round wakes them all).
var readBufPool = sync.Pool{New: func() any { b := make([]byte, 4<<10); return &b }}

// readReady reads until the socket is drained, handles every complete frame, and keeps a
// partial one for the next event.
func (c *Conn) readReady() {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	bp := readBufPool.Get().(*[]byte)
	defer readBufPool.Put(bp)
	for {
		n, err := c.readSome(*bp)
		if err == nil && n > 0 {
			err = c.received((*bp)[:n])
		}
		if err != nil {
			c.closeFor(err)
			return
		}
		if n == len(*bp) || (n > 0 && c.hup.Load()) {
			continue // the buffer is full, or the peer hung up: there is more, or the end
		}
		if !c.g.poll.drained(c) {
			return
		}
	}
}

// received handles bytes read from the socket: it tells presence the connection is alive
// (at most twice a heartbeat), handles the complete frames and keeps the rest.
func (c *Conn) received(data []byte) error {
	now := time.Now().UnixMilli()
	c.lastRead.Store(now)
	if now-c.lastBeat >= c.g.cfg.Heartbeat.Milliseconds()/2 {
		c.lastBeat = now
		c.g.pres.Heartbeat(c.g.ctx, c.userID, c.deviceID)
	}
	if len(c.in) > 0 {
		c.in = append(c.in, data...)
		data = c.in
	}
	rest, err := c.consume(data)
	if len(rest) > 0 {
		c.in = append([]byte(nil), rest...)
	} else {
		c.in = nil
	}
	return err
}

func (c *Conn) closeFor(err error) {
	var ce *closeError
	switch {
	case errors.As(err, &ce):
		// The error frames that led here go out first (for a moment at most).
		for deadline := time.Now().Add(time.Second); !c.idle() && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
		c.close(ws.StatusCode(ce.code), ce.reason)
	case errors.Is(err, errClosed):
	default:
		c.close(ws.StatusGoingAway, "read: "+err.Error())
	}
}

// consume handles the complete frames at the start of data and returns the unparsed rest.
func (c *Conn) consume(data []byte) ([]byte, error) {
	maxFrame := int64(c.g.cfg.MaxFrameBytes)
	for len(data) > 0 {
		if c.discard > 0 {
			k := min(int64(len(data)), c.discard)
			c.discard -= k
			data = data[k:]
			continue
		}
		h, err := parseHeader(data)
		if errors.Is(err, errNeedMore) {
			return data, nil
		}
		if err != nil {
			return nil, &closeError{uint16(ws.StatusProtocolError), "protocol error: " + err.Error()}
		}
		if !h.masked {
			return nil, &closeError{uint16(ws.StatusProtocolError), "client frames must be masked"}
		}
		if h.op < 0x8 && (h.length > maxFrame || int64(len(c.msg))+h.length > maxFrame) {
			// Too large: skip its payload and answer, keeping the connection, unless it is
			// absurdly large or it keeps happening.
			if h.length > 64*maxFrame {
				return nil, &closeError{uint16(ws.StatusMessageTooBig), "frame too large"}
			}
			c.discard = h.length
			data = data[h.size:]
			c.msg = nil
			c.msgDrop = !h.fin
			if err := c.fail("", protocol.CodeTooLarge, "frame is larger than the limit of %d bytes", maxFrame); err != nil {
				return nil, err
			}
			continue
		}
		total := int64(h.size) + h.length
		if int64(len(data)) < total {
			return data, nil
		}
		p := data[h.size:total]
		ws.Cipher(p, h.mask, 0)
		data = data[total:]
		if err := c.handleFrame(h, p); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

func (c *Conn) handleFrame(h header, p []byte) error {
	switch h.op {
	case opClose:
		return &closeError{uint16(ws.StatusNormalClosure), "closed by client"}
	case opPing:
		c.enqueue(frame.Build(frame.OpPong, p))
		return nil
	case opPong:
		return nil
	case opContinuation:
		if c.msgDrop {
			c.msgDrop = !h.fin
			return nil
		}
		if c.msg == nil {
			return &closeError{uint16(ws.StatusProtocolError), "continuation without a message"}
		}
		c.msg = append(c.msg, p...)
		if !h.fin {
			return nil
		}
		p, c.msg = c.msg, nil
	default: // text or binary
		if c.msg != nil || c.msgDrop {
			return &closeError{uint16(ws.StatusProtocolError), "new message inside a fragmented one"}
		}
		c.msgBinary = h.op == opBinary
		if !h.fin {
			c.msg = append(make([]byte, 0, 2*len(p)), p...)
			return nil
		}
	}
	if c.msgBinary {
		return c.fail("", protocol.CodeBadRequest, "frames are JSON in text frames, not binary")
	}
	f, err := decodeClientFrame(p)
	if errors.Is(err, errNotUTF8) {
		// RFC 6455 §8.1: a text message that is not UTF-8 fails the connection with 1007.
		return &closeError{uint16(ws.StatusInvalidFramePayloadData), "text frame is not valid UTF-8"}
	}
	if err != nil {
		return c.failErr("", err)
	}
	return c.handleMessage(&f)
}

var errNotUTF8 = errors.New("not valid UTF-8")

// decodeClientFrame decodes one client text message: errNotUTF8 if it is not UTF-8, a
// bad_request *chat.Error if it is not one JSON object of the frame's shape.
func decodeClientFrame(p []byte) (protocol.ClientFrame, error) {
	var f protocol.ClientFrame
	if !utf8.Valid(p) {
		return f, errNotUTF8
	}
	if err := json.Unmarshal(p, &f); err != nil {
		return f, chat.DecodeError("frame", err)
	}
	return f, nil
}

// handleMessage acts on one decoded client frame.
func (c *Conn) handleMessage(f *protocol.ClientFrame) error {
	// Decoded first so that the error carries the frame's id and the client knows which
	// request to retry.
	if wait := c.allow(); wait > 0 {
		return c.limited(f.ID, chat.Limited(wait, "more than %d frames per second on this connection; slow down", c.g.cfg.FramesPerSecond))
	}
	ctx := c.g.ctx
	if rule, what, ok := c.g.userRule(f.Type); ok {
		if err := c.g.lim.User(ctx, what, rule, c.userID); err != nil {
			return c.limited(f.ID, err)
		}
	}
	switch f.Type {
	case protocol.FrameSend, protocol.FrameEdit, protocol.FrameDelete, protocol.FrameReact:
		ev := chat.Event{
			Kind:           kinds[f.Type],
			ID:             f.ID,
			ConversationID: f.ConversationID,
			SenderID:       c.userID,
			Origin:         c.origin(),
			Body:           f.Body,
			ReplyTo:        f.ReplyTo,
			TargetSeq:      f.TargetSeq,
			Emoji:          f.Emoji,
			Remove:         f.Remove,
			Attachments:    f.Attachments,
		}
		id := f.ID
		c.g.chat.Submit(ctx, ev, func(r chat.Result) { c.answer(id, r) })
	case protocol.FrameReceipt:
		id := f.ID
		c.g.chat.SubmitReceipt(c.userID, c.origin(), f.ConversationID, f.Status, f.Seq, func(err error) {
			if err != nil {
				c.answer(id, chat.Result{Err: err})
			}
		})
	case protocol.FrameTyping:
		if err := c.g.chat.Typing(c.userID, f.ConversationID, f.State); err != nil {
			return c.failErr(f.ID, err)
		}
	case protocol.FramePing:
		c.enqueue(frame.MustJSON(protocol.PongFrame{Type: protocol.FramePong, ID: f.ID}))
	case "":
		return c.fail(f.ID, protocol.CodeBadRequest, `frame has no "type"`)
	default:
		return c.fail(f.ID, protocol.CodeBadRequest, "unknown frame type %q", chat.Clip(f.Type))
	}
	c.strikes = 0
	return nil
}

var kinds = map[string]string{
	protocol.FrameSend:   protocol.KindText,
	protocol.FrameEdit:   protocol.KindEdit,
	protocol.FrameDelete: protocol.KindDelete,
	protocol.FrameReact:  protocol.KindReaction,
}

// answer sends the ack or the error for a submitted event. It runs on chat's publisher
// goroutine, so it must not block: it only enqueues.
func (c *Conn) answer(id string, r chat.Result) {
	if r.Err != nil {
		code, msg := chat.Code(r.Err)
		if code == protocol.CodeInternal {
			c.g.log.Error("event failed", "user", c.userID, "device", c.deviceID, "id", id, "err", r.Err)
		}
		c.enqueue(frame.MustJSON(protocol.ErrorFrame{Type: protocol.FrameError, ID: id, Code: code, Message: msg}))
		return
	}
	m := r.Message
	c.enqueue(frame.MustJSON(protocol.AckFrame{Type: protocol.FrameAck, ID: id, ConversationID: m.ConversationID, Seq: m.Seq, TS: m.TS}))
}

// allow takes a token from the connection's frame-rate bucket, or says how long until there
// is one.
func (c *Conn) allow() time.Duration {
	rate := float64(c.g.cfg.FramesPerSecond)
	now := time.Now().UnixMicro()
	c.tokens = min(2*rate, c.tokens+float64(now-c.tokenTS)*rate/1e6)
	c.tokenTS = now
	if c.tokens < 1 {
		return max(time.Millisecond, time.Duration((1-c.tokens)/rate*float64(time.Second)))
	}
	c.tokens--
	return 0
}

// limited answers a frame over a limit with rate_limited and retry_after_ms. It is not a
// strike (the frame was well formed), but a connection that goes on sending far past its
// limits (limitedClose frames over them, with no pause of LimitedFor, for at least
// LimitedFor) is closed with 1008, after the answers it was sent: a client must always
// learn why. A client that waits out retry_after_ms never comes near that.
func (c *Conn) limited(id string, err error) error {
	_, msg := chat.Code(err)
	wait := chat.RetryAfter(err)
	c.enqueue(frame.MustJSON(protocol.ErrorFrame{
		Type: protocol.FrameError, ID: id, Code: protocol.CodeRateLimited, Message: msg,
		RetryAfterMS: max(1, wait.Milliseconds()),
	}))
	now, span := time.Now().UnixMilli(), c.g.cfg.LimitedFor.Milliseconds()
	if c.limitedN == 0 || now-c.lastLimited > span {
		c.limitedSince, c.limitedN = now, 0
	}
	c.lastLimited = now
	c.limitedN++
	if c.limitedN >= limitedClose && now-c.limitedSince >= span {
		return &closeError{uint16(ws.StatusPolicyViolation), "rate limits exceeded for too long: " + msg}
	}
	return nil
}

// limitedClose is how many frames over their limits a run must hold before it closes the
// connection (see limited).
const limitedClose = 100

// userRule is the per-user limit a client frame type counts against.
func (g *Gateway) userRule(typ string) (limit.Rule, string, bool) {
	cfg := g.lim.Config()
	switch typ {
	case protocol.FrameSend:
		return cfg.Send, "messages", true
	case protocol.FrameEdit, protocol.FrameDelete:
		return cfg.Edit, "edits", true
	case protocol.FrameReact:
		return cfg.React, "reactions", true
	case protocol.FrameReceipt:
		return cfg.Receipt, "receipts", true
	case protocol.FrameTyping:
		return cfg.Typing, "typing frames", true
	}
	return limit.Rule{}, "", false
}

// fail answers a bad frame with an error frame. A client that sends MaxStrikes bad frames in a
// row is closed with 1008 (policy violation): it is broken or hostile, and answering it
// forever would cost everyone else.
func (c *Conn) fail(id, code, format string, args ...any) error {
	e := chat.Errorf(code, format, args...)
	c.enqueue(frame.MustJSON(protocol.ErrorFrame{Type: protocol.FrameError, ID: id, Code: e.Code, Message: e.Message}))
	c.strikes++
	if c.strikes >= c.g.cfg.MaxStrikes {
		return &closeError{uint16(ws.StatusPolicyViolation), "too many bad frames: " + e.Message}
	}
	return nil
}

func (c *Conn) failErr(id string, err error) error {
	code, msg := chat.Code(err)
	if code == protocol.CodeInternal {
		c.g.log.Error("frame failed", "user", c.userID, "err", err)
	}
	return c.fail(id, code, "%s", msg)
}

// enqueue queues a complete frame for writing. f is shared and never modified. A client
// whose queue is full is too slow to keep up: it is cut off (it catches up by sync when it
// reconnects) rather than allowed to hold memory or slow the fan-out for everyone.
func (c *Conn) enqueue(f []byte) bool {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return false
	}
	if c.queued+len(f) > c.g.cfg.SendQueueBytes {
		start := !c.cutting
		c.cutting = true
		c.mu.Unlock()
		if start {
			go c.cut("too slow: send queue full, reconnect and sync")
		}
		return false
	}
	c.queue = append(c.queue, f)
	c.queued += len(f)
	start := !c.writing
	c.writing = true
	c.mu.Unlock()
	if start {
		go c.flush()
	}
	return true
}

// flush writes queued frames, many per system call, until the queue is empty.
func (c *Conn) flush() {
	for {
		c.mu.Lock()
		q := c.queue
		c.queue = nil
		if len(q) == 0 || c.closed {
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		_ = c.nc.SetWriteDeadline(time.Now().Add(c.g.cfg.WriteTimeout))
		var n int64
		var err error
		if len(q) == 1 {
			// A plain write: writev would make the fd keep an iovec array for good, which
			// an idle connection (ready, pings) should not carry.
			var m int
			m, err = c.nc.Write(q[0])
			n = int64(m)
		} else {
			bufs := net.Buffers(q)
			n, err = bufs.WriteTo(c.nc)
		}
		c.mu.Lock()
		c.queued -= int(n)
		if err != nil {
			c.writing = false
		}
		c.mu.Unlock()
		if err != nil {
			c.cut("write: " + err.Error())
			return
		}
	}
}

// idle reports whether everything queued has been written.
func (c *Conn) idle() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed || (!c.writing && len(c.queue) == 0)
}

// close ends the connection once: it stops reading, forgets the connection, sends a close
// frame (best effort, bounded by a short deadline) and closes the socket.
func (c *Conn) close(code ws.StatusCode, reason string) {
	c.end(code, reason, time.Second, false)
}

// cut ends a connection that cannot keep up (its queue is full, or a write timed out). Its
// socket buffer is full, so the close frame gets only a moment, and the socket is reset
// rather than closed gracefully: a graceful close would leave the kernel holding the unsent
// bytes for a peer that does not read them.
//
// Unlike an ordinary close it is logged at Info: the client loses what was queued for it
// (it catches up by sync), and a run of these says that clients cannot keep up.
func (c *Conn) cut(reason string) {
	c.g.log.Info("connection cut", "user", c.userID, "device", c.deviceID, "reason", reason)
	c.end(ws.StatusPolicyViolation, reason, 10*time.Millisecond, true)
}

func (c *Conn) end(code ws.StatusCode, reason string, wait time.Duration, reset bool) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	unsent, writing := c.queued, c.writing
	c.queue, c.queued = nil, 0
	c.mu.Unlock()
	c.g.poll.remove(c)
	c.g.unregister(c)
	_ = c.nc.SetWriteDeadline(time.Now().Add(wait))
	_, _ = c.nc.Write(frame.Close(uint16(code), reason))
	if tc, ok := c.nc.(*net.TCPConn); ok && reset {
		_ = tc.SetLinger(0)
	}
	_ = c.nc.Close()
	c.g.log.Debug("connection closed", "user", c.userID, "device", c.deviceID, "code", int(code), "reason", reason,
		"unsent_bytes", unsent, "writing", writing)
}

// origin names this connection across nodes, for the fan-out to skip it: its events' acks
// and its own receipts are not echoed back, while the device's other connections (browser
// tabs share a device) get them. Built when a frame needs it rather than kept: an idle
// connection should not carry it.
func (c *Conn) origin() string { return c.g.origin + strconv.FormatUint(c.id, 36) }

// FrameTypes lists the client frame types handleMessage acts on, for tests that must cover
// each one.
func FrameTypes() []string {
	return []string{protocol.FrameSend, protocol.FrameEdit, protocol.FrameDelete, protocol.FrameReact,
		protocol.FrameReceipt, protocol.FrameTyping, protocol.FramePing}
}
