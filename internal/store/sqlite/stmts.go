package sqlite

import (
	"strconv"

	"context"
	"database/sql"
	"fmt"
	"github.com/parley-chat/parley/internal/store"
	"sync"
)

// Prepared statements. database/sql prepares a *sql.Stmt on each connection the first time it
// runs there and keeps it, and tx.StmtContext reuses that per-connection statement; so the hot
// queries are compiled once per connection, not once per call.

// msgCols are the messages columns scanMessage reads, in order. A row does not hold its
// conversation's id, only its number (conv): every read knows which conversation it reads.
const msgCols = `seq, client_id, sender_id, kind, body, reply_to, target_seq,
	emoji, remove, attachments, system, ts, edited_ts, deleted`

// convNum is the number of the conversation whose id is the query's next argument; SQLite
// evaluates it once per statement, and the (conv, seq) index serves the rest.
const convNum = `(SELECT num FROM conversations WHERE id = ?)`

// convSelect selects a conversation joined with its head and one member's row, as
// scanConvRow reads it.
const convSelect = `SELECT ` + convCols + convFrom

const (
	convCols = `c.id, c.type, c.name, h.last_seq, h.last_text_seq, c.created_ts,
	h.updated_ts, m.last_read_seq, m.last_delivered_seq`
	convFrom = `
	FROM members m JOIN conversations c ON c.id = m.conversation_id JOIN heads h ON h.num = c.num`
)

// convSelectWith is convSelect with more columns after its own (scanConvRow's extra).
func convSelectWith(more string) string { return `SELECT ` + convCols + `, ` + more + convFrom }

// writeStmts are the statements of Append (and bump, of every write that Sync reports),
// prepared on the writer. Those of a conversation's log take its number (conv), which the
// batch has from the head.
type writeStmts struct {
	dedupe, member, head, insert, target, edit, del, dropReactions, react, unreact, setHead, bump, spread *sql.Stmt
}

func (w *writeStmts) list() []stmtDef {
	return []stmtDef{
		{&w.dedupe, `SELECT c.id, m.seq FROM messages m JOIN conversations c ON c.num = m.conv
			WHERE m.sender_id = ? AND m.client_id = ?`},
		{&w.member, `SELECT EXISTS (SELECT 1 FROM members WHERE conversation_id = ? AND user_id = ?)`},
		{&w.head, `SELECT h.num, h.last_seq, h.last_text_seq, h.updated_ts, h.member_version, h.spread_v, h.spread_ts
			FROM conversations c JOIN heads h ON h.num = c.num WHERE c.id = ?`},
		// The dedupe key is the conflict target: a text append that finds its (sender, client
		// id) stored inserts nothing, and RowsAffected tells the batch so, in one statement.
		{&w.insert, `INSERT INTO messages (conv, seq, client_id, sender_id, kind, body,
			reply_to, target_seq, emoji, remove, attachments, system, ts)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (client_id, sender_id) DO NOTHING`},
		{&w.target, `SELECT kind, deleted FROM messages WHERE conv = ? AND seq = ?`},
		{&w.edit, `UPDATE messages SET body = ?, edited_ts = ? WHERE conv = ? AND seq = ?`},
		{&w.del, `UPDATE messages SET body = '', attachments = NULL, deleted = 1
			WHERE conv = ? AND seq = ?`},
		{&w.dropReactions, `DELETE FROM reactions WHERE conv = ? AND target_seq = ?`},
		{&w.react, `INSERT INTO reactions (conv, target_seq, emoji, user_id, seq)
			VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`},
		{&w.unreact, `DELETE FROM reactions
			WHERE conv = ? AND target_seq = ? AND emoji = ? AND user_id = ?`},
		{&w.bump, `UPDATE meta SET version = version + 1 RETURNING version`},
		{&w.setHead, `UPDATE heads SET last_seq = ?, last_text_seq = ?, updated_ts = ?, version = ?,
			spread_v = ?, spread_ts = ? WHERE num = ?`},
		{&w.spread, `UPDATE members SET sync_v = max(sync_v, ?), act_ts = ? WHERE conversation_id = ?`},
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
		{&v.message, `SELECT ` + msgCols + ` FROM messages WHERE conv = ` + convNum + ` AND seq = ?`},
		{&v.reactions, `SELECT target_seq, emoji, user_id FROM reactions
			WHERE conv = ` + convNum + ` AND target_seq BETWEEN ? AND ? ORDER BY target_seq, seq`},
		{&v.unread, `SELECT count(*) FROM (SELECT 1 FROM messages
			WHERE conv = ` + convNum + ` AND seq > ? AND kind = 'text' AND deleted = 0 AND sender_id <> ?
			LIMIT ` + strconv.Itoa(store.MaxUnread) + `)`},
		{&v.pageDesc, `SELECT ` + msgCols + ` FROM messages
			WHERE conv = ` + convNum + ` AND seq < ? ORDER BY seq DESC LIMIT ?`},
		{&v.pageAsc, `SELECT ` + msgCols + ` FROM messages
			WHERE conv = ` + convNum + ` AND seq > ? AND seq < ? ORDER BY seq LIMIT ?`},
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

// maxCachedStmts bounds a stmtCache, as a safety net: the store's query texts are
// constants (UsersByID, whose texts vary with the list's length, goes around the cache), and
// past the bound a text is prepared per use.
const maxCachedStmts = 256

// stmtCache prepares each query text once per pool, for the queries that are not in the
// fixed statement sets above. In this driver preparing costs more than running a small
// query (SQLite's parser, compiled to Go, was 16% of the server's CPU in the reconnect
// benchmark before this); database/sql then keeps each statement prepared on every
// connection of the pool that has run it.
//
// A query first met inside a transaction cannot be prepared on the pool there and then: the
// transaction holds a connection, and the writer's pool has only that one, so the prepare
// would wait for itself. It runs unprepared that once, and a goroutine of the cache prepares
// it on the pool when a connection is free.
type stmtCache struct {
	db *sql.DB
	// gate, if set, is held shared around background prepares: the reader pool's
	// readGate, which every use of that pool holds (sqlite.go).
	gate    *sync.RWMutex
	ctx     context.Context // cancelled by close: stops background prepares
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	m       map[string]*sql.Stmt
	pending map[string]bool // being prepared in the background
	closed  bool
}

func newStmtCache(db *sql.DB, gate *sync.RWMutex) *stmtCache {
	ctx, cancel := context.WithCancel(context.Background())
	return &stmtCache{db: db, gate: gate, ctx: ctx, cancel: cancel, m: make(map[string]*sql.Stmt), pending: make(map[string]bool)}
}

// stmt returns the cached statement for query. Outside a transaction it prepares it if
// needed; inside one (inTx) it returns nil, and no error, for a query not cached yet. It
// also returns nil when the cache is full.
func (c *stmtCache) stmt(ctx context.Context, query string, inTx bool) (*sql.Stmt, error) {
	c.mu.Lock()
	if st, ok := c.m[query]; ok {
		c.mu.Unlock()
		return st, nil
	}
	if c.closed || len(c.m)+len(c.pending) >= maxCachedStmts {
		c.mu.Unlock()
		return nil, nil
	}
	if c.pending[query] {
		c.mu.Unlock()
		return nil, nil // being prepared: run this one unprepared
	}
	// The slot is taken now, so that concurrent first uses stay within the bound.
	c.pending[query] = true
	if inTx {
		c.wg.Add(1)
		go c.prepareLater(query)
		c.mu.Unlock()
		return nil, nil
	}
	c.mu.Unlock()
	st, err := c.db.PrepareContext(ctx, query)
	if err != nil {
		c.done(query, nil)
		return nil, err
	}
	// Uncached only if the cache closed meanwhile: the pool closes next, and the statement
	// with it.
	c.done(query, st)
	return st, nil
}

// done ends query's prepare, which held its slot in pending: st, if not nil, is cached
// unless the cache has closed. It reports whether st was cached. Nobody else can have
// cached query meanwhile: the slot kept them from preparing it.
func (c *stmtCache) done(query string, st *sql.Stmt) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pending, query)
	if st == nil || c.closed {
		return false
	}
	c.m[query] = st
	return true
}

