-- refresh_rotated remembers the refresh tokens (their hashes) a device has rotated out, until
-- they would have expired, so that one presented again is recognised as stolen and its whole
-- device (the token family) logged out (RFC 9700 §4.14). A revoked device's rows go with it.
-- rotated_ts lets a reuse moments after the rotation (two tabs refreshing at once, an
-- answer lost on the way) be told from theft. At most 16 rows are kept per device.
CREATE TABLE refresh_rotated (
    hash       TEXT PRIMARY KEY,
    device_id  TEXT NOT NULL,
    rotated_ts INTEGER NOT NULL,
    expires_ts INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX refresh_rotated_device ON refresh_rotated (device_id, rotated_ts);

-- probe holds one row that Store.Probe rewrites while the store is refusing writes for want
-- of disk: 64 KiB, about what a batch of messages needs, so that the store is called
-- writable again only when a real write would fit, not when a single page does.
CREATE TABLE probe (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    pad BLOB NOT NULL
);
