//! Ambient workload identity: the real `latch` binary finds its token where each platform puts
//! it, against local stand-ins that speak the documented protocols, and the broker verifies
//! every token exactly like a production one (the test issuer's JWKS is trusted by
//! `[[issuers]]` entries with the real presets).
//!
//! - GitHub Actions: an HTTP token service shaped like the Actions one (`GET
//!   $ACTIONS_ID_TOKEN_REQUEST_URL&audience=…` with `Authorization: bearer
//!   $ACTIONS_ID_TOKEN_REQUEST_TOKEN`, answering `{"value": "<jwt>"}`);
//! - GitLab CI: the `id_tokens` variable;
//! - Kubernetes: a projected token file, rotated while `latch exec` runs;
//! - SPIFFE: a Workload API server (gRPC, the published workload.proto) on a Unix socket;
//! - two jobs of one repository on one runner cannot use each other's tasks.

use std::sync::{Arc, Mutex};

use latch_core::clock::Clock;
use latch_testkit::{TEST_AUDIENCE, TestIssuer, TestOptions, TestServer, tool_available};
use serde_json::{Value, json};

/// A stand-in for the GitHub Actions OIDC token service: one job (one run id), one request
/// token; mints GitHub-shaped tokens signed by the test issuer for the audience asked for.
pub(crate) struct ActionsTokenService {
    /// `ACTIONS_ID_TOKEN_REQUEST_URL` (with `?api-version=2.0`, as the runner sets it).
    pub url: String,
    /// `ACTIONS_ID_TOKEN_REQUEST_TOKEN`.
    pub request_token: String,
    /// The audiences asked for, one per call.
    pub audiences: Arc<Mutex<Vec<String>>>,
}

impl ActionsTokenService {
    /// Serves tokens for `run_id` (claims from [`TestIssuer::github_claims`], `extra` merged
    /// over them) at the server's fake-clock time.
    pub(crate) async fn start(s: &TestServer, run_id: &str, extra: Value) -> Self {
        use axum::extract::{Query, State};
        use axum::http::{HeaderMap, StatusCode};
        #[derive(Clone)]
        struct St {
            issuer: Arc<TestIssuer>,
            clock: latch_core::clock::ManualClock,
            run_id: String,
            extra: Value,
            request_token: String,
            audiences: Arc<Mutex<Vec<String>>>,
        }
        async fn token(
            State(st): State<St>,
            headers: HeaderMap,
            Query(q): Query<std::collections::HashMap<String, String>>,
        ) -> Result<axum::Json<Value>, StatusCode> {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let ok = auth.split_once(' ').is_some_and(|(scheme, t)| {
                scheme.eq_ignore_ascii_case("bearer") && t == st.request_token
            });
            if !ok {
                return Err(StatusCode::UNAUTHORIZED);
            }
            if q.get("api-version").map(String::as_str) != Some("2.0") {
                return Err(StatusCode::BAD_REQUEST);
            }
            let aud = q.get("audience").cloned().ok_or(StatusCode::BAD_REQUEST)?;
            st.audiences.lock().unwrap().push(aud.clone());
            let mut claims = TestIssuer::github_claims(st.clock.now_unix_secs(), &st.run_id);
            claims["aud"] = json!(aud);
            if let (Some(c), Some(e)) = (claims.as_object_mut(), st.extra.as_object()) {
                c.extend(e.clone());
            }
            Ok(axum::Json(json!({"value": st.issuer.sign(&claims)})))
        }
        let audiences = Arc::new(Mutex::new(Vec::new()));
        let request_token = format!("ghs-request-{}", uuid::Uuid::new_v4().simple());
        let st = St {
            issuer: s.issuer.clone(),
            clock: s.clock.clone(),
            run_id: run_id.to_owned(),
            extra,
            request_token: request_token.clone(),
            audiences: audiences.clone(),
        };
        let app = axum::Router::new()
            .route("/_apis/distributedtask/token", axum::routing::get(token))
            .with_state(st);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        Self {
            url: format!("http://{addr}/_apis/distributedtask/token?api-version=2.0"),
            request_token,
            audiences,
        }
    }
}

/// Every variable an identity source reads, removed so the host's own never leak in.
pub(crate) const IDENTITY_VARS: &[&str] = &[
    "LATCH_TOKEN",
    "LATCH_IDENTITY",
    "LATCH_AUDIENCE",
    "LATCH_ID_TOKEN",
    "LATCH_GITLAB_TOKEN_VAR",
    "LATCH_K8S_TOKEN_FILE",
    "ACTIONS_ID_TOKEN_REQUEST_URL",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
    "SPIFFE_ENDPOINT_SOCKET",
];

