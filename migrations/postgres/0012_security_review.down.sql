-- The scopes given in the up migration stay: they grant nothing the clients lacked before.
DROP TABLE login_attempts;
CREATE TABLE login_failures (
    user_id      TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    failures     INTEGER NOT NULL,
    window_start BIGINT NOT NULL,
    locked_until BIGINT
);
DROP FUNCTION atoms_rotate_refresh(BYTEA, BYTEA, TEXT, BIGINT, BIGINT, BIGINT, TEXT, TEXT, BIGINT);
CREATE FUNCTION atoms_rotate_refresh(
    p_presented BYTEA,
    p_new BYTEA,
    p_client_id TEXT,
    p_now BIGINT,
    p_grace_ms BIGINT,
    p_idle_ms BIGINT,
    p_ip TEXT
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
               last_used_at = p_now, idle_expires_at = LEAST(p_now + p_idle_ms, expires_at)
         WHERE id = v_session_id
        RETURNING * INTO s;
        UPDATE refresh_tokens SET used_at = p_now WHERE hash = p_presented;
        INSERT INTO refresh_tokens (hash, session_id, issued_at) VALUES (p_new, v_session_id, p_now);
        UPDATE devices SET last_seen_at = p_now, last_ip = COALESCE(p_ip, last_ip) WHERE id = s.device_id;
        RETURN QUERY SELECT 'rotated'::TEXT, row_to_json(s);
    ELSIF s.previous_hash = p_presented AND p_now - s.rotated_at <= p_grace_ms THEN
        -- The successor issued before is replaced; it stays known, so presenting it is reuse.
        UPDATE refresh_tokens SET used_at = p_now WHERE hash = s.current_hash;
        UPDATE sessions
           SET current_hash = p_new, last_used_at = p_now,
               idle_expires_at = LEAST(p_now + p_idle_ms, expires_at)
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
ALTER TABLE sessions DROP COLUMN access_jti;
ALTER TABLE clients DROP COLUMN resource_server;
ALTER TABLE clients DROP COLUMN created_by;
ALTER TABLE clients DROP COLUMN disabled;
