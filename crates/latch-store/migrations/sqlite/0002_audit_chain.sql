-- Tamper-evident audit. Every record carries the hash of the previous one and its own
-- (latch_core::audit::chain_hash over seq and body). The columns used for filtering are
-- generated from the body, which the hash covers, so they cannot be changed on their own to hide
-- an event from filtered views. Rows written before this migration are chained by the store when
-- it opens (SQLite has no SHA-256 function). Signed checkpoints and sink cursors get tables.
CREATE TABLE audit_events_chained (
    seq             INTEGER PRIMARY KEY NOT NULL,
    body            TEXT    NOT NULL,
    prev_hash       TEXT    NOT NULL DEFAULT '',
    hash            TEXT    NOT NULL DEFAULT '',
    id              TEXT    GENERATED ALWAYS AS (json_extract(body, '$.id')) VIRTUAL,
    at_unix_secs    INTEGER GENERATED ALWAYS AS (json_extract(body, '$.at_unix_secs')) VIRTUAL,
    kind            TEXT    GENERATED ALWAYS AS (json_extract(body, '$.kind')) VIRTUAL,
    actor           TEXT    GENERATED ALWAYS AS (json_extract(body, '$.actor')) VIRTUAL,
    task_id         TEXT    GENERATED ALWAYS AS (json_extract(body, '$.task_id')) VIRTUAL,
    lease_id        TEXT    GENERATED ALWAYS AS (json_extract(body, '$.lease_id')) VIRTUAL,
    credential_hmac TEXT    GENERATED ALWAYS AS (json_extract(body, '$.detail.credential_hmac')) VIRTUAL
) STRICT;

INSERT INTO audit_events_chained (seq, body) SELECT seq, body FROM audit_events ORDER BY seq;
DROP TABLE audit_events;
ALTER TABLE audit_events_chained RENAME TO audit_events;

CREATE UNIQUE INDEX audit_events_id ON audit_events (id);
CREATE INDEX audit_events_task ON audit_events (task_id, seq) WHERE task_id IS NOT NULL;
CREATE INDEX audit_events_lease ON audit_events (lease_id, seq) WHERE lease_id IS NOT NULL;
CREATE INDEX audit_events_hmac ON audit_events (credential_hmac) WHERE credential_hmac IS NOT NULL;

CREATE TABLE audit_checkpoints (
    seq          INTEGER PRIMARY KEY NOT NULL,
    hash         TEXT    NOT NULL,
    at_unix_secs INTEGER NOT NULL,
    kid          TEXT    NOT NULL,
    jws          TEXT    NOT NULL
) STRICT;

CREATE TABLE audit_sink_cursors (
    name TEXT    PRIMARY KEY NOT NULL,
    seq  INTEGER NOT NULL
) STRICT;
