package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/parley-chat/parley/internal/store"
	"github.com/parley-chat/parley/protocol"
)

// xidSQL is the 64-bit id of the current transaction (assigned if it has none yet).
const xidSQL = `SELECT pg_current_xact_id()::text::bigint`

// epochBits sets the coarseness of member rows' sync_xid (see the migration): a
// conversation's change spreads to its member rows at most once per 2^epochBits
// transaction ids, and a sync page reads at most the rows that changed within one such
// epoch beyond what it returns.
const epochBits = 8

func epochOf(xid int64) int64 { return xid >> epochBits }

// head is a conversation's row as a writing transaction locked it.
type head struct {
	id                           string
	lastSeq, lastTextSeq         int64
	updatedTS, memberVersion     int64
	changeXID, spreadXID, spread int64 // spread is spread_ts
	name                         string
	touched                      bool // an event was appended
}

// spreadTo decides, for a conversation changed by transaction xid with its last activity now
// at ts, what its member rows must hold (see the migration): whether to spread, and the
// values.
func (db *DB) spreadTo(h *head, xid, ts int64) (spread bool, syncXID, actTS int64) {
	change := max(h.changeXID, xid)
	syncXID, actTS = h.spreadXID, h.spread
	if epochOf(syncXID) < epochOf(change) {
		syncXID, spread = change, true
	}
	if ts < actTS || ts >= actTS+db.windowMS {
		actTS, spread = ts, true
	}
	return spread, syncXID, actTS
}

// lockHeads locks the conversations ids in id order (so that transactions locking
// overlapping sets cannot deadlock) and returns their heads by id.
func lockHeads(ctx context.Context, q querier, ids []string) (map[string]*head, error) {
	rows, err := q.Query(ctx, `SELECT id, type, last_seq, last_text_seq, updated_ts, member_version, change_xid,
			spread_xid, spread_ts, name
		FROM conversations WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE`, ids)
	if err != nil {
		return nil, err
	}
	return collectHeads(rows)
}

func collectHeads(rows pgx.Rows) (map[string]*head, error) {
	defer rows.Close()
	hs := make(map[string]*head)
	for rows.Next() {
		h := &head{}
		var typ string
		if err := rows.Scan(&h.id, &typ, &h.lastSeq, &h.lastTextSeq, &h.updatedTS, &h.memberVersion,
			&h.changeXID, &h.spreadXID, &h.spread, &h.name); err != nil {
			return nil, err
		}
		hs[h.id] = h
	}
	return hs, rows.Err()
}

// stampConvSQL moves a conversation's change stamp to transaction $1 (never backwards).
const stampConvSQL = `change_pos = CASE WHEN $1 >= change_xid THEN nextval('change_pos') ELSE change_pos END,
	change_xid = GREATEST(change_xid, $1)`

// stampMemberSQL does the same to a member row, and keeps its sync_xid with it.
const stampMemberSQL = `change_pos = CASE WHEN $1 >= change_xid THEN nextval('change_pos') ELSE change_pos END,
	change_xid = GREATEST(change_xid, $1), sync_xid = GREATEST(sync_xid, $1)`

// spreadSQL copies conversations' stamps to their member rows: $1 ids, $2 sync_xids, $3
// act_ts.
const spreadSQL = `UPDATE members m SET sync_xid = GREATEST(m.sync_xid, u.sx), act_ts = u.at
	FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS u(id, sx, at) WHERE m.conversation_id = u.id`

// newConversation inserts a conversation with its members, stamped by transaction xid,
// and no events. cursor is where the members' receipt cursors start.
func newConversation(ctx context.Context, tx pgx.Tx, xid int64, c protocol.Conversation, directKey any,
	lastSeq, ts int64, members []protocol.Member) error {
	_, err := tx.Exec(ctx, `INSERT INTO conversations (id, type, name, direct_key, created_ts, last_seq, updated_ts,
			change_xid, change_pos, spread_xid, spread_ts)
		VALUES ($2, $3, $4, $5, $6, $7, $6, $1, nextval('change_pos'), $1, $6)`,
		xid, c.ID, c.Type, c.Name, directKey, ts, lastSeq)
	if isUnique(err) {
		return fmt.Errorf("conversation %q: %w", c.ID, store.ErrConflict)
	}
	if err != nil {
		return err
	}
	return insertMembers(ctx, tx, xid, xid, c.ID, members, ts, lastSeq, ts)
}

