-- RFC 9470 step-ups Doorman asked a client for: the client's next authorization for this
-- person forces a fresh sign-in even when it does not carry max_age.
CREATE TABLE step_ups (
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    client_id TEXT NOT NULL,
    -- The sign-in must be at most this old (seconds).
    max_age BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, client_id)
);
