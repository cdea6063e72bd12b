//! The MCP gateway with real MCP parties on both sides: upstreams written with the official MCP
//! Python SDK (`MCPServer`, formerly FastMCP; one over streamable HTTP, one over stdio, both in
//! `testdata/mcp-upstream/upstream.py`, which logs every call it receives) and the Python SDK as
//! the client of Latch (`/mcp`, and `latch mcp` over stdio). Checked: a call allowed and
//! forwarded with the credential Latch holds (the upstream saw it, the client never did), a call
//! denied by its arguments (the upstream never called), a step-up call forwarded once after the
//! approval of that exact call, `task_required`, the end of the task and the kill switch
//! stopping forwarding at once, and one `tool.called` audit event per call with a digest of the
//! arguments, never the arguments.

use std::path::{Path, PathBuf};
use std::time::Duration;

use latch_testkit::{TestOptions, TestServer, tool_available};
use serde_json::{Value, json};

const UPSTREAM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/mcp-upstream/upstream.py"
);

/// The client: every case through the MCP Python SDK, one JSON summary line.
const CLIENT: &str = r#"
import asyncio, json, sys, urllib.request
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

mode, latch_bin, base, agent, approver, admin = sys.argv[1:7]

def result(r):
    data = r.structured_content
    if data is None and r.content:
        try:
            data = json.loads(r.content[0].text)
        except Exception:
            data = {"text": r.content[0].text}
    return {"error": bool(r.is_error), **(data or {})}

