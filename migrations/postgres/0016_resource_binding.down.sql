ALTER TABLE clients DROP COLUMN last_used_at;
ALTER TABLE authorization_codes DROP COLUMN resource;
ALTER TABLE sessions DROP COLUMN resource;
