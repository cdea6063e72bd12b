//! The query text both backends share, and the dialect seam for what differs.
//!
//! Every statement here uses numbered `$n` placeholders, which PostgreSQL and sqlx's SQLite
//! driver both accept (the SQLite group writer, on `rusqlite`, turns them into `?n` with
//! [`numbered_for_sqlite`]). Where the two SQL dialects really differ — row locks, upserts,
//! case-sensitive `LIKE`, the audit chain head, reaper claims — each backend supplies its own
//! text or step through [`Dialect`], in the manner of SPIRE's `dialect.go`.

use std::borrow::Cow;

use async_trait::async_trait;
use latch_core::ports::{StoreError, Write, WriteBatch};
use sqlx::{Database, Transaction};

use crate::store::SqlStore;

/// What one SQL backend does its own way. Implemented for [`sqlx::Sqlite`] and
/// [`sqlx::Postgres`]; [`SqlStore`] does the rest the same way for both.
#[async_trait]
pub trait Dialect: Database {
    /// Names the backend in error messages (`"sqlite"`, `"postgres"`).
    const LABEL: &'static str;
    /// Checks a task is still open at a version (`$1` id, `$2` version): one row or none,
    /// locked against a concurrent end where the backend locks rows.
    const REQUIRE_TASK_OPEN: &'static str;
    /// Compare-and-set update of a lease, parameters as [`UPDATE_LEASE`] (a backend with
    /// reaper claims also releases the claim).
    const UPDATE_LEASE: &'static str;
    /// The audit `kind` prefix filter: `$3` the prefix or NULL, `$4` the escaped `LIKE` pattern.
    const AUDIT_KIND_FILTER: &'static str;
    /// `(seq, hash)` of the newest audit event, no row when there is none.
    const AUDIT_HEAD: &'static str;
    /// [`COUNTER_VALUE`] under a share lock where the backend locks rows.
    const COUNTER_VALUE_LOCKED: &'static str;
    /// Moves a sink cursor forward only (`$1` name, `$2` seq).
    const UPSERT_SINK_CURSOR: &'static str;
    /// Stores the previous hash with the audit record `$1` (`$2`), in the table that holds the
    /// records: the first record kept by audit retention derives it from no neighbour.
    const AUDIT_SET_PREV_HASH: &'static str;
    /// Deletes the audit records before seq `$1`, in the table that holds them.
    const AUDIT_DELETE_BEFORE: &'static str;
    /// Whether leases carry reaper claims ([`CLAIM_DUE_LEASES`]); without them every caller
    /// gets the due leases unclaimed (one process).
    const CLAIMS: bool;
    /// One row of eight counts, in [`latch_core::ports::Census`]'s field order:
    /// [`census_common`] and the revocations and notifications that failed at least once
    /// (`revoke_attempts` / `attempts` of the JSON body above 0).
    const CENSUS: &'static str;

    /// The backend's own connection state beside the pools.
    type Extra: Clone + Send + Sync + 'static;

    /// How many rows a statement changed.
    fn rows_affected(done: &Self::QueryResult) -> u64;

    /// A sqlx error in words (see [`crate::codec::describe`]).
    fn describe(e: &sqlx::Error) -> String {
        crate::codec::describe(e)
    }

    /// Starts a write transaction outside [`Store::apply`](latch_core::ports::Store::apply).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn begin_write(store: &SqlStore<Self>) -> Result<Transaction<'static, Self>, StoreError>;

    /// Applies one batch atomically; returns the seqs of its audit events.
    ///
    /// # Errors
    /// As [`Store::apply`](latch_core::ports::Store::apply).
    async fn apply(store: &SqlStore<Self>, batch: WriteBatch) -> Result<Vec<i64>, StoreError>;

    /// Reads (and, where rows lock, locks) the audit chain head in `tx`: `(seq, hash)`,
    /// `(0, GENESIS_HASH)` for an empty log.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] or a conflict.
    async fn lock_chain_head(
        tx: &mut Transaction<'static, Self>,
    ) -> Result<(i64, String), StoreError>;

