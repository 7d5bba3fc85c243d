-- 0001_accounts: users, their devices (logins) and contacts. The conversations and the event
-- log come in the next migration, with the code that writes them (issue 14).
--
-- Conventions, as in the SQLite store: times are Unix milliseconds (bigint); '' and 0 stand
-- for absent values so that rows scan into plain Go types.

CREATE TABLE users (
    id            text PRIMARY KEY,
    username      text NOT NULL UNIQUE COLLATE "C", -- compared as given; a prefix is a range
    display_name  text NOT NULL,
    password_hash text NOT NULL,
    created_ts    bigint NOT NULL
);

CREATE TABLE devices (
    id                 text PRIMARY KEY,
    user_id            text NOT NULL REFERENCES users (id),
    name               text NOT NULL,
    refresh_hash       text NOT NULL,
    refresh_expires_ts bigint NOT NULL,
    created_ts         bigint NOT NULL,
    revoked_ts         bigint NOT NULL DEFAULT 0
);
CREATE INDEX devices_refresh_hash ON devices (refresh_hash);
CREATE INDEX devices_user ON devices (user_id);

-- Refresh tokens a device rotated out, for theft detection (RFC 9700 §4.14): see the SQLite
-- store's migration 0005.
CREATE TABLE refresh_rotated (
    hash       text PRIMARY KEY,
    device_id  text NOT NULL,
    rotated_ts bigint NOT NULL,
    expires_ts bigint NOT NULL
);
CREATE INDEX refresh_rotated_device ON refresh_rotated (device_id, rotated_ts);

CREATE TABLE contacts (
    user_id    text NOT NULL REFERENCES users (id),
    contact_id text NOT NULL REFERENCES users (id),
    created_ts bigint NOT NULL,
    PRIMARY KEY (user_id, contact_id)
);
