//! A task's history and the budgets in the broker: reading them for a decision, refusing what
//! passes a budget, the counter writes that go into each grant's commit, and ending a task on
//! a breach (see [`crate::history`]).

use super::*;
use crate::history::{
    BudgetBreach, CounterScope, GrantFacts, TaskHistory, Usage, grant_breach, grant_deltas,
    renewal_breach, workload_usage,
};
use crate::policy::HistoryInput;

/// What one decision reads of the past: the task's history and the workload's usage.
#[derive(Debug, Clone, Default)]
pub(super) struct HistoryView {
    /// The task's history (its live leases counted when a task live-lease budget is set).
    pub(super) task: TaskHistory,
    /// The workload's usage in the current windows (counted only under workload budgets).
    pub(super) workload: Usage,
}

impl HistoryView {
    /// As policy reads it, with `budgets`.
    pub(super) fn input<'a>(&'a self, budgets: &'a crate::history::Budgets) -> HistoryInput<'a> {
        HistoryInput {
            history: &self.task,
            budgets,
            workload_usage: &self.workload,
        }
    }
}

impl Broker {
    /// Reads the history of `task` and the usage of its owner at `now` from the store.
    ///
    /// # Errors
    /// `store_unavailable`.
    pub(super) async fn history_view(&self, task: &Task, now: i64) -> Result<HistoryView> {
        let b = &self.settings.budgets;
        let rows = self.store.counters(CounterScope::Task, &task.id).await?;
        let mut view = HistoryView {
            task: TaskHistory::from_rows(&rows, now),
            workload: Usage::default(),
        };
        if b.task.max_live_leases.is_some() {
            view.task.usage.live_leases = Some(
                self.store
                    .live_lease_count(CounterScope::Task, &task.id, now)
                    .await?,
            );
        }
        if b.workload.any() {
            let rows = self
                .store
                .counters(CounterScope::Workload, &task.owner.id)
                .await?;
            view.workload = workload_usage(&rows, now, b.workload_window_secs);
            if b.workload.max_live_leases.is_some() {
                view.workload.live_leases = Some(
                    self.store
                        .live_lease_count(CounterScope::Workload, &task.owner.id, now)
                        .await?,
                );
            }
        }
        Ok(view)
    }

    /// The first budget one more grant would pass (task budgets first).
    pub(super) fn grant_breach(&self, view: &HistoryView) -> Option<BudgetBreach> {
        let b = &self.settings.budgets;
        grant_breach(CounterScope::Task, &b.task, &view.task.usage)
            .or_else(|| grant_breach(CounterScope::Workload, &b.workload, &view.workload))
    }

    /// The first budget one more renewal would pass.
    pub(super) fn renewal_breach(&self, view: &HistoryView) -> Option<BudgetBreach> {
        let b = &self.settings.budgets;
        renewal_breach(CounterScope::Task, &b.task, &view.task.usage)
            .or_else(|| renewal_breach(CounterScope::Workload, &b.workload, &view.workload))
    }

    /// The breach a [`StoreError::LimitReached`] stands for.
    pub(super) fn breach_of(&self, scope: CounterScope, name: &str) -> Option<BudgetBreach> {
        let b = &self.settings.budgets;
        let limits = match scope {
            CounterScope::Task => &b.task,
            CounterScope::Workload => &b.workload,
        };
        BudgetBreach::of_counter(scope, name, limits)
    }

