//! The embedded SQLite store: how it opens, and the SQLite side of the [`Dialect`] seam.

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use latch_core::audit::{GENESIS_HASH, chain_hash};
use latch_core::ports::{StoreError, WriteBatch};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult,
    SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use crate::Deadlines;
use crate::sql::{self, Dialect};
use crate::store::{Migrations, SqlStore, migration_failed, migrator};

mod group;

use group::GroupWriter;

/// Embedded migrations, in version order: `(version, description, sql)`.
///
/// Every file in `migrations/sqlite/` must be listed here (a unit test checks it).
pub(crate) const MIGRATIONS: Migrations = &[
    (
        1,
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "audit_chain",
        include_str!("../../migrations/sqlite/0002_audit_chain.sql"),
    ),
    (
        3,
        "console_sessions",
        include_str!("../../migrations/sqlite/0003_console_sessions.sql"),
    ),
    (
        4,
        "operators",
        include_str!("../../migrations/sqlite/0004_operators.sql"),
    ),
    (
        5,
        "notifications",
        include_str!("../../migrations/sqlite/0005_notifications.sql"),
    ),
    (
        6,
        "oauth_records",
        include_str!("../../migrations/sqlite/0006_oauth_records.sql"),
    ),
    (
        7,
        "counters",
        include_str!("../../migrations/sqlite/0007_counters.sql"),
    ),
    (
        8,
        "ssf_received_sets",
        include_str!("../../migrations/sqlite/0008_ssf_received_sets.sql"),
    ),
    (
        9,
        "slimmer_audit",
        include_str!("../../migrations/sqlite/0009_slimmer_audit.sql"),
    ),
];

/// Page size of a database file this store creates, in bytes.
const NEW_PAGE_SIZE: u32 = 8192;

/// Connections in the read pool of a file database.
const READ_POOL_SIZE: u32 = 4;

/// The embedded default [`Store`](latch_core::ports::Store): SQLite through sqlx.
///
/// * Journal mode WAL, `synchronous=FULL` (a committed batch survives power loss), foreign keys
///   enforced; the busy timeout (how long a connection waits on a lock another process holds)
///   is the store's operation deadline ([`Deadlines`]), which bounds every call.
/// * File databases: every [`apply`](latch_core::ports::Store::apply) goes to one dedicated
///   writer thread that owns a `rusqlite` connection and commits whatever batches are queued
///   together — one `BEGIN IMMEDIATE` transaction and one fsync per group, one savepoint per
///   batch, each caller answered after the `COMMIT` (see `group.rs`). In-memory databases apply
///   each batch as its own `BEGIN IMMEDIATE` transaction on the single sqlx connection.
/// * Reads use a separate pool of read-only connections, which WAL lets run alongside the
///   writer. An in-memory database uses the single writer connection for everything (each
///   connection would otherwise see its own database).
/// * Schema migrations embedded from `migrations/sqlite/` run at `open`.
///
/// Cloning is cheap and shares the connections.
pub type SqliteStore = SqlStore<Sqlite>;

/// The SQLite store's own state: the group-commit writer (file databases only).
#[derive(Clone)]
pub struct SqliteExtra {
    group: Option<Arc<GroupWriter>>,
}

impl std::fmt::Debug for SqlStore<Sqlite> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("writer_connections", &self.writer.size())
            .field("reader_connections", &self.reader.size())
            .field("group_commit", &self.extra.group.is_some())
            .finish()
    }
}

impl SqlStore<Sqlite> {
    /// [`open_with`](Self::open_with) the default [`Deadlines`] (2 s).
    ///
    /// # Errors
    /// As [`open_with`](Self::open_with).
    pub async fn open(url_or_path: &str) -> Result<Self, StoreError> {
        Self::open_with(url_or_path, Deadlines::default()).await
    }

