-- Doorman's own registrations at the authorization servers of upstreams that do MCP
-- authorization themselves (RFC 7591), shared by every node and kept across restarts.
CREATE TABLE resource_registrations (
    upstream TEXT NOT NULL,
    issuer TEXT NOT NULL,
    client_id TEXT NOT NULL,
    -- When the server issued a secret anyway: sealed with the key ring.
    client_secret_sealed TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (upstream, issuer)
);
