//! Access requests: ask, claim after approval, and mint the credential.

use super::*;

/// How the request a credential is minted for reaches the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestRow {
    /// Decided just now: the request is inserted with its grant.
    New,
    /// Stored earlier (approved after step-up, now claimed): the stored row is updated.
    Stored,
}

/// Everything [`Broker::mint`] needs for one allowed request.
struct MintPlan<'a> {
    /// The task the credential is for (its version guards the commit).
    task: &'a Task,
    /// The resource.
    resource: &'a Resource,
    /// The allowed request; it leaves `mint` granted, naming its lease.
    request: AccessRequest,
    /// Its row in the store.
    row: RequestRow,
    /// The `request.decided` event, committed with the grant.
    decided: Option<AuditEvent>,
    /// The tightest `@max_ttl` of the permitting policies (seconds), if any.
    policy_max_ttl_secs: Option<i64>,
    /// Provider parameters of the request.
    params: &'a serde_json::Value,
    /// What the credential is bound to (DPoP key, actor, subject).
    binding: &'a TokenBinding,
    /// The history the decision read (its version guards the commit).
    view: &'a history::HistoryView,
}

/// A request's input once checked: its resource, sorted distinct actions and clamped TTL.
struct CheckedAsk {
    resource: Resource,
    actions: Vec<String>,
    ttl_secs: i64,
}