def rest(path, token, body):
    req = urllib.request.Request(f"{base}{path}", data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"}, method="POST")
    try:
        return json.loads(urllib.request.urlopen(req).read())
    except urllib.error.HTTPError as e:
        return {"http_error": e.code, **json.loads(e.read())}

async def drive(session):
    out = {}
    await session.initialize()
    tools = await session.list_tools()
    out["tools"] = sorted(t.name for t in tools.tools)
    out["schema"] = {t.name: t.input_schema for t in tools.tools}.get("web__query")
    out["no_task"] = result(await session.call_tool("web__query", {"query": "select 1"}))
    task = result(await session.call_tool("open_task", {"purpose": "gateway test", "environment": "sandbox"}))["id"]
    out["task"] = task
    out["allowed"] = result(await session.call_tool("web__query", {"query": "select * from sandbox.orders"}))
    out["allowed_stdio"] = result(await session.call_tool("local__query", {"query": "select 2"}))
    out["denied"] = result(await session.call_tool("web__query", {"query": "select * from production.users"}))
    out["pending"] = result(await session.call_tool("web__admin_reset", {"target": "cache-1"}))
    out["still_pending"] = result(await session.call_tool("web__admin_reset", {"target": "cache-1"}))
    rid = out["pending"]["request_id"]
    out["vote"] = rest(f"/v1/approvals/{rid}/approve", approver, {"digest": out["pending"]["digest"], "reason": "ok"})
    # Another call (other arguments) is not covered by that approval.
    out["other_args"] = result(await session.call_tool("web__admin_reset", {"target": "cache-2"}))
    out["approved"] = result(await session.call_tool("web__admin_reset", {"target": "cache-1"}))
    out["again"] = result(await session.call_tool("web__admin_reset", {"target": "cache-1"}))
    # An explicit task in _meta wins over the session's.
    out["meta_task"] = result(await session.call_tool("web__query", {"query": "select 3"}, meta={"latch/task_id": "task_0000"}))
    if mode == "http":
        out["freeze"] = rest("/v1/admin/freezes", admin, {"scope": {"kind": "all"}, "reason": "gateway test"})
        out["frozen"] = result(await session.call_tool("web__query", {"query": "select 4"}))
        rest(f"/v1/admin/freezes/{out['freeze']['freeze']['id']}/lift", admin, {"reason": "done"})
        out["lifted"] = result(await session.call_tool("web__query", {"query": "select 5"}))
    out["completed"] = result(await session.call_tool("complete_task", {"task_id": task}))
    out["after_end"] = result(await session.call_tool("web__query", {"query": "select 6"}, meta={"latch/task_id": task}))
    return out

async def main():
    if mode == "stdio":
        params = StdioServerParameters(command=latch_bin, args=["mcp"], env={"LATCH_SERVER": base, "LATCH_TOKEN": agent})
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                out = await drive(session)
    else:
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {agent}"})
        async with http:
            async with streamable_http_client(f"{base}/mcp", http_client=http) as streams:
                async with ClientSession(streams[0], streams[1]) as session:
                    out = await drive(session)
    print(json.dumps(out))

asyncio.run(main())
"#;

fn sha256_hex(s: &str) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The upstream log: one JSON object per call received.
fn calls(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

struct Upstreams {
    http: tokio::process::Child,
    log: PathBuf,
    secret: String,
    config: String,
    _dir: tempfile_dir::Dir,
}

mod tempfile_dir {
    /// A scratch directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Starts the HTTP upstream, writes the secrets, and returns the `[[mcp.upstreams]]` config.
async fn upstreams() -> Upstreams {
    let dir = std::env::temp_dir().join(format!("latch-gw-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("calls.log");
    let secret = format!("upstream-secret-{}", uuid::Uuid::new_v4().simple());
    std::fs::write(dir.join("secret"), &secret).unwrap();
    let port = free_port();
    let http = tokio::process::Command::new("python3")
        .args([
            UPSTREAM,
            "http",
            &port.to_string(),
            log.to_str().unwrap(),
            &sha256_hex(&secret),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("python3");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secret_file = dir.join("secret");
    let config = format!(
        r#"
[[mcp.upstreams]]
name = "web"
transport = "streamable_http"
url = "http://127.0.0.1:{port}/mcp"
call_timeout = "10s"
[mcp.upstreams.credential]
secret_file = "{secret}"

[[mcp.upstreams]]
name = "local"
transport = "stdio"
command = "python3"
args = ["{UPSTREAM}", "stdio", "{log}", "{digest}"]
call_timeout = "10s"
[mcp.upstreams.credential]
secret_file = "{secret}"
env_var = "UPSTREAM_TOKEN"
"#,
        secret = secret_file.display(),
        log = log.display(),
        digest = sha256_hex(&secret),
    );
    Upstreams {
        http,
        log,
        secret,
        config,
        _dir: tempfile_dir::Dir(dir),
    }
}

async fn drive(s: &TestServer, mode: &str) -> (Value, String) {
    let agent = s.agent(&format!("gw-{mode}")).await;
    let bob = s.human("bob", &["prod-approvers"]).await;
    let admin = s.human("carol", &["latch-admins"]).await;
    let out = tokio::process::Command::new("python3")
        .args([
            "-c",
            CLIENT,
            mode,
            env!("CARGO_BIN_EXE_latch"),
            &s.base,
            &agent,
            &bob,
            &admin,
        ])
        .output()
        .await
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "the MCP Python SDK client failed ({mode}): {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    (v, stdout)
}

async fn check(s: &TestServer, up: &Upstreams, mode: &str) {
    let before = calls(&up.log).len();
    let (o, raw) = drive(s, mode).await;
    // Listed with the upstreams' schemas, namespaced.
    let tools = o["tools"].as_array().unwrap();
    for t in [
        "web__query",
        "web__admin_reset",
        "local__query",
        "open_task",
    ] {
        assert!(tools.iter().any(|x| x == t), "{t} not listed: {tools:?}");
    }
    assert_eq!(o["schema"]["required"], json!(["query"]), "{}", o["schema"]);
    assert_eq!(o["no_task"]["code"], "task_required", "{}", o["no_task"]);
    // Allowed: forwarded with the credential (the upstream says it arrived).
    assert_eq!(o["allowed"]["error"], false, "{}", o["allowed"]);
    assert_eq!(o["allowed"]["authenticated"], true, "{}", o["allowed"]);
    assert_eq!(
        o["allowed_stdio"]["authenticated"], true,
        "{}",
        o["allowed_stdio"]
    );
    assert_eq!(o["allowed_stdio"]["transport"], "stdio");
    // Denied by its arguments.
    assert_eq!(o["denied"]["error"], true);
    assert_eq!(o["denied"]["status"], "denied", "{}", o["denied"]);
    assert_eq!(
        o["denied"]["policy_ids"],
        json!(["gateway-no-production-schema"])
    );
    // Step-up: pending, the same request on a retry, forwarded once after approval.
    assert_eq!(o["pending"]["status"], "pending", "{}", o["pending"]);
    assert_eq!(o["still_pending"]["request_id"], o["pending"]["request_id"]);
    assert_eq!(o["vote"]["state"], "approved", "{}", o["vote"]);
    assert_eq!(o["other_args"]["status"], "pending", "{}", o["other_args"]);
    assert_ne!(o["other_args"]["request_id"], o["pending"]["request_id"]);
    assert_eq!(o["approved"]["reset"], "cache-1", "{}", o["approved"]);
    assert_eq!(o["again"]["status"], "pending", "{}", o["again"]);
    assert_ne!(o["again"]["request_id"], o["pending"]["request_id"]);
    assert_eq!(
        o["meta_task"]["code"], "task_not_found",
        "{}",
        o["meta_task"]
    );
    if mode == "http" {
        assert_eq!(o["frozen"]["code"], "frozen", "{}", o["frozen"]);
        assert_eq!(o["lifted"]["authenticated"], true, "{}", o["lifted"]);
    }
    assert_eq!(
        o["after_end"]["code"], "task_not_open",
        "{}",
        o["after_end"]
    );
    // The client never saw the credential.
    assert!(!raw.contains(&up.secret));
    // What reached the upstreams: the allowed calls and the approved one, once; never the
    // denied, pending, frozen or after-the-end ones.
    let got: Vec<Value> = calls(&up.log)[before..].to_vec();
    let seen: Vec<String> = got
        .iter()
        .map(|c| format!("{}:{}:{}", c["transport"], c["tool"], c["args"]))
        .collect();
    let mut want = vec![
        r#"http:query:{"query":"select * from sandbox.orders"}"#.to_owned(),
        r#"stdio:query:{"query":"select 2"}"#.to_owned(),
        r#"http:admin_reset:{"target":"cache-1"}"#.to_owned(),
    ];
    if mode == "http" {
        want.push(r#"http:query:{"query":"select 5"}"#.to_owned());
    }
    let norm = |v: &[String]| {
        v.iter()
            .map(|x| x.replace(' ', "").replace("\"", ""))
            .collect::<Vec<_>>()
    };
    assert_eq!(norm(&seen), norm(&want), "{got:?}");
    assert!(got.iter().all(|c| c["auth_ok"] == true), "{got:?}");
    // One audit event per call, with the digest, never the arguments.
    let task = o["task"].as_str().unwrap();
    let events = s.audit(&format!("task_id={task}&kind=tool.called")).await;
    let outcomes: Vec<&str> = events
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    let mut expect = vec![
        "ok", "ok", "deny", "step_up", "step_up", "step_up", "ok", "step_up",
    ];
    if mode == "http" {
        expect.extend(["frozen", "ok"]);
    }
    expect.push("task_not_open");
    assert_eq!(outcomes, expect, "{events:#?}");
    let text = serde_json::to_string(&events).unwrap();
    for secret in [
        up.secret.as_str(),
        "sandbox.orders",
        "production.users",
        "cache-1",
    ] {
        assert!(!text.contains(secret), "`{secret}` in the audit trail");
    }
    for e in &events {
        assert_eq!(e["detail"]["arguments_digest"].as_str().unwrap().len(), 64);
    }
    let denied = events.iter().find(|e| e["outcome"] == "deny").unwrap();
    assert_eq!(
        denied["detail"]["policy_ids"],
        json!(["gateway-no-production-schema"])
    );
    assert_eq!(denied["detail"]["upstream_outcome"], "not_called");
}

fn sdk_available() -> bool {
    tool_available("python3", &["-c", "import mcp"])
}

#[tokio::test]
async fn gateway_over_streamable_http_with_python_sdk_upstreams() {
    if !sdk_available() {
        return;
    }
    let mut up = upstreams().await;
    let s = TestServer::start_with(TestOptions {
        extra_config: up.config.clone(),
        ..Default::default()
    })
    .await;
    check(&s, &up, "http").await;
    let _ = up.http.kill().await;
}

#[tokio::test]
async fn gateway_over_stdio_latch_mcp_with_python_sdk_upstreams() {
    if !sdk_available() {
        return;
    }
    let mut up = upstreams().await;
    let s = TestServer::start_with(TestOptions {
        extra_config: up.config.clone(),
        ..Default::default()
    })
    .await;
    check(&s, &up, "stdio").await;
    let _ = up.http.kill().await;
}

/// History reaches the gateway: once the task held a secret, a call to a tool of an upstream
/// marked `egress` needs step-up (the example taint rule), while other upstreams still answer.
#[tokio::test]
async fn a_tainted_task_needs_step_up_for_an_egress_upstream_tool() {
    if !sdk_available() {
        return;
    }
    let mut up = upstreams().await;
    let config = up
        .config
        .replacen("name = \"web\"\n", "name = \"web\"\negress = true\n", 1);
    let s = TestServer::start_with(TestOptions {
        extra_config: config,
        ..Default::default()
    })
    .await;
    let agent = s.agent("gw-taint").await;
    let sam = s.human("sam", &["security"]).await;
    let task = s.open_task(&agent, "sandbox", 1800).await;
    let calls = format!("/v1/tasks/{task}/tool-calls");
    let web = json!({"tool": "web__query", "arguments": {"query": "select 1"}});
    let a = s.post(Some(&agent), &calls, web.clone()).await;
    assert_eq!(a.status, 200, "{}", a.body);

    // Taint the task: the secret needs security, then is claimed.
    let v = s
        .request(&agent, &task, "sandbox-vault", &["read"], None)
        .await;
    assert_eq!(v.status, 202, "{}", v.body);
    let rid = v.body["request"]["id"].as_str().unwrap();
    let ok = s
        .post(
            Some(&sam),
            &format!("/v1/approvals/{rid}/approve"),
            json!({"digest": v.body["request"]["digest"], "reason": "ok"}),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let c = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{task}/requests/{rid}/claim"),
            json!({}),
        )
        .await;
    assert_eq!(c.status, 201, "{}", c.body);

    let b = s.post(Some(&agent), &calls, web).await;
    assert_eq!(b.status, 202, "{}", b.body);
    assert!(
        b.body.to_string().contains("tainted-egress-needs-security"),
        "{}",
        b.body
    );
    let local = json!({"tool": "local__query", "arguments": {"query": "select 1"}});
    let l = s.post(Some(&agent), &calls, local).await;
    assert_eq!(l.status, 200, "{}", l.body);
    let _ = up.http.kill().await;
}
