-- The re-authorization cascade (prompt = "reauthorize"): a connect prompt may wait on a client's
-- next authorization. It names the client and the grant whose requests asked for it; a person
-- who refuses at the resource is recorded, so the client's authorization ends in access_denied.
ALTER TABLE connect_prompts ADD COLUMN cascade_client TEXT;
ALTER TABLE connect_prompts ADD COLUMN cascade_grant TEXT;
ALTER TABLE connect_prompts ADD COLUMN declined_at INTEGER;
CREATE INDEX connect_prompts_cascade ON connect_prompts (user_id, cascade_client);
CREATE INDEX connect_prompts_cascade_grant ON connect_prompts (cascade_grant);
-- A trip to a resource made inside a client's authorization: the authorization request to
-- return to (sealed, bound to the state).
ALTER TABLE connect_states ADD COLUMN resume_sealed TEXT;
-- A code issued at the end of a cascade continues the grant that asked, so the client's
-- conversation (and the connections bound to it) survive its re-authorization.
ALTER TABLE authorization_codes ADD COLUMN continues_grant TEXT;
