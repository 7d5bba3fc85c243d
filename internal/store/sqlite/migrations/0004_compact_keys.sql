-- 0004_compact_keys: fewer and smaller pages written per message.
--
-- A commit writes every page it changes to the WAL whole, and under load a batch's messages
-- are in different conversations, so each message dirties its own page of every b-tree
-- ordered by conversation. Two changes make those b-trees small and their pages dense
-- (docs/benchmarks.md, "Write amplification"):
--
-- 1. Conversations get a small integer key, num, and the event log is keyed by (conv, seq)
--    with conv that number instead of the 36-character id: an entry of the (conv, seq)
--    index is about 12 bytes instead of about 50, so a conversation's page of it fills
--    (and splits, which rewrites three or four pages) four times less often.
-- 2. The log head that every append moves (last_seq, last_text_seq, updated_ts, version)
--    leaves the wide conversations row for a narrow heads row keyed by num: a batch that
--    touches ten conversations then dirties two or three pages of heads, not ten of
--    conversations.
--
-- messages and reactions are rebuilt, since a table's UNIQUE constraint and a foreign key
-- cannot be altered in place; rowids are kept, so the log keeps its physical order.

ALTER TABLE conversations ADD COLUMN num INTEGER NOT NULL DEFAULT 0;
UPDATE conversations SET num = r.n
    FROM (SELECT id, row_number() OVER (ORDER BY created_ts, id) AS n FROM conversations) AS r
    WHERE conversations.id = r.id;
CREATE UNIQUE INDEX conversations_num ON conversations (num);

CREATE TABLE heads (
    num           INTEGER PRIMARY KEY REFERENCES conversations (num),
    last_seq      INTEGER NOT NULL, -- the seq the next event continues from
    last_text_seq INTEGER NOT NULL, -- the latest text message (LastMessage)
    updated_ts    INTEGER NOT NULL, -- ts of the last event, or of creation
    version       INTEGER NOT NULL  -- meta.version of the last event or membership change
);
INSERT INTO heads (num, last_seq, last_text_seq, updated_ts, version)
    SELECT num, last_seq, last_text_seq, updated_ts, version FROM conversations;
ALTER TABLE conversations DROP COLUMN last_seq;
ALTER TABLE conversations DROP COLUMN last_text_seq;
ALTER TABLE conversations DROP COLUMN updated_ts;
ALTER TABLE conversations DROP COLUMN version;

-- reactions refers to messages: set its rows aside while messages is rebuilt.
CREATE TABLE reactions_old AS SELECT * FROM reactions;
DROP TABLE reactions;

CREATE TABLE messages_new (
    conv        INTEGER NOT NULL REFERENCES conversations (num),
    seq         INTEGER NOT NULL,
    client_id   TEXT NOT NULL,
    sender_id   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    body        TEXT NOT NULL DEFAULT '',
    reply_to    INTEGER NOT NULL DEFAULT 0,
    target_seq  INTEGER NOT NULL DEFAULT 0,
    emoji       TEXT NOT NULL DEFAULT '',
    remove      INTEGER NOT NULL DEFAULT 0,
    attachments BLOB,
    system      TEXT,
    ts          INTEGER NOT NULL,
    edited_ts   INTEGER NOT NULL DEFAULT 0,
    deleted     INTEGER NOT NULL DEFAULT 0,
    UNIQUE (conv, seq)
);
INSERT INTO messages_new (rowid, conv, seq, client_id, sender_id, kind, body, reply_to, target_seq,
        emoji, remove, attachments, system, ts, edited_ts, deleted)
    SELECT m.rowid, c.num, m.seq, m.client_id, m.sender_id, m.kind, m.body, m.reply_to, m.target_seq,
        m.emoji, m.remove, m.attachments, m.system, m.ts, m.edited_ts, m.deleted
    FROM messages m JOIN conversations c ON c.id = m.conversation_id
    ORDER BY m.rowid;
DROP TABLE messages;
ALTER TABLE messages_new RENAME TO messages;
CREATE UNIQUE INDEX messages_client ON messages (client_id, sender_id);

CREATE TABLE reactions (
    conv       INTEGER NOT NULL,
    target_seq INTEGER NOT NULL,
    emoji      TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    PRIMARY KEY (conv, target_seq, emoji, user_id),
    FOREIGN KEY (conv, target_seq) REFERENCES messages (conv, seq)
) WITHOUT ROWID;
INSERT INTO reactions (conv, target_seq, emoji, user_id, seq)
    SELECT c.num, r.target_seq, r.emoji, r.user_id, r.seq
    FROM reactions_old r JOIN conversations c ON c.id = r.conversation_id;
DROP TABLE reactions_old;
