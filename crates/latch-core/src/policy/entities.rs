//! The entities and context Latch sends Cedar for a request: the workload principal, the
//! resource, the task's history (`policy::history`), and `context` (task, approval, TTL, time,
//! source address, history, budget).

use std::collections::{HashMap, HashSet};

use cedar_policy::{Context, Entity, RestrictedExpression};

use super::history::{budget_record, history_entity, history_ref};
use super::{ApprovalContext, EvalInput, PolicyEngine, PolicyLoadError, s, set_of, uid};
use crate::model::{Task, Workload};

impl PolicyEngine {
    pub(super) fn entities_vec(input: &EvalInput<'_>) -> Result<Vec<Entity>, PolicyLoadError> {
        let bad = |e: String| PolicyLoadError {
            file: String::new(),
            line: None,
            column: None,
            message: e,
        };
        let workload = Self::workload_entity(input.workload).map_err(bad)?;
        let r = input.resource;
        let mut ra: HashMap<String, RestrictedExpression> = HashMap::new();
        ra.insert("kind".into(), s(&r.kind));
        ra.insert("environment".into(), s(r.environment.as_str()));
        ra.insert("sensitivity".into(), s(&r.sensitivity));
        ra.insert("audience".into(), s(&r.audience));
        ra.insert(
            "production".into(),
            RestrictedExpression::new_bool(r.production),
        );
        ra.insert("egress".into(), RestrictedExpression::new_bool(r.egress));
        ra.insert(
            "max_ttl_secs".into(),
            RestrictedExpression::new_long(r.max_ttl_secs),
        );
        if let Some(o) = &r.owner {
            ra.insert("owner".into(), s(o));
        }
        let history = history_entity(&input.task.id, input.history.history).map_err(bad)?;
        Ok(vec![
            history,
            workload,
            Entity::new(uid("Resource", &r.id), ra, HashSet::new())
                .map_err(|e| bad(e.to_string()))?,
        ])
    }

    /// The workload principal as a Cedar entity (its mapped claims as attributes).
    pub(super) fn workload_entity(w: &Workload) -> Result<Entity, String> {
        let c = &w.claims;
        let mut wa: HashMap<String, RestrictedExpression> = HashMap::new();
        wa.insert("issuer".into(), s(&w.issuer));
        wa.insert("subject".into(), s(&w.subject));
        wa.insert("preset".into(), s(&w.preset));
        wa.insert(
            "untrusted_source".into(),
            RestrictedExpression::new_bool(c.untrusted_source),
        );
        let opt = [
            ("repository", &c.repository),
            ("repository_id", &c.repository_id),
            ("repository_owner", &c.repository_owner),
            ("repository_owner_id", &c.repository_owner_id),
            ("git_ref", &c.git_ref),
            ("branch", &c.branch),
            ("environment", &c.environment),
            ("event_name", &c.event_name),
            ("runner_environment", &c.runner_environment),
            ("workflow_ref", &c.workflow_ref),
            ("namespace", &c.namespace),
            ("service_account", &c.service_account),
            ("service_account_uid", &c.service_account_uid),
            ("spiffe_id", &c.spiffe_id),
            ("trust_domain", &c.trust_domain),
            ("run_id", &c.run_id),
            ("run_attempt", &c.run_attempt),
            ("pipeline_id", &c.pipeline_id),
            ("job_id", &c.job_id),
            ("pod_uid", &c.pod_uid),
            ("run_binding", &w.run_binding),
            ("on_behalf_of", &w.on_behalf_of),
            ("client_id", &c.client_id),
            ("client_metadata_url", &c.client_metadata_url),
        ];
        for (k, v) in opt {
            if let Some(v) = v {
                wa.insert(k.into(), s(v));
            }
        }
        if c.spiffe_id.is_some() {
            // Segments as a set (membership), and every leading path (`/ns`, `/ns/payments`,
            // …) as a set, so a policy matches a position in the path with `contains` rather
            // than with `like` on the ID's text.
            let segments = c.spiffe_path.iter().map(|p| s(p));
            let prefixes = (1..=c.spiffe_path.len()).map(|n| {
                let prefix: String = c.spiffe_path[..n].iter().map(|p| format!("/{p}")).collect();
                s(&prefix)
            });
            wa.insert(
                "spiffe_path".into(),
                RestrictedExpression::new_set(segments),
            );
            wa.insert(
                "spiffe_path_prefixes".into(),
                RestrictedExpression::new_set(prefixes),
            );
        }
        if let Some(d) = c.developer_machine {
            wa.insert(
                "developer_machine".into(),
                RestrictedExpression::new_bool(d),
            );
        }
        if let Some(p) = c.ref_protected {
            wa.insert("ref_protected".into(), RestrictedExpression::new_bool(p));
        }
        Entity::new(uid("Workload", &w.id), wa, HashSet::new()).map_err(|e| e.to_string())
    }

    /// `context.task` as Cedar sees it.
    pub(super) fn task_record(t: &Task) -> Result<RestrictedExpression, String> {
        let mut task = vec![
            ("id".to_owned(), s(&t.id)),
            ("purpose".to_owned(), s(&t.purpose)),
            ("environment".to_owned(), s(t.environment.as_str())),
            (
                "production".to_owned(),
                RestrictedExpression::new_bool(t.production),
            ),
        ];
        if let Some(r) = &t.repository {
            task.push(("repository".into(), s(r)));
        }
        if let Some(b) = &t.branch {
            task.push(("branch".into(), s(b)));
        }
        RestrictedExpression::new_record(task).map_err(|e| e.to_string())
    }

    /// `context.approval` as Cedar sees it.
    pub(super) fn approval_record(a: &ApprovalContext) -> Result<RestrictedExpression, String> {
        RestrictedExpression::new_record([
            (
                "approved".to_owned(),
                RestrictedExpression::new_bool(a.approved),
            ),
            ("approvers".to_owned(), set_of(&a.approvers)),
            ("groups".to_owned(), set_of(&a.groups)),
        ])
        .map_err(|e| e.to_string())
    }

    pub(super) fn context(input: &EvalInput<'_>) -> Result<Context, String> {
        let t = input.task;
        let task = Self::task_record(t)?;
        let approval = Self::approval_record(input.approval)?;
        let mut pairs = vec![
            ("task".to_owned(), task),
            ("approval".to_owned(), approval),
            (
                "ttl_secs".to_owned(),
                RestrictedExpression::new_long(input.ttl_secs),
            ),
            (
                "now_unix_secs".to_owned(),
                RestrictedExpression::new_long(input.now_unix_secs),
            ),
            ("history".to_owned(), history_ref(&t.id)),
            ("budget".to_owned(), budget_record(&input.history)?),
        ];
        if let Some(ip) = input.source_ip {
            pairs.push(("source_ip".into(), s(ip)));
        }
        if let Some(p) = input.principals {
            pairs.push(("principals".into(), set_of(p)));
        }
        if let Some(h) = &t.on_behalf_of {
            pairs.push(("on_behalf_of".into(), s(h)));
        }
        Context::from_pairs(pairs).map_err(|e| e.to_string())
    }
}
