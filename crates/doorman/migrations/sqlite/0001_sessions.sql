-- Stateful MCP sessions (protocol 2025-03-26 to 2025-11-25). The session id is kept hashed:
-- whoever reads the database cannot take over a session.
CREATE TABLE sessions (
    id_hash TEXT PRIMARY KEY NOT NULL,
    protocol_version TEXT NOT NULL,
    client_name TEXT,
    client_version TEXT,
    client_capabilities TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL
);
CREATE INDEX sessions_last_seen ON sessions (last_seen_at);
