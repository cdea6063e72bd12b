-- The notification outbox (issue 15): one row per message to one channel, written in the same
-- transaction as the step-up decision it tells of, delivered by a background job. `id` is the
-- idempotency key receivers deduplicate on. The claim columns are used where replicas share the
-- store (PostgreSQL); here they only mirror its shape.
CREATE TABLE notifications (
    id              TEXT    PRIMARY KEY NOT NULL,
    request_id      TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    version         INTEGER NOT NULL,
    body            TEXT    NOT NULL,
    claim_owner     TEXT,
    claim_until     INTEGER
) STRICT;

CREATE INDEX notifications_request ON notifications (request_id, id);
CREATE INDEX notifications_due ON notifications (state, next_attempt_at);
