//! Micro-benchmarks of the steps of the grant path, to explain where the time of
//! `latch bench` goes.
//!
//! * `policy/*`: Cedar evaluation with the example schema and policies (allow, step-up).
//! * `mint/*`: signing a JWT access token with an ephemeral key (EdDSA, ES256).
//! * `hmac/credential`: the keyed HMAC the broker stores instead of a credential.
//! * `broker/*`: the in-process broker of a test server (example config, SQLite file in WAL
//!   with `synchronous=FULL` on the temp dir's disk): verifying a workload token, a whole grant
//!   without HTTP (verify + policy + mint + durable write + audit), introspection.
//! * `store/*`: the same server's SQLite store alone: a point read, and committing one audit
//!   event or a grant-shaped batch (request + lease + 3 audit events) in one transaction.
//! * `http/*`: one grant and one introspection through HTTP on loopback, one client.
//!
//! Run: `cargo bench -p latch-cli --bench grant_path` (about a minute and a half).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unimplemented,
    clippy::too_many_lines,
    reason = "test code: a failed step fails the test, and a scenario reads best in one piece"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use latch_core::broker::{CallCtx, RequestAccess};
use latch_core::digest::CredentialHasher;
use latch_core::model::{
    AuditEvent, AuditKind, Resource, Task, TaskState, Workload, WorkloadClaims, new_id,
};
use latch_core::policy::{ApprovalContext, EvalInput, HistoryInput, PolicyEngine, PolicySource};
use latch_core::ports::{CredentialProvider, MintRequest, Write, WriteBatch};
use latch_providers::jwt::JwtProvider;
use latch_providers::keyring::{SigningAlg, SigningKeys};
use latch_server::examples::{
    DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, EXAMPLE_POLICIES, EXAMPLE_SCHEMA,
};
use secrecy::ExposeSecret;
use serde_json::json;

fn configure() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(2))
        .without_plots()
}

