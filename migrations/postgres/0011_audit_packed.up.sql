-- Nothing to do on PostgreSQL: the change packs SQLite's audit records into fewer columns.
-- The version exists so both dialects share one migration list.
SELECT 1;
