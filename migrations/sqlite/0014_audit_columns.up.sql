-- The audit log as eleven columns again. Packing each record into one JSON object (migration
-- 11) saved less than a tenth of any benchmark scenario's throughput, so it goes for the
-- plainer table (docs/benchmarks.md has the A/B). The audit log stays in its own file.
-- Everything here is in the audit file, so the copy and the drop commit together.
DROP VIEW audit.audit_events;
CREATE TABLE audit.audit_events (
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
CREATE INDEX audit.audit_events_user_id ON audit_events (user_id, id) WHERE user_id IS NOT NULL;
CREATE INDEX audit.audit_events_event ON audit_events (event, id)
    WHERE event NOT IN ('token.issued', 'token.refreshed');
INSERT INTO audit.audit_events
    SELECT id, record ->> 'at', event, record ->> 'actor', user_id, record ->> 'session_id',
        record ->> 'client_id', record ->> 'ip', record ->> 'user_agent',
        record ->> 'request_id', record ->> 'details'
    FROM audit.audit_log;
DROP TABLE audit.audit_log;