    /// The writes that record one grant of `resource` in `task` (its counters, capped by the
    /// budgets, and the live-lease guards), for the batch that inserts the lease.
    pub(super) fn grant_counter_writes(
        &self,
        task: &Task,
        resource: &Resource,
        actions: &[String],
        now: i64,
        view: &HistoryView,
    ) -> Vec<Write> {
        let b = &self.settings.budgets;
        // First the history's version: the grant commits only if no change that can withdraw
        // access committed since its decision read the history (a grant that is itself such a
        // change moves the version, taking the row lock before checking).
        let mut writes = Vec::new();
        let mut expected = view.task.version;
        if grant_changes_history(view, resource) {
            expected += 1;
            writes.push(Write::Count(vec![crate::history::version_delta(
                &task.id, 1,
            )]));
        }
        writes.push(version_guard(&task.id, expected));
        let guards = [
            (CounterScope::Task, &task.id, b.task.max_live_leases),
            (
                CounterScope::Workload,
                &task.owner.id,
                b.workload.max_live_leases,
            ),
        ];
        for (scope, subject, limit) in guards {
            if let Some(limit) = limit {
                writes.push(Write::RequireLiveBelow {
                    scope,
                    subject: subject.clone(),
                    limit,
                    now_unix_secs: now,
                });
            }
        }
        let facts = GrantFacts {
            task_id: &task.id,
            workload_id: &task.owner.id,
            resource: &resource.id,
            sensitivity: &resource.sensitivity,
            egress: resource.egress,
            actions,
        };
        writes.push(Write::Count(grant_deltas(&facts, b, now)));
        writes
    }

    /// Whether a denial of a request for `resource` ends its task: a budget breach whose scope
    /// or resource says so, or a deciding forbid annotated `@end_task`.
    pub(super) fn denial_ends_task(
        &self,
        resource: &Resource,
        decision: &Decision,
        breach: Option<&BudgetBreach>,
    ) -> bool {
        let Decision::Deny {
            code, policy_ids, ..
        } = decision
        else {
            return false;
        };
        let b = &self.settings.budgets;
        let by_budget = *code == DenyCode::BudgetExceeded
            && (resource.end_task_on_budget_breach
                || breach.is_some_and(|x| match x.scope {
                    CounterScope::Task => b.task.end_task_on_breach,
                    CounterScope::Workload => b.workload.end_task_on_breach,
                }));
        by_budget || self.policy().ends_task(policy_ids)
    }

