//! Approver notifications (issue 15): a step-up request tells its approver groups through the
//! outbox — a Slack incoming webhook (Block Kit, linking the console), a webhook signed per
//! Standard Webhooks (verified here by the Python `standardwebhooks` library, or a Python HMAC
//! check written from the specification), e-mail to an `aiosmtpd` sink — with retries and
//! backoff, without the request ever waiting on a receiver, and never with a credential in a
//! message. Also: every pending answer carries the request's console URL when the broker serves
//! the console (`console_links.rs`: and none when it does not).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use latch_testkit::{TestOptions, TestServer, tool_available};
use serde_json::{Value, json};

/// A webhook secret in Standard Webhooks form (32 bytes).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwAAAAAAAAAAA=";

/// One received HTTP request.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// How a receiver answers.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Behaviour {
    /// `500` to the first `n` requests, then `200`.
    FailFirst(usize),
    /// Never answers.
    Hang,
}

#[derive(Clone)]
pub(crate) struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    behaviour: Behaviour,
}

impl Receiver {
    /// Serves on 127.0.0.1:0; returns the receiver and its URL.
    pub(crate) async fn start(behaviour: Behaviour) -> (Self, String) {
        let r = Receiver {
            got: Arc::default(),
            behaviour,
        };
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(r.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await });
        (r, url)
    }

    pub(crate) fn all(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits (bounded, real time) until `n` requests arrived.
    pub(crate) async fn wait_for(&self, n: usize) -> Vec<Received> {
        for _ in 0..200 {
            let all = self.all();
            if all.len() >= n {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("expected {n} deliveries, got {}", self.all().len());
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let n = {
        let mut g = r.got.lock().unwrap();
        g.push(Received { headers, body });
        g.len()
    };
    match r.behaviour {
        Behaviour::FailFirst(k) if n <= k => StatusCode::INTERNAL_SERVER_ERROR,
        Behaviour::FailFirst(_) => StatusCode::OK,
        Behaviour::Hang => {
            std::future::pending::<()>().await;
            StatusCode::OK
        }
    }
}

/// Serves the approval console (its development sign-in): only then do answers and
/// notifications link to it.
pub(crate) const CONSOLE: &str = "\n[console]\nenabled = true\n";

/// A server serving the console, whose `[[notifications]]` are `channels` (TOML), with fast
/// polling.
async fn server_with(channels: &str, max_attempts: u32) -> TestServer {
    TestServer::start_with(TestOptions {
        extra_config: notify_config(channels, max_attempts, true),
        ..TestOptions::default()
    })
    .await
}

/// `[notify]` with fast polling, `channels`, and the console when `console`.
pub(crate) fn notify_config(channels: &str, max_attempts: u32, console: bool) -> String {
    format!(
        "\n[notify]\npoll_interval = \"20ms\"\nbackoff = \"2s\"\nbackoff_max = \"4s\"\n\
         attempt_timeout = \"1s\"\nmax_attempts = {max_attempts}\n{channels}{}",
        if console { CONSOLE } else { "" }
    )
}

/// A server serving the console, without notifications.
async fn console_server() -> TestServer {
    TestServer::start_with(TestOptions {
        extra_config: CONSOLE.into(),
        ..TestOptions::default()
    })
    .await
}

/// A file holding `text`, for `*_file` secrets.
pub(crate) fn secret_file(text: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("latch-secret-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&p, text).unwrap();
    p
}

pub(crate) fn webhook_channel(name: &str, url: &str, groups: &str) -> String {
    let f = secret_file(SECRET);
    format!(
        "\n[[notifications]]\nname = \"{name}\"\nkind = \"webhook\"\ngroups = {groups}\n\
         url = \"{url}\"\nsecret_file = \"{}\"\n",
        f.display()
    )
}

/// Opens a production task and asks for a deploy (step-up by `prod-approvers`); returns the
/// answer and how long it took.
pub(crate) async fn step_up(s: &TestServer, agent: &str) -> (latch_testkit::Resp, Duration) {
    let task = s.open_task(agent, "production", 3600).await;
    let t0 = Instant::now();
    let p = s
        .post(
            Some(agent),
            &format!("/v1/tasks/{task}/requests"),
            json!({"resource": "deploy-pipeline", "actions": ["deploy"], "ttl_secs": 600,
                   "justification": "ship *it* <!channel> <https://evil.example|the console>"}),
        )
        .await;
    let took = t0.elapsed();
    assert_eq!(p.status, 202, "{}", p.body);
    (p, took)
}

/// Verifies a Standard Webhooks delivery in Python, independently of Latch: with the
/// `standardwebhooks` package when installed, else HMAC-SHA256 as the specification states.
fn python_verifies(secret: &str, r: &Received) -> bool {
    if !tool_available("python3", &["-c", "import hmac, hashlib, base64"]) {
        return true;
    }
    let h = |k: &str| r.headers.get(k).unwrap().to_str().unwrap().to_owned();
    let script = r#"
import base64, hashlib, hmac, json, os, sys, time
secret = os.environ["S"]
headers = {"webhook-id": os.environ["I"], "webhook-timestamp": os.environ["T"],
           "webhook-signature": os.environ["G"]}
body = sys.stdin.buffer.read()
try:
    from standardwebhooks.webhooks import Webhook
    Webhook(secret).verify(body, headers)
    print("standardwebhooks")
except ImportError:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f'{headers["webhook-id"]}.{headers["webhook-timestamp"]}.'.encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    sigs = [s.split(",", 1)[1] for s in headers["webhook-signature"].split() if s.startswith("v1,")]
    assert any(hmac.compare_digest(expected, s) for s in sigs), "bad signature"
    assert abs(time.time() - int(headers["webhook-timestamp"])) < 300, "stale timestamp"
    print("hmac")
"#;
    let mut c = std::process::Command::new("python3")
        .args(["-c", script])
        .env("S", secret)
        .env("I", h("webhook-id"))
        .env("T", h("webhook-timestamp"))
        .env("G", h("webhook-signature"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    c.stdin.take().unwrap().write_all(&r.body).unwrap();
    let out = c.wait_with_output().unwrap();
    eprintln!(
        "python verification: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.status.success()
}

/// No token or credential-shaped value in a message.
fn assert_no_credential(text: &str, tokens: &[&str]) {
    for t in tokens {
        assert!(!text.contains(t), "a token is in a message: {text}");
    }
    assert!(
        !text.contains("eyJ"),
        "a JWT-shaped value is in a message: {text}"
    );
    assert!(!text.contains("ltc_"), "a credential-shaped value: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_up_is_told_to_slack_and_to_a_signed_webhook() {
    let (slack, slack_url) = Receiver::start(Behaviour::FailFirst(0)).await;
    let (hook, hook_url) = Receiver::start(Behaviour::FailFirst(0)).await;
    let slack_file = secret_file(&slack_url);
    let s = server_with(
        &format!(
            "{}\n[[notifications]]\nname = \"slack-prod\"\nkind = \"slack\"\n\
             groups = [\"prod-approvers\"]\nurl_file = \"{}\"\n\
             [[notifications]]\nname = \"other-team\"\nkind = \"slack\"\ngroups = [\"db-owners\"]\n\
             url_file = \"{}\"\n",
            webhook_channel("hook", &hook_url, "[\"*\"]"),
            slack_file.display(),
            slack_file.display(),
        ),
        3,
    )
    .await;
    let agent = s.agent("ntf-1").await;
    let (p, _) = step_up(&s, &agent).await;
    let rid = p.body["request"]["id"].as_str().unwrap();
    let console = format!("{}/console/requests/{rid}", s.base);
    assert_eq!(p.body["console_url"], console.as_str());

    // Slack: one message (the `db-owners` channel serves no group of this request).
    let got = slack.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        slack.all().len(),
        1,
        "only the channel serving prod-approvers is told"
    );
    let m: Value = serde_json::from_slice(&got[0].body).unwrap();
    let blocks = m["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    let button = blocks
        .iter()
        .find(|b| b["type"] == "actions")
        .and_then(|b| b["elements"].as_array()?.first().cloned())
        .expect("a button");
    assert_eq!(button["type"], "button");
    assert_eq!(
        button["url"],
        console.as_str(),
        "the button opens the console page"
    );
    let text = m.to_string();
    for needle in [
        "deploy-pipeline",
        "production",
        "deploy",
        "10m",
        "prod-approvers",
    ] {
        assert!(text.contains(needle), "{needle} missing: {text}");
    }
    // Agent text cannot mention, link or format, nor hide characters.
    assert!(!text.contains("<!channel>"), "{text}");
    assert!(text.contains("&lt;!channel&gt;"), "{text}");
    assert!(!text.contains("<https://evil"), "{text}");
    assert!(
        !text.contains("mrkdwn"),
        "agent text is never mrkdwn: {text}"
    );

    // Webhook: signed per Standard Webhooks, verified independently.
    let got = hook.wait_for(1).await;
    let r = &got[0];
    let id = r.headers["webhook-id"].to_str().unwrap();
    assert!(id.starts_with("ntf_"), "{id}");
    assert!(
        r.headers["webhook-signature"]
            .to_str()
            .unwrap()
            .starts_with("v1,")
    );
    assert!(python_verifies(SECRET, r), "the signature verifies");
    let mut tampered = r.clone();
    tampered.body = Bytes::from(String::from_utf8_lossy(&r.body).replace("deploy", "destroy"));
    assert!(
        !python_verifies(SECRET, &tampered),
        "a changed body does not verify"
    );
    let b: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(b["type"], "request.step_up");
    assert_eq!(b["data"]["request_id"], rid);
    assert_eq!(b["data"]["console_url"], console.as_str());
    assert_eq!(b["data"]["actions"], json!(["deploy"]));

    for r in slack.all().iter().chain(hook.all().iter()) {
        assert_no_credential(&String::from_utf8_lossy(&r.body), &[&agent]);
    }
    // Delivered, audited.
    let ev = s.audit("kind=notification.delivered").await;
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert!(ev.iter().all(|e| e["access_request_id"] == rid), "{ev:?}");
    let _ = std::fs::remove_file(slack_file);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_gets_retries_with_backoff_and_the_same_id() {
    let (hook, url) = Receiver::start(Behaviour::FailFirst(2)).await;
    let s = server_with(&webhook_channel("flaky", &url, "[\"prod-approvers\"]"), 5).await;
    let agent = s.agent("ntf-2").await;
    step_up(&s, &agent).await;
    hook.wait_for(1).await;
    // The retry waits for its backoff (2 s on the broker's clock): nothing happens before.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hook.all().len(), 1, "no retry before the backoff");
    s.clock.advance(2);
    hook.wait_for(2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hook.all().len(), 2, "the second backoff is longer (4 s)");
    s.clock.advance(2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hook.all().len(), 2, "still waiting: 2 s of 4 s");
    s.clock.advance(2);
    let got = hook.wait_for(3).await;
    let ids: Vec<&str> = got
        .iter()
        .map(|r| r.headers["webhook-id"].to_str().unwrap())
        .collect();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "one idempotency id: {ids:?}"
    );
    // Each attempt is signed afresh and verifies.
    assert!(got.iter().all(|r| python_verifies(SECRET, r)));
    for _ in 0..100 {
        if !s.audit("kind=notification.delivered").await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let failed = s.audit("kind=notification.failed").await;
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(failed.iter().all(|e| e["outcome"] == "retry"));
    assert_eq!(s.audit("kind=notification.delivered").await.len(), 1);
    let metrics = s.get(None, "/metrics").await.body.to_string();
    assert!(
        metrics.contains("latch_notifications_retried_total{channel=\\\"flaky\\\""),
        "{metrics}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_keeps_failing_is_given_up_and_counted() {
    let (hook, url) = Receiver::start(Behaviour::FailFirst(usize::MAX)).await;
    let s = server_with(&webhook_channel("dead-end", &url, "[\"*\"]"), 2).await;
    let agent = s.agent("ntf-3").await;
    step_up(&s, &agent).await;
    hook.wait_for(1).await;
    s.clock.advance(2);
    hook.wait_for(2).await;
    let mut gave_up = Vec::new();
    for _ in 0..100 {
        gave_up = s
            .audit("kind=notification.failed")
            .await
            .into_iter()
            .filter(|e| e["outcome"] == "gave_up")
            .collect();
        if !gave_up.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(gave_up.len(), 1, "given up after max_attempts");
    assert_eq!(gave_up[0]["detail"]["attempts"], 2);
    assert!(
        !gave_up[0].to_string().contains(&url),
        "the failure does not repeat the URL"
    );
    s.clock.advance(60);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hook.all().len(), 2, "no attempt after giving up");
    let metrics = s.get(None, "/metrics").await.body.to_string();
    assert!(
        metrics.contains("latch_notifications_failed_total{channel=\\\"dead-end\\\""),
        "{metrics}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_step_up_answer_never_waits_for_a_hanging_receiver() {
    let (hook, url) = Receiver::start(Behaviour::Hang).await;
    let s = server_with(&webhook_channel("hang", &url, "[\"*\"]"), 3).await;
    let agent = s.agent("ntf-4").await;
    // Warm up (first request on a fresh server), then measure while a delivery hangs.
    step_up(&s, &agent).await;
    hook.wait_for(1).await;
    let (_, took) = step_up(&s, &agent).await;
    hook.wait_for(2).await;
    assert!(
        took < Duration::from_millis(500),
        "the step-up answer took {took:?} while the receiver hangs"
    );
    s.stop().await;
}

/// Kills the sink when the test ends, passed or not.
struct Sink(std::process::Child);

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An SMTP sink (Python `aiosmtpd`) that appends every message to `out`; it also exits when
/// the test process does.
fn smtp_sink(out: &std::path::Path) -> Option<(Sink, u16)> {
    if !tool_available("python3", &["-c", "import aiosmtpd"]) {
        return None;
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let script = r#"
import asyncio, sys
from aiosmtpd.controller import Controller
class H:
    async def handle_DATA(self, server, session, envelope):
        with open(sys.argv[2], "ab") as f:
            f.write(b"RCPT " + ",".join(envelope.rcpt_tos).encode() + b"\n" + envelope.content + b"\n.\n")
        return "250 OK"
c = Controller(H(), hostname="127.0.0.1", port=int(sys.argv[1]))
c.start()
print("ready", flush=True)
import os, time
parent = os.getppid()
while os.getppid() == parent: time.sleep(0.2)
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script, &port.to_string(), &out.display().to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    Some((Sink(child), port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_up_is_mailed_through_smtp() {
    let out = std::env::temp_dir().join(format!("latch-smtp-{}", uuid::Uuid::new_v4().simple()));
    let Some((sink, port)) = smtp_sink(&out) else {
        return;
    };
    let s = server_with(
        &format!(
            "\n[[notifications]]\nname = \"mail\"\nkind = \"email\"\ngroups = [\"prod-approvers\"]\n\
             smtp_host = \"127.0.0.1\"\nsmtp_port = {port}\ntls = \"none\"\n\
             from = \"latch@example.test\"\nto = [\"approvers@example.test\"]\n"
        ),
        3,
    )
    .await;
    let agent = s.agent("ntf-5").await;
    let (p, _) = step_up(&s, &agent).await;
    let rid = p.body["request"]["id"].as_str().unwrap();
    let mut mail = String::new();
    for _ in 0..200 {
        mail = std::fs::read_to_string(&out).unwrap_or_default();
        if mail.contains("\n.\n") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    drop(sink);
    let _ = std::fs::remove_file(&out);
    assert!(mail.contains("RCPT approvers@example.test"), "{mail}");
    assert!(
        mail.contains("Subject: [Latch] Approval needed: deploy on deploy-pipeline"),
        "{mail}"
    );
    assert!(
        mail.contains(&format!("{}/console/requests/{rid}", s.base)),
        "{mail}"
    );
    assert!(mail.contains("Message-ID: <ntf_"), "{mail}");
    assert_no_credential(&mail, &[&agent]);
    s.stop().await;
}

#[tokio::test]
async fn every_pending_answer_carries_the_console_url() {
    let s = console_server().await;
    let agent = s.agent("ntf-6").await;
    let (p, _) = step_up(&s, &agent).await;
    let rid = p.body["request"]["id"].as_str().unwrap();
    let tid = p.body["request"]["task_id"].as_str().unwrap();
    let console = format!("{}/console/requests/{rid}", s.base);
    assert_eq!(p.body["console_url"], console.as_str());
    let g = s
        .get(Some(&agent), &format!("/v1/tasks/{tid}/requests/{rid}"))
        .await;
    assert_eq!(g.status, 200);
    assert_eq!(g.body["console_url"], console.as_str());
    assert_eq!(
        g.body["id"], rid,
        "the request's own members stay at the top"
    );
    let c = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{tid}/requests/{rid}/claim"),
            json!({}),
        )
        .await;
    assert_eq!(c.status, 202);
    assert_eq!(c.body["console_url"], console.as_str());
    // A granted answer has none.
    let sandbox = s.open_task(&agent, "sandbox", 3600).await;
    let ok = s
        .request(&agent, &sandbox, "ci-cache", &["read"], Some(60))
        .await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    assert!(ok.body.get("console_url").is_none());
    s.stop().await;
}

/// An MCP client (the official Python SDK) over streamable HTTP that opens a production task
/// and asks for a deploy; with `elicit` "1" or "hold" it declares URL-mode elicitation and
/// records what the server sends. With "hold" it keeps its answer until the tool result has
/// arrived (at most 20 s), as a client whose user ignores the dialog would, and records
/// whether the result came first. Prints one JSON line.
const ELICITING_CLIENT: &str = r#"
import asyncio, json, sys
from mcp import ClientSession
import mcp.types as types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

base, agent, mode = sys.argv[1], sys.argv[2], sys.argv[3]
elicit = mode in ("1", "hold")
seen = []
got_result = asyncio.Event()
answered = asyncio.Event()

async def on_elicit(ctx, params):
    entry = {"mode": getattr(params, "mode", None), "url": getattr(params, "url", None),
             "elicitation_id": getattr(params, "elicitation_id", None),
             "message": params.message}
    seen.append(entry)
    if mode == "hold":
        try:
            await asyncio.wait_for(got_result.wait(), 20)
        except asyncio.TimeoutError:
            pass
        entry["answered_after_result"] = got_result.is_set()
    answered.set()
    return types.ElicitResult(action="accept")

async def main():
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {agent}"})
    async with http:
        async with streamable_http_client(f"{base}/mcp", http_client=http) as streams:
            kw = {"elicitation_callback": on_elicit} if elicit else {}
            async with ClientSession(streams[0], streams[1], **kw) as session:
                init = await session.initialize()
                t = await session.call_tool("open_task", {"purpose": "deploy", "environment": "production"})
                task = t.structured_content["id"]
                r = await session.call_tool("request_access", {"task_id": task,
                    "resource": "deploy-pipeline", "actions": ["deploy"], "justification": "ship it"})
                got_result.set()
                if elicit:
                    await asyncio.wait_for(answered.wait(), 25)
                print(json.dumps({"protocol": init.protocol_version, "elicited": seen,
                                  "result": r.structured_content,
                                  "text": " ".join(c.text for c in r.content if getattr(c, "text", None))}))

asyncio.run(main())
"#;

async fn eliciting_client(s: &TestServer, agent: &str, mode: &str) -> Value {
    let out = tokio::process::Command::new("python3")
        .args(["-c", ELICITING_CLIENT, &s.base, agent, mode])
        .output()
        .await
        .expect("python3");
    assert!(
        out.status.success(),
        "the MCP Python SDK client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_offers_the_console_url_as_a_url_elicitation_when_the_client_supports_it() {
    if !tool_available("python3", &["-c", "import mcp"]) {
        return;
    }
    let s = console_server().await;
    let agent = s.agent("ntf-7").await;
    let with = eliciting_client(&s, &agent, "1").await;
    let rid = with["result"]["request_id"].as_str().unwrap();
    let console = format!("{}/console/requests/{rid}", s.base);
    assert_eq!(with["result"]["status"], "pending", "{with}");
    assert_eq!(with["result"]["console_url"], console.as_str(), "{with}");
    assert!(with["text"].as_str().unwrap().contains(&console), "{with}");
    let e = &with["elicited"];
    assert_eq!(e.as_array().map(Vec::len), Some(1), "{with}");
    assert_eq!(e[0]["mode"], "url", "{with}");
    assert_eq!(e[0]["url"], console.as_str(), "{with}");
    assert_eq!(e[0]["elicitation_id"], rid, "{with}");
    // A client without the capability gets no elicitation, and the URL in the result.
    let without = eliciting_client(&s, &agent, "0").await;
    assert_eq!(without["elicited"], json!([]), "{without}");
    assert!(
        without["result"]["console_url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}/console/requests/req_", s.base))
    );
    // A client whose user never answers the dialog still gets the pending result at once:
    // the tool call does not wait on the elicitation.
    let held = eliciting_client(&s, &agent, "hold").await;
    assert_eq!(held["result"]["status"], "pending", "{held}");
    assert_eq!(held["elicited"][0]["answered_after_result"], true, "{held}");
    s.stop().await;
}

/// `latch exec --wait-approval` with stderr not a terminal: the console URL once, then a
/// status line only when it changes — not one line per poll (it polls every 2 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_prints_the_console_url_once_and_no_line_per_poll() {
    use std::process::Stdio;
    let s = console_server().await;
    let agent = s.agent("ntf-8").await;
    let dir = std::env::temp_dir().join(format!("latch-exec-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_latch"))
        .env("LATCH_SERVER", &s.base)
        .env("LATCH_TOKEN", &agent)
        .current_dir(&dir)
        .args([
            "exec",
            "--task-purpose",
            "deploy",
            "--environment",
            "production",
            "--request",
            "deploy-pipeline:deploy",
            "--ttl",
            "10m",
            "--wait-approval",
            "60s",
            "--",
            "true",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let bob = s.human("bob", &["prod-approvers"]).await;
    let mut pending = Value::Null;
    for _ in 0..200 {
        let p = s.get(Some(&bob), "/v1/approvals/pending").await;
        if let Some(r) = p.body.as_array().and_then(|a| a.first()) {
            pending = r.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rid = pending["request"]["id"]
        .as_str()
        .expect("the request reached the approver");
    // Let `latch exec` poll a few times (every 2 s) before approving.
    tokio::time::sleep(Duration::from_millis(5_000)).await;
    let a = s
        .post(
            Some(&bob),
            &format!("/v1/approvals/{rid}/approve"),
            json!({"digest": pending["request"]["digest"], "reason": "ok"}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("latch exec finishes after the approval")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let url = format!("{}/console/requests/{rid}", s.base);
    assert_eq!(stderr.matches(url.as_str()).count(), 1, "{stderr}");
    assert_eq!(
        stderr.matches("waiting for approval of").count(),
        1,
        "one status line while nothing changes: {stderr}"
    );
    assert!(
        !stderr.contains('\r'),
        "no carriage returns off a terminal: {stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    s.stop().await;
}
