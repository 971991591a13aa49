-- Sign-in through OpenID Connect providers (the company's SSO).

-- A person's standing at their provider: its refresh token (sealed) and when Doorman last
-- checked them there, so deprovisioning at the provider reaches Doorman.
CREATE TABLE federated_identities (
    user_id TEXT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider TEXT NOT NULL,
    refresh_token_sealed TEXT,
    checked_at BIGINT NOT NULL
);

-- A trip to a provider, between Doorman's redirect and the provider's callback. The state and
-- nonce are kept hashed; the PKCE verifier and the waiting request's id sealed.
CREATE TABLE oidc_states (
    state_hash TEXT PRIMARY KEY NOT NULL,
    provider TEXT NOT NULL,
    browser_hash TEXT NOT NULL,
    request_sealed TEXT NOT NULL,
    nonce_hash TEXT NOT NULL,
    verifier_sealed TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- The authentication context class the provider reported, carried into grants and tokens.
ALTER TABLE browser_sessions ADD COLUMN acr TEXT;
ALTER TABLE authorization_codes ADD COLUMN acr TEXT;
ALTER TABLE grants ADD COLUMN acr TEXT;
