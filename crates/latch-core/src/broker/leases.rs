//! Leases: list them and renew them under a fresh policy decision.

use super::*;

impl Broker {
    /// Leases of the caller's task.
    ///
    /// # Errors
    /// `task_not_found`.
    pub async fn leases(&self, caller: &Workload, task_id: &str) -> Result<Vec<Lease>> {
        let task = self.owned_task(caller, task_id).await?;
        Ok(self.store.leases_by_task(&task.id).await?)
    }

    pub(super) async fn owned_lease(
        &self,
        caller: &Workload,
        lease_id: &str,
    ) -> Result<(Lease, Task)> {
        let not_found = || {
            ApiError::new(
                ErrorCode::LeaseNotFound,
                format!("no lease {}", quote(lease_id)),
            )
        };
        let lease = self.store.lease(lease_id).await?.ok_or_else(not_found)?;
        let task = self
            .owned_task(caller, &lease.task_id)
            .await
            .map_err(|_| not_found())?;
        Ok((lease, task))
    }

    /// Renews a lease: a fresh, full policy evaluation with current context, then a new
    /// credential whose validity never passes the lease's max TTL or the task's end. A renewal
    /// that policy no longer allows revokes the lease.
    ///
    /// # Errors
    /// `lease_not_found`, `lease_not_active`, `task_not_open`, `policy_denied`,
    /// `environment_separation`, `ttl_out_of_bounds` (max TTL reached), `frozen`, `provider_failed`.
    #[tracing::instrument(name = "latch.renew", skip_all, fields(latch.request_id = ctx.request_id.as_deref(),
        latch.task_id = tracing::field::Empty, latch.lease_id = tracing::field::Empty,
        latch.resource = tracing::field::Empty))]
    pub async fn renew(
        &self,
        ctx: &CallCtx,
        caller: &Workload,
        lease_id: &str,
        ttl_secs: Option<i64>,
    ) -> Result<Grant> {
        let (lease, task) = self.owned_lease(caller, lease_id).await?;
        crate::telemetry::record_lease(&lease);
        let now = self.now();
        check_renewable(&lease, now)?;
        self.open_task_check(&task)?;
        let resource = self.resource(&lease.resource_id)?.clone();
        self.refuse_if_frozen(ctx, &task, &resource.id, "renewal", FreezeRead::Fresh)
            .await?;
        let req = self
            .store
            .request(&lease.request_id)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::Internal, "lease has no request"))?;
        let ttl = ttl_secs.unwrap_or(req.ttl_secs);
        // The schema says `minimum: 1`: below it the request is malformed.
        if ttl <= 0 {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("`ttl_secs` must be at least 1, got {ttl}"),
            ));
        }
        // As for a new request: clamp to the resource's max before policy sees it.
        let ttl = ttl.min(resource.max_ttl_secs);
        let approval = self.approval_context(&req).await?;
        let view = self.history_view(&task, now).await?;
        if let Some(b) = self.renewal_breach(&view) {
            return Err(self
                .renewal_over_budget(ctx, caller, (&task, &resource), &lease, &b, now)
                .await);
        }
        let decision = self.decide(&Ask {
            task: &task,
            workload: caller,
            resource: &resource,
            actions: &lease.actions,
            ttl_secs: ttl,
            source_ip: ctx.source_ip.as_deref(),
            approval: &approval,
            params: &req.params,
            history: &view,
        });
        let policy_max = match &decision {
            Decision::Allow { max_ttl_secs, .. } => *max_ttl_secs,
            refused => {
                let e = self
                    .refuse_renewal(ctx, caller, &task, &lease, refused, now)
                    .await?;
                return Err(e);
            }
        };
        let expires = ttl::renewal_expiry(
            now,
            ttl,
            resource.max_ttl_secs,
            policy_max,
            lease.max_expires_at_unix_secs,
            task.expires_at_unix_secs,
        )
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::TtlOutOfBounds,
                format!("lease `{}` reached its max ttl", lease.id),
            )
        })?;
        let provider = self
            .providers
            .get(&lease.provider)
            .ok_or_else(|| ApiError::new(ErrorCode::Internal, "provider not configured"))?
            .clone();
        let mint_req = MintRequest {
            lease_id: &lease.id,
            task: &task,
            principal_id: &task.owner.id,
            resource: &resource,
            actions: &lease.actions,
            issued_at_unix_secs: now,
            expires_at_unix_secs: expires,
            params: &req.params,
            binding: &lease.binding,
        };
        let external = provider.has_external_state();
        if external {
            self.require_target_up(&resource.id)?;
        }
        let minted = self
            .call_target(
                &resource.id,
                external,
                "renew",
                provider.renew(&lease, &mint_req),
            )
            .await
            .map_err(|e| targets::provider_api_error(&e, "could not renew"))?;
        let mut n = lease.clone();
        n.expires_at_unix_secs = expires;
        n.renewals += 1;
        n.version += 1;
        n.revocation_handle = minted.revocation_handle;
        n.credential_hmac = Some(self.hasher.hmac_secret(&minted.credential.secret));
        let ev = AuditEvent::new(now, AuditKind::CredentialRenewed, &caller.id, "ok")
            .task(&task.id)
            .lease(&n.id)
            .access_request(&n.request_id)
            .detail(
                json!({"policy_ids": decision.policy_ids(), "expires_at_unix_secs": expires,
                "renewals": n.renewals, "credential_hmac": n.credential_hmac}),
            );
        let generation = self.live_generation();
        let guard = history::version_guard(&task.id, view.task.version);
        self.commit_renewal(ctx, caller, (&task, &resource, guard), &lease, &n, ev, now)
            .await?;
        self.index_remove(&lease);
        self.index_insert_since(&n, &task, generation);
        Ok(Grant {
            request: req,
            lease: n,
            credential: minted.credential,
        })
    }

    /// Revokes a lease whose renewal policy refused (recording `credential.renewal_denied`) and
    /// returns the error the renewal answers, coded by the decision's [`DenyCode`].
    async fn refuse_renewal(
        &self,
        ctx: &CallCtx,
        caller: &Workload,
        task: &Task,
        lease: &Lease,
        decision: &Decision,
        now: i64,
    ) -> Result<ApiError> {
        let code = decision.deny_code().unwrap_or(DenyCode::PolicyDenied);
        let (ids, reasons) = match decision {
            Decision::Deny {
                policy_ids,
                reasons,
                ..
            } => (policy_ids.clone(), reasons.clone()),
            other => (
                other.policy_ids().to_vec(),
                vec!["renewal needs a new approval; open a new request".into()],
            ),
        };
        let ev = AuditEvent::new(
            now,
            AuditKind::CredentialRenewalDenied,
            &caller.id,
            decision.kind(),
        )
        .task(&task.id)
        .lease(&lease.id)
        .detail(json!({"policy_ids": ids, "reasons": reasons}));
        let (b, rv) = self.revocation_writes(
            WriteBatch::new().audit(ev),
            std::slice::from_ref(lease),
            "renewal_denied",
            &caller.id,
            now,
        );
        self.commit(ctx, b).await?;
        self.index_remove(lease);
        let _ = self.revoke_all(rv).await;
        Ok(ApiError::new(
            code.error_code(),
            format!(
                "renewal denied ({}); the lease was revoked: {}",
                ids.join(", "),
                reasons.join("; ")
            ),
        ))
    }
}

