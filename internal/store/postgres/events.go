package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/parley-chat/parley/internal/store"
	"github.com/parley-chat/parley/protocol"
)

// errNothingStored rolls back a transaction that changed nothing.
var errNothingStored = errors.New("nothing stored")

// durableNow is the Durable of a committed batch: with synchronous_commit on (Open checks),
// COMMIT returns once the commit record is flushed, so a committed batch is durable.
func durableNow(context.Context) error { return nil }

// AppendCommitted implements store.Events. Commit and durability are one step here, so it
// is Append.
func (db *DB) AppendCommitted(ctx context.Context, reqs []store.AppendRequest) ([]store.AppendResult, store.Durable, error) {
	rs, err := db.Append(ctx, reqs)
	if err != nil {
		return nil, nil, err
	}
	return rs, durableNow, nil
}

// pair and triple key the batch's lookups.
type pair struct{ conv, user string }
type triple struct{ conv, sender, client string }
type seqKey struct {
	conv string
	seq  int64
}

// Append implements store.Events: one transaction of three round trips whatever the batch
// holds. The first locks the batch's conversations in id order and reads, under those locks,
// their heads, the senders' memberships, the stored originals of the batch's client ids, the
// targets of its edits, deletes and reactions, and the member lists the caller does not
// have; the requests are then decided in memory, in order; the second writes every new
// event with one multi-row INSERT, the effects on targets, the heads and the spreads to
// member rows; the third commits.
func (db *DB) Append(ctx context.Context, reqs []store.AppendRequest) ([]store.AppendResult, error) {
	const op = "append"
	if err := db.enter(op); err != nil {
		return nil, err
	}
	defer db.leave()
	if len(reqs) == 0 {
		return []store.AppendResult{}, nil
	}
	var results []store.AppendResult
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		var err error
		results, err = db.appendTx(ctx, tx, reqs)
		return err
	})
	if err != nil && !errors.Is(err, errNothingStored) {
		return nil, wrap(op, err)
	}
	return results, nil
}

