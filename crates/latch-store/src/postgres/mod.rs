//! The PostgreSQL store, shared by broker replicas: how it connects, and the PostgreSQL side
//! of the [`Dialect`] seam. The change feed is in `feed.rs`, the use-once cache in `once.rs`.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use latch_core::ports::{StoreError, Write, WriteBatch};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgQueryResult};
use sqlx::{ConnectOptions, Connection, Postgres, Transaction};

use crate::Deadlines;
use crate::sql::{self, Dialect};
use crate::store::{Migrations, SqlStore, migration_failed, migrator};

mod counters;
mod feed;
mod group;
mod once;
mod reads;

pub use feed::CHANGE_CHANNEL;

/// Embedded migrations, in version order: `(version, description, sql)`.
///
/// Every file in `migrations/postgres/` must be listed here (a unit test checks it).
pub(crate) const MIGRATIONS: Migrations = &[
    (
        1,
        "init",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "used_once",
        include_str!("../../migrations/postgres/0002_used_once.sql"),
    ),
    (
        3,
        "console_sessions",
        include_str!("../../migrations/postgres/0003_console_sessions.sql"),
    ),
    (
        4,
        "operators",
        include_str!("../../migrations/postgres/0004_operators.sql"),
    ),
    (
        5,
        "notifications",
        include_str!("../../migrations/postgres/0005_notifications.sql"),
    ),
    (
        6,
        "oauth_records",
        include_str!("../../migrations/postgres/0006_oauth_records.sql"),
    ),
    (
        7,
        "counters",
        include_str!("../../migrations/postgres/0007_counters.sql"),
    ),
    (
        8,
        "ssf_received_sets",
        include_str!("../../migrations/postgres/0008_ssf_received_sets.sql"),
    ),
    (
        9,
        "slimmer_audit",
        include_str!("../../migrations/postgres/0009_slimmer_audit.sql"),
    ),
    (
        10,
        "audit_filter_view",
        include_str!("../../migrations/postgres/0010_audit_filter_view.sql"),
    ),
];

/// Default connection-pool size.
const POOL_SIZE: u32 = 16;

/// A [`Store`](latch_core::ports::Store) on PostgreSQL (13 or newer), for one broker or several replicas sharing it.
///
/// * [`apply`](latch_core::ports::Store::apply) commits in groups: concurrent batches of one
///   replica share one `READ COMMITTED` transaction (one commit, one WAL flush), each batch
///   inside its own savepoint, so a failing batch fails alone (`group.rs`). Updates are
///   compare-and-set on `version` (a concurrent writer's update makes the row re-checked, so
///   exactly one of two racing writers wins); [`Write::RequireTaskOpen`] takes a `FOR SHARE`
///   lock on the task, so a task cannot end between the check and the commit.
/// * Audit events get their `seq`, `prev_hash` and `hash` under a row lock on the one-row
///   `audit_head` table (`SELECT … FOR UPDATE`), taken once per group, last in its
///   transaction: appends are serialised across every replica and the log stays one gapless
///   chain, but the lock is held per group of batches, not per batch.
/// * Lease and task updates send `NOTIFY latch_changes` in the same transaction (delivered at
///   commit), which `watch` turns into `StoreChange`s.
/// * Reaper claims (`Store::claim_due_leases`) use `FOR UPDATE SKIP LOCKED` and a claim
///   expiry, so replicas split the due leases and a dead replica's claims are taken over.
/// * Migrations embedded from `migrations/postgres/` run at `open`, under
///   sqlx's advisory lock (replicas starting together migrate once).
///
/// Cloning is cheap and shares the pool.
///
/// # Security
/// The connection URL may carry a password: it is never logged, and errors name only what
/// failed. Row bodies never appear in errors.
pub type PgStore = SqlStore<Postgres>;

impl std::fmt::Debug for SqlStore<Postgres> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("connections", &self.writer.size())
            .field("group_writers", &group::WRITERS)
            .finish_non_exhaustive()
    }
}

