//! The HTTP API against its own OpenAPI document, checked by independent tools: the document
//! validates (`openapi-spec-validator`), and schemathesis (`--checks all`: status codes,
//! content types, response schemas and headers, schema-valid requests accepted and
//! schema-invalid ones refused, authentication enforced, `405` with `Allow`, stateful links)
//! finds nothing against a live broker. Plus the HTTP layer's own answers: unknown paths and
//! methods, body rejections, the RFC 6750 challenge and strict JSON bodies, all in the JSON
//! error shape. Without the Python tools the first test skips loudly, and fails under
//! `CI=true` (`scripts/test.sh` installs them).

use std::time::Duration;

use latch_testkit::{TestOptions, TestServer, tool_available};
use serde_json::{Value, json};

/// `[auth_failures]` for fuzzing: schemathesis sends many requests without or with broken
/// credentials on purpose; the per-source limit would otherwise answer everything `429`.
const FUZZ_CONFIG: &str = "\n[auth_failures]\nmax_failures = 1000000\n";

/// Examples per operation and phase: well under a minute for the whole run on two cores
/// (`LATCH_SCHEMATHESIS_EXAMPLES` asks for more).
const MAX_EXAMPLES: &str = "25";
/// Longest the schemathesis run may take before the test fails (ten times that with more
/// examples).
const RUN_LIMIT: Duration = Duration::from_secs(240);

fn tools_available() -> bool {
    tool_available("python3", &["-c", "import openapi_spec_validator"])
        && tool_available("python3", &["-m", "schemathesis.cli", "--version"])
}

