//! The server restarts without losing a task, lease, pending approval or audit event, and the
//! reaper revokes what expired while it was down.

use std::io::BufRead;
use std::process::{Command, Stdio};

use latch_testkit::TestServer;
use serde_json::json;

#[tokio::test]
async fn crash_and_restart_keeps_state_and_reaps_expired_leases() {
    let s = TestServer::start().await;
    let agent = s.agent("1").await;
    let t = s.open_task(&agent, "production", 3600).await;
    let g = s
        .request(&agent, &t, "payments-db", &["read"], Some(300))
        .await;
    let tok = g.body["credential"]["value"].as_str().unwrap().to_owned();
    let p = s
        .request(&agent, &t, "deploy-pipeline", &["deploy"], Some(600))
        .await;
    let rid = p.body["request"]["id"].as_str().unwrap().to_owned();
    let digest = p.body["request"]["digest"].as_str().unwrap().to_owned();
    let events_before = s.audit("").await.len();

    let s = s.crash_and_restart().await;
    // The introspection index is loaded at start-up (before any introspection could fill it).
    assert_eq!(
        s.metric("latch_introspection_index_entries").await,
        Some(1.0),
        "the one live credential is in the index after the restart"
    );
    assert_eq!(
        s.get(Some(&agent), &format!("/v1/tasks/{t}")).await.body["state"],
        "open"
    );
    assert_eq!(
        s.introspect(&tok).await["active"],
        true,
        "the live lease survived (introspection index rebuilt)"
    );
    let bob = s.human("bob", &["prod-approvers"]).await;
    let pending = s.get(Some(&bob), "/v1/approvals/pending").await.body;
    assert!(
        pending
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["request"]["id"] == rid.as_str()),
        "pending approval survived"
    );
    assert!(
        s.audit("").await.len() >= events_before,
        "no audit event lost"
    );

    // The agent vanishes; time passes while the broker is down.
    s.clock.advance(301);
    let s = s.crash_and_restart().await; // startup runs one reaper pass
    let leases = s
        .get(Some(&agent), &format!("/v1/tasks/{t}/leases"))
        .await
        .body;
    assert_eq!(leases[0]["state"], "revoked");
    assert_eq!(leases[0]["revoke_reason"], "expired");
    assert_eq!(s.introspect(&tok).await["active"], false);
    // The pending request can still be approved and claimed.
    let a = s
        .post(
            Some(&bob),
            &format!("/v1/approvals/{rid}/approve"),
            json!({"digest": digest, "reason": "after the restart"}),
        )
        .await;
    assert_eq!(a.body["state"], "approved", "{}", a.body);
    s.stop().await;
}

/// The real binary, killed with SIGKILL mid-task, comes back with the task intact.
#[tokio::test]
async fn killed_process_restarts_without_losing_the_task() {
    let dir = std::env::temp_dir().join(format!("latch-proc-{}", uuid::Uuid::new_v4().simple()));
    let config = latch_server::examples::write_example(&dir, "127.0.0.1:0").unwrap();
    let spawn = || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_latch"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("LATCH_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn latch serve");
        let out = child.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(out).lines();
        let base = loop {
            let line = lines.next().expect("server printed its address").unwrap();
            if line.contains("latch is serving") {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                break v["fields"]["base_url"].as_str().unwrap().to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        (child, base)
    };
    let (mut child, base) = spawn();
    let http = reqwest::Client::new();
    let tok: serde_json::Value = http
        .post(format!("{base}/v1/dev/tokens"))
        .json(&json!({"kind": "workload", "run_id": "77", "git_ref": "refs/heads/main"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tok = tok["token"].as_str().unwrap().to_owned();
    let task: serde_json::Value = http
        .post(format!("{base}/v1/tasks"))
        .bearer_auth(&tok)
        .json(&json!({"purpose": "survive", "environment": "sandbox"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = task["id"].as_str().unwrap().to_owned();
    let grant: serde_json::Value = http
        .post(format!("{base}/v1/tasks/{id}/requests"))
        .bearer_auth(&tok)
        .json(&json!({"resource": "ci-cache", "actions": ["read"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let lease = grant["lease"]["id"].as_str().unwrap().to_owned();
    child.kill().unwrap(); // SIGKILL: no graceful shutdown
    child.wait().unwrap();

    let (mut child, base) = spawn();
    let got: serde_json::Value = http
        .get(format!("{base}/v1/tasks/{id}"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["state"], "open", "{got}");
    let leases: serde_json::Value = http
        .get(format!("{base}/v1/tasks/{id}/leases"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(leases[0]["id"], lease.as_str());
    assert_eq!(leases[0]["state"], "active");
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
