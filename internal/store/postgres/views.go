package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/parley-chat/parley/internal/store"
	"github.com/parley-chat/parley/protocol"
)

// querier is what the reads need: the pool, a pooled connection or a transaction.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// msgCols are the columns scanMessage reads, of messages m joined with reactJoin.
const msgCols = `m.seq, m.client_id, m.sender_id, m.kind, m.body, m.reply_to, m.target_seq,
	m.emoji, m.remove, m.attachments, m.system, m.ts, m.edited_ts, m.deleted, r.emojis, r.users`

// reactJoin aggregates a text message's current reactions in the order they were made: one
// index range of the reactions partition of the message's conversation.
const reactJoin = `
	LEFT JOIN LATERAL (SELECT array_agg(x.emoji ORDER BY x.seq) AS emojis, array_agg(x.user_id ORDER BY x.seq) AS users
		FROM reactions x WHERE x.conversation_id = m.conversation_id AND x.target_seq = m.seq) r
		ON m.kind = 'text' AND NOT m.deleted`

// scanMessage reads msgCols (after any columns in before) as a message of conversation convID.
func scanMessage(convID string, row pgx.Row, before ...any) (protocol.Message, error) {
	m := protocol.Message{ConversationID: convID}
	var attachments, system []byte
	var emojis, users []string
	err := row.Scan(append(before, &m.Seq, &m.ID, &m.SenderID, &m.Kind, &m.Body, &m.ReplyTo, &m.TargetSeq,
		&m.Emoji, &m.Remove, &attachments, &system, &m.TS, &m.EditedTS, &m.Deleted, &emojis, &users)...)
	if err != nil {
		return protocol.Message{}, err
	}
	if len(attachments) > 0 {
		m.Attachments = attachments
	}
	if len(system) > 0 {
		m.System = new(protocol.SystemEvent)
		if err := json.Unmarshal(system, m.System); err != nil {
			return protocol.Message{}, fmt.Errorf("message %d of %q: system event: %w", m.Seq, convID, err)
		}
	}
	// Per emoji in the order of its first current reaction, users in the order they reacted.
	for i, e := range emojis {
		j := 0
		for j < len(m.Reactions) && m.Reactions[j].Emoji != e {
			j++
		}
		if j == len(m.Reactions) {
			m.Reactions = append(m.Reactions, protocol.Reaction{Emoji: e})
		}
		m.Reactions[j].Count++
		m.Reactions[j].UserIDs = append(m.Reactions[j].UserIDs, users[i])
	}
	return m, nil
}

// convCols select a conversation c joined with one member's row m, as scanConvRow reads them.
const convCols = `c.id, c.type, c.name, c.last_seq, c.last_text_seq, c.created_ts, c.updated_ts,
	m.last_read_seq, m.last_delivered_seq`

// convRow is a conversation as one member sees it, before its members, last message and
// unread count are filled in.
type convRow struct {
	c           protocol.Conversation
	lastTextSeq int64
}

func scanConvRow(row pgx.Row, extra ...any) (convRow, error) {
	var r convRow
	err := row.Scan(append([]any{&r.c.ID, &r.c.Type, &r.c.Name, &r.c.LastSeq, &r.lastTextSeq, &r.c.CreatedTS,
		&r.c.UpdatedTS, &r.c.LastReadSeq, &r.c.LastDeliveredSeq}, extra...)...)
	return r, err
}

