-- Nothing to do on SQLite: the change drops PostgreSQL's old refresh-rotation function, and
-- SQLite's rotation runs in the server. The version exists so both dialects share one
-- migration list.
SELECT 1;
