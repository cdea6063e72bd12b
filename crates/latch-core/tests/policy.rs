//! Policy-engine invariants: default deny, forbid wins, evaluation errors deny, step-up from
//! annotations, `@max_ttl`, and load errors with positions.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unimplemented,
    clippy::too_many_lines,
    reason = "test code: a failed step fails the test, and a scenario reads best in one piece"
)]
use latch_core::broker::decide;
use latch_core::model::{
    Decision, DenyCode, GroupQuorum, Resource, Task, TaskState, Workload, WorkloadClaims,
};
use latch_core::policy::{ApprovalContext, EvalInput, HistoryInput, PolicyEngine, PolicySource};

const SCHEMA: &str = include_str!("../../../examples/latch.cedarschema");

fn actions() -> Vec<String> {
    ["read", "write", "deploy", "admin"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn engine(policies: &[(&str, &str)]) -> PolicyEngine {
    try_engine(policies).unwrap_or_else(|e| panic!("{e}"))
}

fn try_engine(
    policies: &[(&str, &str)],
) -> Result<PolicyEngine, latch_core::policy::PolicyLoadError> {
    let srcs: Vec<PolicySource> = policies
        .iter()
        .map(|(n, t)| PolicySource {
            name: n.to_string(),
            text: t.to_string(),
        })
        .collect();
    PolicyEngine::load(
        &PolicySource {
            name: "latch.cedarschema".into(),
            text: SCHEMA.into(),
        },
        &srcs,
        &actions(),
    )
}

fn workload(untrusted: bool) -> Workload {
    Workload {
        id: "iss#sub".into(),
        issuer: "iss".into(),
        subject: "sub".into(),
        preset: "github_actions".into(),
        run_binding: Some("gh-run:1/1".into()),
        on_behalf_of: Some("alice".into()),
        claims: WorkloadClaims {
            repository: Some("acme/app".into()),
            branch: (!untrusted).then(|| "main".into()),
            git_ref: Some("refs/heads/main".into()),
            untrusted_source: untrusted,
            ..Default::default()
        },
        token_expires_at_unix_secs: 2_000_000_000,
    }
}

fn resource(env: &str, production: bool, sensitivity: &str) -> Resource {
    Resource {
        id: format!("{env}-db"),
        kind: "jwt".into(),
        environment: env.into(),
        sensitivity: sensitivity.into(),
        audience: "aud".into(),
        actions: actions(),
        max_ttl_secs: 900,
        max_lifetime_secs: 3600,
        default_ttl_secs: 300,
        owner: None,
        production,
        egress: false,
        end_task_on_budget_breach: false,
        settings: serde_json::Value::Null,
    }
}

fn task(env: &str, production: bool) -> Task {
    Task {
        id: "task_1".into(),
        owner: workload(false),
        purpose: "p".into(),
        repository: Some("acme/app".into()),
        branch: Some("main".into()),
        environment: env.into(),
        production,
        on_behalf_of: Some("alice".into()),
        state: TaskState::Open,
        created_at_unix_secs: 0,
        expires_at_unix_secs: 10_000,
        ended_at_unix_secs: None,
        version: 1,
    }
}

fn eval(
    e: &PolicyEngine,
    w: &Workload,
    r: &Resource,
    t: &Task,
    action: &str,
    approval: &ApprovalContext,
) -> Decision {
    let actions = vec![action.to_string()];
    decide(
        e,
        &EvalInput {
            workload: w,
            resource: r,
            actions: &actions,
            task: t,
            ttl_secs: 300,
            now_unix_secs: 1000,
            source_ip: None,
            approval,
            principals: None,
            history: HistoryInput::empty(),
        },
    )
}

const PERMIT_ALL: &str = "@id(\"all\")\n@max_ttl(\"10m\")\npermit (principal, action, resource);\n";

#[test]
fn default_deny_names_no_policy() {
    let e = engine(&[(
        "a.cedar",
        "@id(\"reads\")\npermit (principal, action == Latch::Action::\"read\", resource);",
    )]);
    let d = eval(
        &e,
        &workload(false),
        &resource("staging", false, "internal"),
        &task("sandbox", false),
        "write",
        &ApprovalContext::default(),
    );
    match d {
        Decision::Deny {
            code,
            policy_ids,
            reasons,
        } => {
            assert_eq!(code, DenyCode::PolicyDenied);
            assert!(policy_ids.is_empty());
            assert!(reasons[0].contains("default deny"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn forbid_wins_and_reports_its_reason() {
    let e = engine(&[
        ("a.cedar", PERMIT_ALL),
        (
            "b.cedar",
            "@id(\"no-admin\")\n@reason(\"never admin\")\nforbid (principal, action == Latch::Action::\"admin\", resource);",
        ),
    ]);
    let d = eval(
        &e,
        &workload(false),
        &resource("staging", false, "internal"),
        &task("sandbox", false),
        "admin",
        &ApprovalContext::default(),
    );
    assert_eq!(
        d,
        Decision::Deny {
            code: DenyCode::PolicyDenied,
            policy_ids: vec!["no-admin".into()],
            reasons: vec!["never admin".into()]
        }
    );
    let d = eval(
        &e,
        &workload(false),
        &resource("staging", false, "internal"),
        &task("sandbox", false),
        "read",
        &ApprovalContext::default(),
    );
    assert_eq!(
        d,
        Decision::Allow {
            policy_ids: vec!["all".into()],
            max_ttl_secs: Some(600)
        }
    );
}

#[test]
fn a_policy_that_errors_denies() {
    // Passes strict validation but overflows at run time: Cedar alone would skip this forbid
    // and allow. Latch denies.
    let e = engine(&[
        ("a.cedar", PERMIT_ALL),
        (
            "b.cedar",
            "@id(\"overflow\")\nforbid (principal, action, resource) when { context.ttl_secs * 9223372036854775807 > 0 };",
        ),
    ]);
    let d = eval(
        &e,
        &workload(false),
        &resource("staging", false, "internal"),
        &task("sandbox", false),
        "read",
        &ApprovalContext::default(),
    );
    match d {
        Decision::Deny {
            code,
            policy_ids,
            reasons,
        } => {
            assert_eq!(code, DenyCode::PolicyDenied);
            assert_eq!(policy_ids, vec!["overflow".to_string()]);
            assert!(reasons[0].contains("failed to evaluate"));
        }
        other => panic!("an erroring policy must deny, got {other:?}"),
    }
}

const STEP: &str = "@id(\"need-approval\")\n@step_up(\"ops\")\n@quorum(\"2\")\nforbid (principal, action == Latch::Action::\"deploy\", resource) unless { context.approval.groups.contains(\"ops\") };";

#[test]
fn step_up_only_when_approval_would_lift_every_obstacle() {
    let e = engine(&[
        ("a.cedar", PERMIT_ALL),
        ("b.cedar", STEP),
        (
            "c.cedar",
            "@id(\"no-untrusted\")\nforbid (principal, action, resource) when { principal.untrusted_source };",
        ),
    ]);
    let r = resource("production", true, "internal");
    let t = task("production", true);
    let d = eval(
        &e,
        &workload(false),
        &r,
        &t,
        "deploy",
        &ApprovalContext::default(),
    );
    assert_eq!(
        d,
        Decision::StepUp {
            policy_ids: vec!["need-approval".into()],
            groups: vec![GroupQuorum {
                group: "ops".into(),
                quorum: 2
            }]
        }
    );
    assert_eq!(d.deny_code(), Some(DenyCode::StepUpRequired));
    // With the approval in context it is allowed.
    let ok = ApprovalContext {
        approved: true,
        approvers: vec!["bob".into(), "carol".into()],
        groups: vec!["ops".into()],
    };
    assert!(matches!(
        eval(&e, &workload(false), &r, &t, "deploy", &ok),
        Decision::Allow { .. }
    ));
    // A plain forbid in the way: no amount of approval helps, so it is a deny, not a step-up.
    let d = eval(
        &e,
        &workload(true),
        &r,
        &t,
        "deploy",
        &ApprovalContext::default(),
    );
    assert!(matches!(d, Decision::Deny { .. }), "{d:?}");
    // Without any permit, approval would not help either.
    let e2 = engine(&[("b.cedar", STEP)]);
    assert!(matches!(
        eval(
            &e2,
            &workload(false),
            &r,
            &t,
            "deploy",
            &ApprovalContext::default()
        ),
        Decision::Deny { .. }
    ));
}

#[test]
fn hard_separation_beats_any_policy() {
    let e = engine(&[("a.cedar", PERMIT_ALL)]);
    let d = eval(
        &e,
        &workload(false),
        &resource("production", true, "internal"),
        &task("sandbox", false),
        "read",
        &ApprovalContext::default(),
    );
    match d {
        Decision::Deny {
            code,
            policy_ids,
            reasons,
        } => {
            assert_eq!(code, DenyCode::EnvironmentSeparation);
            assert_eq!(code.as_str(), "environment_separation");
            assert!(policy_ids.is_empty());
            assert!(reasons[0].starts_with(latch_core::broker::SEPARATION_REASON));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn load_errors_name_file_line_and_column() {
    let err = try_engine(&[
        ("ok.cedar", PERMIT_ALL),
        (
            "bad.cedar",
            "\n\npermit (principal, action, resource) when { ;",
        ),
    ])
    .unwrap_err();
    assert_eq!(err.file, "bad.cedar");
    assert_eq!(err.line, Some(3), "{err}");
    assert!(err.column.is_some());
    let err = try_engine(&[(
        "v.cedar",
        "permit (principal, action, resource)\nwhen { resource.nope };",
    )])
    .unwrap_err();
    assert_eq!((err.file.as_str(), err.line), ("v.cedar", Some(2)), "{err}");
    // Annotation misuse is refused too.
    for (bad, why) in [
        (
            "@step_up(\"ops\")\npermit (principal, action, resource);",
            "step_up on a permit",
        ),
        (
            "@step_up(\"ops\")\n@quorum(\"0\")\nforbid (principal, action, resource);",
            "quorum 0",
        ),
        (
            "@max_ttl(\"soon\")\npermit (principal, action, resource);",
            "bad max_ttl",
        ),
        (
            "@id(\"x\")\npermit (principal, action, resource);\n@id(\"x\")\npermit (principal, action, resource);",
            "duplicate id",
        ),
    ] {
        assert!(
            try_engine(&[("x.cedar", bad)]).is_err(),
            "{why} must be refused"
        );
    }
    // A schema that does not describe what Latch sends is refused at load.
    let bad_schema = "namespace Latch { entity Workload; entity Resource; action \"read\" appliesTo { principal: [Workload], resource: [Resource] }; }";
    let err = PolicyEngine::load(
        &PolicySource {
            name: "s".into(),
            text: bad_schema.into(),
        },
        &[],
        &["read".into()],
    )
    .unwrap_err();
    assert!(err.message.contains("schema does not accept"), "{err}");
}

/// `decide()` sets one typed code per kind of denial, and every surface answers its `as_str()`.
#[test]
fn decide_sets_the_deny_code_each_surface_answers() {
    let e = engine(&[("a.cedar", PERMIT_ALL), ("b.cedar", STEP)]);
    let sandbox = task("sandbox", false);
    let prod = task("production", true);
    let none = ApprovalContext::default();
    // Environment separation: a sandbox task asks for a production resource.
    let sep = eval(
        &e,
        &workload(false),
        &resource("production", true, "internal"),
        &sandbox,
        "read",
        &none,
    );
    assert_eq!(sep.deny_code(), Some(DenyCode::EnvironmentSeparation));
    assert_eq!(
        sep.deny_code().map(DenyCode::as_str),
        Some("environment_separation")
    );
    // A plain policy deny: no permit applies.
    let plain = eval(
        &engine(&[("b.cedar", STEP)]),
        &workload(false),
        &resource("staging", false, "internal"),
        &sandbox,
        "read",
        &none,
    );
    assert_eq!(plain.deny_code(), Some(DenyCode::PolicyDenied));
    assert_eq!(
        plain.deny_code().map(DenyCode::as_str),
        Some("policy_denied")
    );
    // Step-up: allowed once approved; a call that cannot wait answers `policy_denied`.
    let step = eval(
        &e,
        &workload(false),
        &resource("production", true, "internal"),
        &prod,
        "deploy",
        &none,
    );
    assert!(matches!(step, Decision::StepUp { .. }), "{step:?}");
    assert_eq!(step.deny_code(), Some(DenyCode::StepUpRequired));
    assert_eq!(
        step.deny_code().map(DenyCode::as_str),
        Some("policy_denied")
    );
    // Allowed: no code.
    let ok = eval(
        &e,
        &workload(false),
        &resource("staging", false, "internal"),
        &sandbox,
        "read",
        &none,
    );
    assert_eq!(ok.deny_code(), None);
}

/// The stored and wire form of a denial carries its `code`, and decoding it recovers the
/// code, so a denial read back from the store answers the same code.
#[test]
fn deny_code_survives_the_store() {
    let e = engine(&[("a.cedar", PERMIT_ALL)]);
    let none = ApprovalContext::default();
    let sep = eval(
        &e,
        &workload(false),
        &resource("production", true, "internal"),
        &task("sandbox", false),
        "read",
        &none,
    );
    let plain = eval(
        &engine(&[("b.cedar", STEP)]),
        &workload(false),
        &resource("staging", false, "internal"),
        &task("sandbox", false),
        "read",
        &none,
    );
    for d in [sep, plain] {
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(
            json["code"],
            serde_json::to_value(d.deny_code().unwrap()).unwrap(),
            "{json}"
        );
        assert_eq!(json["decision"], "deny");
        let back: Decision = serde_json::from_value(json).unwrap();
        assert_eq!(back, d);
    }
}

fn spiffe_workload(id: &str, trust_domain: &str, path: &[&str]) -> Workload {
    Workload {
        id: id.into(),
        issuer: format!("spiffe://{trust_domain}"),
        subject: id.into(),
        preset: "spiffe".into(),
        run_binding: None,
        on_behalf_of: None,
        claims: WorkloadClaims {
            spiffe_id: Some(id.into()),
            trust_domain: Some(trust_domain.into()),
            spiffe_path: path.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
        token_expires_at_unix_secs: 2_000_000_000,
    }
}

#[test]
fn spiffe_path_segments_and_prefixes_reach_cedar() {
    // Membership of a segment, the first segment, a leading path, the trust domain: no string
    // matching on the ID's text.
    let e = engine(&[(
        "spiffe.cedar",
        r#"
@id("payments-anywhere")
permit (principal, action == Latch::Action::"read", resource)
when { principal has spiffe_path && principal.spiffe_path.contains("payments") };

@id("ns-payments-prefix")
permit (principal, action == Latch::Action::"write", resource)
when {
  principal has trust_domain && principal.trust_domain == "example.org" &&
  principal has spiffe_path_prefixes && principal.spiffe_path_prefixes.contains("/ns/payments")
};

@id("first-segment-ns")
permit (principal, action == Latch::Action::"deploy", resource)
when { principal has spiffe_path_prefixes && principal.spiffe_path_prefixes.contains("/ns") };
"#,
    )]);
    let r = resource("staging", false, "internal");
    let t = task("staging", false);
    let a = ApprovalContext::default();
    let api = spiffe_workload(
        "spiffe://example.org/ns/payments/sa/api",
        "example.org",
        &["ns", "payments", "sa", "api"],
    );
    let tail = spiffe_workload(
        "spiffe://example.org/sa/web/payments",
        "example.org",
        &["sa", "web", "payments"],
    );
    let partner = spiffe_workload(
        "spiffe://partner.example/ns/payments",
        "partner.example",
        &["ns", "payments"],
    );
    let allowed = |w: &Workload, action: &str| {
        matches!(eval(&e, w, &r, &t, action, &a), Decision::Allow { .. })
    };
    assert!(allowed(&api, "read"));
    assert!(allowed(&tail, "read"), "segment anywhere in the path");
    assert!(allowed(&api, "write"));
    assert!(!allowed(&tail, "write"), "payments is not under /ns");
    assert!(!allowed(&partner, "write"), "another trust domain");
    assert!(allowed(&api, "deploy"));
    assert!(!allowed(&tail, "deploy"), "first segment is sa, not ns");
    // A workload of another preset has none of the attributes.
    assert!(!allowed(&workload(false), "read"));
}

/// Gateway tool calls: the example policies (with those written before the gateway, which must
/// still validate) decide on the tool and its arguments, as entity tags.
#[test]
fn tool_calls_are_decided_on_their_arguments() {
    use latch_core::policy::ToolEvalInput;
    let p = |f: &str| std::fs::read_to_string(format!("../../examples/policies/{f}")).unwrap();
    let files = [
        "10-permits.cedar",
        "20-guards.cedar",
        "30-spiffe.cedar",
        "50-gateway.cedar",
    ];
    let texts: Vec<String> = files.iter().map(|f| p(f)).collect();
    let srcs: Vec<(&str, &str)> = files
        .iter()
        .zip(&texts)
        .map(|(f, t)| (*f, t.as_str()))
        .collect();
    let e = engine(&srcs);
    e.check_tool_shape("latch.cedarschema").unwrap();
    let w = workload(false);
    let t = task("sandbox", false);
    let none = ApprovalContext::default();
    let decide_tool = |tool: &str, args: serde_json::Value, approval: &ApprovalContext| {
        let args = args.as_object().cloned().unwrap();
        e.evaluate_tool(&ToolEvalInput {
            workload: &w,
            task: &t,
            upstream: "db",
            tool,
            name: &format!("db__{tool}"),
            arguments: &args,
            arguments_digest: "d",
            now_unix_secs: 1_000,
            source_ip: None,
            approval,
            egress: false,
            history: HistoryInput::empty(),
        })
    };
    assert!(matches!(
        decide_tool(
            "query",
            serde_json::json!({"query": "select * from sandbox.t", "limit": 1.5, "n": 9_007_199_254_740_993_u64, "opts": {"a": [1, null]}}),
            &none
        ),
        Decision::Allow { .. }
    ));
    match decide_tool(
        "query",
        serde_json::json!({"query": "select * from production.users"}),
        &none,
    ) {
        Decision::Deny { policy_ids, .. } => {
            assert_eq!(policy_ids, ["gateway-no-production-schema"]);
        }
        d => panic!("{d:?}"),
    }
    // Spellings that dodge a case-sensitive text match are caught through `folded`.
    for q in [
        "select * from PRODUCTION.users",
        "select * from \"production\".users",
        "select * from production .users",
        "select * from production/**/.users",
        "set search_path=production; select * from users",
        "select * from \u{ff50}roduction.users",
        "select * from [Production].[users]",
    ] {
        match decide_tool("query", serde_json::json!({ "query": q }), &none) {
            Decision::Deny { policy_ids, .. } => {
                assert_eq!(policy_ids, ["gateway-no-production-schema"], "{q}");
            }
            d => panic!("{q}: {d:?}"),
        }
    }
    match decide_tool("admin_reset", serde_json::json!({"target": "x"}), &none) {
        Decision::StepUp { groups, .. } => assert_eq!(groups[0].group, "prod-approvers"),
        d => panic!("{d:?}"),
    }
    let approved = ApprovalContext {
        approved: true,
        approvers: vec!["bob".into()],
        groups: vec!["prod-approvers".into()],
    };
    assert!(matches!(
        decide_tool("admin_reset", serde_json::json!({"target": "x"}), &approved),
        Decision::Allow { .. }
    ));
    // A production task gets no gateway permit from the examples: default deny.
    let tp = task("production", true);
    let args = serde_json::Map::new();
    let d = e.evaluate_tool(&ToolEvalInput {
        workload: &w,
        task: &tp,
        upstream: "db",
        tool: "query",
        name: "db__query",
        arguments: &args,
        arguments_digest: "d",
        now_unix_secs: 1_000,
        source_ip: None,
        approval: &none,
        egress: false,
        history: HistoryInput::empty(),
    });
    assert!(matches!(d, Decision::Deny { .. }), "{d:?}");
    // Integers that fit are `long`; floats are `number` with `text` only; too many paths deny.
    let tags = latch_core::policy::arguments_tags(
        serde_json::json!({"i": 3, "f": 0.5, "o": {"k": "v"}})
            .as_object()
            .unwrap(),
    )
    .unwrap();
    let names: Vec<&str> = tags.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(names.contains(&"o.k"));
    let many: serde_json::Map<String, serde_json::Value> = (0..300)
        .map(|i| (format!("k{i}"), serde_json::json!(i)))
        .collect();
    assert!(latch_core::policy::arguments_tags(&many).is_err());
}

/// History-aware policy: tags count grants per resource and action, `@budget` codes a denial
/// `budget_exceeded`, `@end_task` marks it as ending the task, and the budget record shows
/// configured limits.
#[test]
fn history_tags_budget_and_end_task_annotations() {
    use latch_core::history::{BudgetLimits, Budgets, TaskHistory, Usage};
    let e = engine(&[
        (
            "p.cedar",
            "@id(\"all\") permit (principal, action, resource);",
        ),
        (
            "h.cedar",
            r#"@id("third-write") @budget("writes") @reason("three writes per task")
forbid (principal, action == Latch::Action::"write", resource)
when { context.history.hasTag("staging-db:write") && context.history.getTag("staging-db:write") >= 3 };

@id("over-task-budget") @end_task("true")
forbid (principal, action, resource)
when { context.budget.task has max_grants && context.history.grants >= context.budget.task.max_grants };"#,
        ),
    ]);
    let w = workload(false);
    let r = resource("staging", false, "internal");
    let t = task("staging", false);
    let none = ApprovalContext::default();
    let run = |h: &TaskHistory, b: &Budgets, action: &str| {
        let actions = vec![action.to_owned()];
        decide(
            &e,
            &EvalInput {
                workload: &w,
                resource: &r,
                actions: &actions,
                task: &t,
                ttl_secs: 300,
                now_unix_secs: 1000,
                source_ip: None,
                approval: &none,
                principals: None,
                history: HistoryInput {
                    history: h,
                    budgets: b,
                    workload_usage: &Usage::default(),
                },
            },
        )
    };
    let mut h = TaskHistory::default();
    let b = Budgets::default();
    assert!(matches!(run(&h, &b, "write"), Decision::Allow { .. }));
    h.grant_counts.insert("staging-db:write".into(), 3);
    match run(&h, &b, "write") {
        Decision::Deny {
            code, policy_ids, ..
        } => {
            assert_eq!(code, DenyCode::BudgetExceeded);
            assert_eq!(policy_ids, vec!["third-write".to_owned()]);
            assert!(!e.ends_task(&policy_ids));
        }
        d => panic!("{d:?}"),
    }
    assert!(matches!(run(&h, &b, "read"), Decision::Allow { .. }));
    let capped = Budgets {
        task: BudgetLimits {
            max_grants: Some(2),
            ..BudgetLimits::default()
        },
        ..Budgets::default()
    };
    h.usage.grants = 2;
    match run(&h, &capped, "read") {
        Decision::Deny {
            policy_ids, code, ..
        } => {
            assert_eq!(code, DenyCode::PolicyDenied);
            assert!(e.ends_task(&policy_ids));
        }
        d => panic!("{d:?}"),
    }
    // A misplaced annotation is refused at load.
    let bad = try_engine(&[(
        "x.cedar",
        "@id(\"p\") @end_task(\"true\") permit (principal, action, resource);",
    )])
    .unwrap_err();
    assert!(bad.message.contains("`@end_task`"), "{bad}");
}
