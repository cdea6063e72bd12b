//! [`SqlStore`]: the one [`Store`] implementation, generic over the SQL backend.
//!
//! Queries, row codecs and the transaction steps of a batch are written once here; what a
//! backend does its own way comes through [`Dialect`]. The public names are
//! [`SqliteStore`](crate::SqliteStore) (`SqlStore<sqlx::Sqlite>`) and
//! [`PgStore`](crate::PgStore) (`SqlStore<sqlx::Postgres>`).

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use latch_core::audit::{AuditCheckpoint, AuditRecord};
use latch_core::freeze::Freeze;
use latch_core::history::{CounterRow, CounterScope};
use latch_core::model::{
    AccessRequest, Approval, AuditEvent, AuditFilter, ConsoleSession, Lease, Task,
};
use latch_core::notify::Notification;
use latch_core::ports::{Census, PruneReport, Store, StoreError, WriteBatch};
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, Type};

use crate::batch::{append_events, apply_write};
use crate::codec::{
    self, AUDIT_DEFAULT_LIMIT, AUDIT_MAX_LIMIT, BULK_MAX_LIMIT, CheckpointRow, EventRow, RecordRow,
    decode, decode_all, limit,
};
use crate::sql::{self, Dialect, unavailable, write_error};

/// A [`Store`] on one SQL backend: pools for reads and writes, and the backend's own state.
///
/// Cloning is cheap and shares the connections.
pub struct SqlStore<DB: Dialect> {
    /// Connections for reads (SQLite: read-only; PostgreSQL: the one pool).
    pub(crate) reader: Pool<DB>,
    /// Connections for writes (SQLite: the one writer; PostgreSQL: the same pool as reads).
    pub(crate) writer: Pool<DB>,
    /// What only this backend has (SQLite: the group writer; PostgreSQL: listen options).
    pub(crate) extra: DB::Extra,
    /// The longest one call may take ([`crate::Deadlines::operation`]).
    pub(crate) deadline: Duration,
}

impl<DB: Dialect> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        Self {
            reader: self.reader.clone(),
            writer: self.writer.clone(),
            extra: self.extra.clone(),
            deadline: self.deadline,
        }
    }
}

impl<DB> SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> Option<&'a str>: Encode<'a, DB> + Type<DB>,
    for<'a> String: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> Option<i64>: Encode<'a, DB> + Type<DB>,
{
    /// Applies `batch` in one write transaction: its writes, the backend's after-write step,
    /// then its audit events, appended last so the chain head is held only for the appends and
    /// the commit. Nothing is written unless everything is.
    ///
    /// Bounded by the store's deadline: before `COMMIT` is sent, a failure or the deadline is
    /// [`StoreError::Unavailable`] (the transaction is dropped, so the server rolls it back);
    /// after, a lost answer is [`StoreError::OutcomeUnknown`] ([`commit_outcome`]).
    pub(crate) async fn apply_in_transaction(
        &self,
        batch: &WriteBatch,
    ) -> Result<Vec<i64>, StoreError> {
        let until = tokio::time::Instant::now() + self.deadline;
        let staged = within::<DB, _>(until, self.deadline, "apply", async {
            let mut tx = DB::begin_write(self).await?;
            let result = async {
                for w in &batch.writes {
                    apply_write::<DB>(&mut tx, w).await?;
                }
                DB::after_writes(&mut tx, &batch.writes).await?;
                if batch.audit.is_empty() {
                    return Ok(Vec::new());
                }
                append_events::<DB>(&mut tx, &batch.audit).await
            }
            .await;
            match result {
                Ok(seqs) => Ok((tx, seqs)),
                Err(err) => {
                    // Best effort: dropping the transaction rolls back too.
                    let _ = tx.rollback().await;
                    Err(err)
                }
            }
        })
        .await;
        let (tx, seqs) = staged?;
        match tokio::time::timeout_at(until, tx.commit()).await {
            Ok(Ok(())) => Ok(seqs),
            Ok(Err(e)) => Err(commit_outcome::<DB>(&e)),
            Err(_) => Err(StoreError::OutcomeUnknown(format!(
                "{}: commit: no answer within {} ms",
                DB::LABEL,
                self.deadline.as_millis()
            ))),
        }
    }

    /// Runs `op` within the store's deadline ([`within`]).
    pub(crate) async fn bounded<T>(
        &self,
        what: &str,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let until = tokio::time::Instant::now() + self.deadline;
        within::<DB, T>(until, self.deadline, what, op).await
    }

    /// One body by key, decoded as `what`.
    async fn one<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        sql: &'static str,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let body = sqlx::query_scalar::<DB, String>(sql)
            .bind(key)
            .fetch_optional(&self.reader)
            .await
            .map_err(|e| unavailable::<DB>(&format!("read {what}"), &e))?;
        body.map(|b| decode(what, &b)).transpose()
    }

    /// One page of bodies after `after_id` (`$1`), at most `n` (`$2`), decoded as `what`.
    async fn paged<T: serde::de::DeserializeOwned>(
        &self,
        label: &str,
        what: &str,
        sql: &'static str,
        after_id: &str,
        n: u32,
    ) -> Result<Vec<T>, StoreError> {
        self.bounded(label, async {
            let bodies = sqlx::query_scalar::<DB, String>(sql)
                .bind(after_id)
                .bind(limit(n))
                .fetch_all(&self.reader)
                .await
                .map_err(|e| unavailable::<DB>(&format!("list {label}"), &e))?;
            decode_all(what, bodies)
        })
        .await
    }

    /// Runs one write statement in its own write transaction.
    async fn write_one<'q>(
        &self,
        what: &str,
        query: sqlx::query::Query<'q, DB, DB::Arguments>,
    ) -> Result<(), StoreError> {
        let mut tx = DB::begin_write(self).await?;
        query
            .execute(&mut *tx)
            .await
            .map_err(|e| write_error::<DB>(what, &e))?;
        tx.commit()
            .await
            .map_err(|e| write_error::<DB>("commit", &e))
    }
}