// insertMembers adds the members not in the conversation yet, stamped by xid, with their
// cursors at cursor and sync_xid and act_ts as the conversation's members hold them
// (syncXID, actTS: what spreadTo decided); a joining user's departure is forgotten.
//
// The row's sync_xid is the larger of xid and syncXID: the transaction took its xid before
// it waited for the conversation's lock, so a later transaction may have moved the
// conversation's stamp to a later epoch meanwhile, and the new row must be in the epoch of
// its change, which is the conversation's (found in review).
func insertMembers(ctx context.Context, tx pgx.Tx, xid, syncXID int64, convID string, ms []protocol.Member, ts, cursor, actTS int64) error {
	if len(ms) == 0 {
		return nil
	}
	users := make([]string, len(ms))
	roles := make([]string, len(ms))
	for i, m := range ms {
		users[i], roles[i] = m.UserID, m.Role
		if roles[i] == "" {
			roles[i] = protocol.RoleMember
		}
	}
	b := &pgx.Batch{}
	b.Queue(`INSERT INTO members (conversation_id, user_id, role, joined_ts, last_read_seq, last_delivered_seq,
			change_xid, change_pos, sync_xid, act_ts)
		SELECT $2, u.user_id, u.role, $3, $4, $4, $1, nextval('change_pos'), GREATEST($1::bigint, $8::bigint), $5
		FROM unnest($6::text[], $7::text[]) AS u(user_id, role)
		ON CONFLICT DO NOTHING`, xid, convID, ts, cursor, actTS, users, roles, syncXID)
	b.Queue(`DELETE FROM departures WHERE conversation_id = $1 AND user_id = ANY($2)`, convID, users)
	return tx.SendBatch(ctx, b).Close()
}

