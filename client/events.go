package client

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/parley-chat/parley/protocol"
)

// Event types: the frame types the server pushes.
const (
	EventMessage  = protocol.FrameMessage
	EventReceipt  = protocol.FrameReceipt
	EventTyping   = protocol.FrameTyping
	EventPresence = protocol.FramePresence
	EventGoaway   = protocol.FrameGoaway
	EventError    = protocol.FrameError // an error frame that answers no pending request
)

// Event is one server event. Type says which pointer is set.
type Event struct {
	Type     string
	Message  *protocol.Message
	Receipt  *protocol.ReceiptFrame
	Typing   *protocol.TypingFrame
	Presence *protocol.PresenceFrame
	Goaway   *protocol.GoawayFrame
	Error    *protocol.ErrorFrame
	// Resumed is set on message events recovered from history (after a reconnect, or to
	// fill a gap) rather than received live.
	Resumed bool
}

// convState is what the Conn has delivered of one conversation.
type convState struct {
	// high is the highest seq delivered, with everything below it delivered too (or
	// before the baseline).
	high int64
	// own holds events this Conn sent, built from their acks, whose seq is above high+1:
	// they wait for the events in between instead of causing a history fetch.
	own      map[int64]protocol.Message
	stashTS  time.Time // when own last went from empty, or last made progress
	hasStash bool
}

