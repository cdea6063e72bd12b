//! Approvals: the pending view for approvers, votes, and quorum.

use super::*;

/// A pending request as an approver sees it (`GET /v1/approvals/pending`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PendingView {
    /// The request (resource, actions, TTL, justification, step-up groups, digest).
    pub request: AccessRequest,
    /// Its task (purpose, repository, branch, environment, on whose behalf).
    pub task: Task,
    /// Votes so far.
    pub approvals: Vec<Approval>,
}

impl Broker {
    /// The requests `human` may vote on (as [`Broker::pending_for`]), each with its task and the
    /// votes recorded so far.
    ///
    /// # Errors
    /// `store_unavailable`.
    pub async fn pending_views(&self, human: &Human) -> Result<Vec<PendingView>> {
        let mut out = Vec::new();
        for (request, task) in self.pending_for(human).await? {
            let approvals = self.store.approvals(&request.id).await?;
            out.push(PendingView {
                request,
                task,
                approvals,
            });
        }
        Ok(out)
    }

    /// Pending requests the human could vote on (they are in a required group, and the request
    /// is not their own agent's), oldest first, with each request's task.
    ///
    /// # Errors
    /// `store_unavailable`.
    pub async fn pending_for(&self, human: &Human) -> Result<Vec<(AccessRequest, Task)>> {
        let now = self.now();
        let mut out = Vec::new();
        for r in self.store.pending_requests(500).await? {
            if r.expires_at_unix_secs <= now {
                continue;
            }
            let eligible = self
                .step_groups(&r)
                .iter()
                .any(|g| human.groups.contains(&g.group));
            if !eligible {
                continue;
            }
            // A request whose task has ended (or run out of time) can no longer be decided.
            if let Some(t) = self.store.task(&r.task_id).await?
                && t.state == TaskState::Open
                && now < t.expires_at_unix_secs
            {
                out.push((r, t));
            }
        }
        Ok(out)
    }

