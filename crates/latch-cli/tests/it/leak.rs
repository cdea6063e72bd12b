//! Leak detection and response: planted Latch credentials in realistic transcripts and logs
//! are found (by location and kind, never by value) and revoked at once; `on_leak = "task"`
//! takes down the whole task; findings land in the audit trail; look-alikes yield nothing;
//! `latch scan` exits 7 on a finding and `--redact` masks every secret.

use std::process::Command;
use std::sync::{Arc, Mutex};

use latch_testkit::{TestOptions, TestServer, service_available};
use serde_json::{Value, json};

const REDIS_ADDR: &str = "127.0.0.1:6379";

fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// A fake AWS key (not a real one) of the shape the gitleaks rule knows.
const AWS: &str = "AKIAQYLPMN5HHHFPZAM2";

fn transcript(secret: &str) -> String {
    format!(
        "{{\"role\":\"user\",\"content\":\"the nightly export fails, please look\"}}\n\
         {{\"role\":\"assistant\",\"content\":\"checking the cache with my token\"}}\n\
         {{\"role\":\"tool\",\"name\":\"bash\",\"content\":\"$ curl -H 'Authorization: Bearer {secret}' https://ci-cache.acme.example/v1/keys\"}}\n\
         {{\"role\":\"tool\",\"name\":\"bash\",\"content\":\"export AWS_ACCESS_KEY_ID={AWS}\"}}\n\
         {{\"role\":\"assistant\",\"content\":\"commit 9b74c9897bac770ffc029102a200c5de1a9c5b1f, request 0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b\"}}\n"
    )
}

async fn grant(s: &TestServer, agent: &str, task: &str, resource: &str) -> (String, String) {
    let g = s.request(agent, task, resource, &["read"], Some(600)).await;
    assert_eq!(g.status, 201, "{}", g.body);
    (
        g.body["credential"]["value"].as_str().unwrap().to_owned(),
        g.body["lease"]["id"].as_str().unwrap().to_owned(),
    )
}

