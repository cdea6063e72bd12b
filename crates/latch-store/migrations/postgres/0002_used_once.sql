-- One-time values shared by every replica (DPoP proof `jti`s, RFC 9449 §11.1): a value is
-- accepted once until it expires, whichever replica sees it. `key` is a digest, never a secret.
CREATE TABLE used_once (
    key        TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX used_once_expires_at ON used_once (expires_at);
