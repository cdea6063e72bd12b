//! Several `latch serve` processes sharing one PostgreSQL database (issue 7): a task moves
//! between replicas, concurrent calls on two replicas resolve by compare-and-set, revocation
//! on one replica reaches the other's introspection within a second, a killed replica's task
//! is finished through the other, a dead replica's reaper claims are taken over, and the audit
//! log written by both stays one verifiable chain.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use latch_core::audit::verify_export;
use latch_server::audit::JwksCheckpointVerifier;
use latch_server::examples::{DEMO_CLIENT_ID, DEMO_CLIENT_SECRET};
use latch_testkit::{PG_ADDR, TempPgDatabase, service_available};
use serde_json::{Value, json};

/// One `latch serve` process; killed (SIGKILL) on drop.
struct Replica {
    child: Child,
    base: String,
    /// Set when the replica logs that its store change feed is connected (caches trusted).
    feed_up: Arc<AtomicBool>,
}

impl Replica {
    fn spawn(config: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_latch"))
            .args(["serve", "--config", config.to_str().expect("utf-8 path")])
            .env("LATCH_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn latch serve");
        let out = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(out).lines();
        let feed_up = Arc::new(AtomicBool::new(false));
        let base = loop {
            let line = lines
                .next()
                .expect("server printed its address")
                .expect("read stdout");
            if line.contains("caches trusted again") {
                feed_up.store(true, Ordering::SeqCst);
            }
            if line.contains("latch is serving") {
                let v: Value = serde_json::from_str(&line).expect("json log line");
                break v["fields"]["base_url"].as_str().expect("base_url").to_owned();
            }
        };
        let up = feed_up.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if line.contains("caches trusted again") {
                    up.store(true, Ordering::SeqCst);
                }
            }
        });
        Self {
            child,
            base,
            feed_up,
        }
    }

    /// Waits until the change feed is connected, so answers come from the (invalidated) cache.
    async fn wait_feed(&self) {
        let start = Instant::now();
        while !self.feed_up.load(Ordering::SeqCst) {
            assert!(start.elapsed() < Duration::from_secs(10), "change feed not connected");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The example configuration on a fresh PostgreSQL database, with a fast reaper and short
/// reaper claims.
fn config(db: &TempPgDatabase) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("latch-replicas-{}", uuid::Uuid::new_v4().simple()));
    let path = latch_server::examples::write_example(&dir, "127.0.0.1:0").expect("example");
    let text = std::fs::read_to_string(&path).expect("read config");
    let text = text
        .replacen(
            "[store]\n",
            &format!("[store]\nurl = \"{}\"\nreaper_claim = \"2s\"\n", db.url()),
            1,
        )
        .replacen("interval = \"5s\"", "interval = \"250ms\"", 1);
    assert!(text.contains("reaper_claim"), "store section rewritten");
    std::fs::write(&path, text).expect("write config");
    (dir, path)
}

struct Client {
    http: reqwest::Client,
}

impl Client {
    async fn call(&self, method: &str, url: String, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut rb = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url).json(&body),
        };
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        let r = rb.send().await.expect("http");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
    async fn post(&self, base: &str, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.call("POST", format!("{base}{path}"), token, body).await
    }
    async fn get(&self, base: &str, path: &str, token: &str) -> (u16, Value) {
        self.call("GET", format!("{base}{path}"), Some(token), Value::Null)
            .await
    }
    async fn token(&self, base: &str, body: Value) -> String {
        let (s, b) = self.post(base, "/v1/dev/tokens", None, body).await;
        assert_eq!(s, 200, "{b}");
        b["token"].as_str().expect("token").to_owned()
    }
    async fn active(&self, base: &str, credential: &str) -> bool {
        let r = self
            .http
            .post(format!("{base}/v1/oauth/introspect"))
            .basic_auth(DEMO_CLIENT_ID, Some(DEMO_CLIENT_SECRET))
            .form(&[("token", credential)])
            .send()
            .await
            .expect("introspect");
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.expect("json")["active"] == true
    }
}