impl Broker {
    /// Asks for access in a task. Returns the credential (allow), the denial with policy ids and
    /// reasons (deny), or a pending request (step-up). A minted credential carries `binding`: a
    /// DPoP key thumbprint (RFC 9449 `cnf.jkt`), an RFC 8693 actor and subject
    /// ([`TokenBinding::NONE`] for a plain bearer credential of the caller).
    ///
    /// # Errors
    /// `task_not_found`, `task_not_open`, `unknown_resource`, `unknown_action`,
    /// `ttl_out_of_bounds`, `invalid_request`, `frozen` (an operator froze the scope),
    /// `provider_failed`, `store_unavailable`, and `dpop_required` when the resource requires a
    /// key binding and `binding` names no key.
    ///
    /// # Security
    /// `binding` must come from verified inputs only (a checked DPoP proof, verified tokens).
    #[tracing::instrument(name = "latch.grant", skip_all, fields(latch.request_id = ctx.request_id.as_deref(),
        latch.task_id = tracing::field::Empty, latch.lease_id = tracing::field::Empty,
        latch.resource = tracing::field::Empty))]
    pub async fn request_access(
        &self,
        ctx: &CallCtx,
        caller: &Workload,
        task_id: &str,
        input: RequestAccess,
        binding: &TokenBinding,
    ) -> Result<AccessOutcome> {
        let task = self.owned_task_cached(caller, task_id).await?;
        crate::telemetry::record_task(&task.id);
        self.open_task_check(&task)?;
        let checked = self.check_request(&input, binding)?;
        crate::telemetry::record_resource(&checked.resource.id);
        // A credential at a target with state of its own (a database role, a Redis user) is
        // only minted after a fresh read; a signed one, which never leaves this process before
        // the check after its commit, may pass on a recent read.
        let external = self
            .providers
            .get(&checked.resource.kind)
            .is_some_and(|p| p.has_external_state());
        let early = if external {
            FreezeRead::Fresh
        } else {
            FreezeRead::Recent
        };
        self.refuse_if_frozen(ctx, &task, &checked.resource.id, "request", early)
            .await?;
        // A grant whose history changed between decision and commit (`history_changed`) is
        // decided again with the new history, a few times.
        let mut attempt = 0;
        let (outcome, view, decision_ends) = loop {
            attempt += 1;
            let now = self.now();
            let view = self.history_view(&task, now).await?;
            // A used-up budget denies before policy (the store checks it again in the commit).
            let breach = self.grant_breach(&view);
            let decision = match &breach {
                Some(b) => history::budget_denial(b),
                None => self.decide(&Ask {
                    task: &task,
                    workload: caller,
                    resource: &checked.resource,
                    actions: &checked.actions,
                    ttl_secs: checked.ttl_secs,
                    source_ip: ctx.source_ip.as_deref(),
                    approval: &ApprovalContext::default(),
                    params: &input.params,
                    history: &view,
                }),
            };
            if matches!(early, FreezeRead::Recent) && !matches!(decision, Decision::Allow { .. }) {
                // Only an allowed grant is checked again after its commit: a denial (which may
                // end the task) or a step-up (which notifies approvers) is stored only after a
                // fresh read says no freeze covers it.
                self.refuse_if_frozen(
                    ctx,
                    &task,
                    &checked.resource.id,
                    "request",
                    FreezeRead::Fresh,
                )
                .await?;
            }
            let ends = self.denial_ends_task(&checked.resource, &decision, breach.as_ref());
            let req = new_request(ctx, &task, caller, &checked, input.clone(), decision, now);
            match self
                .settle_new_request(ctx, (&task, &view), &checked.resource, req, binding)
                .await
            {
                Err(e) if e.code == ErrorCode::HistoryChanged && attempt < 4 => continue,
                r => break (r?, view, ends),
            }
        };
        let ends = decision_ends;
        match &outcome {
            AccessOutcome::Denied(r) if ends => {
                self.end_task_for_denial(ctx, &task, &r.decision).await?;
            }
            AccessOutcome::Granted(g)
                if history::grant_changes_history(&view, &checked.resource) =>
            {
                self.enforce_on_history_change(&task, Some(&g.lease.id))
                    .await;
            }
            _ => {}
        }
        Ok(outcome)
    }

    /// Checks a request's input against its resource: justification, key binding, actions,
    /// TTL (clamped to the resource's maximum).
    fn check_request(&self, input: &RequestAccess, binding: &TokenBinding) -> Result<CheckedAsk> {
        check_text(
            "justification",
            &input.justification,
            self.settings.max_text_len,
            false,
        )?;
        let resource = self.resource(&input.resource)?.clone();
        check_binding(&resource, binding)?;
        let actions: Vec<String> = input
            .actions
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if actions.is_empty() {
            return Err(bad("`actions` must name at least one action"));
        }
        for a in &actions {
            if !resource.actions.contains(a) {
                return Err(ApiError::new(
                    ErrorCode::UnknownAction,
                    format!("resource `{}` offers no action {}", resource.id, quote(a)),
                ));
            }
        }
        let ttl = input.ttl_secs.unwrap_or(resource.default_ttl_secs);
        // The schema says `minimum: 1`: below it the request is malformed.
        if ttl <= 0 {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("`ttl_secs` must be at least 1, got {ttl}"),
            ));
        }
        let ttl_secs = ttl.min(resource.max_ttl_secs);
        Ok(CheckedAsk {
            resource,
            actions,
            ttl_secs,
        })
    }

    /// Records a just-decided request: denied and pending ones are stored with their decision;
    /// an allowed one is minted and stored with its credential.
    async fn settle_new_request(
        &self,
        ctx: &CallCtx,
        (task, view): (&Task, &history::HistoryView),
        resource: &Resource,
        mut req: AccessRequest,
        binding: &TokenBinding,
    ) -> Result<AccessOutcome> {
        let now = req.created_at_unix_secs;
        let caller = req.principal_id.clone();
        // The state the request reaches by this decision (an allowed request is granted in the
        // same commit as its credential).
        let decided = {
            let mut r = req.clone();
            if matches!(req.decision, Decision::Allow { .. }) {
                r.state = RequestState::Granted;
            }
            decision_event(now, &caller, &r)
        };
        match req.decision.clone() {
            Decision::Deny { .. } => {
                self.commit(
                    ctx,
                    WriteBatch::new()
                        .write(Write::InsertRequest(req.clone()))
                        .audit(decided),
                )
                .await?;
                Ok(AccessOutcome::Denied(req))
            }
            Decision::StepUp { .. } => {
                req.state = RequestState::Pending;
                req.expires_at_unix_secs = now + self.settings.pending_ttl_secs;
                let decided = decision_event(now, &caller, &req);
                // Never a pending request in a task that ended meanwhile (its end closed the
                // task's requests, and this one would escape that). The approvers'
                // notifications join the decision's batch (the outbox): the request never waits
                // on their delivery, and neither is stored without the other.
                let mut batch = WriteBatch::new()
                    .write(Write::RequireTaskOpen {
                        task_id: task.id.clone(),
                        version: task.version,
                    })
                    .write(Write::InsertRequest(req.clone()));
                batch
                    .writes
                    .extend(self.step_up_notifications(task, resource, &req));
                self.commit(ctx, batch.audit(decided)).await?;
                Ok(AccessOutcome::Pending(req))
            }
            Decision::Allow { max_ttl_secs, .. } => {
                let params = req.params.clone();
                self.mint(
                    ctx,
                    MintPlan {
                        task,
                        resource,
                        request: req,
                        row: RequestRow::New,
                        decided: Some(decided),
                        policy_max_ttl_secs: max_ttl_secs,
                        params: &params,
                        binding,
                        view,
                    },
                )
                .await
            }
        }
    }

    /// Mints for an allowed request and commits request, lease and audit together. With a
    /// provider that keeps external state, the `issuing` lease is committed first (durable
    /// intent) and activated after the mint.
    async fn mint(&self, ctx: &CallCtx, plan: MintPlan<'_>) -> Result<AccessOutcome> {
        let MintPlan {
            task,
            resource,
            request: mut req,
            row,
            decided,
            policy_max_ttl_secs,
            params,
            binding,
            view,
        } = plan;
        let now = self.now();
        let (provider, mut lease) =
            self.issuing_lease(task, resource, &req, policy_max_ttl_secs, binding, now)?;
        req.state = RequestState::Granted;
        req.lease_id = Some(lease.id.clone());
        let req_write = match row {
            RequestRow::New => Write::InsertRequest(req.clone()),
            RequestRow::Stored => {
                req.version += 1;
                Write::UpdateRequest(req.clone())
            }
        };
        let external = provider.has_external_state();
        let guard = Write::RequireTaskOpen {
            task_id: task.id.clone(),
            version: task.version,
        };
        // The task's history and the budgets, checked again inside the commit (before the
        // lease is inserted, so a live-lease count does not see it).
        let counters = self.grant_counter_writes(task, resource, &req.actions, now, view);
        let new_row = row == RequestRow::New;
        if external {
            self.require_target_up(&resource.id)?;
            // Durable intent first: a crash after minting leaves a lease the reaper revokes.
            let mut pre = WriteBatch::new().write(guard.clone());
            pre.writes.extend(counters.iter().cloned());
            pre = pre
                .write(req_write.clone())
                .write(Write::InsertLease(lease.clone()));
            if let Some(d) = &decided {
                pre = pre.audit(d.clone());
            }
            match self.commit(ctx, pre).await {
                Err(StoreError::LimitReached(scope, name)) => {
                    return self
                        .refuse_over_budget(ctx, task, resource, req, new_row, (scope, name))
                        .await;
                }
                other => {
                    other?;
                }
            }
        }
        let mint_req = MintRequest {
            lease_id: &lease.id,
            task,
            principal_id: &task.owner.id,
            resource,
            actions: &req.actions,
            issued_at_unix_secs: now,
            expires_at_unix_secs: lease.expires_at_unix_secs,
            params,
            binding,
        };
        let minted = match self
            .call_target(&resource.id, external, "mint", provider.mint(&mint_req))
            .await
        {
            Ok(m) => m,
            Err(e) => return Err(self.mint_failed(ctx, &req, &lease, external, e, now).await),
        };
        lease.state = LeaseState::Active;
        lease.revocation_handle = minted.revocation_handle;
        lease.credential_hmac = Some(self.hasher.hmac_secret(&minted.credential.secret));
        let issued = issued_event(now, &req, &lease, resource, &minted.credential.kind);
        let batch = if external {
            // The `issuing` row is at version 1; activation is a compare-and-set on it.
            lease.version += 1;
            WriteBatch::new()
                .write(Write::UpdateLease(lease.clone()))
                .audit(issued)
        } else {
            let mut b = WriteBatch::new().write(guard);
            b.writes.extend(counters);
            b = b.write(req_write).write(Write::InsertLease(lease.clone()));
            if let Some(d) = decided {
                b = b.audit(d);
            }
            b.audit(issued)
        };
        let generation = self.live_generation();
        let seqs = match self.commit(ctx, batch).await {
            Ok(seqs) => seqs,
            Err(e) => {
                if let (false, StoreError::LimitReached(scope, name)) = (external, &e) {
                    // Nothing left this process: the credential is dropped unseen.
                    let over = (*scope, name.clone());
                    return self
                        .refuse_over_budget(ctx, task, resource, req, new_row, over)
                        .await;
                }
                if external {
                    let _ = self
                        .call_target(&resource.id, external, "revoke", provider.revoke(&lease))
                        .await;
                }
                return Err(e.into());
            }
        };
        self.index_insert_since(&lease, task, generation);
        // A kill switch engaged while this grant was deciding: the lease is revoked, not
        // delivered (see `freezes`).
        self.recheck_frozen(ctx, task, &lease, &seqs).await?;
        Ok(AccessOutcome::Granted(Box::new(Grant {
            request: req,
            lease,
            credential: minted.credential,
        })))
    }

    /// The provider for `resource` and a new `issuing` lease for `req`, valid within the grant
    /// window (request TTL, resource and policy bounds, the task's end).
    fn issuing_lease(
        &self,
        task: &Task,
        resource: &Resource,
        req: &AccessRequest,
        policy_max: Option<i64>,
        binding: &TokenBinding,
        now: i64,
    ) -> Result<(Arc<dyn CredentialProvider>, Lease)> {
        let window = ttl::grant_window(
            now,
            req.ttl_secs,
            resource.max_ttl_secs,
            resource.max_lifetime_secs,
            policy_max,
            task.expires_at_unix_secs,
        )
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::TaskNotOpen,
                format!("task `{}` has no time left", task.id),
            )
        })?;
        let provider = self
            .providers
            .get(&resource.kind)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Internal,
                    format!("provider `{}` is not configured", resource.kind),
                )
            })?
            .clone();
        let lease = Lease {
            id: new_id("lease"),
            task_id: task.id.clone(),
            request_id: req.id.clone(),
            resource_id: resource.id.clone(),
            provider: resource.kind.clone(),
            actions: req.actions.clone(),
            state: LeaseState::Issuing,
            issued_at_unix_secs: now,
            expires_at_unix_secs: window.expires_at_unix_secs,
            max_expires_at_unix_secs: window.max_expires_at_unix_secs,
            renewals: 0,
            revocation_handle: String::new(),
            credential_hmac: None,
            revoke_reason: None,
            revoke_attempts: 0,
            next_revoke_at_unix_secs: None,
            last_revoke_error: None,
            revoked_at_unix_secs: None,
            revoke_requested_at_unix_millis: None,
            binding: binding.clone(),
            version: 1,
        };
        Ok((provider, lease))
    }

    /// Cleans up after a provider refused to mint and returns the error for the caller: an
    /// `issuing` lease already committed is revoked (nothing should exist, but to be sure);
    /// otherwise the failure is recorded as `credential.mint_failed`.
    async fn mint_failed(
        &self,
        ctx: &CallCtx,
        req: &AccessRequest,
        lease: &Lease,
        external: bool,
        e: crate::ports::ProviderError,
        now: i64,
    ) -> ApiError {
        if external {
            let (b, rv) = self.revocation_writes(
                WriteBatch::new(),
                std::slice::from_ref(lease),
                "mint_failed",
                BROKER,
                now,
            );
            let _ = self.commit(ctx, b).await;
            let _ = self.revoke_all(rv).await;
        } else {
            let ev = AuditEvent::new(
                now,
                AuditKind::CredentialMintFailed,
                &req.principal_id,
                "provider_failed",
            )
            .task(&lease.task_id)
            .access_request(&req.id)
            .detail(json!({"error": e.message}));
            let _ = self.commit(ctx, WriteBatch::new().audit(ev)).await;
        }
        targets::provider_api_error(&e, "could not mint")
    }

    /// An access request of the caller's task.
    ///
    /// # Errors
    /// `task_not_found`, `request_not_found`.
    pub async fn request(
        &self,
        caller: &Workload,
        task_id: &str,
        request_id: &str,
    ) -> Result<AccessRequest> {
        let task = self.owned_task(caller, task_id).await?;
        match self.store.request(request_id).await? {
            Some(r) if r.task_id == task.id => Ok(r),
            _ => Err(ApiError::new(
                ErrorCode::RequestNotFound,
                format!("no request {}", quote(request_id)),
            )),
        }
    }

    /// Claims the credential of an approved request. Policy is evaluated again, with the
    /// approval in context, before anything is minted; the credential is delivered once and
    /// carries `binding` (see [`request_access`](Self::request_access)).
    ///
    /// # Errors
    /// `request_not_found`, `request_not_pending` (denied, or already claimed), `request_expired`,
    /// `task_not_open`, `frozen` (an operator froze the scope), `provider_failed`, and
    /// `dpop_required` when the resource requires a key binding.
    ///
    /// # Security
    /// `binding` must come from verified inputs only.
    #[tracing::instrument(name = "latch.claim", skip_all, fields(latch.request_id = ctx.request_id.as_deref(),
        latch.task_id = tracing::field::Empty, latch.lease_id = tracing::field::Empty,
        latch.resource = tracing::field::Empty))]
    pub async fn claim(
        &self,
        ctx: &CallCtx,
        caller: &Workload,
        task_id: &str,
        request_id: &str,
        binding: &TokenBinding,
    ) -> Result<AccessOutcome> {
        let req = self.request(caller, task_id, request_id).await?;
        let task = self.owned_task(caller, task_id).await?;
        crate::telemetry::record_task(&task.id);
        crate::telemetry::record_resource(&req.resource_id);
        match req.state {
            RequestState::Pending => return Ok(AccessOutcome::Pending(req)),
            RequestState::Denied => return Ok(AccessOutcome::Denied(req)),
            RequestState::Granted => {
                return Err(ApiError::new(
                    ErrorCode::RequestNotPending,
                    format!(
                        "request `{}` was already granted; its credential is delivered only once",
                        req.id
                    ),
                ));
            }
            RequestState::Expired => {
                return Err(ApiError::new(
                    ErrorCode::RequestExpired,
                    format!("request `{}` expired", req.id),
                ));
            }
            RequestState::Cancelled => {
                return Err(ApiError::new(
                    ErrorCode::TaskNotOpen,
                    format!(
                        "request `{}` was closed when its task `{}` ended",
                        req.id, task.id
                    ),
                ));
            }
            RequestState::Approved if gateway::is_tool_request(&req) => {
                return Err(ApiError::new(
                    ErrorCode::RequestNotPending,
                    format!(
                        "request `{}` approves a gateway tool call: retry the exact same call to use it",
                        req.id
                    ),
                ));
            }
            RequestState::Approved => {}
        }
        let now = self.now();
        if now >= req.expires_at_unix_secs {
            self.expire_request(req.clone()).await?;
            return Err(ApiError::new(
                ErrorCode::RequestExpired,
                format!("request `{}` expired", req.id),
            ));
        }
        self.open_task_check(&task)?;
        let resource = self.resource(&req.resource_id)?.clone();
        check_binding(&resource, binding)?;
        self.refuse_if_frozen(ctx, &task, &resource.id, "claim", FreezeRead::Fresh)
            .await?;
        let approval = self.approval_context(&req).await?;
        // A claim whose history changed between decision and commit (`history_changed`) is
        // decided again with the new history, a few times.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .claim_decided(ctx, caller, (&task, &resource), &req, &approval, binding)
                .await
            {
                Err(e) if e.code == ErrorCode::HistoryChanged && attempt < 4 => continue,
                r => return r,
            }
        }
    }

    /// Decides an approved request again, with its approvals and the task's current history,
    /// and mints it when allowed (or records the denial).
    async fn claim_decided(
        &self,
        ctx: &CallCtx,
        caller: &Workload,
        (task, resource): (&Task, &Resource),
        req: &AccessRequest,
        approval: &ApprovalContext,
        binding: &TokenBinding,
    ) -> Result<AccessOutcome> {
        let now = self.now();
        let view = self.history_view(task, now).await?;
        if let Some(b) = self.grant_breach(&view) {
            return Err(ApiError::new(
                ErrorCode::BudgetExceeded,
                format!("{}; request `{}` stays approved", b.reason(), req.id),
            ));
        }
        let decision = self.decide(&Ask {
            task,
            workload: caller,
            resource,
            actions: &req.actions,
            ttl_secs: req.ttl_secs,
            source_ip: ctx.source_ip.as_deref(),
            approval,
            params: &req.params,
            history: &view,
        });
        match decision {
            Decision::Allow { max_ttl_secs, .. } => {
                let mut r = req.clone();
                r.decision = decision.clone();
                let ev = decision_event(now, &caller.id, &r);
                let outcome = self
                    .mint(
                        ctx,
                        MintPlan {
                            task,
                            resource,
                            request: r,
                            row: RequestRow::Stored,
                            decided: Some(ev),
                            policy_max_ttl_secs: max_ttl_secs,
                            params: &req.params,
                            binding,
                            view: &view,
                        },
                    )
                    .await?;
                if let AccessOutcome::Granted(g) = &outcome
                    && history::grant_changes_history(&view, resource)
                {
                    self.enforce_on_history_change(task, Some(&g.lease.id))
                        .await;
                }
                Ok(outcome)
            }
            other => {
                let mut r = req.clone();
                r.decision = claim_refusal(other);
                r.state = RequestState::Denied;
                r.version += 1;
                let ev = decision_event(now, &caller.id, &r);
                self.commit(
                    ctx,
                    WriteBatch::new()
                        .write(Write::UpdateRequest(r.clone()))
                        .audit(ev),
                )
                .await?;
                Ok(AccessOutcome::Denied(r))
            }
        }
    }
}

