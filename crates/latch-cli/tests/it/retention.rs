//! Retention (issue 19, item 4): an ended task past `[retention] ended_tasks` is deleted from
//! the store with its request and lease, the audit trail keeps every record of it plus a
//! `store.pruned` event, and a task that is not over stays. Driven through the broker's use
//! case on the fake clock (the background job only calls it every `interval`).
//!
//! Audit retention (`[retention] audit`): records every audit sink delivered leave the store up
//! to a signed checkpoint older than the retention; what stays verifies with `latch audit
//! verify`, which reports the cut the chain records, and catches any other.

use std::io::BufReader;

use latch_core::audit::verify_export;
use latch_server::audit::JwksCheckpointVerifier;
use latch_testkit::{TestOptions, TestServer};
use serde_json::{Value, json};

#[tokio::test]
async fn ended_tasks_past_retention_leave_the_store_and_stay_in_the_audit_trail() {
    let s = TestServer::start_with(TestOptions {
        extra_config: "\n[retention]\nended_tasks = \"1h\"\ninterval = \"1h\"\n".into(),
        ..Default::default()
    })
    .await;
    let agent = s.agent("retention-1").await;
    let done = s.open_task(&agent, "sandbox", 600).await;
    let open = s.open_task(&agent, "sandbox", 600).await;
    for t in [&done, &open] {
        let g = s.request(&agent, t, "ci-cache", &["read"], None).await;
        assert_eq!(g.status, 201, "{}", g.body);
    }
    let c = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{done}/complete"),
            json!({}),
        )
        .await;
    assert_eq!(c.status, 200, "{}", c.body);
    let recorded = s.audit(&format!("task_id={done}")).await.len();
    assert!(recorded >= 3, "{recorded}");

    // Not yet: the task expires in 10 minutes, and is kept an hour past that.
    let none = s.broker().prune_ended(3600, &[]).await.unwrap();
    assert_eq!(none.tasks, 0);
    s.clock.advance(600 + 3601);
    let pruned = s.broker().prune_ended(3600, &[]).await.unwrap();
    assert_eq!(
        (pruned.tasks, pruned.requests, pruned.leases),
        (1, 1, 1),
        "{pruned:?}"
    );

    let agent = s.agent("retention-1").await; // the first token expired meanwhile
    let gone = s.get(Some(&agent), &format!("/v1/tasks/{done}")).await;
    assert_eq!(gone.status, 404, "{}", gone.body);
    // The open task expired meanwhile but its lease is revoked by the reaper, not by retention:
    // it is still there.
    let kept = s.get(Some(&agent), &format!("/v1/tasks/{open}")).await;
    assert_eq!(kept.status, 200, "{}", kept.body);
    assert!(
        s.audit(&format!("task_id={done}")).await.len() >= recorded,
        "the audit trail keeps the pruned task's records"
    );
    let events = s.audit("kind=store.pruned").await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["detail"]["tasks"], 1);
    assert_eq!(events[0]["detail"]["leases"], 1);
    let verify = s.get(None, "/healthz").await;
    assert_eq!(verify.status, 200);
    s.stop().await;
}

