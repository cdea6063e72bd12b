//! Latch's test kit (unpublished): a real server on `127.0.0.1:0` with a [`ManualClock`], the
//! example configuration, a file-pinned test issuer, and helpers to talk to it over HTTP.
//!
//! Tests use the fake clock and never sleep for TTL logic.

#![expect(
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines,
    reason = "test support: a set-up step that fails aborts the test that called it, and the store suite's scenarios read best in one piece"
)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
pub use latch_core::ManualClock;
use latch_server::{Server, StartOptions};
use serde_json::{Value, json};

pub mod oidc;
pub mod store_suite;

/// Issuer URL of the [`TestIssuer`].
pub const TEST_ISSUER: &str = "https://ci.test.example";
/// Audience the test issuer's tokens carry and the broker expects.
pub const TEST_AUDIENCE: &str = "https://latch.test";

// ------------------------------------------------------------------ secret scan

/// Everything the suite's servers said where a secret must never appear: every log line (all
/// levels, captured by a process-wide subscriber), every error body, every audit record.
#[derive(Default)]
struct Corpus {
    minted: Vec<String>,
    said: Vec<String>,
}

fn corpus() -> &'static Mutex<Corpus> {
    static C: OnceLock<Mutex<Corpus>> = OnceLock::new();
    C.get_or_init(|| Mutex::new(Corpus::default()))
}

fn with_corpus<T>(f: impl FnOnce(&mut Corpus) -> T) -> T {
    f(&mut corpus()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner))
}

#[derive(Clone, Copy)]
struct LogSink;

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = String::from_utf8_lossy(buf).into_owned();
        with_corpus(|c| c.said.push(line));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber once per test process: the broker's own logging set-up
/// ([`latch_server::logging`]) at the most verbose level, `trace`, which the fixed cap holds
/// at `info` for third-party libraries as in production.
fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = latch_server::logging::init(
            latch_server::logging::Format::Json,
            tracing_subscriber::EnvFilter::new("trace"),
            || LogSink,
        );
    });
}

/// Registers a credential value handed out in a test; [`assert_no_secret_leaked`] looks for it.
pub fn register_minted(value: &str) {
    if value.len() >= 16 {
        with_corpus(|c| c.minted.push(value.to_owned()));
    }
}

/// Adds text the broker produced (an error body, an export) to the scanned corpus.
pub fn record_output(text: String) {
    with_corpus(|c| c.said.push(text));
}

/// Number of log lines, error bodies and audit exports captured so far in this process.
pub fn captured_count() -> usize {
    with_corpus(|c| c.said.len())
}

/// Number of credentials registered so far in this process.
pub fn minted_count() -> usize {
    with_corpus(|c| c.minted.len())
}

/// Panics if any credential minted anywhere in this test process appears in any log line,
/// error body or audit record captured so far.
///
/// # Panics
/// Naming where the value was found (never the value).
pub fn assert_no_secret_leaked() {
    with_corpus(|c| {
        for (i, m) in c.minted.iter().enumerate() {
            if let Some(hit) = c.said.iter().find(|s| s.contains(m.as_str())) {
                let mut at = hit.chars().take(80).collect::<String>();
                at = at.replace(m.as_str(), "<secret>");
                panic!("minted credential #{i} leaked into broker output starting `{at}`");
            }
        }
    });
}

fn note_response(status: u16, body: &Value) {
    if let Some(v) = body["credential"]["value"].as_str() {
        register_minted(v);
    }
    if let Some(v) = body["access_token"].as_str() {
        register_minted(v);
    }
    if status >= 400 {
        record_output(body.to_string());
    }
}

/// Options for [`TestServer::start_with`].
#[derive(Debug, Clone, Default)]
pub struct TestOptions {
    /// TOML appended to the example configuration (extra issuers, resources, …).
    pub extra_config: String,
    /// Run the policy file watcher (off by default; tests call reload directly).
    pub policy_watch: bool,
    /// Reuse this directory (restart tests); default a fresh temp dir.
    pub dir: Option<PathBuf>,
    /// Reuse this clock; default a new one at the current wall time.
    pub clock: Option<ManualClock>,
    /// Replace `[approvals] pending_ttl`.
    pub pending_ttl: Option<&'static str>,
    /// Extra policy files (name, text) written beside the example policies before start.
    pub extra_policies: Vec<(String, String)>,
    /// Text replacements (from, to) made in the example configuration before start, e.g.
    /// `signing_alg = "EdDSA"` to `signing_alg = "ES256"`. Each `from` must occur.
    pub replace: Vec<(String, String)>,
}

