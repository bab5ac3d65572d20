-- Tokens issued since the up migration name no refresh_tokens row: they stop working.
DROP TABLE server_secrets;
ALTER TABLE sessions DROP COLUMN generation;