// insertSystem stores a system event.
func insertSystem(ctx context.Context, tx pgx.Tx, m protocol.Message) error {
	ev, err := json.Marshal(m.System)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO messages (conversation_id, seq, client_id, sender_id, kind, system, ts)
		VALUES ($1, $2, $3, $4, 'system', $5, $6)`, m.ConversationID, m.Seq, m.ID, m.SenderID, ev, m.TS)
	if isUnique(err) {
		return fmt.Errorf("system event %q of %q: %w", m.ID, m.SenderID, store.ErrConflict)
	}
	return err
}

// view returns conversation id as userID sees it, or store.ErrNotFound.
func view(ctx context.Context, q querier, id, userID string) (protocol.Conversation, error) {
	rs, err := convRowsOf(ctx, q, userID, []string{id})
	if err != nil {
		return protocol.Conversation{}, err
	}
	if len(rs) == 0 {
		return protocol.Conversation{}, fmt.Errorf("conversation %q for user %q: %w", id, userID, store.ErrNotFound)
	}
	cs, err := views(ctx, q, userID, rs)
	if err != nil {
		return protocol.Conversation{}, err
	}
	return cs[0], nil
}

// CreateDirect implements store.Conversations. The insert names the pair's unique key as its
// conflict target: of two processes creating the same pair at once, one inserts and the
// other waits for its commit and then reads its conversation.
func (db *DB) CreateDirect(ctx context.Context, id, a, b string, ts int64) (protocol.Conversation, bool, error) {
	const op = "create direct"
	if err := db.enter(op); err != nil {
		return protocol.Conversation{}, false, err
	}
	defer db.leave()
	var c protocol.Conversation
	var created bool
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		created = false
		key := store.DirectKey(a, b)
		var existing string
		err := tx.QueryRow(ctx, `SELECT id FROM conversations WHERE direct_key = $1`, key).Scan(&existing)
		if errors.Is(err, pgx.ErrNoRows) {
			created, err = insertDirect(ctx, tx, id, a, b, key, ts)
			if err == nil && !created { // another transaction created the pair meanwhile
				err = tx.QueryRow(ctx, `SELECT id FROM conversations WHERE direct_key = $1`, key).Scan(&existing)
			}
		}
		if err != nil {
			return err
		}
		if !created {
			id = existing
		}
		c, err = view(ctx, tx, id, a)
		return err
	})
	if err != nil {
		return protocol.Conversation{}, false, wrap(op, err)
	}
	return c, created, nil
}

// insertDirect creates the direct conversation id between a and b unless the pair has one
// (created false).
func insertDirect(ctx context.Context, tx pgx.Tx, id, a, b, key string, ts int64) (created bool, err error) {
	var xid int64
	if err := tx.QueryRow(ctx, xidSQL).Scan(&xid); err != nil {
		return false, err
	}
	tag, err := tx.Exec(ctx, `INSERT INTO conversations (id, type, name, direct_key, created_ts, updated_ts,
			change_xid, change_pos, spread_xid, spread_ts)
		VALUES ($2, 'direct', '', $3, $4, $4, $1, nextval('change_pos'), $1, $4)
		ON CONFLICT (direct_key) DO NOTHING`, xid, id, key, ts)
	if isUnique(err) {
		return false, fmt.Errorf("conversation %q: %w", id, store.ErrConflict)
	}
	if err != nil || tag.RowsAffected() == 0 {
		return false, err
	}
	members := []protocol.Member{{UserID: a, Role: protocol.RoleMember}, {UserID: b, Role: protocol.RoleMember}}
	if a == b {
		members = members[:1]
	}
	return true, insertMembers(ctx, tx, xid, xid, id, members, ts, 0, ts)
}

// CreateGroup implements store.Conversations, as the SQLite store does: members in the order
// given, each once, the creator first if missing and an admin either way, cursors at the
// "created" event, seq 1.
func (db *DB) CreateGroup(ctx context.Context, c protocol.Conversation, creatorID string, ts int64) (protocol.Conversation, protocol.Message, error) {
	const op = "create group"
	if err := db.enter(op); err != nil {
		return protocol.Conversation{}, protocol.Message{}, err
	}
	defer db.leave()
	members, ids := store.GroupMembers(c, creatorID)
	msg := protocol.Message{
		ConversationID: c.ID, Seq: 1, ID: uuid.NewString(), SenderID: creatorID, Kind: protocol.KindSystem,
		System: &protocol.SystemEvent{Action: protocol.SysCreated, ActorID: creatorID, UserIDs: ids, Name: c.Name},
		TS:     ts,
	}
	c.Type = protocol.Group
	var out protocol.Conversation
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		var xid int64
		if err := tx.QueryRow(ctx, xidSQL).Scan(&xid); err != nil {
			return err
		}
		if err := newConversation(ctx, tx, xid, c, nil, 1, ts, members); err != nil {
			return err
		}
		if err := insertSystem(ctx, tx, msg); err != nil {
			return err
		}
		var err error
		out, err = view(ctx, tx, c.ID, creatorID)
		return err
	})
	if err != nil {
		return protocol.Conversation{}, protocol.Message{}, wrap(op, err)
	}
	return out, msg, nil
}

// ChangeMembership implements store.Conversations: the conversation's row is locked first,
// which serialises the change with every append and other change to it, in any process.
func (db *DB) ChangeMembership(ctx context.Context, id string, ts int64, fn store.MembershipFunc) (protocol.Message, error) {
	const op = "change membership"
	if err := db.enter(op); err != nil {
		return protocol.Message{}, err
	}
	defer db.leave()
	var msg protocol.Message
	var fnErr error
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		var xid int64
		if err := tx.QueryRow(ctx, xidSQL).Scan(&xid); err != nil {
			return err
		}
		var c protocol.Conversation
		rows, err := tx.Query(ctx, `SELECT id, type, last_seq, last_text_seq, updated_ts, member_version, change_xid,
				spread_xid, spread_ts, name, created_ts
			FROM conversations WHERE id = $1 FOR NO KEY UPDATE`, id)
		if err != nil {
			return err
		}
		var h head
		found := false
		for rows.Next() {
			found = true
			if err := rows.Scan(&h.id, &c.Type, &h.lastSeq, &h.lastTextSeq, &h.updatedTS, &h.memberVersion,
				&h.changeXID, &h.spreadXID, &h.spread, &h.name, &c.CreatedTS); err != nil {
				rows.Close()
				return err
			}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("conversation %q: %w", id, store.ErrNotFound)
		}
		c.ID, c.Name, c.LastSeq, c.UpdatedTS = id, h.name, h.lastSeq, h.updatedTS
		if c.Members, err = membersOf(ctx, tx, id); err != nil {
			return err
		}
		ch, err := fn(c)
		if err != nil {
			fnErr = err
			return err
		}
		seq := h.lastSeq + 1
		spread, syncXID, actTS := db.spreadTo(&h, xid, ts)
		b := &pgx.Batch{}
		if len(ch.Remove) > 0 {
			b.Queue(`DELETE FROM members WHERE conversation_id = $1 AND user_id = ANY($2)`, id, ch.Remove)
			b.Queue(`INSERT INTO departures (user_id, conversation_id, change_xid, change_pos)
				SELECT u, $2, $1, nextval('change_pos') FROM unnest($3::text[]) AS u
				ON CONFLICT (user_id, conversation_id) DO UPDATE SET change_xid = EXCLUDED.change_xid,
					change_pos = EXCLUDED.change_pos`, xid, id, ch.Remove)
		}
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
		if err := insertMembers(ctx, tx, xid, syncXID, id, ch.Add, ts, seq, actTS); err != nil {
			return err
		}
		b = &pgx.Batch{}
		for _, m := range ch.SetRole {
			b.Queue(`UPDATE members SET role = $2, `+stampMemberSQL+` WHERE conversation_id = $3 AND user_id = $4`,
				xid, m.Role, id, m.UserID)
		}
		name := h.name
		if ch.Name != nil {
			name = *ch.Name
		}
		b.Queue(`UPDATE conversations SET name = $2, last_seq = $3, updated_ts = $4, member_version = member_version + 1,
			spread_xid = $5, spread_ts = $6, `+stampConvSQL+` WHERE id = $7`, xid, name, seq, ts, syncXID, actTS, id)
		if spread {
			b.Queue(spreadSQL, []string{id}, []int64{syncXID}, []int64{actTS})
		}
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
		clientID := ch.ClientID
		if clientID == "" {
			clientID = uuid.NewString()
		}
		ev := ch.Event
		msg = protocol.Message{ConversationID: id, Seq: seq, ID: clientID, SenderID: ch.ActorID,
			Kind: protocol.KindSystem, System: &ev, TS: ts}
		return insertSystem(ctx, tx, msg)
	})
	if fnErr != nil {
		return protocol.Message{}, fnErr
	}
	if err != nil {
		return protocol.Message{}, wrap(op, err)
	}
	return msg, nil
}

// membersOf returns the conversation's members in join order.
func membersOf(ctx context.Context, q querier, id string) ([]protocol.Member, error) {
	rows, err := q.Query(ctx, `SELECT user_id, role, last_delivered_seq, last_read_seq FROM members
		WHERE conversation_id = $1 ORDER BY joined_ts, user_id`, id)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (protocol.Member, error) {
		var m protocol.Member
		err := r.Scan(&m.UserID, &m.Role, &m.LastDeliveredSeq, &m.LastReadSeq)
		return m, err
	})
}

// Conversation implements store.Conversations.
func (db *DB) Conversation(ctx context.Context, id, userID string) (protocol.Conversation, error) {
	const op = "conversation"
	if err := db.enter(op); err != nil {
		return protocol.Conversation{}, err
	}
	defer db.leave()
	c, err := view(ctx, db.pool, id, userID)
	return c, wrap(op, err)
}

// readTx runs fn in a read-only REPEATABLE READ transaction: one snapshot for every
// statement.
func (db *DB) readTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return pgx.BeginTxFunc(ctx, db.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, fn)
}

// ConversationsOf implements store.Conversations: most recent activity (updated_ts) first,
// then id descending; the cursor is the last conversation's (updated_ts, id).
//
// The members_activity index orders a user's memberships by act_ts, a copy of each
// conversation's updated_ts that is spread again only when updated_ts leaves
// [act_ts, act_ts + window). So a conversation whose index entry is at act_ts has its true
// key in that window: the page reads the index downwards, in chunks, until the page's last
// conversation is at least a window above the last entry read. It reads the page and the
// entries within one window of its end, however many memberships the user has.
func (db *DB) ConversationsOf(ctx context.Context, userID, cursor string, limit int) ([]protocol.Conversation, string, error) {
	const op = "conversations of"
	if limit <= 0 {
		limit = 50
	}
	curTS, curID := int64(math.MaxInt64), ""
	if cursor != "" {
		ts, id, err := store.DecodeListCursor(cursor)
		if err != nil {
			return nil, "", fmt.Errorf("postgres: %s: %w", op, err)
		}
		curTS, curID = ts, id
	}
	if err := db.enter(op); err != nil {
		return nil, "", err
	}
	defer db.leave()
	type cand struct {
		ts int64
		id string
	}
	less := func(a, b cand) bool { return a.ts > b.ts || (a.ts == b.ts && a.id > b.id) } // list order
	var cs []protocol.Conversation
	var next string
	err := db.readTx(ctx, func(tx pgx.Tx) error {
		var found []cand
		// Scan position: entries below (act, id). With a cursor, entries above its ts
		// cannot hold a conversation below it (true ts >= act_ts).
		act, actID := curTS, "\uffff"
		if cursor == "" {
			act = math.MaxInt64
		}
		chunk := limit + 1
		for {
			rows, err := tx.Query(ctx, `SELECT m.act_ts, m.conversation_id, c.updated_ts
				FROM members m JOIN conversations c ON c.id = m.conversation_id
				WHERE m.user_id = $1 AND (m.act_ts, m.conversation_id) < ($2, $3)
				ORDER BY m.act_ts DESC, m.conversation_id DESC LIMIT $4`, userID, act, actID, chunk)
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
				if cursor == "" || less(cand{curTS, curID}, c) {
					found = append(found, c)
				}
			}
			if err := rows.Err(); err != nil {
				return err
			}
			slices.SortFunc(found, func(a, b cand) int {
				if less(a, b) {
					return -1
				}
				return 1
			})
			if len(found) > limit+1 {
				found = found[:limit+1]
			}
			if n < chunk || (len(found) == limit+1 && found[limit].ts >= act+db.windowMS) {
				break
			}
			chunk = min(2*chunk, 1000)
		}
		if len(found) > limit {
			found = found[:limit]
			last := found[limit-1]
			next = store.EncodeListCursor(last.ts, last.id)
		}
		ids := make([]string, len(found))
		for i, c := range found {
			ids[i] = c.id
		}
		rs, err := convRowsOf(ctx, tx, userID, ids)
		if err != nil {
			return err
		}
		cs, err = views(ctx, tx, userID, rs)
		return err
	})
	if err != nil {
		return nil, "", wrap(op, err)
	}
	return cs, next, nil
}

// MemberIDs implements store.Conversations.
func (db *DB) MemberIDs(ctx context.Context, id string) ([]string, error) {
	l, err := db.Members(ctx, id)
	return l.IDs, err
}

// Members implements store.Conversations: the list and its version from one snapshot.
func (db *DB) Members(ctx context.Context, id string) (store.MemberList, error) {
	const op = "members"
	if err := db.enter(op); err != nil {
		return store.MemberList{}, err
	}
	defer db.leave()
	var l store.MemberList
	err := db.readTx(ctx, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT member_version FROM conversations WHERE id = $1`, id).Scan(&l.Version); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("conversation %q: %w", id, store.ErrNotFound)
			}
			return err
		}
		rows, err := tx.Query(ctx, `SELECT user_id FROM members WHERE conversation_id = $1 ORDER BY joined_ts, user_id`, id)
		if err != nil {
			return err
		}
		l.IDs, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err != nil {
		return store.MemberList{}, wrap(op, err)
	}
	return l, nil
}

