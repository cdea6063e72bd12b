//! The MCP server driven by an independent client, the official MCP Python SDK (`pip install
//! mcp`), through a full task: over stdio (`latch mcp`) and over streamable HTTP (`/mcp`, with
//! the MCP authorization challenge and RFC 9728 metadata). Without the SDK the test skips
//! loudly, and fails under `CI=true`.

use latch_testkit::{TestServer, tool_available};
use serde_json::{Value, json};

/// The client: a full task through the tools, printing one JSON summary line.
const CLIENT: &str = r#"
import asyncio, json, sys, urllib.request
from mcp import ClientSession, MCPError, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

mode, latch_bin, base, agent, approver = sys.argv[1:6]

def result(r):
    data = r.structured_content
    if data is None:
        data = json.loads(r.content[0].text)
    return {"error": bool(r.is_error), **data}

def approve(request_id, digest):
    req = urllib.request.Request(
        f"{base}/v1/approvals/{request_id}/approve",
        data=json.dumps({"digest": digest, "reason": "ok from the mcp test"}).encode(),
        headers={"Authorization": f"Bearer {approver}", "Content-Type": "application/json"},
        method="POST")
    return json.loads(urllib.request.urlopen(req).read())

async def drive(session):
    out = {}
    init = await session.initialize()
    out["server"] = init.server_info.name
    tools = await session.list_tools()
    out["tools"] = sorted(t.name for t in tools.tools)
    out["schemas"] = {t.name: t.input_schema for t in tools.tools}
    t = result(await session.call_tool("open_task", {"purpose": "fix the flaky cache test", "environment": "sandbox"}))
    task = t["id"]
    out["granted"] = result(await session.call_tool("request_access", {
        "task_id": task, "resource": "ci-cache", "actions": ["read"], "justification": "read cached deps"}))
    out["denied"] = result(await session.call_tool("request_access", {
        "task_id": task, "resource": "payments-db", "actions": ["read"], "justification": "look at prod"}))
    out["renewed"] = result(await session.call_tool("renew_lease", {"lease_id": out["granted"]["lease_id"]}))
    prod = result(await session.call_tool("open_task", {"purpose": "deploy the fix", "environment": "production"}))["id"]
    pending = result(await session.call_tool("request_access", {
        "task_id": prod, "resource": "deploy-pipeline", "actions": ["deploy"], "ttl_secs": 600, "justification": "ship it"}))
    out["pending"] = pending
    out["still_pending"] = result(await session.call_tool("check_request", {"task_id": prod, "request_id": pending["request_id"]}))
    approve(pending["request_id"], pending["digest"])
    out["approved"] = result(await session.call_tool("check_request", {
        "task_id": prod, "request_id": pending["request_id"], "wait_secs": 5}))
    out["reported"] = result(await session.call_tool("report_tool_use", {
        "task_id": task, "tool": "cache.restore", "target": "ci-cache", "lease_id": out["granted"]["lease_id"],
        "duration_ms": 42, "attributes": {"objects": 3}}))
    out["leases_before"] = result(await session.call_tool("list_leases", {"task_id": task}))
    out["completed"] = result(await session.call_tool("complete_task", {"task_id": task}))
    out["completed_prod"] = result(await session.call_tool("complete_task", {"task_id": prod}))
    out["leases_after"] = result(await session.call_tool("list_leases", {"task_id": task}))
    try:
        out["bad_args"] = result(await session.call_tool("list_leases", {"task_id": "../../v1/audit"}))
    except MCPError as e:
        out["bad_args"] = {"error": True, "protocol_error": str(e)}
    out["other_task"] = result(await session.call_tool("list_leases", {"task_id": "task_0000"}))
    return out

async def main():
    if mode == "stdio":
        params = StdioServerParameters(command=latch_bin, args=["mcp"],
                                       env={"LATCH_SERVER": base, "LATCH_TOKEN": agent})
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                out = await drive(session)
    else:
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {agent}"})
        async with http:
            async with streamable_http_client(f"{base}/mcp", http_client=http) as streams:
                read, write = streams[0], streams[1]
                async with ClientSession(read, write) as session:
                    out = await drive(session)
    print(json.dumps(out))