    /// Opens (creating if missing) the database named by `url_or_path` and brings its schema up
    /// to date; every later call is bounded by `deadlines` (see [`Deadlines`]). A write the
    /// group writer has not started when its deadline passes is dropped unwritten
    /// ([`StoreError::Unavailable`]); one it has started answers
    /// [`StoreError::OutcomeUnknown`].
    ///
    /// Accepts `sqlite://path/to/file.db` (with optional `?…` parameters), a plain file path,
    /// and `sqlite::memory:` (or `:memory:`) for a private in-memory database that lives as long
    /// as this store and its clones.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the URL is malformed, the file cannot be opened or
    /// created, or a migration fails (including a previously applied migration whose SQL has
    /// since changed).
    pub async fn open_with(url_or_path: &str, deadlines: Deadlines) -> Result<Self, StoreError> {
        let trimmed = url_or_path.trim();
        let memory = is_memory(trimmed);
        let base = if memory {
            SqliteConnectOptions::from_str("sqlite::memory:")
        } else if trimmed.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(trimmed)
        } else {
            Ok(SqliteConnectOptions::new().filename(trimmed))
        }
        .map_err(|e| StoreError::Unavailable(format!("invalid sqlite location: {e}")))?;
        let base = base
            .foreign_keys(true)
            .busy_timeout(deadlines.operation)
            .synchronous(SqliteSynchronous::Full);
        let filename = base.get_filename().to_owned();
        let store = if memory {
            Self::open_memory(base, deadlines).await?
        } else {
            Self::open_file(base, deadlines).await?
        };
        store.migrate().await?;
        store.chain_unhashed().await?;
        if memory {
            return Ok(store);
        }
        // Started after the migrations, so its connection sees the current schema.
        match GroupWriter::start(&filename, deadlines.operation).await {
            Ok(group) => Ok(Self {
                extra: SqliteExtra {
                    group: Some(Arc::new(group)),
                },
                ..store
            }),
            Err(e) => {
                store.close().await;
                Err(e)
            }
        }
    }

    /// One connection that is never closed: the database lives as long as it does.
    async fn open_memory(
        base: SqliteConnectOptions,
        deadlines: Deadlines,
    ) -> Result<Self, StoreError> {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(deadlines.acquire)
            .connect_with(base)
            .await
            .map_err(|e| unavailable("open in-memory database", &e))?;
        Ok(Self {
            writer: pool.clone(),
            reader: pool,
            extra: SqliteExtra { group: None },
            deadline: deadlines.operation,
        })
    }

    /// The writer connection (creating the file, in WAL mode) and a lazy read-only pool.
    async fn open_file(
        base: SqliteConnectOptions,
        deadlines: Deadlines,
    ) -> Result<Self, StoreError> {
        // Creating the file and switching it to WAL can outlast one acquire deadline on a
        // loaded machine (fsyncs); opening is done once, so it gets three of them.
        let mut attempt = 0;
        let writer = loop {
            attempt += 1;
            match SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(deadlines.acquire)
                .connect_with(
                    base.clone()
                        .create_if_missing(true)
                        // A new file only (an existing one keeps its size): audit rows of
                        // ≈ 750 bytes fill 4 KiB pages to 86 %, 8 KiB ones to 96 %, which is
                        // ≈ 9 % less disk per grant (BENCHMARKS.md, storage per grant).
                        .page_size(NEW_PAGE_SIZE)
                        .journal_mode(SqliteJournalMode::Wal),
                )
                .await
            {
                Ok(pool) => break pool,
                Err(sqlx::Error::PoolTimedOut) if attempt < 3 => {
                    tracing::warn!(
                        attempt,
                        "sqlite: opening the database timed out; trying again"
                    );
                }
                Err(e) => return Err(unavailable("open database", &e)),
            }
        };
        // Opened after the writer, so the file exists and is already in WAL mode.
        let reader = SqlitePoolOptions::new()
            .max_connections(READ_POOL_SIZE)
            .acquire_timeout(deadlines.acquire)
            .connect_lazy_with(base.read_only(true));
        Ok(Self {
            writer,
            reader,
            extra: SqliteExtra { group: None },
            deadline: deadlines.operation,
        })
    }

    /// Closes every connection, waiting for in-flight work to finish. Later calls fail with
    /// [`StoreError::Unavailable`]. Dropping the store (and all its clones) also closes it.
    pub async fn close(&self) {
        if let Some(group) = &self.extra.group {
            group.close().await;
        }
        self.writer.close().await;
        self.reader.close().await;
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        migrator(MIGRATIONS)
            .run(&self.writer)
            .await
            .map_err(|e| migration_failed(&e))
    }

    /// Chains audit rows written before the chain existed (migration 2), in one transaction.
    async fn chain_unhashed(&self) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        // Only rows older than the chain itself, and only before anything was ever signed: an
        // empty hash anywhere else is damage for `latch audit verify` to report, not to repair.
        let rows = sqlx::query_as::<_, (i64, String)>(
            "SELECT seq, body FROM audit_events WHERE hash = '' \
             AND NOT EXISTS (SELECT 1 FROM audit_checkpoints) \
             AND seq < coalesce((SELECT min(seq) FROM audit_events WHERE hash != ''), 9223372036854775807) \
             ORDER BY seq",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| unavailable("read unchained audit rows", &e))?;
        if !rows.is_empty() {
            tracing::warn!(
                rows = rows.len(),
                "chaining audit rows written before the hash chain existed"
            );
        }
        for (seq, body) in rows {
            let prev = sqlx::query_scalar::<_, String>(
                "SELECT hash FROM audit_events WHERE seq < ?1 ORDER BY seq DESC LIMIT 1",
            )
            .bind(seq)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| unavailable("read audit chain head", &e))?
            .unwrap_or_else(|| GENESIS_HASH.to_owned());
            sqlx::query("UPDATE audit_events SET prev_hash = ?1, hash = ?2 WHERE seq = ?3")
                .bind(&prev)
                .bind(chain_hash(&prev, seq, &body))
                .bind(seq)
                .execute(&mut *tx)
                .await
                .map_err(|e| write_error("chain audit row", &e))?;
        }
        tx.commit().await.map_err(|e| write_error("commit", &e))
    }

    /// `BEGIN IMMEDIATE` on the writer: the write lock is taken up front (waiting up to the
    /// busy timeout), never upgraded halfway through.
    async fn begin(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| unavailable("begin transaction", &e))
    }
}