/// `latch` for `s`, with no identity from the host and an empty config dir (no stored login).
pub(crate) fn latch(s: &TestServer) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_latch"));
    for v in IDENTITY_VARS {
        c.env_remove(v);
    }
    c.env("LATCH_SERVER", &s.base)
        .env("LATCH_CONFIG_DIR", scratch())
        .env("LATCH_K8S_TOKEN_FILE", "/nonexistent/latch-token");
    c
}

fn in_job(c: &mut tokio::process::Command, job: &ActionsTokenService) {
    c.env("ACTIONS_ID_TOKEN_REQUEST_URL", &job.url)
        .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", &job.request_token)
        .env("LATCH_AUDIENCE", TEST_AUDIENCE);
}

pub(crate) fn scratch() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("latch-amb-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

async fn run(c: &mut tokio::process::Command) -> (i32, Value, String) {
    let out = c.output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let body = serde_json::from_str(&stdout).unwrap_or(Value::String(stdout));
    (
        out.status.code().unwrap_or(-1),
        body,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

async fn open_task(s: &TestServer, job: &ActionsTokenService) -> (i32, Value, String) {
    let mut c = latch(s);
    in_job(&mut c, job);
    c.args([
        "task",
        "open",
        "--purpose",
        "ci",
        "--environment",
        "sandbox",
        "--json",
    ]);
    run(&mut c).await
}

#[tokio::test]
async fn github_actions_identity_comes_from_the_token_service() {
    let s = TestServer::start().await;
    let job = ActionsTokenService::start(&s, "5001", json!({})).await;
    let (code, body, err) = open_task(&s, &job).await;
    assert_eq!(code, 0, "{body} {err}");
    assert_eq!(body["owner"]["preset"], "github_actions", "{body}");
    assert_eq!(body["owner"]["run_binding"], "gh-run:5001/1", "{body}");
    assert_eq!(body["owner"]["claims"]["run_id"], "5001", "{body}");
    assert_eq!(
        *job.audiences.lock().unwrap(),
        vec![TEST_AUDIENCE.to_owned()]
    );

    // A wrong request token: the token service refuses, `latch` says so in one line.
    let mut c = latch(&s);
    in_job(&mut c, &job);
    c.env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "stolen")
        .args(["task", "list"]);
    let (code, _, err) = run(&mut c).await;
    assert_eq!(code, 1);
    assert!(err.contains("answered 401"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // Another audience: GitHub mints it, the broker refuses it like any foreign token.
    let mut c = latch(&s);
    in_job(&mut c, &job);
    c.args(["task", "list", "--audience", "https://elsewhere.example"]);
    let (code, body, err) = run(&mut c).await;
    assert_ne!(code, 0, "{body}");
    assert!(
        format!("{body}{err}").contains("audience_mismatch"),
        "{body} {err}"
    );

    // An explicit `--token` wins over the ambient identity.
    let agent = s.agent("7777").await;
    let mut c = latch(&s);
    in_job(&mut c, &job);
    c.args([
        "task",
        "open",
        "--token",
        &agent,
        "--purpose",
        "p",
        "--environment",
        "sandbox",
        "--json",
    ]);
    let (code, body, err) = run(&mut c).await;
    assert_eq!(code, 0, "{body} {err}");
    assert_eq!(body["owner"]["run_binding"], "gh-run:7777/1", "{body}");
    assert_eq!(job.audiences.lock().unwrap().len(), 2, "--token: no fetch");
}

#[tokio::test]
async fn no_identity_is_one_line_naming_the_options() {
    let s = TestServer::start().await;
    let (code, _, err) = run(latch(&s).args(["task", "list"])).await;
    assert_eq!(code, 1);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    for option in [
        "--token",
        "--identity",
        "LATCH_IDENTITY",
        "id-token: write",
        "--gitlab-token-var",
        "--k8s-token-file",
        "SPIFFE_ENDPOINT_SOCKET",
        "LATCH_TOKEN",
        "latch login",
    ] {
        assert!(err.contains(option), "{option} missing: {err}");
    }
    // A named source that is not there says what is missing.
    let (code, _, err) = run(latch(&s).args(["task", "list", "--identity", "github"])).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("ACTIONS_ID_TOKEN_REQUEST_URL is not set"),
        "{err}"
    );
}

#[tokio::test]
async fn shared_runner_jobs_cannot_use_each_others_tasks() {
    let s = TestServer::start().await;
    // Two jobs of acme/payments-api, one runner: the same repository and workflow, two runs.
    let a = ActionsTokenService::start(&s, "6001", json!({})).await;
    let b = ActionsTokenService::start(&s, "6002", json!({})).await;
    let (code, task, err) = open_task(&s, &a).await;
    assert_eq!(code, 0, "{err}");
    let id = task["id"].as_str().unwrap().to_owned();
    // The same workload id for both: only the run tells them apart.
    let (_, task_b, _) = open_task(&s, &b).await;
    assert_eq!(task["owner"]["id"], task_b["owner"]["id"]);

    for args in [
        vec!["task", "show", id.as_str(), "--json"],
        vec!["task", "complete", id.as_str(), "--json"],
        vec![
            "request",
            id.as_str(),
            "--resource",
            "ci-cache",
            "--action",
            "read",
            "--json",
        ],
    ] {
        let mut c = latch(&s);
        in_job(&mut c, &b);
        let (code, body, err) = run(c.args(&args)).await;
        assert_ne!(code, 0, "job B {args:?}: {body}");
        assert_eq!(
            body["error"]["code"], "task_not_found",
            "{args:?}: {body} {err}"
        );
    }
    // Job A still uses its task.
    let mut c = latch(&s);
    in_job(&mut c, &a);
    let (code, body, err) = run(c.args([
        "request",
        &id,
        "--resource",
        "ci-cache",
        "--action",
        "read",
        "--json",
    ]))
    .await;
    assert_eq!(code, 0, "{body} {err}");
    assert_eq!(body["status"], "granted", "{body}");
}

const K8S_ISSUER: &str = "https://kubernetes.test.example";
const GITLAB_ISSUER: &str = "https://gitlab.test.example";

fn more_issuers() -> String {
    format!(
        "\n[[issuers]]\nname = \"test-k8s\"\nissuer = \"{K8S_ISSUER}\"\nkind = \"workload\"\n\
         preset = \"kubernetes\"\naudience = \"{TEST_AUDIENCE}\"\nalgorithms = [\"EdDSA\"]\n\
         jwks = {{ file = \"test-jwks.json\" }}\n\
         \n[[issuers]]\nname = \"test-gitlab\"\nissuer = \"{GITLAB_ISSUER}\"\nkind = \"workload\"\n\
         preset = \"gitlab_ci\"\naudience = \"{TEST_AUDIENCE}\"\nalgorithms = [\"EdDSA\"]\n\
         jwks = {{ file = \"test-jwks.json\" }}\n"
    )
}

/// A projected service-account token bound to a pod, from the shared case's claims.
fn k8s_token(s: &TestServer, iat: i64, exp: i64) -> String {
    let text = include_str!(
        "../../../../testdata/identity-claims/kubernetes-projected-service-account.json"
    );
    let mut c: Value = serde_json::from_str(text).unwrap();
    c["iss"] = json!(K8S_ISSUER);
    c["aud"] = json!([TEST_AUDIENCE]);
    c["iat"] = json!(iat);
    c["nbf"] = json!(iat);
    c["exp"] = json!(exp);
    c["jti"] = json!(uuid::Uuid::new_v4().to_string());
    s.issuer.sign(&c)
}

#[tokio::test]
async fn kubernetes_token_file_is_read_again_after_the_kubelet_rotates_it() {
    let s = TestServer::start_with(TestOptions {
        extra_config: more_issuers(),
        ..Default::default()
    })
    .await;
    let now = s.clock.now_unix_secs();
    let dir = scratch();
    let file = dir.join("latch-token");
    let first = k8s_token(&s, now, now + 600);
    let second = k8s_token(&s, now + 500, now + 4000);
    std::fs::write(&file, &first).unwrap();
    std::fs::write(dir.join("rotated"), &second).unwrap();

    // The command waits for the test: the kubelet rotates the file meanwhile, and the first
    // token expires (fake clock). Ending the task then needs the second token.
    let mut c = latch(&s);
    c.env("LATCH_K8S_TOKEN_FILE", &file)
        .current_dir(&dir)
        .args([
            "exec",
            "--task-purpose",
            "agent step",
            "--request",
            "ci-cache:read",
            "--",
            "sh",
            "-c",
            "echo \"task=$LATCH_TASK_ID\"; touch started; \
             while [ ! -f go ]; do sleep 0.05; done",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    let started = dir.join("started");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !started.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the command never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The kubelet writes the new token (atomically, as it does: a rename).
    std::fs::rename(dir.join("rotated"), &file).unwrap();
    s.clock.advance(700);
    assert_eq!(
        s.get(Some(&first), "/v1/tasks").await.code(),
        Some("token_expired"),
        "the first token is no longer accepted"
    );
    std::fs::write(dir.join("go"), "").unwrap();
    let out = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("completed, credentials revoked"),
        "{stderr}"
    );
    let task = stdout
        .lines()
        .find_map(|l| l.strip_prefix("task="))
        .unwrap();
    let t = s.get(Some(&second), &format!("/v1/tasks/{task}")).await;
    assert_eq!(t.body["state"], "completed", "{}", t.body);
    assert_eq!(
        t.body["owner"]["run_binding"],
        "pod:f1e2d3c4-b5a6-4978-8877-665544332211"
    );
    assert_eq!(
        t.body["owner"]["claims"]["pod_uid"],
        "f1e2d3c4-b5a6-4978-8877-665544332211"
    );
}

#[tokio::test]
async fn gitlab_id_token_comes_from_its_variable() {
    let s = TestServer::start_with(TestOptions {
        extra_config: more_issuers(),
        ..Default::default()
    })
    .await;
    let now = s.clock.now_unix_secs();
    let text = include_str!("../../../../testdata/identity-claims/gitlab-ci-branch.json");
    let mut claims: Value = serde_json::from_str(text).unwrap();
    claims["iss"] = json!(GITLAB_ISSUER);
    claims["aud"] = json!(TEST_AUDIENCE);
    claims["iat"] = json!(now);
    claims["nbf"] = json!(now);
    claims["exp"] = json!(now + 3600);
    let token = s.issuer.sign(&claims);
    for (var, extra) in [
        ("LATCH_ID_TOKEN", None),
        ("MY_LATCH_JWT", Some("MY_LATCH_JWT")),
    ] {
        let mut c = latch(&s);
        c.env(var, &token).args([
            "task",
            "open",
            "--purpose",
            "p",
            "--environment",
            "staging",
            "--json",
        ]);
        if let Some(name) = extra {
            c.args(["--gitlab-token-var", name]);
        }
        let (code, body, err) = run(&mut c).await;
        assert_eq!(code, 0, "{body} {err}");
        assert_eq!(body["owner"]["preset"], "gitlab_ci", "{body}");
        assert_eq!(body["owner"]["run_binding"], "gl-job:302", "{body}");
        assert_eq!(body["owner"]["claims"]["pipeline_id"], "574", "{body}");
    }
}

#[tokio::test]
async fn spiffe_jwt_svid_comes_from_the_workload_api() {
    if !tool_available(
        "python3",
        &[
            "-c",
            "import grpc; from spiffe._proto import workload_pb2_grpc",
        ],
    ) {
        return;
    }
    let ca = super::spiffe::Authority::generate();
    let dir = scratch();
    let bundle_file = dir.join("example.org.bundle.json");
    std::fs::write(&bundle_file, ca.bundle().to_string()).unwrap();
    let aud = super::spiffe::AUD;
    let s = TestServer::start_with(TestOptions {
        extra_config: format!(
            "\n[[issuers]]\nname = \"mesh\"\nkind = \"spiffe\"\ntrust_domain = \"example.org\"\n\
             audience = [\"{aud}\"]\nbundle_file = \"{}\"\n",
            bundle_file.display()
        ),
        ..Default::default()
    })
    .await;
    let id = "spiffe://example.org/ns/payments/sa/api";
    let svid_file = dir.join("svid");
    let exp = s.clock.now_unix_secs() + 600;
    std::fs::write(&svid_file, ca.svid(id, aud, exp)).unwrap();
    let socket = dir.join("agent.sock");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/spiffe-workload-api/server.py"
    );
    let mut agent = tokio::process::Command::new("python3")
        .args([
            script,
            socket.to_str().unwrap(),
            svid_file.to_str().unwrap(),
            aud,
            id,
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(agent.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
            .await
            .expect("the Workload API stand-in starts")
            .unwrap();
        assert_eq!(ready.as_deref(), Some("ready"));
    }
    let endpoint = format!("unix://{}", socket.display());
    for explicit in [false, true] {
        let mut c = latch(&s);
        c.env("SPIFFE_ENDPOINT_SOCKET", &endpoint)
            .env("LATCH_AUDIENCE", aud)
            .args([
                "task",
                "open",
                "--purpose",
                "p",
                "--environment",
                "production",
                "--json",
            ]);
        if explicit {
            c.args(["--identity", "spiffe"]);
        }
        let (code, body, err) = run(&mut c).await;
        assert_eq!(code, 0, "{body} {err}");
        assert_eq!(body["owner"]["preset"], "spiffe", "{body}");
        assert_eq!(body["owner"]["claims"]["spiffe_id"], id, "{body}");
    }
    // What the stand-in saw: the Workload API header and our audience, on every call.
    let log = std::fs::read_to_string(dir.join("svid.log")).unwrap();
    assert_eq!(log, format!("true {aud}\ntrue {aud}\n"));
    // Another audience: the agent refuses, `latch` says so in one line.
    let mut c = latch(&s);
    c.env("SPIFFE_ENDPOINT_SOCKET", &endpoint)
        .env("LATCH_AUDIENCE", "https://elsewhere.example");
    let (code, _, err) = run(c.args(["task", "list"])).await;
    assert_eq!(code, 1);
    assert!(err.contains("no JWT-SVID"), "{err}");
    agent.kill().await.unwrap();
}
