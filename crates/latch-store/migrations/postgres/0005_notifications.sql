-- The notification outbox (issue 15): one row per message to one channel, written in the same
-- transaction as the step-up decision it tells of, delivered by a background job. `id` is the
-- idempotency key receivers deduplicate on. A replica claims due rows (`claim_owner`,
-- `claim_until`, taken with FOR UPDATE SKIP LOCKED); every update of a row clears its claim.
CREATE TABLE notifications (
    id              TEXT   PRIMARY KEY,
    request_id      TEXT   NOT NULL,
    state           TEXT   NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    version         BIGINT NOT NULL,
    body            TEXT   NOT NULL,
    claim_owner     TEXT,
    claim_until     BIGINT
);

CREATE INDEX notifications_request ON notifications (request_id, id);
CREATE INDEX notifications_due ON notifications (state, next_attempt_at);