    /// Runs after the writes of a batch, before its audit events (PostgreSQL: notifies
    /// listeners of changed rows, delivered at commit).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn after_writes(
        _tx: &mut Transaction<'static, Self>,
        _writes: &[Write],
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// The active freezes from a read shared with concurrent callers (`combine.rs`), or `None`
    /// where the backend reads them per call.
    async fn combined_active_freezes(
        _store: &SqlStore<Self>,
    ) -> Option<Result<Vec<latch_core::freeze::Freeze>, StoreError>> {
        None
    }

    /// The active freezes from a read this backend already made that may be slightly older
    /// than the call ([`Store::recent_active_freezes`]), or `None` for a fresh read.
    ///
    /// [`Store::recent_active_freezes`]: latch_core::ports::Store::recent_active_freezes
    fn recent_active_freezes(_store: &SqlStore<Self>) -> Option<Vec<latch_core::freeze::Freeze>> {
        None
    }

    /// The active freezes from a read this backend already made that is ordered after the
    /// commit that appended audit `seq` ([`Store::active_freezes_after`]), or `None` for a
    /// fresh read.
    ///
    /// [`Store::active_freezes_after`]: latch_core::ports::Store::active_freezes_after
    fn active_freezes_after(
        _store: &SqlStore<Self>,
        _seq: i64,
    ) -> Option<Vec<latch_core::freeze::Freeze>> {
        None
    }

    /// The counters of `scope` and `subject` from a read shared with concurrent callers, or
    /// `None` where the backend reads them per call.
    async fn combined_counters(
        _store: &SqlStore<Self>,
        _scope: latch_core::history::CounterScope,
        _subject: &str,
    ) -> Option<Result<Vec<latch_core::history::CounterRow>, StoreError>> {
        None
    }

    /// Runs after a batch's audit events were appended, with the new head.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn after_appends(
        _tx: &mut Transaction<'static, Self>,
        _seq: i64,
        _hash: &str,
    ) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Maps a sqlx error onto [`StoreError::Unavailable`], prefixed with the backend's label.
pub(crate) fn unavailable<DB: Dialect>(what: &str, e: &sqlx::Error) -> StoreError {
    StoreError::Unavailable(format!("{}: {what}: {}", DB::LABEL, DB::describe(e)))
}

/// How a [`StoreError::Conflict`] from a serialisation failure or a deadlock ends: nothing was
/// written, and the same batch may succeed if applied again.
pub(crate) const TRY_AGAIN: &str = "concurrent update, try again";

/// Maps an error from a write: unique and foreign-key violations, serialisation failures and
/// deadlocks (PostgreSQL's `40001`/`40P01`: nothing was written, another writer won) are
/// conflicts.
pub(crate) fn write_error<DB: Dialect>(what: &str, e: &sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = e {
        if db.is_unique_violation() {
            return StoreError::Conflict(format!("{what}: already exists"));
        }
        if db.is_foreign_key_violation() {
            return StoreError::Conflict(format!("{what}: refers to a row that does not exist"));
        }
        if matches!(db.code().as_deref(), Some("40001" | "40P01")) {
            return StoreError::Conflict(format!("{what}: {TRY_AGAIN}"));
        }
    }
    unavailable::<DB>(what, e)
}