// IsMember implements store.Conversations.
func (db *DB) IsMember(ctx context.Context, id, userID string) (bool, error) {
	const op = "is member"
	if err := db.enter(op); err != nil {
		return false, err
	}
	defer db.leave()
	var ok bool
	err := db.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM members WHERE conversation_id = $1 AND user_id = $2)`,
		id, userID).Scan(&ok)
	return ok, wrap(op, err)
}

// PresenceAudience implements store.Contacts.
func (db *DB) PresenceAudience(ctx context.Context, userID string) ([]string, error) {
	return db.presence(ctx, "presence audience", `SELECT contact_id FROM contacts WHERE user_id = $1`, userID)
}

// PresenceVisible implements store.Contacts.
func (db *DB) PresenceVisible(ctx context.Context, viewerID string) ([]string, error) {
	return db.presence(ctx, "presence visible", `SELECT user_id FROM contacts WHERE contact_id = $1`, viewerID)
}

// presence returns the users of contactsQuery and userID's direct partners, each once.
func (db *DB) presence(ctx context.Context, op, contactsQuery, userID string) ([]string, error) {
	if err := db.enter(op); err != nil {
		return nil, err
	}
	defer db.leave()
	rows, err := db.pool.Query(ctx, contactsQuery+`
		UNION SELECT other.user_id FROM members me
			JOIN conversations c ON c.id = me.conversation_id AND c.type = 'direct'
			JOIN members other ON other.conversation_id = c.id AND other.user_id <> me.user_id
			WHERE me.user_id = $1`, userID)
	if err != nil {
		return nil, wrap(op, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return ids, wrap(op, err)
}
