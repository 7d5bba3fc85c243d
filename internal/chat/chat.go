// Package chat is Parley's conversation logic: who may write what where, and the single path
// by which an event enters a conversation's log and leaves for its members.
//
// Every write to the event log (messages, edits, deletes, reactions, membership changes) goes
// through one sequencer goroutine. It groups concurrent sends into one store transaction (group
// commit: one disk sync for the whole batch), answers each sender only after that commit, and
// then publishes each stored event once to the bus for every member. Because membership
// changes pass through the same goroutine, the member list used to fan out an event is always
// the one in force when the event was stored: a removed member never gets a later message.
//
// chat knows conversations and sequencing, not sockets (package gateway) and not SQL (package
// store).
package chat

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/parley-chat/parley/internal/bus"
	"github.com/parley-chat/parley/internal/frame"
	"github.com/parley-chat/parley/internal/store"
	"github.com/parley-chat/parley/protocol"
)

// Config holds the limits chat enforces. Zero fields take the defaults.
type Config struct {
	MaxBodyBytes    int // a message body's size limit in bytes (default 8192)
	MaxGroupMembers int // members of a group, creator included (default 100)
	MaxBatch        int // events per store transaction (default 1024)
	// CommitInterval is the least time between the starts of two batches' transactions
	// (default 2ms; negative: none). See run.
	CommitInterval time.Duration
	QueueLen       int // events waiting for the sequencer before Submit blocks (default 8192)
	// TypingTTL ends a typing indicator that was not refreshed (default 6s); a repeated
	// "start" is relayed at most every TypingRefresh (default 3s). Clients refresh "start"
	// every few seconds while the user types.
	TypingTTL     time.Duration
	TypingRefresh time.Duration
}

func (c Config) withDefaults() Config {
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 8192
	}
	if c.MaxGroupMembers <= 0 {
		c.MaxGroupMembers = 100
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = 1024
	}
	if c.CommitInterval == 0 {
		c.CommitInterval = 2 * time.Millisecond
	}
	if c.QueueLen <= 0 {
		c.QueueLen = 8192
	}
	if c.TypingTTL <= 0 {
		c.TypingTTL = 6 * time.Second
	}
	if c.TypingRefresh <= 0 {
		c.TypingRefresh = 3 * time.Second
	}
	return c
}

// Service is the chat core. Create it with New; stop it with Close.
type Service struct {
	st  store.Store
	bus bus.Bus
	log *slog.Logger
	cfg Config
	now func() time.Time

	members *memberCache
	sub     bus.Subscription

	mu        sync.RWMutex // held for reading while sending to queue or receipts; for writing by Close
	closing   bool
	queue     chan *op
	done      chan struct{}  // closed when the sequencer has returned
	out       chan *outgoing // sequencer → publisher
	published chan struct{}  // closed when the publisher has returned
	receipts  chan *receiptOp
	// receiptsDone is closed when the receipt batcher has returned.
	receiptsDone chan struct{}

	// unavailable is set while the store refuses writes for want of disk: sends are answered
	// unavailable, Ready fails (so /readyz says not ready), and it is logged once, not once
	// per send. lastProbe (unix ms) spaces Ready's probes of the store.
	unavailable atomic.Bool
	lastProbe   atomic.Int64

	typing     *typing
	stopTimers chan struct{}
	timersDone chan struct{}
}

// op is one unit of work for the sequencer: an append, or a membership change.
type op struct {
	req    store.AppendRequest
	origin string // the sending connection, skipped by the fan-out
	done   func(Result)

	member *memberOp // set for membership changes instead of req
}

type memberOp struct {
	conversationID string
	fn             store.MembershipFunc
	result         chan memberResult
}

type memberResult struct {
	msg protocol.Message
	err error
}

// Result answers a Submit.
type Result struct {
	Message   protocol.Message // the stored event (the original one for a duplicate)
	Duplicate bool
	Err       error
}