/// A running broker for tests.
pub struct TestServer {
    server: Option<Server>,
    /// Its directory (config, policies, data).
    pub dir: PathBuf,
    /// The fake clock it runs on.
    pub clock: ManualClock,
    /// `http://127.0.0.1:port`.
    pub base: String,
    /// HTTP client.
    pub http: reqwest::Client,
    /// The file-pinned test issuer.
    pub issuer: Arc<TestIssuer>,
    opts: TestOptions,
}

/// A status and JSON body.
#[derive(Debug, Clone)]
pub struct Resp {
    /// HTTP status.
    pub status: u16,
    /// Body (`Null` if empty, a string if not JSON).
    pub body: Value,
    /// `x-request-id` header.
    pub request_id: Option<String>,
}

impl Resp {
    /// `error.code` of an error body, or top-level `code` of a denial.
    pub fn code(&self) -> Option<&str> {
        self.body
            .get("error")
            .and_then(|e| e.get("code"))
            .and_then(Value::as_str)
            .or_else(|| self.body.get("code")?.as_str())
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Whether a TCP service is reachable. When it is not: under `CI=true` this panics (a test must
/// never silently pass); otherwise it prints a loud warning and returns false.
pub fn service_available(name: &str, addr: &str) -> bool {
    let ok = addr.parse::<std::net::SocketAddr>().ok().is_some_and(|a| {
        std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(2)).is_ok()
    });
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{name} is not reachable at {addr}, and CI=true: this test needs it");
        }
        eprintln!(
            "\n!!!!! SKIPPING: {name} is not reachable at {addr} (set CI=true to make this a failure) !!!!!\n"
        );
    }
    ok
}

/// Whether a command exists; same CI rule as [`service_available`].
pub fn tool_available(name: &str, probe: &[&str]) -> bool {
    let ok = std::process::Command::new(name)
        .args(probe)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("`{name}` is not available, and CI=true: this test needs it");
        }
        eprintln!(
            "\n!!!!! SKIPPING: `{name}` is not available (set CI=true to make this a failure) !!!!!\n"
        );
    }
    ok
}

impl TestServer {
    /// Starts a server with the example configuration.
    pub async fn start() -> Self {
        Self::start_with(TestOptions::default()).await
    }

