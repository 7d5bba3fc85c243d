package client

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/parley-chat/parley/protocol"
)

// SendOption adds optional fields to a send frame.
type SendOption func(*protocol.ClientFrame)

// ReplyTo makes the message a reply to the event with that seq.
func ReplyTo(seq int64) SendOption {
	return func(f *protocol.ClientFrame) { f.ReplyTo = seq }
}

// WithAttachments attaches raw JSON (the contract's attachments array) to the message.
func WithAttachments(raw json.RawMessage) SendOption {
	return func(f *protocol.ClientFrame) { f.Attachments = raw }
}

// Receipt statuses of the wire contract.
const (
	ReceiptDelivered = "delivered"
	ReceiptRead      = "read"
)

// waiter is one request waiting for its answer, keyed by frame id in Conn.waiters. The
// caller's goroutine waits on wake; the reader fills res. No goroutine per request.
type waiter struct {
	frame   protocol.ClientFrame // immutable once registered; resent as is
	order   uint64               // registration order: resends keep it
	sentGen uint64               // the session it was last written to; guarded by Conn.mu
	done    bool                 // res is final: never resend
	retry   bool                 // a retryable error arrived; the caller backs off and resends
	res     result
	wake    chan struct{} // capacity 1
}

type result struct {
	ack protocol.AckFrame
	err error
}

// retryable reports error codes worth resending the same id for: the server failed or is
// draining, and the id makes the resend safe. Everything else (bad_request, forbidden,
// not_found, too_large, rate_limited, …) is returned to the caller.
func retryable(code string) bool {
	return code == protocol.CodeInternal || code == protocol.CodeUnavailable || code == protocol.CodeRateLimited
}

// Send sends a text message with a new random id and waits for its ack; see SendID.
func (c *Conn) Send(ctx context.Context, conversationID, body string, opts ...SendOption) (protocol.AckFrame, error) {
	return c.SendID(ctx, newID(), conversationID, body, opts...)
}

// SendID sends a text message with the caller's id (a UUID) and waits for its ack. Until the
// ack, the frame is resent with the same id after every reconnect and after a retryable
// error frame (internal, unavailable, rate_limited), so the message is stored once however often it is
// sent. It returns an *APIError for any other error frame with its id, ctx's error, or
// ErrClosed. A rate_limited error without an id (the server rejects over-rate frames
// before reading them) cannot be matched, so unanswered requests are resent a second
// later. A caller that gave up (ctx) may retry later with the same id safely.
func (c *Conn) SendID(ctx context.Context, id, conversationID, body string, opts ...SendOption) (protocol.AckFrame, error) {
	w := newWaiter(protocol.ClientFrame{Type: protocol.FrameSend, ID: id, ConversationID: conversationID, Body: body})
	for _, o := range opts {
		o(&w.frame) // in place: the frame lives in the waiter, allocated once
	}
	res, err := c.request(ctx, w)
	return res.ack, err
}

// Edit replaces the body of the event at targetSeq (the sender's own), like SendID.
func (c *Conn) Edit(ctx context.Context, conversationID string, targetSeq int64, body string) (protocol.AckFrame, error) {
	return c.ack(ctx, protocol.ClientFrame{Type: protocol.FrameEdit, ID: newID(),
		ConversationID: conversationID, TargetSeq: targetSeq, Body: body})
}

// Delete deletes the event at targetSeq (sender, or group admin), like SendID.
func (c *Conn) Delete(ctx context.Context, conversationID string, targetSeq int64) (protocol.AckFrame, error) {
	return c.ack(ctx, protocol.ClientFrame{Type: protocol.FrameDelete, ID: newID(),
		ConversationID: conversationID, TargetSeq: targetSeq})
}

// React adds (or, with remove, takes back) an emoji reaction to the event at targetSeq,
// like SendID.
func (c *Conn) React(ctx context.Context, conversationID string, targetSeq int64, emoji string, remove bool) (protocol.AckFrame, error) {
	return c.ack(ctx, protocol.ClientFrame{Type: protocol.FrameReact, ID: newID(),
		ConversationID: conversationID, TargetSeq: targetSeq, Emoji: emoji, Remove: remove})
}

// Ping sends a ping with an id and waits for the pong with the same id, resending it after
// a reconnect like Send. It returns the round-trip time, reconnects included.
func (c *Conn) Ping(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	_, err := c.request(ctx, newWaiter(protocol.ClientFrame{Type: protocol.FramePing, ID: newID()}))
	return time.Since(start), err
}

