-- 0002_conversations: conversations, members, the event log, reactions and departures.
--
-- Change stamps. Every change that Sync reports stamps its row with (xid, pos): the 64-bit id
-- of the writing transaction (pg_current_xact_id(), kept as bigint) and a value of the
-- change_pos sequence. A reader takes only changes whose xid is below its snapshot's xmin
-- (every transaction below it has ended), so a transaction that commits late is never
-- skipped: its xid is at least the horizon the reader returned as its token. Stamps only grow
-- (GREATEST), so a row's stamp is its latest change. See docs/architecture.md.
--
-- Spreading. A conversation's own changes (events, name, membership) are stamped on its row,
-- and each member row holds two coarse copies, read through per-user indexes so that a list
-- or sync page costs what the page holds, not what the account holds:
--   sync_xid  the largest xid stamped on the member row or spread to it from the conversation,
--             kept in the same xid epoch (xid >> 8) as the member's latest change: a new epoch
--             spreads to every member once, not every event;
--   act_ts    a copy of the conversation's updated_ts, spread again only when updated_ts
--             leaves [act_ts, act_ts + window): the list orders by updated_ts exactly, reading
--             the index by act_ts and the rows within one window of the page's end.

CREATE SEQUENCE change_pos;

CREATE TABLE conversations (
    id             text PRIMARY KEY COLLATE "C",
    type           text NOT NULL,
    name           text NOT NULL DEFAULT '',
    direct_key     text UNIQUE COLLATE "C",
    created_ts     bigint NOT NULL,
    last_seq       bigint NOT NULL DEFAULT 0,
    last_text_seq  bigint NOT NULL DEFAULT 0,
    updated_ts     bigint NOT NULL,         -- ts of the last event, or of creation
    member_version bigint NOT NULL DEFAULT 1, -- moves with every membership change
    change_xid     bigint NOT NULL,
    change_pos     bigint NOT NULL,
    spread_xid     bigint NOT NULL,         -- the sync_xid last spread to the members
    spread_ts      bigint NOT NULL          -- the act_ts the members hold
);
-- No index on the stamps: the head's update on every batch stays a HOT update.

CREATE TABLE members (
    conversation_id    text NOT NULL COLLATE "C" REFERENCES conversations (id),
    user_id            text NOT NULL COLLATE "C",
    role               text NOT NULL,
    joined_ts          bigint NOT NULL,
    last_read_seq      bigint NOT NULL DEFAULT 0,
    last_read_ts       bigint NOT NULL DEFAULT 0,
    last_delivered_seq bigint NOT NULL DEFAULT 0,
    last_delivered_ts  bigint NOT NULL DEFAULT 0,
    change_xid         bigint NOT NULL,
    change_pos         bigint NOT NULL,
    sync_xid           bigint NOT NULL,
    act_ts             bigint NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
);
CREATE INDEX members_user ON members (user_id, conversation_id);
CREATE INDEX members_sync ON members (user_id, sync_xid, conversation_id);
CREATE INDEX members_activity ON members (user_id, act_ts, conversation_id);

-- The log: one row per event, keyed by (conversation_id, seq), hash-partitioned by
-- conversation so that it can grow to billions of rows in tables of a manageable size; every
-- read names its conversation and is a range scan of one partition's primary key. A client's
-- message id is unique per sender within a conversation (the dedupe key must include the
-- partition key to be enforced by a unique index). The dedupe key leads with the sender, so
-- that no lookup by (conversation_id, seq) can be planned on it: with both keys leading with
-- the conversation, a generic plan made while the table was nearly empty looked messages up
-- by the wrong one and, a million rows later, read a whole conversation per lookup (1.4 s
-- for a list page). No foreign key: each would cost a trigger
-- per row, and an append holds the conversation's row lock, and conversations are never
-- deleted.
CREATE TABLE messages (
    conversation_id text NOT NULL COLLATE "C",
    seq             bigint NOT NULL,
    client_id       text NOT NULL COLLATE "C",
    sender_id       text NOT NULL COLLATE "C",
    kind            text NOT NULL,
    body            text NOT NULL DEFAULT '',
    reply_to        bigint NOT NULL DEFAULT 0,
    target_seq      bigint NOT NULL DEFAULT 0,
    emoji           text NOT NULL DEFAULT '',
    remove          boolean NOT NULL DEFAULT false,
    attachments     bytea,                 -- JSON as the client sent it, NULL if none
    system          bytea,                 -- protocol.SystemEvent as JSON, kind system only
    ts              bigint NOT NULL,
    edited_ts       bigint NOT NULL DEFAULT 0,
    deleted         boolean NOT NULL DEFAULT false,
    PRIMARY KEY (conversation_id, seq),
    UNIQUE (sender_id, client_id, conversation_id)
) PARTITION BY HASH (conversation_id);

CREATE TABLE reactions (
    conversation_id text NOT NULL COLLATE "C",
    target_seq      bigint NOT NULL,
    emoji           text NOT NULL,
    user_id         text NOT NULL COLLATE "C",
    seq             bigint NOT NULL,
    PRIMARY KEY (conversation_id, target_seq, emoji, user_id)
) PARTITION BY HASH (conversation_id);

-- The partition count is fixed here: changing it means a new migration that moves the rows.
DO $$
BEGIN
    FOR i IN 0..15 LOOP
        EXECUTE format('CREATE TABLE messages_%s PARTITION OF messages FOR VALUES WITH (MODULUS 16, REMAINDER %s)', i, i);
        EXECUTE format('CREATE TABLE reactions_%s PARTITION OF reactions FOR VALUES WITH (MODULUS 16, REMAINDER %s)', i, i);
    END LOOP;
END $$;

-- A member who left or was removed, until they join again (Departed).
CREATE TABLE departures (
    user_id         text NOT NULL COLLATE "C",
    conversation_id text NOT NULL COLLATE "C",
    change_xid      bigint NOT NULL,
    change_pos      bigint NOT NULL,
    PRIMARY KEY (user_id, conversation_id)
);
CREATE INDEX departures_change ON departures (user_id, change_xid, change_pos);

-- Probe's row: a durable write that changes nothing a reader sees.
CREATE TABLE probe (
    id  integer PRIMARY KEY CHECK (id = 1),
    pad bytea NOT NULL
);
