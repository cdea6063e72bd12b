//! Status computation: a hardened configuration passes the computed controls, and each known
//! weakness (development issuer, production without step-up, a leak left live, failed
//! revocations) flips exactly the controls that depend on it. Probes against the example
//! policies, and the figures folded from a scripted trail.

use serde_json::json;

use super::*;
use crate::model::{AuditEvent, AuditKind, Resource};
use crate::policy::{PolicyEngine, PolicySource};

const SCHEMA: &str = include_str!("../../../../examples/latch.cedarschema");
const PERMITS: &str = include_str!("../../../../examples/policies/10-permits.cedar");
const GUARDS: &str = include_str!("../../../../examples/policies/20-guards.cedar");

fn resource(
    id: &str,
    env: &str,
    production: bool,
    sensitivity: &str,
    actions: &[&str],
) -> Resource {
    Resource {
        id: id.into(),
        kind: "jwt".into(),
        environment: env.into(),
        sensitivity: sensitivity.into(),
        audience: format!("https://{id}.example"),
        actions: actions.iter().map(|a| (*a).to_owned()).collect(),
        max_ttl_secs: 900,
        max_lifetime_secs: 3600,
        default_ttl_secs: 300,
        owner: Some("team".into()),
        production,
        egress: false,
        end_task_on_budget_breach: false,
        settings: serde_json::Value::Null,
    }
}

fn resources() -> Vec<Resource> {
    vec![
        resource("ci-cache", "sandbox", false, "internal", &["read", "write"]),
        resource(
            "payments-db",
            "production",
            true,
            "confidential",
            &["read", "write", "admin"],
        ),
        resource(
            "deploy-pipeline",
            "production",
            true,
            "confidential",
            &["deploy"],
        ),
        resource("vault-prod", "production", true, "secret", &["read"]),
    ]
}

