-- The audit table without AUTOINCREMENT. With it, SQLite reads and rewrites the table's row in
-- `sqlite_sequence` on every insert: one more B-tree update, and one more page in the WAL of
-- every commit (5.5 pages instead of 4.5 for a one-row commit, the durable audit's case at low
-- load). `id` only breaks ties between records of the same `at`; a plain INTEGER PRIMARY KEY
-- still takes the largest id plus one, and retention deletes the oldest records, so ids keep
-- growing. Same columns in the same order, same indexes: older Doormen read and write it alike.
-- The copy takes as long as the audit trail is large, once (9 s for a million records, 320 MB,
-- on the test machine: docs/DEPLOY.md, "Upgrades").
CREATE TABLE audit_events_rowid (
    id INTEGER PRIMARY KEY,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    event TEXT NOT NULL,
    person_id TEXT,
    person TEXT,
    client_id TEXT,
    conversation TEXT,
    upstream TEXT,
    name TEXT,
    resource TEXT,
    account TEXT,
    decision TEXT,
    policy TEXT,
    outcome TEXT,
    latency_us BIGINT,
    request_id TEXT,
    arguments TEXT,
    detail TEXT,
    client_address TEXT,
    record_key TEXT
);
INSERT INTO audit_events_rowid (id, at, kind, event, person_id, person, client_id, conversation,
    upstream, name, resource, account, decision, policy, outcome, latency_us, request_id,
    arguments, detail, client_address, record_key)
SELECT id, at, kind, event, person_id, person, client_id, conversation, upstream, name,
    resource, account, decision, policy, outcome, latency_us, request_id, arguments, detail,
    client_address, record_key
FROM audit_events;
DROP TABLE audit_events;
ALTER TABLE audit_events_rowid RENAME TO audit_events;
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_person ON audit_events (person_id, at);
CREATE UNIQUE INDEX audit_events_record_key ON audit_events (record_key);
