package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/parley-chat/parley/internal/store"
	"github.com/parley-chat/parley/protocol"
)

// errNothingStored ends an Append transaction that stored nothing: it is rolled back instead
// of committed, which saves writing and syncing it.
var errNothingStored = errors.New("nothing stored")

// head is a conversation's log head as an Append batch advances it.
type head struct {
	num                             int64 // the conversation's number: its key in the log
	lastSeq, lastTextSeq, updatedTS int64
	memberVersion                   int64
	spreadV, spreadTS               int64 // what the conversation last spread to its members
	touched                         bool
}

type memberKey struct{ conv, user string }

// batch is the state of one Append transaction: the statements bound to it, and what it has
// learnt about membership and log heads, so each is read once per batch, not once per request.
type batch struct {
	// ctx runs the statements: the caller's context without its cancellation. The driver
	// watches a cancellable context with a goroutine per statement, which costs more than
	// a hot-path statement itself, so Append checks the caller's context between requests
	// instead (a cancelled batch rolls back, as if a statement had failed).
	ctx     context.Context
	tx      *sql.Tx
	w       writeStmts // bound to tx
	s       *Store
	members map[memberKey]bool
	heads   map[string]*head
	order   []string // conversations in the order the batch first touched them
	lists   map[string]*store.MemberList
	stored  int
}

// Append implements store.Events. The batch is one BEGIN IMMEDIATE transaction on the single
// writer connection, made durable by one WAL sync (durable.go). Per request it runs, in order:
// the dedupe lookup (a stored (sender, client id) answers with the original even if the
// sender has left since), the membership check, the target check of an edit, delete or
// reaction, then the insert with the conversation's next seq. Log heads are written back once
// per conversation at the end, with one bump of the sync version.
func (s *Store) Append(ctx context.Context, reqs []store.AppendRequest) ([]store.AppendResult, error) {
	results, durable, err := s.AppendCommitted(ctx, reqs)
	if err != nil {
		return nil, err
	}
	if err := durable(ctx); err != nil {
		return nil, err
	}
	return results, nil
}