/// `$n` placeholders as SQLite's `?n` (for `rusqlite`, which binds by position: a `$n` would
/// be numbered by first appearance instead).
pub(crate) fn numbered_for_sqlite(sql: &'static str) -> Cow<'static, str> {
    if sql.contains('$') {
        Cow::Owned(sql.replace('$', "?"))
    } else {
        Cow::Borrowed(sql)
    }
}

// ------------------------------------------------------------------ writes

/// `$1` id, `$2` owner, `$3` state, `$4` created, `$5` expires, `$6` version, `$7` body.
pub(crate) const INSERT_TASK: &str = "INSERT INTO tasks \
     (id, owner_id, state, created_at, expires_at, version, body) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";
/// As [`INSERT_TASK`], `$8` the version replaced.
pub(crate) const UPDATE_TASK: &str = "UPDATE tasks SET owner_id = $2, state = $3, \
     created_at = $4, expires_at = $5, version = $6, body = $7 WHERE id = $1 AND version = $8";
/// `$1` id, `$2` task, `$3` state, `$4` created, `$5` expires, `$6` version, `$7` body.
pub(crate) const INSERT_REQUEST: &str = "INSERT INTO requests \
     (id, task_id, state, created_at, expires_at, version, body) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";
/// As [`INSERT_REQUEST`], `$8` the version replaced.
pub(crate) const UPDATE_REQUEST: &str = "UPDATE requests SET task_id = $2, state = $3, \
     created_at = $4, expires_at = $5, version = $6, body = $7 WHERE id = $1 AND version = $8";
/// `$1` id, `$2` request, `$3` approver, `$4` created, `$5` body.
pub(crate) const INSERT_APPROVAL: &str = "INSERT INTO approvals \
     (id, request_id, approver, created_at, body) VALUES ($1, $2, $3, $4, $5)";
/// `$1` id, `$2` task, `$3` request, `$4` state, `$5` issued, `$6` expires, `$7` next revoke
/// attempt, `$8` credential HMAC, `$9` version, `$10` body.
pub(crate) const INSERT_LEASE: &str = "INSERT INTO leases (id, task_id, request_id, state, \
     issued_at, expires_at, next_revoke_at, credential_hmac, version, body) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
/// As [`INSERT_LEASE`], `$11` the version replaced.
pub(crate) const UPDATE_LEASE: &str = "UPDATE leases SET task_id = $2, request_id = $3, \
     state = $4, issued_at = $5, expires_at = $6, next_revoke_at = $7, credential_hmac = $8, \
     version = $9, body = $10 WHERE id = $1 AND version = $11";
/// `$1` id, `$2` request, `$3` state, `$4` next attempt, `$5` version, `$6` body.
pub(crate) const INSERT_NOTIFICATION: &str = "INSERT INTO notifications \
     (id, request_id, state, next_attempt_at, version, body) VALUES ($1, $2, $3, $4, $5, $6)";
/// As [`INSERT_NOTIFICATION`], `$7` the version replaced; releases the row's claim.
pub(crate) const UPDATE_NOTIFICATION: &str = "UPDATE notifications SET request_id = $2, \
     state = $3, next_attempt_at = $4, version = $5, body = $6, claim_owner = NULL, \
     claim_until = NULL WHERE id = $1 AND version = $7";
/// `$1` seq, `$2` body, `$3` hash. The previous record's hash is not stored again (it is that
/// record's `hash`, and the chain hash covers it): `prev_hash` stays `''`, 65 bytes a record
/// saved, and reads derive it with [`PREV_HASH`]. Rows written before keep theirs.
pub(crate) const INSERT_AUDIT_EVENT: &str =
    "INSERT INTO audit_events (seq, body, prev_hash, hash) VALUES ($1, $2, '', $3)";
/// The chain's previous hash of the `audit_events` row in scope: the one stored with it (rows
/// written before [`INSERT_AUDIT_EVENT`] stopped storing it), else the hash of the row one
/// `seq` below, else the genesis hash for `seq` 1. A missing predecessor gives `''`, which
/// `latch audit verify` reports (the record does not chain).
macro_rules! prev_hash {
    () => {
        "COALESCE(NULLIF(audit_events.prev_hash, ''), \
         (SELECT p.hash FROM audit_events p WHERE p.seq = audit_events.seq - 1), \
         CASE WHEN audit_events.seq = 1 THEN \
         '0000000000000000000000000000000000000000000000000000000000000000' ELSE '' END)"
    };
}
/// [`prev_hash!`] as a constant, for tests and documentation.
#[cfg(test)]
pub(crate) const PREV_HASH: &str = prev_hash!();
/// The newest audit event as the chain head (no row for an empty log).
pub(crate) const AUDIT_TAIL: &str = "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1";
/// `$1` seq, `$2` hash, `$3` time, `$4` key id, `$5` JWS; an existing seq is kept.
pub(crate) const INSERT_CHECKPOINT: &str = "INSERT INTO audit_checkpoints \
     (seq, hash, at_unix_secs, kid, jws) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (seq) DO NOTHING";
/// `$1` name, `$2` blob; an existing name is kept.
pub(crate) const INSERT_KEY_BLOB: &str =
    "INSERT INTO key_blobs (name, blob) VALUES ($1, $2) ON CONFLICT DO NOTHING";

/// `$1` session id HMAC, `$2` human, `$3` expires, `$4` body.
pub(crate) const INSERT_CONSOLE_SESSION: &str = "INSERT INTO console_sessions \
     (id_hmac, human_id, expires_at, body) VALUES ($1, $2, $3, $4)";
/// `$1` session id HMAC.
pub(crate) const DELETE_CONSOLE_SESSION: &str = "DELETE FROM console_sessions WHERE id_hmac = $1";
/// `$1` now: sessions that expired before it.
pub(crate) const PURGE_CONSOLE_SESSIONS: &str =
    "DELETE FROM console_sessions WHERE expires_at < $1";

/// `$1` key, `$2` kind, `$3` grant, `$4` human, `$5` expires, `$6` version, `$7` body.
pub(crate) const INSERT_OAUTH: &str = "INSERT INTO oauth_records \
     (key, kind, grant_id, human_id, expires_at, version, body) VALUES ($1, $2, $3, $4, $5, $6, $7)";
/// As [`INSERT_OAUTH`], `$8` the version replaced.
pub(crate) const UPDATE_OAUTH: &str = "UPDATE oauth_records SET kind = $2, grant_id = $3, \
     human_id = $4, expires_at = $5, version = $6, body = $7 WHERE key = $1 AND version = $8";

/// `$1` key, `$2` issuer, `$3` expires, `$4` body.
pub(crate) const INSERT_RECEIVED_SET: &str = "INSERT INTO ssf_received_sets \
     (key, issuer, expires_at, body) VALUES ($1, $2, $3, $4)";
/// `$1` now: records that expired before it.
pub(crate) const PURGE_RECEIVED_SETS: &str = "DELETE FROM ssf_received_sets WHERE expires_at < $1";

// ------------------------------------------------------------------ reads
/// Adds to one counter: `$1` scope, `$2` subject, `$3` name, `$4` window start, `$5` amount,
/// `$6` cap or NULL, `$7` now. Same window: added; newer window: replaced. Changes no row (the
/// caller's cue for [`StoreError::LimitReached`]) when the cap would pass.
pub(crate) const UPSERT_COUNTER: &str = "INSERT INTO counters \
    (scope, subject, name, window_start, count, cap, updated_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7) \
    ON CONFLICT (scope, subject, name) DO UPDATE SET \
    count = CASE WHEN counters.window_start = excluded.window_start \
    THEN counters.count + excluded.count ELSE excluded.count END, \
    window_start = excluded.window_start, cap = excluded.cap, updated_at = excluded.updated_at \
    WHERE excluded.cap IS NULL OR counters.window_start <> excluded.window_start \
    OR counters.count + excluded.count <= excluded.cap";
/// Takes the row lock of a scope's `live` counter (`$1` scope, `$2` subject, `$3` now): two
/// transactions counting the same scope's live leases run one after the other.
pub(crate) const LOCK_LIVE_COUNTER: &str = "INSERT INTO counters \
    (scope, subject, name, window_start, count, cap, updated_at) \
    VALUES ($1, $2, 'live', 0, 0, NULL, $3) \
    ON CONFLICT (scope, subject, name) DO UPDATE SET updated_at = excluded.updated_at";
/// Live leases of a task (`$1` task id, `$2` now).
pub(crate) const LIVE_LEASES_OF_TASK: &str = "SELECT COUNT(*) FROM leases \
    WHERE task_id = $1 AND state IN ('issuing', 'active') AND expires_at > $2";
/// Live leases of a workload's open tasks (`$1` workload id, `$2` now).
pub(crate) const LIVE_LEASES_OF_WORKLOAD: &str = "SELECT COUNT(*) FROM leases \
    WHERE task_id IN (SELECT id FROM tasks WHERE owner_id = $1 AND state = 'open') \
    AND state IN ('issuing', 'active') AND expires_at > $2";
/// One counter's count (`$1` scope, `$2` subject, `$3` name), no row when absent.
pub(crate) const COUNTER_VALUE: &str =
    "SELECT count FROM counters WHERE scope = $1 AND subject = $2 AND name = $3";
/// The counters of a scope and subject (`$1`, `$2`), by name.
pub(crate) const COUNTERS: &str = "SELECT name, window_start, count FROM counters \
    WHERE scope = $1 AND subject = $2 ORDER BY name";
pub(crate) const OAUTH_RECORD: &str = "SELECT body FROM oauth_records WHERE key = $1";
pub(crate) const CONSOLE_SESSION: &str = "SELECT body FROM console_sessions WHERE id_hmac = $1";

pub(crate) const TASK: &str = "SELECT body FROM tasks WHERE id = $1";
pub(crate) const TASKS_BY_OWNER: &str = "SELECT body FROM tasks WHERE owner_id = $1 \
     ORDER BY created_at DESC, id DESC LIMIT $2";
pub(crate) const EXPIRED_OPEN_TASKS: &str = "SELECT body FROM tasks WHERE state = 'open' \
     AND expires_at <= $1 ORDER BY expires_at, id LIMIT $2";
pub(crate) const REQUEST: &str = "SELECT body FROM requests WHERE id = $1";
pub(crate) const PENDING_REQUESTS: &str = "SELECT body FROM requests WHERE state = 'pending' \
     ORDER BY created_at, id LIMIT $1";
pub(crate) const EXPIRED_REQUESTS: &str = "SELECT body FROM requests \
     WHERE state IN ('pending', 'approved') AND expires_at <= $1 ORDER BY expires_at, id LIMIT $2";
pub(crate) const OPEN_REQUESTS_BY_TASK: &str = "SELECT body FROM requests \
     WHERE task_id = $1 AND state IN ('pending', 'approved') ORDER BY created_at, id";
pub(crate) const APPROVALS: &str = "SELECT body FROM approvals WHERE request_id = $1 ORDER BY seq";
pub(crate) const LEASE: &str = "SELECT body FROM leases WHERE id = $1";
pub(crate) const LEASES_BY_TASK: &str =
    "SELECT body FROM leases WHERE task_id = $1 ORDER BY issued_at, id";
pub(crate) const OPEN_TASKS: &str =
    "SELECT body FROM tasks WHERE state = 'open' AND id > $1 ORDER BY id LIMIT $2";
pub(crate) const LIVE_LEASES: &str = "SELECT body FROM leases \
     WHERE state IN ('issuing', 'active') AND id > $1 ORDER BY id LIMIT $2";
/// The census columns both backends count alike (each on its `state` index): open tasks, live
/// leases, revoking leases, pending requests, pending notifications, `revoke_failed` leases.
/// A backend's [`Dialect::CENSUS`] adds the two retry counts, read from the JSON body.
macro_rules! census_common {
    () => {
        "SELECT \
         (SELECT COUNT(*) FROM tasks WHERE state = 'open'), \
         (SELECT COUNT(*) FROM leases WHERE state IN ('issuing', 'active')), \
         (SELECT COUNT(*) FROM leases WHERE state = 'revoking'), \
         (SELECT COUNT(*) FROM requests WHERE state = 'pending'), \
         (SELECT COUNT(*) FROM notifications WHERE state = 'pending'), \
         (SELECT COUNT(*) FROM leases WHERE state = 'revoke_failed'), "
    };
}
pub(crate) use census_common;
pub(crate) const ACTIVE_FREEZES: &str =
    "SELECT body FROM freezes WHERE state = 'active' ORDER BY created_at, id";
pub(crate) const FREEZE: &str = "SELECT body FROM freezes WHERE id = $1";
pub(crate) const INSERT_FREEZE: &str = "INSERT INTO freezes (id, state, created_at, version, body) \
     VALUES ($1, $2, $3, $4, $5)";
pub(crate) const UPDATE_FREEZE: &str = "UPDATE freezes SET state = $2, created_at = $3, \
     version = $4, body = $5 WHERE id = $1 AND version = $6";
pub(crate) const ACTIVE_LEASES: &str =
    "SELECT body FROM leases WHERE state = 'active' AND id > $1 ORDER BY id LIMIT $2";
/// The tasks of the page of active leases [`ACTIVE_LEASES`] reads with the same bounds, each
/// once.
pub(crate) const ACTIVE_LEASE_TASKS: &str = "SELECT body FROM tasks WHERE id IN \
     (SELECT task_id FROM leases WHERE state = 'active' AND id > $1 ORDER BY id LIMIT $2)";
pub(crate) const REVOKED_UNEXPIRED_LEASES: &str = "SELECT body FROM leases \
     WHERE state IN ('revoking', 'revoke_failed', 'revoked') \
     AND expires_at > $1 AND id > $2 ORDER BY id LIMIT $3";
pub(crate) const LEASE_BY_CREDENTIAL_HMAC: &str = "SELECT body FROM leases \
     WHERE credential_hmac = $1 ORDER BY issued_at DESC, id LIMIT 1";
pub(crate) const AUDIT_RECORDS: &str = concat!(
    "SELECT seq, ",
    prev_hash!(),
    ", hash, body FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2"
);
pub(crate) const CHECKPOINTS: &str = "SELECT seq, hash, at_unix_secs, kid, jws \
     FROM audit_checkpoints WHERE seq > $1 ORDER BY seq LIMIT $2";
pub(crate) const LAST_CHECKPOINT: &str = "SELECT seq, hash, at_unix_secs, kid, jws \
     FROM audit_checkpoints ORDER BY seq DESC LIMIT 1";
pub(crate) const SINK_CURSOR: &str = "SELECT seq FROM audit_sink_cursors WHERE name = $1";
pub(crate) const KEY_BLOB: &str = "SELECT blob FROM key_blobs WHERE name = $1";

/// The due-lease predicate (`$1` now, `$2` issuing grace) shared by listing and claiming.
macro_rules! due {
    () => {
        "((state = 'active' AND expires_at <= $1) \
         OR (state = 'issuing' AND issued_at <= $1 - $2) \
         OR (state IN ('revoking', 'revoke_failed') AND next_revoke_at <= $1))"
    };
}
/// Oldest-due-first order of due leases, so a backlog is worked oldest first.
macro_rules! due_order {
    () => {
        "CASE state WHEN 'active' THEN expires_at \
         WHEN 'issuing' THEN issued_at + $2 ELSE next_revoke_at END, id"
    };
}

/// `$1` now, `$2` issuing grace, `$3` limit.
pub(crate) const DUE_LEASES: &str = concat!(
    "SELECT body FROM leases WHERE ",
    due!(),
    " ORDER BY ",
    due_order!(),
    " LIMIT $3"
);
/// As [`DUE_LEASES`], claiming the leases for `$4` (owner) until `$5`. `SKIP LOCKED`: rows
/// another replica is claiming right now are left to it; rows it claimed earlier stay its own
/// until their claim expires (a dead replica's claims are then taken over).
pub(crate) const CLAIM_DUE_LEASES: &str = concat!(
    "WITH due AS (SELECT id FROM leases WHERE ",
    due!(),
    " AND (claim_until IS NULL OR claim_until <= $1) ORDER BY ",
    due_order!(),
    " LIMIT $3 FOR UPDATE SKIP LOCKED) \
     UPDATE leases l SET claim_owner = $4, claim_until = $5 FROM due \
     WHERE l.id = due.id RETURNING l.body"
);

/// Pending revocations of one resource (single-process stores, no claims). Parameters: `$1`
/// resource id, `$2` limit. The resource id lives in the body only: pending revocations are few.
pub(crate) const PENDING_REVOCATIONS_SQLITE: &str = "SELECT body FROM leases \
     WHERE state IN ('revoking', 'revoke_failed') \
     AND json_extract(body, '$.resource_id') = $1 ORDER BY id LIMIT $2";

/// Claims the pending revocations of one resource. Parameters: `$1` now, `$2` resource id,
/// `$3` owner, `$4` claim until, `$5` limit. The owner's own claims are taken again.
pub(crate) const CLAIM_PENDING_REVOCATIONS: &str = "WITH p AS (SELECT id FROM leases \
     WHERE state IN ('revoking', 'revoke_failed') \
     AND (body::jsonb ->> 'resource_id') = $2 \
     AND (claim_until IS NULL OR claim_until <= $1 OR claim_owner = $3) \
     ORDER BY id LIMIT $5 FOR UPDATE SKIP LOCKED) \
     UPDATE leases l SET claim_owner = $3, claim_until = $4 FROM p \
     WHERE l.id = p.id RETURNING l.body";

/// Outbox rows of one request (`$1`), oldest first.
pub(crate) const NOTIFICATIONS_FOR_REQUEST: &str =
    "SELECT body FROM notifications WHERE request_id = $1 ORDER BY id";
/// Due outbox rows, unclaimed (single-process stores): `$1` now, `$2` limit.
pub(crate) const DUE_NOTIFICATIONS: &str = "SELECT body FROM notifications \
     WHERE state = 'pending' AND next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT $2";
/// Claims due outbox rows: `$1` now, `$2` owner, `$3` claim until, `$4` limit. Rows another
/// replica holds a live claim on are left to it; `SKIP LOCKED` leaves those it is claiming now.
pub(crate) const CLAIM_DUE_NOTIFICATIONS: &str = "WITH due AS (SELECT id FROM notifications \
     WHERE state = 'pending' AND next_attempt_at <= $1 \
     AND (claim_until IS NULL OR claim_until <= $1) \
     ORDER BY next_attempt_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) \
     UPDATE notifications n SET claim_owner = $2, claim_until = $3 FROM due \
     WHERE n.id = due.id RETURNING n.body";

/// The audit query's leading predicate, chosen so an index serves it: by task, by lease, or
/// neither. Parameters: `$1` task, `$2` lease.
pub(crate) fn audit_events_lead(task: bool, lease: bool) -> &'static str {
    if task {
        concat!(
            "SELECT seq, body, ",
            prev_hash!(),
            ", hash FROM audit_events WHERE task_id = $1 \
             AND (CAST($2 AS TEXT) IS NULL OR lease_id = $2) "
        )
    } else if lease {
        concat!(
            "SELECT seq, body, ",
            prev_hash!(),
            ", hash FROM audit_events WHERE lease_id = $2 \
             AND (CAST($1 AS TEXT) IS NULL OR task_id = $1) "
        )
    } else {
        concat!(
            "SELECT seq, body, ",
            prev_hash!(),
            ", hash FROM audit_events \
             WHERE (CAST($1 AS TEXT) IS NULL OR task_id = $1) \
             AND (CAST($2 AS TEXT) IS NULL OR lease_id = $2) "
        )
    }
}

