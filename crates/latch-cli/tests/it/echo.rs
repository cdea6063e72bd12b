//! A credential a caller puts where it does not belong is never repeated: not as a request id
//! (logged and echoed), not as a JSON member name in an error body, not in free text kept in
//! the audit trail (found by a tester after the log-secrets work).

use latch_testkit::TestServer;
use serde_json::json;

#[tokio::test]
async fn credentials_in_the_wrong_place_are_not_echoed_or_kept() {
    let s = TestServer::start().await;
    let agent = s.agent("echo").await;
    let task = s.open_task(&agent, "sandbox", 3600).await;
    let g = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{task}/requests"),
            json!({"resource": "ci-cache", "actions": ["read"], "justification": "echo"}),
        )
        .await;
    assert_eq!(g.status, 201, "{}", g.body);
    let token = g.body["credential"]["value"].as_str().unwrap().to_owned();
    let secret = latch_core::credential_format::generate(
        latch_core::credential_format::CredentialKind::Postgres,
    )
    .unwrap()
    .to_string();

    for value in [token.as_str(), secret.as_str()] {
        // As the client's request id: neither echoed nor logged.
        let r = s
            .http
            .get(format!("{}/healthz", s.base))
            .header("x-request-id", value)
            .send()
            .await
            .unwrap();
        let echoed: Vec<String> = r
            .headers()
            .iter()
            .map(|(_, v)| v.to_str().unwrap_or("").to_owned())
            .collect();
        assert!(!echoed.iter().any(|v| v.contains(value)), "{echoed:?}");

        // As a JSON member name: the error body does not repeat it.
        let mut body = json!({"resource": "ci-cache", "actions": ["read"], "justification": "x"});
        body[value] = json!(1);
        let r = s
            .post(Some(&agent), &format!("/v1/tasks/{task}/requests"), body)
            .await;
        assert!(r.status >= 400, "{}", r.body);
        assert!(!r.body.to_string().contains(value), "{}", r.body);

        // As free text: refused, never stored.
        let r = s
            .post(
                Some(&agent),
                "/v1/tasks",
                json!({"purpose": format!("deploy with {value}"), "environment": "sandbox"}),
            )
            .await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(!r.body.to_string().contains(value), "{}", r.body);
        let r = s
            .post(
                Some(&agent),
                "/v1/tasks",
                json!({"purpose": "p", "environment": value}),
            )
            .await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(!r.body.to_string().contains(value), "{}", r.body);
    }
    let trail = serde_json::to_string(&s.audit("").await).unwrap();
    assert!(!trail.contains(&token) && !trail.contains(&secret));
    s.stop().await;
}