impl Broker {
    /// Commits renewed lease `n` of `lease` with its audit event `ev`, its counters (capped by
    /// the renewal budgets, checked again inside the commit) and `guard` (the task's history
    /// version the decision read). A budget passed at the commit (another renewal won the race)
    /// is refused as one seen before it, ending the task when the breach says so.
    #[expect(
        clippy::too_many_arguments,
        reason = "the renewal's parts, each already borrowed by `renew`"
    )]
    async fn commit_renewal(
        &self,
        ctx: &CallCtx,
        caller: &Workload,
        (task, resource, guard): (&Task, &Resource, Write),
        lease: &Lease,
        n: &Lease,
        ev: AuditEvent,
        now: i64,
    ) -> Result<()> {
        let counted =
            crate::history::renewal_deltas(&task.id, &task.owner.id, &self.settings.budgets, now);
        // Renewed only if the history its decision read has not changed since.
        let batch = WriteBatch::new()
            .write(guard)
            .write(Write::Count(counted))
            .write(Write::UpdateLease(n.clone()))
            .audit(ev);
        match self.commit(ctx, batch).await {
            Ok(_) => Ok(()),
            Err(StoreError::LimitReached(scope, name)) => {
                // The renewed credential is dropped unseen; the lease keeps its old expiry.
                Err(match self.breach_of(scope, &name) {
                    Some(b) => {
                        self.renewal_over_budget(ctx, caller, (task, resource), lease, &b, now)
                            .await
                    }
                    None => {
                        let why = format!("{} renewal budget reached", scope.as_str());
                        self.refuse_renewal_budget(ctx, caller, task, lease, &why, now)
                            .await
                    }
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Refuses a renewal that would pass budget `b` (recorded), ending the task when the breach
    /// says so; returns the error the renewal answers.
    async fn renewal_over_budget(
        &self,
        ctx: &CallCtx,
        caller: &Workload,
        (task, resource): (&Task, &Resource),
        lease: &Lease,
        b: &crate::history::BudgetBreach,
        now: i64,
    ) -> ApiError {
        let e = self
            .refuse_renewal_budget(ctx, caller, task, lease, &b.reason(), now)
            .await;
        let denial = history::budget_denial(b);
        if self.denial_ends_task(resource, &denial, Some(b))
            && let Err(end) = self.end_task_for_denial(ctx, task, &denial).await
        {
            return end;
        }
        e
    }

    /// Records a renewal refused by a budget (`credential.renewal_denied`, outcome
    /// `budget_exceeded`) and returns the error it answers. The lease is not revoked: it keeps
    /// working until its current expiry.
    async fn refuse_renewal_budget(
        &self,
        ctx: &CallCtx,
        caller: &Workload,
        task: &Task,
        lease: &Lease,
        reason: &str,
        now: i64,
    ) -> ApiError {
        let ev = AuditEvent::new(
            now,
            AuditKind::CredentialRenewalDenied,
            &caller.id,
            "budget_exceeded",
        )
        .task(&task.id)
        .lease(&lease.id)
        .detail(json!({"reasons": [reason]}));
        if let Err(e) = self.commit(ctx, WriteBatch::new().audit(ev)).await {
            return e.into();
        }
        ApiError::new(
            ErrorCode::BudgetExceeded,
            format!(
                "renewal refused: {reason}; lease `{}` stays valid until it expires",
                lease.id
            ),
        )
    }
}

/// A lease can be renewed only while active and unexpired.
fn check_renewable(lease: &Lease, now: i64) -> Result<()> {
    if lease.state != LeaseState::Active || now >= lease.expires_at_unix_secs {
        return Err(ApiError::new(
            ErrorCode::LeaseNotActive,
            format!(
                "lease `{}` is {}",
                lease.id,
                if lease.state == LeaseState::Active {
                    "expired"
                } else {
                    lease.state.as_str()
                }
            ),
        ));
    }
    Ok(())
}