asyncio.run(main())
"#;

async fn drive(s: &TestServer, mode: &str, agent: &str) -> Value {
    let bob = s.human("bob", &["prod-approvers"]).await;
    // Async: the server runs on this test's runtime and must answer the client.
    let out = tokio::process::Command::new("python3")
        .args([
            "-c",
            CLIENT,
            mode,
            env!("CARGO_BIN_EXE_latch"),
            &s.base,
            agent,
            &bob,
        ])
        .output()
        .await
        .expect("python3");
    assert!(
        out.status.success(),
        "the MCP Python SDK client failed ({mode}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

async fn check_full_task(s: &TestServer, o: &Value) {
    assert_eq!(o["server"], "latch");
    assert_eq!(
        o["tools"],
        json!([
            "check_request",
            "complete_task",
            "list_leases",
            "open_task",
            "renew_lease",
            "report_tool_use",
            "request_access"
        ])
    );
    // Schemas a model can follow: required fields and described properties.
    let ra = &o["schemas"]["request_access"];
    let mut req: Vec<&str> = ra["required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    req.sort();
    assert_eq!(req, ["actions", "justification", "resource", "task_id"]);
    assert!(ra["properties"]["actions"]["description"].is_string());
    assert_eq!(ra["properties"]["actions"]["minItems"], 1);
    assert_eq!(
        o["schemas"]["check_request"]["properties"]["wait_secs"]["maximum"],
        60
    );

    let g = &o["granted"];
    assert_eq!(g["status"], "granted", "{g}");
    assert_eq!(g["credential"]["kind"], "bearer_token");
    let token = g["credential"]["value"].as_str().unwrap();
    let d = &o["denied"];
    assert_eq!(d["status"], "denied", "{d}");
    assert_eq!(d["code"], "environment_separation");
    assert!(
        d["what_would_make_it_allowed"][0]
            .as_str()
            .unwrap()
            .contains("production")
    );
    // The hint never tells an agent to escalate into a more privileged environment.
    let hint = d["what_would_make_it_allowed"][0].as_str().unwrap();
    assert!(!hint.contains("open a task with environment"), "{hint}");
    assert!(hint.contains("ask a human"), "{hint}");
    let r = &o["renewed"];
    assert_eq!(r["status"], "renewed", "{r}");
    let renewed = r["credential"]["value"].as_str().unwrap();
    assert_eq!(o["pending"]["status"], "pending");
    assert_eq!(
        o["pending"]["approvers_needed"],
        json!([{"group": "prod-approvers", "quorum": 1}])
    );
    assert!(
        o["pending"]["next_step"]
            .as_str()
            .unwrap()
            .contains("check_request")
    );
    assert_eq!(o["still_pending"]["status"], "pending");
    assert_eq!(o["approved"]["status"], "granted", "{}", o["approved"]);
    let deploy = o["approved"]["credential"]["value"].as_str().unwrap();
    assert_eq!(o["reported"]["kind"], "tool.used", "{}", o["reported"]);
    assert_eq!(o["reported"]["lease_id"], g["lease_id"]);
    assert_eq!(o["leases_before"]["leases"][0]["state"], "active");
    assert_eq!(o["completed"]["state"], "completed");
    assert_eq!(o["leases_after"]["leases"][0]["state"], "revoked");
    assert_eq!(o["bad_args"]["error"], true);
    assert_eq!(o["other_task"]["error"], true);
    assert_eq!(o["other_task"]["code"], "task_not_found");
    for t in [token, renewed, deploy] {
        assert_eq!(s.introspect(t).await["active"], false);
    }
}

fn sdk_available() -> bool {
    tool_available("python3", &["-c", "import mcp"])
}

#[tokio::test]
async fn mcp_python_sdk_drives_a_full_task_over_stdio() {
    if !sdk_available() {
        return;
    }
    let s = TestServer::start().await;
    let agent = s.agent("900").await;
    let o = drive(&s, "stdio", &agent).await;
    check_full_task(&s, &o).await;
    // Everything was done as the workload of the token `latch mcp` was started with.
    let tasks = s.get(Some(&agent), "/v1/tasks").await;
    let purposes: Vec<&str> = tasks
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["purpose"].as_str())
        .collect();
    assert!(
        purposes.contains(&"fix the flaky cache test"),
        "{purposes:?}"
    );
    assert!(purposes.contains(&"deploy the fix"));
    s.stop().await;
}

#[tokio::test]
async fn mcp_python_sdk_drives_a_full_task_over_streamable_http() {
    if !sdk_available() {
        return;
    }
    let s = TestServer::start().await;
    let agent = s.agent("901").await;
    let o = drive(&s, "http", &agent).await;
    check_full_task(&s, &o).await;
    s.stop().await;
}

#[tokio::test]
async fn mcp_http_requires_a_workload_token_and_publishes_resource_metadata() {
    let s = TestServer::start().await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"}}});
    let post = |token: Option<String>| {
        let mut rb = s
            .http
            .post(format!("{}/mcp", s.base))
            .header("Accept", "application/json, text/event-stream")
            .json(&init);
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        rb.send()
    };
    let r = post(None).await.unwrap();
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(
        challenge.contains(&format!(
            "resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"",
            s.base
        )),
        "{challenge}"
    );
    // A token for another audience is refused.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut claims = latch_testkit::TestIssuer::github_claims(now, "902");
    claims["aud"] = json!("https://some-other-service.example");
    let wrong_aud = s.issuer.sign(&claims);
    let r = post(Some(wrong_aud)).await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "audience_mismatch");
    // A human token is not a workload.
    let r = post(Some(s.human("bob", &[]).await)).await.unwrap();
    assert_eq!(r.status(), 403);
    // A valid workload token gets through.
    let r = post(Some(s.agent("903").await)).await.unwrap();
    assert_eq!(r.status(), 200);

    let m = s
        .get(None, "/.well-known/oauth-protected-resource/mcp")
        .await;
    assert_eq!(m.status, 200);
    assert_eq!(m.body["resource"], format!("{}/mcp", s.base));
    assert!(
        m.body["authorization_servers"]
            .as_array()
            .unwrap()
            .contains(&json!(latch_testkit::TEST_ISSUER))
    );
    assert_eq!(m.body["bearer_methods_supported"], json!(["header"]));
    s.stop().await;
}

#[tokio::test]
async fn latch_mcp_refuses_to_start_with_a_bad_token() {
    let s = TestServer::start().await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_latch"))
        .arg("mcp")
        .env("LATCH_SERVER", &s.base)
        .env("LATCH_TOKEN", "not-a-token")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "nothing but the protocol on stdout");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refused the token (401)"), "{stderr}");
    assert!(!stderr.contains("not-a-token"), "the token is never echoed");
    s.stop().await;
}

