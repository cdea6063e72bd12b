//! The approval lifecycle is exact (issue 15, item 3): a request whose task ended (completed,
//! cancelled, expired) or that itself expired leaves every pending list and can no longer be
//! approved, denied or claimed; the CLI prints claim text escaped; a denial says step-up only
//! when an approval could allow the request.

use latch_testkit::TestServer;
use serde_json::{Value, json};

fn latch(s: &TestServer, token: &str) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_latch"));
    c.env("LATCH_SERVER", &s.base).env("LATCH_TOKEN", token);
    c
}

async fn pending_deploy(s: &TestServer, agent: &str) -> (String, String, String) {
    let task = s.open_task(agent, "production", 3600).await;
    let p = s
        .request(agent, &task, "deploy-pipeline", &["deploy"], Some(600))
        .await;
    assert_eq!(p.status, 202, "{}", p.body);
    (
        task,
        p.body["request"]["id"].as_str().unwrap().into(),
        p.body["request"]["digest"].as_str().unwrap().into(),
    )
}

async fn pending_ids(s: &TestServer, human: &str) -> Vec<String> {
    let p = s.get(Some(human), "/v1/approvals/pending").await;
    assert_eq!(p.status, 200, "{}", p.body);
    p.body
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["request"]["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn vote(s: &TestServer, who: &str, rid: &str, digest: &str, verb: &str) -> (u16, Value) {
    let r = s
        .post(
            Some(who),
            &format!("/v1/approvals/{rid}/{verb}"),
            json!({"digest": digest, "reason": "r"}),
        )
        .await;
    (r.status, r.body)
}

/// Ending a task (completed, cancelled, or expired by the reaper) closes its pending and
/// approved requests in the same batch: they leave the approver's list, votes answer 409
/// `task_ended`, claims `task_not_open`, and each closure is audited.
#[tokio::test]
async fn requests_close_with_their_task() {
    let s = TestServer::start().await;
    let agent = s.agent("lc1").await;
    let bob = s.human("bob", &["prod-approvers"]).await;
    for end in ["complete", "cancel", "expire"] {
        let (task, rid, digest) = pending_deploy(&s, &agent).await;
        // A second request of the same task, approved but not claimed yet.
        let (_, approved, d2) = {
            let p = s
                .request(&agent, &task, "deploy-pipeline", &["deploy"], Some(300))
                .await;
            let id = p.body["request"]["id"].as_str().unwrap().to_owned();
            let d = p.body["request"]["digest"].as_str().unwrap().to_owned();
            (task.clone(), id, d)
        };
        let (st, b) = vote(&s, &bob, &approved, &d2, "approve").await;
        assert_eq!((st, b["state"].as_str()), (200, Some("approved")), "{b}");
        assert!(pending_ids(&s, &bob).await.contains(&rid));
        match end {
            "expire" => {
                s.clock.advance(3601);
                // Before the reaper runs, the request is already out of the list and refused.
                assert!(!pending_ids(&s, &bob).await.contains(&rid), "{end}");
                let (st, b) = vote(&s, &bob, &rid, &digest, "approve").await;
                assert_eq!((st, b["error"]["code"].as_str()), (409, Some("task_ended")));
                s.broker().reap().await.unwrap();
            }
            verb => {
                let r = s
                    .post(Some(&agent), &format!("/v1/tasks/{task}/{verb}"), json!({}))
                    .await;
                assert_eq!(r.status, 200, "{}", r.body);
            }
        }
        assert!(!pending_ids(&s, &bob).await.contains(&rid), "{end}");
        for verb in ["approve", "deny"] {
            let (st, b) = vote(&s, &bob, &rid, &digest, verb).await;
            assert_eq!(
                (st, b["error"]["code"].as_str()),
                (409, Some("task_ended")),
                "{end} {verb}: {b}"
            );
            assert!(
                b["error"]["message"].as_str().unwrap().contains("ended"),
                "{b}"
            );
        }
        for id in [&rid, &approved] {
            let r = s
                .get(Some(&agent), &format!("/v1/tasks/{task}/requests/{id}"))
                .await;
            assert_eq!(r.body["state"], "cancelled", "{end}: {}", r.body);
        }
        let c = s
            .post(
                Some(&agent),
                &format!("/v1/tasks/{task}/requests/{approved}/claim"),
                json!({}),
            )
            .await;
        assert_eq!(
            (c.status, c.code()),
            (409, Some("task_not_open")),
            "{}",
            c.body
        );
        let ev = s.audit(&format!("task_id={task}")).await;
        let closed: Vec<&Value> = ev
            .iter()
            .filter(|e| e["kind"] == "request.cancelled")
            .collect();
        assert_eq!(closed.len(), 2, "{end}: {ev:?}");
        if end == "expire" {
            s.clock.advance(-3601);
        }
    }
    s.stop().await;
}

/// A request that itself expired leaves the list at once and answers `request_expired`.
#[tokio::test]
async fn an_expired_request_leaves_the_list() {
    let s = TestServer::start().await;
    let agent = s.agent("lc2").await;
    let bob = s.human("bob", &["prod-approvers"]).await;
    let (_task, rid, digest) = pending_deploy(&s, &agent).await;
    assert!(pending_ids(&s, &bob).await.contains(&rid));
    s.clock.advance(16 * 60);
    assert!(!pending_ids(&s, &bob).await.contains(&rid));
    let (st, b) = vote(&s, &bob, &rid, &digest, "approve").await;
    assert_eq!(
        (st, b["error"]["code"].as_str()),
        (409, Some("request_expired"))
    );
    s.stop().await;
}

/// The report's reproduction: `latch exec` is refused pending approval and cancels its task;
/// the request is gone from `latch pending`, and `latch approve … --digest …` fails with
/// `task_ended` instead of answering "is now approved".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latch_exec_cancelled_task_cannot_be_approved_from_the_cli() {
    let s = TestServer::start().await;
    let agent = s.agent("lc3").await;
    let bob = s.human("bob", &["prod-approvers"]).await;
    let out = tokio::task::block_in_place(|| {
        latch(&s, &agent)
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
                "--",
                "true",
            ])
            .output()
            .unwrap()
    });
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    let rid = stderr
        .split("(request ")
        .nth(1)
        .and_then(|t| t.split([',', ')']).next())
        .unwrap_or_else(|| panic!("no request id in {stderr}"))
        .to_owned();
    let task = stderr
        .split("task ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .unwrap_or_else(|| panic!("no task id in {stderr}"))
        .to_owned();
    // The digest of what was asked, as the agent can read it: an approver who had it from
    // earlier still cannot approve now.
    let r = s
        .get(Some(&agent), &format!("/v1/tasks/{task}/requests/{rid}"))
        .await;
    let digest = r.body["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no digest in {}", r.body))
        .to_owned();
    let pending = tokio::task::block_in_place(|| latch(&s, &bob).arg("pending").output().unwrap());
    assert!(pending.status.success());
    let text = String::from_utf8_lossy(&pending.stdout);
    assert!(!text.contains(&rid), "{text}");
    let approve = tokio::task::block_in_place(|| {
        latch(&s, &bob)
            .args(["approve", &rid, "--digest", &digest, "--reason", "ok"])
            .output()
            .unwrap()
    });
    let err = String::from_utf8_lossy(&approve.stderr);
    assert_eq!(approve.status.code(), Some(1), "{err}");
    assert!(err.contains("task_ended (409)"), "{err}");
    assert!(
        !String::from_utf8_lossy(&approve.stdout).contains("is now approved"),
        "{err}"
    );
    // Without --digest (the README's way): the same stable code, not a generic sentence.
    let approve = tokio::task::block_in_place(|| {
        latch(&s, &bob)
            .args(["approve", &rid, "--reason", "ok", "--yes"])
            .output()
            .unwrap()
    });
    let err = String::from_utf8_lossy(&approve.stderr);
    assert_eq!(approve.status.code(), Some(1), "{err}");
    assert!(err.contains("task_ended (409)"), "{err}");
    s.stop().await;
}