async fn scan(s: &TestServer, token: &str, text: &str, source: &str) -> Value {
    let r = s
        .post(
            Some(token),
            "/v1/scan",
            json!({"text": text, "source": source}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

#[tokio::test]
async fn planted_access_token_in_a_transcript_is_found_revoked_and_audited() {
    let s = TestServer::start().await;
    let agent = s.agent("leak-1").await;
    let task = s.open_task(&agent, "sandbox", 1800).await;
    let (leaked, lease) = grant(&s, &agent, &task, "ci-cache").await;
    let (other, _) = grant(&s, &agent, &task, "ci-cache").await;
    assert_eq!(s.introspect(&leaked).await["active"], true);

    let text = transcript(&leaked);
    let body = scan(&s, &agent, &text, "run-4411/transcript.jsonl").await;
    let findings = body["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 2, "{body}");
    let f = &findings[0];
    assert_eq!(f["kind"], "latch_access_token");
    assert_eq!(f["line"], 3);
    assert_eq!(f["response"]["matched"], true);
    assert_eq!(f["response"]["lease_id"], lease.as_str());
    assert_eq!(f["response"]["revoked_leases"], json!([lease]));
    assert_eq!(findings[1]["kind"], "aws_access_token");
    assert_eq!(findings[1]["line"], 4);
    assert!(!body.to_string().contains(&leaked), "never the value");
    assert!(!body.to_string().contains(AWS));

    // Revoked at once; the rest of the task is untouched by default.
    assert_eq!(s.introspect(&leaked).await["active"], false);
    assert_eq!(s.introspect(&other).await["active"], true);

    let ev = s.audit("kind=leak.detected").await;
    assert_eq!(ev.len(), 2, "{ev:?}");
    let latch = ev.iter().find(|e| e["outcome"] == "revoked").unwrap();
    assert_eq!(latch["lease_id"], lease.as_str());
    assert_eq!(latch["task_id"], task.as_str());
    let col = text.lines().nth(2).unwrap().find(&leaked).unwrap() + 1;
    assert_eq!(
        latch["detail"]["location"],
        format!("run-4411/transcript.jsonl:3:{col}")
    );
    assert_eq!(latch["detail"]["revoked_leases"], json!([lease]));
    let third = ev.iter().find(|e| e["outcome"] == "third_party").unwrap();
    assert_eq!(third["detail"]["kind"], "aws_access_token");
    let revoked = s.audit(&format!("lease_id={lease}")).await;
    assert!(
        revoked
            .iter()
            .any(|e| e["kind"] == "credential.revoked" && e["detail"]["reason"] == "leaked"),
        "{revoked:?}"
    );

    // Found again later: recorded, nothing left to revoke.
    let again = scan(&s, &agent, &text, "ci.log").await;
    assert_eq!(again["findings"][0]["response"]["matched"], true);
    assert_eq!(
        again["findings"][0]["response"]["revoked_leases"],
        json!([])
    );
    s.stop().await;
}

#[tokio::test]
async fn on_leak_task_cancels_the_whole_task() {
    let s = TestServer::start_with(TestOptions {
        extra_config: "[scan]\non_leak = \"task\"\n".into(),
        ..Default::default()
    })
    .await;
    let agent = s.agent("leak-2").await;
    let task = s.open_task(&agent, "sandbox", 1800).await;
    let (leaked, l1) = grant(&s, &agent, &task, "ci-cache").await;
    let (other, l2) = grant(&s, &agent, &task, "ci-cache").await;
    // A human (e.g. a reviewer's tool) may report a leak too.
    let bob = s.human("bob", &["reviewers"]).await;
    let body = scan(
        &s,
        &bob,
        &format!("2026-11-29 ERROR auth failed token={leaked}\n"),
        "ci",
    )
    .await;
    let resp = &body["findings"][0]["response"];
    assert_eq!(resp["task_cancelled"], true, "{body}");
    assert_eq!(resp["revoked_leases"], json!([l1, l2]));
    assert_eq!(s.introspect(&leaked).await["active"], false);
    assert_eq!(s.introspect(&other).await["active"], false);
    let t = s.get(Some(&agent), &format!("/v1/tasks/{task}")).await;
    assert_eq!(t.body["state"], "cancelled", "{}", t.body);
    s.stop().await;
}

#[tokio::test]
async fn renewed_away_credentials_are_recognised_as_latch_but_not_live() {
    let s = TestServer::start().await;
    let agent = s.agent("leak-3").await;
    let task = s.open_task(&agent, "sandbox", 1800).await;
    let (old, lease) = grant(&s, &agent, &task, "ci-cache").await;
    s.clock.advance(30);
    let r = s
        .post(
            Some(&agent),
            &format!("/v1/leases/{lease}/renew"),
            json!({"ttl_secs": 600}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let body = scan(&s, &agent, &format!("old token: {old}\n"), "notes.md").await;
    let resp = &body["findings"][0]["response"];
    assert_eq!(resp["matched"], true, "{body}");
    assert_eq!(resp["lease_id"], lease.as_str());
    s.stop().await;
}

#[tokio::test]
async fn lookalikes_yield_no_findings_and_size_is_limited() {
    let s = TestServer::start().await;
    let agent = s.agent("leak-4").await;
    let text = "sha256:9b74c9897bac770ffc029102a200c5de1a9c5b1f0e6a1bd4bd1c3f5ae0d4b6d2\n\
        id=0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b blob=dGhpcyBpcyBub3QgYSBzZWNyZXQgYnV0IGEgYmxvYg==\n\
        ltcpg_0123456789abcdefghijABCDEFGHIJ0123456789abcdefghij\n\
        AKIAIOSFODNN7EXAMPLE postgres://app:${PGPASSWORD}@db:5432/app\n";
    let body = scan(&s, &agent, text, "lookalikes").await;
    assert_eq!(body["findings"], json!([]), "{body}");
    let big = "a".repeat((1 << 20) + 1);
    let r = s.post(Some(&agent), "/v1/scan", json!({"text": big})).await;
    assert_eq!(r.status, 413, "{}", r.body);
    let r = s.post(None, "/v1/scan", json!({"text": "x"})).await;
    assert_eq!(r.status, 401);
    s.stop().await;
}

#[tokio::test]
async fn planted_redis_password_in_a_log_is_found_and_revoked() {
    if !service_available("Redis", REDIS_ADDR) {
        return;
    }
    let resource = format!("redis-{}", suffix());
    let prefix = format!("latch-leak-{}", suffix());
    let s = TestServer::start_with(TestOptions {
        extra_config: format!(
            r#"
[[resources]]
id = "{resource}"
kind = "redis"
environment = "sandbox"
audience = "redis"
actions = ["read"]
max_ttl = "30m"
[resources.settings]
url = "redis://{REDIS_ADDR}/"
[resources.settings.rules]
read = ["~{prefix}:*", "+@read", "+@connection"]
"#
        ),
        ..Default::default()
    })
    .await;
    let agent = s.agent("leak-5").await;
    let task = s.open_task(&agent, "sandbox", 1800).await;
    let (password, lease) = grant(&s, &agent, &task, &resource).await;
    assert!(password.starts_with("ltcrd_"), "scannable format");
    let log = format!(
        "2026-11-29T16:00:00Z INFO worker connected\n\
         2026-11-29T16:00:01Z DEBUG redis url=redis://agent:{password}@{REDIS_ADDR}/0\n"
    );
    let body = scan(&s, &agent, &log, "worker.log").await;
    let f = body["findings"].as_array().unwrap();
    assert_eq!(f.len(), 1, "{body}");
    assert_eq!(f[0]["kind"], "latch_redis_password");
    assert_eq!(f[0]["line"], 2);
    assert_eq!(f[0]["response"]["revoked_leases"], json!([lease]));
    let leases = s
        .get(Some(&agent), &format!("/v1/tasks/{task}/leases"))
        .await;
    let state = leases.body[0]["state"].as_str().unwrap().to_owned();
    assert!(state == "revoked" || state == "revoking", "{state}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_scan_reports_revokes_redacts_and_fails_ci() {
    let s = TestServer::start().await;
    let agent = s.agent("leak-6").await;
    let task = s.open_task(&agent, "sandbox", 1800).await;
    let (leaked, lease) = grant(&s, &agent, &task, "ci-cache").await;
    let dir = std::env::temp_dir().join(format!("latch-scan-{}", suffix()));
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let log = dir.join("logs/ci.log");
    // A CI's own OIDC token (not the broker's key): reported, but never sent to the broker.
    let foreign = {
        use base64::Engine;
        let e = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.{}",
            e(r#"{"alg":"RS256","kid":"github-actions-1","typ":"JWT"}"#),
            e(r#"{"iss":"https://token.actions.githubusercontent.com","sub":"repo:acme/api"}"#),
            "c2lnbmF0dXJlLW5vdC1yZWFsbHktYS1zaWduYXR1cmUtYnV0LWxvbmctZW5vdWdo"
        )
    };
    std::fs::write(
        &log,
        format!("{}ACTIONS_ID_TOKEN={foreign}\n", transcript(&leaked)),
    )
    .unwrap();
    std::fs::write(
        dir.join("clean.txt"),
        "nothing to see: 0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b\n",
    )
    .unwrap();

    let out = tokio::task::block_in_place(|| {
        Command::new(env!("CARGO_BIN_EXE_latch"))
            .args(["scan", "--redact"])
            .arg(&dir)
            .env("LATCH_SERVER", &s.base)
            .env("LATCH_TOKEN", &agent)
            .output()
            .unwrap()
    });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    latch_testkit::record_output(stdout.clone());
    latch_testkit::record_output(stderr.clone());
    assert_eq!(out.status.code(), Some(7), "{stdout}{stderr}");
    assert!(stdout.contains("ci.log:3:"), "{stdout}");
    assert!(stdout.contains("latch_access_token"), "{stdout}");
    assert!(stdout.contains(&format!("revoked {lease}")), "{stdout}");
    assert!(stdout.contains("aws_access_token"), "{stdout}");
    assert!(stdout.contains("ci.log:6:18: jwt [jwt]"), "{stdout}");
    assert!(stdout.contains("3 finding(s)"), "{stdout}");
    let sent = s.audit("kind=leak.detected").await;
    assert_eq!(sent.len(), 1, "only the broker's token was sent: {sent:?}");
    assert_eq!(s.introspect(&leaked).await["active"], false);
    let redacted = std::fs::read_to_string(&log).unwrap();
    assert!(!redacted.contains(&leaked) && !redacted.contains(AWS));
    assert!(
        redacted.contains("[redacted:jwt]") && redacted.contains("[redacted:aws_access_token]")
    );
    assert!(redacted.contains("the nightly export fails"));

    // Clean input: exit 0; stdin with --redact writes the masked text to stdout.
    let clean = tokio::task::block_in_place(|| {
        Command::new(env!("CARGO_BIN_EXE_latch"))
            .args(["scan", "--offline"])
            .arg(dir.join("clean.txt"))
            .output()
            .unwrap()
    });
    assert_eq!(clean.status.code(), Some(0));
    let piped = tokio::task::block_in_place(|| {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_latch"))
            .args(["scan", "--offline", "--redact", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("key={AWS}\n").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    });
    assert_eq!(piped.status.code(), Some(7));
    assert_eq!(
        String::from_utf8_lossy(&piped.stdout),
        "key=[redacted:aws_access_token]\n"
    );
    let _ = std::fs::remove_dir_all(&dir);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leak_findings_reach_the_webhook_without_the_value() {
    let got = Arc::new(Mutex::new(Vec::<String>::new()));
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let g = g.clone();
            async move {
                g.lock().unwrap().push(body);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    let s = TestServer::start_with(TestOptions {
        extra_config: format!(
            "\n[audit]\nsink_poll_interval = \"20ms\"\n\
             [[audit.sinks]]\nkind = \"webhook\"\nname = \"siem\"\nurl = \"http://{addr}/hook\"\n"
        ),
        ..Default::default()
    })
    .await;
    let agent = s.agent("leak-7").await;
    let task = s.open_task(&agent, "sandbox", 1800).await;
    let (leaked, lease) = grant(&s, &agent, &task, "ci-cache").await;
    scan(&s, &agent, &transcript(&leaked), "chat").await;
    let mut leak_lines = Vec::new();
    for _ in 0..500 {
        leak_lines = got
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| b.lines().map(str::to_owned).collect::<Vec<_>>())
            .filter(|l| l.contains("leak.detected"))
            .collect();
        if leak_lines.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(leak_lines.len(), 2, "{leak_lines:?}");
    assert!(
        leak_lines
            .iter()
            .any(|l| l.contains(&lease) && l.contains("chat:3:"))
    );
    assert!(
        !leak_lines
            .iter()
            .any(|l| l.contains(&leaked) || l.contains(AWS))
    );
    s.stop().await;
}

#[tokio::test]
async fn planted_postgres_password_in_a_connection_string_is_found_and_the_role_dropped() {
    if !service_available("PostgreSQL", "127.0.0.1:5432") {
        return;
    }
    let (admin, conn) = tokio_postgres::connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=postgres",
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect to postgres as postgres");
    tokio::spawn(conn);
    let schema = format!("latch_leak_{}", suffix());
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; CREATE TABLE {schema}.items (id int);"
        ))
        .await
        .unwrap();
    let resource = format!("pg-{}", suffix());
    let s = TestServer::start_with(TestOptions {
        extra_config: format!(
            r#"
[[resources]]
id = "{resource}"
kind = "postgres"
environment = "sandbox"
audience = "postgres"
actions = ["read"]
max_ttl = "30m"
[resources.settings]
url = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
connect_timeout_secs = 2
[resources.settings.grants]
read = ["GRANT USAGE ON SCHEMA {schema} TO {{role}}", "GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {{role}}"]
"#
        ),
        ..Default::default()
    })
    .await;
    let agent = s.agent("leak-8").await;
    let task = s.open_task(&agent, "sandbox", 1800).await;
    let g = s
        .request(&agent, &task, &resource, &["read"], Some(600))
        .await;
    assert_eq!(g.status, 201, "{}", g.body);
    let password = g.body["credential"]["value"].as_str().unwrap().to_owned();
    let user = g.body["credential"]["metadata"]["username"]
        .as_str()
        .unwrap()
        .to_owned();
    let lease = g.body["lease"]["id"].as_str().unwrap().to_owned();
    assert!(password.starts_with("ltcpg_"), "scannable format");
    let login = |pw: String, user: String| async move {
        tokio_postgres::connect(
            &format!("host=127.0.0.1 port=5432 user={user} password={pw} dbname=postgres connect_timeout=5"),
            tokio_postgres::NoTls,
        )
        .await
        .map(|_| ())
    };
    login(password.clone(), user.clone())
        .await
        .expect("the role logs in");

    let diff = format!(
        "diff --git a/.env b/.env\n--- a/.env\n+++ b/.env\n@@ -1,2 +1,3 @@\n APP_ENV=staging\n\
         +DATABASE_URL=postgres://{user}:{password}@127.0.0.1:5432/postgres\n LOG_LEVEL=info\n"
    );
    let body = scan(&s, &agent, &diff, "pr-17.diff").await;
    let f = body["findings"].as_array().unwrap();
    assert_eq!(f.len(), 1, "{body}");
    assert_eq!(f[0]["kind"], "latch_postgres_password");
    assert_eq!(f[0]["line"], 6);
    assert_eq!(f[0]["response"]["revoked_leases"], json!([lease]));
    assert!(login(password, user).await.is_err(), "the role is gone");
    s.stop().await;
}

/// A fake AWS-shaped key number `i` (distinct, high entropy, not a real key).
fn aws_decoy(i: u64) -> String {
    const B32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut x = i
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let tail: String = (0..16)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            B32[(x % 32) as usize] as char
        })
        .collect();
    format!("AKIA{tail}")
}

#[tokio::test]
async fn leak_every_latch_candidate_is_answered_after_many_third_party_decoys() {
    let s = TestServer::start().await;
    let agent = s.agent("leak-decoys").await;
    let task = s.open_task(&agent, "sandbox", 1800).await;
    let (leaked, lease) = grant(&s, &agent, &task, "ci-cache").await;
    let mut text: String = (0..150)
        .map(|i| format!("key {}\n", aws_decoy(i)))
        .collect();
    text.push_str(&format!("token {leaked}\n"));
    let body = scan(&s, &agent, &text, "decoys").await;
    let findings = body["findings"].as_array().unwrap();
    assert!(
        findings
            .iter()
            .filter(|f| f["kind"] == "aws_access_token")
            .count()
            >= 100,
        "{body}"
    );
    assert_eq!(body["revoked_leases"], json!([lease]), "{body}");
    assert_eq!(s.introspect(&leaked).await["active"], false);
    // Third-party findings are collapsed into one audit event per request.
    let ev = s.audit("kind=leak.detected").await;
    let third: Vec<&Value> = ev
        .iter()
        .filter(|e| e["outcome"] == "third_party")
        .collect();
    assert_eq!(third.len(), 1, "{ev:?}");
    assert!(third[0]["detail"]["count"].as_u64().unwrap() >= 100);
    assert_eq!(ev.iter().filter(|e| e["outcome"] == "revoked").count(), 1);
    s.stop().await;
}

#[tokio::test]
async fn leak_live_tokens_in_ordinary_contexts_are_found_and_revoked() {
    let s = TestServer::start().await;
    let agent = s.agent("leak-contexts").await;
    let task = s.open_task(&agent, "sandbox", 1800).await;
    let contexts: [fn(&str) -> String; 5] = [
        |t| format!(r#"{{"role":"tool","content":"token:\n{t}\nok"}}"#),
        |t| format!("\x1b[1;32m{t}\x1b[0m"),
        |t| format!("GET /v1/keys?access_token={t}&page=2"),
        |t| format!("tokens: [{t}, other]"),
        |t| format!("see [the token]({t}) | done"),
    ];
    for (i, ctx) in contexts.iter().enumerate() {
        let (leaked, lease) = grant(&s, &agent, &task, "ci-cache").await;
        let text = ctx(&leaked);
        let body = scan(&s, &agent, &text, "ctx").await;
        assert_eq!(
            body["revoked_leases"],
            json!([lease]),
            "context {i}: {body}"
        );
        assert_eq!(body["findings"][0]["kind"], "latch_access_token");
        assert_eq!(s.introspect(&leaked).await["active"], false, "context {i}");
    }
    s.stop().await;
}

#[tokio::test]
async fn leak_of_a_dead_credential_does_not_cancel_its_task() {
    let s = TestServer::start_with(TestOptions {
        extra_config: "[scan]\non_leak = \"task\"\n".into(),
        ..Default::default()
    })
    .await;
    let agent = s.agent("leak-dead").await;
    let task = s.open_task(&agent, "sandbox", 1800).await;
    let (dead, l1) = grant(&s, &agent, &task, "ci-cache").await;
    let (other, _) = grant(&s, &agent, &task, "ci-cache").await;
    let r = s
        .post(Some(&agent), &format!("/v1/leases/{l1}/revoke"), json!({}))
        .await;
    assert!(r.status < 300, "{}", r.body);
    let body = scan(&s, &agent, &format!("old token={dead}\n"), "replay").await;
    let resp = &body["findings"][0]["response"];
    assert_eq!(resp["matched"], true, "{body}");
    assert_eq!(resp["task_cancelled"], false, "{body}");
    assert_eq!(resp["revoked_leases"], json!([]));
    assert_eq!(s.introspect(&other).await["active"], true);
    let t = s.get(Some(&agent), &format!("/v1/tasks/{task}")).await;
    assert_eq!(t.body["state"], "open", "{}", t.body);
    let ev = s.audit("kind=leak.detected").await;
    assert_eq!(ev[0]["outcome"], "inactive", "{ev:?}");
    s.stop().await;
}

#[test]
fn leak_cli_scan_follows_named_symlinks_reads_fifos_and_reports_skipped_inputs() {
    let dir = std::env::temp_dir().join(format!("latch-scan-inputs-{}", suffix()));
    std::fs::create_dir_all(dir.join("tree")).unwrap();
    std::fs::write(dir.join("secret.log"), format!("key={AWS}\n")).unwrap();
    std::fs::write(dir.join("tree/clean.txt"), "nothing here\n").unwrap();
    std::os::unix::fs::symlink(dir.join("secret.log"), dir.join("link.log")).unwrap();
    std::os::unix::fs::symlink(dir.join("secret.log"), dir.join("tree/inner-link")).unwrap();
    let latch = env!("CARGO_BIN_EXE_latch");
    let run = |args: &[&str]| {
        Command::new(latch)
            .args(["scan", "--offline"])
            .args(args)
            .output()
            .unwrap()
    };
    // A symlink named on the command line is followed.
    let link = dir.join("link.log");
    let out = run(&[link.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("aws_access_token"));
    // Process substitution (a pipe) is read.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("{latch} scan --offline <(printf 'key={AWS}\\n')"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    // A symlink inside a directory is skipped and reported, but does not fail the run (a
    // repository's symlinks must not break CI).
    let tree = dir.join("tree");
    let out = run(&[tree.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("inner-link: skipped"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