/// The denial a claim records when its new decision does not allow it. A step-up (the approvals
/// it has no longer suffice: the task's history or the policies changed since) is recorded as
/// a denial naming the groups now needed, so the request is never `denied` with a `step_up`
/// decision and refusals count under one code.
fn claim_refusal(d: Decision) -> Decision {
    match d {
        Decision::StepUp { policy_ids, groups } => {
            let names: Vec<String> = groups.iter().map(|g| format!("`{}`", g.group)).collect();
            Decision::Deny {
                code: DenyCode::PolicyDenied,
                policy_ids,
                reasons: vec![format!(
                    "its approvals no longer suffice (the task's history or the policies changed): it now needs approval by {}; ask again",
                    names.join(", ")
                )],
            }
        }
        other => other,
    }
}

/// A just-decided request, not yet stored: its id and digest, and the decision's step-up groups.
fn new_request(
    ctx: &CallCtx,
    task: &Task,
    caller: &Workload,
    checked: &CheckedAsk,
    input: RequestAccess,
    decision: Decision,
    now: i64,
) -> AccessRequest {
    let id = new_id("req");
    let digest = request_digest(
        &id,
        &task.id,
        &caller.id,
        &checked.resource.id,
        &checked.actions,
        checked.ttl_secs,
        &input.justification,
        &input.params,
    );
    AccessRequest {
        id,
        task_id: task.id.clone(),
        principal_id: caller.id.clone(),
        resource_id: checked.resource.id.clone(),
        actions: checked.actions.clone(),
        ttl_secs: checked.ttl_secs,
        justification: input.justification,
        state: RequestState::Denied,
        step_up_groups: match &decision {
            Decision::StepUp { groups, .. } => groups.clone(),
            _ => vec![],
        },
        decision,
        digest,
        source_ip: ctx.source_ip.clone(),
        created_at_unix_secs: now,
        expires_at_unix_secs: now,
        lease_id: None,
        approvers: vec![],
        params: input.params,
        version: 1,
    }
}

/// The `credential.issued` event of a freshly minted lease (never the secret: its HMAC).
fn issued_event(
    now: i64,
    req: &AccessRequest,
    lease: &Lease,
    resource: &Resource,
    credential_kind: &str,
) -> AuditEvent {
    AuditEvent::new(now, AuditKind::CredentialIssued, &req.principal_id, "ok")
        .task(&lease.task_id)
        .access_request(&req.id)
        .lease(&lease.id)
        .detail(json!({
            "resource": resource.id, "provider": resource.kind, "actions": req.actions,
            "expires_at_unix_secs": lease.expires_at_unix_secs,
            "max_expires_at_unix_secs": lease.max_expires_at_unix_secs,
            "credential_hmac": lease.credential_hmac, "kind": credential_kind,
            // Sender constraint and delegation (never secrets): who may use it, for whom.
            "cnf_jkt": lease.binding.jkt, "act": lease.binding.act,
            "subject": lease.binding.subject,
        }))
}