#[async_trait]
impl Dialect for Sqlite {
    const LABEL: &'static str = "sqlite";
    const COUNTER_VALUE_LOCKED: &'static str = crate::sql::COUNTER_VALUE;
    const REQUIRE_TASK_OPEN: &'static str =
        "SELECT 1 FROM tasks WHERE id = $1 AND version = $2 AND state = 'open'";
    const UPDATE_LEASE: &'static str = sql::UPDATE_LEASE;
    // SQLite's LIKE ignores ASCII case, so the prefix is also compared exactly with substr().
    const AUDIT_KIND_FILTER: &'static str = "AND ($3 IS NULL OR (kind LIKE $4 ESCAPE '\\' \
         AND substr(kind, 1, length($3)) = $3)) ";
    const AUDIT_HEAD: &'static str = sql::AUDIT_TAIL;
    const UPSERT_SINK_CURSOR: &'static str = "INSERT INTO audit_sink_cursors (name, seq) \
         VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET seq = max(seq, excluded.seq)";
    const AUDIT_SET_PREV_HASH: &'static str =
        "UPDATE audit_events SET prev_hash = $2 WHERE seq = $1";
    const AUDIT_DELETE_BEFORE: &'static str = "DELETE FROM audit_events WHERE seq < $1";
    const CLAIMS: bool = false;
    const CENSUS: &'static str = concat!(
        sql::census_common!(),
        "(SELECT COUNT(*) FROM leases WHERE state IN ('revoking', 'revoke_failed') \
           AND json_extract(body, '$.revoke_attempts') > 0), \
         (SELECT COUNT(*) FROM notifications WHERE state = 'pending' \
           AND json_extract(body, '$.attempts') > 0)"
    );

    type Extra = SqliteExtra;

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    async fn begin_write(store: &SqliteStore) -> Result<Transaction<'static, Sqlite>, StoreError> {
        store.begin().await
    }

    async fn apply(store: &SqliteStore, batch: WriteBatch) -> Result<Vec<i64>, StoreError> {
        match &store.extra.group {
            Some(group) => group.apply(batch, store.deadline).await,
            None => store.apply_in_transaction(&batch).await,
        }
    }

    async fn lock_chain_head(
        tx: &mut Transaction<'static, Sqlite>,
    ) -> Result<(i64, String), StoreError> {
        // `BEGIN IMMEDIATE` already holds the database's one write lock.
        let head = sqlx::query_as::<_, (i64, String)>(sql::AUDIT_TAIL)
            .fetch_optional(&mut **tx)
            .await
            .map_err(|err| unavailable("read audit chain head", &err))?;
        Ok(head.unwrap_or_else(|| (0, GENESIS_HASH.to_owned())))
    }
}

/// Whether `s` names an in-memory database.
fn is_memory(s: &str) -> bool {
    s == ":memory:" || s.contains(":memory:") || s.contains("mode=memory")
}

fn unavailable(what: &str, e: &sqlx::Error) -> StoreError {
    sql::unavailable::<Sqlite>(what, e)
}

fn write_error(what: &str, e: &sqlx::Error) -> StoreError {
    sql::write_error::<Sqlite>(what, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_locations_are_recognised() {
        assert!(is_memory(":memory:"));
        assert!(is_memory("sqlite::memory:"));
        assert!(is_memory("sqlite://?mode=memory"));
        assert!(!is_memory("sqlite:///var/lib/latch/latch.db"));
        assert!(!is_memory("latch.db"));
    }
}
