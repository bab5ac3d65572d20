-- Nothing to do on PostgreSQL: the change keys SQLite's audit table by its id alone, and a
-- PostgreSQL table is a heap with its primary-key index either way. The version exists so
-- both dialects share one migration list.
SELECT 1;
