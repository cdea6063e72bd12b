-- Slimmer audit rows (issue 19, storage per grant). The generated `id` column and its unique
-- index go: no query reads or looks an event up by id (records are addressed by `seq`, which
-- the chain covers; the id stays in the hashed body), ids are random 128-bit values the broker
-- generates, and column and index cost ≈ 100 bytes a record. New rows also stop repeating the
-- previous record's hash in `prev_hash` (left '' and derived when read; see
-- `sql::INSERT_AUDIT_EVENT`), which needs no schema change.
ALTER TABLE audit_events DROP COLUMN IF EXISTS id;
