-- Tamper-evident audit: every record carries the hash of the previous one and its own
-- (latch_core::audit::chain_hash), the actor gets a column for filtering, and signed
-- checkpoints and sink cursors get tables. Rows written before this migration are chained by
-- the store when it opens (SQLite has no SHA-256 function).
ALTER TABLE audit_events ADD COLUMN actor TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_events ADD COLUMN prev_hash TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_events ADD COLUMN hash TEXT NOT NULL DEFAULT '';
UPDATE audit_events SET actor = coalesce(json_extract(body, '$.actor'), '');

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
