-- The audit log moves into a database file of its own beside the main one (atoms-auth.db:
-- atoms-auth-audit.db), which every connection attaches as the schema `audit`. Its records
-- then have their own writer and write-ahead log: the page each of them dirties (a leaf of
-- the user index, at a random place) is written and synced beside the refresh-token
-- rotations' commits instead of inside them. Queries name `audit_events` unqualified, which
-- finds the table in `audit` once the main file no longer has one (the next migration).
--
-- This one copies. A transaction over two WAL files commits in each file, not in both at
-- once, and the main file (where this migration is recorded) commits first: the main file's
-- copy goes only in the next migration, which copies again in case this copy was lost.
CREATE TABLE IF NOT EXISTS audit.audit_events (
    id         TEXT PRIMARY KEY,
    at         INTEGER NOT NULL,
    event      TEXT NOT NULL,
    actor      TEXT,
    user_id    TEXT,
    session_id TEXT,
    client_id  TEXT,
    ip         TEXT,
    user_agent TEXT,
    request_id TEXT,
    details    TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS audit.audit_events_user_id ON audit_events (user_id, id)
    WHERE user_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit.audit_events_event ON audit_events (event, id)
    WHERE event NOT IN ('token.issued', 'token.refreshed');
INSERT OR IGNORE INTO audit.audit_events
    SELECT id, at, event, actor, user_id, session_id, client_id, ip, user_agent, request_id, details
    FROM main.audit_events;
