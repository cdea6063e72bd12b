//! The identity claim sets of `testdata/identity-claims` (copied from the shared cases), signed with a test key and run
//! through the real verification path and the broker's task rules.

use latch_core::Clock;
use latch_testkit::{TEST_AUDIENCE, TestOptions, TestServer};
use serde_json::{Value, json};

fn case(name: &str) -> Value {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/identity-claims");
    let text =
        std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("case {name}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// Re-targets a case at the test issuers (same shape; times moved to now).
fn retarget(mut c: Value, iss: &str, now: i64) -> Value {
    c["iss"] = json!(iss);
    c["aud"] = if c["aud"].is_array() {
        json!([TEST_AUDIENCE])
    } else {
        json!(TEST_AUDIENCE)
    };
    c["iat"] = json!(now);
    c["nbf"] = json!(now);
    c["exp"] = json!(now + 600);
    c
}

const EXTRA: &str = r#"
[[issuers]]
name = "test-gitlab"
issuer = "https://gitlab.test.example"
kind = "workload"
preset = "gitlab_ci"
audience = "https://latch.test"
algorithms = ["EdDSA"]
jwks = { file = "test-jwks.json" }

[[issuers]]
name = "test-k8s"
issuer = "https://k8s.test.example"
kind = "workload"
preset = "kubernetes"
audience = "https://latch.test"
algorithms = ["EdDSA"]
jwks = { file = "test-jwks.json" }
"#;

async fn server() -> TestServer {
    TestServer::start_with(TestOptions {
        extra_config: EXTRA.into(),
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn github_environment_job_maps_and_opens_a_production_task() {
    let s = server().await;
    let now = s.clock.now_unix_secs();
    let tok = s.issuer.sign(&retarget(
        case("github-actions-environment.json"),
        latch_testkit::TEST_ISSUER,
        now,
    ));
    let r = s
        .post(
            Some(&tok),
            "/v1/tasks",
            json!({"purpose": "deploy", "environment": "production"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let o = &r.body["owner"];
    assert_eq!(
        o["subject"],
        "repo:acme-corp/payments-api:environment:production"
    );
    assert_eq!(o["run_binding"], "gh-run:9120034411/1");
    assert_eq!(o["on_behalf_of"], "dev-one");
    assert_eq!(o["claims"]["repository_id"], "734001");
    assert_eq!(o["claims"]["branch"], "main");
    assert_eq!(o["claims"]["environment"], "production");
    assert_eq!(o["claims"]["ref_protected"], true);
    assert_eq!(o["claims"]["untrusted_source"], false);
    assert_eq!(r.body["branch"], "main");
    // Its main-branch identity may read production from a production task.
    let task = r.body["id"].as_str().unwrap();
    let g = s.request(&tok, task, "payments-db", &["read"], None).await;
    assert_eq!(g.status, 201, "{}", g.body);
    s.stop().await;
}

#[tokio::test]
async fn fork_pull_request_is_never_the_trusted_main_branch_workflow() {
    let s = server().await;
    let now = s.clock.now_unix_secs();
    let tok = s.issuer.sign(&retarget(
        case("github-actions-pull-request-from-fork.json"),
        latch_testkit::TEST_ISSUER,
        now,
    ));
    // It cannot claim to work on main.
    let r = s
        .post(
            Some(&tok),
            "/v1/tasks",
            json!({"purpose": "x", "environment": "sandbox", "branch": "main"}),
        )
        .await;
    assert_eq!(r.code(), Some("task_identity_mismatch"), "{}", r.body);
    let r = s
        .post(
            Some(&tok),
            "/v1/tasks",
            json!({"purpose": "ci", "environment": "sandbox"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["owner"]["claims"]["untrusted_source"], true);
    assert!(r.body["owner"]["claims"].get("branch").is_none());
    assert_eq!(r.body["branch"], "refs/pull/1187/merge");
    let task = r.body["id"].as_str().unwrap();
    // Writes are forbidden; even reads of internal data are not permitted.
    let w = s.request(&tok, task, "staging-db", &["write"], None).await;
    assert_eq!(w.status, 403);
    assert!(
        w.body["request"]["decision"]["policy_ids"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "untrusted-never-writes")
    );
    let rd = s.request(&tok, task, "ci-cache", &["read"], None).await;
    assert_eq!(rd.status, 403, "{}", rd.body);
    // And a production task gets nothing from production.
    let p = s
        .post(
            Some(&tok),
            "/v1/tasks",
            json!({"purpose": "x", "environment": "production"}),
        )
        .await;
    let pt = p.body["id"].as_str().unwrap();
    let d = s.request(&tok, pt, "payments-db", &["read"], None).await;
    assert_eq!(d.status, 403);
    s.stop().await;
}

#[tokio::test]
async fn gitlab_branch_job_maps_composite_sub_and_short_ref() {
    let s = server().await;
    let now = s.clock.now_unix_secs();
    let tok = s.issuer.sign(&retarget(
        case("gitlab-ci-branch.json"),
        "https://gitlab.test.example",
        now,
    ));
    let r = s
        .post(
            Some(&tok),
            "/v1/tasks",
            json!({"purpose": "x", "environment": "staging"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let o = &r.body["owner"];
    assert_eq!(
        o["subject"],
        "project_path:acme-corp/inventory:ref_type:branch:ref:feature-branch-1"
    );
    assert_eq!(o["run_binding"], "gl-job:302");
    assert_eq!(o["claims"]["repository"], "acme-corp/inventory");
    assert_eq!(o["claims"]["git_ref"], "refs/heads/feature-branch-1");
    assert_eq!(o["claims"]["branch"], "feature-branch-1");
    assert_eq!(o["claims"]["ref_protected"], false);
    assert_eq!(r.body["repository"], "acme-corp/inventory");
    assert_eq!(r.body["branch"], "feature-branch-1");
    s.stop().await;
}

#[tokio::test]
async fn kubernetes_identity_is_the_service_account_uid_bound_to_the_pod() {
    let s = server().await;
    let now = s.clock.now_unix_secs();
    let c = retarget(
        case("kubernetes-projected-service-account.json"),
        "https://k8s.test.example",
        now,
    );
    let tok = s.issuer.sign(&c);
    let r = s
        .post(
            Some(&tok),
            "/v1/tasks",
            json!({"purpose": "x", "environment": "sandbox"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let o = &r.body["owner"];
    assert!(
        o["id"]
            .as_str()
            .unwrap()
            .ends_with("#sa:0a1b2c3d-4e5f-4a6b-9c8d-7e6f5a4b3c2d"),
        "{o}"
    );
    assert_eq!(o["run_binding"], "pod:f1e2d3c4-b5a6-4978-8877-665544332211");
    assert_eq!(o["claims"]["namespace"], "agents");
    let task = r.body["id"].as_str().unwrap().to_owned();
    // Another pod of the same service account cannot act in the task.
    let mut other = c.clone();
    other["kubernetes.io"]["pod"]["uid"] = json!("99999999-0000-4000-8000-000000000000");
    let tok2 = s.issuer.sign(&other);
    assert_eq!(
        s.get(Some(&tok2), &format!("/v1/tasks/{task}"))
            .await
            .code(),
        Some("task_not_found")
    );
    // A recreated service account with the same name is another identity.
    let mut renamed = c.clone();
    renamed["kubernetes.io"]["serviceaccount"]["uid"] =
        json!("11111111-2222-4333-8444-555555555555");
    let tok3 = s.issuer.sign(&renamed);
    assert_eq!(
        s.get(Some(&tok3), &format!("/v1/tasks/{task}"))
            .await
            .code(),
        Some("task_not_found")
    );
    assert_eq!(
        s.get(Some(&tok), &format!("/v1/tasks/{task}")).await.status,
        200
    );
    s.stop().await;
}

#[tokio::test]
async fn github_events_a_fork_can_trigger_are_untrusted() {
    let s = server().await;
    for (event, trusted) in [
        ("push", true),
        ("workflow_dispatch", true),
        ("issue_comment", false),
        ("workflow_run", false),
        ("merge_group", false),
        ("pull_request_target", false),
    ] {
        let mut c = latch_testkit::TestIssuer::github_claims(s.clock.now_unix_secs(), "31");
        c["event_name"] = json!(event);
        let tok = s.issuer.sign(&c);
        let r = s
            .post(
                Some(&tok),
                "/v1/tasks",
                json!({"purpose": "x", "environment": "production"}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(
            r.body["owner"]["claims"]["untrusted_source"], !trusted,
            "{event}"
        );
        let task = r.body["id"].as_str().unwrap();
        let g = s.request(&tok, task, "payments-db", &["read"], None).await;
        assert_eq!(g.status == 201, trusted, "{event}: {}", g.body);
    }
    s.stop().await;
}