#[tokio::test]
async fn openapi_document_is_valid_and_schemathesis_finds_no_failure() {
    if !tools_available() {
        return;
    }
    let s = TestServer::start_with(TestOptions {
        extra_config: FUZZ_CONFIG.into(),
        ..Default::default()
    })
    .await;
    let doc = s.get(None, "/v1/openapi.json").await;
    assert_eq!(doc.status, 200);
    let file = s.dir.join("openapi.json");
    std::fs::write(&file, doc.body.to_string()).unwrap();
    let out = tokio::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator", "--validation-errors", "all"])
        .arg(&file)
        .output()
        .await
        .expect("python3");
    assert!(
        out.status.success(),
        "openapi-spec-validator refused the document:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let agent = s.agent("fuzz").await;
    let admin = s.human("auditor", &["latch-admins"]).await;
    let config = fuzz_config(&s, &agent, &admin).await;
    let config_file = s.dir.join("schemathesis.toml");
    std::fs::write(&config_file, config).unwrap();
    let seed = std::env::var("LATCH_SCHEMATHESIS_SEED").unwrap_or_else(|_| "14".into());
    let examples =
        std::env::var("LATCH_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| MAX_EXAMPLES.into());
    let run = tokio::process::Command::new("python3")
        .args(["-m", "schemathesis.cli", "--no-color", "--config-file"])
        .arg(&config_file)
        .arg("run")
        .arg(format!("{}/v1/openapi.json", s.base))
        .args([
            "--checks",
            "all",
            "--max-examples",
            &examples,
            "--seed",
            &seed,
        ])
        .args(["--max-failures", "50", "--request-timeout", "20"])
        .args(["--generation-database", "none"])
        .args(["-H", &format!("Authorization: Bearer {agent}")])
        // Development-only token minting: it signs whatever it is asked to (it is the test
        // issuer), and its rule "`subject` with a human token" is not a schema rule. Its
        // answers are checked by the tests that use it.
        .args(["--exclude-path", "/v1/dev/tokens"])
        .current_dir(&s.dir)
        .kill_on_drop(true)
        .output();
    let limit = if examples == MAX_EXAMPLES {
        RUN_LIMIT
    } else {
        RUN_LIMIT * 10
    };
    let out = tokio::time::timeout(limit, run)
        .await
        .unwrap_or_else(|_| panic!("schemathesis did not finish within {limit:?}"))
        .expect("schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures (seed {seed}; set LATCH_SCHEMATHESIS_SEED to replay):\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" passed"), "{stdout}");
    s.stop().await;
}

/// The schemathesis configuration: the admin token for the admin operations, the example's
/// introspection client for the OAuth client endpoints, and known ids and names (tasks, a
/// pending request and its digest, resources, actions, environments) drawn most of the time
/// so the fuzzer gets past "not found" to the rules behind it.
async fn fuzz_config(s: &TestServer, agent: &str, admin: &str) -> String {
    use base64::Engine;
    let sandbox = s.open_task(agent, "sandbox", 3600).await;
    let sandbox2 = s.open_task(agent, "sandbox", 3600).await;
    let prod = s.open_task(agent, "production", 3600).await;
    let pending = s
        .request(agent, &prod, "deploy-pipeline", &["deploy"], None)
        .await;
    assert_eq!(pending.status, 202, "{}", pending.body);
    let rid = pending.body["request"]["id"].as_str().unwrap();
    let digest = pending.body["request"]["digest"].as_str().unwrap();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        latch_server::examples::DEMO_CLIENT_ID,
        latch_server::examples::DEMO_CLIENT_SECRET
    ));
    format!(
        r#"
# Schema-valid requests get 2xx, or a refusal that depends on state or configuration rather
# than on the request's shape: 401/403 (who), 404 (no such id), 409/410 (state), 422 (a
# resource, action or TTL this broker does not offer), 423 (an operator's freeze: the fuzzer
# engages kill switches too), 429. A 400 means the document failed to state a rule.
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "410", "422", "423", "429"]

[dictionaries.tasks]
values = ["{sandbox}", "{sandbox2}", "{prod}"]
[dictionaries.requests]
values = ["{rid}"]
[dictionaries.digests]
values = ["{digest}"]
[dictionaries.resources]
values = ["ci-cache", "staging-db", "payments-db", "deploy-pipeline", "vault-prod"]
[dictionaries.actions]
values = ["read", "write", "admin", "deploy"]
[dictionaries.environments]
values = ["sandbox", "staging", "production"]

[parameters]
"body.resource" = {{ dictionary = "resources", probability = 0.7 }}
"body.actions[*]" = {{ dictionary = "actions", probability = 0.7 }}
"body.environment" = {{ dictionary = "environments", probability = 0.7 }}
"body.digest" = {{ dictionary = "digests", probability = 0.5 }}
"path.rid" = {{ dictionary = "requests", probability = 0.7 }}

[[operations]]
include-path-regex = "^/v1/tasks/"
parameters = {{ "path.id" = {{ dictionary = "tasks", probability = 0.7 }} }}

[[operations]]
include-path-regex = "^/v1/proxy/"
parameters = {{ "path.resource" = {{ dictionary = "resources", probability = 0.7 }} }}

# Approvals, the audit trail and the operators' routes are for humans (the admin groups for the
# audit trail, the operators' routes and the Shared Signals stream endpoints).
[[operations]]
include-path-regex = "^/v1/(approvals|audit|admin|ssf)"
headers = {{ Authorization = "Bearer {admin}" }}

# Introspection and revocation authenticate OAuth clients (HTTP Basic, RFC 6749 §2.3.1).
[[operations]]
include-path-regex = "^/v1/oauth/"
headers = {{ Authorization = "Basic {basic}" }}

# RFC 6749 §5.2: the token endpoint answers 400 (`invalid_grant`) to a well-formed request whose
# subject token does not verify, which is every token the fuzzer can make up.
[[operations]]
include-path = "/oauth/token"
checks = {{ positive_data_acceptance = {{ expected-statuses = ["2xx", "400", "401", "403", "404", "409", "410", "422", "423", "429"] }} }}

# RFC 7591 §3.2.2: a redirect URI the server will not use (not https nor loopback http, which a
# JSON schema cannot say) is a 400 `invalid_redirect_uri`.
[[operations]]
include-path = "/oauth/register"
checks = {{ positive_data_acceptance = {{ expected-statuses = ["2xx", "400", "429"] }} }}
"#
    )
}

async fn raw(
    s: &TestServer,
    method: reqwest::Method,
    path: &str,
    build: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    let r = build(s.http.request(method, format!("{}{path}", s.base)))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, body)
}

/// The JSON error shape: `{"error": {"code", "message", "request_id"}}`, as
/// `application/json`.
fn assert_error_shape(
    what: &str,
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &Value,
    want_status: u16,
    code: &str,
) {
    assert_eq!(status.as_u16(), want_status, "{what}: {body}");
    assert_eq!(
        headers[reqwest::header::CONTENT_TYPE],
        "application/json",
        "{what}"
    );
    assert_eq!(body["error"]["code"], code, "{what}: {body}");
    assert!(body["error"]["message"].is_string(), "{what}: {body}");
    assert!(
        body["error"]["request_id"]
            .as_str()
            .is_some_and(|r| r.starts_with("rq_")),
        "{what}: {body}"
    );
}