    /// Starts a server with options.
    pub async fn start_with(opts: TestOptions) -> Self {
        capture_logs();
        let dir = opts.dir.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("latch-test-{}", uuid::Uuid::new_v4().simple()))
        });
        let clock = opts
            .clock
            .clone()
            .unwrap_or_else(|| ManualClock::new(now_unix()));
        let issuer = Arc::new(TestIssuer::load_or_create(&dir));
        let path =
            latch_server::examples::write_example(&dir, "127.0.0.1:0").expect("write example");
        for (name, body) in &opts.extra_policies {
            std::fs::write(dir.join("policies").join(name), body).expect("write policy");
        }
        let mut text = std::fs::read_to_string(&path).expect("read config");
        text = text.replace(
            "[reaper]\ninterval = \"5s\"",
            "[reaper]\ninterval = \"5s\"\nenabled = false",
        );
        if !opts.policy_watch {
            text = text.replace("watch = true ", "watch = false");
        } else {
            text = text.replace("poll_interval = \"2s\"", "poll_interval = \"100ms\"");
        }
        for (from, to) in &opts.replace {
            assert!(text.contains(from.as_str()), "the example has no {from:?}");
            text = text.replace(from.as_str(), to);
        }
        if let Some(p) = opts.pending_ttl {
            text = text.replace("pending_ttl = \"15m\"", &format!("pending_ttl = \"{p}\""));
        }
        text.push_str(&format!(
            "\n[[issuers]]\nname = \"test-ci\"\nissuer = \"{TEST_ISSUER}\"\nkind = \"workload\"\npreset = \"github_actions\"\n\
             audience = \"{TEST_AUDIENCE}\"\nalgorithms = [\"EdDSA\"]\njwks = {{ file = \"test-jwks.json\" }}\n"
        ));
        text.push_str(&opts.extra_config);
        std::fs::write(&path, text).expect("write config");
        let config = latch_server::Config::load(&path).expect("config");
        let server = latch_server::start(
            config,
            StartOptions {
                clock: Some(Arc::new(clock.clone())),
            },
        )
        .await
        .expect("server starts");
        let base = server.base_url.clone();
        Self {
            server: Some(server),
            dir,
            clock,
            base,
            http: reqwest::Client::new(),
            issuer,
            opts,
        }
    }

    /// The audit checkpointer inside (it signs checkpoints and audit retention's cuts).
    pub fn checkpointer(&self) -> &Arc<latch_server::audit::Checkpointer> {
        &self.server.as_ref().expect("running").checkpointer
    }

    /// The broker inside (for driving the reaper and policy reloads without sleeping).
    pub fn broker(&self) -> &Arc<latch_core::Broker> {
        &self.server.as_ref().expect("running").broker
    }

    /// Path of the configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("latch.toml")
    }

    /// Crashes the server (no graceful shutdown) and starts a new one on the same directory,
    /// database and clock.
    pub async fn crash_and_restart(mut self) -> Self {
        if let Some(s) = self.server.take() {
            s.abort();
        }
        // Let the aborted tasks drop their connections.
        tokio::task::yield_now().await;
        let mut opts = self.opts.clone();
        opts.dir = Some(self.dir.clone());
        opts.clock = Some(self.clock.clone());
        opts.extra_config = self.opts.extra_config.clone();
        Self::start_with(opts).await
    }

    /// Stops gracefully and removes the directory. First adds this server's whole audit log
    /// to the scanned corpus and checks that no credential minted anywhere in the suite so far
    /// appears in any log line, error body or audit record.
    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            if let Ok(export) = s.checkpointer.export(0, false).await {
                record_output(export);
            }
            s.shutdown().await;
        }
        assert_no_secret_leaked();
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Resp {
        let r = rb.send().await.expect("http");
        let status = r.status().as_u16();
        let request_id = r
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = r.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        note_response(status, &body);
        Resp {
            status,
            body,
            request_id,
        }
    }

    /// `GET path` with an optional bearer token.
    pub async fn get(&self, token: Option<&str>, path: &str) -> Resp {
        let mut rb = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        self.send(rb).await
    }

    /// `POST path` with JSON and an optional bearer token.
    pub async fn post(&self, token: Option<&str>, path: &str, body: Value) -> Resp {
        let mut rb = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        self.send(rb).await
    }

    /// RFC 7662 introspection as the example's resource server.
    pub async fn introspect(&self, token: &str) -> Value {
        let rb = self
            .http
            .post(format!("{}/v1/oauth/introspect", self.base))
            .basic_auth(
                latch_server::examples::DEMO_CLIENT_ID,
                Some(latch_server::examples::DEMO_CLIENT_SECRET),
            )
            .form(&[("token", token)]);
        let r = self.send(rb).await;
        assert_eq!(
            r.status, 200,
            "introspection answered {}: {}",
            r.status, r.body
        );
        r.body
    }

    /// The `/metrics` exposition (Prometheus text format), as served.
    pub async fn metrics_text(&self) -> String {
        let r = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(r.status(), 200, "GET /metrics");
        r.text().await.expect("the /metrics body")
    }

    /// The value of the unlabelled sample `name` in `/metrics`, if it is there.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = self.metrics_text().await;
        text.lines().find_map(|l| {
            let v = l.strip_prefix(name)?.strip_prefix(' ')?;
            v.trim().parse().ok()
        })
    }

    /// A development-issuer token (`kind` = `workload` or `human`, plus fields).
    pub async fn dev_token(&self, body: Value) -> String {
        let r = self.post(None, "/v1/dev/tokens", body).await;
        assert_eq!(r.status, 200, "dev token: {}", r.body);
        r.body["token"].as_str().expect("token").to_owned()
    }

    /// A main-branch workload token of `acme/payments-api`, run `run_id`, acting for `alice`.
    pub async fn agent(&self, run_id: &str) -> String {
        self.dev_token(json!({"kind": "workload", "repository": "acme/payments-api", "git_ref": "refs/heads/main",
            "actor": "alice", "run_id": run_id, "ttl_secs": 3600}))
        .await
    }

    /// A human token.
    pub async fn human(&self, id: &str, groups: &[&str]) -> String {
        self.dev_token(json!({"kind": "human", "subject": id, "groups": groups, "ttl_secs": 3600}))
            .await
    }

    /// Opens a task and returns its id (asserts 201).
    pub async fn open_task(&self, token: &str, environment: &str, ttl_secs: i64) -> String {
        let r = self
            .post(
                Some(token),
                "/v1/tasks",
                json!({"purpose": "test", "environment": environment, "ttl_secs": ttl_secs}),
            )
            .await;
        assert_eq!(r.status, 201, "open task: {}", r.body);
        r.body["id"].as_str().expect("id").to_owned()
    }

    /// Requests access; returns the raw answer.
    pub async fn request(
        &self,
        token: &str,
        task: &str,
        resource: &str,
        actions: &[&str],
        ttl: Option<i64>,
    ) -> Resp {
        self.post(
            Some(token),
            &format!("/v1/tasks/{task}/requests"),
            json!({"resource": resource, "actions": actions,
            "ttl_secs": ttl, "justification": "test"}),
        )
        .await
    }

    /// Audit events (as an admin human), filtered by `query` (e.g. `task_id=…`).
    pub async fn audit(&self, query: &str) -> Vec<Value> {
        let admin = self.human("auditor", &["latch-admins"]).await;
        let r = self
            .get(Some(&admin), &format!("/v1/audit?limit=1000&{query}"))
            .await;
        assert_eq!(r.status, 200, "audit: {}", r.body);
        r.body.as_array().cloned().unwrap_or_default()
    }
}

