//! The provider contract with a provider that has external state and can fail: intent is
//! recorded before minting, a failed revocation is retried with backoff, shows `revoke_failed`
//! after repeated failures (never forgotten), and completes once the target is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use async_trait::async_trait;
use latch_core::broker::{AccessOutcome, BrokerParts, CallCtx, OpenTask, RequestAccess};
use latch_core::model::{Lease, LeaseState, Principal, TaskState, Workload, WorkloadClaims};
use latch_core::policy::{PolicyEngine, PolicySource};
use latch_core::ports::{CredentialProvider, IdentityVerifier, MintRequest, Minted, ProviderError};
use latch_core::{ApiError, Broker, BrokerSettings, ManualClock};
use secrecy::SecretString;

/// A provider whose target can be "down".
#[derive(Default)]
struct Flaky {
    down: AtomicBool,
    revoke_calls: AtomicU32,
    live: std::sync::Mutex<std::collections::HashSet<String>>,
}

#[async_trait]
impl CredentialProvider for Flaky {
    fn kind(&self) -> &str {
        "flaky"
    }
    fn has_external_state(&self) -> bool {
        true
    }
    async fn mint(&self, req: &MintRequest<'_>) -> Result<Minted, ProviderError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(ProviderError::retryable("target unreachable"));
        }
        self.live.lock().unwrap().insert(req.lease_id.to_owned());
        Ok(Minted {
            credential: latch_core::model::DeliveredCredential {
                kind: "password".into(),
                secret: SecretString::from(format!("pw-{}", req.lease_id)),
                metadata: serde_json::json!({"user": req.lease_id}),
            },
            revocation_handle: req.lease_id.to_owned(),
        })
    }
    async fn revoke(&self, lease: &Lease) -> Result<(), ProviderError> {
        self.revoke_calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(ProviderError::retryable("target unreachable"));
        }
        self.live.lock().unwrap().remove(&lease.revocation_handle);
        Ok(())
    }
}

struct NoVerifier;
#[async_trait]
impl IdentityVerifier for NoVerifier {
    async fn verify(&self, _token: &str) -> Result<Principal, ApiError> {
        Err(ApiError::new(
            latch_core::ErrorCode::SignatureInvalid,
            "not used",
        ))
    }
}

fn workload() -> Workload {
    Workload {
        id: "iss#agent".into(),
        issuer: "iss".into(),
        subject: "agent".into(),
        preset: "generic".into(),
        run_binding: Some("run-1".into()),
        on_behalf_of: None,
        claims: WorkloadClaims {
            branch: Some("main".into()),
            ..Default::default()
        },
        token_expires_at_unix_secs: i64::MAX,
    }
}

async fn broker(clock: &ManualClock, flaky: Arc<Flaky>) -> Broker {
    let store = Arc::new(
        latch_store::SqliteStore::open("sqlite::memory:")
            .await
            .unwrap(),
    );
    broker_on(store, clock, flaky).await
}

/// A broker on `store` (two brokers on one store stand for two replicas).
async fn broker_on(
    store: Arc<dyn latch_core::ports::Store>,
    clock: &ManualClock,
    flaky: Arc<Flaky>,
) -> Broker {
    let schema = PolicySource {
        name: "s".into(),
        text: latch_server::examples::EXAMPLE_SCHEMA.into(),
    };
    let policy = PolicyEngine::load(
        &schema,
        &[PolicySource {
            name: "p.cedar".into(),
            text: "permit (principal, action, resource);".into(),
        }],
        &[
            "read".into(),
            "write".into(),
            "deploy".into(),
            "admin".into(),
        ],
    )
    .unwrap();
    let resource = latch_core::model::Resource {
        id: "db".into(),
        kind: "flaky".into(),
        environment: "sandbox".into(),
        sensitivity: "internal".into(),
        audience: "db".into(),
        actions: vec!["read".into()],
        max_ttl_secs: 600,
        max_lifetime_secs: 1200,
        default_ttl_secs: 600,
        owner: None,
        production: false,
        egress: false,
        end_task_on_budget_breach: false,
        settings: serde_json::Value::Null,
    };
    Broker::new(BrokerParts {
        clock: Arc::new(clock.clone()),
        store,
        verifier: Arc::new(NoVerifier),
        policy,
        providers: vec![flaky],
        resources: vec![resource],
        hmac_key: vec![7; 32],
        settings: BrokerSettings {
            revoke_backoff_base_secs: 2,
            revoke_backoff_max_secs: 60,
            revoke_alert_after: 3,
            ..Default::default()
        },
    })
    .await
    .unwrap()
}