func (db *DB) appendTx(ctx context.Context, tx pgx.Tx, in []store.AppendRequest) ([]store.AppendResult, error) {
	reqs := make([]store.AppendRequest, len(in))
	convSet := make(map[string]int64) // conversation → the member version the caller has
	var pairC, pairU, dC, dS, dK, tC []string
	var tS []int64
	seenPair := make(map[pair]bool)
	for i, r := range in {
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
		}
		reqs[i] = r
		if v, ok := convSet[r.ConversationID]; !ok {
			convSet[r.ConversationID] = r.MemberVersion
		} else if v != r.MemberVersion {
			convSet[r.ConversationID] = -1 // requests disagree: read the list for those that lack it
		}
		if p := (pair{r.ConversationID, r.SenderID}); !seenPair[p] {
			seenPair[p] = true
			pairC, pairU = append(pairC, p.conv), append(pairU, p.user)
		}
		dC, dS, dK = append(dC, r.ConversationID), append(dS, r.SenderID), append(dK, r.ClientID)
		if r.Kind != protocol.KindText && r.TargetSeq > 0 {
			tC, tS = append(tC, r.ConversationID), append(tS, r.TargetSeq)
		}
	}
	convs := make([]string, 0, len(convSet))
	known := make([]int64, 0, len(convSet))
	for id := range convSet {
		convs = append(convs, id)
	}
	slices.Sort(convs)
	for _, id := range convs {
		known = append(known, convSet[id])
	}

	b := &pgx.Batch{}
	b.Queue(xidSQL)
	b.Queue(`SELECT id, type, last_seq, last_text_seq, updated_ts, member_version, change_xid, spread_xid, spread_ts, name
		FROM conversations WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE`, convs)
	b.Queue(`SELECT conversation_id, user_id FROM members
		WHERE (conversation_id, user_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))`, pairC, pairU)
	// One probe of the dedupe key per request; the rare originals are read in full after.
	b.Queue(`SELECT u.c, u.s, u.k, x.seq FROM unnest($1::text[], $2::text[], $3::text[]) AS u(c, s, k)
		CROSS JOIN LATERAL (SELECT m.seq FROM messages m
			WHERE m.conversation_id = u.c AND m.sender_id = u.s AND m.client_id = u.k LIMIT 1) x`, dC, dS, dK)
	if len(tC) > 0 { // planning a join over the partitions costs more than running it
		b.Queue(`SELECT m.conversation_id, m.seq, m.kind, m.deleted
			FROM unnest($1::text[], $2::bigint[]) AS u(c, s) JOIN messages m ON m.conversation_id = u.c AND m.seq = u.s`, tC, tS)
	}
	b.Queue(`SELECT m.conversation_id, m.user_id
		FROM unnest($1::text[], $2::bigint[]) AS k(id, v)
		JOIN conversations c ON c.id = k.id AND c.member_version <> k.v
		JOIN members m ON m.conversation_id = c.id
		ORDER BY m.conversation_id, m.joined_ts, m.user_id`, convs, known)
	br := tx.SendBatch(ctx, b)
	var xid int64
	heads := map[string]*head{}
	members := map[pair]bool{}
	dups := map[triple]int64{}   // stored before: their seqs
	targets := map[seqKey]bool{} // live text message?
	lists := map[string][]string{}
	err := func() error {
		defer br.Close()
		if err := br.QueryRow().Scan(&xid); err != nil {
			return err
		}
		rows, err := br.Query()
		if err != nil {
			return err
		}
		if heads, err = collectHeads(rows); err != nil {
			return err
		}
		if err := eachRow(br, func(r pgx.Rows) error {
			var p pair
			err := r.Scan(&p.conv, &p.user)
			members[p] = true
			return err
		}); err != nil {
			return err
		}
		if err := eachRow(br, func(r pgx.Rows) error {
			var k triple
			var seq int64
			err := r.Scan(&k.conv, &k.sender, &k.client, &seq)
			dups[k] = seq
			return err
		}); err != nil {
			return err
		}
		readTargets := func() error {
			if len(tC) == 0 {
				return nil
			}
			return eachRow(br, func(r pgx.Rows) error {
				var k seqKey
				var kind string
				var deleted bool
				err := r.Scan(&k.conv, &k.seq, &kind, &deleted)
				targets[k] = kind == protocol.KindText && !deleted
				return err
			})
		}
		if err := readTargets(); err != nil {
			return err
		}
		if err := eachRow(br, func(r pgx.Rows) error {
			var conv, user string
			err := r.Scan(&conv, &user)
			lists[conv] = append(lists[conv], user)
			return err
		}); err != nil {
			return err
		}
		return br.Close()
	}()
	if err != nil {
		return nil, err
	}
	stored := make(map[triple]protocol.Message, len(dups))
	for k, seq := range dups {
		m, err := messageAt(ctx, tx, k.conv, seq)
		if err != nil {
			return nil, fmt.Errorf("original of %q by %q: %w", k.client, k.sender, err)
		}
		stored[k] = m
	}

	results := make([]store.AppendResult, len(reqs))
	var ins struct {
		conv, client, sender, kind, body, emoji []string
		seq, replyTo, target, ts                []int64
		remove                                  []bool
		attachments                             [][]byte
	}
	w := &pgx.Batch{}
	var effects []func()
	stored2 := map[triple]int{} // new in this batch → index of its result
	for i, r := range reqs {
		k := triple{r.ConversationID, r.SenderID, r.ClientID}
		if j, ok := stored2[k]; ok {
			results[i] = store.AppendResult{Message: results[j].Message, Duplicate: true}
			continue
		}
		if m, ok := stored[k]; ok {
			results[i] = store.AppendResult{Message: m, Duplicate: true}
			continue
		}
		switch r.Kind {
		case protocol.KindText, protocol.KindEdit, protocol.KindDelete, protocol.KindReaction:
		default:
			results[i].Err = fmt.Errorf("postgres: append: kind %q cannot be appended", r.Kind)
			continue
		}
		h := heads[r.ConversationID]
		if h == nil || !members[pair{r.ConversationID, r.SenderID}] {
			results[i].Err = fmt.Errorf("postgres: append: user %q in conversation %q: %w",
				r.SenderID, r.ConversationID, store.ErrNotMember)
			continue
		}
		if r.ReplyTo > h.lastSeq {
			results[i].Err = fmt.Errorf("postgres: append: reply to %d in conversation %q, whose last seq is %d: %w",
				r.ReplyTo, r.ConversationID, h.lastSeq, store.ErrNotFound)
			continue
		}
		tk := seqKey{r.ConversationID, r.TargetSeq}
		if r.Kind != protocol.KindText && !targets[tk] {
			results[i].Err = fmt.Errorf("postgres: append: %s of message %d in conversation %q: %w",
				r.Kind, r.TargetSeq, r.ConversationID, store.ErrNotFound)
			continue
		}
		seq := h.lastSeq + 1
		ins.conv = append(ins.conv, r.ConversationID)
		ins.seq = append(ins.seq, seq)
		ins.client = append(ins.client, r.ClientID)
		ins.sender = append(ins.sender, r.SenderID)
		ins.kind = append(ins.kind, r.Kind)
		ins.body = append(ins.body, r.Body)
		ins.replyTo = append(ins.replyTo, r.ReplyTo)
		ins.target = append(ins.target, r.TargetSeq)
		ins.emoji = append(ins.emoji, r.Emoji)
		ins.remove = append(ins.remove, r.Remove)
		ins.attachments = append(ins.attachments, nilIfEmpty(r.Attachments))
		ins.ts = append(ins.ts, r.TS)
		switch r.Kind {
		case protocol.KindText:
			targets[seqKey{r.ConversationID, seq}] = true
			h.lastTextSeq = seq
		case protocol.KindEdit:
			effects = append(effects, func() {
				w.Queue(`UPDATE messages SET body = $1, edited_ts = $2 WHERE conversation_id = $3 AND seq = $4`,
					r.Body, r.TS, r.ConversationID, r.TargetSeq)
			})
		case protocol.KindDelete:
			targets[tk] = false
			effects = append(effects, func() {
				w.Queue(`UPDATE messages SET body = '', attachments = NULL, deleted = true
					WHERE conversation_id = $1 AND seq = $2`, r.ConversationID, r.TargetSeq)
				w.Queue(`DELETE FROM reactions WHERE conversation_id = $1 AND target_seq = $2`, r.ConversationID, r.TargetSeq)
			})
		case protocol.KindReaction:
			if r.Remove {
				effects = append(effects, func() {
					w.Queue(`DELETE FROM reactions WHERE conversation_id = $1 AND target_seq = $2 AND emoji = $3 AND user_id = $4`,
						r.ConversationID, r.TargetSeq, r.Emoji, r.SenderID)
				})
			} else {
				effects = append(effects, func() {
					w.Queue(`INSERT INTO reactions (conversation_id, target_seq, emoji, user_id, seq)
						VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`, r.ConversationID, r.TargetSeq, r.Emoji, r.SenderID, seq)
				})
			}
		}
		h.lastSeq, h.updatedTS, h.touched = seq, r.TS, true
		res := store.AppendResult{Message: protocol.Message{
			ConversationID: r.ConversationID, Seq: seq, ID: r.ClientID, SenderID: r.SenderID, Kind: r.Kind,
			Body: r.Body, ReplyTo: r.ReplyTo, TargetSeq: r.TargetSeq, Emoji: r.Emoji, Remove: r.Remove,
			Attachments: r.Attachments, TS: r.TS,
		}}
		if r.MemberVersion != h.memberVersion {
			res.Members = &store.MemberList{Version: h.memberVersion, IDs: lists[r.ConversationID]}
		}
		results[i] = res
		stored2[k] = i
	}
	if len(ins.seq) == 0 {
		return results, errNothingStored
	}

	w.Queue(`INSERT INTO messages (conversation_id, seq, client_id, sender_id, kind, body, reply_to, target_seq,
			emoji, remove, attachments, ts)
		SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[],
			$8::bigint[], $9::text[], $10::boolean[], $11::bytea[], $12::bigint[])`,
		ins.conv, ins.seq, ins.client, ins.sender, ins.kind, ins.body, ins.replyTo, ins.target, ins.emoji,
		ins.remove, ins.attachments, ins.ts)
	for _, e := range effects {
		e()
	}
	var hID []string
	var hLast, hText, hTS, hSX, hAT []int64
	var sID []string
	var sSX, sAT []int64
	for _, id := range convs {
		h := heads[id]
		if h == nil || !h.touched {
			continue
		}
		spread, sx, at := db.spreadTo(h, xid, h.updatedTS)
		hID, hLast, hText, hTS, hSX, hAT = append(hID, id), append(hLast, h.lastSeq), append(hText, h.lastTextSeq),
			append(hTS, h.updatedTS), append(hSX, sx), append(hAT, at)
		if spread {
			sID, sSX, sAT = append(sID, id), append(sSX, sx), append(sAT, at)
		}
	}
	w.Queue(`UPDATE conversations SET last_seq = u.ls, last_text_seq = u.lt, updated_ts = u.ut,
			spread_xid = u.sx, spread_ts = u.st, `+stampConvSQL+`
		FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[])
			AS u(id, ls, lt, ut, sx, st)
		WHERE conversations.id = u.id`, xid, hID, hLast, hText, hTS, hSX, hAT)
	if len(sID) > 0 {
		w.Queue(spreadSQL, sID, sSX, sAT)
	}
	if err := tx.SendBatch(ctx, w).Close(); err != nil {
		return nil, err
	}
	return results, nil
}