// emit hands ev to the consumer, waiting if the buffer is full (see Events). It gives up
// only when the Conn is closing.
func (c *Conn) emit(ev Event) bool {
	select {
	case c.events <- ev:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// convLocked returns the state of a conversation, creating it for one first seen through an
// event with the given seq: its baseline is just below that event, or its start with
// ResumeFromStart.
func (c *Conn) convLocked(id string, seq int64) *convState {
	st := c.convs[id]
	if st == nil {
		st = &convState{high: seq - 1}
		if c.cfg.resumeFromStart {
			st.high = 0
		}
		c.convs[id] = st
	}
	return st
}

// deliverLocked emits m, which must be seq high+1 (or the first event after a gap history
// could not fill), then any stashed own events that have become contiguous.
func (c *Conn) deliverLocked(id string, st *convState, m *protocol.Message, resumed bool) {
	c.emit(Event{Type: EventMessage, Message: m, Resumed: resumed})
	st.high = m.Seq
	c.flushOwnLocked(id, st)
}

// flushOwnLocked emits the stashed own events that continue the conversation and drops the
// ones already delivered some other way (live echo, history).
func (c *Conn) flushOwnLocked(id string, st *convState) {
	if !st.hasStash {
		return
	}
	for {
		om, ok := st.own[st.high+1]
		if !ok {
			break
		}
		delete(st.own, om.Seq)
		c.emit(Event{Type: EventMessage, Message: &om})
		st.high = om.Seq
		st.stashTS = time.Now() // progress: what is left has not waited long
	}
	for seq := range st.own {
		if seq <= st.high {
			delete(st.own, seq)
		}
	}
	if len(st.own) == 0 {
		st.hasStash = false
		delete(c.stashed, id)
	}
}

// onMessage delivers one event received live (or built from an ack: fromAck), enforcing the
// Events guarantee. It runs on the reader goroutine; filling a gap blocks the reader, which
// keeps later frames behind the repaired ones.
func (c *Conn) onMessage(m *protocol.Message, fromAck bool) {
	id := m.ConversationID
	c.dmu.Lock()
	st := c.convLocked(id, m.Seq)
	if m.Seq > st.high+1 {
		c.flushOwnLocked(id, st) // our own acked events may be what is missing
	}
	if m.Seq <= st.high {
		c.dmu.Unlock()
		return // a duplicate, or before the baseline
	}
	if m.Seq == st.high+1 {
		c.deliverLocked(id, st, m, false)
		c.dmu.Unlock()
		return
	}
	if fromAck { // our own event overtook others: wait for them rather than fetch
		if st.own == nil {
			st.own = make(map[int64]protocol.Message)
		}
		if !st.hasStash {
			st.hasStash, st.stashTS = true, time.Now()
			c.stashed[id] = struct{}{}
		}
		st.own[m.Seq] = *m
		c.dmu.Unlock()
		return
	}
	c.dmu.Unlock()

	err := c.fillGap(id, m.Seq)

	c.dmu.Lock()
	defer c.dmu.Unlock()
	switch {
	case m.Seq <= st.high: // someone else delivered it meanwhile
	case m.Seq == st.high+1:
		c.deliverLocked(id, st, m, false)
	case err == nil || historyGone(err):
		// History has nothing more below m: take the server's word and move on.
		c.log.Warn("parley: history does not cover a gap", "conversation", id, "from", st.high+1, "to", m.Seq-1, "err", err)
		c.deliverLocked(id, st, m, false)
	default:
		// Leave m to the run loop's catch-up, which fetches it from history in order.
		c.log.Warn("parley: could not fill gap, deferring to catch-up", "conversation", id, "err", err)
		c.markStaleLocked(id)
	}
}

// fillGap fetches the events before seq that the conversation is missing, retrying a few
// times: the reader waits meanwhile.
func (c *Conn) fillGap(id string, seq int64) error {
	for attempt := 1; ; attempt++ {
		err := c.fill(c.ctx, id, seq)
		if err == nil || historyGone(err) || attempt == gapAttempts || c.ctx.Err() != nil {
			return err
		}
		if !c.sleep(c.backoff(attempt)) {
			return c.ctx.Err()
		}
	}
}

// historyGone reports an error that retrying cannot fix: the caller may no longer read the
// conversation (removed, or it is gone).
func historyGone(err error) bool {
	st := errorStatus(err)
	return st == http.StatusNotFound || st == http.StatusForbidden
}

func (c *Conn) markStaleLocked(id string) {
	c.stale[id] = struct{}{}
	select {
	case c.staleCh <- struct{}{}:
	default:
	}
}

// hasStale reports whether conversations are marked stale. Like checkStashes it runs on the
// run loop, which also sends heartbeats: while a slow consumer holds dmu (emit blocks
// under it), it answers false rather than wait, and the next tick asks again.
func (c *Conn) hasStale() bool {
	if !c.dmu.TryLock() {
		return false
	}
	defer c.dmu.Unlock()
	return len(c.stale) > 0
}

// checkStashes marks stale the conversations whose stashed own events have waited longer
// than d for the events before them (which then come from history), and reports whether
// there were any. Normally those events arrive live within milliseconds.
func (c *Conn) checkStashes(d time.Duration) bool {
	if !c.dmu.TryLock() {
		return false // a slow consumer holds it; see hasStale
	}
	defer c.dmu.Unlock()
	found := false
	for id := range c.stashed {
		if st := c.convs[id]; st != nil && time.Since(st.stashTS) > d {
			c.stale[id] = struct{}{}
			found = true
		}
	}
	return found
}

// fill delivers, from history, the conversation's events above what it has delivered and
// below before (0 = up to its newest event), with Resumed set. Events delivered meanwhile
// by someone else are skipped, so fill may race with the reader or another fill.
func (c *Conn) fill(ctx context.Context, id string, before int64) error {
	for {
		c.dmu.Lock()
		st := c.convLocked(id, 1)
		after := st.high
		c.dmu.Unlock()
		if before > 0 && after >= before-1 {
			return nil
		}
		page, err := c.page(ctx, id, before, after)
		if err != nil {
			return err
		}
		c.dmu.Lock()
		for i := range page.Messages {
			m := &page.Messages[i]
			if m.ConversationID == "" {
				m.ConversationID = id
			}
			if m.Seq > st.high {
				c.deliverLocked(id, st, m, true)
			}
		}
		c.dmu.Unlock()
		if len(page.Messages) == 0 || !page.HasMore {
			return nil
		}
	}
}

// page fetches the oldest page of events with after < seq < before. The API answers the
// newest page when there is no after bound, and after=0 is no bound, so from the very start
// it asks for seq < historyPage+1 instead (seqs start at 1), and walks back from before
// only if that finds nothing (a history that does not start at 1 for this member).
func (c *Conn) page(ctx context.Context, id string, before, after int64) (protocol.MessagesBody, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	if after > 0 {
		return c.cl.Messages(ctx, id, before, after, historyPage)
	}
	first := int64(historyPage + 1)
	if before > 0 && before < first {
		first = before
	}
	p, err := c.cl.Messages(ctx, id, first, 0, historyPage)
	if err != nil {
		return p, err
	}
	if n := len(p.Messages); n > 0 || first == before {
		// Seqs are gapless: only a page that reaches first-1 can have events above it.
		p.HasMore = n > 0 && first != before && p.Messages[n-1].Seq >= first-1
		return p, nil
	}
	// Nothing at the very start: collect pages backwards, then answer them oldest first.
	var all []protocol.Message
	for b := before; ; {
		p, err := c.cl.Messages(ctx, id, b, 0, historyPage)
		if err != nil {
			return p, err
		}
		all = append(p.Messages, all...)
		if !p.HasMore || len(p.Messages) == 0 {
			break
		}
		b = p.Messages[0].Seq
	}
	return protocol.MessagesBody{Messages: all}, nil
}

// catchUp is the resume step of the run loop: with resync, it asks GET /sync what changed
// since the last token and fills every conversation whose last_seq is above what was
// delivered (one it never saw is new since the baseline: from its start); it also fills
// the conversations the reader marked stale. The sync token advances only when every fill
// succeeded, so a failed catch-up is redone in full.
func (c *Conn) catchUp(resync bool) error {
	ids := map[string]struct{}{}
	var next string
	if resync {
		c.dmu.Lock()
		since := c.since
		c.dmu.Unlock()
		ctx, cancel := context.WithTimeout(c.ctx, fetchTimeout)
		body, err := c.cl.Sync(ctx, since)
		cancel()
		if err != nil {
			return fmt.Errorf("client: resume: %w", err)
		}
		c.dmu.Lock()
		for _, cv := range body.Conversations {
			st := c.convs[cv.ID]
			if st == nil {
				st = &convState{}
				c.convs[cv.ID] = st
			}
			if cv.LastSeq > st.high {
				ids[cv.ID] = struct{}{}
			}
		}
		// Left or removed while away: nothing more will come, and nothing can be fetched.
		for _, id := range body.RemovedConversationIDs {
			delete(c.convs, id)
			delete(c.stale, id)
		}
		c.dmu.Unlock()
		next = body.NextSince
	}
	c.dmu.Lock()
	for id := range c.stale {
		ids[id] = struct{}{}
	}
	clear(c.stale) // taken over; a failure puts the rest back
	c.dmu.Unlock()

	order := slices.Sorted(maps.Keys(ids))
	for i, id := range order {
		err := c.fill(c.ctx, id, 0)
		if err == nil {
			continue
		}
		if historyGone(err) {
			c.log.Info("parley: conversation no longer readable, skipping", "conversation", id, "err", err)
			continue
		}
		c.dmu.Lock()
		for _, rest := range order[i:] {
			c.stale[rest] = struct{}{}
		}
		c.dmu.Unlock()
		return fmt.Errorf("client: resume conversation %s: %w", id, err)
	}
	if resync {
		c.dmu.Lock()
		c.since = next
		c.dmu.Unlock()
	}
	return nil
}
