//! Revocation: by the owner, by credential value, by operators, and the reaper's pass.

use super::*;

/// What one reaper pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReapReport {
    /// Tasks expired.
    pub tasks_expired: usize,
    /// Requests expired.
    pub requests_expired: usize,
    /// Leases revoked.
    pub leases_revoked: usize,
    /// Revocation attempts that failed (will be retried).
    pub revocations_failed: usize,
    /// Revocations not attempted because their target is down (resumed when it answers) or
    /// another worker of this process is on them.
    pub revocations_parked: usize,
}

impl Broker {
    /// Revokes a lease of the caller's task.
    ///
    /// # Errors
    /// `lease_not_found`, `lease_not_active`, `store_unavailable`.
    pub async fn revoke(&self, ctx: &CallCtx, caller: &Workload, lease_id: &str) -> Result<Lease> {
        let (lease, _) = self.owned_lease(caller, lease_id).await?;
        self.revoke_lease(ctx, lease, "revoked_by_owner", &caller.id)
            .await
    }

    /// Revokes whatever lease the credential `value` belongs to (RFC 7009: unknown or inactive
    /// tokens are not an error). Returns the lease id if one was revoked.
    ///
    /// # Errors
    /// `store_unavailable`.
    ///
    /// With `owner`, only a lease of a task that workload owns is revoked (RFC 7009 §2.1: the
    /// token must have been issued to the caller); others are silently ignored.
    pub async fn revoke_by_value(
        &self,
        ctx: &CallCtx,
        value: &str,
        actor: &str,
        owner: Option<&Workload>,
    ) -> Result<Option<String>> {
        let h = self.hasher.hmac_hex(value);
        match self.store.lease_by_credential_hmac(&h).await? {
            Some(l) if l.state.is_live() => {
                if let Some(w) = owner
                    && self.owned_task(w, &l.task_id).await.is_err()
                {
                    return Ok(None);
                }
                let id = l.id.clone();
                self.revoke_lease(ctx, l, "revoked_by_token", actor).await?;
                Ok(Some(id))
            }
            _ => Ok(None),
        }
    }

    /// Revokes a lease (operator or internal use).
    ///
    /// # Errors
    /// `lease_not_active` if already revoked, `store_unavailable`.
    #[tracing::instrument(name = "latch.revoke", skip_all, fields(latch.request_id = ctx.request_id.as_deref(),
        latch.task_id = tracing::field::Empty, latch.lease_id = tracing::field::Empty,
        latch.resource = tracing::field::Empty))]
    pub async fn revoke_lease(
        &self,
        ctx: &CallCtx,
        lease: Lease,
        reason: &str,
        actor: &str,
    ) -> Result<Lease> {
        crate::telemetry::record_lease(&lease);
        if !lease.state.is_live() {
            return Err(ApiError::new(
                ErrorCode::LeaseNotActive,
                format!("lease `{}` is already revoked", lease.id),
            ));
        }
        let now = self.now();
        let (b, rv) = self.revocation_writes(
            WriteBatch::new(),
            std::slice::from_ref(&lease),
            reason,
            actor,
            now,
        );
        self.commit(ctx, b).await?;
        self.index_remove(&lease);
        let _ = self.revoke_all(rv).await;
        self.store
            .lease(&lease.id)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::Internal, "lease vanished"))
    }

    /// One reaper pass: expires overdue tasks (revoking their leases), expires stale requests,
    /// revokes expired leases and interrupted mints, and retries failed revocations. Safe to run
    /// after a crash or restart: everything it needs is in the store.
    ///
    /// # Errors
    /// `store_unavailable`.
    pub async fn reap(&self) -> Result<ReapReport> {
        let mut report = ReapReport::default();
        let now = self.now();
        let ctx = CallCtx::default();
        for t in self.store.expired_open_tasks(now, 200).await? {
            match self
                .end_task_internal(&ctx, t, TaskState::Expired, BROKER)
                .await
            {
                Ok(_) => report.tasks_expired += 1,
                Err(e) if e.code == ErrorCode::Conflict || e.code == ErrorCode::TaskNotOpen => {}
                Err(e) => return Err(e),
            }
        }
        for r in self.store.expired_requests(now, 500).await? {
            self.expire_request(r).await?;
            report.requests_expired += 1;
        }
        let due = self
            .store
            .claim_due_leases(
                now,
                self.settings.issuing_grace_secs,
                &self.settings.replica_id,
                now + self.claim_secs(),
                500,
            )
            .await?;
        let mut attempts = Vec::new();
        for l in due {
            if matches!(l.state, LeaseState::Active | LeaseState::Issuing) {
                let reason = if l.state == LeaseState::Active {
                    "expired"
                } else {
                    "mint_interrupted"
                };
                let (b, rv) = self.revocation_writes(
                    WriteBatch::new(),
                    std::slice::from_ref(&l),
                    reason,
                    BROKER,
                    now,
                );
                match self.commit(&ctx, b).await {
                    Ok(_) => {}
                    Err(StoreError::Conflict(_)) => continue,
                    Err(e) => return Err(e.into()),
                }
                self.index_remove(&l);
                match rv.into_iter().next() {
                    Some(x) => attempts.push(x),
                    None => report.leases_revoked += 1,
                }
            } else {
                attempts.push(l);
            }
        }
        // Every target at once, each in its own lane: a target that hangs costs its own
        // leases one call deadline, and nobody else anything.
        for outcome in self.revoke_all(attempts).await {
            match outcome {
                Ok(Attempt::Revoked) => report.leases_revoked += 1,
                Ok(Attempt::Failed) => report.revocations_failed += 1,
                Ok(Attempt::Skipped) => report.revocations_parked += 1,
                Err(e) if e.code == ErrorCode::Conflict => {}
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }
}