// eachRow reads the next result of a batch, row by row.
func eachRow(br pgx.BatchResults, fn func(pgx.Rows) error) error {
	rows, err := br.Query()
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

func nilIfEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

// Messages implements store.Events: the membership check and the page are sent together;
// the page is a range of the conversation's primary key, in one partition.
func (db *DB) Messages(ctx context.Context, conversationID, userID string, before, after int64, limit int) ([]protocol.Message, bool, error) {
	const op = "messages"
	if err := db.enter(op); err != nil {
		return nil, false, err
	}
	defer db.leave()
	if limit <= 0 {
		limit = 50
	}
	if before <= 0 {
		before = math.MaxInt64
	}
	b := &pgx.Batch{}
	b.Queue(`SELECT EXISTS (SELECT 1 FROM members WHERE conversation_id = $1 AND user_id = $2)`, conversationID, userID)
	if after < 0 {
		b.Queue(`SELECT `+msgCols+` FROM messages m`+reactJoin+`
			WHERE m.conversation_id = $1 AND m.seq < $2 ORDER BY m.seq DESC LIMIT $3`, conversationID, before, limit+1)
	} else {
		b.Queue(`SELECT `+msgCols+` FROM messages m`+reactJoin+`
			WHERE m.conversation_id = $1 AND m.seq > $2 AND m.seq < $3 ORDER BY m.seq LIMIT $4`,
			conversationID, after, before, limit+1)
	}
	br := db.pool.SendBatch(ctx, b)
	defer br.Close()
	var member bool
	if err := br.QueryRow().Scan(&member); err != nil {
		return nil, false, wrap(op, err)
	}
	if !member {
		return nil, false, fmt.Errorf("postgres: %s: conversation %q for user %q: %w", op, conversationID, userID, store.ErrNotFound)
	}
	ms := []protocol.Message{}
	if err := eachRow(br, func(r pgx.Rows) error {
		m, err := scanMessage(conversationID, r)
		ms = append(ms, m)
		return err
	}); err != nil {
		return nil, false, wrap(op, err)
	}
	if err := br.Close(); err != nil {
		return nil, false, wrap(op, err)
	}
	more := len(ms) > limit
	if more {
		ms = ms[:limit]
	}
	if after < 0 {
		slices.Reverse(ms)
	}
	return ms, more, nil
}

// Message implements store.Events.
func (db *DB) Message(ctx context.Context, conversationID string, seq int64) (protocol.Message, error) {
	const op = "message"
	if err := db.enter(op); err != nil {
		return protocol.Message{}, err
	}
	defer db.leave()
	m, err := messageAt(ctx, db.pool, conversationID, seq)
	if errors.Is(err, pgx.ErrNoRows) {
		return protocol.Message{}, fmt.Errorf("postgres: %s %d of conversation %q: %w", op, seq, conversationID, store.ErrNotFound)
	}
	return m, wrap(op, err)
}

// SetCursor implements store.Events: SetCursors with one update.
func (db *DB) SetCursor(ctx context.Context, conversationID, userID, status string, seq int64, ts int64) (bool, error) {
	rs, err := db.SetCursors(ctx, []store.CursorUpdate{{ConversationID: conversationID, UserID: userID, Status: status, Seq: seq, TS: ts}})
	if err != nil {
		return false, err
	}
	return rs[0].Changed, rs[0].Err
}

// SetCursors implements store.Events in one transaction: the conversations are locked first,
// in id order as appends lock them (an append may spread to the same member rows), the
// member rows read, the updates decided in order, and the rows that moved written with one
// statement.
func (db *DB) SetCursors(ctx context.Context, ups []store.CursorUpdate) ([]store.CursorResult, error) {
	const op = "set cursors"
	if err := db.enter(op); err != nil {
		return nil, err
	}
	defer db.leave()
	results := make([]store.CursorResult, len(ups))
	if len(ups) == 0 {
		return results, nil
	}
	type cur struct {
		read, delivered, readTS, deliveredTS int64
		changed                              bool
	}
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		clear(results)
		var convs, pc, pu []string
		seen := map[string]bool{}
		seenPair := map[pair]bool{}
		for _, u := range ups {
			if !seen[u.ConversationID] {
				seen[u.ConversationID] = true
				convs = append(convs, u.ConversationID)
			}
			if p := (pair{u.ConversationID, u.UserID}); !seenPair[p] {
				seenPair[p] = true
				pc, pu = append(pc, p.conv), append(pu, p.user)
			}
		}
		slices.Sort(convs)
		b := &pgx.Batch{}
		b.Queue(xidSQL)
		b.Queue(`SELECT id, last_seq FROM conversations WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE`, convs)
		b.Queue(`SELECT conversation_id, user_id, last_read_seq, last_delivered_seq, last_read_ts, last_delivered_ts
			FROM members WHERE (conversation_id, user_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))`, pc, pu)
		br := tx.SendBatch(ctx, b)
		var xid int64
		last := map[string]int64{}
		state := map[pair]*cur{}
		err := func() error {
			defer br.Close()
			if err := br.QueryRow().Scan(&xid); err != nil {
				return err
			}
			if err := eachRow(br, func(r pgx.Rows) error {
				var id string
				var seq int64
				err := r.Scan(&id, &seq)
				last[id] = seq
				return err
			}); err != nil {
				return err
			}
			if err := eachRow(br, func(r pgx.Rows) error {
				var p pair
				c := &cur{}
				err := r.Scan(&p.conv, &p.user, &c.read, &c.delivered, &c.readTS, &c.deliveredTS)
				state[p] = c
				return err
			}); err != nil {
				return err
			}
			return br.Close()
		}()
		if err != nil {
			return err
		}
		var order []pair
		for i, u := range ups {
			if u.Status != "delivered" && u.Status != "read" {
				results[i].Err = fmt.Errorf("postgres: %s: unknown status %q", op, u.Status)
				continue
			}
			p := pair{u.ConversationID, u.UserID}
			c := state[p]
			if c == nil {
				results[i].Err = fmt.Errorf("postgres: %s: user %q in conversation %q: %w", op, u.UserID, u.ConversationID, store.ErrNotMember)
				continue
			}
			seq := min(max(u.Seq, 0), last[u.ConversationID])
			changed := false
			if u.Status == "read" && seq > c.read {
				c.read, c.readTS, changed = seq, u.TS, true
			}
			if seq > c.delivered {
				c.delivered, c.deliveredTS, changed = seq, u.TS, true
			}
			results[i] = store.CursorResult{Changed: changed, ReadSeq: c.read, DeliveredSeq: c.delivered}
			if changed && !c.changed {
				c.changed = true
				order = append(order, p)
			}
		}
		if len(order) == 0 {
			return errNothingStored
		}
		var uc, uu []string
		var r, rt, d, dt []int64
		for _, p := range order {
			c := state[p]
			uc, uu = append(uc, p.conv), append(uu, p.user)
			r, rt, d, dt = append(r, c.read), append(rt, c.readTS), append(d, c.delivered), append(dt, c.deliveredTS)
		}
		_, err = tx.Exec(ctx, `UPDATE members SET last_read_seq = u.r, last_read_ts = u.rt, last_delivered_seq = u.d,
				last_delivered_ts = u.dt, `+stampMemberSQL+`
			FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[]) AS u(c, uid, r, rt, d, dt)
			WHERE members.conversation_id = u.c AND members.user_id = u.uid`, xid, uc, uu, r, rt, d, dt)
		return err
	})
	if err != nil && !errors.Is(err, errNothingStored) {
		return nil, wrap(op, err)
	}
	return results, nil
}

