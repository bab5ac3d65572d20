-- Back to the packed records of migration 11.
CREATE TABLE audit.audit_log (
    id      TEXT PRIMARY KEY,
    event   TEXT NOT NULL,
    user_id TEXT,
    -- {"at":…, "actor":…, "session_id":…, "client_id":…, "ip":…, "user_agent":…,
    --  "request_id":…, "details":{…}}: an absent key is a null.
    record  TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX audit.audit_log_user_id ON audit_log (user_id, id) WHERE user_id IS NOT NULL;
CREATE INDEX audit.audit_log_event ON audit_log (event, id)
    WHERE event NOT IN ('token.issued', 'token.refreshed');
INSERT INTO audit.audit_log
    SELECT id, event, user_id, json_object(
        'at', at, 'actor', actor, 'session_id', session_id, 'client_id', client_id, 'ip', ip,
        'user_agent', user_agent, 'request_id', request_id,
        -- The details are a JSON object; anything else is kept as text, which `->>` gives
        -- back as it was.
        'details', CASE WHEN NOT json_valid(details) THEN details
            WHEN json_type(details) = 'object' THEN json(details) ELSE details END)
    FROM audit.audit_events;
DROP TABLE audit.audit_events;
CREATE VIEW audit.audit_events AS
    SELECT id, record ->> 'at' AS at, event, record ->> 'actor' AS actor, user_id,
        record ->> 'session_id' AS session_id, record ->> 'client_id' AS client_id,
        record ->> 'ip' AS ip, record ->> 'user_agent' AS user_agent,
        record ->> 'request_id' AS request_id, record ->> 'details' AS details
    FROM audit_log;
