package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"

	"github.com/google/uuid"

	"github.com/parley-chat/parley/internal/store"
	"github.com/parley-chat/parley/protocol"
)

// convRow is a conversation row joined with one member's row: a view before its members,
// last message and unread count are filled in.
type convRow struct {
	c           protocol.Conversation
	lastTextSeq int64
}

// scanConvRow scans convSelect's columns, and then any columns after them into extra.
func scanConvRow(sc interface{ Scan(...any) error }, extra ...any) (convRow, error) {
	var r convRow
	err := sc.Scan(append([]any{&r.c.ID, &r.c.Type, &r.c.Name, &r.c.LastSeq, &r.lastTextSeq, &r.c.CreatedTS,
		&r.c.UpdatedTS, &r.c.LastReadSeq, &r.c.LastDeliveredSeq}, extra...)...)
	return r, err
}

// views completes rows into userID's views of the conversations, inside tx: members in join
// order, the latest text message in its current state, and the unread count (text messages
// not deleted, after the read cursor, sent by someone else).
func (vs *viewStmts) views(ctx context.Context, tx *sql.Tx, userID string, rows []convRow) ([]protocol.Conversation, error) {
	cs := make([]protocol.Conversation, 0, len(rows))
	for _, r := range rows {
		c := r.c
		var err error
		if c.Members, err = vs.membersOf(ctx, tx, c.ID); err != nil {
			return nil, err
		}
		if r.lastTextSeq > 0 {
			m, err := vs.messageAt(ctx, tx, c.ID, r.lastTextSeq)
			if err != nil {
				return nil, err
			}
			c.LastMessage = &m
		}
		if err := tx.StmtContext(ctx, vs.unread).QueryRowContext(ctx, c.ID, c.LastReadSeq, userID).
			Scan(&c.UnreadCount); err != nil {
			return nil, err
		}
		cs = append(cs, c)
	}
	return cs, nil
}

// view is views for one conversation, or store.ErrNotFound if userID is not a member.
func (vs *viewStmts) view(ctx context.Context, tx *sql.Tx, id, userID string) (protocol.Conversation, error) {
	r, err := scanConvRow(tx.StmtContext(ctx, vs.conv).QueryRowContext(ctx, id, userID))
	if errors.Is(err, sql.ErrNoRows) {
		return protocol.Conversation{}, fmt.Errorf("conversation %q for user %q: %w", id, userID, store.ErrNotFound)
	}
	if err != nil {
		return protocol.Conversation{}, err
	}
	cs, err := vs.views(ctx, tx, userID, []convRow{r})
	if err != nil {
		return protocol.Conversation{}, err
	}
	return cs[0], nil
}

