-- The audit trail's filter columns, computed when read instead of stored (issue 19, storage per
-- grant). Since 0001 they were STORED generated columns: six copies of body fields, ≈ 215 bytes
-- a record, which PostgreSQL 15 cannot make virtual. Now the records live in `audit_log`
-- (seq, body, prev_hash, hash) and `audit_events` is a view that adds the same columns,
-- computed from the hashed body on every read, so they still cannot be changed on their own
-- (an UPDATE of one is refused: it is not a column of the table). The three filters that need
-- an index get one on the very expression the view computes, keyed by the value alone (no
-- `seq`), so that B-tree deduplication stores a task's or a lease's entries once, as a
-- posting list. Building them holds the table's lock: ≈ 20 s per million records on a 2-core
-- machine, while appends wait.
--
-- Rolling upgrades: replicas still on a binary from before 0009 keep working on this schema.
-- They read `audit_events.prev_hash`, which the view derives as 0009's binaries do (the stored
-- value, else the hash of `seq - 1`, else the genesis hash for `seq` 1), so their exports and
-- sinks still verify; and they insert `(seq, body, prev_hash, hash)` into `audit_events`, which
-- the trigger below turns into a row of `audit_log` without the repeated `prev_hash`.
ALTER TABLE audit_events RENAME TO audit_log;
DROP INDEX audit_events_task;
DROP INDEX audit_events_lease;
DROP INDEX audit_events_hmac;
ALTER TABLE audit_log
    DROP COLUMN at_unix_secs,
    DROP COLUMN kind,
    DROP COLUMN actor,
    DROP COLUMN task_id,
    DROP COLUMN lease_id,
    DROP COLUMN credential_hmac;
-- Not partial: ANALYZE keeps statistics on the expressions of whole indexes only, and without
-- them the planner guesses that any task matches 0.5 % of the log and walks the whole log in
-- `seq` order instead (seconds on a million records). The NULL entries deduplicate too.
CREATE INDEX audit_log_task ON audit_log (((body::jsonb) ->> 'task_id'));
CREATE INDEX audit_log_lease ON audit_log (((body::jsonb) ->> 'lease_id'));
CREATE INDEX audit_log_hmac ON audit_log (((body::jsonb) -> 'detail' ->> 'credential_hmac'));
CREATE VIEW audit_events AS SELECT
    l.seq,
    l.body,
    COALESCE(NULLIF(l.prev_hash, ''),
             (SELECT p.hash FROM audit_log p WHERE p.seq = l.seq - 1),
             CASE WHEN l.seq = 1 THEN repeat('0', 64) ELSE '' END) AS prev_hash,
    l.hash,
    (((l.body::jsonb) ->> 'at_unix_secs')::bigint) AS at_unix_secs,
    ((l.body::jsonb) ->> 'kind') AS kind,
    ((l.body::jsonb) ->> 'actor') AS actor,
    ((l.body::jsonb) ->> 'task_id') AS task_id,
    ((l.body::jsonb) ->> 'lease_id') AS lease_id,
    ((l.body::jsonb) -> 'detail' ->> 'credential_hmac') AS credential_hmac
FROM audit_log l;
CREATE FUNCTION audit_events_insert() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO audit_log (seq, body, prev_hash, hash) VALUES (NEW.seq, NEW.body, '', NEW.hash);
    RETURN NEW;
END
$fn$;
CREATE TRIGGER audit_events_insert INSTEAD OF INSERT ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_insert();
-- Statistics for the new index expressions now, not at autovacuum's next pass: a log upgraded
-- with a million records would otherwise be read in `seq` order until then.
ANALYZE audit_log;
