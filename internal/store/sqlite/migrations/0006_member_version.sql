-- 0006_member_version: a version of each conversation's member list, moved by every
-- membership change and by nothing else, so that a caller caching member lists (chat's
-- fan-out) learns in the append's own transaction that its list is stale
-- (store.AppendRequest.MemberVersion).
ALTER TABLE heads ADD COLUMN member_version INTEGER NOT NULL DEFAULT 1;
