-- Shared Signals (issue 18): the Security Event Tokens Latch received from a configured
-- transmitter, one row per (issuer, `jti`), inserted in the commit of what the SET caused. A
-- replay (any replica, after a restart) conflicts on `key` and is refused. A row expires when
-- the SET's `iat` would be too old to be accepted anyway. `body` is the JSON
-- `ReceivedSetRecord` (transmitter, issuer, `jti`, times; no secret).
CREATE TABLE ssf_received_sets (
    key        TEXT   PRIMARY KEY NOT NULL,
    issuer     TEXT   NOT NULL,
    expires_at BIGINT NOT NULL,
    body       TEXT   NOT NULL
);
CREATE INDEX ssf_received_sets_expires_at ON ssf_received_sets (expires_at);
