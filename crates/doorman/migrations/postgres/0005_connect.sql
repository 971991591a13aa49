-- Layer 2, continued: which account a conversation uses, idle windows, the connect flow's
-- state, and revocations at resources still to be made.

-- The account chosen last (`doorman_use_account`, or connecting it) is the active one.
ALTER TABLE connections ADD COLUMN selected_at BIGINT NOT NULL DEFAULT 0;
-- Written at most every tenth of the idle window: stateless conversations' connections end
-- after an idle window without use.
ALTER TABLE connections ADD COLUMN last_used_at BIGINT NOT NULL DEFAULT 0;

-- A connect prompt: what a link `/connect/{resource}?prompt=…` asks, and for whom. The link
-- holds the random id; only its SHA-256 is stored.
CREATE TABLE connect_prompts (
    id_hash TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    resource TEXT NOT NULL,
    binding TEXT NOT NULL,
    binding_target TEXT,
    -- Space-separated scopes to ask for (more than the resource's after insufficient_scope).
    scopes TEXT NOT NULL,
    -- URL elicitation (2025-11-25): the id, and the session to notify on completion.
    elicitation_id TEXT,
    session_hash TEXT,
    -- The connection made, once the person came back from the resource.
    connection_id TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX connect_prompts_expiry ON connect_prompts (expires_at);

-- One trip to a resource's authorization endpoint: single-use `state` (its SHA-256 here), the
-- PKCE verifier sealed, ten minutes.
CREATE TABLE connect_states (
    state_hash TEXT PRIMARY KEY NOT NULL,
    prompt_hash TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    verifier_sealed TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX connect_states_expiry ON connect_states (expires_at);

-- RFC 7009 revocations that failed: retried in the background, the token sealed meanwhile.
CREATE TABLE pending_revocations (
    id TEXT PRIMARY KEY NOT NULL,
    resource TEXT NOT NULL,
    token_sealed TEXT NOT NULL,
    token_kind TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
