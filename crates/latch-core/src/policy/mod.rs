//! Cedar policy evaluation.
//!
//! Policies and the schema are loaded from files and validated (strict mode) before use; an
//! invalid set names the file, line and column. Entity types live in the `Latch` namespace:
//! `Latch::Workload` (principal, mapped claims as attributes), `Latch::Resource` (kind,
//! environment, sensitivity, egress, …) and `Latch::Action::"<action>"`. The context carries
//! `task`, `approval`, `ttl_secs`, `now_unix_secs`, `history` (the task's past: a
//! `Latch::History` entity, see `history`), `budget` (the configured budgets and the
//! workload's usage) and, optionally, `source_ip` and `on_behalf_of`.
//!
//! Annotations (Cedar `@key("value")`, see the Cedar docs on annotations) carry Latch semantics
//! so that step-up lives in policy files, not code:
//! * `@id("name")`: the policy id reported in decisions (default `<file stem>.<n>`).
//! * `@reason("text")`: human-readable reason given when this policy denies.
//! * `@step_up("group")` (forbid only) with optional `@quorum("n")`: a request denied only by
//!   such policies, and allowed once they are satisfied, becomes pending approval by `group`.
//!   Such a policy should read `forbid (…) unless { context.approval.groups.contains("group") };`.
//! * `@max_ttl("15m")` (permit only): the policy's maximum TTL for what it allows.
//! * `@budget("name")` (forbid, not `@step_up`): its denial is coded `budget_exceeded` (a
//!   budget written in policy, e.g. on `context.history.grants_this_minute`).
//! * `@end_task("true")` (forbid, not `@step_up`): its denial also ends the task (every
//!   credential revoked).
//!
//! # Security
//! Default deny; a forbid always wins; **any evaluation error denies** (Cedar itself would skip
//! an erroring policy, which for a forbid would fail open).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Decision as CedarDecision, Effect, Entities, EntityId, EntityTypeName, EntityUid,
    PolicyId, PolicySet, Request, RestrictedExpression, Schema, ValidationMode, Validator,
};
use miette::Diagnostic;

use crate::model::{Decision, DenyCode, GroupQuorum, Resource, Task, Workload};

mod case;
mod decide;
mod entities;
mod history;
mod summary;
mod tool;
pub use case::PolicyTestCase;
pub(crate) use decide::quorum_context;
pub use decide::{SEPARATION_REASON, decide, login_principals, run_policy_case};
pub use history::HistoryInput;
pub use tool::{MAX_TAGS, TOOL_ACTION, ToolEvalInput, arguments_tags};

/// A named policy or schema text (file path and contents).
#[derive(Debug, Clone)]
pub struct PolicySource {
    /// File name or path, used in error messages and default policy ids.
    pub name: String,
    /// Contents.
    pub text: String,
}

/// Why a policy set or schema was refused, with its position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyLoadError {
    /// File the error is in.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// Lowercase description.
    pub message: String,
}

impl fmt::Display for PolicyLoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{}:{}: {}", self.file, l, c, self.message),
            _ => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|s| s.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

fn diag_error(file: &str, text: &str, d: &dyn Diagnostic, message: String) -> PolicyLoadError {
    let offset = d.labels().and_then(|mut l| l.next()).map(|l| l.offset());
    let (line, column) = match offset {
        Some(o) => {
            let (l, c) = line_col(text, o);
            (Some(l), Some(c))
        }
        None => (None, None),
    };
    let mut message = message;
    if let Some(help) = d.help() {
        message.push_str(&format!(" (help: {help})"));
    }
    PolicyLoadError {
        file: file.to_owned(),
        line,
        column,
        message,
    }
}

#[derive(Debug, Clone)]
struct PolicyMeta {
    step_up: Option<String>,
    quorum: u32,
    reason: Option<String>,
    max_ttl_secs: Option<i64>,
    /// `@budget("name")`: a denial by this forbid is coded `budget_exceeded`.
    budget: bool,
    /// `@end_task("true")`: a denial by this forbid also ends the task.
    end_task: bool,
}

