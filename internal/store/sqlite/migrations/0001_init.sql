-- 0001_init: Parley's first schema.
--
-- Conventions: times are Unix milliseconds; "" and 0 stand for absent values so that rows scan
-- into plain Go types. Tables keyed by a natural key are WITHOUT ROWID, so the key's b-tree is
-- the table and a lookup by key reads one b-tree instead of an index and then the table.

-- meta holds the global sync version: every write transaction that changes what Sync reports
-- bumps it once and stamps the rows it changed with the new value.
CREATE TABLE meta (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO meta (id, version) VALUES (1, 0);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE, -- BINARY collation: compared as given, prefix = range
    display_name  TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_ts    INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE devices (
    id                 TEXT PRIMARY KEY,
    user_id            TEXT NOT NULL REFERENCES users (id),
    name               TEXT NOT NULL,
    refresh_hash       TEXT NOT NULL,
    refresh_expires_ts INTEGER NOT NULL,
    created_ts         INTEGER NOT NULL,
    revoked_ts         INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX devices_refresh_hash ON devices (refresh_hash);
CREATE INDEX devices_user ON devices (user_id);

CREATE TABLE contacts (
    user_id    TEXT NOT NULL REFERENCES users (id),
    contact_id TEXT NOT NULL REFERENCES users (id),
    created_ts INTEGER NOT NULL,
    PRIMARY KEY (user_id, contact_id)
) WITHOUT ROWID;

-- conversations keeps the log's head: last_seq is the seq the next event continues from, so an
-- append never scans messages; last_text_seq points at the latest text message (LastMessage).
-- direct_key ("a|b", sorted) makes the one-direct-conversation-per-pair rule a constraint.
CREATE TABLE conversations (
    id            TEXT PRIMARY KEY,
    type          TEXT NOT NULL,
    name          TEXT NOT NULL DEFAULT '',
    direct_key    TEXT UNIQUE,
    last_seq      INTEGER NOT NULL DEFAULT 0,
    last_text_seq INTEGER NOT NULL DEFAULT 0,
    created_ts    INTEGER NOT NULL,
    updated_ts    INTEGER NOT NULL, -- ts of the last event, or of creation
    version       INTEGER NOT NULL  -- meta.version of the last event or membership change
) WITHOUT ROWID;

-- members holds membership and each member's cumulative receipt cursors. version is the
-- meta.version of the last change to this row (join, role, cursors), so that Sync finds a
-- conversation whose only change is the user's own read state.
CREATE TABLE members (
    conversation_id    TEXT NOT NULL REFERENCES conversations (id),
    user_id            TEXT NOT NULL,
    role               TEXT NOT NULL,
    joined_ts          INTEGER NOT NULL,
    last_read_seq      INTEGER NOT NULL DEFAULT 0,
    last_read_ts       INTEGER NOT NULL DEFAULT 0,
    last_delivered_seq INTEGER NOT NULL DEFAULT 0,
    last_delivered_ts  INTEGER NOT NULL DEFAULT 0,
    version            INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
) WITHOUT ROWID;
CREATE INDEX members_user ON members (user_id);

-- messages is the event log. It is a rowid table on purpose: a batch appends rows at the end
-- of one b-tree whatever the conversations, which dirties (and writes to the WAL) far fewer
-- pages per commit than clustering by (conversation_id, seq) would; measured with
-- BenchmarkAppend, 64 conversations per batch append ~1.5x faster this way. History and unread
-- counts go through the (conversation_id, seq) unique index. An original carries its current
-- state: body after edits, edited_ts, deleted (a tombstone keeps no body or attachments).
-- messages_client is the dedupe key: a (sender, client id) is stored once.
CREATE TABLE messages (
    conversation_id TEXT NOT NULL REFERENCES conversations (id),
    seq             INTEGER NOT NULL,
    client_id       TEXT NOT NULL,
    sender_id       TEXT NOT NULL,
    kind            TEXT NOT NULL,
    body            TEXT NOT NULL DEFAULT '',
    reply_to        INTEGER NOT NULL DEFAULT 0,
    target_seq      INTEGER NOT NULL DEFAULT 0,
    emoji           TEXT NOT NULL DEFAULT '',
    remove          INTEGER NOT NULL DEFAULT 0,
    attachments     BLOB,             -- JSON, NULL if none
    system          TEXT,             -- protocol.SystemEvent as JSON, kind system only
    ts              INTEGER NOT NULL,
    edited_ts       INTEGER NOT NULL DEFAULT 0,
    deleted         INTEGER NOT NULL DEFAULT 0,
    UNIQUE (conversation_id, seq)
);
CREATE UNIQUE INDEX messages_client ON messages (sender_id, client_id);

-- reactions holds the current (user, emoji) pairs on a text message; seq is the reaction event
-- that added the pair, which orders emojis by first reaction and users within an emoji.
CREATE TABLE reactions (
    conversation_id TEXT NOT NULL,
    target_seq      INTEGER NOT NULL,
    emoji           TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, target_seq, emoji, user_id),
    FOREIGN KEY (conversation_id, target_seq) REFERENCES messages (conversation_id, seq)
) WITHOUT ROWID;
