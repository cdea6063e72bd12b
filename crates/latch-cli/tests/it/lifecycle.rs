//! The approval lifecycle is exact (issue 15, item 3): a request whose task ended (completed,
//! cancelled, expired) or that itself expired leaves every pending list and can no longer be
//! approved, denied or claimed; the CLI prints claim text escaped; a denial says step-up only
//! when an approval could allow the request.

use latch_core::Clock;
use latch_testkit::{TestIssuer, TestOptions, TestServer};
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
        (410, Some("request_expired"))
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
        .and_then(|t| t.split(',').next())
        .unwrap_or_else(|| panic!("no request id in {stderr}"))
        .to_owned();
    let digest = stderr
        .split("digest ")
        .nth(1)
        .and_then(|t| t.split(')').next())
        .unwrap_or_else(|| panic!("no digest in {stderr}"))
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

/// Claim text an approver reads is escaped on every CLI print: a branch carrying ESC, CR,
/// LF, U+202E and U+200B reaches `latch pending` and `latch task list` as visible escapes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_escapes_hostile_claim_text() {
    // Secret reads from any branch, so the request reaches `security` for step-up.
    let s = TestServer::start_with(TestOptions {
        extra_policies: vec![(
            "30-any-branch.cedar".into(),
            "@id(\"any-branch-reads-secrets\")\npermit (principal, action == Latch::Action::\"read\", resource)\n\
             when { resource.sensitivity == \"secret\" };\n"
                .into(),
        )],
        ..TestOptions::default()
    })
    .await;
    let hostile = "feat\u{1b}[31m\r\nneeds: []\u{202E}x\u{200B}";
    let mut claims = TestIssuer::github_claims(s.clock.now_unix_secs(), "lc5");
    claims["ref"] = json!(format!("refs/heads/{hostile}"));
    let agent = s.issuer.sign(&claims);
    let task = s.open_task(&agent, "production", 3600).await;
    let t = s.get(Some(&agent), &format!("/v1/tasks/{task}")).await;
    assert!(
        t.body["branch"].as_str().unwrap().contains('\u{202E}'),
        "the claim is kept as proven: {}",
        t.body
    );
    let r = s
        .request(&agent, &task, "vault-prod", &["read"], Some(300))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let rid = r.body["request"]["id"].as_str().unwrap().to_owned();
    let sec = s.human("sam", &["security"]).await;
    let outputs = tokio::task::block_in_place(|| {
        vec![
            latch(&s, &sec).arg("pending").output().unwrap(),
            latch(&s, &agent).args(["task", "list"]).output().unwrap(),
            latch(&s, &agent)
                .args(["task", "show", &task])
                .output()
                .unwrap(),
            latch(&s, &sec)
                .args(["pending", "--json"])
                .output()
                .unwrap(),
            latch(&s, &agent)
                .args(["task", "list", "--json"])
                .output()
                .unwrap(),
        ]
    });
    let mut saw_branch = 0;
    for o in &outputs {
        assert!(o.status.success(), "{o:?}");
        for text in [&o.stdout, &o.stderr] {
            let text = String::from_utf8_lossy(text);
            for bad in ['\u{1b}', '\r', '\u{202E}', '\u{200B}'] {
                assert!(!text.contains(bad), "{bad:?} printed raw: {text:?}");
            }
            assert!(!text.contains("\nneeds: []"), "a forged line: {text:?}");
            if text.contains("feat\\u{001b}[31m\\u{000d}\\u{000a}needs: []\\u{202e}x\\u{200b}")
                || text.contains("feat\\u001b[31m\\r\\nneeds: []\\u202ex\\u200b")
            {
                saw_branch += 1;
            }
        }
    }
    assert_eq!(
        saw_branch,
        outputs.len(),
        "the branch is shown, escaped, by each"
    );
    let p = String::from_utf8_lossy(&outputs[0].stdout).into_owned();
    assert!(p.contains(&rid), "{p}");
    s.stop().await;
}
