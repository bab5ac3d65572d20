CREATE TABLE audit_events_rowid (
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
);
INSERT INTO audit_events_rowid
    SELECT id, at, event, actor, user_id, session_id, client_id, ip, user_agent, request_id, details
    FROM audit_events;
DROP TABLE audit_events;
ALTER TABLE audit_events_rowid RENAME TO audit_events;
CREATE INDEX audit_events_user_id ON audit_events (user_id, id) WHERE user_id IS NOT NULL;
CREATE INDEX audit_events_event ON audit_events (event, id);
