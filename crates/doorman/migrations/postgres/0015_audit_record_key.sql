-- A random key per record: a write retried after a failure whose commit did in fact happen
-- stores nothing twice (ON CONFLICT DO NOTHING). Older rows have none.
ALTER TABLE audit_events ADD COLUMN record_key TEXT;
CREATE UNIQUE INDEX audit_events_record_key ON audit_events (record_key);