// New builds the service and starts its sequencer. It subscribes to membership-change
// announcements so that a cached member list never outlives a change made on another node.
func New(st store.Store, b bus.Bus, cfg Config, log *slog.Logger) (*Service, error) {
	s := &Service{
		st:      st,
		bus:     b,
		log:     log,
		cfg:     cfg.withDefaults(),
		now:     time.Now,
		members: newMemberCache(100_000),
		done:    make(chan struct{}),
	}
	s.queue = make(chan *op, s.cfg.QueueLen)
	s.out, s.published = make(chan *outgoing, 16), make(chan struct{})
	s.receipts = make(chan *receiptOp, s.cfg.QueueLen)
	s.receiptsDone = make(chan struct{})
	s.typing = &typing{active: make(map[typingKey]typingState), ttl: s.cfg.TypingTTL, refresh: s.cfg.TypingRefresh}
	s.stopTimers, s.timersDone = make(chan struct{}), make(chan struct{})
	sub, err := b.Subscribe(bus.ConversationChangedAll, func(subject string, _ []byte) {
		s.members.drop(subject[len(bus.ConversationChangedSubject("")):])
	})
	if err != nil {
		return nil, err
	}
	s.sub = sub
	go s.run()
	go s.publish()
	go s.runReceipts()
	go s.runTimers()
	return s, nil
}