/// A workload-identity issuer for tests: an Ed25519 key whose JWKS is pinned in a file beside
/// the configuration (`test-jwks.json`), and helpers to sign arbitrary headers and claims.
pub struct TestIssuer {
    pkcs8: Vec<u8>,
    /// Key id in the JWKS.
    pub kid: String,
    dir: PathBuf,
}

impl TestIssuer {
    /// Loads the issuer key kept in `dir` (restart tests), or creates one and writes its JWKS.
    pub fn load_or_create(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("dir");
        let key_path = dir.join("test-issuer.pk8");
        let pkcs8 = match std::fs::read(&key_path) {
            Ok(k) => k,
            Err(_) => {
                let k = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
                    .expect("keygen")
                    .as_ref()
                    .to_vec();
                std::fs::write(&key_path, &k).expect("write key");
                k
            }
        };
        let me = Self {
            pkcs8,
            kid: "test-key-1".into(),
            dir: dir.to_path_buf(),
        };
        me.write_jwks(&[&me]);
        me
    }

    /// A fresh key with another kid (for rotation tests); its JWKS is not written.
    pub fn rotated(&self, kid: &str) -> Self {
        let k = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .expect("keygen")
            .as_ref()
            .to_vec();
        Self {
            pkcs8: k,
            kid: kid.into(),
            dir: self.dir.clone(),
        }
    }

    /// The public JWK.
    pub fn jwk(&self) -> Value {
        let kp = Ed25519KeyPair::from_pkcs8(&self.pkcs8).expect("key");
        json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(kp.public_key().as_ref()),
               "kid": self.kid, "alg": "EdDSA", "use": "sig"})
    }

    /// Writes `test-jwks.json` with the given keys.
    pub fn write_jwks(&self, keys: &[&TestIssuer]) {
        let set = json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()});
        std::fs::write(self.dir.join("test-jwks.json"), set.to_string()).expect("write jwks");
    }

    /// Signs `claims` with `header` (a JSON object; `kid` is not added for you).
    pub fn sign_raw(&self, header: &Value, claims: &Value) -> String {
        let kp = Ed25519KeyPair::from_pkcs8(&self.pkcs8).expect("key");
        let h = URL_SAFE_NO_PAD.encode(header.to_string());
        let p = URL_SAFE_NO_PAD.encode(claims.to_string());
        let input = format!("{h}.{p}");
        let sig = kp.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    /// Signs `claims` with a normal EdDSA header and this key's kid.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_raw(
            &json!({"alg": "EdDSA", "typ": "JWT", "kid": self.kid}),
            claims,
        )
    }

    /// GitHub-Actions-shaped claims valid at `now` for the test issuer and audience.
    pub fn github_claims(now: i64, run_id: &str) -> Value {
        json!({
            "iss": TEST_ISSUER, "aud": TEST_AUDIENCE, "sub": "repo:acme/payments-api:ref:refs/heads/main",
            "iat": now, "nbf": now, "exp": now + 600, "jti": uuid::Uuid::new_v4().to_string(),
            "repository": "acme/payments-api", "repository_id": "734001", "repository_owner": "acme",
            "ref": "refs/heads/main", "ref_protected": "true", "event_name": "push", "actor": "alice",
            "run_id": run_id, "run_attempt": "1", "runner_environment": "github-hosted",
            "job_workflow_ref": "acme/payments-api/.github/workflows/agent.yml@refs/heads/main",
        })
    }
}

// ------------------------------------------------------------------ PostgreSQL

/// Address of the local PostgreSQL the tests use (trust authentication, user `postgres`).
pub const PG_ADDR: &str = "127.0.0.1:5432";

/// A fresh, uniquely named database on the local PostgreSQL ([`PG_ADDR`]), dropped (with
/// `FORCE`, ending leftover sessions) by [`drop_db`](Self::drop_db) or, best effort, on drop.
pub struct TempPgDatabase {
    name: String,
    admin_url: String,
    dropped: bool,
}