// convRowsOf reads userID's rows of the conversations ids, in the order of ids (missing ones
// left out).
func convRowsOf(ctx context.Context, q querier, userID string, ids []string) ([]convRow, error) {
	rows, err := q.Query(ctx, `SELECT `+convCols+` FROM members m JOIN conversations c ON c.id = m.conversation_id
		WHERE m.user_id = $1 AND m.conversation_id = ANY($2)`, userID, ids)
	if err != nil {
		return nil, err
	}
	byID := make(map[string]convRow, len(ids))
	for rows.Next() {
		r, err := scanConvRow(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		byID[r.c.ID] = r
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := make([]convRow, 0, len(ids))
	for _, id := range ids {
		if r, ok := byID[id]; ok {
			out = append(out, r)
		}
	}
	return out, nil
}

// views completes rows into userID's views, in three statements sent together whatever the
// number of rows: the members in join order, the latest text messages in their current
// state, and the unread counts (text messages not deleted, after the read cursor, sent by
// someone else).
func views(ctx context.Context, q querier, userID string, rows []convRow) ([]protocol.Conversation, error) {
	cs := make([]protocol.Conversation, len(rows))
	if len(rows) == 0 {
		return cs, nil
	}
	ids := make([]string, len(rows))
	lastText := make([]int64, len(rows))
	read := make([]int64, len(rows))
	at := make(map[string]int, len(rows))
	for i, r := range rows {
		cs[i] = r.c
		cs[i].Members = []protocol.Member{}
		ids[i], lastText[i], read[i] = r.c.ID, r.lastTextSeq, r.c.LastReadSeq
		at[r.c.ID] = i
	}
	b := &pgx.Batch{}
	b.Queue(`SELECT conversation_id, user_id, role, last_delivered_seq, last_read_seq FROM members
		WHERE conversation_id = ANY($1) ORDER BY conversation_id, joined_ts, user_id`, ids)
	// The last messages are written as a lookup per conversation (LATERAL … LIMIT, which the
	// planner cannot turn into a join): as a join, it hashed the whole messages table (45 ms
	// at a million rows).
	b.Queue(`SELECT u.id, `+msgCols+`
		FROM unnest($1::text[], $2::bigint[]) AS u(id, seq)
		CROSS JOIN LATERAL (SELECT * FROM messages x WHERE x.conversation_id = u.id AND x.seq = u.seq LIMIT 1) m`+reactJoin+`
		WHERE u.seq > 0`, ids, lastText)
	// Unread counts stop at store.MaxUnread, but the planner reads a range with a bitmap scan,
	// which fetches every row of the range before LIMIT applies (0.5 s for a million unread).
	// So each count reads at most the last unreadWindow events: that window holding
	// MaxUnread unread messages is the answer; one holding fewer, when older unread events
	// exist, is counted again over the whole range (unreadExact; a conversation whose latest
	// thousands of events are mostly the reader's own or reactions).
	lo := make([]int64, len(rows))
	for i, r := range rows {
		lo[i] = max(read[i], r.c.LastSeq-unreadWindow)
	}
	b.Queue(unreadSQL, ids, lo, userID)
	br := q.SendBatch(ctx, b)
	defer br.Close()

	mrows, err := br.Query()
	if err != nil {
		return nil, err
	}
	for mrows.Next() {
		var id string
		var m protocol.Member
		if err := mrows.Scan(&id, &m.UserID, &m.Role, &m.LastDeliveredSeq, &m.LastReadSeq); err != nil {
			mrows.Close()
			return nil, err
		}
		c := &cs[at[id]]
		c.Members = append(c.Members, m)
	}
	if err := mrows.Err(); err != nil {
		return nil, err
	}
	lrows, err := br.Query()
	if err != nil {
		return nil, err
	}
	for lrows.Next() {
		var id string
		m, err := scanMessage("", lrows, &id)
		if err != nil {
			lrows.Close()
			return nil, err
		}
		m.ConversationID = id
		cs[at[id]].LastMessage = &m
	}
	if err := lrows.Err(); err != nil {
		return nil, err
	}
	urows, err := br.Query()
	if err != nil {
		return nil, err
	}
	var again []int
	for urows.Next() {
		var id string
		var n int64
		if err := urows.Scan(&id, &n); err != nil {
			urows.Close()
			return nil, err
		}
		i := at[id]
		cs[i].UnreadCount = n
		if n < store.MaxUnread && lo[i] > read[i] {
			again = append(again, i)
		}
	}
	if err := urows.Err(); err != nil {
		return nil, err
	}
	if err := br.Close(); err != nil {
		return nil, err
	}
	for _, i := range again {
		if err := q.QueryRow(ctx, unreadSQL, []string{ids[i]}, []int64{read[i]}, userID).Scan(new(string), &cs[i].UnreadCount); err != nil {
			return nil, err
		}
	}
	return cs, nil
}

// unreadWindow is how many of a conversation's latest events an unread count reads first.
const unreadWindow = 4 * store.MaxUnread

// unreadSQL counts, per conversation $1 after seq $2, the text messages not deleted and not
// sent by $3, up to store.MaxUnread.
var unreadSQL = `SELECT u.id, n.c FROM unnest($1::text[], $2::bigint[]) AS u(id, lo)
	CROSS JOIN LATERAL (SELECT count(*) AS c FROM (SELECT 1 FROM messages m WHERE m.conversation_id = u.id
		AND m.seq > u.lo AND m.kind = 'text' AND NOT m.deleted AND m.sender_id <> $3
		LIMIT ` + strconv.Itoa(store.MaxUnread) + `) x) n`

// messageAt returns one event in its current state, or pgx.ErrNoRows.
func messageAt(ctx context.Context, q querier, convID string, seq int64) (protocol.Message, error) {
	return scanMessage(convID, q.QueryRow(ctx, `SELECT `+msgCols+` FROM messages m`+reactJoin+`
		WHERE m.conversation_id = $1 AND m.seq = $2`, convID, seq))
}
