-- Dynamic registrations counted per client address and hour, incremented atomically before a
-- registration is made, so concurrent requests cannot all pass the limit.
CREATE TABLE registration_quota (
    address TEXT NOT NULL,
    -- Milliseconds since the epoch divided by one hour.
    hour BIGINT NOT NULL,
    used BIGINT NOT NULL,
    PRIMARY KEY (address, hour)
);
