package chat

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/parley-chat/parley/internal/bus"
	"github.com/parley-chat/parley/internal/frame"
	"github.com/parley-chat/parley/internal/store"
	"github.com/parley-chat/parley/protocol"
)

// Receipt statuses.
const (
	Delivered = "delivered"
	Read      = "read"
)

// receiptOp is one client receipt waiting for the receipt batcher.
type receiptOp struct {
	up     store.CursorUpdate
	origin string // the connection that sent it; the fan-out skips it
	done   func(error)
}

// SubmitReceipt moves userID's delivered or read cursor in a conversation forward to seq.
// Cursors are cumulative: a receipt for seq covers everything up to it, and one that would
// move a cursor back changes nothing. Receipts are batched (many per transaction) on their
// own goroutine, apart from the event sequencer: they are frequent, need no seq, and must
// not slow sends. If the cursor moved, every connection of every member except origin (the
// sending connection, as in Event.Origin) gets a receipt frame. done (may be nil) gets the
// error for a bad receipt; it must not block.
func (s *Service) SubmitReceipt(userID, origin, conversationID, status string, seq int64, done func(error)) {
	if done == nil {
		done = func(error) {}
	}
	if status != Delivered && status != Read {
		done(Errorf(protocol.CodeBadRequest, `status must be "delivered" or "read"`))
		return
	}
	if conversationID == "" || seq <= 0 {
		done(Errorf(protocol.CodeBadRequest, "a receipt needs conversation_id and a positive seq"))
		return
	}
	o := &receiptOp{
		up:     store.CursorUpdate{ConversationID: conversationID, UserID: userID, Status: status, Seq: seq},
		origin: origin,
		done:   done,
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closing {
		done(ErrClosed)
		return
	}
	s.receipts <- o
}

// runReceipts applies receipts in batches until the queue is closed.
func (s *Service) runReceipts() {
	defer close(s.receiptsDone)
	batch := make([]*receiptOp, 0, s.cfg.MaxBatch)
	ups := make([]store.CursorUpdate, 0, s.cfg.MaxBatch)
	for o := range s.receipts {
		batch = append(batch[:0], o)
	fill:
		for len(batch) < s.cfg.MaxBatch {
			select {
			case o, ok := <-s.receipts:
				if !ok {
					break fill
				}
				batch = append(batch, o)
			default:
				break fill
			}
		}
		ts := s.now().UnixMilli()
		ups = ups[:0]
		for _, o := range batch {
			o.up.TS = ts
			ups = append(ups, o.up)
		}
		results, err := s.st.SetCursors(context.Background(), ups)
		if err != nil {
			s.log.Error("receipt batch failed", "receipts", len(batch), "err", err)
		}
		for i, o := range batch {
			switch {
			case err != nil:
				o.done(err)
			case results[i].Err != nil:
				o.done(Errorf(protocol.CodeForbidden, "not a member of conversation %s", Clip(o.up.ConversationID)))
			default:
				o.done(nil)
				if results[i].Changed {
					seq := results[i].DeliveredSeq
					if o.up.Status == Read {
						seq = results[i].ReadSeq
					}
					s.publishReceipt(o, seq)
				}
			}
		}
	}
}

func (s *Service) publishReceipt(o *receiptOp, seq int64) {
	payload, err := json.Marshal(protocol.ReceiptFrame{
		Type: protocol.FrameReceipt, ConversationID: o.up.ConversationID,
		UserID: o.up.UserID, Status: o.up.Status, Seq: seq, TS: o.up.TS,
	})
	if err != nil {
		return
	}
	members, err := s.peekMembers(o.up.ConversationID)
	if err != nil {
		s.log.Warn("member list for receipt", "conversation", o.up.ConversationID, "err", err)
		return
	}
	s.publishTo(members, frame.Delivery(o.origin, payload))
}

// Control is a message for the gateways that hold a user's connections, not for clients.
type Control struct {
	// DisconnectDevice closes every connection of that device (it logged out).
	DisconnectDevice string `json:"disconnect_device,omitempty"`
}

// DisconnectDevice closes the device's open connections on every node, so that a logout
// ends its live session at once, not at its next reconnect.
func (s *Service) DisconnectDevice(userID, deviceID string) error {
	payload, err := json.Marshal(Control{DisconnectDevice: deviceID})
	if err != nil {
		return err
	}
	return s.bus.Publish(bus.UserSubject(userID), frame.Control(payload))
}

// typing tracks the typing indicators this node has relayed, to throttle floods and to end
// indicators whose typist went quiet.
type typing struct {
	mu sync.Mutex
	// active holds an entry per (member, conversation) typing now, or that stopped within
	// typingBurst refresh periods (to remember its budget): runTimers removes each one when
	// its expires passes, whatever else happens.
	active  map[typingKey]typingState
	ttl     time.Duration // an indicator without a refresh ends after this
	refresh time.Duration // a repeated "start" is relayed at most this often
}

// typingBurst is how many "start"s a typist may have relayed back to back (after a "stop")
// before they are held to one per refresh period. Alternating start and stop is how a client
// would get around the refresh throttle; with this budget a flood of either reaches the other
// members as a few frames.
const typingBurst = 3

type typingKey struct{ user, conv string }

type typingState struct {
	expires int64 // unix ms: the indicator ends (or, once stopped, the entry is forgotten)
	relayed int64 // unix ms of the last relayed "start"
	stopped bool  // the last state relayed was "stop"
	// starts is the budget of relayed "start"s, refilled by one per refresh period up to
	// typingBurst, as of budgetTS.
	starts   float64
	budgetTS int64
}

// Typing relays a typing indicator to the other members' online devices. It is never stored.
// A "start" repeated within TypingRefresh is dropped, and "start"s after "stop"s draw on a
// small budget (typingBurst, one more per TypingRefresh), so floods of either are throttled;
// a "stop" is relayed only for an indicator the others were shown. An indicator not
// refreshed within TypingTTL ends by itself: the server relays the "stop".
func (s *Service) Typing(userID, conversationID, state string) error {
	if state != "start" && state != "stop" {
		return Errorf(protocol.CodeBadRequest, `state must be "start" or "stop"`)
	}
	members, err := s.peekMembers(conversationID)
	if err != nil || !slices.Contains(members, userID) {
		return Errorf(protocol.CodeForbidden, "not a member of conversation %s", Clip(conversationID))
	}
	now := s.now().UnixMilli()
	refresh := s.typing.refresh.Milliseconds()
	k := typingKey{userID, conversationID}
	t := s.typing
	t.mu.Lock()
	cur, found := t.active[k]
	if !found {
		cur = typingState{stopped: true, starts: typingBurst, budgetTS: now}
	}
	cur.starts = min(typingBurst, cur.starts+float64(now-cur.budgetTS)/float64(refresh))
	cur.budgetTS = now
	relay := false
	switch {
	case state == "stop":
		relay = !cur.stopped
		cur.stopped = true
		cur.expires = now + typingBurst*refresh // long enough to remember the spent budget
	case !cur.stopped && now-cur.relayed < refresh:
		cur.expires = now + t.ttl.Milliseconds() // a refresh keeps it alive without a frame
	case cur.starts >= 1 || !cur.stopped:
		relay = true
		if cur.stopped {
			cur.starts--
		}
		cur.stopped = false
		cur.relayed = now
		cur.expires = now + t.ttl.Milliseconds()
	default:
		// Out of budget: not shown now; the client's next refresh, a few seconds on, is.
	}
	t.active[k] = cur
	t.mu.Unlock()
	if relay {
		s.publishTyping(userID, conversationID, state, members)
	}
	return nil
}

func (s *Service) publishTyping(userID, conversationID, state string, members []string) {
	payload, err := json.Marshal(protocol.TypingFrame{
		Type: protocol.FrameTyping, ConversationID: conversationID, UserID: userID, State: state,
	})
	if err != nil {
		return
	}
	env := frame.Delivery("", payload)
	for _, u := range members {
		if u == userID {
			continue
		}
		if err := s.bus.Publish(bus.UserSubject(u), env); err != nil {
			s.log.Warn("publish typing", "user", u, "err", err)
		}
	}
}

// expireTyping ends the indicators whose time ran out, relaying their "stop", and forgets
// stopped ones whose budget has refilled.
func (s *Service) expireTyping() {
	now := s.now().UnixMilli()
	t := s.typing
	var ended []typingKey
	t.mu.Lock()
	for k, st := range t.active {
		if st.expires <= now {
			if !st.stopped {
				ended = append(ended, k)
			}
			delete(t.active, k)
		}
	}
	t.mu.Unlock()
	for _, k := range ended {
		if members, err := s.peekMembers(k.conv); err == nil {
			s.publishTyping(k.user, k.conv, "stop", members)
		}
	}
}

// runTimers owns the periodic work of the service: typing expiry.
func (s *Service) runTimers() {
	defer close(s.timersDone)
	tick := time.NewTicker(s.typing.ttl / 4)
	defer tick.Stop()
	for {
		select {
		case <-s.stopTimers:
			return
		case <-tick.C:
			s.expireTyping()
		}
	}
}