/// One JSON-RPC message to `/mcp`; returns status, session id and the JSON answer (plain or
/// the last `data:` of an SSE stream).
pub(crate) async fn mcp_post(
    s: &TestServer,
    token: &str,
    session: Option<&str>,
    origin: Option<&str>,
    msg: Value,
) -> (u16, Option<String>, Value, Option<String>) {
    let mut rb = s
        .http
        .post(format!("{}/mcp", s.base))
        .bearer_auth(token)
        .header("Accept", "application/json, text/event-stream")
        .json(&msg);
    if let Some(id) = session {
        rb = rb
            .header("Mcp-Session-Id", id)
            .header("MCP-Protocol-Version", "2025-06-18");
    }
    if let Some(o) = origin {
        rb = rb.header("Origin", o);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let sid = r
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let rid = r
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| {
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .next_back()
            .unwrap_or(Value::Null)
    });
    (status, sid, body, rid)
}

/// Initializes an MCP session over HTTP; returns its id.
pub(crate) async fn mcp_session(s: &TestServer, token: &str) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"}}});
    let (st, sid, b, _) = mcp_post(s, token, None, None, init).await;
    assert_eq!(st, 200, "{b}");
    let sid = sid.expect("Mcp-Session-Id");
    let (st, _, _, _) = mcp_post(
        s,
        token,
        Some(&sid),
        None,
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert!(st == 202 || st == 200, "{st}");
    sid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_http_tool_calls_carry_the_outer_source_ip_into_audit() {
    let s = TestServer::start().await;
    let agent = s.agent("905").await;
    let sid = mcp_session(&s, &agent).await;
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "open_task", "arguments": {"purpose": "mcp source ip", "environment": "sandbox"}}});
    let (st, _, b, outer_rid) = mcp_post(&s, &agent, Some(&sid), None, call).await;
    assert_eq!(st, 200, "{b}");
    assert!(b["result"].is_object(), "{b}");
    let opened: Vec<Value> = s
        .audit("kind=task.opened")
        .await
        .into_iter()
        .filter(|e| e["detail"]["purpose"] == "mcp source ip")
        .collect();
    assert_eq!(opened.len(), 1, "the task.opened event");
    let e = &opened[0];
    assert_eq!(e["detail"]["auth"]["source_ip"], "127.0.0.1", "{e}");
    // The in-process call carries the outer `/mcp` request's id.
    assert_eq!(e["request_id"].as_str(), outer_rid.as_deref(), "{e}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_http_refuses_a_foreign_origin() {
    let s = TestServer::start().await;
    let agent = s.agent("906").await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"}}});
    for bad in [
        "https://evil.example",
        "null",
        "http://127.0.0.1.evil.example:80",
    ] {
        let (st, _, _, _) = mcp_post(&s, &agent, None, Some(bad), init.clone()).await;
        assert_eq!(st, 403, "{bad}");
    }
    // No Origin (non-browser clients), or the broker's own.
    let (st, _, b, _) = mcp_post(&s, &agent, None, Some(&s.base), init.clone()).await;
    assert_eq!(st, 200, "{b}");
    let (st, _, b, _) = mcp_post(&s, &agent, None, None, init).await;
    assert_eq!(st, 200, "{b}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_session_belongs_to_the_workload_that_created_it() {
    let s = TestServer::start().await;
    let agent = s.agent("907").await;
    let other = s.agent("908").await;
    let sid = mcp_session(&s, &agent).await;
    let list = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"});
    let (st, _, b, _) = mcp_post(&s, &agent, Some(&sid), None, list.clone()).await;
    assert_eq!(st, 200, "{b}");
    assert!(b["result"]["tools"].is_array(), "{b}");
    // Another workload (here: another run) presenting the session id gets no such session.
    let (st, _, _, _) = mcp_post(&s, &other, Some(&sid), None, list.clone()).await;
    assert_eq!(st, 404);
    // Made-up session ids are not found either.
    let (st, _, _, _) = mcp_post(&s, &agent, Some("made-up"), None, list).await;
    assert_eq!(st, 404);
    s.stop().await;
}

/// The SDK client: a session over streamable HTTP, closed with the transport's `DELETE`
/// (session termination); prints the session id, the `DELETE`'s status and the SDK's warnings.
const TERMINATE: &str = r#"
import asyncio, json, logging, sys
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

base, agent = sys.argv[1:3]
warnings = []
class Warnings(logging.Handler):
    def emit(self, record):
        if record.levelno >= logging.WARNING:
            warnings.append(record.getMessage())
logging.getLogger("mcp").addHandler(Warnings())
seen = {"session": None, "delete": None}

async def hook(response):
    sid = response.headers.get("mcp-session-id")
    if sid:
        seen["session"] = sid
    if response.request.method == "DELETE":
        seen["delete"] = response.status_code

async def main():
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {agent}"})
    http.event_hooks["response"].append(hook)
    async with http:
        async with streamable_http_client(f"{base}/mcp", http_client=http) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
                await session.list_tools()
    print(json.dumps({**seen, "warnings": warnings}))

asyncio.run(main())
"#;

/// MCP streamable HTTP: a client ends its session with `DELETE` (a server that does not
/// support that answers `405`). The MCP Python SDK takes `200`/`204` as done and logs any
/// other answer as a failed termination (rmcp's `202` was one); afterwards the session id is
/// unknown (`404`).
#[tokio::test]
async fn mcp_python_sdk_terminates_its_session_cleanly() {
    if !sdk_available() {
        return;
    }
    let s = TestServer::start().await;
    let agent = s.agent("904").await;
    let out = tokio::process::Command::new("python3")
        .args(["-c", TERMINATE, &s.base, &agent])
        .output()
        .await
        .expect("python3");
    assert!(
        out.status.success(),
        "the MCP Python SDK client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let o: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(o["delete"], 204, "{o}");
    assert_eq!(o["warnings"], json!([]), "{o}");
    let sid = o["session"].as_str().expect("a session id").to_owned();
    let (st, _, _, _) = mcp_post(
        &s,
        &agent,
        Some(&sid),
        None,
        json!({"jsonrpc": "2.0", "id": 9, "method": "tools/list"}),
    )
    .await;
    assert_eq!(st, 404, "a terminated session is gone");
    s.stop().await;
}

/// Every refusal of `/mcp` has the API's JSON error shape (`{"error": {"code", "message"}}`),
/// the transport's own included (rmcp answers those in `text/plain`): no session id, an
/// unknown session, a wrong method, `Accept` or `Content-Type`, a body that is not JSON, a
/// foreign `Origin`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_transport_refusals_have_the_json_error_shape() {
    let s = TestServer::start().await;
    let agent = s.agent("mcp-json-errors").await;
    let sid = mcp_session(&s, &agent).await;
    let url = format!("{}/mcp", s.base);
    let list = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}).to_string();
    let both = "application/json, text/event-stream";
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "no session id",
            s.http
                .post(&url)
                .header("Accept", both)
                .header("Content-Type", "application/json")
                .body(list.clone()),
            400,
            "invalid_request",
        ),
        (
            "unknown session",
            s.http
                .post(&url)
                .header("Accept", both)
                .header("Content-Type", "application/json")
                .header("Mcp-Session-Id", "made-up")
                .body(list.clone()),
            404,
            "not_found",
        ),
        (
            "wrong method",
            s.http
                .put(&url)
                .header("Accept", both)
                .header("Mcp-Session-Id", &sid)
                .body(list.clone()),
            405,
            "method_not_allowed",
        ),
        (
            "accept",
            s.http
                .post(&url)
                .header("Accept", "text/html")
                .header("Content-Type", "application/json")
                .header("Mcp-Session-Id", &sid)
                .body(list.clone()),
            406,
            "not_acceptable",
        ),
        (
            "content type",
            s.http
                .post(&url)
                .header("Accept", both)
                .header("Content-Type", "text/plain")
                .header("Mcp-Session-Id", &sid)
                .body(list.clone()),
            415,
            "unsupported_media_type",
        ),
        (
            "not json",
            s.http
                .post(&url)
                .header("Accept", both)
                .header("Content-Type", "application/json")
                .header("Mcp-Session-Id", &sid)
                .body("{not json"),
            400,
            "invalid_request",
        ),
        (
            "a batch",
            s.http
                .post(&url)
                .header("Accept", both)
                .header("Content-Type", "application/json")
                .header("Mcp-Session-Id", &sid)
                .body("[1, 2]"),
            400,
            "invalid_request",
        ),
        (
            "origin",
            s.http
                .post(&url)
                .header("Accept", both)
                .header("Content-Type", "application/json")
                .header("Origin", "https://evil.example")
                .body(list.clone()),
            403,
            "origin_not_allowed",
        ),
    ];
    for (what, rb, status, code) in cases {
        let r = rb.bearer_auth(&agent).send().await.unwrap();
        let st = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = r.text().await.unwrap();
        // rmcp may answer a malformed body with a JSON-RPC parse error instead; that is JSON too.
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{what}: not JSON ({ct}): {text:?}: {e}"));
        if body.get("jsonrpc").is_some() {
            assert!(body["error"].is_object(), "{what}: {body}");
            continue;
        }
        assert_eq!(st, status, "{what}: {body}");
        assert_eq!(body["error"]["code"], code, "{what}: {body}");
        assert!(body["error"]["message"].is_string(), "{what}: {body}");
    }
    s.stop().await;
}