// Close stops taking work, finishes everything already submitted (each done callback runs),
// and stops the sequencer. It does not close the store or the bus, which it does not own.
func (s *Service) Close(ctx context.Context) error {
	s.mu.Lock()
	if !s.closing {
		s.closing = true
		close(s.queue)
		close(s.receipts)
		close(s.stopTimers)
	}
	s.mu.Unlock()
	_ = s.sub.Unsubscribe()
	for _, done := range []chan struct{}{s.done, s.published, s.receiptsDone, s.timersDone} {
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// enqueue hands o to the sequencer, or reports ErrClosed.
func (s *Service) enqueue(o *op) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closing {
		return ErrClosed
	}
	s.queue <- o
	return nil
}

// Event is a client's write to a conversation: a message, an edit, a delete or a reaction.
type Event struct {
	Kind           string // protocol.KindText, KindEdit, KindDelete or KindReaction
	ID             string // the client's message id (a UUID); retries reuse it
	ConversationID string
	SenderID       string
	// Origin names the connection that sent it (opaque, chosen by the gateway): that
	// connection gets the ack instead of the event; every other one, the same device's
	// other connections (browser tabs) included, gets the event.
	Origin      string
	Body        string
	ReplyTo     int64
	TargetSeq   int64
	Emoji       string
	Remove      bool
	Attachments json.RawMessage
}

// Submit validates ev and hands it to the sequencer. done is called exactly once, from
// another goroutine or (for an invalid event) before Submit returns, after the event is
// durably stored or with the reason it was not; it must not block. Submit itself blocks only
// when the sequencer's queue is full, which is the backpressure a flood of sends should feel.
func (s *Service) Submit(ctx context.Context, ev Event, done func(Result)) {
	if err := s.validate(ctx, &ev); err != nil {
		done(Result{Err: err})
		return
	}
	o := &op{
		req: store.AppendRequest{
			ConversationID: ev.ConversationID,
			SenderID:       ev.SenderID,
			ClientID:       ev.ID,
			Kind:           ev.Kind,
			Body:           ev.Body,
			ReplyTo:        ev.ReplyTo,
			TargetSeq:      ev.TargetSeq,
			Emoji:          ev.Emoji,
			Remove:         ev.Remove,
			Attachments:    ev.Attachments,
		},
		origin: ev.Origin,
		done:   done,
	}
	if err := s.enqueue(o); err != nil {
		done(Result{Err: err})
	}
}

func (s *Service) validate(ctx context.Context, ev *Event) error {
	if _, err := uuid.Parse(ev.ID); err != nil {
		return Errorf(protocol.CodeBadRequest, "id must be a UUID chosen by the client, got %q", Clip(ev.ID))
	}
	if ev.ConversationID == "" {
		return Errorf(protocol.CodeBadRequest, "conversation_id is required")
	}
	switch ev.Kind {
	case protocol.KindText:
		if ev.TargetSeq != 0 || ev.Emoji != "" {
			return Errorf(protocol.CodeBadRequest, "send takes no target_seq or emoji")
		}
		if ev.Body == "" && len(ev.Attachments) == 0 {
			return Errorf(protocol.CodeBadRequest, "body is empty")
		}
		if ev.ReplyTo < 0 {
			return Errorf(protocol.CodeBadRequest, "reply_to must be a seq of this conversation")
		}
		if string(ev.Attachments) == "null" {
			ev.Attachments = nil
		}
		n, err := checkAttachments(ev.Attachments)
		if err != nil {
			return err
		}
		if n == 0 {
			ev.Attachments = nil // "[]" is no attachment: the body must then say something
		}
		if n == 0 && strings.TrimSpace(ev.Body) == "" {
			return Errorf(protocol.CodeBadRequest, "body is empty or only white space")
		}
		return s.checkBody(ev.Body)
	case protocol.KindEdit:
		if strings.TrimSpace(ev.Body) == "" {
			return Errorf(protocol.CodeBadRequest, "an edit needs the new body (not only white space)")
		}
		if err := s.checkBody(ev.Body); err != nil {
			return err
		}
		return s.checkTarget(ctx, ev, func(target protocol.Message, _ string) error {
			if target.SenderID != ev.SenderID {
				return Errorf(protocol.CodeForbidden, "only the sender can edit message %d", ev.TargetSeq)
			}
			return nil
		})
	case protocol.KindDelete:
		return s.checkTarget(ctx, ev, func(target protocol.Message, role string) error {
			if target.SenderID != ev.SenderID && role != protocol.RoleAdmin {
				return Errorf(protocol.CodeForbidden, "only the sender or a group admin can delete message %d", ev.TargetSeq)
			}
			return nil
		})
	case protocol.KindReaction:
		if ev.Emoji == "" || len(ev.Emoji) > 64 || !utf8.ValidString(ev.Emoji) {
			return Errorf(protocol.CodeBadRequest, "emoji must be 1 to 64 bytes of UTF-8")
		}
		return s.checkTarget(ctx, ev, func(protocol.Message, string) error { return nil })
	default:
		return Errorf(protocol.CodeBadRequest, "unknown event kind %q", Clip(ev.Kind))
	}
}

func (s *Service) checkBody(body string) error {
	if len(body) > s.cfg.MaxBodyBytes {
		return Errorf(protocol.CodeTooLarge, "body is %d bytes, the limit is %d", len(body), s.cfg.MaxBodyBytes)
	}
	if !utf8.ValidString(body) {
		return Errorf(protocol.CodeBadRequest, "body is not valid UTF-8")
	}
	if strings.IndexByte(body, 0) >= 0 {
		return Errorf(protocol.CodeBadRequest, "body contains a NUL character")
	}
	return nil
}

// maxAttachments bounds the attachments of one message.
const maxAttachments = 10

// checkAttachments counts the attachments of a send, accepting a JSON array of at most maxAttachments media ids (the ids the
// server gave uploads): never URLs or objects, which would let a message point members'
// clients at any address.
func checkAttachments(raw json.RawMessage) (int, error) {
	if len(raw) == 0 {
		return 0, nil
	}
	var ids []string
	if err := json.Unmarshal(raw, &ids); err != nil {
		return 0, Errorf(protocol.CodeBadRequest, "attachments must be a JSON array of media ids")
	}
	if len(ids) > maxAttachments {
		return 0, Errorf(protocol.CodeBadRequest, "a message has at most %d attachments, this one has %d", maxAttachments, len(ids))
	}
	for _, id := range ids {
		if _, err := uuid.Parse(id); err != nil || len(id) != 36 {
			return 0, Errorf(protocol.CodeBadRequest, "attachments are media ids from POST /api/v1/media, not %q", Clip(id))
		}
	}
	return len(ids), nil
}

// checkTarget loads the target of an edit, delete or reaction and the sender's role, and
// lets allow decide. The store re-checks at append time that the target is still a live text
// message, so a race with a delete cannot edit a tombstone.
func (s *Service) checkTarget(ctx context.Context, ev *Event, allow func(target protocol.Message, role string) error) error {
	if ev.TargetSeq <= 0 {
		return Errorf(protocol.CodeBadRequest, "target_seq is required")
	}
	conv, err := s.st.Conversation(ctx, ev.ConversationID, ev.SenderID)
	if err != nil {
		if isNotFound(err) {
			return Errorf(protocol.CodeForbidden, "not a member of conversation %s", Clip(ev.ConversationID))
		}
		return err
	}
	target, err := s.st.Message(ctx, ev.ConversationID, ev.TargetSeq)
	if err != nil {
		if isNotFound(err) {
			return Errorf(protocol.CodeNotFound, "conversation %s has no message %d", ev.ConversationID, ev.TargetSeq)
		}
		return err
	}
	if target.Kind != protocol.KindText || target.Deleted {
		return Errorf(protocol.CodeNotFound, "message %d is not a live text message", ev.TargetSeq)
	}
	role := ""
	if conv.Type == protocol.Group {
		for _, m := range conv.Members {
			if m.UserID == ev.SenderID {
				role = m.Role
			}
		}
	}
	return allow(target, role)
}

// run is the sequencer: it takes ops from the queue, commits appends in batches and
// membership changes one at a time, and publishes what it committed, in commit order.
//
// Batches start at most once per CommitInterval. A transaction costs about half a
// millisecond of CPU however few events it holds, so a sequencer that committed whatever
// had arrived as soon as it could would, at a few thousand messages a second, spend a core
// on commits of two or three events each and starve everything else on the machine; with
// the pacing the same load makes fewer, larger commits. A lone event is not delayed (the
// last commit began long ago), and under heavy load commits take longer than the interval
// anyway. Measured in docs/benchmarks.md ("Paced commits").
func (s *Service) run() {
	defer close(s.done)
	defer close(s.out)
	batch := make([]*op, 0, s.cfg.MaxBatch)
	var lastStart time.Time
	for o := range s.queue {
		if o.member != nil {
			s.changeMembership(o.member)
			continue
		}
		if wait := s.cfg.CommitInterval - time.Since(lastStart); wait > 0 {
			time.Sleep(wait)
		}
		lastStart = time.Now()
		batch = append(batch[:0], o)
		var next *op // a membership op that ended the batch
	fill:
		for len(batch) < s.cfg.MaxBatch {
			select {
			case o, ok := <-s.queue:
				if !ok {
					break fill
				}
				if o.member != nil {
					next = o
					break fill
				}
				batch = append(batch, o)
			default:
				break fill
			}
		}
		s.commit(batch)
		if next != nil {
			s.changeMembership(next.member)
		}
	}
}

// commit stores a batch in one transaction and hands the outcome to the publisher. The
// member lists for fan-out are resolved here, on the sequencer, where no membership change
// can come between an event's commit and the list it is sent to.
func (s *Service) commit(batch []*op) {
	ts := s.now().UnixMilli()
	reqs := make([]store.AppendRequest, len(batch))
	lists := make(map[string]store.MemberList) // the cached lists the requests name
	for i, o := range batch {
		reqs[i] = o.req
		reqs[i].TS = ts
		l, ok := lists[o.req.ConversationID]
		if !ok {
			l, ok = s.members.get(o.req.ConversationID)
			if ok {
				lists[o.req.ConversationID] = l
			}
		}
		reqs[i].MemberVersion = l.Version
	}
	out := &outgoing{batch: slices.Clone(batch)}
	// Not the caller's context: an event accepted into a batch is finished even while the
	// server shuts down, so that nothing half-sent is left behind.
	// Committed, not yet durable: the publisher waits for that (out.durable) while this
	// goroutine goes on to the next batch, whose transaction then overlaps this one's sync.
	out.results, out.durable, out.err = s.st.AppendCommitted(context.Background(), reqs)
	if out.err == nil {
		out.recipients = make([][]string, len(batch))
		for i, r := range out.results {
			if r.Err != nil || r.Duplicate {
				continue
			}
			// The store names the list in force when the event was stored whenever the one
			// the request named is not it.
			if r.Members != nil {
				s.members.put(r.Message.ConversationID, *r.Members)
				out.recipients[i] = r.Members.IDs
				continue
			}
			out.recipients[i] = lists[r.Message.ConversationID].IDs
		}
	}
	s.out <- out
}

// outgoing is a committed batch (or membership change) on its way from the sequencer to the
// publisher, which answers the senders and publishes the events. Splitting the two lets the
// next batch's transaction run while this one's acks and events are encoded and sent.
type outgoing struct {
	batch      []*op
	results    []store.AppendResult
	durable    store.Durable // returns nil once results are on stable storage
	err        error
	recipients [][]string // per result: who gets the event

	member *memberOutgoing // a membership change instead of a batch
}

type memberOutgoing struct {
	op         *memberOp
	msg        protocol.Message
	recipients []string
}

// publish is the publisher goroutine: it handles committed work in commit order.
func (s *Service) publish() {
	defer close(s.published)
	for out := range s.out {
		if m := out.member; m != nil {
			s.publishEvent(m.msg, "", m.recipients)
			m.op.result <- memberResult{msg: m.msg}
			continue
		}
		if out.err == nil {
			// Nothing is acknowledged or published before it is durable.
			out.err = out.durable(context.Background())
		}
		if out.err != nil && !s.storeFailed(out.err) {
			s.log.Error("append batch failed", "events", len(out.batch), "err", out.err)
		}
		if out.err == nil {
			s.storeOK()
		}
		if out.err != nil {
			for _, o := range out.batch {
				o.done(Result{Err: out.err})
			}
			continue
		}
		for i, o := range out.batch {
			r := out.results[i]
			o.done(Result{Message: r.Message, Duplicate: r.Duplicate, Err: r.Err})
		}
		for i, o := range out.batch {
			if r := out.results[i]; r.Err == nil && !r.Duplicate {
				s.publishEvent(r.Message, o.origin, out.recipients[i])
			}
		}
	}
}

// publishEvent encodes m once and publishes it to each recipient's connections, except the
// connection exceptOrigin.
func (s *Service) publishEvent(m protocol.Message, exceptOrigin string, recipients []string) {
	if len(recipients) == 0 {
		return
	}
	payload, err := json.Marshal(protocol.MessageFrame{Type: protocol.FrameMessage, Message: m})
	if err != nil {
		s.log.Error("encode event", "conversation", m.ConversationID, "seq", m.Seq, "err", err)
		return
	}
	s.publishTo(recipients, frame.Delivery(exceptOrigin, payload))
}

func (s *Service) publishTo(users []string, env []byte) {
	for _, u := range users {
		if err := s.bus.Publish(bus.UserSubject(u), env); err != nil {
			s.log.Warn("publish", "user", u, "err", err)
		}
	}
}

// memberIDs reloads a conversation's members into the cache. Only the sequencer calls it,
// after a membership change it made.
func (s *Service) memberIDs(conversationID string) ([]string, error) {
	l, err := s.st.Members(context.Background(), conversationID)
	if err != nil {
		return nil, err
	}
	s.members.put(conversationID, l)
	return l.IDs, nil
}

func isNotFound(err error) bool {
	code, _ := Code(err)
	return code == protocol.CodeNotFound || code == protocol.CodeForbidden
}

// Clip shortens client-supplied text quoted back in an error message.
func Clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// peekMembers returns a conversation's members from the cache, or from the store without
// caching them: a list read off the sequencer could be overtaken by a membership change
// and must not outlive the call.
func (s *Service) peekMembers(conversationID string) ([]string, error) {
	if l, ok := s.members.get(conversationID); ok {
		return l.IDs, nil
	}
	return s.st.MemberIDs(context.Background(), conversationID)
}

// storeFailed reports whether err is the store being unable to write (store.ErrUnavailable),
// and logs the first of a run of them.
func (s *Service) storeFailed(err error) bool {
	if !errors.Is(err, store.ErrUnavailable) {
		return false
	}
	if !s.unavailable.Swap(true) {
		s.log.Error("the store cannot write: sends are answered unavailable and /readyz fails until it can", "err", err)
	}
	return true
}

// storeOK ends a run of store failures.
func (s *Service) storeOK() {
	if s.unavailable.Load() && s.unavailable.Swap(false) {
		s.log.Info("the store writes again")
	}
}

// Ready reports whether the service can store events: an error while the store refuses
// writes. While it does, a call probes the store with a tiny write (at most once a second),
// so that readiness comes back when the disk has room again even if no client sends.
func (s *Service) Ready(ctx context.Context) error {
	if !s.unavailable.Load() {
		return nil
	}
	now, last := s.now().UnixMilli(), s.lastProbe.Load()
	if now-last < 1000 || !s.lastProbe.CompareAndSwap(last, now) {
		return store.ErrUnavailable
	}
	if err := s.st.Probe(ctx); err != nil {
		return err
	}
	s.storeOK()
	return nil
}
