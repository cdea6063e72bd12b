//! The embedded SQLite store.

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use latch_core::audit::{AuditCheckpoint, AuditRecord, GENESIS_HASH, chain_hash};
use latch_core::model::{AccessRequest, Approval, AuditEvent, AuditFilter, Lease, Task};
use latch_core::ports::{Store, StoreError, Write, WriteBatch};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{SqlSafeStr, Sqlite, Transaction};

mod group;

use group::GroupWriter;

/// Embedded migrations, in version order: `(version, description, sql)`.
///
/// Every file in `migrations/sqlite/` must be listed here (a unit test checks it).
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "audit_chain",
        include_str!("../migrations/sqlite/0002_audit_chain.sql"),
    ),
];

/// Connections in the read pool of a file database.
const READ_POOL_SIZE: u32 = 4;
/// How long a connection waits on a lock held by another process before failing.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for a pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default and maximum page sizes of [`Store::audit_events`].
const AUDIT_DEFAULT_LIMIT: u32 = 100;
const AUDIT_MAX_LIMIT: u32 = 1000;

/// The embedded default [`Store`]: SQLite through sqlx.
///
/// * Journal mode WAL, `synchronous=FULL` (a committed batch survives power loss), foreign keys
///   enforced, busy timeout 5 s.
/// * File databases: every [`apply`](Store::apply) goes to one dedicated writer thread that owns
///   a `rusqlite` connection and commits whatever batches are queued together — one
///   `BEGIN IMMEDIATE` transaction and one fsync per group, one savepoint per batch, each caller
///   answered after the `COMMIT` (see `group.rs`). In-memory databases apply each batch as its
///   own `BEGIN IMMEDIATE` transaction on the single sqlx connection.
/// * Reads use a separate pool of read-only connections, which WAL lets run alongside the
///   writer. An in-memory database uses the single writer connection for everything (each
///   connection would otherwise see its own database).
/// * Schema migrations embedded from `migrations/sqlite/` run at [`open`](Self::open).
///
/// Cloning is cheap and shares the connections.
#[derive(Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// The group-commit writer (file databases only).
    group: Option<Arc<GroupWriter>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("writer_connections", &self.writer.size())
            .field("reader_connections", &self.reader.size())
            .field("group_commit", &self.group.is_some())
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database named by `url_or_path` and brings its schema up
    /// to date.
    ///
    /// Accepts `sqlite://path/to/file.db` (with optional `?…` parameters), a plain file path,
    /// and `sqlite::memory:` (or `:memory:`) for a private in-memory database that lives as long
    /// as this store and its clones.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the URL is malformed, the file cannot be opened or
    /// created, or a migration fails (including a previously applied migration whose SQL has
    /// since changed).
    pub async fn open(url_or_path: &str) -> Result<Self, StoreError> {
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
            .busy_timeout(BUSY_TIMEOUT)
            .synchronous(SqliteSynchronous::Full);
        let filename = base.get_filename().to_owned();

        let store = if memory {
            // One connection that is never closed: the database lives as long as it does.
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(base)
                .await
                .map_err(|e| unavailable("open in-memory database", &e))?;
            Self {
                writer: pool.clone(),
                reader: pool,
                group: None,
            }
        } else {
            let writer = SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(
                    base.clone()
                        .create_if_missing(true)
                        .journal_mode(SqliteJournalMode::Wal),
                )
                .await
                .map_err(|e| unavailable("open database", &e))?;
            // Opened after the writer, so the file exists and is already in WAL mode.
            let reader = SqlitePoolOptions::new()
                .max_connections(READ_POOL_SIZE)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_lazy_with(base.clone().read_only(true));
            Self {
                writer,
                reader,
                group: None,
            }
        };
        store.migrate().await?;
        store.chain_unhashed().await?;
        if memory {
            return Ok(store);
        }
        // Started after the migrations, so its connection sees the current schema.
        match GroupWriter::start(&filename).await {
            Ok(group) => Ok(Self {
                group: Some(Arc::new(group)),
                ..store
            }),
            Err(e) => {
                store.close().await;
                Err(e)
            }
        }
    }

    /// Closes every connection, waiting for in-flight work to finish. Later calls fail with
    /// [`StoreError::Unavailable`]. Dropping the store (and all its clones) also closes it.
    pub async fn close(&self) {
        if let Some(group) = &self.group {
            group.close().await;
        }
        self.writer.close().await;
        self.reader.close().await;
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let migrations = MIGRATIONS
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect();
        Migrator::with_migrations(migrations)
            .run(&self.writer)
            .await
            .map_err(|e| StoreError::Unavailable(format!("schema migration failed: {e}")))
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

    async fn begin(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| unavailable("begin transaction", &e))
    }
}