/// Latch's annotations of one policy (`@step_up`, `@quorum`, `@max_ttl`, `@reason`), checked.
///
/// # Errors
/// A message naming policy `id` when an annotation is misplaced or out of range.
fn meta_of(p: &cedar_policy::Policy, id: &str) -> Result<PolicyMeta, String> {
    let forbid = p.effect() == Effect::Forbid;
    let step_up = p.annotation("step_up").map(str::to_owned);
    if step_up.is_some() && !forbid {
        return Err(format!(
            "policy `{id}`: `@step_up` is only meaningful on a forbid"
        ));
    }
    if step_up.as_deref().is_some_and(|g| g.trim().is_empty()) {
        return Err(format!("policy `{id}`: `@step_up` needs a group name"));
    }
    let quorum = match p.annotation("quorum") {
        None => 1,
        Some(q) => match q.parse::<u32>() {
            Ok(n) if (1..=16).contains(&n) && step_up.is_some() => n,
            _ => {
                return Err(format!(
                    "policy `{id}`: `@quorum` must be 1 to 16 on a `@step_up` forbid, got `{q}`"
                ));
            }
        },
    };
    let max_ttl_secs = match p.annotation("max_ttl") {
        None => None,
        Some(v) => match parse_secs(v) {
            Some(n) if !forbid => Some(n),
            _ => {
                return Err(format!(
                    "policy `{id}`: `@max_ttl` must be a positive duration on a permit, got `{v}`"
                ));
            }
        },
    };
    let budget = p.annotation("budget").is_some();
    let end_task = match p.annotation("end_task") {
        None => false,
        Some("true") => true,
        Some(v) => {
            return Err(format!(
                "policy `{id}`: `@end_task` takes \"true\", got `{v}`"
            ));
        }
    };
    if (budget || end_task) && (!forbid || step_up.is_some()) {
        return Err(format!(
            "policy `{id}`: `@budget` and `@end_task` belong on a forbid without `@step_up`"
        ));
    }
    Ok(PolicyMeta {
        step_up,
        quorum,
        reason: p.annotation("reason").map(str::to_owned),
        max_ttl_secs,
        budget,
        end_task,
    })
}

/// Short SHA-256 fingerprint (hex, 16 bytes) of the schema and the named policy sources.
fn fingerprint_of(schema: &PolicySource, policies: &[PolicySource]) -> String {
    let mut h = Vec::new();
    h.extend_from_slice(schema.text.as_bytes());
    for p in policies {
        h.extend_from_slice(p.name.as_bytes());
        h.push(0);
        h.extend_from_slice(p.text.as_bytes());
        h.push(0);
    }
    hex::encode(&aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &h).as_ref()[..16])
}

/// Cedar's answer for one action; whether a denial is a step-up is decided over all actions.
enum ActionVerdict {
    Allow {
        policy_ids: Vec<String>,
        max_ttl_secs: Option<i64>,
    },
    Deny {
        policy_ids: Vec<String>,
        reasons: Vec<String>,
    },
}

/// Approval state as Cedar sees it (`context.approval`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApprovalContext {
    /// Whether every required group reached quorum.
    pub approved: bool,
    /// Humans who approved.
    pub approvers: Vec<String>,
    /// Groups whose quorum is met.
    pub groups: Vec<String>,
}

/// Everything a decision is made from.
#[derive(Debug, Clone)]
pub struct EvalInput<'a> {
    /// The workload principal.
    pub workload: &'a Workload,
    /// The resource.
    pub resource: &'a Resource,
    /// Actions (each must be allowed).
    pub actions: &'a [String],
    /// The task.
    pub task: &'a Task,
    /// Requested TTL (seconds).
    pub ttl_secs: i64,
    /// Evaluation time.
    pub now_unix_secs: i64,
    /// Source address of the caller.
    pub source_ip: Option<&'a str>,
    /// Approval state.
    pub approval: &'a ApprovalContext,
    /// The login names the credential would carry, for resources that have them (SSH
    /// certificates): `context.principals`.
    pub principals: Option<&'a [String]>,
    /// The task's past and the budgets: `context.history`, `context.budget`.
    pub history: HistoryInput<'a>,
}

/// A validated, immutable policy set with its schema. Swap a whole engine to reload.
pub struct PolicyEngine {
    schema: Schema,
    set: PolicySet,
    meta: HashMap<String, PolicyMeta>,
    authorizer: Authorizer,
    fingerprint: String,
    ids: Vec<String>,
}

