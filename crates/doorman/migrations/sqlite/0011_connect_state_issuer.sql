-- RFC 9207: the issuer a connect flow was sent to, checked against the `iss` of the answer
-- (a mix-up defence when several authorization servers share one redirect URI).
ALTER TABLE connect_states ADD COLUMN issuer TEXT;
