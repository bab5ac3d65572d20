-- Nothing to do on PostgreSQL: the change moves SQLite's audit log into a file of its own.
-- The version exists so both dialects share one migration list.
SELECT 1;
