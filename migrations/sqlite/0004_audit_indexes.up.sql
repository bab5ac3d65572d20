-- Time ranges and retention read the audit log by id (UUIDv7 ids start with their time),
-- so the time index goes; records without a user stay out of the user index.
DROP INDEX audit_events_at;
DROP INDEX audit_events_user_id;
CREATE INDEX audit_events_user_id ON audit_events (user_id, id) WHERE user_id IS NOT NULL;
