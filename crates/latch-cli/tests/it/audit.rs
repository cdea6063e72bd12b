//! The tamper-evident audit trail: tool-use events and timelines, export and offline
//! verification (one test per kind of tampering), search by credential value, hostile input,
//! sinks, failing closed, and the suite-wide secret scan.

use std::io::BufReader;
use std::process::Command;
use std::sync::{Arc, Mutex};

use latch_core::Clock;
use latch_core::audit::{ChainProblemKind, GENESIS_HASH, VerifyReport, chain_hash, verify_export};
use latch_server::audit::JwksCheckpointVerifier;
use latch_testkit::{TestOptions, TestServer};
use serde_json::{Value, json};

fn latch() -> Command {
    Command::new(env!("CARGO_BIN_EXE_latch"))
}

/// Some realistic activity: two tasks, grants, a tool-use report, a completion.
async fn activity(s: &TestServer) -> (String, String) {
    let agent = s.agent("a1").await;
    let t = s.open_task(&agent, "sandbox", 600).await;
    let r = s
        .request(&agent, &t, "ci-cache", &["read"], Some(300))
        .await;
    assert_eq!(r.status, 201, "{}", r.code().unwrap_or_default());
    let token = r.body["credential"]["value"].as_str().unwrap().to_owned();
    let r = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{t}/events"),
            json!({"tool": "cache.get", "target": "ci-cache", "attributes": {"key": "deps"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let t2 = s.open_task(&agent, "sandbox", 600).await;
    s.request(&agent, &t2, "ci-cache", &["write"], None).await;
    let r = s
        .post(Some(&agent), &format!("/v1/tasks/{t}/complete"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    (t, token)
}

async fn export(s: &TestServer, query: &str) -> String {
    let admin = s.human("auditor", &["latch-admins"]).await;
    let r = s
        .http
        .get(format!("{}/v1/audit/export?{query}", s.base))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    r.text().await.unwrap()
}

async fn verifier(s: &TestServer) -> JwksCheckpointVerifier {
    let jwks = s.get(None, "/.well-known/jwks.json").await.body;
    JwksCheckpointVerifier::from_jwks(&jwks).unwrap()
}

fn verify(v: &JwksCheckpointVerifier, text: &str) -> VerifyReport {
    verify_export(BufReader::new(text.as_bytes()), v, &[], &Default::default()).unwrap()
}

fn assert_problem(r: VerifyReport, kind: ChainProblemKind, seq: i64) {
    let p = r.problem.expect("a problem is found");
    assert_eq!((p.kind, p.seq), (kind, seq), "{}", p.message);
}

/// `latch audit verify --file DIR/F --jwks DIR/jwks.json EXTRA…`, offline (no server).
fn verify_file_offline(dir: &std::path::Path, f: &str, extra: &[&str]) -> std::process::Output {
    latch()
        .args([
            "audit",
            "verify",
            "--server",
            "http://127.0.0.1:9",
            "--file",
        ])
        .arg(dir.join(f))
        .arg("--jwks")
        .arg(dir.join("jwks.json"))
        .args(extra)
        .output()
        .unwrap()
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_owned).collect()
}

fn seq_of(line: &str) -> Option<i64> {
    serde_json::from_str::<Value>(line).ok()?["seq"].as_i64()
}

fn index_of_seq(ls: &[String], seq: i64) -> usize {
    ls.iter().position(|l| seq_of(l) == Some(seq)).unwrap()
}

/// Recomputes the chain of `ls` from scratch (what an attacker with write access would do).
fn recompute(ls: &mut [String]) {
    let mut prev = GENESIS_HASH.to_owned();
    for l in ls.iter_mut() {
        let v: Value = serde_json::from_str(l).unwrap();
        if v.get("checkpoint").is_some() {
            continue;
        }
        let seq = v["seq"].as_i64().unwrap();
        // The event's raw text: everything after `"event":` up to the final `}`.
        let start = l.find("\"event\":").unwrap() + "\"event\":".len();
        let body = &l[start..l.len() - 1];
        let hash = chain_hash(&prev, seq, body);
        *l = format!(
            "{{\"seq\":{seq},\"prev_hash\":\"{prev}\",\"hash\":\"{hash}\",\"event\":{body}}}"
        );
        prev = hash;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_use_reports_build_the_task_timeline_and_are_bounded() {
    let s = TestServer::start().await;
    let agent = s.agent("tl").await;
    let t = s.open_task(&agent, "sandbox", 600).await;
    let r = s.request(&agent, &t, "ci-cache", &["read"], None).await;
    let lease = r.body["lease"]["id"].as_str().unwrap().to_owned();
    let r = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{t}/events"),
            json!({"tool": "psql", "target": "ci-cache", "outcome": "error", "lease_id": lease,
                   "duration_ms": 12, "attributes": {"rows": 3, "query": {"kind": "select"}}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["kind"], "tool.used");
    assert_eq!(r.body["outcome"], "error");
    assert_eq!(r.body["lease_id"], lease.as_str());
    assert!(r.body["seq"].as_i64().unwrap() > 0);

    // Bounds, each with its code.
    let bad = [
        json!({"tool": ""}),
        json!({"tool": "x\ny"}),
        json!({"tool": "a".repeat(129)}),
        json!({"tool": "ok", "outcome": "Not Ok"}),
        json!({"tool": "ok", "attributes": {"big": "x".repeat(5000)}}),
        json!({"tool": "ok", "attributes": {"a": {"b": {"c": {"d": {"e": 1}}}}}}),
        json!({"tool": "ok", "unexpected": true}),
    ];
    for b in bad {
        let r = s
            .post(Some(&agent), &format!("/v1/tasks/{t}/events"), b.clone())
            .await;
        assert_eq!(r.status, 400, "{b}: {}", r.body);
        assert_eq!(r.code(), Some("invalid_request"), "{b}");
    }
    // A lease of another task is refused (422: the task exists, the body names a lease that is
    // not its own); another run's task is not found.
    let t2 = s.open_task(&agent, "sandbox", 600).await;
    let r = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{t2}/events"),
            json!({"tool": "psql", "lease_id": lease}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (422, Some("unknown_lease")),
        "{}",
        r.body
    );
    let other = s.agent("other-run").await;
    let r = s
        .post(
            Some(&other),
            &format!("/v1/tasks/{t}/events"),
            json!({"tool": "psql"}),
        )
        .await;
    assert_eq!(r.code(), Some("task_not_found"));
    assert_eq!(
        s.get(Some(&other), &format!("/v1/tasks/{t}/events"))
            .await
            .code(),
        Some("task_not_found")
    );

    s.post(Some(&agent), &format!("/v1/tasks/{t}/complete"), json!({}))
        .await;
    let tl = s.get(Some(&agent), &format!("/v1/tasks/{t}/events")).await;
    assert_eq!(tl.status, 200);
    let kinds: Vec<&str> = tl
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "task.opened",
            "request.decided",
            "credential.issued",
            "tool.used",
            "task.completed",
            "credential.revoked"
        ],
        "the whole story in order"
    );
    let seqs: Vec<i64> = tl
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));

    // The CLI renders it, one line per event.
    let out = latch()
        .args([
            "task",
            "show",
            &t,
            "--timeline",
            "--server",
            &s.base,
            "--token",
            &agent,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), kinds.len(), "{text}");
    assert!(
        text.contains("tool.used") && text.contains("psql"),
        "{text}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_cannot_forge_records_or_break_lines() {
    let s = TestServer::start().await;
    let agent = s.agent("inj").await;
    let t = s.open_task(&agent, "sandbox", 600).await;
    let forged = "ok\n{\"seq\":1,\"kind\":\"credential.revoked\"}\r\n\u{1b}[2K\u{202e}desrever";
    let r = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{t}/events"),
            json!({"tool": "bash", "attributes": {"stdout": forged, "k\u{202e}": "v"}}),
        )
        .await;
    // Keys are names: control and bidi characters are refused there...
    assert_eq!(r.status, 400, "{}", r.body);
    let r = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{t}/events"),
            json!({"tool": "bash", "attributes": {"stdout": forged}}),
        )
        .await;
    // ...values are free text, kept and escaped.
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["detail"]["attributes"]["stdout"], forged);
    // Purpose and justification are refused outright (approvers read them).
    let r = s
        .post(
            Some(&agent),
            "/v1/tasks",
            json!({"purpose": "fix\nkind=approval.recorded", "environment": "sandbox"}),
        )
        .await;
    assert_eq!(r.code(), Some("invalid_request"));

    // Export: one JSON object per line, and exactly the records and checkpoints.
    let text = export(&s, "").await;
    for l in text.lines() {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v.is_object());
        assert!(!l.contains('\u{1b}') && !l.contains('\r'));
    }
    let report = verify(&verifier(&s).await, &text);
    assert_eq!(report.problem, None);
    assert_eq!(
        text.lines().count() as u64,
        report.records + report.checkpoints_verified
    );

    // The terminal renderings escape everything: no raw control or bidi characters.
    let admin = s.human("auditor", &["latch-admins"]).await;
    let out = latch()
        .args([
            "audit", "tail", "--server", &s.base, "--token", &admin, "--kind", "tool.",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tail = String::from_utf8_lossy(&out.stdout);
    assert_eq!(tail.lines().count(), 1, "{tail}");
    assert!(tail.contains("\\u{202e}desrever"), "{tail}");
    assert!(
        !tail
            .chars()
            .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'),
        "{tail:?}"
    );
    let out = latch()
        .args([
            "audit", "tail", "--json", "--server", &s.base, "--token", &admin, "--kind", "tool.",
        ])
        .output()
        .unwrap();
    let tail = String::from_utf8_lossy(&out.stdout);
    assert_eq!(tail.lines().count(), 1);
    let v: Value = serde_json::from_str(tail.trim()).unwrap();
    assert_eq!(v["detail"]["attributes"]["stdout"], forged);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_verifies_offline_and_every_kind_of_tampering_is_named() {
    let s = TestServer::start().await;
    activity(&s).await;
    // A checkpoint in the middle, then more events.
    let admin = s.human("auditor", &["latch-admins"]).await;
    let cp = s
        .post(Some(&admin), "/v1/audit/checkpoints", json!({}))
        .await;
    assert_eq!(cp.status, 200, "{}", cp.body);
    let mid = cp.body["seq"].as_i64().unwrap();
    activity(&s).await;
    let text = export(&s, "").await;
    let v = verifier(&s).await;
    let ok = verify(&v, &text);
    assert_eq!(ok.problem, None, "{ok:?}");
    assert_eq!(ok.first_seq, Some(1));
    assert_eq!(
        ok.sealed_through, ok.last_seq,
        "an export is sealed to its end"
    );
    assert!(ok.checkpoints_verified >= 2);
    let ls = lines(&text);
    let last = ok.last_seq.unwrap();
    let n = mid + 3; // a record after the mid checkpoint
    assert!(n < last);

    // Edited: one field of one record.
    let mut e = ls.clone();
    let i = index_of_seq(&e, n);
    e[i] = e[i].replacen("\"outcome\":\"", "\"outcome\":\"x", 1);
    let r = verify(&v, &e.join("\n"));
    let p = r.problem.unwrap();
    assert_eq!(
        (p.kind, p.seq),
        (ChainProblemKind::Edited, n),
        "{}",
        p.message
    );

    // Deleted: one record.
    let mut d = ls.clone();
    d.remove(index_of_seq(&d, n));
    assert_problem(verify(&v, &d.join("\n")), ChainProblemKind::Deleted, n);

    // Inserted: a forged record with its own, consistent hash that does not link.
    let mut ins = ls.clone();
    let i = index_of_seq(&ins, n);
    let body = r#"{"id":"evt_forged","at_unix_secs":1,"kind":"approval.recorded","actor":"mallory","request_id":null,"task_id":null,"access_request_id":null,"lease_id":null,"outcome":"approve","detail":null}"#;
    let prev = "f".repeat(64);
    let forged = format!(
        "{{\"seq\":{n},\"prev_hash\":\"{prev}\",\"hash\":\"{}\",\"event\":{body}}}",
        chain_hash(&prev, n, body)
    );
    ins[i] = forged;
    assert_problem(verify(&v, &ins.join("\n")), ChainProblemKind::Inserted, n);

    // Duplicated (inserted with a taken seq).
    let mut dup = ls.clone();
    let i = index_of_seq(&dup, n);
    dup.insert(i + 1, dup[i].clone());
    assert_problem(verify(&v, &dup.join("\n")), ChainProblemKind::Reordered, n);

    // Reordered: two records swapped.
    let mut sw = ls.clone();
    let i = index_of_seq(&sw, n);
    let j = index_of_seq(&sw, n + 1);
    sw.swap(i, j);
    let p = verify(&v, &sw.join("\n")).problem.unwrap();
    assert_eq!(p.seq, n, "{}", p.message);
    assert!(matches!(
        p.kind,
        ChainProblemKind::Deleted | ChainProblemKind::Reordered
    ));

    // Rewritten: an edit after the mid checkpoint with the whole chain recomputed. The hash chain
    // alone cannot tell; the signed checkpoint can, and blames everything after the last good one.
    let mut rw = ls.clone();
    let i = index_of_seq(&rw, n);
    rw[i] = rw[i].replacen("\"outcome\":\"", "\"outcome\":\"x", 1);
    recompute(&mut rw);
    let p = verify(&v, &rw.join("\n")).problem.unwrap();
    assert_eq!(p.kind, ChainProblemKind::Rewritten, "{}", p.message);
    assert_eq!(p.seq, mid + 1, "{}", p.message);
    // ...and if the attacker also drops the checkpoint lines, the checkpoints kept elsewhere
    // still catch it.
    let kept = export(&s, "checkpoints_only=true").await;
    let external: Vec<latch_core::audit::AuditCheckpoint> = kept
        .lines()
        .map(|l| {
            serde_json::from_value(serde_json::from_str::<Value>(l).unwrap()["checkpoint"].clone())
                .unwrap()
        })
        .collect();
    assert!(external.len() >= 2);
    let stripped: Vec<String> = rw
        .iter()
        .filter(|l| !l.contains("\"checkpoint\""))
        .cloned()
        .collect();
    let r = verify_export(
        BufReader::new(stripped.join("\n").as_bytes()),
        &v,
        &external,
        &Default::default(),
    )
    .unwrap();
    let p = r.problem.unwrap();
    assert_eq!(
        (p.kind, p.seq),
        (ChainProblemKind::Rewritten, mid + 1),
        "{}",
        p.message
    );

    // Truncated: the tail cut off (the last records and their checkpoint).
    let cut = index_of_seq(&ls, last - 2);
    let tr: Vec<String> = ls[..=cut].to_vec();
    let r = verify_export(
        BufReader::new(tr.join("\n").as_bytes()),
        &v,
        &external,
        &Default::default(),
    )
    .unwrap();
    let p = r.problem.unwrap();
    assert_eq!(
        (p.kind, p.seq),
        (ChainProblemKind::Truncated, last - 1),
        "{}",
        p.message
    );
    // Records cut but their checkpoint line left in place.
    let mut tr2: Vec<String> = ls
        .iter()
        .filter(|l| seq_of(l).is_none_or(|s| s < last))
        .cloned()
        .collect();
    tr2.retain(|l| !l.is_empty());
    assert_problem(
        verify(&v, &tr2.join("\n")),
        ChainProblemKind::Truncated,
        last,
    );

    // A forged checkpoint signature.
    let mut bad = ls.clone();
    let i = bad
        .iter()
        .position(|l| l.contains("\"checkpoint\""))
        .unwrap();
    let mut cpv: Value = serde_json::from_str(&bad[i]).unwrap();
    let jws = cpv["checkpoint"]["jws"].as_str().unwrap().to_owned();
    let flipped = if jws.ends_with('A') { 'B' } else { 'A' };
    cpv["checkpoint"]["jws"] = json!(format!("{}{flipped}", &jws[..jws.len() - 1]));
    bad[i] = cpv.to_string();
    let p = verify(&v, &bad.join("\n")).problem.unwrap();
    assert_eq!(p.kind, ChainProblemKind::BadSignature, "{}", p.message);

    // The CLI, offline: file + JWKS file; exit 6 names the first bad seq.
    let dir = s.dir.join("audit-cli");
    std::fs::create_dir_all(&dir).unwrap();
    let jwks = s.get(None, "/.well-known/jwks.json").await.body;
    std::fs::write(dir.join("jwks.json"), jwks.to_string()).unwrap();
    std::fs::write(dir.join("good.jsonl"), &text).unwrap();
    std::fs::write(dir.join("edited.jsonl"), e.join("\n")).unwrap();
    let run = |f: &str| verify_file_offline(&dir, f, &[]);
    let out = run("good.jsonl");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: "));
    let out = run("edited.jsonl");
    assert_eq!(out.status.code(), Some(6));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("first bad seq {n} ")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_database_is_caught_by_online_verify() {
    let s = TestServer::start().await;
    activity(&s).await;
    let admin = s.human("auditor", &["latch-admins"]).await;
    let verify_online = || {
        latch()
            .args(["audit", "verify", "--server", &s.base, "--token", &admin])
            .output()
            .unwrap()
    };
    let out = verify_online();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Someone with write access to the database rewrites a decision.
    let db = rusqlite::Connection::open(s.dir.join("data/latch.db")).unwrap();
    let seq: i64 = db
        .query_row(
            "SELECT seq FROM audit_events WHERE kind = 'request.decided' ORDER BY seq LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    db.execute(
        "UPDATE audit_events SET body = replace(body, '\"allow\"', '\"deny\"') WHERE seq = ?1",
        [seq],
    )
    .unwrap();
    drop(db);
    let out = verify_online();
    assert_eq!(out.status.code(), Some(6));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("first bad seq {seq} ")),
        "{stdout}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_by_leaked_value_without_the_log_holding_it() {
    let s = TestServer::start().await;
    let (task, token) = activity(&s).await;
    let text = export(&s, "").await;
    assert!(!text.contains(&token), "the log never holds a credential");
    let admin = s.human("auditor", &["latch-admins"]).await;
    let f = s.dir.join("leaked.txt");
    std::fs::write(&f, format!("{token}\n")).unwrap();
    let out = latch()
        .args([
            "audit",
            "find",
            "--json",
            "--server",
            &s.base,
            "--token",
            &admin,
            "--value-file",
        ])
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = found.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["credential.issued", "credential.revoked"],
        "{found:?}"
    );
    assert!(found.iter().all(|e| e["task_id"] == task.as_str()));
    // Another value finds nothing (exit 1); the search itself is audited, without the value.
    std::fs::write(&f, "not-a-credential-we-ever-minted").unwrap();
    let out = latch()
        .args([
            "audit",
            "find",
            "--server",
            &s.base,
            "--token",
            &admin,
            "--value-file",
        ])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let searched = s.audit("kind=audit.searched").await;
    assert_eq!(searched.len(), 2);
    assert!(!searched[0].to_string().contains("not-a-credential"));
    // Non-admins cannot search.
    let agent = s.agent("x").await;
    let r = s
        .post(Some(&agent), "/v1/audit/find", json!({"value": token}))
        .await;
    assert_eq!(r.code(), Some("wrong_principal_kind"), "{}", r.body);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_filters_and_paging() {
    let s = TestServer::start().await;
    activity(&s).await;
    let agent_events = s.audit("kind=tool.").await;
    assert_eq!(agent_events.len(), 1);
    let actor = agent_events[0]["actor"].as_str().unwrap().to_owned();
    let by_actor = s.audit(&format!("actor={}", urlenc(&actor))).await;
    assert!(by_actor.len() > 3 && by_actor.iter().all(|e| e["actor"] == actor.as_str()));
    let now = s.clock.now_unix_secs();
    assert!(s.audit(&format!("until_unix_secs={now}")).await.is_empty());
    assert!(!s.audit(&format!("since_unix_secs={now}")).await.is_empty());
    let all = s.audit("").await;
    let admin = s.human("auditor", &["latch-admins"]).await;
    let page1 = s.get(Some(&admin), "/v1/audit?limit=3").await.body;
    let page1 = page1.as_array().unwrap();
    assert_eq!(page1.len(), 3);
    let after = page1[2]["seq"].as_i64().unwrap();
    let page2 = s.audit(&format!("after_seq={after}")).await;
    // `all` was read before this admin's token was used: the later auth events are extra.
    assert!(page1.len() + page2.len() > all.len());
    assert_eq!(page2[0]["seq"].as_i64().unwrap(), after + 1);
    let r = s.get(Some(&admin), "/v1/audit?limit=3&limit=4").await;
    assert_eq!(r.code(), Some("invalid_request"), "{}", r.body);
    let tail = s.audit("last=2").await;
    assert_eq!(tail.len(), 2);
    // Each event read back carries its chain position.
    assert!(
        all.iter()
            .all(|e| e["hash"].as_str().is_some_and(|h| h.len() == 64))
    );
    s.stop().await;
}

fn urlenc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A local webhook that records what it receives (or fails on demand).
async fn webhook(fail: bool) -> (String, Arc<Mutex<Vec<String>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let g = g.clone();
            async move {
                if fail {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                g.lock().unwrap().push(body);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (format!("http://{addr}/hook"), got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinks_stream_every_event_and_a_failing_sink_blocks_nothing() {
    let (good, got) = webhook(false).await;
    let (bad, _) = webhook(true).await;
    let cfg = format!(
        "\n[audit]\nsink_poll_interval = \"20ms\"\n\
         [[audit.sinks]]\nkind = \"file\"\nname = \"file\"\npath = \"audit.jsonl\"\n\
         [[audit.sinks]]\nkind = \"webhook\"\nname = \"siem\"\nurl = \"{good}\"\n\
         [[audit.sinks]]\nkind = \"webhook\"\nname = \"down\"\nurl = \"{bad}\"\n\
         [[audit.sinks]]\nkind = \"webhook\"\nname = \"unreachable\"\nurl = \"http://127.0.0.1:9/x\"\n"
    );
    let s = TestServer::start_with(TestOptions {
        extra_config: cfg,
        ..TestOptions::default()
    })
    .await;
    // The broker serves normally while two sinks fail.
    activity(&s).await;
    let stored = s.audit("").await.len() + 1; // + the auth event of that read
    let file = s.dir.join("audit.jsonl");
    let mut file_lines = Vec::new();
    let mut hook_lines = Vec::new();
    for _ in 0..500 {
        file_lines = std::fs::read_to_string(&file)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        hook_lines = got
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| b.lines().map(str::to_owned).collect::<Vec<_>>())
            .collect();
        if file_lines.len() >= stored && hook_lines.len() >= stored {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        file_lines.len() >= stored,
        "file sink got {} of {stored}",
        file_lines.len()
    );
    assert!(
        hook_lines.len() >= stored,
        "webhook got {} of {stored}",
        hook_lines.len()
    );
    // Same format as an export: a valid chain from seq 1.
    let v = verifier(&s).await;
    let r = verify(&v, &file_lines.join("\n"));
    assert_eq!(r.problem, None);
    assert_eq!(r.first_seq, Some(1));
    let r = verify(&v, &hook_lines.join("\n"));
    assert_eq!(r.problem, None);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "audit file is private ({mode:o})");
    }
    // The failing sinks delivered nothing and kept their place; the store has everything.
    let store = s.broker().store().clone();
    assert_eq!(store.sink_cursor("down").await.unwrap(), 0);
    assert_eq!(store.sink_cursor("unreachable").await.unwrap(), 0);
    // The cursor moves once the webhook has answered, a moment after the lines arrived.
    let mut siem = 0;
    for _ in 0..500 {
        siem = store.sink_cursor("siem").await.unwrap();
        if siem >= stored as i64 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(siem >= stored as i64, "siem cursor {siem} of {stored}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_audit_record_cannot_be_written_the_action_does_not_happen() {
    let s = TestServer::start().await;
    let agent = s.agent("fc").await;
    let t = s.open_task(&agent, "sandbox", 600).await;
    // The store refuses credential.issued records (a full disk, a broken replica...).
    let db = rusqlite::Connection::open(s.dir.join("data/latch.db")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events \
         WHEN NEW.kind IN ('credential.issued', 'tool.used') \
         BEGIN SELECT RAISE(ABORT, 'audit volume full'); END;",
    )
    .unwrap();
    let r = s.request(&agent, &t, "ci-cache", &["read"], None).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.code(), Some("store_unavailable"));
    assert!(r.body.get("credential").is_none());
    let r = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{t}/events"),
            json!({"tool": "x"}),
        )
        .await;
    assert_eq!(r.status, 503, "{}", r.body);
    let leases = s.get(Some(&agent), &format!("/v1/tasks/{t}/leases")).await;
    assert_eq!(
        leases.body.as_array().map(Vec::len),
        Some(0),
        "nothing was granted"
    );
    db.execute_batch("DROP TRIGGER refuse_audit;").unwrap();
    drop(db);
    let r = s.request(&agent, &t, "ci-cache", &["read"], None).await;
    assert_eq!(r.status, 201, "{}", r.body);
    // The chain has no hole where the refused records would have been.
    let text = export(&s, "").await;
    assert_eq!(verify(&verifier(&s).await, &text).problem, None);
    s.stop().await;
}

/// The seed's rule, checked over everything this test process produced: every credential minted
/// by any test (registered by the test kit as responses arrive) is searched for in every log
/// line (all levels), every error body and every audit record; `TestServer::stop` runs the same
/// check, so the last server to stop covers the whole suite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_minted_credential_appears_in_logs_audit_or_errors() {
    let s = TestServer::start().await;
    let (_, token) = activity(&s).await;
    // Error paths that handle a credential value: revoke and introspect a live one, reuse after
    // revocation, a value pasted where a workload token belongs.
    let agent = s.agent("scan").await;
    let t = s.open_task(&agent, "sandbox", 600).await;
    let r = s.request(&agent, &t, "ci-cache", &["read"], None).await;
    let live = r.body["credential"]["value"].as_str().unwrap().to_owned();
    assert_eq!(s.get(Some(&live), "/v1/tasks").await.status, 401);
    assert_eq!(s.get(Some(&token), "/v1/tasks").await.status, 401);
    s.introspect(&live).await;
    assert!(latch_testkit::minted_count() >= 2);
    assert!(
        latch_testkit::captured_count() > 10,
        "log lines are captured"
    );
    s.stop().await;
}

/// Findings of a red-team pass, each pinned by a test: filter columns derive from the hashed
/// body, truncation and deleted heads are caught online, the broker refuses to sign over damage,
/// invisible and line-breaking characters never reach a stored line raw, the recorded request id
/// is the broker's own, `find` matches only the credential field, decisions record their state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_hardening_against_an_insider_and_a_hostile_agent() {
    let s = TestServer::start().await;
    let (task, token) = activity(&s).await;
    let admin = s.human("auditor", &["latch-admins"]).await;
    let agent = s.agent("hard").await;
    let t = s.open_task(&agent, "sandbox", 600).await;

    // Invisible, bidi-mark and line-separator characters are refused in names and free text...
    for (path, body) in [
        (
            "/v1/tasks".to_owned(),
            json!({"purpose": "a\u{2028}b", "environment": "sandbox"}),
        ),
        (
            "/v1/tasks".to_owned(),
            json!({"purpose": "x\u{061c}y", "environment": "sandbox"}),
        ),
        (
            format!("/v1/tasks/{t}/events"),
            json!({"tool": "ps\u{00ad}ql"}),
        ),
        (
            format!("/v1/tasks/{t}/events"),
            json!({"tool": "t", "attributes": {"k\u{e0041}": 1}}),
        ),
    ] {
        let r = s.post(Some(&agent), &path, body.clone()).await;
        assert_eq!(r.code(), Some("invalid_request"), "{body}: {}", r.body);
    }
    // ...and escaped in values, so the stored line holds none of them raw.
    let r = s
        .http
        .post(format!("{}/v1/tasks/{t}/events", s.base))
        .bearer_auth(&agent)
        .header("x-request-id", "approved-by-security")
        .json(&json!({"tool": "t", "attributes": {"v": "a\u{2028}b\u{85}c\u{202e}d"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let ev: Value = r.json().await.unwrap();
    assert!(
        ev["request_id"].as_str().unwrap().starts_with("rq_"),
        "the broker's id, not the caller's: {ev}"
    );
    let text = export(&s, "").await;
    assert!(
        !text
            .chars()
            .any(|c| c == '\u{2028}' || c == '\u{85}' || c == '\u{202e}'),
        "raw separators in the export"
    );
    assert!(text.contains("\\u2028"));

    // An agent cannot make `find` list its own event by quoting a credential's HMAC.
    let hmac = s.broker().credential_hmac(&token);
    s.post(
        Some(&agent),
        &format!("/v1/tasks/{t}/events"),
        json!({"tool": "t", "attributes": {"credential_hmac": hmac, "ref": hmac}}),
    )
    .await;
    let found = s
        .post(Some(&admin), "/v1/audit/find", json!({"value": token}))
        .await;
    let kinds: Vec<&str> = found
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["credential.issued", "credential.revoked"],
        "{}",
        found.body
    );

    // An allowed request's decision records the state it reached.
    let decided = s
        .audit(&format!("task_id={task}&kind=request.decided"))
        .await;
    assert_eq!(decided[0]["detail"]["state"], "granted");

    // The filter columns are generated from the hashed body: they cannot be edited alone.
    let db = rusqlite::Connection::open(s.dir.join("data/latch.db")).unwrap();
    let err = db
        .execute(
            "UPDATE audit_events SET task_id = NULL WHERE task_id = ?1",
            [&task],
        )
        .unwrap_err();
    assert!(err.to_string().contains("generated column"), "{err}");

    // Cutting off the newest records: the signed checkpoint above the head gives it away, the
    // broker refuses to sign over it, and the online verify names where the records stop.
    let cp = s
        .post(Some(&admin), "/v1/audit/checkpoints", json!({}))
        .await;
    let sealed = cp.body["seq"].as_i64().unwrap();
    db.execute("DELETE FROM audit_events WHERE seq > ?1", [sealed - 3])
        .unwrap();
    drop(db);
    let cp = s
        .post(Some(&admin), "/v1/audit/checkpoints", json!({}))
        .await;
    assert_eq!(cp.status, 503, "{}", cp.body);
    assert!(
        cp.body.to_string().contains("audit chain alarm"),
        "{}",
        cp.body
    );
    let out = latch()
        .args(["audit", "verify", "--server", &s.base, "--token", &admin])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(6), "{stdout}");
    assert!(stdout.contains("Truncated"), "{stdout}");

    // Deleting the oldest records is caught too, offline.
    let good = export(&s, "").await;
    let dir = s.dir.join("hard");
    std::fs::create_dir_all(&dir).unwrap();
    let jwks = s.get(None, "/.well-known/jwks.json").await.body;
    std::fs::write(dir.join("jwks.json"), jwks.to_string()).unwrap();
    let headless: Vec<&str> = good
        .lines()
        .filter(|l| seq_of(l).is_none_or(|q| q > 3))
        .collect();
    std::fs::write(dir.join("headless.jsonl"), headless.join("\n")).unwrap();
    std::fs::write(dir.join("empty.jsonl"), "").unwrap();
    let run = |f: &str, extra: &[&str]| verify_file_offline(&dir, f, extra);
    let out = run("headless.jsonl", &[]);
    assert_eq!(out.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&out.stdout).contains("first bad seq 1 "));
    let out = run("headless.jsonl", &["--from-seq", "4"]);
    assert_eq!(out.status.code(), Some(6), "still truncated at the end");
    let out = run("empty.jsonl", &[]);
    assert_eq!(out.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&out.stdout).contains("NOT VERIFIED"));
    s.stop().await;
}