#[async_trait]
impl<DB> Store for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> Option<&'a str>: Encode<'a, DB> + Type<DB>,
    for<'a> &'a [u8]: Encode<'a, DB> + Type<DB>,
    for<'a> String: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> Option<String>: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> Option<i64>: Encode<'a, DB> + Type<DB>,
    for<'a> Vec<u8>: Decode<'a, DB> + Type<DB>,
{
    async fn apply(&self, batch: WriteBatch) -> Result<Vec<i64>, StoreError> {
        DB::apply(self, batch).await
    }

    async fn task(&self, id: &str) -> Result<Option<Task>, StoreError> {
        self.bounded("task", async { self.one("task", sql::TASK, id).await })
            .await
    }

    async fn counters(
        &self,
        scope: CounterScope,
        subject: &str,
    ) -> Result<Vec<CounterRow>, StoreError> {
        self.bounded("counters", async {
            match DB::combined_counters(self, scope, subject).await {
                Some(read) => read,
                None => crate::counters::read(&self.reader, scope, subject).await,
            }
        })
        .await
    }

    async fn live_lease_count(
        &self,
        scope: CounterScope,
        subject: &str,
        now: i64,
    ) -> Result<i64, StoreError> {
        self.bounded(
            "live leases",
            crate::counters::live(&self.reader, scope, subject, now),
        )
        .await
    }

    async fn tasks_by_owner(&self, owner_id: &str, n: u32) -> Result<Vec<Task>, StoreError> {
        self.bounded("tasks by owner", async {
            let bodies = sqlx::query_scalar::<DB, String>(sql::TASKS_BY_OWNER)
                .bind(owner_id)
                .bind(limit(n))
                .fetch_all(&self.reader)
                .await
                .map_err(|e| unavailable::<DB>("list tasks by owner", &e))?;
            decode_all("task", bodies)
        })
        .await
    }

    async fn expired_open_tasks(&self, now: i64, n: u32) -> Result<Vec<Task>, StoreError> {
        self.bounded("expired open tasks", async {
            let bodies = sqlx::query_scalar::<DB, String>(sql::EXPIRED_OPEN_TASKS)
                .bind(now)
                .bind(limit(n))
                .fetch_all(&self.reader)
                .await
                .map_err(|e| unavailable::<DB>("list expired tasks", &e))?;
            decode_all("task", bodies)
        })
        .await
    }

    async fn request(&self, id: &str) -> Result<Option<AccessRequest>, StoreError> {
        self.bounded("request", async {
            self.one("request", sql::REQUEST, id).await
        })
        .await
    }

    async fn pending_requests(&self, n: u32) -> Result<Vec<AccessRequest>, StoreError> {
        self.bounded("pending requests", async {
            let bodies = sqlx::query_scalar::<DB, String>(sql::PENDING_REQUESTS)
                .bind(limit(n))
                .fetch_all(&self.reader)
                .await
                .map_err(|e| unavailable::<DB>("list pending requests", &e))?;
            decode_all("request", bodies)
        })
        .await
    }

    async fn expired_requests(&self, now: i64, n: u32) -> Result<Vec<AccessRequest>, StoreError> {
        self.bounded("expired requests", async {
            let bodies = sqlx::query_scalar::<DB, String>(sql::EXPIRED_REQUESTS)
                .bind(now)
                .bind(limit(n))
                .fetch_all(&self.reader)
                .await
                .map_err(|e| unavailable::<DB>("list expired requests", &e))?;
            decode_all("request", bodies)
        })
        .await
    }

    async fn open_requests_by_task(&self, task_id: &str) -> Result<Vec<AccessRequest>, StoreError> {
        self.bounded("open requests by task", async {
            let bodies = sqlx::query_scalar::<DB, String>(sql::OPEN_REQUESTS_BY_TASK)
                .bind(task_id)
                .fetch_all(&self.reader)
                .await
                .map_err(|e| unavailable::<DB>("list a task's open requests", &e))?;
            decode_all("request", bodies)
        })
        .await
    }

    async fn approvals(&self, request_id: &str) -> Result<Vec<Approval>, StoreError> {
        self.bounded("approvals", async {
            let bodies = sqlx::query_scalar::<DB, String>(sql::APPROVALS)
                .bind(request_id)
                .fetch_all(&self.reader)
                .await
                .map_err(|e| unavailable::<DB>("list approvals", &e))?;
            decode_all("approval", bodies)
        })
        .await
    }

    async fn lease(&self, id: &str) -> Result<Option<Lease>, StoreError> {
        self.bounded("lease", async { self.one("lease", sql::LEASE, id).await })
            .await
    }

    async fn leases_by_task(&self, task_id: &str) -> Result<Vec<Lease>, StoreError> {
        self.bounded("leases by task", async {
            let bodies = sqlx::query_scalar::<DB, String>(sql::LEASES_BY_TASK)
                .bind(task_id)
                .fetch_all(&self.reader)
                .await
                .map_err(|e| unavailable::<DB>("list leases by task", &e))?;
            decode_all("lease", bodies)
        })
        .await
    }

    async fn open_tasks(&self, after_id: &str, n: u32) -> Result<Vec<Task>, StoreError> {
        self.paged("open tasks", "task", sql::OPEN_TASKS, after_id, n)
            .await
    }

    async fn live_leases(&self, after_id: &str, n: u32) -> Result<Vec<Lease>, StoreError> {
        self.paged("live leases", "lease", sql::LIVE_LEASES, after_id, n)
            .await
    }

    async fn recent_active_freezes(&self) -> Result<Vec<Freeze>, StoreError> {
        match DB::recent_active_freezes(self) {
            Some(freezes) => Ok(freezes),
            None => self.active_freezes().await,
        }
    }

    async fn active_freezes_after(&self, seq: i64) -> Result<Vec<Freeze>, StoreError> {
        match DB::active_freezes_after(self, seq) {
            Some(freezes) => Ok(freezes),
            None => self.active_freezes().await,
        }
    }

    async fn active_freezes(&self) -> Result<Vec<Freeze>, StoreError> {
        self.bounded("active freezes", async {
            if let Some(read) = DB::combined_active_freezes(self).await {
                return read;
            }
            let bodies = sqlx::query_scalar::<DB, String>(sql::ACTIVE_FREEZES)
                .fetch_all(&self.reader)
                .await
                .map_err(|e| unavailable::<DB>("list active freezes", &e))?;
            decode_all("freeze", bodies)
        })
        .await
    }

    async fn freeze(&self, id: &str) -> Result<Option<Freeze>, StoreError> {
        self.bounded("freeze", async {
            self.one("freeze", sql::FREEZE, id).await
        })
        .await
    }

    async fn active_leases(&self, after_id: &str, n: u32) -> Result<Vec<Lease>, StoreError> {
        self.bounded("active leases", async {
            let bodies = sqlx::query_scalar::<DB, String>(sql::ACTIVE_LEASES)
                .bind(after_id)
                .bind(limit(n))
                .fetch_all(&self.reader)
                .await
                .map_err(|e| unavailable::<DB>("list active leases", &e))?;
            decode_all("lease", bodies)
        })
        .await
    }

    async fn active_lease_tasks(&self, after_id: &str, n: u32) -> Result<Vec<Task>, StoreError> {
        self.bounded("active lease tasks", async {
            let bodies = sqlx::query_scalar::<DB, String>(sql::ACTIVE_LEASE_TASKS)
                .bind(after_id)
                .bind(limit(n))
                .fetch_all(&self.reader)
                .await
                .map_err(|e| unavailable::<DB>("list the tasks of active leases", &e))?;
            decode_all("task", bodies)
        })
        .await
    }

    async fn due_leases(
        &self,
        now: i64,
        issuing_grace_secs: i64,
        n: u32,
    ) -> Result<Vec<Lease>, StoreError> {
        self.bounded("due leases", async {
            let bodies = sqlx::query_scalar::<DB, String>(sql::DUE_LEASES)
                .bind(now)
                .bind(issuing_grace_secs)
                .bind(limit(n))
                .fetch_all(&self.reader)
                .await
                .map_err(|e| unavailable::<DB>("list due leases", &e))?;
            decode_all("lease", bodies)
        })
        .await
    }

    async fn claim_due_leases(
        &self,
        now: i64,
        issuing_grace_secs: i64,
        owner: &str,
        claim_until_unix_secs: i64,
        n: u32,
    ) -> Result<Vec<Lease>, StoreError> {
        self.bounded("claim due leases", async {
            if !DB::CLAIMS {
                return self.due_leases(now, issuing_grace_secs, n).await;
            }
            let bodies = sqlx::query_scalar::<DB, String>(sql::CLAIM_DUE_LEASES)
                .bind(now)
                .bind(issuing_grace_secs)
                .bind(limit(n))
                .bind(owner)
                .bind(claim_until_unix_secs)
                .fetch_all(&self.writer)
                .await
                .map_err(|e| write_error::<DB>("claim due leases", &e))?;
            decode_all("lease", bodies)
        })
        .await
    }

    async fn claim_pending_revocations(
        &self,
        now: i64,
        resource_id: &str,
        owner: &str,
        claim_until_unix_secs: i64,
        n: u32,
    ) -> Result<Vec<Lease>, StoreError> {
        self.bounded("claim pending revocations", async {
            let bodies = if DB::CLAIMS {
                sqlx::query_scalar::<DB, String>(sql::CLAIM_PENDING_REVOCATIONS)
                    .bind(now)
                    .bind(resource_id)
                    .bind(owner)
                    .bind(claim_until_unix_secs)
                    .bind(limit(n))
                    .fetch_all(&self.writer)
                    .await
                    .map_err(|e| write_error::<DB>("claim pending revocations", &e))?
            } else {
                sqlx::query_scalar::<DB, String>(sql::PENDING_REVOCATIONS_SQLITE)
                    .bind(resource_id)
                    .bind(limit(n))
                    .fetch_all(&self.reader)
                    .await
                    .map_err(|e| unavailable::<DB>("list pending revocations", &e))?
            };
            decode_all("lease", bodies)
        })
        .await
    }

    async fn claim_due_notifications(
        &self,
        now: i64,
        owner: &str,
        claim_until_unix_secs: i64,
        n: u32,
    ) -> Result<Vec<Notification>, StoreError> {
        self.bounded("claim due notifications", async {
            let bodies = if DB::CLAIMS {
                sqlx::query_scalar::<DB, String>(sql::CLAIM_DUE_NOTIFICATIONS)
                    .bind(now)
                    .bind(owner)
                    .bind(claim_until_unix_secs)
                    .bind(limit(n))
                    .fetch_all(&self.writer)
                    .await
                    .map_err(|e| write_error::<DB>("claim due notifications", &e))?
            } else {
                sqlx::query_scalar::<DB, String>(sql::DUE_NOTIFICATIONS)
                    .bind(now)
                    .bind(limit(n))
                    .fetch_all(&self.reader)
                    .await
                    .map_err(|e| unavailable::<DB>("list due notifications", &e))?
            };
            decode_all("notification", bodies)
        })
        .await
    }

    async fn notifications_for_request(
        &self,
        request_id: &str,
    ) -> Result<Vec<Notification>, StoreError> {
        self.bounded("notifications", async {
            let bodies = sqlx::query_scalar::<DB, String>(sql::NOTIFICATIONS_FOR_REQUEST)
                .bind(request_id)
                .fetch_all(&self.reader)
                .await
                .map_err(|e| unavailable::<DB>("read notifications", &e))?;
            decode_all("notification", bodies)
        })
        .await
    }

    async fn revoked_unexpired_leases(
        &self,
        now: i64,
        after_id: &str,
        n: u32,
    ) -> Result<Vec<Lease>, StoreError> {
        self.bounded("revoked unexpired leases", async {
            let bodies = sqlx::query_scalar::<DB, String>(sql::REVOKED_UNEXPIRED_LEASES)
                .bind(now)
                .bind(after_id)
                .bind(limit(n))
                .fetch_all(&self.reader)
                .await
                .map_err(|e| unavailable::<DB>("list revoked leases", &e))?;
            decode_all("lease", bodies)
        })
        .await
    }

    async fn lease_by_credential_hmac(&self, hmac_hex: &str) -> Result<Option<Lease>, StoreError> {
        self.bounded("lease by credential hmac", async {
            let body = sqlx::query_scalar::<DB, String>(sql::LEASE_BY_CREDENTIAL_HMAC)
                .bind(hmac_hex)
                .fetch_optional(&self.reader)
                .await
                .map_err(|e| unavailable::<DB>("find lease by credential", &e))?;
            body.map(|b| decode("lease", &b)).transpose()
        })
        .await
    }

    async fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        self.bounded("audit events", async {
            let n = filter
                .limit
                .unwrap_or(AUDIT_DEFAULT_LIMIT)
                .min(AUDIT_MAX_LIMIT);
            let Ok(hmac) = codec::hmac_filter(filter.credential_hmac.as_deref()) else {
                return Ok(Vec::new());
            };
            // Static statements, each led by a predicate an index serves; the remaining filters are
            // optional.
            let sql = format!(
                "{}{}{}",
                sql::audit_events_lead(filter.task_id.is_some(), filter.lease_id.is_some()),
                DB::AUDIT_KIND_FILTER,
                sql::AUDIT_EVENTS_REST
            );
            let rows = sqlx::query_as::<DB, EventRow>(sqlx::AssertSqlSafe(sql))
                .bind(filter.task_id.as_deref())
                .bind(filter.lease_id.as_deref())
                .bind(filter.kind_prefix.as_deref())
                .bind(filter.kind_prefix.as_deref().map(codec::like_prefix))
                .bind(filter.after_seq.unwrap_or(0))
                .bind(limit(n))
                .bind(filter.actor.as_deref())
                .bind(filter.since_unix_secs)
                .bind(filter.until_unix_secs)
                .bind(hmac)
                .fetch_all(&self.reader)
                .await
                .map_err(|e| unavailable::<DB>("list audit events", &e))?;
            codec::decode_events(rows)
        })
        .await
    }

    async fn audit_records(
        &self,
        after_seq: i64,
        limit_n: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.bounded("audit records", async {
            let rows = sqlx::query_as::<DB, RecordRow>(sql::AUDIT_RECORDS)
                .bind(after_seq)
                .bind(limit(limit_n.clamp(1, BULK_MAX_LIMIT)))
                .fetch_all(&self.reader)
                .await
                .map_err(|e| unavailable::<DB>("read audit records", &e))?;
            Ok(codec::records(rows))
        })
        .await
    }

    async fn audit_head(&self) -> Result<Option<(i64, String)>, StoreError> {
        self.bounded("audit head", async {
            sqlx::query_as::<DB, (i64, String)>(DB::AUDIT_HEAD)
                .fetch_optional(&self.reader)
                .await
                .map_err(|e| unavailable::<DB>("read audit head", &e))
        })
        .await
    }

    async fn put_checkpoint(&self, cp: &AuditCheckpoint) -> Result<(), StoreError> {
        self.bounded("put checkpoint", async {
            let query = sqlx::query::<DB>(sql::INSERT_CHECKPOINT)
                .bind(cp.seq)
                .bind(cp.hash.as_str())
                .bind(cp.at_unix_secs)
                .bind(cp.kid.as_str())
                .bind(cp.jws.as_str());
            self.write_one("store checkpoint", query).await
        })
        .await
    }

    async fn checkpoints(
        &self,
        after_seq: i64,
        limit_n: u32,
    ) -> Result<Vec<AuditCheckpoint>, StoreError> {
        self.bounded("checkpoints", async {
            let rows = sqlx::query_as::<DB, CheckpointRow>(sql::CHECKPOINTS)
                .bind(after_seq)
                .bind(limit(limit_n.clamp(1, BULK_MAX_LIMIT)))
                .fetch_all(&self.reader)
                .await
                .map_err(|e| unavailable::<DB>("read checkpoints", &e))?;
            Ok(rows.into_iter().map(codec::checkpoint).collect())
        })
        .await
    }

    async fn last_checkpoint(&self) -> Result<Option<AuditCheckpoint>, StoreError> {
        self.bounded("last checkpoint", async {
            let row = sqlx::query_as::<DB, CheckpointRow>(sql::LAST_CHECKPOINT)
                .fetch_optional(&self.reader)
                .await
                .map_err(|e| unavailable::<DB>("read checkpoints", &e))?;
            Ok(row.map(codec::checkpoint))
        })
        .await
    }

    async fn sink_cursor(&self, sink: &str) -> Result<i64, StoreError> {
        self.bounded("sink cursor", async {
            let seq = sqlx::query_scalar::<DB, i64>(sql::SINK_CURSOR)
                .bind(sink)
                .fetch_optional(&self.reader)
                .await
                .map_err(|e| unavailable::<DB>("read sink cursor", &e))?;
            Ok(seq.unwrap_or(0))
        })
        .await
    }

    async fn set_sink_cursor(&self, sink: &str, seq: i64) -> Result<(), StoreError> {
        self.bounded("set sink cursor", async {
            let query = sqlx::query::<DB>(DB::UPSERT_SINK_CURSOR)
                .bind(sink)
                .bind(seq);
            self.write_one("store sink cursor", query).await
        })
        .await
    }

    async fn key_blob(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.bounded("key blob", async {
            sqlx::query_scalar::<DB, Vec<u8>>(sql::KEY_BLOB)
                .bind(name)
                .fetch_optional(&self.reader)
                .await
                .map_err(|e| unavailable::<DB>("read key blob", &e))
        })
        .await
    }

    async fn put_key_blob_if_absent(&self, name: &str, blob: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.bounded("put key blob if absent", async {
            let mut tx = DB::begin_write(self).await?;
            // A concurrent insert of the same name makes this one wait for it (or for the write
            // lock), then do nothing; the SELECT then sees the winner's blob.
            sqlx::query::<DB>(sql::INSERT_KEY_BLOB)
                .bind(name)
                .bind(blob)
                .execute(&mut *tx)
                .await
                .map_err(|e| write_error::<DB>("store key blob", &e))?;
            let stored = sqlx::query_scalar::<DB, Vec<u8>>(sql::KEY_BLOB)
                .bind(name)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| unavailable::<DB>("read key blob", &e))?;
            tx.commit()
                .await
                .map_err(|e| write_error::<DB>("commit", &e))?;
            Ok(stored)
        })
        .await
    }

    async fn console_session(&self, id_hmac: &str) -> Result<Option<ConsoleSession>, StoreError> {
        self.bounded("console session", async {
            self.one("console session", sql::CONSOLE_SESSION, id_hmac)
                .await
        })
        .await
    }

    async fn oauth_record(
        &self,
        key: &str,
    ) -> Result<Option<latch_core::oauth_grant::OAuthRecord>, StoreError> {
        self.bounded("oauth record", async {
            self.one("oauth record", sql::OAUTH_RECORD, key).await
        })
        .await
    }

    async fn purge_console_sessions(&self, now: i64) -> Result<u64, StoreError> {
        self.bounded("purge console sessions", async {
            let mut tx = DB::begin_write(self).await?;
            let done = sqlx::query::<DB>(sql::PURGE_CONSOLE_SESSIONS)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| write_error::<DB>("purge console sessions", &e))?;
            tx.commit()
                .await
                .map_err(|e| write_error::<DB>("commit", &e))?;
            Ok(DB::rows_affected(&done))
        })
        .await
    }

    async fn prune_ended_tasks(
        &self,
        (expired_before, settled_through_seq, limit): (i64, i64, u32),
        record: AuditEvent,
    ) -> Result<PruneReport, StoreError> {
        self.bounded(
            "prune ended tasks",
            self.prune_tasks((expired_before, settled_through_seq, limit), record),
        )
        .await
    }

    async fn prune_audit_before(
        &self,
        cut: &AuditCheckpoint,
        record: AuditEvent,
    ) -> Result<u64, StoreError> {
        self.bounded("prune audit", self.prune_audit(cut, record))
            .await
    }

    async fn purge_received_sets(&self, now: i64) -> Result<u64, StoreError> {
        self.bounded("purge received sets", async {
            let mut tx = DB::begin_write(self).await?;
            let done = sqlx::query::<DB>(sql::PURGE_RECEIVED_SETS)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| write_error::<DB>("purge received sets", &e))?;
            tx.commit()
                .await
                .map_err(|e| write_error::<DB>("commit", &e))?;
            Ok(DB::rows_affected(&done))
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.bounded("ping", async {
            sqlx::query::<DB>("SELECT 1")
                .fetch_one(&self.reader)
                .await
                .map(|_| ())
                .map_err(|e| unavailable::<DB>("ping", &e))
        })
        .await
    }

    async fn census(&self) -> Result<Census, StoreError> {
        self.bounded("census", async {
            let row = sqlx::query_as::<DB, (i64, i64, i64, i64, i64, i64, i64, i64)>(DB::CENSUS)
                .fetch_one(&self.reader)
                .await
                .map_err(|e| unavailable::<DB>("count live state", &e))?;
            Ok(Census {
                open_tasks: row.0,
                live_leases: row.1,
                revoking_leases: row.2,
                pending_requests: row.3,
                pending_notifications: row.4,
                revoke_failed_leases: row.5,
                retrying_revocations: row.6,
                retrying_notifications: row.7,
            })
        })
        .await
    }
}

