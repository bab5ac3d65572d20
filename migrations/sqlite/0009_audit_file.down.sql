-- The main file holds the audit log again (the next migration's down script copied it back).
DROP TABLE IF EXISTS audit.audit_events;
