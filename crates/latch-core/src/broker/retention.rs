//! Retention: ended tasks past `retention` are deleted from the store with their requests,
//! approvals, notifications and leases, so the database stays flat under a constant load. The
//! audit trail keeps every record of them, and each pass that deleted anything is itself
//! recorded (`store.pruned`).

use super::*;
use crate::ports::PruneReport;

/// Tasks deleted per store transaction.
const PRUNE_BATCH: u32 = 200;
/// Most batches per pass (a pass never holds the writer for long; the next one goes on).
const PRUNE_BATCHES: u32 = 10;

impl Broker {
    /// One retention pass: deletes tasks that expired more than `retention_secs` ago and are
    /// over (not `open`, every lease `revoked`, no approver notification pending, every audit
    /// record of theirs passed by each cursor in `cursors` — the Shared Signals streams, which
    /// read a revocation's task and lease when they transmit it), in batches
    /// of [`PRUNE_BATCH`], at most [`PRUNE_BATCHES`] of them, and records a `store.pruned`
    /// audit event with the counts when anything was deleted.
    ///
    /// # Errors
    /// `store_unavailable` (what earlier batches deleted stays deleted and is recorded).
    ///
    /// # Security
    /// A lease that is not `revoked` (still live, revoking, or whose revocation failed) keeps
    /// its task, so no credential is forgotten before its revocation is confirmed.
    pub async fn prune_ended(
        &self,
        retention_secs: i64,
        cursors: &[String],
    ) -> Result<PruneReport> {
        let cutoff = self.now().saturating_sub(retention_secs.max(0));
        let mut settled = i64::MAX;
        for c in cursors {
            settled = settled.min(self.store.sink_cursor(c).await?);
        }
        let mut total = PruneReport::default();
        let mut failed = None;
        for _ in 0..PRUNE_BATCHES {
            match self
                .store
                .prune_ended_tasks(cutoff, settled, PRUNE_BATCH)
                .await
            {
                Ok(r) => {
                    total.tasks += r.tasks;
                    total.requests += r.requests;
                    total.leases += r.leases;
                    if r.tasks < u64::from(PRUNE_BATCH) {
                        break;
                    }
                }
                Err(e) => {
                    failed = Some(ApiError::from(e));
                    break;
                }
            }
        }
        if total.tasks > 0 {
            let ev =
                AuditEvent::new(self.now(), AuditKind::StorePruned, BROKER, "ok").detail(json!({
                    "tasks": total.tasks, "requests": total.requests, "leases": total.leases,
                    "expired_before": cutoff, "retention_secs": retention_secs,
                }));
            self.commit(&CallCtx::default(), WriteBatch::new().audit(ev))
                .await?;
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }
}
