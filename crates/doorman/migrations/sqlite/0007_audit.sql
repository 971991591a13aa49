-- The audit trail: every tool call, prompt get and resource read, and security events.
-- Arguments only where a policy allows, secret-looking values redacted before they get here.
CREATE TABLE audit_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at BIGINT NOT NULL,
    -- call | security
    kind TEXT NOT NULL,
    -- tools/call, prompts/get, resources/read; sign_in, sign_in_failed, consent, connection_made, ...
    event TEXT NOT NULL,
    person_id TEXT,
    person TEXT,
    client_id TEXT,
    -- The conversation: a stateful session (its id's hash, shortened) or the grant.
    conversation TEXT,
    upstream TEXT,
    name TEXT,
    resource TEXT,
    account TEXT,
    -- allowed | denied | connection_required | step_up_required
    decision TEXT,
    policy TEXT,
    -- success | tool_error | upstream_error
    outcome TEXT,
    latency_us BIGINT,
    request_id TEXT,
    arguments TEXT,
    detail TEXT
);
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_person ON audit_events (person_id, at);
