-- The scopes given in the up migration stay: they grant nothing the clients lacked before.
DROP TABLE login_attempts;
CREATE TABLE login_failures (
    user_id      TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    failures     INTEGER NOT NULL,
    window_start INTEGER NOT NULL,
    locked_until INTEGER
);
ALTER TABLE sessions DROP COLUMN access_jti;
ALTER TABLE clients DROP COLUMN resource_server;
ALTER TABLE clients DROP COLUMN created_by;
ALTER TABLE clients DROP COLUMN disabled;
