package sqlite

import (
	"context"
	"database/sql"
	"fmt"
)

// Prepared statements. database/sql prepares a *sql.Stmt on each connection the first time it
// runs there and keeps it, and tx.StmtContext reuses that per-connection statement; so the hot
// queries are compiled once per connection, not once per call.

// msgCols are the messages columns scanMessage reads, in order.
const msgCols = `conversation_id, seq, client_id, sender_id, kind, body, reply_to, target_seq,
	emoji, remove, attachments, system, ts, edited_ts, deleted`

// convSelect selects a conversation joined with one member's row, as scanConvRow reads it.
const convSelect = `SELECT c.id, c.type, c.name, c.last_seq, c.last_text_seq, c.created_ts,
	c.updated_ts, m.last_read_seq, m.last_delivered_seq
	FROM members m JOIN conversations c ON c.id = m.conversation_id`

// writeStmts are the statements of Append (and bump, of every write that Sync reports),
// prepared on the writer.
type writeStmts struct {
	dedupe, member, head, insert, target, edit, del, dropReactions, react, unreact, setHead, bump *sql.Stmt
}

func (w *writeStmts) list() []stmtDef {
	return []stmtDef{
		{&w.dedupe, `SELECT conversation_id, seq FROM messages WHERE sender_id = ? AND client_id = ?`},
		{&w.member, `SELECT EXISTS (SELECT 1 FROM members WHERE conversation_id = ? AND user_id = ?)`},
		{&w.head, `SELECT last_seq, last_text_seq, updated_ts FROM conversations WHERE id = ?`},
		// The dedupe key is the conflict target: a text append that finds its (sender, client
		// id) stored inserts nothing, and RowsAffected tells the batch so, in one statement.
		{&w.insert, `INSERT INTO messages (conversation_id, seq, client_id, sender_id, kind, body,
			reply_to, target_seq, emoji, remove, attachments, system, ts)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (client_id, sender_id) DO NOTHING`},
		{&w.target, `SELECT kind, deleted FROM messages WHERE conversation_id = ? AND seq = ?`},
		{&w.edit, `UPDATE messages SET body = ?, edited_ts = ? WHERE conversation_id = ? AND seq = ?`},
		{&w.del, `UPDATE messages SET body = '', attachments = NULL, deleted = 1
			WHERE conversation_id = ? AND seq = ?`},
		{&w.dropReactions, `DELETE FROM reactions WHERE conversation_id = ? AND target_seq = ?`},
		{&w.react, `INSERT INTO reactions (conversation_id, target_seq, emoji, user_id, seq)
			VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`},
		{&w.unreact, `DELETE FROM reactions
			WHERE conversation_id = ? AND target_seq = ? AND emoji = ? AND user_id = ?`},
		{&w.bump, `UPDATE meta SET version = version + 1 RETURNING version`},
		{&w.setHead, `UPDATE conversations SET last_seq = ?, last_text_seq = ?, updated_ts = ?, version = ?
			WHERE id = ?`},
	}
}

func (w *writeStmts) prepare(ctx context.Context, db *sql.DB) error {
	return prepareAll(ctx, db, w.list())
}
func (w *writeStmts) close() { closeAll(w.list()) }

// viewStmts build conversation views and history pages. They are prepared on both pools: on
// the reader for reads, on the writer for views returned by write calls.
type viewStmts struct {
	conv, members, isMember, message, reactions, unread, pageDesc, pageAsc *sql.Stmt
}

func (v *viewStmts) list() []stmtDef {
	return []stmtDef{
		{&v.conv, convSelect + ` WHERE m.conversation_id = ? AND m.user_id = ?`},
		{&v.members, `SELECT user_id, role, last_delivered_seq, last_read_seq FROM members WHERE conversation_id = ? ORDER BY joined_ts, user_id`},
		{&v.isMember, `SELECT EXISTS (SELECT 1 FROM members WHERE conversation_id = ? AND user_id = ?)`},
		{&v.message, `SELECT ` + msgCols + ` FROM messages WHERE conversation_id = ? AND seq = ?`},
		{&v.reactions, `SELECT target_seq, emoji, user_id FROM reactions
			WHERE conversation_id = ? AND target_seq BETWEEN ? AND ? ORDER BY target_seq, seq`},
		{&v.unread, `SELECT count(*) FROM messages
			WHERE conversation_id = ? AND seq > ? AND kind = 'text' AND deleted = 0 AND sender_id <> ?`},
		{&v.pageDesc, `SELECT ` + msgCols + ` FROM messages
			WHERE conversation_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?`},
		{&v.pageAsc, `SELECT ` + msgCols + ` FROM messages
			WHERE conversation_id = ? AND seq > ? AND seq < ? ORDER BY seq LIMIT ?`},
	}
}

func (v *viewStmts) prepare(ctx context.Context, db *sql.DB) error {
	return prepareAll(ctx, db, v.list())
}
func (v *viewStmts) close() { closeAll(v.list()) }

// stmtDef is a statement to prepare into *dst.
type stmtDef struct {
	dst   **sql.Stmt
	query string
}

func prepareAll(ctx context.Context, db *sql.DB, defs []stmtDef) error {
	for _, d := range defs {
		st, err := db.PrepareContext(ctx, d.query)
		if err != nil {
			return fmt.Errorf("%s: %w", d.query, err)
		}
		*d.dst = st
	}
	return nil
}

func closeAll(defs []stmtDef) {
	for _, d := range defs {
		if *d.dst != nil {
			(*d.dst).Close()
			*d.dst = nil
		}
	}
}
