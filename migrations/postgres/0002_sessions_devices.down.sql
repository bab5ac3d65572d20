DROP FUNCTION IF EXISTS atoms_rotate_refresh(BYTEA, BYTEA, TEXT, BIGINT, BIGINT, BIGINT, TEXT);
DROP INDEX IF EXISTS refresh_tokens_used_at;
ALTER TABLE refresh_tokens DROP COLUMN IF EXISTS used_at;
DROP INDEX IF EXISTS sessions_revoked_at;
DROP INDEX IF EXISTS sessions_idle_expires_at;
DROP INDEX IF EXISTS sessions_expires_at;
DROP INDEX IF EXISTS sessions_device_id;
ALTER TABLE sessions DROP COLUMN IF EXISTS device_id;
DROP TABLE IF EXISTS devices;