impl SqlStore<Postgres> {
    /// [`open_with`](Self::open_with) the default [`Deadlines`] (2 s).
    ///
    /// # Errors
    /// As [`open_with`](Self::open_with).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, Deadlines::default()).await
    }

    /// Connects to the database named by `url` (`postgres://user@host:port/db?…`, as libpq
    /// accepts; TLS is not compiled in, so use a local socket, loopback or a private network)
    /// and brings its schema up to date. Every later call is bounded by `deadlines` (see
    /// [`Deadlines`]): the pool waits at most `deadlines.acquire` for a connection (also
    /// here, for the first one), its connections carry `statement_timeout =
    /// deadlines.operation`, and each call is abandoned once `deadlines.operation` has passed.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the URL is malformed, the server is unreachable or
    /// does not answer within `deadlines.acquire`, or a migration fails (including an applied
    /// migration whose SQL has since changed) or does not finish within
    /// [`MIGRATION_TIMEOUT`](crate::MIGRATION_TIMEOUT).
    pub async fn open_with(url: &str, deadlines: Deadlines) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url.trim()).map_err(|_| {
            // The sqlx error may quote the URL, password included.
            StoreError::Unavailable("postgres: invalid store url".into())
        })?;
        let options = options.application_name("latch");
        // The change feed and the migrations use their own connections, without the
        // statement timeout (a LISTEN lives long; a migration may take long).
        let listen_options = options.clone();
        let statement_timeout = deadlines.operation.as_millis().max(1).to_string();
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(deadlines.acquire)
            // A pooled connection is checked before use, so a restarted server costs one
            // failed check per stale connection, not a failed call.
            .test_before_acquire(true)
            .connect_with(options.options([("statement_timeout", statement_timeout.as_str())]))
            .await
            .map_err(|e| unavailable("connect", &e))?;
        // One pool for reads and writes; the change feed opens its own connections.
        let reads = Arc::new(reads::Reads::default());
        let group = Arc::new(group::GroupWriter::start(
            &pool,
            deadlines.operation,
            reads.clone(),
        ));
        let store = Self {
            reader: pool.clone(),
            writer: pool,
            extra: PgExtra {
                options: listen_options,
                group,
                reads,
            },
            deadline: deadlines.operation,
        };
        store.migrate(deadlines.acquire).await?;
        Ok(store)
    }

    /// Closes every connection, waiting for in-flight work (and the batches already queued
    /// for a group commit) to finish.
    pub async fn close(&self) {
        self.extra.group.close().await;
        self.writer.close().await;
    }

    /// Runs the migrations on a connection of their own (no statement timeout), within
    /// [`MIGRATION_TIMEOUT`](crate::MIGRATION_TIMEOUT).
    async fn migrate(&self, connect_timeout: Duration) -> Result<(), StoreError> {
        let run = async {
            let mut conn = tokio::time::timeout(connect_timeout, self.extra.options.connect())
                .await
                .map_err(|_| StoreError::Unavailable("postgres: connect: no answer".into()))?
                .map_err(|e| unavailable("connect", &e))?;
            let done = migrator(MIGRATIONS)
                .run(&mut conn)
                .await
                .map_err(|e| migration_failed(&e));
            let _ = conn.close().await;
            done
        };
        tokio::time::timeout(crate::MIGRATION_TIMEOUT, run)
            .await
            .map_err(|_| StoreError::Unavailable("postgres: schema migration timed out".into()))?
    }
}