/// Runs `op` until `until` at the latest; past it the call is dropped (with its connection:
/// a transaction it held is rolled back by the server) and answered
/// [`StoreError::Unavailable`]. `budget` is only for the message.
pub(crate) async fn within<DB: Dialect, T>(
    until: tokio::time::Instant,
    budget: Duration,
    what: &str,
    op: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout_at(until, op)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "{}: {what}: no answer within {} ms",
                DB::LABEL,
                budget.as_millis()
            )))
        })
}

/// What a failed `COMMIT` means: the server's own error answer (a deferred constraint, a
/// serialisation failure) rolled the transaction back, as [`write_error`]; any other failure
/// (the connection broke, the answer never came) leaves the outcome unknown.
pub(crate) fn commit_outcome<DB: Dialect>(e: &sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Database(_) => write_error::<DB>("commit", e),
        other => {
            StoreError::OutcomeUnknown(format!("{}: commit: {}", DB::LABEL, DB::describe(other)))
        }
    }
}

/// Embedded migrations, in version order: `(version, description, sql)`.
pub(crate) type Migrations = &'static [(i64, &'static str, &'static str)];

/// A migrator for `migrations` (sqlx's, with its checksums and, on PostgreSQL, its advisory
/// lock).
pub(crate) fn migrator(migrations: Migrations) -> sqlx::migrate::Migrator {
    let list = migrations
        .iter()
        .map(|&(version, description, sql)| {
            sqlx::migrate::Migration::new(
                version,
                std::borrow::Cow::Borrowed(description),
                sqlx::migrate::MigrationType::Simple,
                sqlx::SqlSafeStr::into_sql_str(sql),
                false,
            )
        })
        .collect();
    sqlx::migrate::Migrator::with_migrations(list)
}

/// The failure of a schema migration (including an applied one whose SQL has since changed).
pub(crate) fn migration_failed(e: &sqlx::migrate::MigrateError) -> StoreError {
    StoreError::Unavailable(format!("schema migration failed: {e}"))
}

#[cfg(test)]
mod tests;
