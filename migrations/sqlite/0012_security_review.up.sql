-- Security review: login attempts counted per account name and client address before the
-- password is verified; clients that can be disabled, that record who registered them, and
-- that may be resource servers; the access token of each session's live refresh token, so
-- that a grace retry can revoke the pair it supersedes; and the `account` scope, which the
-- end-user API now requires, given to the clients (and their live sessions) that could use
-- that API before.

-- The key is a hash of the account name (known or not) and the address, so an unknown
-- user costs the same writes as a known one.
DROP TABLE login_failures;
CREATE TABLE login_attempts (
    attempt_key  TEXT PRIMARY KEY,
    failures     INTEGER NOT NULL,
    -- Attempts admitted and still being verified.
    pending      INTEGER NOT NULL,
    window_start INTEGER NOT NULL,
    locked_until INTEGER,
    -- What the last statement on the row decided (admitted, locked), read by RETURNING.
    outcome      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX login_attempts_window_start ON login_attempts (window_start);

ALTER TABLE clients ADD COLUMN disabled BOOLEAN NOT NULL DEFAULT 0;
ALTER TABLE clients ADD COLUMN created_by TEXT;
ALTER TABLE clients ADD COLUMN resource_server BOOLEAN NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN access_jti TEXT;

UPDATE sessions SET scope = TRIM(scope || ' account')
 WHERE revoked_at IS NULL
   AND ' ' || scope || ' ' NOT LIKE '% account %'
   AND client_id IN (SELECT client_id FROM clients WHERE ' ' || grant_types || ' ' LIKE '% password %');
UPDATE clients SET scopes = TRIM(scopes || ' account')
 WHERE ' ' || grant_types || ' ' LIKE '% password %'
   AND ' ' || scopes || ' ' NOT LIKE '% account %';
