//! Retention: ended tasks past `retention` are deleted from the store with their requests,
//! approvals, notifications and leases, so the database stays flat under a constant load. The
//! audit trail keeps every record of them, and each deletion is itself recorded
//! (`store.pruned`, with the task ids, in the same transaction).
//!
//! Audit retention (opt-in): the oldest audit records go too, once every audit sink has
//! delivered them, up to a signed checkpoint, with an `audit.pruned` record in the chain.

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

/// Audit records deleted per store transaction at most (the cut is signed where it falls):
/// small enough that the transaction holds the store's writer for tens of milliseconds.
const AUDIT_PRUNE_RECORDS: i64 = 2_000;
/// Most audit prune transactions per pass.
const AUDIT_PRUNE_BATCHES: u32 = 10;
/// Checkpoints read per page while looking for the cut.
const CHECKPOINT_PAGE: u32 = 500;

impl Broker {
    /// One audit retention pass (`[retention] audit`): deletes the oldest audit records from
    /// the store, up to (not including) the newest stored checkpoint that is older than
    /// `retention_secs` and that every store cursor in `cursors` (each audit sink, each Shared
    /// Signals stream) has passed, at most 2,000 records per transaction and 10 transactions
    /// per call (the retention job calls again until nothing is left). Each transaction cuts at a record `signer` signs as the stored chain's start
    /// ([`crate::audit::CutSigner`]) and appends its `audit.pruned` record. Returns the
    /// records deleted.
    ///
    /// # Errors
    /// `store_unavailable`: the store failed, signing failed, or (message `audit chain alarm`)
    /// the records that would go are not the chain as written; nothing of that transaction is
    /// deleted (what earlier transactions deleted stays deleted, and recorded).
    ///
    /// # Security
    /// With no cursor at all nothing is deleted: records go only once delivered elsewhere.
    /// What goes is checked first, the cut is signed with the broker's key, and the chain
    /// records it (see [`Store::prune_audit_before`]), so `latch audit verify` accepts a stored
    /// chain that starts after seq 1 only on such a cut.
    pub async fn prune_audit(
        &self,
        retention_secs: i64,
        cursors: &[String],
        signer: &dyn crate::audit::CutSigner,
    ) -> Result<u64> {
        if cursors.is_empty() {
            return Ok(0);
        }
        let cutoff = self.now().saturating_sub(retention_secs.max(0));
        let mut delivered = i64::MAX;
        for c in cursors {
            delivered = delivered.min(self.store.sink_cursor(c).await?);
        }
        let mut total = 0;
        for _ in 0..AUDIT_PRUNE_BATCHES {
            let Some(first) = self.store.audit_records(0, 1).await?.first().map(|r| r.seq) else {
                break;
            };
            let Some(limit) = self.audit_cut(first, delivered, cutoff).await? else {
                break;
            };
            let seq = limit.min(first.saturating_add(AUDIT_PRUNE_RECORDS));
            let at = self.store.audit_records(seq - 1, 1).await?;
            let Some(anchor) = at.first().filter(|r| r.seq == seq) else {
                break;
            };
            let cut = signer.sign_cut(seq, &anchor.hash).map_err(|e| {
                ApiError::new(ErrorCode::StoreUnavailable, format!("audit retention: {e}"))
            })?;
            let record = AuditEvent::new(self.now(), AuditKind::AuditPruned, BROKER, "ok");
            let n = self.store.prune_audit_before(&cut, record).await?;
            total += n;
            if n == 0 {
                break;
            }
        }
        Ok(total)
    }

    /// The seq the store may be cut at: the newest checkpoint after `first`, at most
    /// `delivered`, signed no later than `cutoff` (every record up to it is older than that).
    async fn audit_cut(&self, first: i64, delivered: i64, cutoff: i64) -> Result<Option<i64>> {
        let mut best = None;
        let mut after = first;
        loop {
            let page = self.store.checkpoints(after, CHECKPOINT_PAGE).await?;
            let full = page.len() == CHECKPOINT_PAGE as usize;
            for cp in page {
                if cp.seq > delivered || cp.at_unix_secs > cutoff {
                    return Ok(best);
                }
                after = cp.seq;
                best = Some(cp.seq);
            }
            if !full {
                return Ok(best);
            }
        }
    }
}
