-- TOTP enrolment takes effect only when a code from the new seed confirms it: until then the
-- new seed waits here, sealed like the active one, and the active one (if any) stays in force.
ALTER TABLE local_credentials ADD COLUMN totp_pending_sealed TEXT;
