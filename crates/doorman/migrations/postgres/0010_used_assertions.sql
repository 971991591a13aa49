-- RFC 7523 §3 item 7: a client assertion's jti is accepted once while the assertion is valid,
-- on every node (the store decides, atomically).
CREATE TABLE used_assertions (
    client_id TEXT NOT NULL,
    jti TEXT NOT NULL,
    -- Until when the assertion would still be accepted (ms): the jti is remembered that long.
    until BIGINT NOT NULL,
    PRIMARY KEY (client_id, jti)
);
