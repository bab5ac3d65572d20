-- Tokens bound to a resource (RFC 8707): the session and the authorization code keep the
-- resource their access tokens are for. Registered clients remember when they were last
-- used, so that those unused for long are removed.
ALTER TABLE sessions ADD COLUMN resource TEXT;
ALTER TABLE authorization_codes ADD COLUMN resource TEXT;
ALTER TABLE clients ADD COLUMN last_used_at BIGINT;
