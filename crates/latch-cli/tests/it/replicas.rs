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
pub(super) struct Replica {
    child: Child,
    pub(super) base: String,
    /// Set when the replica logs that its store change feed is connected (caches trusted).
    feed_up: Arc<AtomicBool>,
}

impl Replica {
    pub(super) fn spawn(config: &Path) -> Self {
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
                // The listening address (a shared `public_url` may name a load balancer).
                let v: Value = serde_json::from_str(&line).expect("json log line");
                break format!("http://{}", v["fields"]["addr"].as_str().expect("addr"));
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
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "change feed not connected"
            );
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
pub(super) fn config(db: &TempPgDatabase) -> (PathBuf, PathBuf) {
    config_with(db, None)
}

/// [`config`], with every replica's `public_url` set to `public_url` (as behind one load
/// balancer).
fn config_with(db: &TempPgDatabase, public_url: Option<&str>) -> (PathBuf, PathBuf) {
    let dir =
        std::env::temp_dir().join(format!("latch-replicas-{}", uuid::Uuid::new_v4().simple()));
    let path = latch_server::examples::write_example(&dir, "127.0.0.1:0").expect("example");
    let text = std::fs::read_to_string(&path).expect("read config");
    let text = text
        .replacen(
            "[store]\n",
            &format!("[store]\nurl = \"{}\"\nreaper_claim = \"2s\"\n", db.url()),
            1,
        )
        .replacen("interval = \"5s\"", "interval = \"250ms\"", 1);
    let text = match public_url {
        Some(u) => text.replacen(
            "[server]\n",
            &format!("[server]\npublic_url = \"{u}\"\n"),
            1,
        ),
        None => text,
    };
    assert!(text.contains("reaper_claim"), "store section rewritten");
    std::fs::write(&path, text).expect("write config");
    (dir, path)
}

pub(super) struct Client {
    pub(super) http: reqwest::Client,
}

impl Client {
    async fn call(
        &self,
        method: &str,
        url: String,
        token: Option<&str>,
        body: Value,
    ) -> (u16, Value) {
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
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
    pub(super) async fn post(
        &self,
        base: &str,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> (u16, Value) {
        self.call("POST", format!("{base}{path}"), token, body)
            .await
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
    pub(super) async fn active(&self, base: &str, credential: &str) -> bool {
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

impl Client {
    /// Revokes `lease` through `base` (200 expected).
    async fn revoke(&self, base: &str, agent: &str, lease: &str) {
        let (s, r) = self
            .post(
                base,
                &format!("/v1/leases/{lease}/revoke"),
                Some(agent),
                json!({}),
            )
            .await;
        assert_eq!(s, 200, "{r}");
    }

    /// Opens a task for `agent` on `base`; returns its id.
    pub(super) async fn open_task(
        &self,
        base: &str,
        agent: &str,
        purpose: &str,
        environment: &str,
    ) -> String {
        let (s, task) = self
            .post(
                base,
                "/v1/tasks",
                Some(agent),
                json!({"purpose": purpose, "environment": environment}),
            )
            .await;
        assert_eq!(s, 201, "{task}");
        task["id"].as_str().expect("task id").to_owned()
    }
}

pub(super) async fn agent(c: &Client, base: &str) -> String {
    c.token(
        base,
        json!({"kind": "workload", "repository": "acme/payments-api",
        "git_ref": "refs/heads/main", "actor": "alice", "run_id": "7", "ttl_secs": 3600}),
    )
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
    let t = c.open_task(&ua, &agent, "replicas", "production").await;
    let grant = |base: String, agent: String, t: String| {
        let c = Client {
            http: c.http.clone(),
        };
        async move {
            c.post(&base, &format!("/v1/tasks/{t}/requests"), Some(&agent),
                json!({"resource": "payments-db", "actions": ["read"], "ttl_secs": 300, "justification": "j"}))
                .await
        }
    };
    let (s, g) = grant(ub.clone(), agent.clone(), t.clone()).await;
    assert_eq!(s, 201, "{g}");
    let cred = g["credential"]["value"]
        .as_str()
        .expect("credential")
        .to_owned();
    let lease = g["lease"]["id"].as_str().expect("lease id").to_owned();
    assert!(c.active(&ua, &cred).await, "minted on B, active on A");
    assert!(c.active(&ub, &cred).await);

    // Revoked on A: B answers inactive within a second (its cache is invalidated).
    c.revoke(&ua, &agent, &lease).await;
    let took = until_inactive(&c, &ub, &cred, Duration::from_secs(1)).await;
    eprintln!("revocation reached the other replica in {took:?}");

    // Renewal on B of a lease A has cached: A stops accepting the old credential.
    let (s, g2) = grant(ua.clone(), agent.clone(), t.clone()).await;
    assert_eq!(s, 201, "{g2}");
    let old = g2["credential"]["value"]
        .as_str()
        .expect("credential")
        .to_owned();
    let l2 = g2["lease"]["id"].as_str().expect("lease id").to_owned();
    assert!(c.active(&ua, &old).await && c.active(&ub, &old).await);
    let (s, r) = c
        .post(
            &ub,
            &format!("/v1/leases/{l2}/renew"),
            Some(&agent),
            json!({"ttl_secs": 300}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let new = r["credential"]["value"]
        .as_str()
        .expect("renewed credential")
        .to_owned();
    until_inactive(&c, &ua, &old, Duration::from_secs(1)).await;
    assert!(
        c.active(&ua, &new).await,
        "the renewed credential is active on A"
    );

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
        .post(
            &ub,
            &format!("/v1/approvals/{rid}/approve"),
            Some(&bob),
            json!({"digest": digest, "reason": "ok"}),
        )
        .await;
    assert_eq!((s, v["state"].as_str()), (200, Some("approved")), "{v}");
    let (s, claimed) = c
        .post(
            &ua,
            &format!("/v1/tasks/{t}/requests/{rid}/claim"),
            Some(&agent),
            json!({}),
        )
        .await;
    assert_eq!(s, 201, "{claimed}");
    let deploy = claimed["credential"]["value"]
        .as_str()
        .expect("credential")
        .to_owned();

    // A dies in the middle of the task; B finishes it.
    a.kill();
    let (s, done) = c
        .post(
            &ub,
            &format!("/v1/tasks/{t}/complete"),
            Some(&agent),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{done}");
    assert_eq!(done["state"], "completed");
    assert!(
        !c.active(&ub, &deploy).await,
        "completing revoked the task's credentials"
    );
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
    let (_, jwks) = c
        .call(
            "GET",
            format!("{ub}/.well-known/jwks.json"),
            None,
            Value::Null,
        )
        .await;
    let v = JwksCheckpointVerifier::from_jwks(&jwks).expect("jwks");
    let report = verify_export(
        BufReader::new(export.as_bytes()),
        &v,
        &[],
        &Default::default(),
    )
    .expect("verify");
    assert!(report.problem.is_none(), "{:?}", report.problem);
    assert!(report.records > 40, "{} records", report.records);
    let issued = export.matches("credential.issued").count();
    assert!(issued >= 13, "every grant audited once: {issued}");

    drop(b);
    db.drop_db().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs SQL on the test database (to forge a dead replica's reaper claims, or read rows).
async fn sql(db: &TempPgDatabase) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(&db.url())
        .await
        .expect("connect")
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A replica dies holding reaper claims on leases about to expire: the surviving replica
/// leaves them alone until the claims expire, then revokes each exactly once, on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_replicas_reaper_claims_are_taken_over() {
    if !service_available("postgres", PG_ADDR) {
        return;
    }
    let db = TempPgDatabase::create("takeover").await;
    let (dir, path) = config(&db);
    let mut a = Replica::spawn(&path);
    let b = Replica::spawn(&path);
    let c = Client {
        http: reqwest::Client::new(),
    };
    let agent = agent(&c, &a.base).await;
    let t = c.open_task(&a.base, &agent, "takeover", "sandbox").await;
    let mut leases = Vec::new();
    for _ in 0..5 {
        let (s, g) = c
            .post(&a.base, &format!("/v1/tasks/{t}/requests"), Some(&agent),
                json!({"resource": "ci-cache", "actions": ["read"], "ttl_secs": 4, "justification": "j"}))
            .await;
        assert_eq!(s, 201, "{g}");
        leases.push(g["lease"]["id"].as_str().expect("id").to_owned());
    }
    // A dies right after claiming them (its claims are forged here: a SIGKILL between the
    // claim and the revocation cannot be timed from outside). The leases live 4 s, so the
    // claims are in place before they fall due even on a loaded machine; the claims outlast
    // the leases by 2 s.
    a.kill();
    let claim_until = now_unix() + 6;
    let mut conn = sql(&db).await;
    let n = sqlx::query(
        "UPDATE leases SET claim_owner = 'replica-a-dead', claim_until = $1 WHERE task_id = $2",
    )
    .bind(claim_until)
    .bind(&t)
    .execute(&mut conn)
    .await
    .expect("forge claims")
    .rows_affected();
    assert_eq!(n, 5);
    // B's reaper (every 250 ms) must leave the expired leases alone until the claims expire.
    let start = Instant::now();
    let all_revoked = async |c: &Client| {
        let (_, ls) = c
            .get(&b.base, &format!("/v1/tasks/{t}/leases"), &agent)
            .await;
        ls.as_array()
            .expect("leases")
            .iter()
            .filter(|l| l["state"] == "revoked")
            .map(|l| l["revoked_at_unix_secs"].as_i64().expect("revoked at"))
            .collect::<Vec<_>>()
    };
    let revoked_at = loop {
        let r = all_revoked(&c).await;
        if r.len() == 5 {
            break r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "not revoked in time: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for at in &revoked_at {
        assert!(
            *at >= claim_until,
            "revoked at {at}, before the claim expired at {claim_until}"
        );
        assert!(
            *at <= claim_until + 2,
            "revoked at {at}, late (claim expired at {claim_until})"
        );
    }
    let per_lease: Vec<i64> = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE kind = 'credential.revoked' AND task_id = $1 \
         GROUP BY lease_id",
    )
    .bind(&t)
    .fetch_all(&mut conn)
    .await
    .expect("count");
    assert_eq!(per_lease, vec![1; 5], "each lease revoked exactly once");
    drop(conn);
    drop(b);
    db.drop_db().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A private PostgreSQL server (initdb on a temp dir, run as the `postgres` user) that a test
/// may restart without disturbing the shared one.
pub(super) struct PrivatePg {
    pub(super) dir: PathBuf,
    port: u16,
}

impl PrivatePg {
    const BIN: &str = "/usr/lib/postgresql/15/bin";

    fn as_postgres(args: &[&str]) -> std::process::Output {
        let mut cmd = if nix_is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]);
            c
        } else {
            Command::new(args[0])
        };
        let rest = if nix_is_root() { args } else { &args[1..] };
        cmd.args(rest)
            .stdin(Stdio::null())
            .output()
            .expect("run postgres tool")
    }

    pub(super) fn start() -> Option<Self> {
        if !Path::new(&format!("{}/initdb", Self::BIN)).exists() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "PostgreSQL 15 server binaries are missing and CI=true"
            );
            eprintln!("\n!!!!! SKIPPING: no {}/initdb !!!!!\n", Self::BIN);
            return None;
        }
        let dir = std::env::temp_dir().join(format!("latch-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        if nix_is_root() {
            let st = Command::new("chown")
                .args(["postgres:postgres", dir.to_str().expect("utf-8")])
                .status()
                .expect("chown");
            assert!(st.success());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let data = dir.join("data");
        let out = Self::as_postgres(&[
            &format!("{}/initdb", Self::BIN),
            "-D",
            data.to_str().expect("utf-8"),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]);
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pg = Self { dir, port };
        pg.ctl("start");
        Some(pg)
    }

    fn ctl(&self, verb: &str) {
        let data = self.dir.join("data");
        let log = self.dir.join("log");
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=on",
            self.port,
            self.dir.display()
        );
        let out = Self::as_postgres(&[
            &format!("{}/pg_ctl", Self::BIN),
            "-D",
            data.to_str().expect("utf-8"),
            "-l",
            log.to_str().expect("utf-8"),
            "-o",
            &opts,
            "-m",
            "fast",
            "-w",
            verb,
        ]);
        assert!(
            out.status.success(),
            "pg_ctl {verb}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub(super) fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = Self::as_postgres(&[
            &format!("{}/pg_ctl", Self::BIN),
            "-D",
            data.to_str().unwrap_or_default(),
            "-m",
            "immediate",
            "-w",
            "stop",
        ]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// PostgreSQL restarts while two replicas take grants: every acknowledged grant is in the
/// store afterwards, both replicas serve again without being restarted, and the audit chain
/// verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restart_under_load_loses_no_acknowledged_write() {
    let Some(pg) = PrivatePg::start() else {
        return;
    };
    let db = TempPgDatabase::create_at(&pg.addr(), "restart").await;
    let (dir, path) = config(&db);
    let a = Replica::spawn(&path);
    let b = Replica::spawn(&path);
    let c = Client {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client"),
    };
    let agent = agent(&c, &a.base).await;
    let t = c.open_task(&a.base, &agent, "load", "sandbox").await;
    let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for i in 0..4 {
        let base = if i % 2 == 0 {
            a.base.clone()
        } else {
            b.base.clone()
        };
        let (http, agent, t) = (c.http.clone(), agent.clone(), t.clone());
        let (acked, failed, stop) = (acked.clone(), failed.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let c = Client { http };
            while !stop.load(Ordering::SeqCst) {
                let (s, g) = c
                    .post(&base, &format!("/v1/tasks/{t}/requests"), Some(&agent),
                        json!({"resource": "ci-cache", "actions": ["read"], "ttl_secs": 600, "justification": "j"}))
                    .await;
                if s == 201 {
                    let id = g["lease"]["id"].as_str().expect("id").to_owned();
                    acked.lock().expect("lock").push(id);
                } else {
                    failed.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    let count = || acked.lock().expect("lock").len();
    let wait_more = async |n: usize, what: &str| {
        let start = Instant::now();
        while count() < n {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{what}: only {} grants",
                count()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    wait_more(20, "before the restart").await;
    pg.ctl("restart");
    let after_restart = count();
    wait_more(
        after_restart + 20,
        "after the restart (brokers must recover)",
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.expect("worker");
    }
    let acked = acked.lock().expect("lock").clone();
    eprintln!(
        "{} grants acknowledged, {} failed while the server restarted",
        acked.len(),
        failed.load(Ordering::SeqCst)
    );
    let mut conn = sql(&db).await;
    let stored: Vec<String> = sqlx::query_scalar("SELECT id FROM leases WHERE task_id = $1")
        .bind(&t)
        .fetch_all(&mut conn)
        .await
        .expect("leases");
    for id in &acked {
        assert!(stored.contains(id), "acknowledged lease {id} was lost");
    }
    drop(conn);
    // Both replicas serve without a restart, and the chain they wrote verifies.
    for r in [&a, &b] {
        let (s, _) = c.get(&r.base, &format!("/v1/tasks/{t}"), &agent).await;
        assert_eq!(s, 200);
    }
    let admin = c.token(&b.base, json!({"kind": "human", "subject": "auditor", "groups": ["latch-admins"], "ttl_secs": 3600})).await;
    let export = c
        .http
        .get(format!("{}/v1/audit/export", b.base))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("export")
        .text()
        .await
        .expect("body");
    let (_, jwks) = c
        .call(
            "GET",
            format!("{}/.well-known/jwks.json", b.base),
            None,
            Value::Null,
        )
        .await;
    let v = JwksCheckpointVerifier::from_jwks(&jwks).expect("jwks");
    let report = verify_export(
        BufReader::new(export.as_bytes()),
        &v,
        &[],
        &Default::default(),
    )
    .expect("verify");
    assert!(report.problem.is_none(), "{:?}", report.problem);
    drop((a, b));
    db.drop_db().await;
    drop(pg);
    let _ = std::fs::remove_dir_all(dir);
}

async fn readyz(c: &Client, base: &str) -> (u16, Value) {
    c.call("GET", format!("{base}/readyz"), None, Value::Null)
        .await
}

/// The red-team case: a replica's change-feed connection stalls without any error (its
/// PostgreSQL backend is frozen with SIGSTOP: no reset, no notification, no error, exactly like
/// a half-open connection). A revocation made on the other replica is still honoured there
/// within one second, because the stalled feed stops proving the cache current; `/readyz`
/// answers at once and reports the stale cache; and the replica replaces the stalled
/// connection by itself, after which revocations travel by notification again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silently_stalled_change_feed_still_honours_revocation_within_a_second() {
    if !service_available("postgres", PG_ADDR) {
        return;
    }
    if !latch_testkit::can_freeze_backends() {
        return;
    }
    let db = TempPgDatabase::create("stall").await;
    let (dir, path) = config(&db);
    let a = Replica::spawn(&path);
    let b = Replica::spawn(&path);
    a.wait_feed().await;
    b.wait_feed().await;
    let (ua, ub) = (a.base.clone(), b.base.clone());
    let c = Client {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client"),
    };
    let agent = agent(&c, &ua).await;
    let t = c.open_task(&ua, &agent, "stall", "production").await;
    let grant = || async {
        let (s, g) = c
            .post(&ua, &format!("/v1/tasks/{t}/requests"), Some(&agent),
                json!({"resource": "payments-db", "actions": ["read"], "ttl_secs": 300, "justification": "j"}))
            .await;
        assert_eq!(s, 201, "{g}");
        (
            g["credential"]["value"]
                .as_str()
                .expect("credential")
                .to_owned(),
            g["lease"]["id"].as_str().expect("lease id").to_owned(),
        )
    };
    let (cred, lease) = grant().await;
    // B answers from its cache from now on.
    assert!(c.active(&ub, &cred).await);
    let (s, r) = readyz(&c, &ub).await;
    assert_eq!(
        (s, r["cache"]["state"].as_str()),
        (200, Some("fresh")),
        "{r}"
    );

    // Freeze every change-feed backend of this database (both replicas'): nothing errors.
    let pids = db.listening_backends().await;
    assert_eq!(pids.len(), 2, "one listener per replica: {pids:?}");
    let mut stopped = latch_testkit::FrozenBackends::default();
    stopped.freeze(&pids);
    let frozen_at = Instant::now();

    c.revoke(&ua, &agent, &lease).await;
    let took = until_inactive(&c, &ub, &cred, Duration::from_secs(1)).await;
    eprintln!("revocation honoured on the stalled replica after {took:?}");

    // /readyz answers at once and says the cache is not answering; then the replica replaces
    // the stalled connection by itself and its cache is proved current again.
    let mut seen = Vec::new();
    loop {
        let asked = Instant::now();
        let (s, r) = readyz(&c, &ub).await;
        assert_eq!(s, 200, "{r}");
        // Its store check gives up after 2 s: longer means it hung.
        assert!(asked.elapsed() < Duration::from_secs(3), "readyz hung");
        let state = r["cache"]["state"]
            .as_str()
            .expect("cache state")
            .to_owned();
        if seen.last() != Some(&state) {
            seen.push(state.clone());
        }
        if state == "fresh" && seen.len() > 1 {
            break;
        }
        assert!(
            frozen_at.elapsed() < Duration::from_secs(15),
            "the stalled feed was not replaced: states {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        seen.iter().any(|s| s == "stale" || s == "bypassed"),
        "states {seen:?}"
    );
    eprintln!("cache states on the stalled replica: {seen:?}");

    // The old backends are still frozen; revocations reach B through its new connection.
    let (cred2, lease2) = grant().await;
    assert!(c.active(&ub, &cred2).await);
    c.revoke(&ua, &agent, &lease2).await;
    until_inactive(&c, &ub, &cred2, Duration::from_secs(1)).await;
    drop(stopped);
    drop((a, b));
    let _ = std::fs::remove_dir_all(dir);
}

/// Replicas share DPoP replay protection (RFC 9449 §11.1): behind one load balancer (one
/// `public_url`), a proof that bound a credential on one replica is refused as a replay by the
/// other, instead of minting a second credential bound to the same proof.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dpop_proof_is_good_once_across_replicas() {
    if !service_available("postgres", PG_ADDR) {
        return;
    }
    let db = TempPgDatabase::create("dpop").await;
    let public = "http://latch.test";
    let (dir, path) = config_with(&db, Some(public));
    let a = Replica::spawn(&path);
    let b = Replica::spawn(&path);
    let c = Client {
        http: reqwest::Client::new(),
    };
    let agent = agent(&c, &a.base).await;
    let t = c.open_task(&a.base, &agent, "dpop", "production").await;
    let key = crate::oauth::DpopKey::generate();
    let route = format!("/v1/tasks/{t}/requests");
    let proof = key.proof("POST", &format!("{public}{route}"), now_unix(), None, None);
    let grant = |base: String| {
        let (c, agent, proof, route) = (&c, agent.clone(), proof.clone(), route.clone());
        async move {
            let r = c
                .http
                .post(format!("{base}{route}"))
                .bearer_auth(&agent)
                .header("DPoP", proof)
                .json(&json!({"resource": "payments-db", "actions": ["read"], "ttl_secs": 300, "justification": "j"}))
                .send()
                .await
                .expect("http");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.expect("json"))
        }
    };
    let (s, g) = grant(a.base.clone()).await;
    assert_eq!(s, 201, "{g}");
    assert_eq!(g["lease"]["binding"]["jkt"], key.jkt(), "{g}");
    let (s, e) = grant(b.base.clone()).await;
    assert_eq!(s, 401, "{e}");
    assert_eq!(e["error"]["code"], "dpop_proof_invalid", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("replay")),
        "{e}"
    );
    drop((a, b));
    let _ = std::fs::remove_dir_all(dir);
}

/// A kill switch engaged on one replica holds at once on the other (freezes are read from the
/// shared store on every grant), the credential it revoked is inactive there within a second,
/// and the lift on the other replica restores grants on the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_freeze_engaged_on_one_replica_holds_on_the_other() {
    if !service_available("postgres", PG_ADDR) {
        return;
    }
    let db = TempPgDatabase::create("freeze").await;
    let (dir, path) = config(&db);
    let a = Replica::spawn(&path);
    let b = Replica::spawn(&path);
    a.wait_feed().await;
    b.wait_feed().await;
    let (ua, ub) = (a.base.clone(), b.base.clone());
    let c = Client {
        http: reqwest::Client::new(),
    };
    let agent = agent(&c, &ua).await;
    let ops = c
        .token(
            &ua,
            json!({"kind": "human", "subject": "olga", "groups": ["latch-admins"], "ttl_secs": 600}),
        )
        .await;
    let t = c.open_task(&ub, &agent, "freeze", "sandbox").await;
    let ask =
        json!({"resource": "ci-cache", "actions": ["read"], "ttl_secs": 300, "justification": "j"});
    let path_req = format!("/v1/tasks/{t}/requests");
    let (s, g) = c.post(&ub, &path_req, Some(&agent), ask.clone()).await;
    assert_eq!(s, 201, "{g}");
    let cred = g["credential"]["value"].as_str().unwrap().to_owned();
    assert!(c.active(&ub, &cred).await);
    let (s, f) = c
        .post(
            &ua,
            "/v1/admin/freezes",
            Some(&ops),
            json!({"scope": {"kind": "repository", "value": "acme/payments-api"}, "reason": "drill"}),
        )
        .await;
    assert_eq!(s, 201, "{f}");
    let took = until_inactive(&c, &ub, &cred, Duration::from_secs(1)).await;
    eprintln!("the kill switch on A reached B's introspection in {took:?}");
    let (s, r) = c.post(&ub, &path_req, Some(&agent), ask.clone()).await;
    assert_eq!(
        (s, r["error"]["code"].as_str()),
        (423, Some("frozen")),
        "{r}"
    );
    let (s, l) = c.get(&ub, "/v1/admin/freezes", &ops).await;
    assert_eq!((s, l.as_array().map(Vec::len)), (200, Some(1)), "{l}");
    let fid = f["freeze"]["id"].as_str().unwrap();
    let (s, _) = c
        .post(
            &ub,
            &format!("/v1/admin/freezes/{fid}/lift"),
            Some(&ops),
            json!({"reason": "done"}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, g) = c.post(&ua, &path_req, Some(&agent), ask).await;
    assert_eq!(s, 201, "lifted on B, granted on A: {g}");
    drop((a, b));
    db.drop_db().await;
    let _ = std::fs::remove_dir_all(dir);
}
