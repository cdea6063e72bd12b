//! Retention ([`Store::prune_ended_tasks`](latch_core::ports::Store::prune_ended_tasks)): ended
//! tasks past the cut-off, deleted with what hangs off them, and the audit record of the
//! deletion, in one write transaction. The audit trail's own retention is in `prune_audit`.

use latch_core::model::{AuditEvent, Task};
use latch_core::ports::{PruneReport, StoreError};
use serde_json::json;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Type};

use crate::batch::append_events;
use crate::codec::decode;
use crate::sql::{Dialect, write_error};
use crate::store::SqlStore;

/// Ended tasks whose expiry is before `$1`, every lease `revoked`, no notification pending and
/// no audit record after `$3`, oldest first, at most `$2`; their bodies, to check when they
/// ended.
const CANDIDATES: &str = "SELECT t.id, t.body FROM tasks t \
    WHERE t.state IN ('completed', 'cancelled', 'expired') AND t.expires_at < $1 \
    AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.task_id = t.id AND l.state <> 'revoked') \
    AND NOT EXISTS (SELECT 1 FROM requests r JOIN notifications n ON n.request_id = r.id \
                    WHERE r.task_id = t.id AND n.state = 'pending') \
    AND NOT EXISTS (SELECT 1 FROM audit_events a WHERE a.task_id = t.id AND a.seq > $3) \
    ORDER BY t.expires_at, t.id LIMIT $2";

/// Per task, children first; the counts of leases, requests and tasks are reported.
const DELETE_APPROVALS: &str =
    "DELETE FROM approvals WHERE request_id IN (SELECT id FROM requests WHERE task_id = $1)";
const DELETE_NOTIFICATIONS: &str = "DELETE FROM notifications WHERE state <> 'pending' \
    AND request_id IN (SELECT id FROM requests WHERE task_id = $1)";
const DELETE_LEASES: &str = "DELETE FROM leases WHERE task_id = $1 AND state = 'revoked'";
const DELETE_REQUESTS: &str = "DELETE FROM requests WHERE task_id = $1";
const DELETE_COUNTERS: &str = "DELETE FROM counters WHERE scope = 'task' AND subject = $1";
const DELETE_TASK: &str =
    "DELETE FROM tasks WHERE id = $1 AND state IN ('completed', 'cancelled', 'expired')";

impl<DB> SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> String: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
{
    /// See [`Store::prune_ended_tasks`](latch_core::ports::Store::prune_ended_tasks).
    pub(crate) async fn prune_tasks(
        &self,
        (expired_before, settled_through_seq, limit): (i64, i64, u32),
        record: AuditEvent,
    ) -> Result<PruneReport, StoreError> {
        let mut tx = DB::begin_write(self).await?;
        let rows: Vec<(String, String)> = sqlx::query_as::<DB, (String, String)>(CANDIDATES)
            .bind(expired_before)
            .bind(i64::from(limit))
            .bind(settled_through_seq)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| write_error::<DB>("prune: candidates", &e))?;
        // Ended after it expired (completed late, or expired by a reaper that ran late): kept
        // until it has been over for the whole retention too.
        let mut ids = Vec::with_capacity(rows.len());
        for (id, body) in rows {
            let t: Task = decode("task", &body)?;
            if t.ended_at_unix_secs.unwrap_or(i64::MIN) < expired_before {
                ids.push(id);
            }
        }
        let mut report = PruneReport::default();
        for id in &ids {
            let mut run = async |sql: &'static str| {
                sqlx::query::<DB>(sql)
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await
                    .map(|done| DB::rows_affected(&done))
                    .map_err(|e| write_error::<DB>("prune", &e))
            };
            run(DELETE_APPROVALS).await?;
            run(DELETE_NOTIFICATIONS).await?;
            report.leases += run(DELETE_LEASES).await?;
            report.requests += run(DELETE_REQUESTS).await?;
            run(DELETE_COUNTERS).await?;
            report.tasks += run(DELETE_TASK).await?;
        }
        if report.tasks > 0 {
            let record = record.detail(json!({
                "task_ids": ids, "tasks": report.tasks, "requests": report.requests,
                "leases": report.leases, "expired_before": expired_before,
            }));
            append_events::<DB>(&mut tx, &[record]).await?;
        }
        tx.commit()
            .await
            .map_err(|e| write_error::<DB>("commit", &e))?;
        Ok(report)
    }
}
