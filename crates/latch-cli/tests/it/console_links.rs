//! Console links only when the console exists (issue 15): with `[console] enabled` every
//! pending answer (REST, MCP `request_access`, `/oauth/token`, `latch request`) and every
//! notification links to the request's console page; without it none does (the link would be
//! a `404`), and the next step named is `latch approve`.

use latch_testkit::{TestOptions, TestServer};
use serde_json::{Value, json};

use crate::mcp::{mcp_post, mcp_session};
use crate::notify::{
    Behaviour, CONSOLE, Receiver, notify_config, secret_file, step_up, webhook_channel,
};
use crate::oauth::token_request;

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// `/oauth/token` asking for a production deploy (step-up): the `authorization_pending` body.
async fn exchange_pending(s: &TestServer, agent: &str) -> Value {
    let details = json!([{"type": "latch_access", "resource": "deploy-pipeline",
        "actions": ["deploy"], "environment": "production", "purpose": "ship"}])
    .to_string();
    let form = [
        ("grant_type", EXCHANGE),
        ("subject_token", agent),
        ("subject_token_type", JWT),
        ("authorization_details", details.as_str()),
    ];
    let (r, _) = token_request(s, &form, None).await;
    assert_eq!(r.body["error"], "authorization_pending", "{}", r.body);
    r.body
}

/// MCP over HTTP: `open_task` (production) then `request_access` to deploy; the tool's
/// structured result.
async fn mcp_pending(s: &TestServer, agent: &str) -> Value {
    let sid = mcp_session(s, agent).await;
    let call = |id: u64, name: &str, args: Value| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": name, "arguments": args}})
    };
    let open = call(
        2,
        "open_task",
        json!({"purpose": "deploy", "environment": "production"}),
    );
    let (st, _, b, _) = mcp_post(s, agent, Some(&sid), None, open).await;
    assert_eq!(st, 200, "{b}");
    let task = b["result"]["structuredContent"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{b}"))
        .to_owned();
    let ask = call(
        3,
        "request_access",
        json!({"task_id": task, "resource": "deploy-pipeline", "actions": ["deploy"],
               "justification": "ship it"}),
    );
    let (st, _, b, _) = mcp_post(s, agent, Some(&sid), None, ask).await;
    assert_eq!(st, 200, "{b}");
    let r = b["result"]["structuredContent"].clone();
    assert_eq!(r["status"], "pending", "{b}");
    r
}

/// `latch request` for a production deploy; its standard output (exit 4: pending).
async fn cli_pending(s: &TestServer, agent: &str) -> String {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_latch"))
            .args(args)
            .env("LATCH_SERVER", &s.base)
            .env("LATCH_TOKEN", agent)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    tokio::task::block_in_place(|| {
        let open = [
            "task",
            "open",
            "--purpose",
            "deploy",
            "--environment",
            "production",
            "--id-only",
        ];
        let (code, task) = run(&open);
        assert_eq!(code, Some(0), "{task}");
        let task = task.trim().to_owned();
        let ask = [
            "request",
            &task,
            "--resource",
            "deploy-pipeline",
            "--action",
            "deploy",
        ];
        let (code, out) = run(&ask);
        assert_eq!(code, Some(4), "{out}");
        out
    })
}

/// A Slack channel (for `prod-approvers`) posting to `url`.
fn slack_channel(url: &str) -> String {
    format!(
        "\n[[notifications]]\nname = \"slack\"\nkind = \"slack\"\ngroups = [\"prod-approvers\"]\n\
         url_file = \"{}\"\n",
        secret_file(url).display()
    )
}