impl fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("policies", &self.ids)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

const NS: &str = "Latch";

#[expect(
    clippy::expect_used,
    reason = "the names are constants of this module; a bad one fails every policy test at once"
)]
fn type_name(t: &str) -> EntityTypeName {
    // The names are constants of ours; parsing cannot fail.
    EntityTypeName::from_str(&format!("{NS}::{t}")).expect("valid entity type name")
}

fn uid(t: &str, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(type_name(t), EntityId::new(id))
}

fn s(v: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(v.to_owned())
}

fn set_of(v: &[String]) -> RestrictedExpression {
    RestrictedExpression::new_set(v.iter().map(|x| s(x)))
}

/// A history, budgets and workload usage with every optional part present, so the schema is
/// checked against all of what Latch may send.
fn probe_history() -> (
    crate::history::TaskHistory,
    crate::history::Budgets,
    crate::history::Usage,
) {
    let usage = crate::history::Usage {
        live_leases: Some(1),
        ..Default::default()
    };
    let mut history = crate::history::TaskHistory {
        usage,
        ..Default::default()
    };
    history.grant_counts.insert("probe:read".into(), 1);
    history.sensitivities.insert("secret".into());
    let limits = crate::history::BudgetLimits {
        max_grants: Some(1),
        max_live_leases: Some(1),
        max_renewals: Some(1),
        grants_per_minute: Some(1),
        end_task_on_breach: false,
    };
    let budgets = crate::history::Budgets {
        task: limits,
        workload: limits,
        workload_window_secs: 60,
    };
    (history, budgets, usage)
}

/// Parses `900`, `900s`, `15m`, `2h` into seconds.
pub fn parse_secs(v: &str) -> Option<i64> {
    let v = v.trim();
    let (num, mul) = match v.chars().last()? {
        's' => (&v[..v.len() - 1], 1),
        'm' => (&v[..v.len() - 1], 60),
        'h' => (&v[..v.len() - 1], 3600),
        'd' => (&v[..v.len() - 1], 86_400),
        _ => (v, 1),
    };
    let n: i64 = num.trim().parse().ok()?;
    (n > 0).then(|| n.checked_mul(mul)).flatten()
}

