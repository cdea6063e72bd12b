//! The HTTP surface: OpenAPI, health, metrics, request ids, JSON errors with stable codes.

use latch_testkit::TestServer;
use serde_json::json;

#[tokio::test]
async fn openapi_health_metrics_and_jwks() {
    let s = TestServer::start().await;
    let doc = s.get(None, "/v1/openapi.json").await;
    assert_eq!(doc.status, 200);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3."));
    for p in [
        "/v1/tasks",
        "/v1/tasks/{id}/requests",
        "/v1/tasks/{id}/requests/{rid}/claim",
        "/v1/approvals/{rid}/approve",
        "/v1/leases/{id}/renew",
        "/v1/oauth/introspect",
        "/v1/oauth/revoke",
        "/v1/audit",
        "/oauth/token",
        "/.well-known/oauth-authorization-server",
        "/.well-known/oauth-protected-resource/mcp",
    ] {
        assert!(doc.body["paths"].get(p).is_some(), "openapi lacks {p}");
    }
    assert!(
        doc.body["components"]["schemas"]
            .get("AccessResponse")
            .is_some()
    );
    assert_eq!(s.get(None, "/healthz").await.status, 200);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for p in [
            s.dir.join("data"),
            s.dir.join("data/latch.db"),
            s.dir.join("data/master.key"),
        ] {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(
                mode & 0o077,
                0,
                "{} is readable by others ({mode:o})",
                p.display()
            );
        }
    }
    assert_eq!(s.get(None, "/readyz").await.body["status"], "ready");
    let jwks = s.get(None, "/.well-known/jwks.json").await.body;
    let k = &jwks["keys"][0];
    assert_eq!(k["kty"], "OKP");
    assert!(k.get("d").is_none(), "no private key material");
    // Some traffic, then metrics.
    let agent = s.agent("1").await;
    let t = s.open_task(&agent, "sandbox", 600).await;
    s.request(&agent, &t, "ci-cache", &["read"], None).await;
    let m = s.metrics_text().await;
    assert!(m.contains("latch_access_decisions_total"), "{m}");
    assert!(m.contains("latch_http_requests_total"));
    s.stop().await;
}

#[tokio::test]
async fn errors_are_json_with_stable_codes_and_the_request_id() {
    let s = TestServer::start().await;
    let agent = s.agent("2").await;
    // Request id: always the broker's own (the audit trail records it); a well-formed caller id
    // comes back as `x-client-request-id`.
    let r = s
        .http
        .get(format!("{}/v1/tasks/task_nope", s.base))
        .bearer_auth(&agent)
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-client-request-id"], "abc-123");
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(rid.starts_with("rq_"), "{rid}");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": {"code": "task_not_found", "message": "no task `task_nope`", "request_id": rid}})
    );
    let r = s
        .http
        .get(format!("{}/v1/tasks", s.base))
        .bearer_auth(&agent)
        .header("x-request-id", "bad id!")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("x-client-request-id").is_none());
    assert!(
        r.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .starts_with("rq_")
    );
    // Invalid JSON and unknown fields.
    let r = s
        .http
        .post(format!("{}/v1/tasks", s.base))
        .bearer_auth(&agent)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let b: serde_json::Value = r.json().await.unwrap();
    assert_eq!(b["error"]["code"], "invalid_request");
    assert!(b["error"]["request_id"].is_string());
    let r = s
        .post(
            Some(&agent),
            "/v1/tasks",
            json!({"purpose": "x", "environment": "sandbox", "admin": true}),
        )
        .await;
    assert_eq!(r.code(), Some("invalid_request"));
    // Oversized bodies are refused.
    let r = s
        .http
        .post(format!("{}/v1/tasks", s.base))
        .bearer_auth(&agent)
        .header("content-type", "application/json")
        .body(format!("{{\"purpose\": \"{}\"}}", "x".repeat(200_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let b: serde_json::Value = r.json().await.unwrap();
    assert_eq!(b["error"]["code"], "body_too_large");
    // Unknown endpoint.
    let r = s.get(None, "/v1/nope").await;
    assert_eq!((r.status, r.code()), (404, Some("not_found")));
    // 401 carries WWW-Authenticate.
    let r = s
        .http
        .get(format!("{}/v1/tasks", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    // Audit needs an admin group.
    let h = s.human("bob", &["prod-approvers"]).await;
    assert_eq!(s.get(Some(&h), "/v1/audit").await.status, 403);
    s.stop().await;
}

#[test]
fn debug_output_never_shows_a_credential() {
    use latch_server::http::routes::{access::CredentialBody, introspection::TokenForm};
    let secret = "eyJhbGciOiJFZERTQSJ9.secret-payload.secret-signature";
    let c = CredentialBody {
        kind: "bearer_token".into(),
        value: secret.into(),
        metadata: json!({}),
    };
    let f: TokenForm = serde_json::from_value(json!({"token": secret})).unwrap();
    for shown in [format!("{c:?}"), format!("{f:?}")] {
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }
}