#[async_trait]
impl Dialect for Postgres {
    const LABEL: &'static str = "postgres";
    // FOR SHARE: a concurrent end of the task waits for this transaction, and one that
    // committed first makes the row re-checked (and fail) here.
    const COUNTER_VALUE_LOCKED: &'static str =
        "SELECT count FROM counters WHERE scope = $1 AND subject = $2 AND name = $3 FOR SHARE";
    const REQUIRE_TASK_OPEN: &'static str =
        "SELECT 1 FROM tasks WHERE id = $1 AND version = $2 AND state = 'open' FOR SHARE";
    // An update ends any reaper claim on the lease.
    const UPDATE_LEASE: &'static str = "UPDATE leases SET task_id = $2, request_id = $3, \
         state = $4, issued_at = $5, expires_at = $6, next_revoke_at = $7, credential_hmac = $8, \
         version = $9, body = $10, claim_owner = NULL, claim_until = NULL \
         WHERE id = $1 AND version = $11";
    // PostgreSQL's LIKE is case-sensitive: the prefix needs no second comparison.
    const AUDIT_KIND_FILTER: &'static str =
        "AND (CAST($3 AS TEXT) IS NULL OR kind LIKE $4 ESCAPE '\\') ";
    const AUDIT_HEAD: &'static str = "SELECT seq, hash FROM audit_head WHERE one AND seq > 0";
    const UPSERT_SINK_CURSOR: &'static str = "INSERT INTO audit_sink_cursors (name, seq) \
         VALUES ($1, $2) ON CONFLICT (name) \
         DO UPDATE SET seq = GREATEST(audit_sink_cursors.seq, excluded.seq)";
    // The records live in `audit_log` (0010); `audit_events` is a view over it.
    const AUDIT_SET_PREV_HASH: &'static str = "UPDATE audit_log SET prev_hash = $2 WHERE seq = $1";
    const AUDIT_DELETE_BEFORE: &'static str = "DELETE FROM audit_log WHERE seq < $1";
    const CLAIMS: bool = true;
    const CENSUS: &'static str = concat!(
        sql::census_common!(),
        "(SELECT COUNT(*) FROM leases WHERE state IN ('revoking', 'revoke_failed') \
           AND (body::jsonb ->> 'revoke_attempts')::bigint > 0), \
         (SELECT COUNT(*) FROM notifications WHERE state = 'pending' \
           AND (body::jsonb ->> 'attempts')::bigint > 0)"
    );

    type Extra = PgExtra;

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }

    fn describe(e: &sqlx::Error) -> String {
        describe(e)
    }

    async fn begin_write(store: &PgStore) -> Result<Transaction<'static, Postgres>, StoreError> {
        store
            .writer
            .begin()
            .await
            .map_err(|e| unavailable("begin transaction", &e))
    }

    async fn apply(store: &PgStore, batch: WriteBatch) -> Result<Vec<i64>, StoreError> {
        store.extra.group.apply(batch, store.deadline).await
    }

    /// The one-row `audit_head` table, locked `FOR UPDATE`: appends are serialised across every
    /// replica and the log stays one gapless chain.
    async fn lock_chain_head(
        tx: &mut Transaction<'static, Postgres>,
    ) -> Result<(i64, String), StoreError> {
        sqlx::query_as::<_, (i64, String)>("SELECT seq, hash FROM audit_head WHERE one FOR UPDATE")
            .fetch_one(&mut **tx)
            .await
            .map_err(|e| write_error("lock audit chain head", &e))
    }

    async fn combined_active_freezes(
        store: &PgStore,
    ) -> Option<Result<Vec<latch_core::freeze::Freeze>, StoreError>> {
        Some(store.extra.reads.active_freezes(&store.reader).await)
    }

    fn recent_active_freezes(store: &PgStore) -> Option<Vec<latch_core::freeze::Freeze>> {
        store.extra.reads.recent_freezes()
    }

    fn active_freezes_after(store: &PgStore, seq: i64) -> Option<Vec<latch_core::freeze::Freeze>> {
        store.extra.reads.freezes_after(seq)
    }

    async fn combined_counters(
        store: &PgStore,
        scope: latch_core::history::CounterScope,
        subject: &str,
    ) -> Option<Result<Vec<latch_core::history::CounterRow>, StoreError>> {
        Some(
            store
                .extra
                .reads
                .counters(&store.reader, scope, subject)
                .await,
        )
    }

    async fn after_writes(
        tx: &mut Transaction<'static, Postgres>,
        writes: &[Write],
    ) -> Result<(), StoreError> {
        feed::notify_changes(tx, writes).await
    }

    async fn after_appends(
        tx: &mut Transaction<'static, Postgres>,
        seq: i64,
        hash: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE one")
            .bind(seq)
            .bind(hash)
            .execute(&mut **tx)
            .await
            .map_err(|e| write_error("move audit chain head", &e))?;
        Ok(())
    }
}

/// The PostgreSQL store's own state beside the pool.
#[derive(Clone)]
pub struct PgExtra {
    /// How to open the change feed's and the migrations' own connections (outside the pool;
    /// carries the password, so this type has no `Debug`).
    options: PgConnectOptions,
    /// The group-commit writers every [`Store::apply`](latch_core::ports::Store::apply) goes
    /// through.
    group: Arc<group::GroupWriter>,
    /// The grant path's reads, combined across concurrent callers.
    reads: Arc<reads::Reads>,
}

/// A sqlx error in words: as [`crate::codec::describe`], but a configuration error (which can
/// quote the URL, password included) is not passed on.
fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Configuration(_) => "invalid configuration".to_owned(),
        other => crate::codec::describe(other),
    }
}

fn unavailable(what: &str, e: &sqlx::Error) -> StoreError {
    sql::unavailable::<Postgres>(what, e)
}

fn write_error(what: &str, e: &sqlx::Error) -> StoreError {
    sql::write_error::<Postgres>(what, e)
}

#[cfg(test)]
#[path = "upgrade_tests.rs"]
mod upgrade_tests;

#[cfg(test)]
mod tests {
    #[test]
    fn genesis_matches_the_migration() {
        assert_eq!(latch_core::audit::GENESIS_HASH, "0".repeat(64));
    }
}
