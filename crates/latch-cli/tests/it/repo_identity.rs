//! Repository identity follows the platform (issue 14): GitHub compares owner and repository
//! names case-insensitively, so a token spelling its repository in another case opens tasks in
//! the lowercase name and meets policies written in lowercase; and policies can bind to the
//! immutable ids, so a renamed or re-registered name gets nothing.

use latch_core::Clock;
use latch_testkit::{TestIssuer, TestOptions, TestServer};
use serde_json::json;

/// Lowercase names, as the README advises; and the README's id binding for `staging-db`.
const POLICY: &str = r#"
permit (principal, action, resource == Latch::Resource::"ci-cache")
when { principal has repository && principal.repository == "acme/payments-api" };

forbid (principal, action, resource == Latch::Resource::"staging-db")
unless {
  principal has repository_id && principal.repository_id == "734001" &&
  principal has repository_owner_id && principal.repository_owner_id == "1048576"
};
permit (principal, action, resource == Latch::Resource::"staging-db");
"#;

#[tokio::test]
async fn repository_names_compare_as_github_does_and_policies_can_bind_to_ids() {
    let s = TestServer::start_with(TestOptions {
        extra_policies: vec![("30-repo-identity.cedar".into(), POLICY.into())],
        ..Default::default()
    })
    .await;
    let now = s.clock.now_unix_secs();
    let mut c = TestIssuer::github_claims(now, "7001");
    c["repository"] = json!("Acme/Payments-API");
    c["repository_owner"] = json!("ACME");
    c["repository_owner_id"] = json!("1048576");
    let tok = s.issuer.sign(&c);

    // The task may name the repository in any case; it is stored as GitHub compares it.
    for asked in ["acme/payments-api", "ACME/payments-API"] {
        let r = s
            .post(
                Some(&tok),
                "/v1/tasks",
                json!({"purpose": "p", "environment": "sandbox", "repository": asked}),
            )
            .await;
        assert_eq!(r.status, 201, "{asked}: {}", r.body);
        assert_eq!(r.body["repository"], "acme/payments-api", "{}", r.body);
    }
    let r = s
        .post(
            Some(&tok),
            "/v1/tasks",
            json!({"purpose": "p", "environment": "sandbox", "repository": "acme/other"}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);

    // A policy written in lowercase matches the token's other spelling.
    let task = s.open_task(&tok, "sandbox", 3600).await;
    let g = s
        .post(
            Some(&tok),
            &format!("/v1/tasks/{task}/requests"),
            json!({"resource": "ci-cache", "actions": ["read"], "justification": "cache"}),
        )
        .await;
    assert_eq!(g.status, 201, "{}", g.body);

    // Bound to ids: the same name under a re-registered owner (new owner id) gets nothing.
    let staging = |tok: String| {
        let s = &s;
        async move {
            let t = s.open_task(&tok, "staging", 3600).await;
            s.post(
                Some(&tok),
                &format!("/v1/tasks/{t}/requests"),
                json!({"resource": "staging-db", "actions": ["read"], "justification": "x"}),
            )
            .await
        }
    };
    let ok = staging(tok.clone()).await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    let mut impostor = TestIssuer::github_claims(now, "7002");
    impostor["repository_owner_id"] = json!("9999999");
    let denied = staging(s.issuer.sign(&impostor)).await;
    assert_eq!(denied.status, 403, "{}", denied.body);
    let mut renamed = TestIssuer::github_claims(now, "7003");
    renamed["repository_id"] = json!("555");
    let denied = staging(s.issuer.sign(&renamed)).await;
    assert_eq!(denied.status, 403, "{}", denied.body);
    s.stop().await;
}
