-- 0007_spread: per-user indexes that serve a conversation-list page and a sync page at the
-- cost of the page, not of the account (issue 14, item 8). As in the PostgreSQL store's
-- 0002 (read its header): each member row holds two coarse copies of its conversation's
-- stamps, rewritten only when they fall out of date by an epoch or a window.
--   members.sync_v  the largest version stamped on the member row or spread to it from its
--                   conversation; in the same epoch (version >> 8) as the member's change
--                   (the larger of heads.version and members.version), and not above it;
--   members.act_ts  a copy of heads.updated_ts; the true value is in [act_ts, act_ts + window).
-- heads.spread_v and heads.spread_ts are what the conversation last spread.
ALTER TABLE members ADD COLUMN sync_v INTEGER NOT NULL DEFAULT 0;
ALTER TABLE members ADD COLUMN act_ts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE heads ADD COLUMN spread_v INTEGER NOT NULL DEFAULT 0;
ALTER TABLE heads ADD COLUMN spread_ts INTEGER NOT NULL DEFAULT 0;
UPDATE heads SET spread_v = version, spread_ts = updated_ts;
UPDATE members SET
    sync_v = max(version, (SELECT h.version FROM conversations c JOIN heads h ON h.num = c.num
        WHERE c.id = members.conversation_id)),
    act_ts = (SELECT h.updated_ts FROM conversations c JOIN heads h ON h.num = c.num
        WHERE c.id = members.conversation_id);
DROP INDEX members_user;
CREATE INDEX members_user ON members (user_id, conversation_id);
CREATE INDEX members_sync ON members (user_id, sync_v);
CREATE INDEX members_activity ON members (user_id, act_ts, conversation_id);
