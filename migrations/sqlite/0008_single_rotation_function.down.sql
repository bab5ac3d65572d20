-- Nothing to undo on SQLite (see the up script). The version exists so both dialects share
-- one migration list.
SELECT 1;