/// Whether `s` names an in-memory database.
fn is_memory(s: &str) -> bool {
    s == ":memory:" || s.contains(":memory:") || s.contains("mode=memory")
}

/// Maps a sqlx error onto [`StoreError::Unavailable`]. SQLite's messages name tables, columns
/// and constraints, never row values.
fn unavailable(what: &str, e: &sqlx::Error) -> StoreError {
    StoreError::Unavailable(format!("sqlite: {what}: {}", describe(e)))
}

fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("{} (code {code})", db.message()),
            None => db.message().to_owned(),
        },
        other => other.to_string(),
    }
}

/// Maps an error from a write: unique and foreign-key violations are conflicts.
fn write_error(what: &str, e: &sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = e {
        if db.is_unique_violation() {
            return StoreError::Conflict(format!("{what}: already exists"));
        }
        if db.is_foreign_key_violation() {
            return StoreError::Conflict(format!("{what}: refers to a row that does not exist"));
        }
    }
    unavailable(what, e)
}

pub(crate) fn encode<T: Serialize>(what: &str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|_| StoreError::Unavailable(format!("could not encode {what}")))
}

fn decode<T: DeserializeOwned>(what: &str, body: &str) -> Result<T, StoreError> {
    // The serde error can quote parts of the body: it is not passed on.
    serde_json::from_str(body)
        .map_err(|_| StoreError::Unavailable(format!("stored {what} row cannot be decoded")))
}

fn decode_all<T: DeserializeOwned>(what: &str, bodies: Vec<String>) -> Result<Vec<T>, StoreError> {
    bodies.iter().map(|b| decode(what, b)).collect()
}

fn limit(n: u32) -> i64 {
    i64::from(n)
}

