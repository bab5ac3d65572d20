-- The audit log back in the main file, as migrations 6 and 7 left it. The audit file's
-- table goes in the migration before's down script, after this has committed.
CREATE TABLE IF NOT EXISTS main.audit_events (
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
CREATE INDEX IF NOT EXISTS main.audit_events_user_id ON audit_events (user_id, id)
    WHERE user_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS main.audit_events_event ON audit_events (event, id)
    WHERE event NOT IN ('token.issued', 'token.refreshed');
INSERT OR IGNORE INTO main.audit_events
    SELECT id, at, event, actor, user_id, session_id, client_id, ip, user_agent, request_id, details
    FROM audit.audit_events;