/// The RFC 6749 §5.2 error shape of the OAuth client endpoints:
/// `{"error", "error_description", "latch_code", "request_id"}`, as `application/json`.
fn assert_oauth_error(
    what: &str,
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &Value,
    want_status: u16,
    error: &str,
    latch_code: &str,
) {
    assert_eq!(status.as_u16(), want_status, "{what}: {body}");
    assert_eq!(
        headers[reqwest::header::CONTENT_TYPE],
        "application/json",
        "{what}"
    );
    assert_eq!(body["error"], error, "{what}: {body}");
    assert_eq!(body["latch_code"], latch_code, "{what}: {body}");
    assert!(body["error_description"].is_string(), "{what}: {body}");
    assert!(
        body["request_id"]
            .as_str()
            .is_some_and(|r| r.starts_with("rq_")),
        "{what}: {body}"
    );
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_in_the_json_error_shape() {
    use reqwest::Method;
    let s = TestServer::start().await;
    for path in [
        "/v1/nope",
        "/nope",
        "/v1/tasks/t/nope/deeper",
        "/.well-known/nope",
    ] {
        let (st, h, b) = raw(&s, Method::GET, path, |r| r).await;
        assert_error_shape(path, st, &h, &b, 404, "not_found");
    }
    for (method, path, allow) in [
        (Method::DELETE, "/v1/tasks", "GET,HEAD,POST"),
        (Method::PUT, "/healthz", "GET,HEAD"),
        (Method::GET, "/v1/oauth/introspect", "POST"),
        (Method::PATCH, "/v1/tasks/t1", "GET,HEAD"),
        (
            Method::POST,
            "/.well-known/oauth-protected-resource/mcp",
            "GET,HEAD",
        ),
    ] {
        let what = format!("{method} {path}");
        let (st, h, b) = raw(&s, method, path, |r| r).await;
        assert_error_shape(&what, st, &h, &b, 405, "method_not_allowed");
        let mut got: Vec<&str> = h[reqwest::header::ALLOW]
            .to_str()
            .unwrap()
            .split(',')
            .map(str::trim)
            .collect();
        got.sort_unstable();
        assert_eq!(got.join(","), allow, "{what}");
    }
    s.stop().await;
}

#[tokio::test]
async fn body_rejections_answer_in_the_json_error_shape() {
    use reqwest::Method;
    let s = TestServer::start().await;
    let agent = s.agent("bodies").await;
    let task = s.open_task(&agent, "sandbox", 600).await;
    // 415: a JSON endpoint given another media type, or none.
    let (st, h, b) = raw(&s, Method::POST, "/v1/tasks", |r| {
        r.bearer_auth(&agent)
            .header("content-type", "text/plain")
            .body(r#"{"purpose": "x", "environment": "sandbox"}"#)
    })
    .await;
    assert_error_shape("text/plain", st, &h, &b, 415, "unsupported_media_type");
    let (st, h, b) = raw(&s, Method::POST, "/v1/tasks", |r| r.bearer_auth(&agent)).await;
    assert_error_shape("no body", st, &h, &b, 415, "unsupported_media_type");
    // `application/*+json` is JSON.
    let (st, _, b) = raw(&s, Method::POST, "/v1/tasks", |r| {
        r.bearer_auth(&agent)
            .header("content-type", "application/vnd.latch+json; charset=utf-8")
            .body(r#"{"purpose": "x", "environment": "sandbox"}"#)
    })
    .await;
    assert_eq!(st, 201, "{b}");
    // 400: not JSON; JSON of the wrong shape.
    for body in [
        "{not json",
        "[]",
        r#"{"purpose": 5, "environment": "sandbox"}"#,
    ] {
        let (st, h, b) = raw(&s, Method::POST, "/v1/tasks", |r| {
            r.bearer_auth(&agent)
                .header("content-type", "application/json")
                .body(body)
        })
        .await;
        assert_error_shape(body, st, &h, &b, 400, "invalid_request");
    }
    // 413.
    let (st, h, b) = raw(&s, Method::POST, "/v1/tasks", |r| {
        r.bearer_auth(&agent)
            .header("content-type", "application/json")
            .body(format!(r#"{{"purpose": "{}"}}"#, "x".repeat(200_000)))
    })
    .await;
    assert_error_shape("huge body", st, &h, &b, 413, "body_too_large");
    // A content coding the broker does not decode, or a charset other than UTF-8: 415, never
    // read as if plain (a gzip-labelled plain body opened a task before).
    for (content_type, coding) in [
        ("application/json", Some("gzip")),
        ("application/json; charset=utf-16", None),
    ] {
        let (st, h, b) = raw(&s, Method::POST, "/v1/tasks", |r| {
            let r = r
                .bearer_auth(&agent)
                .header("content-type", content_type)
                .body(r#"{"purpose": "x", "environment": "sandbox"}"#);
            match coding {
                Some(c) => r.header("content-encoding", c),
                None => r,
            }
        })
        .await;
        assert_error_shape(content_type, st, &h, &b, 415, "unsupported_media_type");
    }
    // The OAuth endpoints answer a too-large body in their RFC 6749 §5.2 shape too (the layer
    // that refuses it answered in Latch's shape before).
    for path in ["/oauth/token", "/v1/oauth/introspect"] {
        let (st, h, b) = raw(&s, Method::POST, path, |r| {
            r.header("content-type", "application/x-www-form-urlencoded")
                .body(format!("grant_type=x&a={}", "a".repeat(200_000)))
        })
        .await;
        assert_oauth_error(path, st, &h, &b, 413, "invalid_request", "body_too_large");
    }
    // 422: well-formed, but not what this broker offers (a TTL below the schema's minimum is 400).
    let r = s
        .request(&agent, &task, "no-such-db", &["read"], None)
        .await;
    assert_eq!((r.status, r.code()), (422, Some("unknown_resource")));
    let r = s.request(&agent, &task, "ci-cache", &["fly"], None).await;
    assert_eq!((r.status, r.code()), (422, Some("unknown_action")));
    let r = s
        .request(&agent, &task, "ci-cache", &["read"], Some(0))
        .await;
    assert_eq!((r.status, r.code()), (400, Some("invalid_request")));
    // The OAuth client endpoints answer errors as RFC 7662 §2.3 / RFC 7009 §2.2.1 say, in the
    // RFC 6749 §5.2 shape (with `latch_code`): 415 and 400 (formerly axum's `text/plain` 415
    // and 422), and a failed client authentication `401 invalid_client` (formerly Latch's
    // own shape, which OAuth clients cannot read).
    for path in ["/v1/oauth/introspect", "/v1/oauth/revoke"] {
        let basic = |r: reqwest::RequestBuilder| {
            r.basic_auth(
                latch_server::examples::DEMO_CLIENT_ID,
                Some(latch_server::examples::DEMO_CLIENT_SECRET),
            )
        };
        let (st, h, b) = raw(&s, Method::POST, path, |r| {
            basic(r).json(&json!({"token": "x"}))
        })
        .await;
        assert_oauth_error(
            path,
            st,
            &h,
            &b,
            415,
            "invalid_request",
            "unsupported_media_type",
        );
        let (st, h, b) = raw(&s, Method::POST, path, |r| basic(r).form(&[("nope", "x")])).await;
        assert_oauth_error(path, st, &h, &b, 400, "invalid_request", "invalid_request");
        let (st, h, b) = raw(&s, Method::POST, path, |r| {
            basic(r)
                .header("content-type", "application/x-www-form-urlencoded")
                .body("token=a&token=b")
        })
        .await;
        assert_oauth_error(path, st, &h, &b, 400, "invalid_request", "invalid_request");
        let (st, h, b) = raw(&s, Method::POST, path, |r| {
            r.basic_auth(latch_server::examples::DEMO_CLIENT_ID, Some("wrong"))
                .form(&[("token", "x")])
        })
        .await;
        assert_oauth_error(
            path,
            st,
            &h,
            &b,
            401,
            "invalid_client",
            "client_auth_failed",
        );
        assert_eq!(
            h[reqwest::header::WWW_AUTHENTICATE],
            "Basic realm=\"latch\""
        );
    }
    // The token endpoint answers in its own (RFC 6749 §5.2) shape.
    let (st, _, b) = raw(&s, Method::POST, "/oauth/token", |r| {
        r.json(&json!({"grant_type": "x"}))
    })
    .await;
    assert_eq!(st, 400, "{b}");
    assert_eq!(b["error"], "invalid_request", "{b}");
    assert_eq!(b["latch_code"], "unsupported_media_type", "{b}");
    let (st, _, b) = raw(&s, Method::POST, "/oauth/token", |r| {
        r.header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=a&grant_type=b")
    })
    .await;
    assert_eq!(st, 400, "{b}");
    assert_eq!(b["error"], "invalid_request", "{b}");
    assert!(
        b["error_description"]
            .as_str()
            .unwrap()
            .contains("`grant_type` is given more than once"),
        "{b}"
    );
    s.stop().await;
}

#[tokio::test]
async fn the_bearer_challenge_has_no_error_code_without_credentials() {
    use reqwest::Method;
    let s = TestServer::start().await;
    let challenge = |h: &reqwest::header::HeaderMap| {
        h[reqwest::header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .to_owned()
    };
    // RFC 6750 §3.1: no credentials, no error code.
    let (st, h, b) = raw(&s, Method::GET, "/v1/tasks", |r| r).await;
    assert_error_shape("no token", st, &h, &b, 401, "token_missing");
    assert_eq!(challenge(&h), r#"Bearer realm="latch""#);
    // A token that does not verify: `invalid_token`.
    let (st, h, b) = raw(&s, Method::GET, "/v1/tasks", |r| r.bearer_auth("nope")).await;
    assert_error_shape("bad token", st, &h, &b, 401, "token_malformed");
    assert_eq!(
        challenge(&h),
        r#"Bearer realm="latch", error="invalid_token""#
    );
    // The same at `/mcp` (with the RFC 9728 metadata).
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"}}});
    let (st, h, _) = raw(&s, Method::POST, "/mcp", |r| {
        r.header("accept", "application/json, text/event-stream")
            .json(&init)
    })
    .await;
    assert_eq!(st, 401);
    let c = challenge(&h);
    assert!(c.contains("resource_metadata="), "{c}");
    assert!(!c.contains("error="), "{c}");
    let (st, h, _) = raw(&s, Method::POST, "/mcp", |r| {
        r.bearer_auth("nope")
            .header("accept", "application/json, text/event-stream")
            .json(&init)
    })
    .await;
    assert_eq!(st, 401);
    assert!(challenge(&h).contains(r#"error="invalid_token""#));
    s.stop().await;
}

#[tokio::test]
async fn json_bodies_with_a_repeated_member_name_are_refused() {
    use reqwest::Method;
    let s = TestServer::start().await;
    let agent = s.agent("dups").await;
    let task = s.open_task(&agent, "sandbox", 600).await;
    let post = |path: String, token: String, body: String| {
        let s = &s;
        async move {
            raw(s, Method::POST, &path, |r| {
                r.bearer_auth(token)
                    .header("content-type", "application/json")
                    .body(body)
            })
            .await
        }
    };
    for (path, body, name) in [
        (
            "/v1/tasks".to_owned(),
            r#"{"purpose": "a", "purpose": "b", "environment": "sandbox"}"#,
            "purpose",
        ),
        (
            format!("/v1/tasks/{task}/requests"),
            r#"{"resource": "ci-cache", "actions": ["read"], "params": {"k": {"kid": 1, "kid": 2}}}"#,
            "kid",
        ),
        (
            format!("/v1/tasks/{task}/events"),
            r#"{"tool": "psql", "attributes": {"rows": [{"n": 1, "n": 2}]}}"#,
            "n",
        ),
    ] {
        let (st, h, b) = post(path.clone(), agent.clone(), body.to_owned()).await;
        assert_error_shape(&path, st, &h, &b, 400, "invalid_request");
        let msg = b["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(&format!("member name `{name}` appears twice")),
            "{path}: {msg}"
        );
    }
    // An approval's body is bound to the request's digest: a repeated `digest` is refused.
    let bob = s.human("bob", &["prod-approvers"]).await;
    let prod = s.open_task(&agent, "production", 600).await;
    let pending = s
        .request(&agent, &prod, "deploy-pipeline", &["deploy"], None)
        .await;
    assert_eq!(pending.status, 202, "{}", pending.body);
    let rid = pending.body["request"]["id"].as_str().unwrap();
    let digest = pending.body["request"]["digest"].as_str().unwrap();
    let body = format!(r#"{{"digest": "0000", "digest": "{digest}", "reason": "ok"}}"#);
    let (st, h, b) = post(format!("/v1/approvals/{rid}/approve"), bob, body).await;
    assert_error_shape("approve", st, &h, &b, 400, "invalid_request");
    // MCP messages too.
    let (st, h, b) = raw(&s, Method::POST, "/mcp", |r| {
        r.bearer_auth(&agent)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(r#"{"jsonrpc": "2.0", "id": 1, "id": 2, "method": "ping"}"#)
    })
    .await;
    assert_error_shape("mcp", st, &h, &b, 400, "invalid_request");
    // JSON Schema's `integer` admits `600.0`, and so does Latch.
    let (st, _, b) = post(
        "/v1/tasks".into(),
        agent.clone(),
        r#"{"purpose": "x", "environment": "sandbox", "ttl_secs": 600.0}"#.into(),
    )
    .await;
    assert_eq!(st, 201, "{b}");
    let (st, h, b) = post(
        "/v1/tasks".into(),
        agent.clone(),
        r#"{"purpose": "x", "environment": "sandbox", "ttl_secs": 600.5}"#.into(),
    )
    .await;
    assert_error_shape("fraction", st, &h, &b, 400, "invalid_request");
    s.stop().await;
}
