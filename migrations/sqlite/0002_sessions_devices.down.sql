DROP INDEX IF EXISTS refresh_tokens_used_at;
ALTER TABLE refresh_tokens DROP COLUMN used_at;
DROP INDEX IF EXISTS sessions_revoked_at;
DROP INDEX IF EXISTS sessions_idle_expires_at;
DROP INDEX IF EXISTS sessions_expires_at;
DROP INDEX IF EXISTS sessions_device_id;
ALTER TABLE sessions DROP COLUMN device_id;
DROP TABLE IF EXISTS devices;