/// The audit query's optional filters after the kind filter: `$5` after seq, `$6` limit,
/// `$7` actor, `$8` since, `$9` until, `$10` credential HMAC.
pub(crate) const AUDIT_EVENTS_REST: &str = "AND (CAST($7 AS TEXT) IS NULL OR actor = $7) \
     AND (CAST($8 AS BIGINT) IS NULL OR at_unix_secs >= $8) \
     AND (CAST($9 AS BIGINT) IS NULL OR at_unix_secs < $9) \
     AND (CAST($10 AS TEXT) IS NULL OR credential_hmac = $10) \
     AND seq > $5 ORDER BY seq LIMIT $6";

#[cfg(test)]
mod tests {
    use super::*;

    /// The derived previous hash of the first record is the genesis hash the chain starts from.
    #[test]
    fn prev_hash_starts_at_genesis() {
        let quoted = format!("'{}'", latch_core::audit::GENESIS_HASH);
        assert!(PREV_HASH.contains(&quoted), "{PREV_HASH}");
        assert!(AUDIT_RECORDS.contains(PREV_HASH));
    }

    #[test]
    fn sqlite_numbering_keeps_the_numbers() {
        assert_eq!(
            numbered_for_sqlite(UPDATE_TASK),
            "UPDATE tasks SET owner_id = ?2, state = ?3, created_at = ?4, expires_at = ?5, \
             version = ?6, body = ?7 WHERE id = ?1 AND version = ?8"
        );
        assert_eq!(numbered_for_sqlite("SELECT 1"), "SELECT 1");
    }

    #[test]
    fn due_text_is_composed() {
        assert!(DUE_LEASES.contains("issued_at <= $1 - $2"));
        assert!(DUE_LEASES.ends_with("LIMIT $3"));
        assert!(CLAIM_DUE_LEASES.contains("FOR UPDATE SKIP LOCKED"));
    }
}
