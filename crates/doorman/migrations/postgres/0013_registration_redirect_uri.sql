-- The redirect URI a registration at an upstream's authorization server was made with. Each
-- discovered resource has its own redirect URI now (RFC 9700 §4.4.2); a registration made with
-- another one (NULL: the shared /connect/callback of earlier versions) is made again.
ALTER TABLE resource_registrations ADD COLUMN redirect_uri TEXT;
