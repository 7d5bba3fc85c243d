-- Departures remember that a user stopped being a member of a conversation (removed, or
-- left), stamped with meta.version like everything else Sync reports, so that a device that
-- was offline learns of it from its next sync instead of keeping a conversation it can no
-- longer open. Joining again deletes the row.
CREATE TABLE departures (
    user_id         TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    version         INTEGER NOT NULL,
    PRIMARY KEY (user_id, conversation_id)
) WITHOUT ROWID;