fn engine() -> PolicyEngine {
    let schema = PolicySource {
        name: "latch.cedarschema".into(),
        text: EXAMPLE_SCHEMA.into(),
    };
    let policies: Vec<PolicySource> = EXAMPLE_POLICIES
        .iter()
        .map(|(n, t)| PolicySource {
            name: (*n).into(),
            text: (*t).into(),
        })
        .collect();
    let actions: Vec<String> = ["read", "write", "deploy", "admin"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    PolicyEngine::load(&schema, &policies, &actions).expect("example policies load")
}

fn workload(now: i64) -> Workload {
    Workload {
        id: "latch-dev://workload#repo:acme/payments-api:ref:refs/heads/main".into(),
        issuer: "latch-dev://workload".into(),
        subject: "repo:acme/payments-api:ref:refs/heads/main".into(),
        preset: "github_actions".into(),
        run_binding: Some("acme/payments-api#4242#1".into()),
        on_behalf_of: None,
        claims: WorkloadClaims {
            repository: Some("acme/payments-api".into()),
            repository_id: Some("12345".into()),
            repository_owner: Some("acme".into()),
            git_ref: Some("refs/heads/main".into()),
            branch: Some("main".into()),
            ref_protected: Some(true),
            event_name: Some("push".into()),
            runner_environment: Some("github-hosted".into()),
            workflow_ref: Some(
                "acme/payments-api/.github/workflows/agent.yml@refs/heads/main".into(),
            ),
            ..WorkloadClaims::default()
        },
        token_expires_at_unix_secs: now + 3600,
    }
}

fn task(w: &Workload, env: &str, production: bool, now: i64) -> Task {
    Task {
        id: format!("task_{env}"),
        owner: w.clone(),
        purpose: "bench".into(),
        repository: Some("acme/payments-api".into()),
        branch: Some("main".into()),
        environment: env.into(),
        production,
        on_behalf_of: None,
        state: TaskState::Open,
        created_at_unix_secs: now,
        expires_at_unix_secs: now + 3600,
        ended_at_unix_secs: None,
        version: 1,
    }
}

fn resource(
    id: &str,
    env: &str,
    sensitivity: &str,
    actions: &[&str],
    production: bool,
) -> Resource {
    Resource {
        id: id.into(),
        kind: "jwt".into(),
        environment: env.into(),
        sensitivity: sensitivity.into(),
        audience: format!("https://{id}.acme.example"),
        actions: actions.iter().map(|s| s.to_string()).collect(),
        max_ttl_secs: 1800,
        max_lifetime_secs: 3600,
        default_ttl_secs: 600,
        owner: None,
        production,
        egress: false,
        end_task_on_budget_breach: false,
        settings: serde_json::Value::Null,
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn bench_policy(c: &mut Criterion) {
    let e = engine();
    let now = now();
    let w = workload(now);
    let sandbox = task(&w, "sandbox", false, now);
    let prod = task(&w, "production", true, now);
    let cache = resource("ci-cache", "sandbox", "internal", &["read", "write"], false);
    let deploy = resource(
        "deploy-pipeline",
        "production",
        "confidential",
        &["deploy"],
        true,
    );
    let none = ApprovalContext::default();
    let read = vec!["read".to_string()];
    let dep = vec!["deploy".to_string()];
    let allow = EvalInput {
        workload: &w,
        resource: &cache,
        actions: &read,
        task: &sandbox,
        ttl_secs: 600,
        now_unix_secs: now,
        source_ip: Some("127.0.0.1"),
        approval: &none,
        principals: None,
        history: HistoryInput::empty(),
    };
    assert_eq!(e.evaluate(&allow).kind(), "allow");
    let step = EvalInput {
        resource: &deploy,
        actions: &dep,
        task: &prod,
        ..allow.clone()
    };
    assert_eq!(e.evaluate(&step).kind(), "step_up");
    let mut g = c.benchmark_group("policy");
    g.bench_function("allow (ci-cache read)", |b| {
        b.iter(|| black_box(e.evaluate(black_box(&allow))))
    });
    g.bench_function("step_up (deploy-pipeline deploy)", |b| {
        b.iter(|| black_box(e.evaluate(black_box(&step))))
    });
    g.finish();
}

fn bench_mint(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let now = now();
    let w = workload(now);
    let t = task(&w, "sandbox", false, now);
    let r = resource("ci-cache", "sandbox", "internal", &["read", "write"], false);
    let actions = vec!["read".to_string()];
    let params = serde_json::Value::Null;
    let mut g = c.benchmark_group("mint");
    for (name, alg) in [
        ("jwt EdDSA", SigningAlg::EdDsa),
        ("jwt ES256", SigningAlg::Es256),
    ] {
        let keys = Arc::new(SigningKeys::generate_ephemeral(alg).expect("key"));
        let p = JwtProvider::new("http://127.0.0.1:8080".into(), keys);
        g.bench_function(name, |b| {
            b.iter(|| {
                let req = MintRequest {
                    lease_id: "lease_0123456789abcdef",
                    task: &t,
                    principal_id: &w.id,
                    resource: &r,
                    actions: &actions,
                    issued_at_unix_secs: now,
                    expires_at_unix_secs: now + 600,
                    params: &params,
                    binding: &Default::default(),
                };
                black_box(rt.block_on(p.mint(&req)).expect("mint"))
            })
        });
    }
    g.finish();

    let h = CredentialHasher::new(&[7u8; 32]);
    // A token of the size the jwt provider mints (≈ 650 bytes).
    let token = "e".repeat(650);
    c.bench_function("hmac/credential (650 B)", |b| {
        b.iter(|| black_box(h.hmac_hex(black_box(&token))))
    });
}

fn bench_broker(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let ts = rt.block_on(latch_testkit::TestServer::start());
    let broker = ts.broker().clone();
    let token = rt.block_on(ts.agent("bench-1"));
    let task_id = rt.block_on(ts.open_task(&token, "sandbox", 3600));
    let grant_once = |_: ()| {
        let broker = broker.clone();
        let token = token.clone();
        let task_id = task_id.clone();
        async move {
            let ctx = CallCtx::new(Some("rq_bench".into()), Some("127.0.0.1".into()));
            let w = broker
                .authenticate_workload(&ctx, Some(&token))
                .await
                .expect("auth");
            let body: RequestAccess =
                serde_json::from_value(json!({"resource": "ci-cache", "actions": ["read"]}))
                    .expect("body");
            let out = broker
                .request_access(
                    &ctx,
                    &w,
                    &task_id,
                    body,
                    &latch_core::model::TokenBinding::NONE,
                )
                .await
                .expect("grant");
            broker.flush(&ctx).await.expect("flush");
            out
        }
    };
    let sample = match rt.block_on(grant_once(())) {
        latch_core::broker::AccessOutcome::Granted(g) => g,
        _ => panic!("ci-cache read should be granted"),
    };
    let granted = sample.credential.secret.expose_secret().to_owned();

    let mut g = c.benchmark_group("broker");
    g.bench_function("verify workload token (EdDSA)", |b| {
        b.iter(|| {
            rt.block_on(async {
                let ctx = CallCtx::new(None, None);
                black_box(
                    broker
                        .authenticate_workload(&ctx, Some(&token))
                        .await
                        .expect("auth"),
                )
            })
        })
    });
    g.bench_function(
        "grant in-process (verify+policy+mint+durable write+audit)",
        |b| b.iter(|| black_box(rt.block_on(grant_once(())))),
    );
    g.bench_function("introspect in-process", |b| {
        b.iter(|| black_box(rt.block_on(broker.introspect(black_box(&granted)))))
    });
    g.finish();

    // The durable write alone: the store of the same server, one transaction per batch.
    let store = broker.store().clone();
    let mut g = c.benchmark_group("store");
    g.bench_function("read task by id", |b| {
        b.iter(|| black_box(rt.block_on(store.task(&task_id)).expect("read")))
    });
    g.bench_function("commit 1 audit event (1 tx, fsync)", |b| {
        b.iter(|| {
            let e = AuditEvent::new(now(), AuditKind::ToolUsed, "bench", "ok");
            black_box(
                rt.block_on(store.apply(WriteBatch::new().audit(e)))
                    .expect("apply"),
            )
        })
    });
    // One grant's rows, with fresh ids, appended to `batch`.
    let add_grant = |batch: WriteBatch| {
        let mut req = sample.request.clone();
        let mut lease = sample.lease.clone();
        req.id = new_id("req");
        lease.id = new_id("lease");
        lease.request_id = req.id.clone();
        req.lease_id = Some(lease.id.clone());
        let ev = |kind: AuditKind| {
            AuditEvent::new(now(), kind, "bench", "ok")
                .task(&task_id)
                .lease(&lease.id)
                .detail(json!({"resource": "ci-cache", "actions": ["read"]}))
        };
        batch
            .write(Write::InsertRequest(req.clone()))
            .write(Write::InsertLease(lease.clone()))
            .audit(AuditEvent::new(
                now(),
                AuditKind::AuthSucceeded,
                "bench",
                "ok",
            ))
            .audit(ev(AuditKind::RequestDecided))
            .audit(ev(AuditKind::CredentialIssued))
    };
    g.bench_function(
        "commit grant batch: request+lease+3 audit (1 tx, fsync)",
        |b| {
            b.iter(|| {
                black_box(
                    rt.block_on(store.apply(add_grant(WriteBatch::new())))
                        .expect("apply"),
                )
            })
        },
    );
    // What group commit would give with today's store: 10 grants' rows in one transaction
    // (divide by 10 for the cost per grant).
    g.bench_function(
        "commit 10 grant batches in 1 tx (group commit, ÷10 per grant)",
        |b| {
            b.iter(|| {
                let batch = (0..10).fold(WriteBatch::new(), |acc, _| add_grant(acc));
                black_box(rt.block_on(store.apply(batch)).expect("apply"))
            })
        },
    );
    g.finish();

    let mut g = c.benchmark_group("http");
    let http = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .build()
        .expect("client");
    let url = format!("{}/v1/tasks/{task_id}/requests", ts.base);
    let bearer = format!("Bearer {token}");
    g.bench_function("grant over loopback (1 client)", |b| {
        b.iter(|| {
            rt.block_on(async {
                let r = http
                    .post(&url)
                    .header("authorization", &bearer)
                    .header("content-type", "application/json")
                    .body(r#"{"resource":"ci-cache","actions":["read"]}"#)
                    .send()
                    .await
                    .expect("send");
                assert_eq!(r.status().as_u16(), 201);
                black_box(r.bytes().await.expect("body"))
            })
        })
    });
    let iurl = format!("{}/v1/oauth/introspect", ts.base);
    let form = format!("token={granted}");
    g.bench_function("introspect over loopback (1 client)", |b| {
        b.iter(|| {
            rt.block_on(async {
                let r = http
                    .post(&iurl)
                    .basic_auth(DEMO_CLIENT_ID, Some(DEMO_CLIENT_SECRET))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(form.clone())
                    .send()
                    .await
                    .expect("send");
                assert_eq!(r.status().as_u16(), 200);
                black_box(r.bytes().await.expect("body"))
            })
        })
    });
    g.finish();
    rt.block_on(ts.stop());
}

criterion_group! {
    name = grant_path;
    config = configure();
    targets = bench_policy, bench_mint, bench_broker
}
criterion_main!(grant_path);