async fn agent(c: &Client, base: &str) -> String {
    c.token(base, json!({"kind": "workload", "repository": "acme/payments-api",
        "git_ref": "refs/heads/main", "actor": "alice", "run_id": "7", "ttl_secs": 3600}))
        .await
}

/// Waits (polling every 10 ms, up to `limit`) until `credential` introspects inactive on
/// `base`; returns how long it took.
async fn until_inactive(c: &Client, base: &str, credential: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    while c.active(base, credential).await {
        assert!(start.elapsed() < limit, "still active after {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_tasks_approvals_revocations_and_one_audit_chain() {
    if !service_available("postgres", PG_ADDR) {
        return;
    }
    let db = TempPgDatabase::create("replicas").await;
    let (dir, path) = config(&db);
    // The first replica generates the master key and migrates; the second reuses both.
    let mut a = Replica::spawn(&path);
    let b = Replica::spawn(&path);
    a.wait_feed().await;
    b.wait_feed().await;
    let (ua, ub) = (a.base.clone(), b.base.clone());
    let c = Client {
        http: reqwest::Client::new(),
    };
    let agent = agent(&c, &ua).await;

    // A task opened on A is used on B; a credential minted on B introspects active on A.
    let (s, task) = c
        .post(&ua, "/v1/tasks", Some(&agent), json!({"purpose": "replicas", "environment": "production"}))
        .await;
    assert_eq!(s, 201, "{task}");
    let t = task["id"].as_str().expect("task id").to_owned();
    let grant = |base: String, agent: String, t: String| {
        let c = Client { http: c.http.clone() };
        async move {
            c.post(&base, &format!("/v1/tasks/{t}/requests"), Some(&agent),
                json!({"resource": "payments-db", "actions": ["read"], "ttl_secs": 300, "justification": "j"}))
                .await
        }
    };
    let (s, g) = grant(ub.clone(), agent.clone(), t.clone()).await;
    assert_eq!(s, 201, "{g}");
    let cred = g["credential"]["value"].as_str().expect("credential").to_owned();
    let lease = g["lease"]["id"].as_str().expect("lease id").to_owned();
    assert!(c.active(&ua, &cred).await, "minted on B, active on A");
    assert!(c.active(&ub, &cred).await);

    // Revoked on A: B answers inactive within a second (its cache is invalidated).
    let (s, r) = c
        .post(&ua, &format!("/v1/leases/{lease}/revoke"), Some(&agent), json!({}))
        .await;
    assert_eq!(s, 200, "{r}");
    let took = until_inactive(&c, &ub, &cred, Duration::from_secs(1)).await;
    eprintln!("revocation reached the other replica in {took:?}");

    // Renewal on B of a lease A has cached: A stops accepting the old credential.
    let (s, g2) = grant(ua.clone(), agent.clone(), t.clone()).await;
    assert_eq!(s, 201, "{g2}");
    let old = g2["credential"]["value"].as_str().expect("credential").to_owned();
    let l2 = g2["lease"]["id"].as_str().expect("lease id").to_owned();
    assert!(c.active(&ua, &old).await && c.active(&ub, &old).await);
    let (s, r) = c
        .post(&ub, &format!("/v1/leases/{l2}/renew"), Some(&agent), json!({"ttl_secs": 300}))
        .await;
    assert_eq!(s, 200, "{r}");
    let new = r["credential"]["value"].as_str().expect("renewed credential").to_owned();
    until_inactive(&c, &ua, &old, Duration::from_secs(1)).await;
    assert!(c.active(&ua, &new).await, "the renewed credential is active on A");

    // Two replicas race on the same lease: exactly one revocation succeeds.
    let revoke_path = format!("/v1/leases/{l2}/revoke");
    let (r1, r2) = tokio::join!(
        c.post(&ua, &revoke_path, Some(&agent), json!({})),
        c.post(&ub, &revoke_path, Some(&agent), json!({})),
    );
    let ok = [r1.0, r2.0].iter().filter(|s| **s == 200).count();
    assert_eq!(ok, 1, "one revocation wins: {r1:?} {r2:?}");
    // Concurrent grants on both replicas: each is minted once, into the same open task.
    let mut joins = Vec::new();
    for i in 0..10 {
        let base = if i % 2 == 0 { ua.clone() } else { ub.clone() };
        joins.push(tokio::spawn(grant(base, agent.clone(), t.clone())));
    }
    let mut lease_ids = Vec::new();
    for j in joins {
        let (s, g) = j.await.expect("join");
        assert_eq!(s, 201, "{g}");
        lease_ids.push(g["lease"]["id"].as_str().expect("id").to_owned());
    }
    lease_ids.sort();
    lease_ids.dedup();
    assert_eq!(lease_ids.len(), 10, "ten distinct leases");

    // A step-up request made on A is approved on B and claimed on A; no approval is lost.
    let (s, p) = c
        .post(&ua, &format!("/v1/tasks/{t}/requests"), Some(&agent),
            json!({"resource": "deploy-pipeline", "actions": ["deploy"], "ttl_secs": 600, "justification": "ship"}))
        .await;
    assert_eq!(s, 202, "{p}");
    let rid = p["request"]["id"].as_str().expect("rid").to_owned();
    let digest = p["request"]["digest"].as_str().expect("digest").to_owned();
    let bob = c.token(&ub, json!({"kind": "human", "subject": "bob", "groups": ["prod-approvers"], "ttl_secs": 3600})).await;
    let (s, v) = c
        .post(&ub, &format!("/v1/approvals/{rid}/approve"), Some(&bob), json!({"digest": digest, "reason": "ok"}))
        .await;
    assert_eq!((s, v["state"].as_str()), (200, Some("approved")), "{v}");
    let (s, claimed) = c
        .post(&ua, &format!("/v1/tasks/{t}/requests/{rid}/claim"), Some(&agent), json!({}))
        .await;
    assert_eq!(s, 201, "{claimed}");
    let deploy = claimed["credential"]["value"].as_str().expect("credential").to_owned();

    // A dies in the middle of the task; B finishes it.
    a.kill();
    let (s, done) = c
        .post(&ub, &format!("/v1/tasks/{t}/complete"), Some(&agent), json!({}))
        .await;
    assert_eq!(s, 200, "{done}");
    assert_eq!(done["state"], "completed");
    assert!(!c.active(&ub, &deploy).await, "completing revoked the task's credentials");
    let (_, leases) = c.get(&ub, &format!("/v1/tasks/{t}/leases"), &agent).await;
    for l in leases.as_array().expect("leases") {
        assert_ne!(l["state"], "active", "{l}");
    }

    // One audit chain, written by both replicas, verifies.
    let admin = c.token(&ub, json!({"kind": "human", "subject": "auditor", "groups": ["latch-admins"], "ttl_secs": 3600})).await;
    let export = c
        .http
        .get(format!("{ub}/v1/audit/export"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("export")
        .text()
        .await
        .expect("export body");
    let (_, jwks) = c.call("GET", format!("{ub}/.well-known/jwks.json"), None, Value::Null).await;
    let v = JwksCheckpointVerifier::from_jwks(&jwks).expect("jwks");
    let report = verify_export(BufReader::new(export.as_bytes()), &v, &[]).expect("verify");
    assert!(report.problem.is_none(), "{:?}", report.problem);
    assert!(report.records > 40, "{} records", report.records);
    let issued = export.matches("credential.issued").count();
    assert!(issued >= 13, "every grant audited once: {issued}");

    drop(b);
    db.drop_db().await;
    let _ = std::fs::remove_dir_all(dir);
}