    /// Ends `task` (cancelled, every credential revoked) because a denial said so; a task that
    /// ended meanwhile is left as it is.
    ///
    /// # Errors
    /// `store_unavailable`.
    pub(super) async fn end_task_for_denial(
        &self,
        ctx: &CallCtx,
        task: &Task,
        decision: &Decision,
    ) -> Result<()> {
        let Ok(current) = self.task_unchecked(&task.id).await else {
            return Ok(());
        };
        let ev = AuditEvent::new(self.now(), AuditKind::TaskEndedByDenial, BROKER, "end_task")
            .task(&task.id)
            .detail(json!({"policy_ids": decision.policy_ids(),
                "code": decision.deny_code().map(DenyCode::as_str)}));
        match self
            .end_task_with(ctx, current, TaskState::Cancelled, BROKER, vec![ev])
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code == ErrorCode::TaskNotOpen || e.code == ErrorCode::Conflict => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The guard that a task's history version is still `expected` at commit.
pub(super) fn version_guard(task_id: &str, expected: i64) -> Write {
    Write::RequireCounter {
        scope: CounterScope::Task,
        subject: task_id.to_owned(),
        name: "version".into(),
        equals: expected,
    }
}

/// The denial a budget breach gives (code `budget_exceeded`, no policy ids).
pub(super) fn budget_denial(b: &BudgetBreach) -> Decision {
    Decision::Deny {
        code: DenyCode::BudgetExceeded,
        policy_ids: vec![],
        reasons: vec![b.reason()],
    }
}

impl Broker {
    /// Answers a grant whose commit found a budget used up (another replica or call took the
    /// last of it after this request's check): nothing was minted into the store. A new
    /// request is recorded denied (`budget_exceeded`); a claim of an approved request is
    /// refused and the request stays approved. Ends the task when the breach says so.
    ///
    /// # Errors
    /// `budget_exceeded` (a claim), `store_unavailable`.
    pub(super) async fn refuse_over_budget(
        &self,
        ctx: &CallCtx,
        task: &Task,
        resource: &Resource,
        mut req: AccessRequest,
        new_row: bool,
        (scope, name): (CounterScope, String),
    ) -> Result<AccessOutcome> {
        let breach = self.breach_of(scope, &name);
        let decision = match &breach {
            Some(b) => budget_denial(b),
            None => Decision::Deny {
                code: DenyCode::BudgetExceeded,
                policy_ids: vec![],
                reasons: vec![format!("{} budget reached", scope.as_str())],
            },
        };
        let ends = self.denial_ends_task(resource, &decision, breach.as_ref());
        let outcome = if new_row {
            req.state = RequestState::Denied;
            req.decision = decision.clone();
            req.lease_id = None;
            let ev = decision_event(self.now(), &req.principal_id, &req);
            self.commit(
                ctx,
                WriteBatch::new()
                    .write(Write::InsertRequest(req.clone()))
                    .audit(ev),
            )
            .await?;
            Ok(AccessOutcome::Denied(req))
        } else {
            Err(ApiError::new(
                ErrorCode::BudgetExceeded,
                format!(
                    "{}; request `{}` stays approved",
                    decision_reason(&decision),
                    req.id
                ),
            ))
        };
        if ends {
            self.end_task_for_denial(ctx, task, &decision).await?;
        }
        outcome
    }
}

fn decision_reason(d: &Decision) -> String {
    match d {
        Decision::Deny { reasons, .. } => reasons.join("; "),
        other => other.kind().to_owned(),
    }
}

impl Broker {
    /// Continuous enforcement on a change of `task`'s history (it was tainted, granted its
    /// first egress credential, or a credential of it leaked): every other live lease of the
    /// task is decided again with the current history and revoked if the policies no longer
    /// allow it (reason `history_changed`). A failure here is logged, not returned: the change
    /// that triggered it is committed, and renewals decide with the current history anyway.
    pub(super) async fn enforce_on_history_change(&self, task: &Task, except: Option<&str>) {
        let result = async {
            let view = self.history_view(task, self.now()).await?;
            let mut revoked = 0usize;
            for l in self.store.leases_by_task(&task.id).await? {
                if !l.state.is_live() || Some(l.id.as_str()) == except {
                    continue;
                }
                let detail = json!({"trigger": "history_changed"});
                if self
                    .enforce_on_lease(task, &l, &view, "history_changed", detail)
                    .await?
                {
                    revoked += 1;
                }
            }
            Ok::<usize, ApiError>(revoked)
        }
        .await;
        match result {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(task_id = %task.id, revoked = n, "history change revoked live leases")
            }
            Err(e) => {
                tracing::warn!(task_id = %task.id, error = %e.message, "re-evaluating a task after a history change failed");
            }
        }
    }
}

/// Whether granting `resource` changes what policy may conclude from the task's history in a
/// way that can withdraw other credentials: a new sensitivity, or the first egress grant.
pub(super) fn grant_changes_history(view: &HistoryView, resource: &Resource) -> bool {
    !view.task.sensitivities.contains(&resource.sensitivity)
        || (resource.egress && !view.task.egress)
}

impl Broker {
    /// The history of a task the caller owns and the budgets it is held to: what policy sees
    /// when the task asks next.
    ///
    /// # Errors
    /// `task_not_found`, `store_unavailable`.
    pub async fn task_history(
        &self,
        caller: &Workload,
        task_id: &str,
    ) -> Result<crate::history::HistoryReport> {
        let task = self.owned_task(caller, task_id).await?;
        let view = self.history_view(&task, self.now()).await?;
        Ok(crate::history::HistoryReport {
            task_id: task.id,
            tainted: view.task.tainted(),
            history: view.task,
            budgets: self.settings.budgets,
            workload_usage: view.workload,
        })
    }
}
