//! The decision for one request (hard environment separation, then Cedar), shared by the broker
//! and `latch policy test`, and the approval context built from recorded approvals.

use std::collections::BTreeSet;

use super::{ApprovalContext, EvalInput, PolicyEngine, PolicyTestCase};
use crate::error::quote;
use crate::model::{
    Approval, Decision, DenyCode, Environment, GroupQuorum, Resource, Task, TaskState, Verdict,
    Workload,
};

/// Prefix of the reason given when hard separation denies.
pub const SEPARATION_REASON: &str = "sandbox and production are hard-separated";

/// The decision for one request: hard sandbox/production separation first (a non-production
/// task never receives a credential for a production resource, whatever the policies say),
/// then Cedar. Used by the broker and by `latch policy test`, so both decide identically.
pub fn decide(engine: &PolicyEngine, input: &EvalInput<'_>) -> Decision {
    if input.resource.production && !input.task.production {
        return Decision::Deny {
            code: DenyCode::EnvironmentSeparation,
            policy_ids: vec![],
            reasons: vec![format!(
                "{SEPARATION_REASON}: task environment `{}` may not receive a credential for production resource `{}`",
                input.task.environment, input.resource.id
            )],
        };
    }
    engine.evaluate(input)
}

/// Runs one `latch policy test` case against `engine` and returns the decision.
///
/// # Errors
/// A message when the case names an unknown resource.
pub fn run_policy_case(
    engine: &PolicyEngine,
    resources: &[Resource],
    production_environments: &[String],
    case: &PolicyTestCase,
    now_unix_secs: i64,
) -> std::result::Result<Decision, String> {
    let resource = resources
        .iter()
        .find(|r| r.id == case.resource)
        .ok_or_else(|| {
            format!(
                "case {}: unknown resource {}",
                quote(&case.name),
                quote(&case.resource)
            )
        })?;
    let workload = Workload {
        id: "policy-test#workload".into(),
        issuer: "policy-test".into(),
        subject: "workload".into(),
        preset: case.preset.clone().unwrap_or_else(|| "generic".into()),
        run_binding: None,
        on_behalf_of: case.on_behalf_of.clone(),
        claims: case.principal.clone(),
        token_expires_at_unix_secs: now_unix_secs + 600,
    };
    let task = Task {
        id: "task_policy_test".into(),
        owner: workload.clone(),
        purpose: case.name.clone(),
        repository: case
            .repository
            .clone()
            .or_else(|| case.principal.repository.clone()),
        branch: case
            .branch
            .clone()
            .or_else(|| case.principal.branch.clone()),
        environment: case.environment.as_str().into(),
        production: Environment::from(case.environment.as_str())
            .is_production(production_environments),
        on_behalf_of: case.on_behalf_of.clone(),
        state: TaskState::Open,
        created_at_unix_secs: now_unix_secs,
        expires_at_unix_secs: now_unix_secs + 3600,
        ended_at_unix_secs: None,
        version: 1,
    };
    let approval = ApprovalContext {
        approved: !case.approved_groups.is_empty(),
        approvers: if case.approved_groups.is_empty() {
            vec![]
        } else {
            vec!["policy-test-approver".into()]
        },
        groups: case.approved_groups.clone(),
    };
    let mut actions = case.actions.clone();
    actions.sort();
    actions.dedup();
    Ok(decide(
        engine,
        &EvalInput {
            workload: &workload,
            resource,
            actions: &actions,
            task: &task,
            ttl_secs: case.ttl_secs,
            now_unix_secs,
            source_ip: None,
            approval: &approval,
            principals: login_principals(resource, &serde_json::Value::Null).as_deref(),
            history: super::HistoryInput {
                history: &case.history,
                ..super::HistoryInput::empty()
            },
        },
    ))
}

/// The login names a credential for `resource` would carry, as policy sees them in
/// `context.principals`: for resources whose settings list allowed `principals` (SSH
/// certificates), the ones the request asks for in `params.principals`, or all the resource
/// allows when it names none. The provider still refuses names outside the allowed list.
pub fn login_principals(resource: &Resource, params: &serde_json::Value) -> Option<Vec<String>> {
    let names = |v: &serde_json::Value| -> Option<Vec<String>> {
        v.as_array().map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
    };
    let allowed = names(resource.settings.get("principals")?)?;
    Some(params.get("principals").and_then(names).unwrap_or(allowed))
}

/// Builds `context.approval` from recorded approvals: a group is satisfied when `quorum`
/// distinct approvers counted for it; `approved` when every needed group is.
pub(crate) fn quorum_context(approvals: &[Approval], needed: &[GroupQuorum]) -> ApprovalContext {
    let approve: Vec<&Approval> = approvals
        .iter()
        .filter(|a| a.verdict == Verdict::Approve)
        .collect();
    let mut groups = Vec::new();
    for g in needed {
        let distinct: BTreeSet<String> = approve
            .iter()
            .filter(|a| a.groups.contains(&g.group))
            .map(|a| a.approver.to_ascii_lowercase())
            .collect();
        if distinct.len() as u32 >= g.quorum {
            groups.push(g.group.clone());
        }
    }
    let approvers: Vec<String> = approve
        .iter()
        .map(|a| a.approver.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    ApprovalContext {
        approved: !needed.is_empty() && groups.len() == needed.len(),
        approvers,
        groups,
    }
}