// syncToken is a position in the order of changes: (transaction id, change_pos).
type syncToken struct{ xid, pos int64 }

func (t syncToken) less(u syncToken) bool { return t.xid < u.xid || (t.xid == u.xid && t.pos < u.pos) }

func (t syncToken) String() string {
	return strconv.FormatInt(t.xid, 10) + "." + strconv.FormatInt(t.pos, 10)
}

func parseSyncToken(s string) (syncToken, error) {
	if s == "" {
		return syncToken{}, nil
	}
	x, p, ok := strings.Cut(s, ".")
	xid, err1 := strconv.ParseInt(x, 10, 64)
	pos, err2 := strconv.ParseInt(p, 10, 64)
	if !ok || err1 != nil || err2 != nil || xid < 0 || pos < 0 {
		return syncToken{}, store.ErrBadCursor
	}
	return syncToken{xid, pos}, nil
}

// Sync implements store.Events. A conversation's change, for a user, is the larger of its
// own stamp and the user's member row's stamp. In one snapshot it reads the horizon H (the
// snapshot's xmin: every transaction below it has ended) and takes only changes below H,
// in stamp order: a transaction still running has an xid of at least H, so it cannot commit
// below a page already returned; the token after the last page is (H, 0).
//
// The member rows are read through (user_id, sync_xid, conversation_id): a row's sync_xid is
// in the same epoch as its change and not above it (see the migration), so the rows of
// changes after the token start at the token's epoch, and reading stops once the page's
// changes are all below the sync_xid reached. A page reads what it returns, plus the rows
// of the token's epoch before it and the rows whose change is ahead of their sync_xid
// (both bounded by one epoch's changes, not by the account).
func (db *DB) Sync(ctx context.Context, userID, since string, limit int) ([]protocol.Conversation, string, bool, error) {
	const op = "sync"
	from, err := parseSyncToken(since)
	if err != nil {
		return nil, "", false, fmt.Errorf("postgres: %s: %w", op, err)
	}
	if limit <= 0 {
		limit = 500
	}
	if err := db.enter(op); err != nil {
		return nil, "", false, err
	}
	defer db.leave()
	type cand struct {
		k  syncToken
		id string
	}
	var cs []protocol.Conversation
	var next string
	var more bool
	err = db.readTx(ctx, func(tx pgx.Tx) error {
		var horizon int64
		if err := tx.QueryRow(ctx, `SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint`).Scan(&horizon); err != nil {
			return err
		}
		// Rows are read in (sync_xid, id) order, in growing chunks. A row's change is at
		// least its sync_xid, so once the page's limit+1 smallest changes are below the
		// sync_xid of the last row read, no row after it can enter the page.
		var page []cand
		at, atID := (epochOf(from.xid)<<epochBits)-1, "\uffff" // from the start of from's epoch
		chunk := limit + 1
		for {
			rows, err := tx.Query(ctx, `SELECT m.conversation_id, m.sync_xid, c.change_xid, c.change_pos, m.change_xid, m.change_pos
				FROM members m JOIN conversations c ON c.id = m.conversation_id
				WHERE m.user_id = $1 AND (m.sync_xid, m.conversation_id) > ($2, $3) AND m.sync_xid < $4
				ORDER BY m.sync_xid, m.conversation_id LIMIT $5`, userID, at, atID, horizon, chunk)
			if err != nil {
				return err
			}
			n := 0
			for rows.Next() {
				var c cand
				var conv, mem syncToken
				if err := rows.Scan(&c.id, &at, &conv.xid, &conv.pos, &mem.xid, &mem.pos); err != nil {
					rows.Close()
					return err
				}
				n++
				atID = c.id
				c.k = conv
				if conv.less(mem) {
					c.k = mem
				}
				if from.less(c.k) && c.k.xid < horizon {
					page = append(page, c)
				}
			}
			if err := rows.Err(); err != nil {
				return err
			}
			slices.SortFunc(page, func(a, b cand) int {
				if a.k.less(b.k) {
					return -1
				}
				if b.k.less(a.k) {
					return 1
				}
				return strings.Compare(a.id, b.id)
			})
			if len(page) > limit+1 {
				page = page[:limit+1]
			}
			if n < chunk || (len(page) == limit+1 && page[limit].k.xid < at) {
				break
			}
			chunk = min(2*chunk, 1000)
		}
		switch {
		case len(page) > limit:
			page, more = page[:limit], true
			next = page[limit-1].k.String()
		default:
			next = syncToken{horizon, 0}.String()
		}
		ids := make([]string, len(page))
		for i, c := range page {
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
		return nil, "", false, wrap(op, err)
	}
	return cs, next, more, nil
}

// Departed implements store.Events: departures stamped after the token, in stamp order.
// Without the horizon: one committed after Sync's token is reported again by the call
// after it, which the contract allows.
func (db *DB) Departed(ctx context.Context, userID, since string) ([]string, error) {
	const op = "departed"
	from, err := parseSyncToken(since)
	if err != nil {
		return nil, fmt.Errorf("postgres: %s: %w", op, err)
	}
	if err := db.enter(op); err != nil {
		return nil, err
	}
	defer db.leave()
	rows, err := db.pool.Query(ctx, `SELECT conversation_id FROM departures
		WHERE user_id = $1 AND (change_xid, change_pos) > ($2, $3) ORDER BY change_xid, change_pos`,
		userID, from.xid, from.pos)
	if err != nil {
		return nil, wrap(op, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if ids == nil {
		ids = []string{}
	}
	return ids, wrap(op, err)
}
