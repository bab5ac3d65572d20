-- Users, clients, signing keys, sessions with their refresh-token families, and the
-- access-token revocation list. Times are milliseconds since the Unix epoch.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    disabled      BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE clients (
    client_id   TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    secret_hash TEXT,
    grant_types TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    alg         TEXT NOT NULL,
    private_key BYTEA NOT NULL,
    encrypted   BOOLEAN NOT NULL,
    created_at  BIGINT NOT NULL,
    retired_at  BIGINT,
    expires_at  BIGINT
);

-- A session owns one refresh-token family. The live token of the family is current_hash;
-- previous_hash is the token rotated last (the only one the grace period applies to).
CREATE TABLE sessions (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id       TEXT NOT NULL,
    scope           TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    last_used_at    BIGINT NOT NULL,
    idle_expires_at BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    ip              TEXT,
    user_agent      TEXT,
    revoked_at      BIGINT,
    revoke_reason   TEXT,
    current_hash    BYTEA NOT NULL,
    previous_hash   BYTEA,
    rotated_at      BIGINT
);
CREATE INDEX sessions_user_id ON sessions (user_id);

-- Every refresh token ever issued in a family, so that presenting an old one is recognised
-- as reuse rather than as an unknown token.
CREATE TABLE refresh_tokens (
    hash       BYTEA PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    issued_at  BIGINT NOT NULL
);
CREATE INDEX refresh_tokens_session_id ON refresh_tokens (session_id);

CREATE TABLE revoked_tokens (
    jti        TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX revoked_tokens_expires_at ON revoked_tokens (expires_at);

-- The refresh rule of storage::Rotation::decide, applied in one round trip. The session row
-- lock serialises concurrent refreshes of one family.
CREATE FUNCTION atoms_rotate_refresh(
    p_presented BYTEA,
    p_new BYTEA,
    p_client_id TEXT,
    p_now BIGINT,
    p_grace_ms BIGINT,
    p_idle_ms BIGINT
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
        INSERT INTO refresh_tokens (hash, session_id, issued_at) VALUES (p_new, v_session_id, p_now);
        RETURN QUERY SELECT 'rotated'::TEXT, row_to_json(s);
    ELSIF s.previous_hash = p_presented AND p_now - s.rotated_at <= p_grace_ms THEN
        -- The successor issued before is replaced; it stays known, so presenting it is reuse.
        UPDATE sessions
           SET current_hash = p_new, last_used_at = p_now,
               idle_expires_at = LEAST(p_now + p_idle_ms, expires_at)
         WHERE id = v_session_id
        RETURNING * INTO s;
        INSERT INTO refresh_tokens (hash, session_id, issued_at) VALUES (p_new, v_session_id, p_now);
        RETURN QUERY SELECT 'grace'::TEXT, row_to_json(s);
    ELSE
        UPDATE sessions SET revoked_at = p_now, revoke_reason = 'refresh_token_reuse'
         WHERE id = v_session_id
        RETURNING * INTO s;
        RETURN QUERY SELECT 'reused'::TEXT, row_to_json(s);
    END IF;
END;
$$;
