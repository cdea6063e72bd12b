//! Policy probes: what the loaded policies answer, without any approval, when a trusted
//! principal of each preset asks for each action of a production or `secret` resource from a
//! task in the resource's own environment. Decided exactly as `latch policy test` decides
//! ([`crate::policy::run_policy_case`]): hard separation first, then Cedar.

use super::ProbeResult;
use crate::model::{Decision, Resource, WorkloadClaims};
use crate::policy::{PolicyEngine, PolicyTestCase, run_policy_case};

/// The presets a probe asks as.
pub const PROBE_PRESETS: [&str; 6] = [
    "generic",
    "github_actions",
    "gitlab_ci",
    "kubernetes",
    "spiffe",
    "mcp_client",
];

/// Most resources probed (in configuration order); a report notes none past it.
const MAX_RESOURCES: usize = 200;

/// The most favourable claims a workload of `preset` can present: a trusted push to the
/// protected `main` branch, bound to the resource's environment.
fn case(preset: &str, r: &Resource, action: &str) -> PolicyTestCase {
    let claims = WorkloadClaims {
        repository: Some("probe/probe".into()),
        repository_owner: Some("probe".into()),
        git_ref: Some("refs/heads/main".into()),
        branch: Some("main".into()),
        ref_protected: Some(true),
        environment: Some(r.environment.as_str().to_owned()),
        event_name: Some("push".into()),
        untrusted_source: false,
        ..WorkloadClaims::default()
    };
    PolicyTestCase {
        name: format!("probe {preset} {} {action}", r.id),
        principal: claims,
        preset: Some(preset.to_owned()),
        on_behalf_of: (preset == "mcp_client").then(|| "probe-human".to_owned()),
        environment: r.environment.as_str().to_owned(),
        repository: None,
        branch: None,
        resource: r.id.clone(),
        actions: vec![action.to_owned()],
        ttl_secs: r.default_ttl_secs.max(1),
        approved_groups: vec![],
        // A clean task: the most a fresh task could get without approval.
        history: crate::history::TaskHistory::default(),
        expect: String::new(),
    }
}

/// Probes every action of every production or `secret`-sensitivity resource: one result per
/// resource and action, the most permissive answer over [`PROBE_PRESETS`].
pub fn probe(
    engine: &PolicyEngine,
    resources: &[Resource],
    production_environments: &[String],
    now_unix_secs: i64,
) -> Vec<ProbeResult> {
    let mut out = Vec::new();
    let probed = resources
        .iter()
        .filter(|r| r.production || r.sensitivity == "secret")
        .take(MAX_RESOURCES);
    for r in probed {
        for action in &r.actions {
            let mut best: Option<(u8, Vec<String>, Vec<String>)> = None;
            for preset in PROBE_PRESETS {
                let c = case(preset, r, action);
                let Ok(d) = run_policy_case(
                    engine,
                    resources,
                    production_environments,
                    &c,
                    now_unix_secs,
                ) else {
                    continue;
                };
                let rank = match &d {
                    Decision::Allow { .. } => 2,
                    Decision::StepUp { .. } => 1,
                    Decision::Deny { .. } => 0,
                };
                match &mut best {
                    Some((b, presets, _)) if *b == rank => presets.push(preset.to_owned()),
                    Some((b, _, _)) if *b > rank => {}
                    _ => {
                        best = Some((rank, vec![preset.to_owned()], d.policy_ids().to_vec()));
                    }
                }
            }
            if let Some((rank, presets, policy_ids)) = best {
                out.push(ProbeResult {
                    resource: r.id.clone(),
                    action: action.clone(),
                    production: r.production,
                    decision: ["deny", "step_up", "allow"][usize::from(rank)].to_owned(),
                    presets,
                    policy_ids,
                });
            }
        }
    }
    out
}
