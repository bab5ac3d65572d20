-- Migration 2 added the seven-argument atoms_rotate_refresh (the rotated token marked used, the
-- device seen from the client address) beside the six-argument one of migration 1, which
-- instances of the version before kept calling while an upgrade rolled out. Nothing calls it
-- now, and a call would rotate without marking the old token used: it goes.
DROP FUNCTION IF EXISTS atoms_rotate_refresh(BYTEA, BYTEA, TEXT, BIGINT, BIGINT, BIGINT);
