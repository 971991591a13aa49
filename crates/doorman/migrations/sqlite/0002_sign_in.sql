-- Layer 1: people, clients, grants and the signing keys of Doorman's authorization server.
-- Every secret (refresh tokens, codes, client secrets, browser sessions, setup links) is kept as
-- its SHA-256; passwords as argon2id hashes; private keys and TOTP seeds sealed with the key ring.

-- A person. Local accounts have issuer 'local' and subject = id; SSO people (issuer, subject).
CREATE TABLE users (
    id TEXT PRIMARY KEY NOT NULL,
    issuer TEXT NOT NULL,
    subject TEXT NOT NULL,
    username TEXT,
    email TEXT,
    name TEXT,
    groups TEXT NOT NULL DEFAULT '[]',
    is_admin BOOLEAN NOT NULL DEFAULT FALSE,
    disabled_at BIGINT,
    created_at BIGINT NOT NULL,
    UNIQUE (issuer, subject)
);
CREATE UNIQUE INDEX users_username ON users (username);

-- Local accounts' credentials (failed attempts are counted per name in sign_in_failures).
CREATE TABLE local_credentials (
    user_id TEXT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    password_hash TEXT NOT NULL,
    totp_secret_sealed TEXT,
    -- The time step (Unix seconds / 30) of the last TOTP code accepted: a code is good only once.
    totp_last_step BIGINT,
    updated_at BIGINT NOT NULL
);

-- Failed sign-in attempts per submitted name, whether or not the account exists, so the
-- backoff looks the same for both (no account enumeration).
CREATE TABLE sign_in_failures (
    name_hash TEXT PRIMARY KEY NOT NULL,
    failures BIGINT NOT NULL,
    last_failure_at BIGINT NOT NULL,
    locked_until BIGINT
);

-- Clients that registered dynamically (RFC 7591) or were identified by a metadata document.
CREATE TABLE oauth_clients (
    client_id TEXT PRIMARY KEY NOT NULL,
    kind TEXT NOT NULL,
    name TEXT,
    redirect_uris TEXT NOT NULL,
    token_endpoint_auth_method TEXT NOT NULL,
    secret_hash TEXT,
    registration_token_hash TEXT,
    metadata TEXT NOT NULL,
    registered_from TEXT,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX oauth_clients_unused ON oauth_clients (kind, last_used_at);

-- An authorization request between /oauth/authorize and the code, bound to one browser.
CREATE TABLE authorization_requests (
    id_hash TEXT PRIMARY KEY NOT NULL,
    browser_hash TEXT NOT NULL,
    client_id TEXT NOT NULL,
    params TEXT NOT NULL,
    user_id TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- The browser's sign-in (the cookie that makes people sign in once).
CREATE TABLE browser_sessions (
    id_hash TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    auth_time BIGINT NOT NULL,
    amr TEXT NOT NULL DEFAULT '[]',
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- Consent per (person, client): remembered once approved.
CREATE TABLE consents (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    granted_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, client_id)
);

-- A grant: one person's sign-in at one client. Refresh tokens belong to it; revoking it ends
-- every token issued under it.
CREATE TABLE grants (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    resource TEXT NOT NULL,
    auth_time BIGINT NOT NULL,
    amr TEXT NOT NULL DEFAULT '[]',
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL,
    revoked_at BIGINT,
    revoked_reason TEXT
);
CREATE INDEX grants_user ON grants (user_id);
CREATE INDEX grants_revoked ON grants (revoked_at);

CREATE TABLE authorization_codes (
    code_hash TEXT PRIMARY KEY NOT NULL,
    client_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    resource TEXT NOT NULL,
    scope TEXT NOT NULL,
    auth_time BIGINT NOT NULL,
    amr TEXT NOT NULL DEFAULT '[]',
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    grant_id TEXT
);

-- Refresh tokens, rotated on every use; `used_at` set means rotated (reuse revokes the grant).
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    grant_id TEXT NOT NULL REFERENCES grants (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX refresh_tokens_grant ON refresh_tokens (grant_id);

-- Access tokens revoked before their expiry (RFC 7009), by `jti`.
CREATE TABLE revoked_access_tokens (
    jti TEXT PRIMARY KEY NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT NOT NULL
);
CREATE INDEX revoked_access_tokens_at ON revoked_access_tokens (revoked_at);

-- Signing keys for access tokens; the newest unretired key signs, retired keys stay in the
-- JWKS until the tokens they signed have expired.
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY NOT NULL,
    alg TEXT NOT NULL,
    private_key_sealed TEXT NOT NULL,
    public_jwk TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    retired_at BIGINT
);

-- The one-time first-run link that creates the first administrator.
CREATE TABLE setup_links (
    token_hash TEXT PRIMARY KEY NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);

-- Which person opened a stateful MCP session (NULL in local mode).
ALTER TABLE sessions ADD COLUMN user_id TEXT;