/// Opens a sandbox task for [`workload`] (`ttl_secs` as given, else the default).
async fn sandbox_task(b: &Broker, ttl_secs: Option<i64>) -> latch_core::model::Task {
    b.open_task(
        &CallCtx::default(),
        &workload(),
        OpenTask {
            purpose: "p".into(),
            environment: "sandbox".into(),
            ttl_secs,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// Asks for `read` on the `db` resource in task `task_id`.
async fn read_db(b: &Broker, task_id: &str) -> Result<AccessOutcome, ApiError> {
    b.request_access(
        &CallCtx::default(),
        &workload(),
        task_id,
        RequestAccess {
            resource: "db".into(),
            actions: vec!["read".into()],
            ..Default::default()
        },
        &latch_core::model::TokenBinding::NONE,
    )
    .await
}

#[tokio::test]
async fn failed_revocations_are_retried_with_backoff_visible_and_never_forgotten() {
    let clock = ManualClock::new(1_000_000);
    let flaky = Arc::new(Flaky::default());
    let b = broker(&clock, flaky.clone()).await;
    let ctx = CallCtx::default();
    let w = workload();
    let task = sandbox_task(&b, Some(900)).await;
    let out = read_db(&b, &task.id).await.unwrap();
    let AccessOutcome::Granted(g) = out else {
        panic!("granted expected")
    };
    assert_eq!(g.lease.state, LeaseState::Active);
    assert!(g.lease.expires_at_unix_secs <= task.expires_at_unix_secs);
    assert_eq!(flaky.live.lock().unwrap().len(), 1);

    // The target goes down; the task ends. The lease is not forgotten: it is `revoking`.
    flaky.down.store(true, Ordering::SeqCst);
    b.end_task(&ctx, &w, &task.id, TaskState::Completed)
        .await
        .unwrap();
    let l = &b.leases(&w, &task.id).await.unwrap()[0];
    assert_eq!(l.state, LeaseState::Revoking);
    assert_eq!(l.revoke_attempts, 1);
    assert_eq!(l.last_revoke_error.as_deref(), Some("target unreachable"));
    let first_retry = l.next_revoke_at_unix_secs.unwrap();
    assert_eq!(first_retry, 1_000_000 + 2);

    // Not due yet: the reaper leaves it alone (backoff).
    let calls = flaky.revoke_calls.load(Ordering::SeqCst);
    assert_eq!(b.reap().await.unwrap().revocations_failed, 0);
    assert_eq!(flaky.revoke_calls.load(Ordering::SeqCst), calls);
    // Due: retried, fails, backoff doubles; after 3 attempts it shows revoke_failed.
    let mut delays = vec![];
    for _ in 0..4 {
        let l = b.leases(&w, &task.id).await.unwrap()[0].clone();
        clock.set(l.next_revoke_at_unix_secs.unwrap());
        assert_eq!(b.reap().await.unwrap().revocations_failed, 1);
        let n = b.leases(&w, &task.id).await.unwrap()[0].clone();
        delays.push(n.next_revoke_at_unix_secs.unwrap() - l.next_revoke_at_unix_secs.unwrap());
    }
    assert_eq!(delays, vec![4, 8, 16, 32]);
    let l = b.leases(&w, &task.id).await.unwrap()[0].clone();
    assert_eq!(
        l.state,
        LeaseState::RevokeFailed,
        "visible after repeated failures"
    );
    assert_eq!(
        flaky.live.lock().unwrap().len(),
        1,
        "the credential still exists at the target"
    );

    // The target comes back: the next due attempt revokes it.
    flaky.down.store(false, Ordering::SeqCst);
    clock.set(l.next_revoke_at_unix_secs.unwrap());
    assert_eq!(b.reap().await.unwrap().leases_revoked, 1);
    let l = b.leases(&w, &task.id).await.unwrap()[0].clone();
    assert_eq!(l.state, LeaseState::Revoked);
    assert!(flaky.live.lock().unwrap().is_empty());
    // The audit trail tells the story.
    let ev = b
        .store()
        .audit_events(&latch_core::model::AuditFilter {
            lease_id: Some(l.id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let fails = ev
        .iter()
        .filter(|e| e.kind == "credential.revocation_failed")
        .count();
    assert_eq!(fails, 5);
    assert_eq!(ev.last().unwrap().kind, "credential.revoked");
    let text = serde_json::to_string(&ev).unwrap();
    assert!(
        !text.contains(&format!("pw-{}", l.id)),
        "no secret in audit"
    );
}

#[tokio::test]
async fn a_failed_mint_leaves_nothing_live_and_an_interrupted_one_is_reaped() {
    let clock = ManualClock::new(2_000_000);
    let flaky = Arc::new(Flaky::default());
    let b = broker(&clock, flaky.clone()).await;
    let w = workload();
    let task = sandbox_task(&b, None).await;
    flaky.down.store(true, Ordering::SeqCst);
    let err = read_db(&b, &task.id).await.unwrap_err();
    assert_eq!(err.code, latch_core::ErrorCode::ProviderFailed);
    // The intent was recorded, then revoked (retried until the target answers).
    let l = b.leases(&w, &task.id).await.unwrap()[0].clone();
    assert!(
        matches!(l.state, LeaseState::Revoking | LeaseState::Revoked),
        "{:?}",
        l.state
    );
    flaky.down.store(false, Ordering::SeqCst);
    clock.advance(3600);
    b.reap().await.unwrap();
    let l = b.leases(&w, &task.id).await.unwrap()[0].clone();
    assert_eq!(l.state, LeaseState::Revoked);
}

/// Ending a task while a grant into it is in flight never leaves a credential behind: whichever
/// commits first, once the task is ended no lease of it is active and no token of it introspects
/// active (a red-team pass found grants committed between the end's lease read and its commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ending_a_task_races_grants_without_leaving_a_live_credential() {
    let s = latch_testkit::TestServer::start().await;
    let agent = s.agent("race-end").await;
    for round in 0..20 {
        let t = s.open_task(&agent, "sandbox", 600).await;
        let complete = format!("/v1/tasks/{t}/complete");
        let (done, granted) = tokio::join!(
            s.post(Some(&agent), &complete, serde_json::json!({})),
            s.request(&agent, &t, "ci-cache", &["read"], None),
        );
        assert_eq!(done.status, 200, "round {round}: {}", done.body);
        let leases = s.get(Some(&agent), &format!("/v1/tasks/{t}/leases")).await;
        for l in leases.body.as_array().unwrap() {
            assert_ne!(
                l["state"], "active",
                "round {round}: a lease outlived its task: {l}"
            );
        }
        if let Some(tok) = granted.body["credential"]["value"].as_str() {
            assert_eq!(s.introspect(tok).await["active"], false, "round {round}");
        }
    }
    s.stop().await;
}

/// A replica answers introspection from its cache only while its change feed proves, within
/// the staleness bound, that it has applied every earlier change. When the proofs stop (a feed
/// that stalls without an error), a revocation made on another replica is honoured once the
/// bound has passed, because lookups go back to the store. Time is the fake clock's.
#[tokio::test]
async fn a_replica_cache_answers_only_while_its_change_feed_proves_it_current() {
    use latch_core::Clock;
    use latch_core::broker::CacheState;
    use secrecy::ExposeSecret;
    use std::time::Duration;

    let clock = ManualClock::new(1_000_000);
    let flaky = Arc::new(Flaky::default());
    let store: Arc<dyn latch_core::ports::Store> = Arc::new(
        latch_store::SqliteStore::open("sqlite::memory:")
            .await
            .unwrap(),
    );
    let a = broker_on(store.clone(), &clock, flaky.clone()).await;
    let b = broker_on(store, &clock, flaky).await;
    // Replica b follows a change feed with a 500 ms bound; nothing has been proved yet.
    b.follow_change_feed(Duration::from_millis(500));
    assert_eq!(b.cache_state(), CacheState::Stale { age_ms: None });

    let ctx = CallCtx::default();
    let w = workload();
    let task = sandbox_task(&a, Some(900)).await;
    let AccessOutcome::Granted(g) = read_db(&a, &task.id).await.unwrap() else {
        panic!("granted expected")
    };
    let value = g.credential.secret.expose_secret().to_owned();

    // The feed proves b current; b answers, and caches the lease.
    b.confirm_cache_fresh(clock.monotonic());
    assert_eq!(b.cache_state(), CacheState::Fresh { age_ms: 0 });
    assert!(b.introspect(&value).await.active);
    // A notification naming no rows empties the cache but proves nothing less.
    b.clear_caches();
    assert_eq!(b.cache_state(), CacheState::Fresh { age_ms: 0 });
    assert!(b.introspect(&value).await.active, "read again, and cached");

    // Replica a revokes. b's feed has stalled: no invalidation, no more proofs.
    a.revoke(&ctx, &w, &g.lease.id).await.unwrap();
    assert!(!a.introspect(&value).await.active);
    // Inside the bound b's cache still answers: that window is what the bound allows.
    clock.advance_millis(499);
    assert!(
        b.introspect(&value).await.active,
        "the cache answers within the bound"
    );
    // At the bound b stops trusting its cache and reads the store: the revocation holds.
    clock.advance_millis(1);
    assert_eq!(b.cache_state(), CacheState::Stale { age_ms: Some(500) });
    assert!(!b.introspect(&value).await.active);
    // A proof from before the revocation cannot bring the stale answer back...
    b.confirm_cache_fresh(clock.monotonic() - Duration::from_millis(600));
    assert!(!b.introspect(&value).await.active);
    // ...and a feed that is down bypasses the cache altogether.
    b.set_cache_trusted(false);
    assert_eq!(b.cache_state(), CacheState::Bypassed);
    assert!(!b.introspect(&value).await.active);
}