// membersOf returns the conversation's members in join order.
func (vs *viewStmts) membersOf(ctx context.Context, tx *sql.Tx, id string) ([]protocol.Member, error) {
	rows, err := tx.StmtContext(ctx, vs.members).QueryContext(ctx, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	ms := []protocol.Member{}
	for rows.Next() {
		var m protocol.Member
		if err := rows.Scan(&m.UserID, &m.Role, &m.LastDeliveredSeq, &m.LastReadSeq); err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	return ms, rows.Err()
}

// messageAt returns one event in its current state (reactions included), or store.ErrNotFound.
func (vs *viewStmts) messageAt(ctx context.Context, tx *sql.Tx, conversationID string, seq int64) (protocol.Message, error) {
	m, err := scanMessage(conversationID, tx.StmtContext(ctx, vs.message).QueryRowContext(ctx, conversationID, seq))
	if errors.Is(err, sql.ErrNoRows) {
		return protocol.Message{}, fmt.Errorf("message %d of conversation %q: %w", seq, conversationID, store.ErrNotFound)
	}
	if err != nil {
		return protocol.Message{}, err
	}
	ms := []protocol.Message{m}
	if err := vs.attachReactions(ctx, tx, conversationID, ms); err != nil {
		return protocol.Message{}, err
	}
	return ms[0], nil
}

// attachReactions fills the aggregated reactions of the text messages in ms, which must be
// ascending by seq: per emoji in order of its first current reaction, users in the order they
// reacted.
func (vs *viewStmts) attachReactions(ctx context.Context, tx *sql.Tx, conversationID string, ms []protocol.Message) error {
	lo, hi := int64(-1), int64(-1)
	for _, m := range ms {
		if m.Kind != protocol.KindText || m.Deleted {
			continue
		}
		if lo < 0 {
			lo = m.Seq
		}
		hi = m.Seq
	}
	if lo < 0 {
		return nil
	}
	rows, err := tx.StmtContext(ctx, vs.reactions).QueryContext(ctx, conversationID, lo, hi)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var target int64
		var emoji, userID string
		if err := rows.Scan(&target, &emoji, &userID); err != nil {
			return err
		}
		i := sort.Search(len(ms), func(i int) bool { return ms[i].Seq >= target })
		if i == len(ms) || ms[i].Seq != target {
			continue // in the range but not in the page (cannot happen for a contiguous page)
		}
		m := &ms[i]
		j := 0
		for j < len(m.Reactions) && m.Reactions[j].Emoji != emoji {
			j++
		}
		if j == len(m.Reactions) {
			m.Reactions = append(m.Reactions, protocol.Reaction{Emoji: emoji})
		}
		m.Reactions[j].Count++
		m.Reactions[j].UserIDs = append(m.Reactions[j].UserIDs, userID)
	}
	return rows.Err()
}

// scanMessage reads a row of msgCols, a message of the conversation convID.
func scanMessage(convID string, sc interface{ Scan(...any) error }) (protocol.Message, error) {
	m := protocol.Message{ConversationID: convID}
	var remove, deleted int
	var attachments, system []byte
	err := sc.Scan(&m.Seq, &m.ID, &m.SenderID, &m.Kind, &m.Body, &m.ReplyTo,
		&m.TargetSeq, &m.Emoji, &remove, &attachments, &system, &m.TS, &m.EditedTS, &deleted)
	if err != nil {
		return protocol.Message{}, err
	}
	m.Remove = remove != 0
	m.Deleted = deleted != 0
	if len(attachments) > 0 {
		m.Attachments = attachments
	}
	if len(system) > 0 {
		m.System = new(protocol.SystemEvent)
		if err := json.Unmarshal(system, m.System); err != nil {
			return protocol.Message{}, fmt.Errorf("message %d of %q: system event: %w", m.Seq, m.ConversationID, err)
		}
	}
	return m, nil
}

// CreateDirect implements store.Conversations. The lookup and the insert run in one write
// transaction, and writes are serialised, so concurrent calls for a pair find the first one's
// conversation; the unique direct_key backs that up. The conversation is returned as a sees
// it. It has no system event: it starts at seq 0.
func (s *Store) CreateDirect(ctx context.Context, id, a, b string, ts int64) (protocol.Conversation, bool, error) {
	const op = "create direct"
	if err := s.enter(op); err != nil {
		return protocol.Conversation{}, false, err
	}
	defer s.leave()
	var c protocol.Conversation
	var created bool
	err := s.write(ctx, func(tx *sql.Tx) error {
		key := store.DirectKey(a, b)
		var existing string
		err := s.wtx(tx).QueryRowContext(ctx, `SELECT id FROM conversations WHERE direct_key = ?`, key).Scan(&existing)
		switch {
		case err == nil:
			id = existing
		case errors.Is(err, sql.ErrNoRows):
			v, err := s.bumpVersion(ctx, tx)
			if err != nil {
				return err
			}
			if err := s.insertConversation(ctx, tx, id, protocol.Direct, "", key, 0, ts, v); err != nil {
				return err
			}
			users := []string{a, b}
			if a == b {
				users = users[:1]
			}
			for _, u := range users {
				if err := s.insertMember(ctx, tx, id, protocol.Member{UserID: u, Role: protocol.RoleMember}, ts, 0, v, ts); err != nil {
					return err
				}
			}
			created = true
		default:
			return err
		}
		c, err = s.wv.view(ctx, tx, id, a)
		return err
	})
	if err != nil {
		return protocol.Conversation{}, false, wrap(op, err)
	}
	return c, created, nil
}

// insertConversation stores a new conversation and its head, numbered one past the highest
// number so far (writes are serialised: no other transaction can take it meanwhile).
// directKey is nil for a group. ErrConflict if the id (or the direct pair) exists.
func (s *Store) insertConversation(ctx context.Context, tx *sql.Tx, id, typ, name string, directKey any, lastSeq, ts, version int64) error {
	var num int64
	err := s.wtx(tx).QueryRowContext(ctx, `INSERT INTO conversations (id, num, type, name, direct_key, created_ts)
		VALUES (?, (SELECT coalesce(max(num), 0) + 1 FROM conversations), ?, ?, ?, ?) RETURNING num`,
		id, typ, name, directKey, ts).Scan(&num)
	if isConstraint(err) {
		return fmt.Errorf("conversation %q: %w", id, store.ErrConflict)
	}
	if err != nil {
		return err
	}
	_, err = s.wtx(tx).ExecContext(ctx, `INSERT INTO heads (num, last_seq, last_text_seq, updated_ts, version, spread_v, spread_ts)
		VALUES (?, ?, 0, ?, ?, ?, ?)`, num, lastSeq, ts, version, version, ts)
	return err
}

// insertMember adds m to the conversation unless it is a member already, with both receipt
// cursors at cursor (a member joins having seen the log up to the event that added them).
// actTS is what the conversation's members hold as act_ts (heads.spread_ts).
func (s *Store) insertMember(ctx context.Context, tx *sql.Tx, convID string, m protocol.Member, ts, cursor, version, actTS int64) error {
	if m.Role == "" {
		m.Role = protocol.RoleMember
	}
	_, err := s.wtx(tx).ExecContext(ctx, `INSERT INTO members
		(conversation_id, user_id, role, joined_ts, last_read_seq, last_delivered_seq, version, sync_v, act_ts)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
		convID, m.UserID, m.Role, ts, cursor, cursor, version, version, actTS)
	if err != nil {
		return err
	}
	_, err = s.wtx(tx).ExecContext(ctx, `DELETE FROM departures WHERE user_id = ? AND conversation_id = ?`, m.UserID, convID)
	return err
}

// insertSystem stores a system event with the given seq.
func (s *Store) insertSystem(ctx context.Context, tx *sql.Tx, m protocol.Message) error {
	ev, err := json.Marshal(m.System)
	if err != nil {
		return err
	}
	_, err = s.wtx(tx).ExecContext(ctx, `INSERT INTO messages
		(conv, seq, client_id, sender_id, kind, body, system, ts)
		VALUES (`+convNum+`, ?, ?, ?, ?, ?, ?, ?)`,
		m.ConversationID, m.Seq, m.ID, m.SenderID, protocol.KindSystem, m.Body, string(ev), m.TS)
	if isConstraint(err) {
		return fmt.Errorf("system event %q of %q: %w", m.ID, m.SenderID, store.ErrConflict)
	}
	return err
}

// CreateGroup implements store.Conversations. Members are stored in the order given, each
// once; the creator is added if missing and is an admin either way. Every member starts with
// its cursors at the "created" event, seq 1. ErrConflict if the ID exists.
func (s *Store) CreateGroup(ctx context.Context, c protocol.Conversation, creatorID string, ts int64) (protocol.Conversation, protocol.Message, error) {
	const op = "create group"
	if err := s.enter(op); err != nil {
		return protocol.Conversation{}, protocol.Message{}, err
	}
	defer s.leave()

	members, ids := store.GroupMembers(c, creatorID)
	msg := protocol.Message{
		ConversationID: c.ID,
		Seq:            1,
		ID:             uuid.NewString(),
		SenderID:       creatorID,
		Kind:           protocol.KindSystem,
		System: &protocol.SystemEvent{
			Action:  protocol.SysCreated,
			ActorID: creatorID,
			UserIDs: ids,
			Name:    c.Name,
		},
		TS: ts,
	}

	var out protocol.Conversation
	err := s.write(ctx, func(tx *sql.Tx) error {
		v, err := s.bumpVersion(ctx, tx)
		if err != nil {
			return err
		}
		if err := s.insertConversation(ctx, tx, c.ID, protocol.Group, c.Name, nil, 1, ts, v); err != nil {
			return err
		}
		for _, m := range members {
			if err := s.insertMember(ctx, tx, c.ID, m, ts, 1, v, ts); err != nil {
				return err
			}
		}
		if err := s.insertSystem(ctx, tx, msg); err != nil {
			return err
		}
		out, err = s.wv.view(ctx, tx, c.ID, creatorID)
		return err
	})
	if err != nil {
		return protocol.Conversation{}, protocol.Message{}, wrap(op, err)
	}
	return out, msg, nil
}

// ChangeMembership implements store.Conversations. fn sees the conversation with its members
// and no per-user fields. The change is applied as Remove, then Add (members already present
// are left as they are; new ones start with their cursors at the system event), then SetRole
// (for members only), then Name. Removed members' rows are deleted: they stop seeing the
// conversation.
func (s *Store) ChangeMembership(ctx context.Context, id string, ts int64, fn store.MembershipFunc) (protocol.Message, error) {
	const op = "change membership"
	if err := s.enter(op); err != nil {
		return protocol.Message{}, err
	}
	defer s.leave()
	var msg protocol.Message
	var fnErr error
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	defer s.hot.forget(id) // its head and members may have changed
	err := s.write(ctx, func(tx *sql.Tx) error {
		var c protocol.Conversation
		var lastText, num int64
		var h head
		err := s.wtx(tx).QueryRowContext(ctx, `SELECT c.id, c.type, c.name, h.last_seq, h.last_text_seq, c.created_ts,
			h.updated_ts, c.num, h.spread_v, h.spread_ts
			FROM conversations c JOIN heads h ON h.num = c.num WHERE c.id = ?`, id).
			Scan(&c.ID, &c.Type, &c.Name, &c.LastSeq, &lastText, &c.CreatedTS, &c.UpdatedTS, &num, &h.spreadV, &h.spreadTS)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("conversation %q: %w", id, store.ErrNotFound)
		}
		if err != nil {
			return err
		}
		if c.Members, err = s.wv.membersOf(ctx, tx, id); err != nil {
			return err
		}
		ch, err := fn(c)
		if err != nil {
			fnErr = err
			return err
		}

		v, err := s.bumpVersion(ctx, tx)
		if err != nil {
			return err
		}
		seq := c.LastSeq + 1
		spread := s.spreadTo(&h, v, ts)
		for _, u := range ch.Remove {
			if _, err := s.wtx(tx).ExecContext(ctx, `DELETE FROM members WHERE conversation_id = ? AND user_id = ?`, id, u); err != nil {
				return err
			}
			if _, err := s.wtx(tx).ExecContext(ctx, `INSERT INTO departures (user_id, conversation_id, version) VALUES (?, ?, ?)
				ON CONFLICT DO UPDATE SET version = excluded.version`, u, id, v); err != nil {
				return err
			}
		}
		for _, m := range ch.Add {
			if err := s.insertMember(ctx, tx, id, m, ts, seq, v, h.spreadTS); err != nil {
				return err
			}
		}
		for _, m := range ch.SetRole {
			if _, err := s.wtx(tx).ExecContext(ctx, `UPDATE members SET role = ?, version = ?, sync_v = max(sync_v, ?)
				WHERE conversation_id = ? AND user_id = ?`, m.Role, v, v, id, m.UserID); err != nil {
				return err
			}
		}
		if ch.Name != nil {
			if _, err := s.wtx(tx).ExecContext(ctx, `UPDATE conversations SET name = ? WHERE id = ?`, *ch.Name, id); err != nil {
				return err
			}
		}
		clientID := ch.ClientID
		if clientID == "" {
			clientID = uuid.NewString()
		}
		ev := ch.Event
		msg = protocol.Message{
			ConversationID: id,
			Seq:            seq,
			ID:             clientID,
			SenderID:       ch.ActorID,
			Kind:           protocol.KindSystem,
			System:         &ev,
			TS:             ts,
		}
		if err := s.insertSystem(ctx, tx, msg); err != nil {
			return err
		}
		if _, err := s.wtx(tx).ExecContext(ctx, `UPDATE heads SET last_seq = ?, updated_ts = ?, version = ?,
			member_version = member_version + 1, spread_v = ?, spread_ts = ? WHERE num = ?`,
			seq, ts, v, h.spreadV, h.spreadTS, num); err != nil {
			return err
		}
		if spread {
			_, err = s.wtx(tx).ExecContext(ctx, `UPDATE members SET sync_v = max(sync_v, ?), act_ts = ? WHERE conversation_id = ?`,
				h.spreadV, h.spreadTS, id)
		}
		return err
	})
	if fnErr != nil {
		return protocol.Message{}, fnErr // as is, per the contract
	}
	if err != nil {
		return protocol.Message{}, wrap(op, err)
	}
	return msg, nil
}

// Conversation implements store.Conversations.
func (s *Store) Conversation(ctx context.Context, id, userID string) (protocol.Conversation, error) {
	const op = "conversation"
	if err := s.enter(op); err != nil {
		return protocol.Conversation{}, err
	}
	defer s.leave()
	var c protocol.Conversation
	err := s.read(ctx, func(tx *sql.Tx) error {
		var err error
		c, err = s.rv.view(ctx, tx, id, userID)
		return err
	})
	if err != nil {
		return protocol.Conversation{}, wrap(op, err)
	}
	return c, nil
}

// ConversationsOf implements store.Conversations: ordered by updated_ts (the last event's ts)
// descending, then id descending; the cursor is the (updated_ts, id) of the last conversation
// of the previous page, base64-encoded.
//
// members_activity orders a user's memberships by act_ts, a copy of each conversation's
// updated_ts that is spread again only when updated_ts leaves [act_ts, act_ts + window)
// (migrations/0007_spread.sql). The page reads that index downwards, in chunks, until its
// last conversation is a window above the last entry read: it reads the page and the
// entries within one window of its end, however many memberships the user has.
func (s *Store) ConversationsOf(ctx context.Context, userID, cursor string, limit int) ([]protocol.Conversation, string, error) {
	const op = "conversations of"
	limit = limitOrDefault(limit)
	curTS, curID := int64(math.MaxInt64), ""
	if cursor != "" {
		ts, id, err := store.DecodeListCursor(cursor)
		if err != nil {
			return nil, "", fmt.Errorf("sqlite: %s: %w", op, err)
		}
		curTS, curID = ts, id
	}
	if err := s.enter(op); err != nil {
		return nil, "", err
	}
	defer s.leave()
	type cand struct {
		ts int64
		id string
	}
	// before reports whether a comes first in the list.
	before := func(a, b cand) bool { return a.ts > b.ts || (a.ts == b.ts && a.id > b.id) }
	window := s.windowMS()
	var cs []protocol.Conversation
	var next string
	err := s.read(ctx, func(tx *sql.Tx) error {
		var found []cand
		act, actID := curTS, "\U0010FFFF" // entries above the cursor's ts cannot be below it
		chunk := limit + 1
		for {
			rows, err := s.rtx(tx).QueryContext(ctx, `SELECT m.act_ts, m.conversation_id, h.updated_ts
				FROM members m JOIN conversations c ON c.id = m.conversation_id JOIN heads h ON h.num = c.num
				WHERE m.user_id = ? AND (m.act_ts, m.conversation_id) < (?, ?)
				ORDER BY m.act_ts DESC, m.conversation_id DESC LIMIT ?`, userID, act, actID, chunk)
			if err != nil {
				return err
			}
			n := 0
			for rows.Next() {
				var c cand
				if err := rows.Scan(&act, &actID, &c.ts); err != nil {
					rows.Close()
					return err
				}
				n++
				c.id = actID
				if cursor == "" || before(cand{curTS, curID}, c) {
					found = append(found, c)
				}
			}
			if err := errors.Join(rows.Err(), rows.Close()); err != nil {
				return err
			}
			sort.Slice(found, func(i, j int) bool { return before(found[i], found[j]) })
			if len(found) > limit+1 {
				found = found[:limit+1]
			}
			if n < chunk || (len(found) == limit+1 && found[limit].ts >= act+window) {
				break
			}
			chunk = min(2*chunk, 1000)
		}
		if len(found) > limit {
			found = found[:limit]
			next = store.EncodeListCursor(found[limit-1].ts, found[limit-1].id)
		}
		rs := make([]convRow, 0, len(found))
		for _, c := range found {
			r, err := scanConvRow(tx.StmtContext(ctx, s.rv.conv).QueryRowContext(ctx, c.id, userID))
			if err != nil {
				return err
			}
			rs = append(rs, r)
		}
		var err error
		cs, err = s.rv.views(ctx, tx, userID, rs)
		return err
	})
	if err != nil {
		return nil, "", wrap(op, err)
	}
	return cs, next, nil
}

func (s *Store) queryConvRows(ctx context.Context, tx *sql.Tx, q string, args ...any) ([]convRow, error) {
	rows, err := s.rtx(tx).QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var rs []convRow
	for rows.Next() {
		r, err := scanConvRow(rows)
		if err != nil {
			return nil, err
		}
		rs = append(rs, r)
	}
	return rs, rows.Err()
}

// MemberIDs implements store.Conversations.
func (s *Store) MemberIDs(ctx context.Context, id string) ([]string, error) {
	const op = "member ids"
	if err := s.enter(op); err != nil {
		return nil, err
	}
	defer s.leave()
	var ids []string
	err := s.read(ctx, func(tx *sql.Tx) error {
		var n int
		if err := s.rtx(tx).QueryRowContext(ctx, `SELECT count(*) FROM conversations WHERE id = ?`, id).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("conversation %q: %w", id, store.ErrNotFound)
		}
		ms, err := s.rv.membersOf(ctx, tx, id)
		if err != nil {
			return err
		}
		ids = make([]string, len(ms))
		for i, m := range ms {
			ids[i] = m.UserID
		}
		return nil
	})
	if err != nil {
		return nil, wrap(op, err)
	}
	return ids, nil
}

// Members implements store.Conversations.
func (s *Store) Members(ctx context.Context, id string) (store.MemberList, error) {
	const op = "members"
	if err := s.enter(op); err != nil {
		return store.MemberList{}, err
	}
	defer s.leave()
	var l store.MemberList
	err := s.read(ctx, func(tx *sql.Tx) error {
		err := s.rtx(tx).QueryRowContext(ctx, `SELECT h.member_version FROM conversations c JOIN heads h ON h.num = c.num
			WHERE c.id = ?`, id).Scan(&l.Version)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("conversation %q: %w", id, store.ErrNotFound)
		}
		if err != nil {
			return err
		}
		ms, err := s.rv.membersOf(ctx, tx, id)
		if err != nil {
			return err
		}
		l.IDs = make([]string, len(ms))
		for i, m := range ms {
			l.IDs[i] = m.UserID
		}
		return nil
	})
	if err != nil {
		return store.MemberList{}, wrap(op, err)
	}
	return l, nil
}

// IsMember implements store.Conversations.
func (s *Store) IsMember(ctx context.Context, id, userID string) (_ bool, err error) {
	const op = "is member"
	if err := s.enterRead(op); err != nil {
		return false, err
	}
	defer s.leaveRead(&err)
	var ok bool
	err = s.rv.isMember.QueryRowContext(ctx, id, userID).Scan(&ok)
	return ok, wrap(op, err)
}
