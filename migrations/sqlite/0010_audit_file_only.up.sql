-- The audit log is in its own file (the migration before): the main file's copy goes. What
-- the migration before copied is copied again first, in case that copy did not commit; a
-- loss would take this copy failing as well.
INSERT OR IGNORE INTO audit.audit_events
    SELECT id, at, event, actor, user_id, session_id, client_id, ip, user_agent, request_id, details
    FROM main.audit_events;
DROP TABLE main.audit_events;