fn engine(policies: &[&str]) -> PolicyEngine {
    let srcs: Vec<PolicySource> = policies
        .iter()
        .enumerate()
        .map(|(i, t)| PolicySource {
            name: format!("{i}.cedar"),
            text: (*t).to_owned(),
        })
        .collect();
    let actions: Vec<String> = ["read", "write", "deploy", "admin"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    PolicyEngine::load(
        &PolicySource {
            name: "latch.cedarschema".into(),
            text: SCHEMA.into(),
        },
        &srcs,
        &actions,
    )
    .unwrap()
}

/// Every production action behind a step-up.
const ALL_PROD_STEP_UP: &str = r#"
@id("prod-needs-approval")
@step_up("prod-approvers")
@quorum("2")
forbid (principal, action, resource)
when { resource.production }
unless { context.approval.groups.contains("prod-approvers") };
"#;

fn policy_facts(e: &PolicyEngine) -> PolicyFacts {
    PolicyFacts {
        fingerprint: e.fingerprint().to_owned(),
        policies: e.policy_ids().len() as u32,
        step_up: e
            .step_up_policies()
            .into_iter()
            .map(|(policy_id, group, quorum)| StepUpFact {
                policy_id,
                group,
                quorum,
            })
            .collect(),
        probes: probe(e, &resources(), &["production".to_owned()], 1_000),
    }
}

/// A deployment with every computed control satisfied.
fn hardened() -> ControlInputs {
    let e = engine(&[PERMITS, GUARDS, ALL_PROD_STEP_UP]);
    ControlInputs {
        generated_at_unix_secs: 2_000,
        broker: "https://latch.example".into(),
        window: (0, 2_000),
        checkpoint: Some(CheckpointRef {
            seq: 42,
            hash: "ab".repeat(32),
            kid: "kid1".into(),
            signed_at: iso8601(1_999),
        }),
        config: ControlConfig {
            budgets_configured: true,
            issuers: vec![IssuerFact {
                name: "github".into(),
                kind: "workload".into(),
                preset: "github_actions".into(),
                max_token_lifetime_secs: 900,
            }],
            production_environments: vec!["production".into()],
            admin_groups: vec!["latch-admins".into()],
            checkpoint_interval_secs: 60,
            audit_sinks: vec![SinkFact {
                name: "siem".into(),
                kind: "webhook".into(),
            }],
            notification_channels: vec!["slack".into()],
            reaper_enabled: true,
            mcp_upstreams: vec![UpstreamFact {
                name: "tools".into(),
                transport: "streamable_http".into(),
                static_credential: false,
            }],
            public_url: "https://latch.example".into(),
            tls: true,
            ..ControlConfig::default()
        },
        resources: resources().iter().map(ResourceFact::from).collect(),
        policy: policy_facts(&e),
        figures: AuditFigures {
            grants: GrantFigures {
                total: 2,
                sender_constrained: 2,
                ..GrantFigures::default()
            },
            ..AuditFigures::default()
        },
    }
}

fn status(r: &ControlReport, id: &str) -> Status {
    r.controls
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no control {id}"))
        .status
}

/// The controls a condition is expected to fail, checked against the hardened baseline: each
/// listed control goes from pass to fail, and every other control keeps its status (L6, which
/// sums the others, aside).
fn assert_flips(changed: &ControlInputs, expected: &[&str]) {
    let base = compute(&hardened());
    let now = compute(changed);
    for id in expected {
        assert_eq!(
            status(&base, id),
            Status::Pass,
            "{id} passes in the baseline"
        );
        assert_eq!(status(&now, id), Status::Fail, "{id} fails");
    }
    for (b, n) in base.controls.iter().zip(&now.controls) {
        if !expected.contains(&b.id.as_str()) && b.id != "L6" {
            assert_eq!(b.status, n.status, "{} is unaffected", b.id);
        }
    }
    assert_eq!(status(&now, "L6"), Status::Fail, "L6 sums the failures");
}

#[test]
fn hardened_configuration_passes_every_computed_control() {
    let r = compute(&hardened());
    assert_eq!(r.schema_version, SCHEMA_VERSION);
    assert_eq!(r.controls.len(), 36);
    for c in &r.controls {
        assert!(
            matches!(c.status, Status::Pass | Status::Manual),
            "{} is {:?}: {:?}",
            c.id,
            c.status,
            c.evidence
        );
        assert!(!c.rule.is_empty() && !c.evidence.is_empty(), "{}", c.id);
        if c.status == Status::Manual {
            assert!(c.rule.starts_with("manual: "), "{} says why", c.id);
        }
    }
    let ids: Vec<&str> = r.controls.iter().map(|c| c.id.as_str()).collect();
    for id in [
        "ASI01",
        "ASI10",
        "NHI1:2025",
        "NHI10:2025",
        "L1",
        "L6",
        "L7",
        "GOVERN 1.4",
        "MANAGE 4.3",
    ] {
        assert!(ids.contains(&id), "{id}");
    }
    assert_eq!(r.summary.total, 36);
    assert_eq!(r.summary.pass + r.summary.manual, 36);
}

#[test]
fn development_issuer_fails_the_identity_controls() {
    let mut i = hardened();
    i.config.dev_issuer_enabled = true;
    assert_flips(
        &i,
        &[
            "ASI03",
            "NHI4:2025",
            "NHI6:2025",
            "NHI10:2025",
            "L4",
            "L7",
            "MEASURE 2.7",
        ],
    );
    let r = compute(&i);
    let c = r.controls.iter().find(|c| c.id == "ASI03").unwrap();
    assert!(
        c.evidence[0].contains("development issuer is enabled"),
        "{:?}",
        c.evidence
    );
}

#[test]
fn production_without_step_up_by_policy_fails_the_privilege_controls() {
    let mut i = hardened();
    // The example set alone: production reads from main need no approval.
    i.policy = policy_facts(&engine(&[PERMITS, GUARDS]));
    let open: Vec<_> = i
        .policy
        .probes
        .iter()
        .filter(|p| p.decision == "allow")
        .collect();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(
        (open[0].resource.as_str(), open[0].action.as_str()),
        ("payments-db", "read")
    );
    assert_eq!(open[0].policy_ids, ["prod-read-from-main"]);
    // Quorum 1 everywhere in the example set: ASI09 is partial, not failed.
    let r = compute(&i);
    assert_eq!(status(&r, "ASI09"), Status::Partial);
    for id in ["ASI03", "NHI5:2025", "MEASURE 2.7"] {
        assert_eq!(status(&r, id), Status::Fail, "{id}");
    }
    assert!(
        r.controls
            .iter()
            .find(|c| c.id == "ASI03")
            .unwrap()
            .evidence
            .iter()
            .any(|e| e.contains("`read` on `payments-db` (production)")),
    );
}

#[test]
fn a_production_grant_without_step_up_fails_even_when_probes_pass() {
    let mut i = hardened();
    i.figures.grants.production = 1;
    i.figures.grants.production_without_step_up = 1;
    assert_flips(&i, &["ASI03", "NHI5:2025", "MEASURE 2.7"]);
}

#[test]
fn a_secret_resource_without_step_up_fails_data_operations() {
    let mut i = hardened();
    i.policy.probes.push(ProbeResult {
        resource: "vault-prod".into(),
        action: "read".into(),
        production: true,
        decision: "allow".into(),
        presets: vec!["generic".into()],
        policy_ids: vec!["oops".into()],
    });
    assert_flips(&i, &["ASI03", "NHI5:2025", "L2", "MEASURE 2.7"]);
}

#[test]
fn a_leak_left_live_and_unconfirmed_revocations_fail_their_controls() {
    let mut i = hardened();
    i.figures.leaks.reported = 1;
    i.figures.leaks.revoked = 1;
    i.figures.leaks.not_revoked = 1;
    assert_flips(&i, &["NHI2:2025", "ASI10", "MANAGE 4.3"]);
    let mut i = hardened();
    i.figures.revocations.failed_attempts = 3;
    i.figures.revocations.leases_with_failures = 1;
    i.figures.revocations.unconfirmed = 1;
    assert_flips(&i, &["ASI08", "NHI1:2025", "MEASURE 2.7"]);
}

#[test]
fn missing_checkpoint_sinks_and_admins_degrade_observability_and_oversight() {
    let mut i = hardened();
    i.checkpoint = None;
    assert_flips(&i, &["L5", "MEASURE 2.8"]);
    let mut i = hardened();
    i.config.audit_sinks.clear();
    let r = compute(&i);
    for id in ["L5", "MEASURE 2.8", "MANAGE 4.1", "MANAGE 4.3"] {
        assert_eq!(status(&r, id), Status::Partial, "{id}");
    }
    let mut i = hardened();
    i.config.admin_groups.clear();
    let r = compute(&i);
    for id in ["ASI10", "MANAGE 2.4"] {
        assert_eq!(status(&r, id), Status::Fail, "{id}");
    }
    assert_eq!(status(&r, "GOVERN 3.2"), Status::Partial);
}

#[test]
fn lifetimes_isolation_and_reuse_are_computed_from_the_resources() {
    let mut i = hardened();
    i.resources[0].max_ttl_secs = 7200;
    assert_eq!(status(&compute(&i), "NHI7:2025"), Status::Partial);
    i.resources[0].max_lifetime_secs = 3 * 86_400;
    assert_eq!(status(&compute(&i), "NHI7:2025"), Status::Fail);
    let mut i = hardened();
    i.resources[0].environment = "prod-eu".into();
    assert_eq!(
        status(&compute(&i), "NHI8:2025"),
        Status::Fail,
        "named like production"
    );
    i.resources.truncate(1);
    assert_eq!(status(&compute(&i), "NHI8:2025"), Status::NotApplicable);
    let mut i = hardened();
    i.resources[1].audience = i.resources[0].audience.clone();
    assert_eq!(status(&compute(&i), "NHI9:2025"), Status::Partial);
    let mut i = hardened();
    i.config.mcp_upstreams.clear();
    let r = compute(&i);
    assert_eq!(status(&r, "NHI3:2025"), Status::NotApplicable);
    assert_eq!(status(&r, "ASI02"), Status::Partial);
}

#[test]
fn plain_http_is_tolerated_on_loopback_only() {
    let mut i = hardened();
    i.config.tls = false;
    i.config.public_url = "http://127.0.0.1:8080".into();
    assert_eq!(status(&compute(&i), "L4"), Status::Pass);
    i.config.public_url = "http://latch.internal:8080".into();
    assert_eq!(status(&compute(&i), "L4"), Status::Fail);
    assert_eq!(status(&compute(&i), "ASI07"), Status::Fail);
}

fn ev(seq: i64, at: i64, kind: AuditKind, actor: &str, outcome: &str) -> AuditEvent {
    let mut e = AuditEvent::new(at, kind, actor, outcome);
    e.seq = seq;
    e
}

#[test]
fn figures_fold_counts_approvers_ttl_denials_and_time_to_revocation() {
    let mut f = FigureFold::new(["payments-db".to_owned()]);
    let events = vec![
        ev(1, 100, AuditKind::TaskOpened, "wl", "ok")
            .task("t1")
            .detail(json!({"production": true, "on_behalf_of": "alice"})),
        ev(2, 101, AuditKind::RequestDecided, "wl", "step_up").access_request("r1"),
        ev(3, 110, AuditKind::ApprovalRecorded, "bob", "approve").access_request("r1"),
        ev(4, 110, AuditKind::RequestDecided, "bob", "allow").access_request("r1"),
        ev(5, 111, AuditKind::RequestDecided, "wl", "allow").access_request("r1"),
        ev(6, 111, AuditKind::CredentialIssued, "wl", "ok")
            .access_request("r1")
            .lease("l1")
            .detail(
                json!({"resource": "payments-db", "expires_at_unix_secs": 1011, "cnf_jkt": "x"}),
            ),
        ev(7, 120, AuditKind::RequestDecided, "wl", "allow").access_request("r2"),
        ev(8, 120, AuditKind::CredentialIssued, "wl", "ok")
            .access_request("r2")
            .lease("l2")
            .detail(json!({"resource": "payments-db", "expires_at_unix_secs": 420})),
        ev(9, 130, AuditKind::RequestDecided, "wl", "deny")
            .access_request("r3")
            .detail(json!({"code": "environment_separation"})),
        // A record from before decisions carried their code: the legacy rule.
        ev(10, 131, AuditKind::RequestDecided, "wl", "deny")
            .access_request("r4")
            .detail(json!({"policy_ids": [], "reasons": ["denied by approver `carol`: no"]})),
        ev(
            11,
            140,
            AuditKind::CredentialRevocationRequested,
            "scanner",
            "ok",
        )
        .lease("l1")
        .detail(json!({"reason": "leaked"})),
        ev(12, 147, AuditKind::CredentialRevoked, "latch", "ok")
            .lease("l1")
            .detail(json!({"reason": "leaked"})),
        ev(13, 147, AuditKind::LeakDetected, "scanner", "revoked").lease("l1"),
        ev(14, 150, AuditKind::LeakDetected, "scanner", "revoked").lease("l2"),
        ev(15, 151, AuditKind::LeakDetected, "scanner", "third_party").detail(json!({"count": 3})),
        ev(16, 160, AuditKind::ToolCalled, "wl", "deny"),
        ev(17, 161, AuditKind::ToolCalled, "wl", "ok"),
    ];
    for e in &events {
        f.add(e);
    }
    let f = f.finish();
    assert_eq!(
        (f.events_read, f.first_seq, f.last_seq),
        (17, Some(1), Some(17))
    );
    assert_eq!(f.tasks.opened, 1);
    assert_eq!(f.tasks.on_behalf_of_human, 1);
    assert_eq!(f.step_ups.requested, 1);
    assert_eq!(
        f.step_ups.approved, 1,
        "the quorum and the claim count once"
    );
    assert_eq!(f.step_ups.approvers.get("bob"), Some(&1));
    assert_eq!(f.grants.total, 2);
    assert_eq!(f.grants.after_step_up, 1);
    assert_eq!(f.grants.production_without_step_up, 1);
    assert_eq!(f.grants.sender_constrained, 1);
    let ttl = f.longest_ttl.unwrap();
    assert_eq!((ttl.secs, ttl.lease_id.as_str(), ttl.seq), (900, "l1", 6));
    assert_eq!(f.denials.by_code.get("environment_separation"), Some(&1));
    assert_eq!(f.denials.by_code.get("approver_denied"), Some(&1));
    assert_eq!(f.leaks.reported, 3);
    assert_eq!(f.leaks.third_party, 3);
    let ttr = f.leaks.time_to_revocation.unwrap();
    assert_eq!((ttr.count, ttr.min_secs, ttr.max_secs), (1, 7, 7));
    assert_eq!(f.leaks.not_revoked, 1);
    assert_eq!(f.leaks.not_revoked_leases, ["l2"]);
    assert_eq!(
        (f.tools.calls, f.tools.refused, f.tools.forwarded),
        (2, 1, 1)
    );
}

#[test]
fn spread_takes_the_middle_of_an_even_count() {
    let s = Spread::of(vec![4, 1, 3, 10]).unwrap();
    assert_eq!(
        (s.min_secs, s.median_secs, s.max_secs, s.count),
        (1, 3.5, 10, 4)
    );
    assert!(Spread::of(vec![]).is_none());
}

#[test]
fn iso8601_is_utc_with_seconds_and_clamped() {
    assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
    assert_eq!(iso8601(1_767_225_600), "2026-01-01T00:00:00Z");
    assert_eq!(iso8601(i64::MAX), "9999-12-31T23:59:59Z");
}

/// A report whose audit read hit its cap proves no pass (found by the outside attack: the
/// newest records, past the cap, could hold what fails a control).
#[test]
fn a_truncated_audit_read_proves_no_pass() {
    let mut inputs = hardened();
    inputs.figures.truncated = true;
    let r = compute(&inputs);
    assert_eq!(r.summary.pass, 0, "{:?}", r.summary);
    assert!(r.controls.iter().all(|c| c.status != Status::Pass));
    assert!(
        r.controls.iter().any(|c| c.status == Status::Partial
            && c.evidence.iter().any(|e| e.starts_with("incomplete:")))
    );
}

/// Shared Signals receivers carry incidents off the broker as audit sinks do (MANAGE 4.3).
#[test]
fn a_shared_signals_receiver_counts_as_an_incident_channel() {
    let mut inputs = hardened();
    inputs.config.audit_sinks.clear();
    assert_eq!(status(&compute(&inputs), "MANAGE 4.3"), Status::Partial);
    inputs.config.ssf_receivers = 1;
    assert_eq!(status(&compute(&inputs), "MANAGE 4.3"), Status::Pass);
}