// AppendCommitted implements store.Events.
func (s *Store) AppendCommitted(ctx context.Context, reqs []store.AppendRequest) ([]store.AppendResult, store.Durable, error) {
	const op = "append"
	if err := s.enter(op); err != nil {
		return nil, nil, err
	}
	defer s.leave()
	if len(reqs) == 0 {
		return []store.AppendResult{}, s.sync.durable(0), nil
	}
	results := make([]store.AppendResult, len(reqs))
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	var b *batch
	n, err := s.commit(ctx, func(tx *sql.Tx) error {
		b = &batch{
			ctx:     context.WithoutCancel(ctx),
			tx:      tx,
			s:       s,
			members: make(map[memberKey]bool),
			heads:   make(map[string]*head),
		}
		b.bind()
		// Another Store on this file (another process) may have written since the hot
		// cache was filled; this transaction holds the write lock, so what it reads now
		// stays true until it commits.
		var dv int64
		if err := s.wtx(tx).QueryRowContext(ctx, `PRAGMA data_version`).Scan(&dv); err != nil {
			return err
		}
		s.hot.validate(dv)
		for i := range reqs {
			if err := ctx.Err(); err != nil {
				return err
			}
			r, err := b.append(reqs[i])
			if err != nil {
				return fmt.Errorf("request %d: %w", i, err)
			}
			results[i] = r
		}
		if b.stored == 0 {
			return errNothingStored
		}
		v, err := s.bumpVersion(b.ctx, tx)
		if err != nil {
			return err
		}
		for _, id := range b.order {
			h := b.heads[id]
			if !h.touched {
				continue
			}
			spread := s.spreadTo(h, v, h.updatedTS)
			if _, err := b.w.setHead.ExecContext(b.ctx, h.lastSeq, h.lastTextSeq, h.updatedTS, v, h.spreadV, h.spreadTS, h.num); err != nil {
				return fmt.Errorf("conversation %q: %w", id, err)
			}
			if spread {
				if _, err := b.w.spread.ExecContext(b.ctx, h.spreadV, h.spreadTS, id); err != nil {
					return fmt.Errorf("conversation %q: %w", id, err)
				}
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, errNothingStored) {
		return nil, nil, wrap(op, err)
	}
	// Committed (or nothing written): what the batch read and wrote is the database's state.
	// A batch that stored nothing still waits for the commits before it: its duplicates
	// point at events that may not be durable yet.
	s.hot.remember(b.heads, b.members)
	if n == 0 {
		n = s.sync.started.Load()
	}
	return results, s.sync.durable(n), nil
}

// syncEpochBits sets the coarseness of members.sync_v (migrations/0007_spread.sql): a
// conversation's change spreads to its member rows at most once per 2^syncEpochBits versions,
// and a sync page reads at most one such epoch's rows beyond what it returns.
const syncEpochBits = 8

// spreadTo decides, for conversation h changed at version v with its last activity now at
// ts, whether its member rows must be rewritten, and updates h's spread values to what they
// must hold.
func (s *Store) spreadTo(h *head, v, ts int64) (spread bool) {
	if h.spreadV>>syncEpochBits < v>>syncEpochBits {
		h.spreadV, spread = v, true
	}
	if ts < h.spreadTS || ts >= h.spreadTS+s.windowMS() {
		h.spreadTS, spread = ts, true
	}
	return spread
}

func (s *Store) windowMS() int64 {
	if s.opts.ActivityWindow > 0 {
		return s.opts.ActivityWindow.Milliseconds()
	}
	return 100
}

// bind binds the writer's prepared statements to the batch's transaction.
func (b *batch) bind() {
	st := func(s *sql.Stmt) *sql.Stmt { return b.tx.StmtContext(b.ctx, s) }
	w := &b.s.w
	b.w = writeStmts{
		dedupe: st(w.dedupe), member: st(w.member), head: st(w.head), insert: st(w.insert),
		target: st(w.target), edit: st(w.edit), del: st(w.del), dropReactions: st(w.dropReactions),
		react: st(w.react), unreact: st(w.unreact), setHead: st(w.setHead), spread: st(w.spread),
	}
}

// append handles one request. A per-request failure is in the result; an error is fatal to
// the batch.
func (b *batch) append(r store.AppendRequest) (store.AppendResult, error) {
	if r.ClientID == "" {
		r.ClientID = uuid.NewString()
	}
	switch r.Kind {
	case protocol.KindText:
		r.TargetSeq, r.Emoji, r.Remove = 0, "", false
	case protocol.KindEdit:
		r.ReplyTo, r.Attachments, r.Emoji, r.Remove = 0, nil, "", false
	case protocol.KindDelete:
		r.Body, r.ReplyTo, r.Attachments, r.Emoji, r.Remove = "", 0, nil, "", false
	case protocol.KindReaction:
		r.Body, r.ReplyTo, r.Attachments = "", 0, nil
	default:
		// System events come only from CreateGroup and ChangeMembership.
		return store.AppendResult{Err: fmt.Errorf("sqlite: append: kind %q cannot be appended", r.Kind)}, nil
	}

	// Text is the hot path: the insert itself detects a duplicate (ON CONFLICT DO NOTHING),
	// so a new message costs one statement. Other kinds look the key up first, because a
	// duplicate must win over a target that has become invalid since.
	member, err := b.isMember(r.ConversationID, r.SenderID)
	if err != nil {
		return store.AppendResult{}, err
	}
	if !member || r.Kind != protocol.KindText {
		if res, ok, err := b.duplicate(r); err != nil || ok {
			return res, err
		}
	}
	if !member {
		return store.AppendResult{Err: fmt.Errorf("sqlite: append: user %q in conversation %q: %w",
			r.SenderID, r.ConversationID, store.ErrNotMember)}, nil
	}
	h, err := b.head(r.ConversationID)
	if err != nil {
		return store.AppendResult{}, err
	}
	if r.ReplyTo > h.lastSeq {
		return store.AppendResult{Err: fmt.Errorf("sqlite: append: reply to %d in conversation %q, whose last seq is %d: %w",
			r.ReplyTo, r.ConversationID, h.lastSeq, store.ErrNotFound)}, nil
	}
	if r.Kind != protocol.KindText {
		ok, err := b.validTarget(h.num, r.TargetSeq)
		if err != nil {
			return store.AppendResult{}, err
		}
		if !ok {
			return store.AppendResult{Err: fmt.Errorf("sqlite: append: %s of message %d in conversation %q: %w",
				r.Kind, r.TargetSeq, r.ConversationID, store.ErrNotFound)}, nil
		}
	}

	seq := h.lastSeq + 1
	var attachments any
	if len(r.Attachments) > 0 {
		attachments = r.Attachments
	}
	res, err := b.w.insert.ExecContext(b.ctx, h.num, seq, r.ClientID, r.SenderID, r.Kind, r.Body,
		r.ReplyTo, r.TargetSeq, r.Emoji, boolInt(r.Remove), attachments, nil, r.TS)
	if err != nil {
		return store.AppendResult{}, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return store.AppendResult{}, err
	}
	if n == 0 {
		res, ok, err := b.duplicate(r)
		if err == nil && !ok {
			err = fmt.Errorf("insert of (%q, %q) conflicted but no original found", r.SenderID, r.ClientID)
		}
		return res, err
	}

	if err := b.apply(r, h.num, seq); err != nil {
		return store.AppendResult{}, err
	}
	h.lastSeq = seq
	if r.Kind == protocol.KindText {
		h.lastTextSeq = seq
	}
	h.updatedTS = r.TS
	h.touched = true
	b.stored++
	var members *store.MemberList
	if r.MemberVersion != h.memberVersion {
		if members, err = b.memberList(r.ConversationID, h.memberVersion); err != nil {
			return store.AppendResult{}, err
		}
	}
	return store.AppendResult{Members: members, Message: protocol.Message{
		ConversationID: r.ConversationID,
		Seq:            seq,
		ID:             r.ClientID,
		SenderID:       r.SenderID,
		Kind:           r.Kind,
		Body:           r.Body,
		ReplyTo:        r.ReplyTo,
		TargetSeq:      r.TargetSeq,
		Emoji:          r.Emoji,
		Remove:         r.Remove,
		Attachments:    r.Attachments,
		TS:             r.TS,
	}}, nil
}

// apply makes an edit, delete or reaction stored as seq in conversation conv (its number)
// take effect on its target.
func (b *batch) apply(r store.AppendRequest, conv, seq int64) error {
	var err error
	switch r.Kind {
	case protocol.KindEdit:
		_, err = b.w.edit.ExecContext(b.ctx, r.Body, r.TS, conv, r.TargetSeq)
	case protocol.KindDelete:
		if _, err = b.w.del.ExecContext(b.ctx, conv, r.TargetSeq); err == nil {
			_, err = b.w.dropReactions.ExecContext(b.ctx, conv, r.TargetSeq)
		}
	case protocol.KindReaction:
		if r.Remove {
			_, err = b.w.unreact.ExecContext(b.ctx, conv, r.TargetSeq, r.Emoji, r.SenderID)
		} else {
			_, err = b.w.react.ExecContext(b.ctx, conv, r.TargetSeq, r.Emoji, r.SenderID, seq)
		}
	}
	return err
}

// duplicate returns the stored original of r's (sender, client id), if there is one.
func (b *batch) duplicate(r store.AppendRequest) (store.AppendResult, bool, error) {
	var conv string
	var seq int64
	err := b.w.dedupe.QueryRowContext(b.ctx, r.SenderID, r.ClientID).Scan(&conv, &seq)
	if errors.Is(err, sql.ErrNoRows) {
		return store.AppendResult{}, false, nil
	}
	if err != nil {
		return store.AppendResult{}, false, err
	}
	m, err := b.s.wv.messageAt(b.ctx, b.tx, conv, seq)
	if err != nil {
		return store.AppendResult{}, false, err
	}
	return store.AppendResult{Message: m, Duplicate: true}, true, nil
}

// isMember answers from the batch's cache: membership cannot change inside an Append.
func (b *batch) isMember(conv, user string) (bool, error) {
	k := memberKey{conv, user}
	if ok, seen := b.members[k]; seen {
		return ok, nil
	}
	if b.s.hot.isMember(conv, user) {
		b.members[k] = true
		return true, nil
	}
	var ok bool
	if err := b.w.member.QueryRowContext(b.ctx, conv, user).Scan(&ok); err != nil {
		return false, err
	}
	b.members[k] = ok
	return ok, nil
}

// head returns the conversation's log head, read once per batch.
func (b *batch) head(conv string) (*head, error) {
	if h, ok := b.heads[conv]; ok {
		return h, nil
	}
	h := &head{}
	if cached, ok := b.s.hot.head(conv); ok {
		*h = cached
	} else if err := b.w.head.QueryRowContext(b.ctx, conv).Scan(&h.num, &h.lastSeq, &h.lastTextSeq, &h.updatedTS, &h.memberVersion, &h.spreadV, &h.spreadTS); err != nil {
		return nil, fmt.Errorf("conversation %q: %w", conv, err)
	}
	b.heads[conv] = h
	b.order = append(b.order, conv)
	return h, nil
}

// memberList returns the conversation's member list, read once per batch.
func (b *batch) memberList(conv string, version int64) (*store.MemberList, error) {
	if l, ok := b.lists[conv]; ok {
		return l, nil
	}
	ms, err := b.s.wv.membersOf(b.ctx, b.tx, conv)
	if err != nil {
		return nil, err
	}
	l := &store.MemberList{Version: version, IDs: make([]string, len(ms))}
	for i, m := range ms {
		l.IDs[i] = m.UserID
	}
	if b.lists == nil {
		b.lists = make(map[string]*store.MemberList)
	}
	b.lists[conv] = l
	return l, nil
}

// validTarget reports whether seq is a text message of the conversation numbered conv that
// is not deleted.
func (b *batch) validTarget(conv, seq int64) (bool, error) {
	var kind string
	var deleted bool
	err := b.w.target.QueryRowContext(b.ctx, conv, seq).Scan(&kind, &deleted)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return kind == protocol.KindText && !deleted, nil
}

// Messages implements store.Events. The membership check, the page and its reactions are
// read in one snapshot.
func (s *Store) Messages(ctx context.Context, conversationID, userID string, before, after int64, limit int) ([]protocol.Message, bool, error) {
	const op = "messages"
	if err := s.enter(op); err != nil {
		return nil, false, err
	}
	defer s.leave()
	limit = limitOrDefault(limit)
	if before <= 0 {
		before = math.MaxInt64
	}
	var ms []protocol.Message
	var more bool
	err := s.read(ctx, func(tx *sql.Tx) error {
		var member bool
		if err := tx.StmtContext(ctx, s.rv.isMember).QueryRowContext(ctx, conversationID, userID).Scan(&member); err != nil {
			return err
		}
		if !member {
			return fmt.Errorf("conversation %q for user %q: %w", conversationID, userID, store.ErrNotFound)
		}
		var rows *sql.Rows
		var err error
		if after < 0 {
			rows, err = tx.StmtContext(ctx, s.rv.pageDesc).QueryContext(ctx, conversationID, before, limit+1)
		} else {
			rows, err = tx.StmtContext(ctx, s.rv.pageAsc).QueryContext(ctx, conversationID, after, before, limit+1)
		}
		if err != nil {
			return err
		}
		ms, err = scanMessages(conversationID, rows)
		if err != nil {
			return err
		}
		if len(ms) > limit {
			more = true
			ms = ms[:limit]
		}
		if after < 0 {
			for i, j := 0, len(ms)-1; i < j; i, j = i+1, j-1 {
				ms[i], ms[j] = ms[j], ms[i]
			}
		}
		return s.rv.attachReactions(ctx, tx, conversationID, ms)
	})
	if err != nil {
		return nil, false, wrap(op, err)
	}
	return ms, more, nil
}

func scanMessages(convID string, rows *sql.Rows) ([]protocol.Message, error) {
	defer rows.Close()
	ms := []protocol.Message{}
	for rows.Next() {
		m, err := scanMessage(convID, rows)
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	return ms, rows.Err()
}

// Message implements store.Events.
func (s *Store) Message(ctx context.Context, conversationID string, seq int64) (protocol.Message, error) {
	const op = "message"
	if err := s.enter(op); err != nil {
		return protocol.Message{}, err
	}
	defer s.leave()
	var m protocol.Message
	err := s.read(ctx, func(tx *sql.Tx) error {
		var err error
		m, err = s.rv.messageAt(ctx, tx, conversationID, seq)
		return err
	})
	if err != nil {
		return protocol.Message{}, wrap(op, err)
	}
	return m, nil
}

// Receipt cursor statuses of SetCursor.
const (
	statusDelivered = "delivered"
	statusRead      = "read"
)

// SetCursor implements store.Events: SetCursors with one update.
func (s *Store) SetCursor(ctx context.Context, conversationID, userID, status string, seq int64, ts int64) (bool, error) {
	rs, err := s.SetCursors(ctx, []store.CursorUpdate{{ConversationID: conversationID, UserID: userID, Status: status, Seq: seq, TS: ts}})
	if err != nil {
		return false, err
	}
	return rs[0].Changed, rs[0].Err
}

// SetCursors implements store.Events: every update of the batch in one write transaction,
// the version bumped once if anything moved.
func (s *Store) SetCursors(ctx context.Context, ups []store.CursorUpdate) ([]store.CursorResult, error) {
	const op = "set cursors"
	if err := s.enter(op); err != nil {
		return nil, err
	}
	defer s.leave()
	results := make([]store.CursorResult, len(ups))
	err := s.write(ctx, func(tx *sql.Tx) error {
		clear(results)
		var v int64 // the version of this transaction, once something moved
		for i, u := range ups {
			if u.Status != statusDelivered && u.Status != statusRead {
				results[i].Err = fmt.Errorf("sqlite: %s: unknown status %q", op, u.Status)
				continue
			}
			var read, delivered, readTS, deliveredTS, last int64
			err := s.wtx(tx).QueryRowContext(ctx, `SELECT m.last_read_seq, m.last_delivered_seq, m.last_read_ts,
				m.last_delivered_ts, h.last_seq
				FROM members m JOIN conversations c ON c.id = m.conversation_id JOIN heads h ON h.num = c.num
				WHERE m.conversation_id = ? AND m.user_id = ?`, u.ConversationID, u.UserID).
				Scan(&read, &delivered, &readTS, &deliveredTS, &last)
			if errors.Is(err, sql.ErrNoRows) {
				results[i].Err = fmt.Errorf("sqlite: %s: user %q in conversation %q: %w", op, u.UserID, u.ConversationID, store.ErrNotMember)
				continue
			}
			if err != nil {
				return err
			}
			seq := min(max(u.Seq, 0), last)
			changed := false
			if u.Status == statusRead && seq > read {
				read, readTS, changed = seq, u.TS, true
			}
			if seq > delivered {
				delivered, deliveredTS, changed = seq, u.TS, true
			}
			results[i] = store.CursorResult{Changed: changed, ReadSeq: read, DeliveredSeq: delivered}
			if !changed {
				continue
			}
			if v == 0 {
				if v, err = s.bumpVersion(ctx, tx); err != nil {
					return err
				}
			}
			if _, err := s.wtx(tx).ExecContext(ctx, `UPDATE members SET last_read_seq = ?, last_read_ts = ?,
				last_delivered_seq = ?, last_delivered_ts = ?, version = ?, sync_v = max(sync_v, ?)
				WHERE conversation_id = ? AND user_id = ?`,
				read, readTS, delivered, deliveredTS, v, v, u.ConversationID, u.UserID); err != nil {
				return err
			}
		}
		if v == 0 {
			return errNothingStored
		}
		return nil
	})
	if err != nil && !errors.Is(err, errNothingStored) {
		return nil, wrap(op, err)
	}
	return results, nil
}

// Sync implements store.Events. Every write that changes what Sync reports bumps meta.version
// once and stamps the conversation's head (events, membership, name) or the member row (the
// user's cursors, role, joining) with it. A conversation's change is the larger of the two
// stamps; Sync pages by (change, id) upward, so a page's token is the last row's pair, and the
// token after the last page is the counter read in the same snapshot, which covers exactly
// what was returned. A conversation the user was removed from is not returned (its member
// row is gone): Departed reports it. Tokens: "" (from the start), "V" (after version V),
// "V.ID" (after conversation ID at version V).
//
// The rows are found through members_sync (user_id, sync_v), an epoch of 2^syncEpochBits
// versions at a time: a member row's sync_v is in the same epoch as its change and not above
// it (migrations/0007_spread.sql), so one epoch's rows hold exactly that epoch's changes, and
// a page reads what it returns plus the rest of one epoch.
func (s *Store) Sync(ctx context.Context, userID, since string, limit int) ([]protocol.Conversation, string, bool, error) {
	const op = "sync"
	v, after, err := parseSyncToken(since)
	if err != nil {
		return nil, "", false, fmt.Errorf("sqlite: %s: %w", op, err)
	}
	if limit <= 0 {
		limit = 500
	}
	if err := s.enter(op); err != nil {
		return nil, "", false, err
	}
	defer s.leave()
	type cand struct {
		k  int64
		id string
	}
	var cs []protocol.Conversation
	var next string
	var more bool
	err = s.read(ctx, func(tx *sql.Tx) error {
		var counter int64
		if err := s.rtx(tx).QueryRowContext(ctx, `SELECT version FROM meta`).Scan(&counter); err != nil {
			return err
		}
		var page []cand
		lo := v >> syncEpochBits << syncEpochBits
		for len(page) <= limit {
			var first sql.NullInt64
			if err := s.rtx(tx).QueryRowContext(ctx, `SELECT min(sync_v) FROM members WHERE user_id = ? AND sync_v >= ?`,
				userID, lo).Scan(&first); err != nil {
				return err
			}
			if !first.Valid {
				break
			}
			hi := (first.Int64>>syncEpochBits + 1) << syncEpochBits
			rows, err := s.rtx(tx).QueryContext(ctx, `SELECT m.conversation_id, max(h.version, m.version)
				FROM members m JOIN conversations c ON c.id = m.conversation_id JOIN heads h ON h.num = c.num
				WHERE m.user_id = ? AND m.sync_v >= ? AND m.sync_v < ?`, userID, first.Int64, hi)
			if err != nil {
				return err
			}
			var group []cand
			for rows.Next() {
				var c cand
				if err := rows.Scan(&c.id, &c.k); err != nil {
					rows.Close()
					return err
				}
				if c.k > v || (after != "" && c.k == v && c.id > after) {
					group = append(group, c)
				}
			}
			if err := errors.Join(rows.Err(), rows.Close()); err != nil {
				return err
			}
			slices.SortFunc(group, func(a, b cand) int {
				if a.k != b.k {
					return cmp.Compare(a.k, b.k)
				}
				return strings.Compare(a.id, b.id)
			})
			page = append(page, group...)
			lo = hi
		}
		if more = len(page) > limit; more {
			page = page[:limit]
			next = strconv.FormatInt(page[limit-1].k, 10) + "." + page[limit-1].id
		} else {
			next = strconv.FormatInt(counter, 10)
		}
		rs := make([]convRow, 0, len(page))
		for _, c := range page {
			r, err := scanConvRow(tx.StmtContext(ctx, s.rv.conv).QueryRowContext(ctx, c.id, userID))
			if err != nil {
				return err
			}
			rs = append(rs, r)
		}
		cs, err = s.rv.views(ctx, tx, userID, rs)
		return err
	})
	if err != nil {
		return nil, "", false, wrap(op, err)
	}
	return cs, next, more, nil
}

// parseSyncToken reads a Sync token (see Sync).
func parseSyncToken(t string) (version int64, after string, err error) {
	if t == "" {
		return 0, "", nil
	}
	vt, after, _ := strings.Cut(t, ".")
	version, err = strconv.ParseInt(vt, 10, 64)
	if err != nil || version < 0 {
		return 0, "", store.ErrBadCursor
	}
	return version, after, nil
}

// Departed implements store.Events.
func (s *Store) Departed(ctx context.Context, userID, token string) ([]string, error) {
	const op = "departed"
	since, _, err := parseSyncToken(token)
	if err != nil {
		return nil, fmt.Errorf("sqlite: %s: %w", op, err)
	}
	if err := s.enter(op); err != nil {
		return nil, err
	}
	defer s.leave()
	ids := []string{}
	err = s.read(ctx, func(tx *sql.Tx) error {
		rows, err := s.rtx(tx).QueryContext(ctx, `SELECT conversation_id FROM departures
			WHERE user_id = ? AND version > ? ORDER BY version, conversation_id`, userID, since)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, wrap(op, err)
	}
	return ids, nil
}
