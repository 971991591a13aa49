-- Layer 2: one person's authorization of one account at one resource. Tokens are sealed with
-- the key ring, their associated data naming the connection, the person and the resource, so a
-- row copied to another person or resource does not open.
CREATE TABLE connections (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    resource TEXT NOT NULL,
    -- The account's identity at the resource (a login, an email).
    account TEXT NOT NULL,
    scopes TEXT NOT NULL,
    access_token_sealed TEXT NOT NULL,
    refresh_token_sealed TEXT,
    -- When the person last authenticated at the resource: max_age counts from here.
    authorized_at BIGINT NOT NULL,
    expires_at BIGINT,
    -- session | user | call | shared, and what it is bound to (a session id hash, a grant id).
    binding TEXT NOT NULL,
    binding_target TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX connections_person ON connections (user_id, resource);
CREATE INDEX connections_binding ON connections (binding_target);

-- Single-flight refresh across processes: whoever holds a connection's unexpired lease refreshes
-- it; a rotated refresh token is never replayed by a second node.
CREATE TABLE connection_leases (
    connection_id TEXT PRIMARY KEY NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
