-- A refresh costs one write. A refresh token now names its session and generation and carries
-- a MAC under a server key (server_secrets), so a rotation updates the session row alone: no
-- refresh_tokens row is written, marked or purged per rotation. The generation of the
-- session's live token is kept on the row. refresh_tokens stays for the tokens issued before:
-- each keeps working until it is rotated once, and its reuse is detected until it is purged.
ALTER TABLE sessions ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
CREATE TABLE server_secrets (
    name       TEXT PRIMARY KEY,
    value      BLOB NOT NULL,
    encrypted  BOOLEAN NOT NULL,
    created_at INTEGER NOT NULL
);
