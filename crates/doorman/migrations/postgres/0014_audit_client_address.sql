-- The client's address (behind a load balancer, the one it forwarded: server.trusted_proxies).
ALTER TABLE audit_events ADD COLUMN client_address TEXT;