impl PolicyEngine {
    /// Loads and validates `schema` and `policies` (strict validation), and checks that the
    /// schema accepts the entities and context Latch sends for each of `actions`.
    ///
    /// # Errors
    /// [`PolicyLoadError`] naming the file, line and column of the first problem.
    pub fn load(
        schema: &PolicySource,
        policies: &[PolicySource],
        actions: &[String],
    ) -> Result<Self, PolicyLoadError> {
        let (schema_v, _warnings) = Schema::from_cedarschema_str(&schema.text).map_err(|e| {
            diag_error(
                &schema.name,
                &schema.text,
                &e,
                format!("invalid schema: {e}"),
            )
        })?;
        let mut set = PolicySet::new();
        let mut meta = HashMap::new();
        let mut origin: HashMap<String, usize> = HashMap::new();
        let mut ids = Vec::new();
        for (fi, src) in policies.iter().enumerate() {
            let parsed = PolicySet::from_str(&src.text).map_err(|e| {
                diag_error(&src.name, &src.text, &e, format!("invalid policy: {e}"))
            })?;
            if parsed.templates().next().is_some() {
                return Err(PolicyLoadError {
                    file: src.name.clone(),
                    line: None,
                    column: None,
                    message: "policy templates are not supported".into(),
                });
            }
            let stem = std::path::Path::new(&src.name)
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("policy")
                .to_owned();
            // Keep file order: cedar numbers policies policy0, policy1, … in text order.
            let mut pols: Vec<_> = parsed.policies().collect();
            pols.sort_by_key(|p| {
                p.id()
                    .to_string()
                    .trim_start_matches("policy")
                    .parse::<usize>()
                    .unwrap_or(usize::MAX)
            });
            for (n, p) in pols.into_iter().enumerate() {
                let id = p
                    .annotation("id")
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("{stem}.{n}"));
                let err = |m: String| PolicyLoadError {
                    file: src.name.clone(),
                    line: None,
                    column: None,
                    message: m,
                };
                if origin.contains_key(&id) {
                    return Err(err(format!("duplicate policy id `{id}`")));
                }
                let policy_meta = meta_of(p, &id).map_err(err)?;
                set.add(p.new_id(PolicyId::new(&id)))
                    .map_err(|e| err(format!("cannot add policy `{id}`: {e}")))?;
                meta.insert(id.clone(), policy_meta);
                origin.insert(id.clone(), fi);
                ids.push(id);
            }
        }
        let validator = Validator::new(schema_v.clone());
        let result = validator.validate(&set, ValidationMode::Strict);
        if let Some(e) = result.validation_errors().next() {
            let pid = e.policy_id().to_string();
            let src = origin.get(&pid).map(|&i| &policies[i]).unwrap_or(schema);
            return Err(diag_error(
                &src.name,
                &src.text,
                e,
                format!("policy `{pid}` fails validation: {e}"),
            ));
        }
        let fingerprint = fingerprint_of(schema, policies);
        let engine = Self {
            schema: schema_v,
            set,
            meta,
            authorizer: Authorizer::new(),
            fingerprint,
            ids,
        };
        engine.check_shape(&schema.name, actions)?;
        Ok(engine)
    }

    /// Short SHA-256 fingerprint of the loaded sources (for audit records).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Policy ids in load order.
    pub fn policy_ids(&self) -> &[String] {
        &self.ids
    }

    /// Whether any of `policy_ids` is a forbid annotated `@end_task("true")`: its denial also
    /// ends the task (every credential of it revoked).
    pub fn ends_task(&self, policy_ids: &[String]) -> bool {
        policy_ids
            .iter()
            .any(|id| self.meta.get(id).is_some_and(|m| m.end_task))
    }

    /// Validates a probe request for each action against the schema, so a schema that does not
    /// describe what Latch sends is refused at load rather than failing (denying) at run time.
    fn check_shape(&self, schema_name: &str, actions: &[String]) -> Result<(), PolicyLoadError> {
        let w = Workload {
            id: "probe".into(),
            issuer: "probe".into(),
            subject: "probe".into(),
            preset: "generic".into(),
            run_binding: Some("1".into()),
            on_behalf_of: Some("h".into()),
            claims: crate::model::WorkloadClaims {
                repository: Some("r".into()),
                repository_id: Some("1".into()),
                repository_owner: Some("o".into()),
                repository_owner_id: Some("2".into()),
                git_ref: Some("refs/heads/m".into()),
                branch: Some("m".into()),
                ref_protected: Some(true),
                environment: Some("e".into()),
                event_name: Some("push".into()),
                untrusted_source: false,
                runner_environment: Some("x".into()),
                workflow_ref: Some("w".into()),
                namespace: Some("n".into()),
                service_account: Some("s".into()),
                service_account_uid: Some("u".into()),
                spiffe_id: Some("spiffe://td/a".into()),
                trust_domain: Some("td".into()),
                spiffe_path: vec!["a".into()],
                run_id: Some("1".into()),
                run_attempt: Some("1".into()),
                pipeline_id: Some("1".into()),
                job_id: Some("1".into()),
                pod_uid: Some("p".into()),
                ..Default::default()
            },
            token_expires_at_unix_secs: 0,
        };
        let r = Resource {
            id: "probe".into(),
            kind: "jwt".into(),
            environment: "e".into(),
            sensitivity: "internal".into(),
            audience: "a".into(),
            actions: actions.to_vec(),
            max_ttl_secs: 60,
            max_lifetime_secs: 60,
            default_ttl_secs: 60,
            owner: Some("o".into()),
            production: false,
            egress: true,
            end_task_on_budget_breach: false,
            settings: serde_json::Value::Null,
        };
        let t = Task {
            id: "t".into(),
            owner: w.clone(),
            purpose: "p".into(),
            repository: Some("r".into()),
            branch: Some("b".into()),
            environment: "e".into(),
            production: false,
            on_behalf_of: Some("h".into()),
            state: crate::model::TaskState::Open,
            created_at_unix_secs: 0,
            expires_at_unix_secs: 0,
            ended_at_unix_secs: None,
            version: 0,
        };
        let a = ApprovalContext::default();
        let (probe_history, probe_budgets, probe_usage) = probe_history();
        let input = EvalInput {
            workload: &w,
            resource: &r,
            actions,
            task: &t,
            ttl_secs: 60,
            now_unix_secs: 0,
            source_ip: Some("127.0.0.1"),
            approval: &a,
            principals: Some(&[]),
            history: HistoryInput {
                history: &probe_history,
                budgets: &probe_budgets,
                workload_usage: &probe_usage,
            },
        };
        let fail = |m: String| PolicyLoadError {
            file: schema_name.to_owned(),
            line: None,
            column: None,
            message: m,
        };
        Entities::from_entities(Self::entities_vec(&input)?, Some(&self.schema))
            .map_err(|e| fail(format!("schema does not accept latch's entities: {e}")))?;
        for action in actions {
            let ctx = Self::context(&input).map_err(fail)?;
            Request::new(
                uid("Workload", "probe"),
                uid("Action", action),
                uid("Resource", "probe"),
                ctx,
                Some(&self.schema),
            )
            .map_err(|e| {
                fail(format!(
                    "schema does not accept latch's request for action `{action}`: {e}"
                ))
            })?;
        }
        Ok(())
    }

    fn eval_one(
        &self,
        input: &EvalInput<'_>,
        entities: &Entities,
        action: &str,
        approval: &ApprovalContext,
    ) -> ActionVerdict {
        let deny = |policy_ids: Vec<String>, reasons: Vec<String>| ActionVerdict::Deny {
            policy_ids,
            reasons,
        };
        let input = EvalInput {
            approval,
            ..input.clone()
        };
        let ctx = match Self::context(&input) {
            Ok(c) => c,
            Err(e) => return deny(vec![], vec![format!("cannot build policy context: {e}")]),
        };
        let req = match Request::new(
            uid("Workload", &input.workload.id),
            uid("Action", action),
            uid("Resource", &input.resource.id),
            ctx,
            None,
        ) {
            Ok(r) => r,
            Err(e) => return deny(vec![], vec![format!("cannot build policy request: {e}")]),
        };
        self.judge(
            &req,
            entities,
            &format!("`{action}` on `{}`", input.resource.id),
        )
    }

    /// Cedar's verdict on one built request; `what` names it in the default-deny reason.
    /// Evaluation errors deny, naming the policies that failed.
    fn judge(&self, req: &Request, entities: &Entities, what: &str) -> ActionVerdict {
        let deny = |policy_ids: Vec<String>, reasons: Vec<String>| ActionVerdict::Deny {
            policy_ids,
            reasons,
        };
        let resp = self.authorizer.is_authorized(req, &self.set, entities);
        let errors: Vec<_> = resp.diagnostics().errors().collect();
        if !errors.is_empty() {
            let ids = errors
                .iter()
                .map(|e| match e {
                    cedar_policy::AuthorizationError::PolicyEvaluationError(p) => {
                        p.policy_id().to_string()
                    }
                })
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>();
            let reasons = ids
                .iter()
                .map(|id| format!("policy `{id}` failed to evaluate; errors deny"))
                .collect();
            return deny(ids, reasons);
        }
        let ids: Vec<String> = resp.diagnostics().reason().map(|p| p.to_string()).collect();
        match resp.decision() {
            CedarDecision::Allow => {
                let max = ids
                    .iter()
                    .filter_map(|id| self.meta.get(id)?.max_ttl_secs)
                    .min();
                ActionVerdict::Allow {
                    policy_ids: ids,
                    max_ttl_secs: max,
                }
            }
            CedarDecision::Deny if ids.is_empty() => deny(
                vec![],
                vec![format!("no policy permits {what} (default deny)")],
            ),
            CedarDecision::Deny => {
                let reasons = ids
                    .iter()
                    .map(
                        |id| match self.meta.get(id).and_then(|m| m.reason.clone()) {
                            Some(r) => r,
                            None => format!("forbidden by policy `{id}`"),
                        },
                    )
                    .collect();
                deny(ids, reasons)
            }
        }
    }

    /// The step-up groups (with quorums) of `policy_ids` when every one is a `@step_up`
    /// forbid; `None` when any is not (or there are none).
    fn step_up_groups(&self, policy_ids: &[String]) -> Option<Vec<(String, u32)>> {
        if policy_ids.is_empty() {
            return None;
        }
        policy_ids
            .iter()
            .map(|id| {
                let m = self.meta.get(id)?;
                Some((m.step_up.clone()?, m.quorum))
            })
            .collect()
    }

    /// Evaluates every action of `input`; all must be allowed.
    ///
    /// Returns `Allow` (with the tightest `@max_ttl`), `Deny` (deciding policy ids and reasons)
    /// or `StepUp` when the only obstacles are `@step_up` forbids that an approval would lift.
    pub fn evaluate(&self, input: &EvalInput<'_>) -> Decision {
        let entities = match Self::entities_vec(input).and_then(|v| {
            Entities::from_entities(v, None).map_err(|e| PolicyLoadError {
                file: String::new(),
                line: None,
                column: None,
                message: e.to_string(),
            })
        }) {
            Ok(e) => e,
            Err(e) => {
                return Decision::Deny {
                    code: DenyCode::PolicyDenied,
                    policy_ids: vec![],
                    reasons: vec![format!("cannot build entities: {}", e.message)],
                };
            }
        };
        let mut allow_ids = BTreeSet::new();
        let mut max_ttl: Option<i64> = None;
        let mut deny_ids = BTreeSet::new();
        let mut deny_reasons = Vec::new();
        let mut step_ids = BTreeSet::new();
        let mut step_groups: BTreeMap<String, u32> = BTreeMap::new();
        if input.actions.is_empty() {
            return Decision::Deny {
                code: DenyCode::PolicyDenied,
                policy_ids: vec![],
                reasons: vec!["no action requested".into()],
            };
        }
        for action in input.actions {
            match self.eval_one(input, &entities, action, input.approval) {
                ActionVerdict::Allow {
                    policy_ids,
                    max_ttl_secs,
                } => {
                    allow_ids.extend(policy_ids);
                    if let Some(m) = max_ttl_secs {
                        max_ttl = Some(max_ttl.map_or(m, |x| x.min(m)));
                    }
                }
                ActionVerdict::Deny {
                    policy_ids,
                    reasons,
                } => {
                    // Step-up only if every deciding policy is a step-up forbid, and lifting
                    // them (a hypothetical approval by their groups) makes the action allowed.
                    let groups = self.step_up_groups(&policy_ids);
                    // Lifting them must make the action allowed; when it still denies, that
                    // denial (e.g. no policy permits it) is the deciding reason, not step-up:
                    // no approval could allow the request.
                    let hypothetical = groups.as_ref().map(|groups| {
                        let mut hyp = input.approval.clone();
                        hyp.approved = true;
                        hyp.approvers.push("(pending approval)".into());
                        hyp.groups.extend(groups.iter().map(|(g, _)| g.clone()));
                        self.eval_one(input, &entities, action, &hyp)
                    });
                    match (groups, hypothetical) {
                        (Some(groups), Some(ActionVerdict::Allow { .. })) => {
                            step_ids.extend(policy_ids);
                            for (g, q) in groups {
                                let e = step_groups.entry(g.clone()).or_insert(q);
                                *e = (*e).max(q);
                            }
                        }
                        (
                            _,
                            Some(ActionVerdict::Deny {
                                policy_ids: ids,
                                reasons: why,
                            }),
                        ) => {
                            deny_ids.extend(ids);
                            deny_reasons.extend(why);
                        }
                        _ => {
                            deny_ids.extend(policy_ids);
                            deny_reasons.extend(reasons);
                        }
                    }
                }
            }
        }
        if !deny_reasons.is_empty() {
            deny_reasons.dedup();
            let budget = deny_ids
                .iter()
                .any(|id| self.meta.get(id).is_some_and(|m| m.budget));
            return Decision::Deny {
                code: if budget {
                    DenyCode::BudgetExceeded
                } else {
                    DenyCode::PolicyDenied
                },
                policy_ids: deny_ids.into_iter().collect(),
                reasons: deny_reasons,
            };
        }
        if !step_groups.is_empty() {
            return Decision::StepUp {
                policy_ids: step_ids.into_iter().collect(),
                groups: step_groups
                    .into_iter()
                    .map(|(group, quorum)| GroupQuorum { group, quorum })
                    .collect(),
            };
        }
        Decision::Allow {
            policy_ids: allow_ids.into_iter().collect(),
            max_ttl_secs: max_ttl,
        }
    }
}
