-- The person's last ID token from their provider, sealed (associated data
-- `federated-id-token:{user_id}`), with its expiry: the subject token of the RFC 8693 exchange
-- that gets an ID-JAG for a resource trusting the same IdP (`[resources.id_jag]`).
ALTER TABLE federated_identities ADD COLUMN id_token_sealed TEXT;
ALTER TABLE federated_identities ADD COLUMN id_token_expires_at BIGINT;
