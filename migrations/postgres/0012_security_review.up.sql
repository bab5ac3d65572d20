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
    window_start BIGINT NOT NULL,
    locked_until BIGINT,
    -- What the last statement on the row decided (admitted, locked), read by RETURNING.
    outcome      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX login_attempts_window_start ON login_attempts (window_start);

ALTER TABLE clients ADD COLUMN disabled BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE clients ADD COLUMN created_by TEXT;
ALTER TABLE clients ADD COLUMN resource_server BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE sessions ADD COLUMN access_jti TEXT;

UPDATE sessions SET scope = TRIM(scope || ' account')
 WHERE revoked_at IS NULL
   AND ' ' || scope || ' ' NOT LIKE '% account %'
   AND client_id IN (SELECT client_id FROM clients WHERE ' ' || grant_types || ' ' LIKE '% password %');
UPDATE clients SET scopes = TRIM(scopes || ' account')
 WHERE ' ' || grant_types || ' ' LIKE '% password %'
   AND ' ' || scopes || ' ' NOT LIKE '% account %';

-- The rotation as before, and: a grace retry is allowed once per rotation (it forgets the
-- previous token, so presenting it again is reuse), and it revokes the access token issued
-- with the pair it supersedes.
DROP FUNCTION atoms_rotate_refresh(BYTEA, BYTEA, TEXT, BIGINT, BIGINT, BIGINT, TEXT);
CREATE FUNCTION atoms_rotate_refresh(
    p_presented BYTEA,
    p_new BYTEA,
    p_client_id TEXT,
    p_now BIGINT,
    p_grace_ms BIGINT,
    p_idle_ms BIGINT,
    p_ip TEXT,
    p_new_jti TEXT,
    p_superseded_until BIGINT
) RETURNS TABLE (outcome TEXT, session JSON)
LANGUAGE plpgsql AS $$
DECLARE
    v_session_id TEXT;
    s sessions%ROWTYPE;
BEGIN
    SELECT t.session_id INTO v_session_id FROM refresh_tokens t WHERE t.hash = p_presented;
    IF v_session_id IS NULL THEN
        RETURN QUERY SELECT 'invalid'::TEXT, NULL::JSON;
        RETURN;
    END IF;
    SELECT * INTO s FROM sessions WHERE id = v_session_id FOR UPDATE;
    IF NOT FOUND OR s.client_id <> p_client_id THEN
        RETURN QUERY SELECT 'invalid'::TEXT, NULL::JSON;
    ELSIF s.revoked_at IS NOT NULL OR s.expires_at <= p_now OR s.idle_expires_at <= p_now THEN
        RETURN QUERY SELECT 'ended'::TEXT, row_to_json(s);
    ELSIF s.current_hash = p_presented THEN
        UPDATE sessions
           SET previous_hash = current_hash, current_hash = p_new, rotated_at = p_now,
               last_used_at = p_now, idle_expires_at = LEAST(p_now + p_idle_ms, expires_at),
               access_jti = p_new_jti
         WHERE id = v_session_id
        RETURNING * INTO s;
        UPDATE refresh_tokens SET used_at = p_now WHERE hash = p_presented;
        INSERT INTO refresh_tokens (hash, session_id, issued_at) VALUES (p_new, v_session_id, p_now);
        UPDATE devices SET last_seen_at = p_now, last_ip = COALESCE(p_ip, last_ip) WHERE id = s.device_id;
        RETURN QUERY SELECT 'rotated'::TEXT, row_to_json(s);
    ELSIF s.previous_hash = p_presented AND p_now - s.rotated_at <= p_grace_ms THEN
        -- The successor issued before is replaced; it stays known, so presenting it is reuse.
        UPDATE refresh_tokens SET used_at = p_now WHERE hash = s.current_hash;
        IF s.access_jti IS NOT NULL THEN
            INSERT INTO revoked_tokens (jti, expires_at) VALUES (s.access_jti, p_superseded_until)
            ON CONFLICT (jti) DO NOTHING;
        END IF;
        UPDATE sessions
           SET current_hash = p_new, previous_hash = NULL, last_used_at = p_now,
               idle_expires_at = LEAST(p_now + p_idle_ms, expires_at), access_jti = p_new_jti
         WHERE id = v_session_id
        RETURNING * INTO s;
        INSERT INTO refresh_tokens (hash, session_id, issued_at) VALUES (p_new, v_session_id, p_now);
        UPDATE devices SET last_seen_at = p_now, last_ip = COALESCE(p_ip, last_ip) WHERE id = s.device_id;
        RETURN QUERY SELECT 'grace'::TEXT, row_to_json(s);
    ELSE
        UPDATE sessions SET revoked_at = p_now, revoke_reason = 'refresh_token_reuse'
         WHERE id = v_session_id
        RETURNING * INTO s;
        RETURN QUERY SELECT 'reused'::TEXT, row_to_json(s);
    END IF;
END;
$$;