/// No `[console]`: no answer, tool result or notification carries a console link; each names
/// `latch approve` instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_console_nothing_links_to_it() {
    let (hook, hook_url) = Receiver::start(Behaviour::FailFirst(0)).await;
    let (slack, slack_url) = Receiver::start(Behaviour::FailFirst(0)).await;
    let channels = format!(
        "{}{}",
        webhook_channel("hook", &hook_url, "[\"*\"]"),
        slack_channel(&slack_url)
    );
    let s = TestServer::start_with(TestOptions {
        extra_config: notify_config(&channels, 3, false),
        ..TestOptions::default()
    })
    .await;
    let agent = s.agent("links-off").await;
    // The console itself is not there.
    let r = s
        .http
        .get(format!("{}/console/", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // REST: the pending answer, the request read back, a claim that still waits.
    let (p, _) = step_up(&s, &agent).await;
    assert!(p.body.get("console_url").is_none(), "{}", p.body);
    let rid = p.body["request"]["id"].as_str().unwrap().to_owned();
    let tid = p.body["request"]["task_id"].as_str().unwrap().to_owned();
    let g = s
        .get(Some(&agent), &format!("/v1/tasks/{tid}/requests/{rid}"))
        .await;
    assert_eq!(g.status, 200);
    assert!(g.body.get("console_url").is_none(), "{}", g.body);
    let c = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{tid}/requests/{rid}/claim"),
            json!({}),
        )
        .await;
    assert_eq!(c.status, 202);
    assert!(c.body.get("console_url").is_none(), "{}", c.body);

    // `/oauth/token`.
    let o = exchange_pending(&s, &agent).await;
    assert!(o.get("latch_console_url").is_none(), "{o}");

    // MCP: no URL, and the next step is the approver's command.
    let m = mcp_pending(&s, &agent).await;
    assert!(m.get("console_url").is_none(), "{m}");
    let next = m["next_step"].as_str().unwrap();
    assert!(
        next.contains(&format!(
            "latch approve {}",
            m["request_id"].as_str().unwrap()
        )),
        "{m}"
    );
    assert!(!next.contains("console"), "{m}");

    // `latch request`: only the `latch approve` next step.
    let out = cli_pending(&s, &agent).await;
    assert!(!out.contains("console"), "{out}");
    assert!(
        out.contains("next:     an approver runs `latch approve req_"),
        "{out}"
    );

    // Notifications (one per pending request above, in any order): the webhook's notices have
    // no URL; Slack's have no button, and the command.
    let got = hook.wait_for(4).await;
    let notices: Vec<Value> = got
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["data"].clone())
        .collect();
    assert!(
        notices.iter().any(|n| n["request_id"] == rid.as_str()),
        "{notices:?}"
    );
    for n in &notices {
        assert!(n.get("console_url").is_none(), "{n}");
    }
    for r in slack.wait_for(4).await {
        let m: Value = serde_json::from_slice(&r.body).unwrap();
        let text = m.to_string();
        assert!(!text.contains("/console/"), "{text}");
        assert!(
            !m["blocks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|b| b["type"] == "actions"),
            "{text}"
        );
        assert!(text.contains("latch approve req_"), "{text}");
    }
    s.stop().await;
}

/// `[console] enabled`: `/oauth/token`, MCP and `latch request` link to the request's page
/// (REST and the notifications: `notify.rs`), and the page is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_console_every_pending_answer_links_to_it() {
    let s = TestServer::start_with(TestOptions {
        extra_config: CONSOLE.into(),
        ..TestOptions::default()
    })
    .await;
    let agent = s.agent("links-on").await;
    let page = |rid: &str| format!("{}/console/requests/{rid}", s.base);

    let o = exchange_pending(&s, &agent).await;
    // `auth_req_id` is `{task id}.{request id}`.
    let (_, rid) = o["auth_req_id"].as_str().unwrap().rsplit_once('.').unwrap();
    assert_eq!(o["latch_console_url"], page(rid).as_str(), "{o}");

    let m = mcp_pending(&s, &agent).await;
    let rid = m["request_id"].as_str().unwrap();
    assert_eq!(m["console_url"], page(rid).as_str(), "{m}");
    assert!(
        m["next_step"].as_str().unwrap().contains("console_url"),
        "{m}"
    );

    let out = cli_pending(&s, &agent).await;
    let rid = out
        .lines()
        .find_map(|l| l.strip_prefix("request:  "))
        .unwrap()
        .trim()
        .to_owned();
    assert!(out.contains(&format!("console:  {}", page(&rid))), "{out}");

    // The link leads somewhere: the console answers (a sign-in redirect, not a 404).
    let r = s.http.get(page(&rid)).send().await.unwrap();
    assert_ne!(r.status(), 404);
    s.stop().await;
}
