-- Slimmer audit rows (issue 19, storage per grant). The unique index on the event id goes: no
-- query looks an event up by id (records are addressed by `seq`, which the chain covers), ids
-- are random 128-bit values the broker generates, and the index cost ≈ 50 bytes a record.
-- New rows also stop repeating the previous record's hash in `prev_hash` (left '' and derived
-- when read; see `sql::INSERT_AUDIT_EVENT`), which needs no schema change.
DROP INDEX IF EXISTS audit_events_id;
