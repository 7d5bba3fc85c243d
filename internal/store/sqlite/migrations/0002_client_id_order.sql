-- The dedupe key leads with the client id instead of the sender. Clients that use
-- time-ordered ids (UUIDv7, as the Go SDK does) then insert at the right edge of the index,
-- dirtying one page per batch instead of one page per sender: in the direct benchmark this
-- cut the pages each commit writes to the WAL. Lookups give both columns, so either order
-- serves them.
DROP INDEX messages_client;
CREATE UNIQUE INDEX messages_client ON messages (client_id, sender_id);
