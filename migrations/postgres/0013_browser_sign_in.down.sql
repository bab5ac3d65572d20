DROP TABLE authorization_codes;
DROP TABLE consents;
DROP TABLE browser_sessions;
ALTER TABLE clients DROP COLUMN skip_consent;
ALTER TABLE clients DROP COLUMN redirect_uris;
