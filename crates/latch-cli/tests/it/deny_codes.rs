//! One decision vocabulary on every surface: the same denial answers the same Latch code over
//! REST (`code`), `/oauth/token` (`latch_code`, beside the RFC 6749 `error`) and MCP (the
//! `request_access` and `renew_lease` tool results), and a renewal that policy now refuses
//! answers it too.

use latch_testkit::{ManualClock, TestOptions, TestServer};
use serde_json::{Value, json};

use crate::mcp::{mcp_post, mcp_session};
use crate::oauth::token_request;

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// The code REST answers for `resource`/`actions` in a new task of `environment`.
async fn rest_code(s: &TestServer, agent: &str, env: &str, resource: &str, action: &str) -> Value {
    let t = s.open_task(agent, env, 1800).await;
    let r = s.request(agent, &t, resource, &[action], None).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.body["status"], "denied", "{}", r.body);
    // The decision carries the typed code it was decided with.
    assert!(
        r.body["request"]["decision"]["code"].is_string(),
        "{}",
        r.body
    );
    r.body["code"].clone()
}

/// The `latch_code` `/oauth/token` answers for the same ask (task opened by the exchange).
async fn oauth_code(s: &TestServer, agent: &str, env: &str, resource: &str, action: &str) -> Value {
    let details = json!([{"type": "latch_access", "resource": resource, "actions": [action],
        "environment": env, "purpose": "deny codes"}])
    .to_string();
    let (r, _) = token_request(
        s,
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", agent),
            ("subject_token_type", JWT),
            ("authorization_details", &details),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["error"], "access_denied", "{}", r.body);
    r.body["latch_code"].clone()
}

/// One MCP tool call over streamable HTTP; returns the tool result.
async fn mcp_tool(s: &TestServer, agent: &str, sid: &str, name: &str, args: Value) -> Value {
    let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": name, "arguments": args}});
    let (st, _, b, _) = mcp_post(s, agent, Some(sid), None, call).await;
    assert_eq!(st, 200, "{b}");
    b["result"]["structuredContent"].clone()
}

/// The code the MCP `request_access` tool answers for the same ask.
async fn mcp_code(s: &TestServer, agent: &str, env: &str, resource: &str, action: &str) -> Value {
    let sid = mcp_session(s, agent).await;
    let opened = mcp_tool(
        s,
        agent,
        &sid,
        "open_task",
        json!({"purpose": "deny codes", "environment": env}),
    )
    .await;
    let task = opened["id"].as_str().expect("task id").to_owned();
    let r = mcp_tool(
        s,
        agent,
        &sid,
        "request_access",
        json!({"task_id": task, "resource": resource, "actions": [action],
            "justification": "deny codes"}),
    )
    .await;
    assert_eq!(r["status"], "denied", "{r}");
    r["code"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_denial_answers_the_same_code_on_rest_oauth_and_mcp() {
    let s = TestServer::start().await;
    let agent = s.agent("960").await;
    // (a) a sandbox task asking for a production resource; (b) a plain policy deny.
    let cases = [
        ("sandbox", "payments-db", "read", "environment_separation"),
        ("production", "payments-db", "admin", "policy_denied"),
    ];
    for (env, resource, action, want) in cases {
        let rest = rest_code(&s, &agent, env, resource, action).await;
        let oauth = oauth_code(&s, &agent, env, resource, action).await;
        let mcp = mcp_code(&s, &agent, env, resource, action).await;
        assert_eq!(rest, want, "rest, {env} {resource} {action}");
        assert_eq!(oauth, want, "/oauth/token, {env} {resource} {action}");
        assert_eq!(mcp, want, "mcp, {env} {resource} {action}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_policy_now_denies_answers_policy_denied_over_rest_and_mcp() {
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let closes = start + 600;
    let window = format!(
        "@id(\"cache-window\")\n@reason(\"the ci-cache window has closed\")\n\
         forbid (principal, action, resource == Latch::Resource::\"ci-cache\")\n\
         when {{ context.now_unix_secs >= {closes} }};\n"
    );
    let s = TestServer::start_with(TestOptions {
        clock: Some(ManualClock::new(start)),
        extra_policies: vec![("30-cache-window.cedar".into(), window)],
        ..Default::default()
    })
    .await;
    let agent = s.agent("961").await;
    let task = s.open_task(&agent, "sandbox", 3600).await;
    let mut leases = Vec::new();
    for _ in 0..2 {
        let g = s
            .request(&agent, &task, "ci-cache", &["read"], Some(900))
            .await;
        assert_eq!(g.status, 201, "{}", g.body);
        leases.push(g.body["lease"]["id"].as_str().unwrap().to_owned());
    }
    // The same policy now denies: the window closed while the leases live.
    s.clock.advance(601);
    let agent = s.agent("961").await;
    let rest = s
        .post(
            Some(&agent),
            &format!("/v1/leases/{}/renew", leases[0]),
            json!({"ttl_secs": 300}),
        )
        .await;
    assert_eq!(rest.status, 403, "{}", rest.body);
    assert_eq!(rest.code(), Some("policy_denied"), "{}", rest.body);
    let sid = mcp_session(&s, &agent).await;
    let mcp = mcp_tool(
        &s,
        &agent,
        &sid,
        "renew_lease",
        json!({"lease_id": leases[1], "ttl_secs": 300}),
    )
    .await;
    assert_eq!(mcp["http_status"], 403, "{mcp}");
    assert_eq!(mcp["code"], "policy_denied", "{mcp}");
    // A refused renewal revokes the lease (recorded as such).
    let ev = s.audit("kind=credential.renewal_denied").await;
    assert_eq!(ev.len(), 2, "{ev:?}");
    s.stop().await;
}
