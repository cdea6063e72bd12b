//! Retention: ended tasks past `retention` are deleted from the store with their requests,
//! approvals, notifications and leases, so the database stays flat under a constant load. The
//! audit trail keeps every record of them, and each deletion is itself recorded
//! (`store.pruned`, with the task ids, in the same transaction).

use super::*;
use crate::ports::PruneReport;

/// Tasks deleted per store transaction (each is six statements: small enough for a store a
/// few milliseconds away to finish well within its deadline).
const PRUNE_BATCH: u32 = 50;
/// Most batches per pass (a pass never holds the writer for long; the next one goes on).
const PRUNE_BATCHES: u32 = 20;

impl Broker {
    /// One retention pass: deletes tasks that expired and ended more than `retention_secs`
    /// ago and are over (not `open`, every lease `revoked`, no approver notification pending,
    /// every audit record of theirs passed by each store cursor in `cursors` — the Shared
    /// Signals streams, which read a revocation's task and lease when they transmit it), in
    /// batches of 50, at most 20 batches, each batch with its `store.pruned` audit event.
    ///
    /// # Errors
    /// `store_unavailable` (what earlier batches deleted stays deleted, and recorded).
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
        for _ in 0..PRUNE_BATCHES {
            let record = AuditEvent::new(self.now(), AuditKind::StorePruned, BROKER, "ok");
            let r = self
                .store
                .prune_ended_tasks((cutoff, settled, PRUNE_BATCH), record)
                .await?;
            total.tasks += r.tasks;
            total.requests += r.requests;
            total.leases += r.leases;
            if r.tasks < u64::from(PRUNE_BATCH) {
                break;
            }
        }
        Ok(total)
    }
}