// Receipt moves this user's delivered or read cursor (status ReceiptDelivered or
// ReceiptRead) in a conversation up to seq. The server does not answer receipts: it is
// written once, on the live connection, waiting for one if the Conn is reconnecting.
func (c *Conn) Receipt(ctx context.Context, conversationID, status string, seq int64) error {
	return c.writeLive(ctx, &protocol.ClientFrame{Type: protocol.FrameReceipt,
		ConversationID: conversationID, Status: status, Seq: seq})
}

// Typing tells the conversation's members this user started (true) or stopped typing.
// Written once like Receipt; typing is ephemeral, so callers should pass a short ctx.
func (c *Conn) Typing(ctx context.Context, conversationID string, typing bool) error {
	state := "stop"
	if typing {
		state = "start"
	}
	return c.writeLive(ctx, &protocol.ClientFrame{Type: protocol.FrameTyping,
		ConversationID: conversationID, State: state})
}

// ack runs a request answered by an ack frame.
func (c *Conn) ack(ctx context.Context, f protocol.ClientFrame) (protocol.AckFrame, error) {
	res, err := c.request(ctx, newWaiter(f))
	return res.ack, err
}

func newWaiter(f protocol.ClientFrame) *waiter {
	return &waiter{frame: f, wake: make(chan struct{}, 1)}
}

// request registers w under its frame's id, writes the frame if a session is live
// (otherwise the run loop writes it when one is), and waits for the answer the reader
// routes to it.
func (c *Conn) request(ctx context.Context, w *waiter) (result, error) {
	f := &w.frame
	if f.ID == "" {
		return result{}, fmt.Errorf("client: %s: empty id", f.Type)
	}
	c.mu.Lock()
	select {
	case <-c.done:
		c.mu.Unlock()
		return result{}, c.closedErr()
	default:
	}
	if _, dup := c.waiters[f.ID]; dup {
		c.mu.Unlock()
		return result{}, fmt.Errorf("client: %s %s: a request with this id is already in flight", f.Type, f.ID)
	}
	c.nextOrder++
	w.order = c.nextOrder
	c.waiters[f.ID] = w
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		if c.waiters[f.ID] == w {
			delete(c.waiters, f.ID)
		}
		c.mu.Unlock()
	}()

	c.trySend(w)
	retries := 0
	for {
		select {
		case <-w.wake:
		case <-ctx.Done():
			return result{}, fmt.Errorf("client: %s %s: %w", f.Type, f.ID, ctx.Err())
		case <-c.done:
			return result{}, c.closedErr()
		}
		c.mu.Lock()
		res, done, retry := w.res, w.done, w.retry
		w.retry = false
		c.mu.Unlock()
		if done {
			return res, res.err
		}
		if !retry {
			continue
		}
		retries++
		wait := c.backoff(retries)
		var ae *APIError
		if errors.As(res.err, &ae) && ae.RetryAfter > wait {
			wait = ae.RetryAfter // the server said when (rate_limited's retry_after_ms)
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return result{}, fmt.Errorf("client: %s %s: %w (last error: %w)", f.Type, f.ID, ctx.Err(), res.err)
		case <-c.done:
			t.Stop()
			return result{}, c.closedErr()
		}
		c.mu.Lock()
		w.sentGen = 0 // resend even on the session that answered the error
		c.mu.Unlock()
		c.trySend(w)
	}
}

// trySend writes w on the live session unless it was already written there. A failed
// write kills the session; the run loop then resends w on the next one.
func (c *Conn) trySend(w *waiter) {
	c.mu.Lock()
	s := c.cur
	if s == nil || w.done || w.sentGen == s.gen {
		c.mu.Unlock()
		return
	}
	w.sentGen = s.gen
	c.mu.Unlock()
	_ = s.writeJSON(&w.frame)
}

// goLive resends, in registration order, every request not yet written on s, then makes s
// the session new requests are written to. Requests registered meanwhile are picked up by
// the next round, so none is missed and none overtakes an older one. It reports false if a
// write failed (s is then dead).
func (c *Conn) goLive(s *session) bool {
	var batch []*waiter
	for {
		batch = batch[:0]
		c.mu.Lock()
		for _, w := range c.waiters {
			if !w.done && w.sentGen != s.gen {
				w.sentGen = s.gen
				batch = append(batch, w)
			}
		}
		if len(batch) == 0 {
			c.cur = s
			close(c.liveCh)
			c.mu.Unlock()
			return true
		}
		c.mu.Unlock()
		slices.SortFunc(batch, func(a, b *waiter) int { return cmp.Compare(a.order, b.order) })
		for _, w := range batch {
			if err := s.writeJSON(&w.frame); err != nil {
				return false
			}
		}
	}
}

// lastOrder is the registration number of the newest request.
func (c *Conn) lastOrder() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nextOrder
}