/// A production deploy from a feature branch: no approval could allow it (no policy permits
/// it), so the denial names that, not the step-up guard.
#[tokio::test]
async fn a_deny_says_step_up_only_when_an_approval_could_allow() {
    let s = TestServer::start().await;
    let feature = s
        .dev_token(json!({"kind": "workload", "repository": "acme/payments-api",
            "git_ref": "refs/heads/feature-x", "actor": "alice", "run_id": "lc4", "ttl_secs": 3600}))
        .await;
    let task = s.open_task(&feature, "production", 3600).await;
    let r = s
        .request(&feature, &task, "deploy-pipeline", &["deploy"], Some(600))
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.code(), Some("policy_denied"), "{}", r.body);
    let d = &r.body["request"]["decision"];
    let reasons = d["reasons"].to_string();
    assert!(!reasons.contains("needs approval"), "{reasons}");
    assert!(reasons.contains("no policy permits"), "{reasons}");
    assert_eq!(d["policy_ids"], json!([]), "{d}");
    // From main the same ask still goes to step-up.
    let agent = s.agent("lc4b").await;
    let (_t, _rid, _d) = pending_deploy(&s, &agent).await;
    s.stop().await;
}

/// What `latch` prints is escaped, whatever the server sends: a branch, purpose, reason or
/// error message carrying ESC, CR, LF, U+202E or U+200B reaches the terminal as visible escapes
/// in `latch pending`, `latch task list`, `latch lease list`, `latch admin leases`, an access
/// answer and an error line (human output), and as `\uXXXX` escapes with `--json`. The broker
/// refuses such claims at authentication; a stub stands in for a broker that did not (an older
/// version, a proxy, a compromised server), so the CLI's own rule is what is tested.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_escapes_hostile_text_from_the_server() {
    use axum::routing::{get, post};
    const HOSTILE: &str = "feat\u{1b}[31m\r\nneeds: []\u{202E}x\u{200B}";
    let task = json!({"id": "task_1", "state": "open", "environment": "production",
        "repository": HOSTILE, "branch": HOSTILE, "purpose": HOSTILE, "on_behalf_of": HOSTILE,
        "expires_at_unix_secs": 1, "owner": {"id": HOSTILE}});
    let request = json!({"id": "req_1", "actions": [HOSTILE], "resource_id": HOSTILE,
        "ttl_secs": 60, "justification": HOSTILE, "digest": HOSTILE, "state": "pending",
        "decision": {"decision": "deny", "code": "policy_denied", "policy_ids": [HOSTILE],
            "reasons": [HOSTILE], "groups": [HOSTILE]}});
    let lease = json!({"id": "lease_1", "state": "active", "resource_id": HOSTILE,
        "actions": [HOSTILE], "task_id": "task_1", "expires_at_unix_secs": 1, "renewals": 0});
    let pending = json!([{"request": request, "task": task, "approvals": []}]);
    let denied = json!({"status": "denied", "request": request});
    let leases = json!({"items": [{"lease": lease, "principal_id": HOSTILE, "repository": HOSTILE,
        "branch": HOSTILE, "environment": HOSTILE}], "next": HOSTILE});
    let error = json!({"error": {"code": HOSTILE, "message": HOSTILE, "request_id": "r"}});
    let app = axum::Router::new()
        .route(
            "/v1/approvals/pending",
            get(move || async move { axum::Json(pending) }),
        )
        .route(
            "/v1/tasks",
            get({
                let t = task.clone();
                move || async move { axum::Json(json!([t])) }
            }),
        )
        .route(
            "/v1/tasks/task_1/leases",
            get({
                let l = lease.clone();
                move || async move { axum::Json(json!([l])) }
            }),
        )
        .route(
            "/v1/admin/leases",
            get(move || async move { axum::Json(leases) }),
        )
        .route(
            "/v1/tasks/task_1/requests",
            post(move || async move { (axum::http::StatusCode::FORBIDDEN, axum::Json(denied)) }),
        )
        .route(
            "/v1/approvals/req_1/approve",
            post(move || async move { (axum::http::StatusCode::CONFLICT, axum::Json(error)) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let cmds: Vec<Vec<&str>> = vec![
        vec!["pending"],
        vec!["task", "list"],
        vec!["lease", "list", "task_1"],
        vec!["admin", "leases"],
        vec!["request", "task_1", "--resource", "r", "--action", "a"],
        vec!["approve", "req_1", "--digest", "d", "--reason", "r"],
    ];
    let outputs = tokio::task::block_in_place(|| {
        let mut v = Vec::new();
        for json_out in [false, true] {
            for args in &cmds {
                let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_latch"));
                c.args(args)
                    .env("LATCH_SERVER", &base)
                    .env("LATCH_TOKEN", "t");
                if json_out {
                    c.arg("--json");
                }
                v.push((args.join(" "), json_out, c.output().unwrap()));
            }
        }
        v
    });
    for (cmd, json_out, o) in &outputs {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        for bad in ['\u{1b}', '\r', '\u{202E}', '\u{200B}'] {
            assert!(
                !text.contains(bad),
                "`latch {cmd}` (json {json_out}) printed {bad:?} raw: {text:?}"
            );
        }
        assert!(
            !text.contains("\nneeds: []"),
            "`latch {cmd}`: a forged line: {text:?}"
        );
        let escaped = if *json_out {
            "feat\\u001b[31m\\r\\nneeds: []\\u202ex\\u200b"
        } else {
            "feat\\u{001b}[31m\\u{000d}\\u{000a}needs: []\\u{202e}x\\u{200b}"
        };
        assert!(
            text.contains(escaped),
            "`latch {cmd}` (json {json_out}) shows it escaped: {text:?}"
        );
    }
    server.abort();
}
