//! Tasks: open, read, list and end them; their timeline and tool-use reports.

use super::*;

impl Broker {
    /// Opens a task bound to `caller` (principal and run).
    ///
    /// # Errors
    /// `invalid_request`, `ttl_out_of_bounds`, `task_identity_mismatch` (environment,
    /// repository, branch or `on_behalf_of` contradict the identity), `store_unavailable`.
    pub async fn open_task(
        &self,
        ctx: &CallCtx,
        caller: &Workload,
        input: OpenTask,
    ) -> Result<Task> {
        let max = self.settings.max_text_len;
        check_text("purpose", &input.purpose, max, true)?;
        check_name("environment", &input.environment)?;
        let claims = &caller.claims;
        let mismatch = |m: String| ApiError::new(ErrorCode::TaskIdentityMismatch, m);
        if let Some(env) = &claims.environment
            && !env.eq_ignore_ascii_case(&input.environment)
        {
            return Err(mismatch(format!(
                "task environment {} is not the environment the identity proves ({})",
                quote(&input.environment),
                quote(env)
            )));
        }
        // Spelled as the platform compares names (GitHub, GitLab: case-insensitive).
        let asked = input
            .repository
            .as_ref()
            .map(|r| WorkloadClaims::canonical_name(&caller.preset, r));
        let repository = match (&asked, &claims.repository) {
            (Some(r), Some(id)) if r != id => {
                return Err(mismatch(format!(
                    "task repository {} is not the repository the identity proves ({})",
                    quote(r),
                    quote(id)
                )));
            }
            (Some(r), _) => {
                check_name("repository", r)?;
                Some(r.clone())
            }
            (None, id) => id.clone(),
        };
        let identity_branch = claims.branch.clone().or_else(|| claims.git_ref.clone());
        let branch = match (&input.branch, &identity_branch) {
            (Some(b), Some(id)) if b != id && claims.git_ref.as_deref() != Some(b.as_str()) => {
                return Err(mismatch(format!(
                    "task branch {} is not the ref the identity proves ({})",
                    quote(b),
                    quote(id)
                )));
            }
            (Some(b), _) => {
                check_name("branch", b)?;
                Some(identity_branch.clone().unwrap_or_else(|| b.clone()))
            }
            (None, id) => id.clone(),
        };
        let on_behalf_of = match (&input.on_behalf_of, &caller.on_behalf_of) {
            (Some(h), Some(id)) if !h.eq_ignore_ascii_case(id) => {
                return Err(mismatch(format!(
                    "`on_behalf_of` {} is not the human the identity names",
                    quote(h)
                )));
            }
            (Some(h), _) => {
                check_name("on_behalf_of", h)?;
                Some(h.clone())
            }
            (None, id) => id.clone(),
        };
        let ttl = input
            .ttl_secs
            .unwrap_or(self.settings.task_default_ttl_secs);
        // Below 1 breaks the documented schema (`minimum: 1`): a malformed request. Above the
        // configured bound: a well-formed one this broker refuses.
        if ttl <= 0 {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("`ttl_secs` must be at least 1, got {ttl}"),
            ));
        }
        if ttl > self.settings.task_max_ttl_secs {
            return Err(ApiError::new(
                ErrorCode::TtlOutOfBounds,
                format!(
                    "task ttl must be 1 to {} seconds, got {ttl}",
                    self.settings.task_max_ttl_secs
                ),
            ));
        }
        let now = self.now();
        let task = Task {
            id: new_id("task"),
            owner: caller.clone(),
            purpose: input.purpose,
            repository,
            branch,
            production: self.is_production(&input.environment),
            environment: input.environment.into(),
            on_behalf_of,
            state: TaskState::Open,
            created_at_unix_secs: now,
            expires_at_unix_secs: now + ttl,
            ended_at_unix_secs: None,
            version: 1,
        };
        let ev = AuditEvent::new(now, AuditKind::TaskOpened, &caller.id, "ok").task(&task.id).detail(json!({
            "purpose": task.purpose, "repository": task.repository, "branch": task.branch,
            "environment": task.environment, "production": task.production,
            "expires_at_unix_secs": task.expires_at_unix_secs, "on_behalf_of": task.on_behalf_of,
            "run_binding": caller.run_binding,
        }));
        self.commit(
            ctx,
            WriteBatch::new()
                .write(Write::InsertTask(task.clone()))
                // The history version's row exists from the start, so the first grant's guard
                // has a row to lock.
                .write(Write::Count(vec![crate::history::version_delta(
                    &task.id, 0,
                )]))
                .audit(ev),
        )
        .await?;
        Ok(task)
    }

    /// A task the caller owns.
    ///
    /// # Errors
    /// `task_not_found` (also for tasks of other workloads or runs).
    pub async fn task(&self, caller: &Workload, task_id: &str) -> Result<Task> {
        self.owned_task(caller, task_id).await
    }

    /// A task by id, for operators' views (no ownership check).
    ///
    /// # Errors
    /// `task_not_found`.
    pub async fn task_unchecked(&self, task_id: &str) -> Result<Task> {
        self.store.task(task_id).await?.ok_or_else(|| {
            ApiError::new(
                ErrorCode::TaskNotFound,
                format!("no task {}", quote(task_id)),
            )
        })
    }

    /// Records one audit event (with the call's pending events), e.g. an auditor's export.
    ///
    /// # Errors
    /// `store_unavailable`: the caller must not go ahead (audit fails closed).
    pub async fn record_event(&self, ctx: &CallCtx, mut event: AuditEvent) -> Result<()> {
        event.request_id.clone_from(&ctx.request_id);
        self.commit(ctx, WriteBatch::new().audit(event)).await?;
        Ok(())
    }

    /// Records a tool-use report from the agent working in `task_id` as a `tool.used` audit
    /// event (actor: the workload; outcome: the reported outcome) and returns it with its `seq`.
    /// Reports are accepted for ended tasks too (the last call may finish after completion); the
    /// event then records the task's state.
    ///
    /// # Errors
    /// `invalid_request` (bounds of [`ToolUseReport::validate`]), `task_not_found`,
    /// `unknown_lease` (the lease is not in this task), `store_unavailable`.
    ///
    /// # Security
    /// The report is the agent's own claim; it is stored as such, JSON-escaped, never trusted
    /// as a decision input.
    pub async fn report_tool_use(
        &self,
        ctx: &CallCtx,
        caller: &Workload,
        task_id: &str,
        report: ToolUseReport,
    ) -> Result<AuditEvent> {
        report.validate()?;
        let task = self.owned_task(caller, task_id).await?;
        if let Some(lid) = &report.lease_id {
            match self.store.lease(lid).await? {
                Some(l) if l.task_id == task.id => {}
                _ => {
                    // The task (the target) exists; the body names something that does not
                    // belong to it: 422, not 404.
                    return Err(ApiError::new(
                        ErrorCode::UnknownLease,
                        format!("no lease {} in task {}", quote(lid), quote(&task.id)),
                    ));
                }
            }
        }
        let mut event =
            AuditEvent::new(self.now(), AuditKind::ToolUsed, &caller.id, &report.outcome)
                .task(&task.id)
                .detail(json!({
                    "tool": report.tool,
                    "target": report.target,
                    "duration_ms": report.duration_ms,
                    "attributes": report.attributes,
                    "task_state": task.state,
                }));
        if let Some(lid) = &report.lease_id {
            event = event.lease(lid);
        }
        event.request_id.clone_from(&ctx.request_id);
        // The reported use joins the task's history (`context.history.tools`).
        let counted = crate::history::tool_deltas(&task.id, &report.tool, self.now());
        let seqs = self
            .commit(
                ctx,
                WriteBatch::new()
                    .write(Write::Count(counted))
                    .audit(event.clone()),
            )
            .await?;
        event.seq = seqs.last().copied().unwrap_or_default();
        Ok(event)
    }

    /// The audit events of a task the caller owns, in order (its timeline), after `after_seq`.
    ///
    /// # Errors
    /// `task_not_found`, `store_unavailable`.
    pub async fn task_events(
        &self,
        caller: &Workload,
        task_id: &str,
        after_seq: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEvent>> {
        let task = self.owned_task(caller, task_id).await?;
        let filter = AuditFilter {
            task_id: Some(task.id),
            after_seq,
            limit: Some(limit),
            ..AuditFilter::default()
        };
        Ok(self.store.audit_events(&filter).await?)
    }

    /// Tasks opened by the caller's principal in the caller's run, newest first.
    ///
    /// # Errors
    /// `store_unavailable`.
    pub async fn list_tasks(&self, caller: &Workload) -> Result<Vec<Task>> {
        let all = self.store.tasks_by_owner(&caller.id, 200).await?;
        Ok(all
            .into_iter()
            .filter(|t| t.owner.run_binding == caller.run_binding)
            .collect())
    }

    /// Ends a task (`completed` or `cancelled`) and revokes every lease in it.
    ///
    /// Idempotent: ending a task the caller already ended in the same state answers the task
    /// as stored (nothing new is written or audited beyond the call's authentication), after
    /// making sure no lease of it is still live. So a client whose first attempt got no answer
    /// or a 503 (the store failed while committing it) can simply retry.
    ///
    /// # Errors
    /// `task_not_found`, `task_not_open` (ended otherwise: expired, or the other of completed
    /// and cancelled), `conflict`, `store_unavailable`.
    pub async fn end_task(
        &self,
        ctx: &CallCtx,
        caller: &Workload,
        task_id: &str,
        state: TaskState,
    ) -> Result<Task> {
        if !matches!(state, TaskState::Completed | TaskState::Cancelled) {
            return Err(bad("a task can only be completed or cancelled"));
        }
        let task = self.owned_task(caller, task_id).await?;
        if task.state == state {
            return self.ended_already(task, &caller.id).await;
        }
        self.end_task_internal(ctx, task, state, &caller.id).await
    }

    /// The answer to ending `task` again in the state it already has: the task, once every
    /// lease of it has left the live index and none is still active (a lease granted between
    /// the first end's read and its commit is swept, as the first end would have).
    async fn ended_already(&self, task: Task, actor: &str) -> Result<Task> {
        // What the first end revoked leaves the index as it would have after its commit.
        for l in self.store.leases_by_task(&task.id).await? {
            if !matches!(l.state, LeaseState::Active | LeaseState::Issuing) {
                self.index_remove(&l);
            }
        }
        let reason = format!("task_{}", task.state.as_str());
        self.sweep_ended_task(&task, &reason, actor).await?;
        Ok(task)
    }

    pub(super) async fn end_task_internal(
        &self,
        ctx: &CallCtx,
        task: Task,
        state: TaskState,
        actor: &str,
    ) -> Result<Task> {
        self.end_task_with(ctx, task, state, actor, Vec::new())
            .await
    }

    /// Ends `task` in `state` (revoking its leases, closing its open requests), with `extra`
    /// audit events (an operator's reason) in the same batch.
    pub(super) async fn end_task_with(
        &self,
        ctx: &CallCtx,
        task: Task,
        state: TaskState,
        actor: &str,
        extra: Vec<AuditEvent>,
    ) -> Result<Task> {
        if task.state != TaskState::Open {
            return Err(ApiError::new(
                ErrorCode::TaskNotOpen,
                format!("task `{}` is already {}", task.id, task.state.as_str()),
            ));
        }
        let now = self.now();
        let mut t = task.clone();
        t.state = state;
        t.ended_at_unix_secs = Some(now);
        t.version += 1;
        let leases = self.store.leases_by_task(&task.id).await?;
        let live: Vec<Lease> = leases.into_iter().filter(|l| l.state.is_live()).collect();
        let mut batch = WriteBatch::new().write(Write::UpdateTask(t.clone())).audit(
            AuditEvent::new(now, AuditKind::task_entered(state), actor, "ok")
                .task(&t.id)
                .detail(json!({"live_leases": live.len()})),
        );
        for e in extra {
            batch = batch.audit(e);
        }
        // Its undecided and unclaimed requests end with it: none stays in an approver's list,
        // none can be approved or claimed afterwards.
        let open = self.store.open_requests_by_task(&task.id).await?;
        batch = close_requests(batch, &open, state, actor, now);
        let reason = format!("task_{}", state.as_str());
        let (batch2, to_revoke) = self.revocation_writes(batch, &live, &reason, actor, now);
        batch = batch2;
        self.commit(ctx, batch).await?;
        for l in &live {
            self.index_remove(l);
        }
        let _ = self.revoke_all(to_revoke).await;
        // The end is committed: a failure of this safety sweep (a store that stopped answering
        // just now) must not answer the completion as failed. A lease a racing grant slipped in
        // stays live only until its own expiry at most; log it loudly.
        if let Err(e) = self.sweep_ended_task(&t, &reason, actor).await {
            tracing::warn!(task_id = %t.id, code = %e.code, error = %e.message,
                "task ended; the sweep for leases granted while it ended could not run");
        }
        Ok(t)
    }

    /// Revokes leases that a grant committed into `task` between the read of its live leases
    /// and the commit that ended it. Once the task is ended no grant can commit into it (each
    /// grant's batch requires the task open at the version it read, checked in the commit), so
    /// one fresh read after the end finds every such lease; conflicts with a concurrent renewal
    /// or revocation are retried.
    async fn sweep_ended_task(&self, task: &Task, reason: &str, actor: &str) -> Result<()> {
        for _ in 0..5 {
            let stray: Vec<Lease> = self
                .store
                .leases_by_task(&task.id)
                .await?
                .into_iter()
                .filter(|l| matches!(l.state, LeaseState::Active | LeaseState::Issuing))
                .collect();
            if stray.is_empty() {
                return Ok(());
            }
            let now = self.now();
            let (batch, to_revoke) =
                self.revocation_writes(WriteBatch::new(), &stray, reason, actor, now);
            match self.commit(&CallCtx::default(), batch).await {
                Ok(_) => {
                    for l in &stray {
                        self.index_remove(l);
                    }
                    let _ = self.revoke_all(to_revoke).await;
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// Adds to `batch` the closing of `requests` (pending or approved) because their task entered
/// `state`: each becomes `cancelled`, with a `request.cancelled` event whose outcome is the
/// task's state.
pub(super) fn close_requests(
    mut batch: WriteBatch,
    requests: &[AccessRequest],
    state: TaskState,
    actor: &str,
    now: i64,
) -> WriteBatch {
    for r in requests {
        if !matches!(r.state, RequestState::Pending | RequestState::Approved) {
            continue;
        }
        let mut n = r.clone();
        n.state = RequestState::Cancelled;
        n.version += 1;
        let ev = AuditEvent::new(now, AuditKind::RequestCancelled, actor, state.as_str())
            .task(&n.task_id)
            .access_request(&n.id)
            .detail(json!({"was": r.state.as_str(), "task_state": state.as_str()}));
        batch = batch.write(Write::UpdateRequest(n)).audit(ev);
    }
    batch
}