/// Escapes `%`, `_` and `\` for `LIKE … ESCAPE '\'`.
fn like_prefix(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// Fails with a conflict when a compare-and-set update matched no row.
pub(crate) fn cas(what: &str, id: &str, rows: u64) -> Result<(), StoreError> {
    if rows == 0 {
        Err(StoreError::Conflict(format!(
            "{what} {id} was changed concurrently or does not exist"
        )))
    } else {
        Ok(())
    }
}

async fn apply_write(tx: &mut Transaction<'static, Sqlite>, w: &Write) -> Result<(), StoreError> {
    match w {
        Write::InsertTask(t) => {
            sqlx::query(
                "INSERT INTO tasks (id, owner_id, state, created_at, expires_at, version, body) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .bind(&t.id)
            .bind(&t.owner.id)
            .bind(t.state.as_str())
            .bind(t.created_at_unix_secs)
            .bind(t.expires_at_unix_secs)
            .bind(t.version)
            .bind(encode("task", t)?)
            .execute(&mut **tx)
            .await
            .map_err(|e| write_error("insert task", &e))?;
        }
        Write::UpdateTask(t) => {
            let r = sqlx::query(
                "UPDATE tasks SET owner_id = ?2, state = ?3, created_at = ?4, expires_at = ?5, \
                 version = ?6, body = ?7 WHERE id = ?1 AND version = ?8",
            )
            .bind(&t.id)
            .bind(&t.owner.id)
            .bind(t.state.as_str())
            .bind(t.created_at_unix_secs)
            .bind(t.expires_at_unix_secs)
            .bind(t.version)
            .bind(encode("task", t)?)
            .bind(t.version - 1)
            .execute(&mut **tx)
            .await
            .map_err(|e| write_error("update task", &e))?;
            cas("task", &t.id, r.rows_affected())?;
        }
        Write::RequireTaskOpen { task_id, version } => {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM tasks WHERE id = ?1 AND version = ?2 AND state = 'open'",
            )
            .bind(task_id)
            .bind(version)
            .fetch_one(&mut **tx)
            .await
            .map_err(|e| write_error("check task", &e))?;
            cas("task", task_id, n as u64)?;
        }
        Write::InsertRequest(r) => {
            sqlx::query(
                "INSERT INTO requests (id, task_id, state, created_at, expires_at, version, body) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .bind(&r.id)
            .bind(&r.task_id)
            .bind(r.state.as_str())
            .bind(r.created_at_unix_secs)
            .bind(r.expires_at_unix_secs)
            .bind(r.version)
            .bind(encode("request", r)?)
            .execute(&mut **tx)
            .await
            .map_err(|e| write_error("insert request", &e))?;
        }
        Write::UpdateRequest(r) => {
            let res = sqlx::query(
                "UPDATE requests SET task_id = ?2, state = ?3, created_at = ?4, expires_at = ?5, \
                 version = ?6, body = ?7 WHERE id = ?1 AND version = ?8",
            )
            .bind(&r.id)
            .bind(&r.task_id)
            .bind(r.state.as_str())
            .bind(r.created_at_unix_secs)
            .bind(r.expires_at_unix_secs)
            .bind(r.version)
            .bind(encode("request", r)?)
            .bind(r.version - 1)
            .execute(&mut **tx)
            .await
            .map_err(|e| write_error("update request", &e))?;
            cas("request", &r.id, res.rows_affected())?;
        }
        Write::InsertApproval(a) => {
            sqlx::query(
                "INSERT INTO approvals (id, request_id, approver, created_at, body) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .bind(&a.id)
            .bind(&a.request_id)
            .bind(&a.approver)
            .bind(a.created_at_unix_secs)
            .bind(encode("approval", a)?)
            .execute(&mut **tx)
            .await
            .map_err(|e| write_error("insert approval", &e))?;
        }
        Write::InsertLease(l) => {
            sqlx::query(
                "INSERT INTO leases (id, task_id, request_id, state, issued_at, expires_at, \
                 next_revoke_at, credential_hmac, version, body) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .bind(&l.id)
            .bind(&l.task_id)
            .bind(&l.request_id)
            .bind(l.state.as_str())
            .bind(l.issued_at_unix_secs)
            .bind(l.expires_at_unix_secs)
            .bind(l.next_revoke_at_unix_secs)
            .bind(l.credential_hmac.as_deref())
            .bind(l.version)
            .bind(encode("lease", l)?)
            .execute(&mut **tx)
            .await
            .map_err(|e| write_error("insert lease", &e))?;
        }
        Write::UpdateLease(l) => {
            let res = sqlx::query(
                "UPDATE leases SET task_id = ?2, request_id = ?3, state = ?4, issued_at = ?5, \
                 expires_at = ?6, next_revoke_at = ?7, credential_hmac = ?8, version = ?9, \
                 body = ?10 WHERE id = ?1 AND version = ?11",
            )
            .bind(&l.id)
            .bind(&l.task_id)
            .bind(&l.request_id)
            .bind(l.state.as_str())
            .bind(l.issued_at_unix_secs)
            .bind(l.expires_at_unix_secs)
            .bind(l.next_revoke_at_unix_secs)
            .bind(l.credential_hmac.as_deref())
            .bind(l.version)
            .bind(encode("lease", l)?)
            .bind(l.version - 1)
            .execute(&mut **tx)
            .await
            .map_err(|e| write_error("update lease", &e))?;
            cas("lease", &l.id, res.rows_affected())?;
        }
    }
    Ok(())
}

async fn append_event(
    tx: &mut Transaction<'static, Sqlite>,
    e: &AuditEvent,
) -> Result<i64, StoreError> {
    let (head_seq, head_hash) = sqlx::query_as::<_, (i64, String)>(
        "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1",
    )
    .fetch_optional(&mut **tx)
    .await
    .map_err(|err| unavailable("read audit chain head", &err))?
    .unwrap_or_else(|| (0, GENESIS_HASH.to_owned()));
    let seq = head_seq + 1;
    let body = latch_core::audit::encode_event(e)
        .map_err(|_| StoreError::Unavailable("could not encode audit event".into()))?;
    let hash = chain_hash(&head_hash, seq, &body);
    sqlx::query("INSERT INTO audit_events (seq, body, prev_hash, hash) VALUES (?1, ?2, ?3, ?4)")
        .bind(seq)
        .bind(body)
        .bind(head_hash)
        .bind(hash)
        .execute(&mut **tx)
        .await
        .map_err(|err| write_error("append audit event", &err))?;
    Ok(seq)
}

/// Decodes `(seq, body, prev_hash, hash)` audit rows, filling the chain fields from the columns.
fn decode_events(rows: Vec<(i64, String, String, String)>) -> Result<Vec<AuditEvent>, StoreError> {
    rows.into_iter()
        .map(|(seq, body, prev_hash, hash)| {
            let mut e: AuditEvent = decode("audit event", &body)?;
            e.seq = seq;
            e.prev_hash = Some(prev_hash);
            e.hash = Some(hash);
            Ok(e)
        })
        .collect()
}

#[async_trait]
impl Store for SqliteStore {
    async fn apply(&self, batch: WriteBatch) -> Result<Vec<i64>, StoreError> {
        if let Some(group) = &self.group {
            return group.apply(batch).await;
        }
        let mut tx = self.begin().await?;
        let result = async {
            for w in &batch.writes {
                apply_write(&mut tx, w).await?;
            }
            let mut seqs = Vec::with_capacity(batch.audit.len());
            for e in &batch.audit {
                seqs.push(append_event(&mut tx, e).await?);
            }
            Ok::<_, StoreError>(seqs)
        }
        .await;
        match result {
            Ok(seqs) => {
                tx.commit().await.map_err(|e| write_error("commit", &e))?;
                Ok(seqs)
            }
            Err(err) => {
                // Best effort: dropping the transaction rolls back too.
                let _ = tx.rollback().await;
                Err(err)
            }
        }
    }

    async fn task(&self, id: &str) -> Result<Option<Task>, StoreError> {
        let body = sqlx::query_scalar::<_, String>("SELECT body FROM tasks WHERE id = ?1")
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(|e| unavailable("read task", &e))?;
        body.map(|b| decode("task", &b)).transpose()
    }

    async fn tasks_by_owner(&self, owner_id: &str, n: u32) -> Result<Vec<Task>, StoreError> {
        let bodies = sqlx::query_scalar::<_, String>(
            "SELECT body FROM tasks WHERE owner_id = ?1 \
             ORDER BY created_at DESC, id DESC LIMIT ?2",
        )
        .bind(owner_id)
        .bind(limit(n))
        .fetch_all(&self.reader)
        .await
        .map_err(|e| unavailable("list tasks by owner", &e))?;
        decode_all("task", bodies)
    }

    async fn expired_open_tasks(&self, now: i64, n: u32) -> Result<Vec<Task>, StoreError> {
        let bodies = sqlx::query_scalar::<_, String>(
            "SELECT body FROM tasks WHERE state = 'open' AND expires_at <= ?1 \
             ORDER BY expires_at, id LIMIT ?2",
        )
        .bind(now)
        .bind(limit(n))
        .fetch_all(&self.reader)
        .await
        .map_err(|e| unavailable("list expired tasks", &e))?;
        decode_all("task", bodies)
    }

    async fn request(&self, id: &str) -> Result<Option<AccessRequest>, StoreError> {
        let body = sqlx::query_scalar::<_, String>("SELECT body FROM requests WHERE id = ?1")
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(|e| unavailable("read request", &e))?;
        body.map(|b| decode("request", &b)).transpose()
    }

    async fn pending_requests(&self, n: u32) -> Result<Vec<AccessRequest>, StoreError> {
        let bodies = sqlx::query_scalar::<_, String>(
            "SELECT body FROM requests WHERE state = 'pending' \
             ORDER BY created_at, id LIMIT ?1",
        )
        .bind(limit(n))
        .fetch_all(&self.reader)
        .await
        .map_err(|e| unavailable("list pending requests", &e))?;
        decode_all("request", bodies)
    }

    async fn expired_requests(&self, now: i64, n: u32) -> Result<Vec<AccessRequest>, StoreError> {
        let bodies = sqlx::query_scalar::<_, String>(
            "SELECT body FROM requests WHERE state IN ('pending', 'approved') \
             AND expires_at <= ?1 ORDER BY expires_at, id LIMIT ?2",
        )
        .bind(now)
        .bind(limit(n))
        .fetch_all(&self.reader)
        .await
        .map_err(|e| unavailable("list expired requests", &e))?;
        decode_all("request", bodies)
    }

    async fn approvals(&self, request_id: &str) -> Result<Vec<Approval>, StoreError> {
        let bodies = sqlx::query_scalar::<_, String>(
            "SELECT body FROM approvals WHERE request_id = ?1 ORDER BY seq",
        )
        .bind(request_id)
        .fetch_all(&self.reader)
        .await
        .map_err(|e| unavailable("list approvals", &e))?;
        decode_all("approval", bodies)
    }

    async fn lease(&self, id: &str) -> Result<Option<Lease>, StoreError> {
        let body = sqlx::query_scalar::<_, String>("SELECT body FROM leases WHERE id = ?1")
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(|e| unavailable("read lease", &e))?;
        body.map(|b| decode("lease", &b)).transpose()
    }

    async fn leases_by_task(&self, task_id: &str) -> Result<Vec<Lease>, StoreError> {
        let bodies = sqlx::query_scalar::<_, String>(
            "SELECT body FROM leases WHERE task_id = ?1 ORDER BY issued_at, id",
        )
        .bind(task_id)
        .fetch_all(&self.reader)
        .await
        .map_err(|e| unavailable("list leases by task", &e))?;
        decode_all("lease", bodies)
    }

    async fn active_leases(&self, after_id: &str, n: u32) -> Result<Vec<Lease>, StoreError> {
        let bodies = sqlx::query_scalar::<_, String>(
            "SELECT body FROM leases WHERE state = 'active' AND id > ?1 ORDER BY id LIMIT ?2",
        )
        .bind(after_id)
        .bind(limit(n))
        .fetch_all(&self.reader)
        .await
        .map_err(|e| unavailable("list active leases", &e))?;
        decode_all("lease", bodies)
    }

    async fn due_leases(
        &self,
        now: i64,
        issuing_grace_secs: i64,
        n: u32,
    ) -> Result<Vec<Lease>, StoreError> {
        // Ordered by when each lease became due, so a backlog is worked oldest first.
        let bodies = sqlx::query_scalar::<_, String>(
            "SELECT body FROM leases WHERE \
                (state = 'active' AND expires_at <= ?1) \
             OR (state = 'issuing' AND issued_at <= ?1 - ?2) \
             OR (state IN ('revoking', 'revoke_failed') AND next_revoke_at <= ?1) \
             ORDER BY CASE state \
                 WHEN 'active' THEN expires_at \
                 WHEN 'issuing' THEN issued_at + ?2 \
                 ELSE next_revoke_at END, id \
             LIMIT ?3",
        )
        .bind(now)
        .bind(issuing_grace_secs)
        .bind(limit(n))
        .fetch_all(&self.reader)
        .await
        .map_err(|e| unavailable("list due leases", &e))?;
        decode_all("lease", bodies)
    }

    async fn revoked_unexpired_leases(
        &self,
        now: i64,
        after_id: &str,
        n: u32,
    ) -> Result<Vec<Lease>, StoreError> {
        let bodies = sqlx::query_scalar::<_, String>(
            "SELECT body FROM leases WHERE state IN ('revoking', 'revoke_failed', 'revoked') \
             AND expires_at > ?1 AND id > ?2 ORDER BY id LIMIT ?3",
        )
        .bind(now)
        .bind(after_id)
        .bind(limit(n))
        .fetch_all(&self.reader)
        .await
        .map_err(|e| unavailable("list revoked leases", &e))?;
        decode_all("lease", bodies)
    }

    async fn lease_by_credential_hmac(&self, hmac_hex: &str) -> Result<Option<Lease>, StoreError> {
        let body = sqlx::query_scalar::<_, String>(
            "SELECT body FROM leases WHERE credential_hmac = ?1 ORDER BY issued_at DESC, id LIMIT 1",
        )
        .bind(hmac_hex)
        .fetch_optional(&self.reader)
        .await
        .map_err(|e| unavailable("find lease by credential", &e))?;
        body.map(|b| decode("lease", &b)).transpose()
    }

    async fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        let n = filter
            .limit
            .unwrap_or(AUDIT_DEFAULT_LIMIT)
            .min(AUDIT_MAX_LIMIT);
        let after = filter.after_seq.unwrap_or(0);
        let like = filter.kind_prefix.as_deref().map(like_prefix);
        let hmac = filter
            .credential_hmac
            .as_deref()
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_ascii_lowercase);
        if filter.credential_hmac.is_some() && hmac.is_none() {
            return Ok(Vec::new());
        }
        // Static statements, each led by a predicate an index serves; the remaining filters are
        // optional. SQLite's LIKE ignores ASCII case, so the kind prefix is also compared
        // exactly with substr().
        const REST: &str = "AND (?3 IS NULL OR (kind LIKE ?4 ESCAPE '\\' AND substr(kind, 1, length(?3)) = ?3)) \
             AND (?7 IS NULL OR actor = ?7) AND (?8 IS NULL OR at_unix_secs >= ?8) \
             AND (?9 IS NULL OR at_unix_secs < ?9) AND (?10 IS NULL OR credential_hmac = ?10) \
             AND seq > ?5 ORDER BY seq LIMIT ?6";
        let lead = if filter.task_id.is_some() {
            "SELECT seq, body, prev_hash, hash FROM audit_events WHERE task_id = ?1 \
             AND (?2 IS NULL OR lease_id = ?2) "
        } else if filter.lease_id.is_some() {
            "SELECT seq, body, prev_hash, hash FROM audit_events WHERE lease_id = ?2 \
             AND (?1 IS NULL OR task_id = ?1) "
        } else {
            "SELECT seq, body, prev_hash, hash FROM audit_events WHERE (?1 IS NULL OR task_id = ?1) \
             AND (?2 IS NULL OR lease_id = ?2) "
        };
        let sql = format!("{lead}{REST}");
        let rows = sqlx::query_as::<_, (i64, String, String, String)>(sqlx::AssertSqlSafe(sql))
            .bind(filter.task_id.as_deref())
            .bind(filter.lease_id.as_deref())
            .bind(filter.kind_prefix.as_deref())
            .bind(like)
            .bind(after)
            .bind(limit(n))
            .bind(filter.actor.as_deref())
            .bind(filter.since_unix_secs)
            .bind(filter.until_unix_secs)
            .bind(hmac)
            .fetch_all(&self.reader)
            .await
            .map_err(|e| unavailable("list audit events", &e))?;
        decode_events(rows)
    }

    async fn audit_records(
        &self,
        after_seq: i64,
        limit_n: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query_as::<_, (i64, String, String, String)>(
            "SELECT seq, prev_hash, hash, body FROM audit_events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )
        .bind(after_seq)
        .bind(limit(limit_n.clamp(1, 10_000)))
        .fetch_all(&self.reader)
        .await
        .map_err(|e| unavailable("read audit records", &e))?;
        Ok(rows
            .into_iter()
            .map(|(seq, prev_hash, hash, body)| AuditRecord {
                seq,
                prev_hash,
                hash,
                body,
            })
            .collect())
    }

    async fn audit_head(&self) -> Result<Option<(i64, String)>, StoreError> {
        sqlx::query_as::<_, (i64, String)>(
            "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(&self.reader)
        .await
        .map_err(|e| unavailable("read audit head", &e))
    }

    async fn put_checkpoint(&self, cp: &AuditCheckpoint) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT OR IGNORE INTO audit_checkpoints (seq, hash, at_unix_secs, kid, jws) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(cp.seq)
        .bind(&cp.hash)
        .bind(cp.at_unix_secs)
        .bind(&cp.kid)
        .bind(&cp.jws)
        .execute(&mut *tx)
        .await
        .map_err(|e| write_error("store checkpoint", &e))?;
        tx.commit().await.map_err(|e| write_error("commit", &e))
    }

    async fn checkpoints(
        &self,
        after_seq: i64,
        limit_n: u32,
    ) -> Result<Vec<AuditCheckpoint>, StoreError> {
        let rows = sqlx::query_as::<_, crate::rows::CheckpointRow>(
            "SELECT seq, hash, at_unix_secs, kid, jws FROM audit_checkpoints WHERE seq > ?1 \
             ORDER BY seq LIMIT ?2",
        )
        .bind(after_seq)
        .bind(limit(limit_n.clamp(1, 10_000)))
        .fetch_all(&self.reader)
        .await
        .map_err(|e| unavailable("read checkpoints", &e))?;
        Ok(rows.into_iter().map(crate::rows::checkpoint).collect())
    }

    async fn last_checkpoint(&self) -> Result<Option<AuditCheckpoint>, StoreError> {
        let row = sqlx::query_as::<_, crate::rows::CheckpointRow>(
            "SELECT seq, hash, at_unix_secs, kid, jws FROM audit_checkpoints ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(&self.reader)
        .await
        .map_err(|e| unavailable("read checkpoints", &e))?;
        Ok(row.map(crate::rows::checkpoint))
    }

    async fn sink_cursor(&self, sink: &str) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar::<_, i64>("SELECT seq FROM audit_sink_cursors WHERE name = ?1")
                .bind(sink)
                .fetch_optional(&self.reader)
                .await
                .map_err(|e| unavailable("read sink cursor", &e))?
                .unwrap_or(0),
        )
    }

    async fn set_sink_cursor(&self, sink: &str, seq: i64) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO audit_sink_cursors (name, seq) VALUES (?1, ?2) \
             ON CONFLICT (name) DO UPDATE SET seq = max(seq, excluded.seq)",
        )
        .bind(sink)
        .bind(seq)
        .execute(&mut *tx)
        .await
        .map_err(|e| write_error("store sink cursor", &e))?;
        tx.commit().await.map_err(|e| write_error("commit", &e))
    }

    async fn key_blob(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        sqlx::query_scalar::<_, Vec<u8>>("SELECT blob FROM key_blobs WHERE name = ?1")
            .bind(name)
            .fetch_optional(&self.reader)
            .await
            .map_err(|e| unavailable("read key blob", &e))
    }

    async fn put_key_blob_if_absent(&self, name: &str, blob: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query("INSERT OR IGNORE INTO key_blobs (name, blob) VALUES (?1, ?2)")
            .bind(name)
            .bind(blob)
            .execute(&mut *tx)
            .await
            .map_err(|e| write_error("store key blob", &e))?;
        let stored = sqlx::query_scalar::<_, Vec<u8>>("SELECT blob FROM key_blobs WHERE name = ?1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| unavailable("read key blob", &e))?;
        tx.commit().await.map_err(|e| write_error("commit", &e))?;
        Ok(stored)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query_scalar::<_, i64>("SELECT 1")
            .fetch_one(&self.reader)
            .await
            .map(|_| ())
            .map_err(|e| unavailable("ping", &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_file_is_embedded() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .expect("migrations dir")
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let embedded: Vec<String> = MIGRATIONS
            .iter()
            .map(|(v, d, _)| format!("{v:04}_{d}.sql"))
            .collect();
        assert_eq!(
            files, embedded,
            "list each migrations/sqlite/*.sql file in MIGRATIONS"
        );
        let mut versions: Vec<i64> = MIGRATIONS.iter().map(|m| m.0).collect();
        versions.dedup();
        assert_eq!(versions.len(), MIGRATIONS.len());
        assert!(MIGRATIONS.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn like_prefix_escapes_wildcards() {
        assert_eq!(like_prefix("credential."), "credential.%");
        assert_eq!(like_prefix("a%b_c\\"), "a\\%b\\_c\\\\%");
    }

    #[test]
    fn memory_locations_are_recognised() {
        assert!(is_memory(":memory:"));
        assert!(is_memory("sqlite::memory:"));
        assert!(is_memory("sqlite://?mode=memory"));
        assert!(!is_memory("sqlite:///var/lib/latch/latch.db"));
        assert!(!is_memory("latch.db"));
    }
}
