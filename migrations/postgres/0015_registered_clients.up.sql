-- Clients that registered themselves (RFC 7591), so that admins can tell them apart.
ALTER TABLE clients ADD COLUMN registered BOOLEAN NOT NULL DEFAULT FALSE;
