-- Latch store schema, version 1 (SQLite).
--
-- Every domain row keeps the whole struct as JSON in `body`; the other columns are copies of the
-- fields the queries filter or sort on, rewritten on every update. `version` is the
-- optimistic-concurrency counter used by compare-and-set updates.
-- Foreign keys are DEFERRABLE INITIALLY DEFERRED: they are checked at COMMIT, so the order of
-- writes inside one batch does not matter.

CREATE TABLE tasks (
    id          TEXT    PRIMARY KEY NOT NULL,
    owner_id    TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    version     INTEGER NOT NULL,
    body        TEXT    NOT NULL
) STRICT;

CREATE INDEX tasks_owner_created ON tasks (owner_id, created_at DESC, id DESC);
CREATE INDEX tasks_state_expires ON tasks (state, expires_at);

CREATE TABLE requests (
    id          TEXT    PRIMARY KEY NOT NULL,
    task_id     TEXT    NOT NULL REFERENCES tasks (id) DEFERRABLE INITIALLY DEFERRED,
    state       TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    version     INTEGER NOT NULL,
    body        TEXT    NOT NULL
) STRICT;

CREATE INDEX requests_task ON requests (task_id);
CREATE INDEX requests_state_created ON requests (state, created_at, id);
CREATE INDEX requests_state_expires ON requests (state, expires_at);

CREATE TABLE approvals (
    -- Insertion order.
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT    NOT NULL UNIQUE,
    request_id  TEXT    NOT NULL REFERENCES requests (id) DEFERRABLE INITIALLY DEFERRED,
    approver    TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    body        TEXT    NOT NULL,
    UNIQUE (request_id, approver COLLATE NOCASE)
) STRICT;

CREATE TABLE leases (
    id              TEXT    PRIMARY KEY NOT NULL,
    task_id         TEXT    NOT NULL REFERENCES tasks (id) DEFERRABLE INITIALLY DEFERRED,
    request_id      TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    issued_at       INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    next_revoke_at  INTEGER,
    credential_hmac TEXT,
    version         INTEGER NOT NULL,
    body            TEXT    NOT NULL
) STRICT;

CREATE INDEX leases_task ON leases (task_id, issued_at, id);
CREATE INDEX leases_state_id ON leases (state, id);
CREATE INDEX leases_state_expires ON leases (state, expires_at);
CREATE INDEX leases_state_issued ON leases (state, issued_at);
CREATE INDEX leases_state_next_revoke ON leases (state, next_revoke_at);
CREATE INDEX leases_credential_hmac ON leases (credential_hmac) WHERE credential_hmac IS NOT NULL;

CREATE TABLE audit_events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT    NOT NULL UNIQUE,
    at_unix_secs INTEGER NOT NULL,
    kind         TEXT    NOT NULL,
    task_id      TEXT,
    lease_id     TEXT,
    body         TEXT    NOT NULL
) STRICT;

CREATE INDEX audit_events_task ON audit_events (task_id, seq) WHERE task_id IS NOT NULL;
CREATE INDEX audit_events_lease ON audit_events (lease_id, seq) WHERE lease_id IS NOT NULL;

CREATE TABLE key_blobs (
    name  TEXT PRIMARY KEY NOT NULL,
    blob  BLOB NOT NULL
) STRICT;
