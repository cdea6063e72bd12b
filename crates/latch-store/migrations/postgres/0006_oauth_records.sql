-- The OAuth 2.1 authorization server for MCP clients (issue 16): registered clients (RFC 7591),
-- grants (a human's consent to a client for one resource), and the codes, access and refresh
-- tokens of each grant. Codes and tokens are stored only under a keyed HMAC of their value
-- (key `token:<hmac>`), so reading the database does not yield a usable token. The body is the
-- JSON `OAuthRecord`; updates are compare-and-set on `version`.
CREATE TABLE oauth_records (
    key        TEXT    PRIMARY KEY NOT NULL,
    kind       TEXT    NOT NULL,
    grant_id   TEXT    NOT NULL,
    human_id   TEXT    NOT NULL,
    expires_at BIGINT NOT NULL,
    version    BIGINT NOT NULL,
    body       TEXT    NOT NULL
);
CREATE INDEX oauth_records_grant ON oauth_records (grant_id);
CREATE INDEX oauth_records_expires_at ON oauth_records (expires_at);
