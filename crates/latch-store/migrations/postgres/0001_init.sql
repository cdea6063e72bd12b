-- Latch store schema, version 1 (PostgreSQL). Same model as the SQLite schema (migrations 1 and
-- 2 there): every domain row keeps the whole struct as JSON text in `body` (text, not jsonb, so
-- audit bodies stay byte for byte what was hashed); the other columns copy the fields queries
-- filter or sort on. `version` is the compare-and-set counter.
-- Foreign keys are DEFERRABLE INITIALLY DEFERRED: checked at COMMIT, so the order of writes
-- inside one batch does not matter.

CREATE TABLE tasks (
    id          TEXT   PRIMARY KEY,
    owner_id    TEXT   NOT NULL,
    state       TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    version     BIGINT NOT NULL,
    body        TEXT   NOT NULL
);

CREATE INDEX tasks_owner_created ON tasks (owner_id, created_at DESC, id DESC);
CREATE INDEX tasks_state_expires ON tasks (state, expires_at);

CREATE TABLE requests (
    id          TEXT   PRIMARY KEY,
    task_id     TEXT   NOT NULL REFERENCES tasks (id) DEFERRABLE INITIALLY DEFERRED,
    state       TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    version     BIGINT NOT NULL,
    body        TEXT   NOT NULL
);

CREATE INDEX requests_task ON requests (task_id);
CREATE INDEX requests_state_created ON requests (state, created_at, id);
CREATE INDEX requests_state_expires ON requests (state, expires_at);

CREATE TABLE approvals (
    -- Insertion order.
    seq         BIGSERIAL PRIMARY KEY,
    id          TEXT   NOT NULL UNIQUE,
    request_id  TEXT   NOT NULL REFERENCES requests (id) DEFERRABLE INITIALLY DEFERRED,
    approver    TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    body        TEXT   NOT NULL
);

-- One approval per request and approver, ignoring case (human ids are ASCII).
CREATE UNIQUE INDEX approvals_request_approver ON approvals (request_id, lower(approver));

CREATE TABLE leases (
    id              TEXT   PRIMARY KEY,
    task_id         TEXT   NOT NULL REFERENCES tasks (id) DEFERRABLE INITIALLY DEFERRED,
    request_id      TEXT   NOT NULL,
    state           TEXT   NOT NULL,
    issued_at       BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    next_revoke_at  BIGINT,
    credential_hmac TEXT,
    version         BIGINT NOT NULL,
    body            TEXT   NOT NULL,
    -- Reaper claim (not part of the lease value): which replica works on the lease, until when
    -- (Unix seconds). Cleared by every update of the lease.
    claim_owner     TEXT,
    claim_until     BIGINT
);

CREATE INDEX leases_task ON leases (task_id, issued_at, id);
CREATE INDEX leases_state_id ON leases (state, id);
CREATE INDEX leases_state_expires ON leases (state, expires_at);
CREATE INDEX leases_state_issued ON leases (state, issued_at);
CREATE INDEX leases_state_next_revoke ON leases (state, next_revoke_at);
CREATE INDEX leases_credential_hmac ON leases (credential_hmac) WHERE credential_hmac IS NOT NULL;

-- The columns filters use are generated from the body, which the chain hash covers: they cannot
-- be edited on their own to hide an event from filtered views.
CREATE TABLE audit_events (
    seq             BIGINT PRIMARY KEY,
    body            TEXT   NOT NULL,
    prev_hash       TEXT   NOT NULL,
    hash            TEXT   NOT NULL,
    id              TEXT   GENERATED ALWAYS AS ((body::jsonb) ->> 'id') STORED UNIQUE,
    at_unix_secs    BIGINT GENERATED ALWAYS AS (((body::jsonb) ->> 'at_unix_secs')::bigint) STORED,
    kind            TEXT   GENERATED ALWAYS AS ((body::jsonb) ->> 'kind') STORED,
    actor           TEXT   GENERATED ALWAYS AS ((body::jsonb) ->> 'actor') STORED,
    task_id         TEXT   GENERATED ALWAYS AS ((body::jsonb) ->> 'task_id') STORED,
    lease_id        TEXT   GENERATED ALWAYS AS ((body::jsonb) ->> 'lease_id') STORED,
    credential_hmac TEXT   GENERATED ALWAYS AS ((body::jsonb) -> 'detail' ->> 'credential_hmac') STORED
);

CREATE INDEX audit_events_task ON audit_events (task_id, seq) WHERE task_id IS NOT NULL;
CREATE INDEX audit_events_lease ON audit_events (lease_id, seq) WHERE lease_id IS NOT NULL;
CREATE INDEX audit_events_hmac ON audit_events (credential_hmac) WHERE credential_hmac IS NOT NULL;

-- The chain head: exactly one row. Appending locks it (SELECT … FOR UPDATE) inside the batch's
-- transaction, which serialises appends across every connection and replica.
CREATE TABLE audit_head (
    one  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    seq  BIGINT  NOT NULL,
    hash TEXT    NOT NULL
);
-- 64 zeros: latch_core::audit::GENESIS_HASH.
INSERT INTO audit_head (one, seq, hash) VALUES (TRUE, 0, repeat('0', 64));

CREATE TABLE audit_checkpoints (
    seq          BIGINT PRIMARY KEY,
    hash         TEXT   NOT NULL,
    at_unix_secs BIGINT NOT NULL,
    kid          TEXT   NOT NULL,
    jws          TEXT   NOT NULL
);

CREATE TABLE audit_sink_cursors (
    name TEXT   PRIMARY KEY,
    seq  BIGINT NOT NULL
);

CREATE TABLE key_blobs (
    name  TEXT  PRIMARY KEY,
    blob  BYTEA NOT NULL
);
