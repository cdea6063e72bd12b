-- Approval-console sessions (issue 15). A row is keyed by a keyed HMAC of the session id the
-- browser holds; the id itself is never stored, so reading the database does not yield a session.
-- The body is the JSON `ConsoleSession` (the human, their groups, how they signed in, expiry).
CREATE TABLE console_sessions (
    id_hmac    TEXT    PRIMARY KEY NOT NULL,
    human_id   TEXT    NOT NULL,
    expires_at BIGINT NOT NULL,
    body       TEXT    NOT NULL
);
CREATE INDEX console_sessions_expires_at ON console_sessions (expires_at);