/// `GET /v1/audit/export` (which signs the head first) as an administrator.
async fn export(s: &TestServer) -> String {
    let admin = s.human("auditor", &["latch-admins"]).await;
    let r = s
        .http
        .get(format!("{}/v1/audit/export", s.base))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

fn verify(v: &JwksCheckpointVerifier, text: &str) -> latch_core::audit::VerifyReport {
    verify_export(BufReader::new(text.as_bytes()), v, &[], &Default::default()).unwrap()
}

/// The seq of the last checkpoint line of an export.
fn last_checkpoint(text: &str) -> i64 {
    (text.lines())
        .filter_map(|l| serde_json::from_str::<Value>(l).ok()?["checkpoint"]["seq"].as_i64())
        .next_back()
        .expect("an export ends with a checkpoint")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_records_every_sink_delivered_leave_the_store_and_what_stays_verifies() {
    let s = TestServer::start_with(TestOptions {
        // Audit retention is at least the longest task.
        replace: vec![("max_ttl = \"8h\"".into(), "max_ttl = \"1h\"".into())],
        extra_config: "\n[retention]\nended_tasks = \"1h\"\ninterval = \"1h\"\naudit = \"1h\"\n\
            [audit]\nsink_poll_interval = \"20ms\"\n\
            [[audit.sinks]]\nkind = \"file\"\nname = \"archive\"\npath = \"archive.jsonl\"\n"
            .into(),
        ..Default::default()
    })
    .await;
    let agent = s.agent("retention-audit").await;
    let t = s.open_task(&agent, "sandbox", 600).await;
    for _ in 0..3 {
        let g = s.request(&agent, &t, "ci-cache", &["read"], None).await;
        assert_eq!(g.status, 201, "{}", g.body);
    }
    let cut = last_checkpoint(&export(&s).await);
    assert!(cut > 5, "{cut}");
    let broker = s.broker();
    let signer = s.checkpointer().as_ref();
    let archive = ["archive".to_owned()];
    // The checkpoint is not an hour old yet.
    assert_eq!(broker.prune_audit(3600, &archive, signer).await.unwrap(), 0);
    s.clock.advance(3601);
    // The sink job delivers on its own; wait until it passed the checkpoint.
    let mut delivered = 0;
    for _ in 0..500 {
        delivered = broker.store().sink_cursor("archive").await.unwrap();
        if delivered >= cut {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(delivered >= cut, "the sink delivered {delivered} of {cut}");
    // Its stored time made older by someone who can write the database: retention goes by
    // the signed time, and raises an alarm.
    let db = rusqlite::Connection::open(s.dir.join("data/latch.db")).unwrap();
    let aged = "UPDATE audit_checkpoints SET at_unix_secs = at_unix_secs - 7200 WHERE seq = ?1";
    assert_eq!(db.execute(aged, [cut]).unwrap(), 1);
    let refused = broker
        .prune_audit(3600, &archive, signer)
        .await
        .unwrap_err();
    assert!(
        refused.message.contains("signed at another time"),
        "{}",
        refused.message
    );
    let back = "UPDATE audit_checkpoints SET at_unix_secs = at_unix_secs + 7200 WHERE seq = ?1";
    assert_eq!(db.execute(back, [cut]).unwrap(), 1);
    // A reader that has not passed the checkpoint keeps every record; so does no reader.
    let behind = ["archive".to_owned(), "lagging".to_owned()];
    assert_eq!(broker.prune_audit(3600, &behind, signer).await.unwrap(), 0);
    assert_eq!(broker.prune_audit(3600, &[], signer).await.unwrap(), 0);

    // A record below the cut edited in the database: retention refuses (an alarm), and the
    // edit stays for `latch audit verify` to find.
    let edit = "UPDATE audit_events SET body = body || ' ' WHERE seq = 2";
    assert_eq!(db.execute(edit, []).unwrap(), 1);
    let refused = broker
        .prune_audit(3600, &archive, signer)
        .await
        .unwrap_err();
    assert!(
        refused.message.contains("audit chain alarm"),
        "{}",
        refused.message
    );
    assert!(refused.message.contains("seq 2 "), "{}", refused.message);
    let undo = "UPDATE audit_events SET body = rtrim(body) WHERE seq = 2";
    assert_eq!(db.execute(undo, []).unwrap(), 1);

    let pruned = broker.prune_audit(3600, &archive, signer).await.unwrap();
    assert_eq!(pruned, u64::try_from(cut - 1).unwrap());
    assert_eq!(
        broker.prune_audit(3600, &archive, signer).await.unwrap(),
        0,
        "once"
    );
    let events = s.audit("kind=audit.pruned").await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["detail"]["before_seq"], cut);
    assert_eq!(events[0]["detail"]["records"], cut - 1);
    assert_eq!(events[0]["detail"]["cut"]["seq"], cut);

    // What stays verifies as a whole export: from the checkpoint, the cut recorded.
    let jwks = s.get(None, "/.well-known/jwks.json").await.body;
    let v = JwksCheckpointVerifier::from_jwks(&jwks).unwrap();
    let text = export(&s).await;
    let report = verify(&v, &text);
    assert_eq!(report.problem, None);
    assert_eq!(
        (report.first_seq, report.pruned_before),
        (Some(cut), Some(cut))
    );
    // So says `latch audit verify`, offline.
    std::fs::write(s.dir.join("kept.jsonl"), &text).unwrap();
    std::fs::write(s.dir.join("jwks.json"), jwks.to_string()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_latch"))
        .args([
            "audit",
            "verify",
            "--server",
            "http://127.0.0.1:9",
            "--file",
        ])
        .arg(s.dir.join("kept.jsonl"))
        .arg("--jwks")
        .arg(s.dir.join("jwks.json"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!("records before seq {cut} were pruned")),
        "{said}"
    );
    // One more record gone at the start (the cut's own) is caught.
    let mut rest: Vec<&str> = text.lines().collect();
    rest.remove(0);
    assert!(verify(&v, &rest.join("\n")).problem.is_some());
    // So is a prefix deleted by hand to a periodic checkpoint, with a forged `audit.pruned`
    // appended by someone who can write the database: the broker's signature on the cut is
    // missing.
    let later = last_checkpoint(&text);
    let seq_of = |l: &str| {
        let v: Value = serde_json::from_str(l).unwrap();
        v["seq"]
            .as_i64()
            .or(v["checkpoint"]["seq"].as_i64())
            .unwrap()
    };
    let kept: Vec<&str> = text.lines().filter(|l| seq_of(l) >= later).collect();
    let last_record = kept
        .iter()
        .rev()
        .find(|l| l.starts_with("{\"seq\""))
        .unwrap();
    let head: Value = serde_json::from_str(last_record).unwrap();
    let anchor: Value = serde_json::from_str(kept[0]).unwrap();
    let forged_body = json!({"kind": "audit.pruned", "detail": {"before_seq": later,
        "anchor_hash": anchor["hash"]}})
    .to_string();
    let seq = head["seq"].as_i64().unwrap() + 1;
    let prev = head["hash"].as_str().unwrap();
    let hash = latch_core::audit::chain_hash(prev, seq, &forged_body);
    let forged = format!(
        "{{\"seq\":{seq},\"prev_hash\":\"{prev}\",\"hash\":\"{hash}\",\"event\":{forged_body}}}"
    );
    let tampered = format!("{}\n{forged}\n", kept.join("\n"));
    let p = verify(&v, &tampered)
        .problem
        .expect("the forged cut is caught");
    assert_eq!(
        (p.seq, p.kind),
        (1, latch_core::audit::ChainProblemKind::Deleted),
        "{}",
        p.message
    );
    // The archive holds the whole trail from seq 1, and verifies on its own.
    let archived = std::fs::read_to_string(s.dir.join("archive.jsonl")).unwrap();
    let r = verify(&v, &archived);
    assert_eq!((r.problem, r.first_seq), (None, Some(1)));
    assert!(r.last_seq >= Some(cut));
    s.stop().await;
}