    /// Records a human's verdict on a pending request.
    ///
    /// The approval binds to `digest` (the exact request), counts once per distinct approver,
    /// may not come from the human the agent acts for, and only counts for the approver's groups
    /// that the request needs. At quorum of every group the policy is evaluated again with the
    /// approval in context; the request becomes `approved` (claimable) or `denied`.
    ///
    /// # Errors
    /// `request_not_found`, `task_ended` (its task was completed, cancelled or expired: the
    /// request is closed), `request_not_pending`, `request_expired`, `approval_digest_mismatch`,
    /// `self_approval_forbidden`, `approver_not_eligible`, `insufficient_user_authentication`
    /// (groups older than `authority_max_age_secs`), `already_voted`, `conflict`.
    pub async fn vote(
        &self,
        ctx: &CallCtx,
        human: &Human,
        request_id: &str,
        digest: &str,
        verdict: Verdict,
        reason: &str,
    ) -> Result<AccessRequest> {
        check_text("reason", reason, self.settings.max_text_len, true)?;
        let ballot = Ballot {
            human,
            verdict,
            reason,
        };
        for _attempt in 0..4 {
            let (req, now) = self.votable_request(request_id, digest).await?;
            let (batch, r) = self.cast(&ballot, req, now).await?;
            match self.commit(ctx, batch).await {
                Ok(_) => return Ok(r),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::new(
            ErrorCode::Conflict,
            "the request changed concurrently; try again",
        ))
    }

    /// The pending, unexpired request `request_id`, whose digest is `digest`, and the time it
    /// was checked at. An overdue request is expired on the way.
    async fn votable_request(
        &self,
        request_id: &str,
        digest: &str,
    ) -> Result<(AccessRequest, i64)> {
        let req = self.store.request(request_id).await?.ok_or_else(|| {
            ApiError::new(
                ErrorCode::RequestNotFound,
                format!("no request {}", quote(request_id)),
            )
        })?;
        let task = self.task_unchecked(&req.task_id).await?;
        let now = self.now();
        let task_ended = task.state != TaskState::Open || now >= task.expires_at_unix_secs;
        if task_ended || req.state == RequestState::Cancelled {
            return Err(ApiError::new(
                ErrorCode::TaskEnded,
                format!(
                    "request `{}` can no longer be decided: its task `{}` has ended ({})",
                    req.id,
                    task.id,
                    if task.state == TaskState::Open {
                        "expired"
                    } else {
                        task.state.as_str()
                    }
                ),
            ));
        }
        if req.state == RequestState::Expired {
            return Err(ApiError::new(
                ErrorCode::RequestExpired,
                format!("request `{}` expired before it was decided", req.id),
            ));
        }
        if req.state != RequestState::Pending {
            return Err(ApiError::new(
                ErrorCode::RequestNotPending,
                format!("request `{}` is {}", req.id, req.state.as_str()),
            ));
        }
        if now >= req.expires_at_unix_secs {
            self.expire_request(req.clone()).await?;
            return Err(ApiError::new(
                ErrorCode::RequestExpired,
                format!("request `{}` expired before it was decided", req.id),
            ));
        }
        if !constant_time_eq(digest.as_bytes(), req.digest.as_bytes()) {
            return Err(ApiError::new(
                ErrorCode::ApprovalDigestMismatch,
                format!(
                    "digest {} is not the digest of request `{}`",
                    quote(digest),
                    req.id
                ),
            ));
        }
        Ok((req, now))
    }

    /// Checks that the ballot may count on `req` and returns the batch recording it: the
    /// approval, the request as the vote leaves it, and their audit events.
    async fn cast(
        &self,
        ballot: &Ballot<'_>,
        req: AccessRequest,
        now: i64,
    ) -> Result<(WriteBatch, AccessRequest)> {
        let human = ballot.human;
        let task = self.task_unchecked(&req.task_id).await?;
        let is_self = task
            .on_behalf_of
            .as_deref()
            .is_some_and(|h| h.eq_ignore_ascii_case(&human.id));
        if is_self {
            return Err(ApiError::new(
                ErrorCode::SelfApprovalForbidden,
                format!(
                    "`{}` is the human this agent acts for and cannot approve its request",
                    human.id
                ),
            ));
        }
        let needed = self.step_groups(&req);
        let groups = eligible_groups(human, &needed)?;
        // The groups that make the vote count must be recent (a removal at the provider).
        self.require_recent_groups(human)?;
        let mut approvals = self.store.approvals(&req.id).await?;
        if approvals
            .iter()
            .any(|a| a.approver.eq_ignore_ascii_case(&human.id))
        {
            return Err(ApiError::new(
                ErrorCode::AlreadyVoted,
                format!("`{}` already voted on request `{}`", human.id, req.id),
            ));
        }
        let approval = Approval {
            id: new_id("apr"),
            request_id: req.id.clone(),
            digest: req.digest.clone(),
            approver: human.id.clone(),
            groups: groups.clone(),
            verdict: ballot.verdict,
            reason: ballot.reason.to_owned(),
            created_at_unix_secs: now,
        };
        approvals.push(approval.clone());
        let mut r = req;
        r.version += 1;
        let recorded = AuditEvent::new(
            now,
            AuditKind::ApprovalRecorded,
            &human.id,
            verdict_str(ballot.verdict),
        )
        .task(&r.task_id)
        .access_request(&r.id)
        .detail(json!({"groups": groups, "reason": ballot.reason, "digest": r.digest}));
        match ballot.verdict {
            Verdict::Deny => {
                r.state = RequestState::Denied;
                r.decision = Decision::Deny {
                    code: DenyCode::ApproverDenied,
                    policy_ids: vec![],
                    reasons: vec![format!(
                        "{APPROVER_DENIED_REASON} `{}`: {}",
                        human.id, ballot.reason
                    )],
                };
            }
            Verdict::Approve => {
                r.approvers.push(human.id.clone());
                self.tally(&task, &mut r, &approvals, &needed, now).await?;
            }
        }
        let mut batch = WriteBatch::new()
            .write(Write::InsertApproval(approval))
            .write(Write::UpdateRequest(r.clone()))
            .audit(recorded);
        if r.state != RequestState::Pending {
            batch = batch.audit(decision_event(now, &human.id, &r));
        }
        Ok((batch, r))
    }

    /// At quorum of every needed group, decides `r` again with the approvals in context: it
    /// becomes `approved` (claimable until the pending TTL runs out) or `denied`.
    async fn tally(
        &self,
        task: &Task,
        r: &mut AccessRequest,
        approvals: &[Approval],
        needed: &[GroupQuorum],
        now: i64,
    ) -> Result<()> {
        let ctxa = quorum_context(approvals, needed);
        if !ctxa.approved {
            return Ok(());
        }
        if gateway::is_tool_request(r) {
            // A tool call's arguments are not stored (only their digest): policy decides again
            // when the agent retries the exact call, with these approvals in context.
            r.state = RequestState::Approved;
            r.decision = Decision::Allow {
                policy_ids: r.decision.policy_ids().to_vec(),
                max_ttl_secs: None,
            };
            r.expires_at_unix_secs = now + self.settings.pending_ttl_secs;
            return Ok(());
        }
        let resource = self.resource(&r.resource_id)?.clone();
        let view = self.history_view(task, now).await?;
        let d = self.decide(&Ask {
            task,
            workload: &task.owner,
            resource: &resource,
            actions: &r.actions,
            ttl_secs: r.ttl_secs,
            source_ip: r.source_ip.as_deref(),
            approval: &ctxa,
            params: &r.params,
            history: &view,
        });
        match d {
            Decision::Allow { .. } => {
                r.state = RequestState::Approved;
                r.decision = d;
                r.expires_at_unix_secs = now + self.settings.pending_ttl_secs;
            }
            other => {
                r.state = RequestState::Denied;
                r.decision = other;
            }
        }
        Ok(())
    }

    /// Approvals of a request (for operators and approvers).
    ///
    /// # Errors
    /// `store_unavailable`.
    pub async fn approvals(&self, request_id: &str) -> Result<Vec<Approval>> {
        Ok(self.store.approvals(request_id).await?)
    }
}

fn verdict_str(v: Verdict) -> &'static str {
    match v {
        Verdict::Approve => "approve",
        Verdict::Deny => "deny",
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// A human's vote as cast: who, which verdict, and why.
struct Ballot<'a> {
    human: &'a Human,
    verdict: Verdict,
    reason: &'a str,
}

/// The groups `human` may approve for among those the request needs.
///
/// # Errors
/// `approver_not_eligible` when they are in none of them.
fn eligible_groups(human: &Human, needed: &[GroupQuorum]) -> Result<Vec<String>> {
    let groups: Vec<String> = needed
        .iter()
        .filter(|g| human.groups.contains(&g.group))
        .map(|g| g.group.clone())
        .collect();
    if groups.is_empty() {
        return Err(ApiError::new(
            ErrorCode::ApproverNotEligible,
            format!(
                "`{}` is in none of the groups that must approve ({})",
                human.id,
                needed
                    .iter()
                    .map(|g| g.group.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    Ok(groups)
}
