DROP INDEX audit_events_event;
CREATE INDEX audit_events_event ON audit_events (event, id);