impl TempPgDatabase {
    /// Creates `latch_test_<tag>_<random>` on the server at `addr` (`host:port`).
    ///
    /// # Panics
    /// If the server refuses the connection or the `CREATE DATABASE`.
    pub async fn create_at(addr: &str, tag: &str) -> Self {
        use sqlx::Connection;
        let name = format!(
            "latch_test_{tag}_{}",
            uuid::Uuid::new_v4()
                .simple()
                .to_string()
                .get(..12)
                .unwrap_or("x")
        );
        let admin_url = format!("postgres://postgres@{addr}/postgres");
        let mut c = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("connect to postgres as `postgres`");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut c)
            .await
            .expect("create test database");
        // As the book asks of operators (docs/src/providers/postgres.md): only latch's role (here the superuser) connects.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "REVOKE CONNECT ON DATABASE {name} FROM PUBLIC"
        )))
        .execute(&mut c)
        .await
        .expect("revoke connect from public");
        let _ = c.close().await;
        Self {
            name,
            admin_url,
            dropped: false,
        }
    }

    /// Creates a database on the shared local server ([`PG_ADDR`]).
    ///
    /// # Panics
    /// As [`create_at`](Self::create_at).
    pub async fn create(tag: &str) -> Self {
        Self::create_at(PG_ADDR, tag).await
    }

    /// The `postgres://` URL of the database.
    pub fn url(&self) -> String {
        self.admin_url
            .strip_suffix("/postgres")
            .map(|base| format!("{base}/{}", self.name))
            .unwrap_or_default()
    }

    /// Process ids of the backends `LISTEN`ing on this database (a change feed's connection:
    /// its last statement is the `LISTEN`).
    ///
    /// # Panics
    /// If the server cannot be queried.
    pub async fn listening_backends(&self) -> Vec<i32> {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&self.url())
            .await
            .expect("connect to the test database");
        let pids = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
             AND pid <> pg_backend_pid() AND query ILIKE 'listen%'",
        )
        .fetch_all(&mut c)
        .await
        .expect("list listening backends");
        let _ = c.close().await;
        pids
    }

    /// Drops the database, ending any session still connected to it.
    pub async fn drop_db(mut self) {
        self.dropped = true;
        drop_database(&self.admin_url, &self.name).await;
    }
}

async fn drop_database(admin_url: &str, name: &str) {
    use sqlx::Connection;
    if let Ok(mut c) = sqlx::PgConnection::connect(admin_url).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut c)
        .await;
        let _ = c.close().await;
    }
}

impl Drop for TempPgDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        // A panicking test still cleans up: on a thread of its own, outside any runtime.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(drop_database(&admin, &name));
            }
        })
        .join();
    }
}

/// Whether this process may freeze PostgreSQL backends (it runs as root), by the same CI rule
/// as [`service_available`]: when it may not, fails under `CI=true` and says so loudly otherwise.
pub fn can_freeze_backends() -> bool {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "freezing PostgreSQL backends (SIGSTOP) needs root, and CI=true: this test needs it"
            );
        }
        eprintln!(
            "\n!!!!! SKIPPING: freezing PostgreSQL backends (SIGSTOP) needs root (set CI=true to make this a failure) !!!!!\n"
        );
    }
    root
}

/// PostgreSQL backends frozen with SIGSTOP, as a connection that stalls without any error (no
/// reset, no data: a hung backend or a half-open TCP connection). Resumed with SIGCONT on drop,
/// however the test ends: a frozen backend would block the server's shutdown and
/// `DROP DATABASE`.
#[derive(Debug, Default)]
pub struct FrozenBackends(Vec<i32>);

impl FrozenBackends {
    /// Freezes `pids` (adds them to those already frozen).
    ///
    /// # Panics
    /// If a signal cannot be sent (see [`can_freeze_backends`]).
    pub fn freeze(&mut self, pids: &[i32]) {
        for pid in pids {
            let ok = std::process::Command::new("kill")
                .args(["-STOP", &pid.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill -STOP {pid}");
            self.0.push(*pid);
        }
    }

    /// The frozen backends.
    pub fn pids(&self) -> &[i32] {
        &self.0
    }
}

impl Drop for FrozenBackends {
    /// Never panics (it may run while a failed test unwinds).
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &pid.to_string()])
                .status();
        }
    }
}

#[cfg(test)]
mod scan_tests {
    /// The scan is not vacuous: a registered value in captured output is reported.
    #[test]
    #[should_panic(expected = "leaked into broker output")]
    fn a_leaked_value_is_reported() {
        super::register_minted("secret-value-0123456789");
        super::record_output("error: bad token secret-value-0123456789 given".into());
        super::assert_no_secret_leaked();
    }
}
