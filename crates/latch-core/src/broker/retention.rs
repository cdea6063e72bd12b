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

impl Broker {
    /// One retention transaction: deletes up to 50 tasks that expired and ended more than
    /// `retention_secs` ago and are over (not `open`, every lease `revoked`, no approver
    /// notification pending, every audit record of theirs passed by each store cursor in
    /// `cursors` — the Shared Signals streams, which read a revocation's task and lease when
    /// they transmit it), with their `store.pruned` audit event. The retention job calls again,
    /// pausing in between, until nothing is deleted.
    ///
    /// # Errors
    /// `store_unavailable` (nothing is deleted then).
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
        let record = AuditEvent::new(self.now(), AuditKind::StorePruned, BROKER, "ok");
        Ok(self
            .store
            .prune_ended_tasks((cutoff, settled, PRUNE_BATCH), record)
            .await?)
    }
}

/// Audit records deleted per store transaction at most (the cut is signed where it falls):
/// small enough that the transaction holds the store's writer for tens of milliseconds.
const AUDIT_PRUNE_RECORDS: i64 = 2_000;
/// Checkpoints read per page while looking for the limit.
const CHECKPOINT_PAGE: u32 = 500;

impl Broker {
    /// One audit retention transaction (`[retention] audit`): deletes up to 2,000 of the
    /// oldest audit records from the store, never past the newest stored checkpoint that
    /// `signer` verifies as its own, that was signed (its signed `iat`) more than
    /// `retention_secs` ago, and that every store cursor in `cursors` (each audit sink, each
    /// Shared Signals stream) has passed; the record at the cut must itself be that old (its
    /// hashed time). The cut is signed by `signer` as the stored chain's start
    /// ([`crate::audit::CutSigner`]) and the store appends its `audit.pruned` record. Returns
    /// the records deleted; the retention job calls again, pausing in between, until 0.
    ///
    /// # Errors
    /// `store_unavailable`: the store failed, signing failed, or (message `audit chain alarm`)
    /// a stored checkpoint is not the broker's or its time differs from the signed one, or the
    /// records that would go are not the chain as written. Nothing is deleted then.
    ///
    /// # Security
    /// With no cursor at all nothing is deleted: records go only once delivered elsewhere.
    /// Times come from signatures and hashed records, not from columns. The cursors are
    /// trusted: someone who can write the database can move them and so have records older
    /// than the retention pruned before a sink has them. The kept chain from the cut links to
    /// the signed limit checkpoint, which `latch audit verify` checks (see
    /// [`Store::prune_audit_before`]).
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
        let Some(first) = self.store.audit_records(0, 1).await?.first().map(|r| r.seq) else {
            return Ok(0);
        };
        let Some(limit) = self.audit_limit(first, delivered, cutoff, signer).await? else {
            return Ok(0);
        };
        let seq = limit.min(first.saturating_add(AUDIT_PRUNE_RECORDS));
        let at = self.store.audit_records(seq - 1, 1).await?;
        let Some(anchor) = at.first().filter(|r| r.seq == seq) else {
            return Ok(0);
        };
        let recorded_at = serde_json::from_str::<AuditEvent>(&anchor.body)
            .map(|e| e.at_unix_secs)
            .map_err(|_| alarm(format!("seq {seq} is not an audit event")))?;
        if recorded_at > cutoff {
            return Ok(0);
        }
        let cut = signer.sign_cut(seq, &anchor.hash).map_err(|e| {
            ApiError::new(ErrorCode::StoreUnavailable, format!("audit retention: {e}"))
        })?;
        let record = AuditEvent::new(self.now(), AuditKind::AuditPruned, BROKER, "ok");
        Ok(self.store.prune_audit_before(&cut, record).await?)
    }

    /// The seq the store may be cut at: the newest checkpoint after `first`, at most
    /// `delivered`, signed (as `signer` verifies it) no later than `cutoff`; the scan stops at
    /// the first one [`AUDIT_PRUNE_RECORDS`] past `first` (one transaction goes no further).
    async fn audit_limit(
        &self,
        first: i64,
        delivered: i64,
        cutoff: i64,
        signer: &dyn crate::audit::CutSigner,
    ) -> Result<Option<i64>> {
        let mut best = None;
        let mut after = first;
        loop {
            let page = self.store.checkpoints(after, CHECKPOINT_PAGE).await?;
            let full = page.len() == CHECKPOINT_PAGE as usize;
            for cp in page {
                after = cp.seq;
                if cp.seq > delivered {
                    return Ok(best);
                }
                let claims = signer.verify_own(&cp).map_err(|e| {
                    alarm(format!(
                        "the stored checkpoint at seq {} is not ours: {e}",
                        cp.seq
                    ))
                })?;
                // Signed by a key no longer published: not used as a limit.
                let Some(claims) = claims else { continue };
                if claims.iat != cp.at_unix_secs {
                    return Err(alarm(format!(
                        "the stored checkpoint at seq {} says it was signed at another time",
                        cp.seq
                    )));
                }
                if claims.iat > cutoff {
                    return Ok(best);
                }
                best = Some(cp.seq);
                if cp.seq - first >= AUDIT_PRUNE_RECORDS {
                    return Ok(best);
                }
            }
            if !full {
                return Ok(best);
            }
        }
    }
}

/// An audit chain alarm (`store_unavailable`): retention deletes nothing.
fn alarm(why: String) -> ApiError {
    ApiError::new(
        ErrorCode::StoreUnavailable,
        format!("audit chain alarm: {why}; nothing pruned"),
    )
}
