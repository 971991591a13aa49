-- The person's last ID token from their provider, sealed (associated data
-- `federated-id-token:{user_id}`), with its expiry: the subject token of the RFC 8693 exchange
-- that gets an ID-JAG for a resource trusting the same IdP (`[resources.id_jag]`).
ALTER TABLE federated_identities ADD COLUMN id_token_sealed TEXT;
ALTER TABLE federated_identities ADD COLUMN id_token_expires_at BIGINT;

-- One refresh at the provider per person at a time, across nodes: the provider rotates refresh
-- tokens, and a rotated one presented twice may end the person's grant there (RFC 9700 §4.14.2).
CREATE TABLE federated_refresh_leases (
    user_id TEXT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
