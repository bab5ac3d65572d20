-- Browser sign-in (authorization code with PKCE): the redirect URIs a client may be sent
-- back to and whether its users are asked for consent; the browsers signed in at the
-- authorization endpoint; the consents users gave; and the authorization codes.
ALTER TABLE clients ADD COLUMN redirect_uris TEXT NOT NULL DEFAULT '';
ALTER TABLE clients ADD COLUMN skip_consent BOOLEAN NOT NULL DEFAULT FALSE;

-- A browser's sign-in: the cookie holds a secret, this table its SHA-256.
CREATE TABLE browser_sessions (
    hash            BYTEA PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at      BIGINT NOT NULL,
    idle_expires_at BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    ip              TEXT,
    user_agent      TEXT
);
CREATE INDEX browser_sessions_user_id ON browser_sessions (user_id);
CREATE INDEX browser_sessions_expires_at ON browser_sessions (expires_at);

-- The scopes a user allowed a client, so that they are not asked again.
CREATE TABLE consents (
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id  TEXT NOT NULL,
    scopes     TEXT NOT NULL,
    granted_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, client_id)
);

-- Codes by the SHA-256 of the code. A code is taken once (used_at); taking it again marks it
-- replayed, and the session its first exchange opened (session_id) is ended.
CREATE TABLE authorization_codes (
    hash           BYTEA PRIMARY KEY,
    client_id      TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    scope          TEXT NOT NULL,
    user_id        TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    ip             TEXT,
    user_agent     TEXT,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    used_at        BIGINT,
    session_id     TEXT,
    replayed       BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX authorization_codes_created_at ON authorization_codes (created_at);
