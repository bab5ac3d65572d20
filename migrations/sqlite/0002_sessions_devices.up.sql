-- Devices, the device of a session, when each refresh token was used, and the indexes the
-- purge job walks. (sessions.device_id carries no foreign key here: SQLite could not drop
-- such a column in the down script; deleting a device clears it explicitly.)

CREATE TABLE devices (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    fingerprint   TEXT NOT NULL,
    name          TEXT NOT NULL,
    platform      TEXT,
    user_agent    TEXT,
    last_ip       TEXT,
    first_seen_at INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL,
    trusted       BOOLEAN NOT NULL DEFAULT FALSE,
    UNIQUE (user_id, fingerprint)
);

ALTER TABLE sessions ADD COLUMN device_id TEXT;
CREATE INDEX sessions_device_id ON sessions (device_id);
CREATE INDEX sessions_expires_at ON sessions (expires_at);
CREATE INDEX sessions_idle_expires_at ON sessions (idle_expires_at);
CREATE INDEX sessions_revoked_at ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;

ALTER TABLE refresh_tokens ADD COLUMN used_at INTEGER;
CREATE INDEX refresh_tokens_used_at ON refresh_tokens (used_at) WHERE used_at IS NOT NULL;