func (c *stmtCache) prepareLater(query string) {
	defer c.wg.Done()
	if c.gate != nil {
		c.gate.RLock()
		defer c.gate.RUnlock()
	}
	st, err := c.db.PrepareContext(c.ctx, query)
	if err != nil {
		c.done(query, nil) // the caller's unprepared run met (and reported) the same error
		return
	}
	if !c.done(query, st) {
		st.Close()
	}
}

// close stops background prepares and closes every cached statement. Call it before the
// pool closes.
func (c *stmtCache) close() {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	for q, st := range c.m {
		st.Close()
		delete(c.m, q)
	}
}

// cached runs queries through a stmtCache: on its pool, or inside tx, which must be a
// transaction of that pool.
type cached struct {
	c  *stmtCache
	tx *sql.Tx
}

func (q cached) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	st, err := q.c.stmt(ctx, query, q.tx != nil)
	if err != nil || st == nil {
		return nil, err
	}
	if q.tx != nil {
		// Reuses the statement already prepared on the transaction's connection.
		st = q.tx.StmtContext(ctx, st)
	}
	return st, nil
}

// querier is what *sql.DB and *sql.Tx both offer: the uncached way to run a query.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// uncached runs a query unprepared, where q would have run it prepared.
func (q cached) uncached() querier {
	if q.tx != nil {
		return q.tx
	}
	return q.c.db
}

func (q cached) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, err := q.stmt(ctx, query)
	switch {
	case err != nil:
		return nil, err
	case st != nil:
		return st.QueryContext(ctx, args...)
	}
	return q.uncached().QueryContext(ctx, query, args...)
}

func (q cached) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	// A failed prepare is left to the uncached call, which fails the same way and puts the
	// error in the Row, where the caller looks for it.
	if st, err := q.stmt(ctx, query); err == nil && st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return q.uncached().QueryRowContext(ctx, query, args...)
}

func (q cached) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	st, err := q.stmt(ctx, query)
	switch {
	case err != nil:
		return nil, err
	case st != nil:
		return st.ExecContext(ctx, args...)
	}
	return q.uncached().ExecContext(ctx, query, args...)
}