// resendUnanswered rewrites, in order, the requests registered up to mark that were written
// on s and are still unanswered. It follows an id-less rate_limited error: the rejected
// frame is among them, and the others, long answered if the server took them, are not.
func (c *Conn) resendUnanswered(s *session, mark uint64) {
	var batch []*waiter
	c.mu.Lock()
	for _, w := range c.waiters {
		if !w.done && w.sentGen == s.gen && w.order <= mark {
			batch = append(batch, w)
		}
	}
	c.mu.Unlock()
	slices.SortFunc(batch, func(a, b *waiter) int { return cmp.Compare(a.order, b.order) })
	for _, w := range batch {
		if err := s.writeJSON(&w.frame); err != nil {
			return // s is dead: the next session resends everything
		}
	}
}

// writeLive writes an unanswered frame on the live session, waiting for one if needed.
func (c *Conn) writeLive(ctx context.Context, f *protocol.ClientFrame) error {
	for {
		c.mu.Lock()
		s, live := c.cur, c.liveCh
		c.mu.Unlock()
		if s != nil {
			if err := s.writeJSON(f); err != nil {
				return fmt.Errorf("client: %s: %w", f.Type, err)
			}
			return nil
		}
		select {
		case <-live:
		case <-ctx.Done():
			return fmt.Errorf("client: %s: waiting for connection: %w", f.Type, ctx.Err())
		case <-c.done:
			return c.closedErr()
		}
	}
}

// resolve gives the request with that id its answer: final, or a retryable error. It
// reports whether such a request was waiting, and returns its frame.
func (c *Conn) resolve(id string, res result, final bool) (protocol.ClientFrame, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.waiters[id]
	if w == nil || w.done {
		return protocol.ClientFrame{}, false
	}
	w.res, w.done, w.retry = res, final, !final
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return w.frame, true
}

// onAck answers the request and delivers the acknowledged event to Events (see there).
func (c *Conn) onAck(f *protocol.ServerFrame) {
	ack := protocol.AckFrame{Type: f.Type, ID: f.ID, ConversationID: f.ConversationID, Seq: f.Seq, TS: f.TS}
	frame, ok := c.resolve(f.ID, result{ack: ack}, true)
	if !ok {
		return // a second ack for a resent id, or the caller gave up
	}
	c.mu.Lock()
	userID := c.ready.UserID
	c.mu.Unlock()
	if m, ok := ownMessage(&frame, &ack, userID); ok {
		c.onMessage(&m, true)
	}
}

// onError routes an error frame to the request with its id, or to Events.
func (c *Conn) onError(f *protocol.ServerFrame) {
	if f.ID != "" {
		c.mu.Lock()
		w := c.waiters[f.ID]
		op := "ws"
		if w != nil {
			op = "ws " + w.frame.Type + " " + f.ID
		}
		c.mu.Unlock()
		err := &APIError{Op: op, Code: f.Code, Message: f.ErrMessage, RetryAfter: time.Duration(f.RetryAfterMS) * time.Millisecond}
		if _, ok := c.resolve(f.ID, result{err: err}, !retryable(f.Code)); ok {
			return
		}
	}
	c.emit(Event{Type: EventError, Error: &protocol.ErrorFrame{Type: f.Type, ID: f.ID, Code: f.Code, Message: f.ErrMessage}})
}

// ownMessage builds the event an acknowledged frame stored, as the server records it.
func ownMessage(f *protocol.ClientFrame, ack *protocol.AckFrame, userID string) (protocol.Message, bool) {
	m := protocol.Message{
		ConversationID: ack.ConversationID,
		Seq:            ack.Seq,
		ID:             f.ID,
		SenderID:       userID,
		TS:             ack.TS,
		TargetSeq:      f.TargetSeq,
	}
	if m.ConversationID == "" {
		m.ConversationID = f.ConversationID
	}
	switch f.Type {
	case protocol.FrameSend:
		m.Kind, m.Body, m.ReplyTo, m.Attachments = protocol.KindText, f.Body, f.ReplyTo, f.Attachments
	case protocol.FrameEdit:
		m.Kind, m.Body = protocol.KindEdit, f.Body
	case protocol.FrameDelete:
		m.Kind = protocol.KindDelete
	case protocol.FrameReact:
		m.Kind, m.Emoji, m.Remove = protocol.KindReaction, f.Emoji, f.Remove
	default:
		return m, false
	}
	return m, m.Seq > 0
}

// newID returns a UUIDv7 message id. Any UUID is valid on the wire; time-ordered ones keep
// the server's dedupe index append-mostly, which makes stores cheaper than random v4 ids.
func newID() string { return uuid.Must(uuid.NewV7()).String() }
