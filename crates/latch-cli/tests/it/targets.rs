//! Targets that stop answering (issue 13, items 1 and 6): every provider call is bounded by
//! `[targets] call_timeout`; a target that hangs fails its own calls only; its revocations are
//! parked (visible, with attempts and the last error) and resumed the moment it answers again;
//! one lease is revoked by one worker at a time.
//!
//! The first tests drive the broker with a provider whose two targets can be made to hang (a
//! future that never completes) or refuse; the last drives the real server against real
//! PostgreSQL and Redis, with PostgreSQL behind a TCP relay that can be frozen: it accepts
//! connections and never answers, as a postmaster stopped with SIGSTOP does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use latch_core::broker::{AccessOutcome, BrokerParts, CallCtx, OpenTask, RequestAccess};
use latch_core::model::{Lease, LeaseState, Principal, Resource, TaskState, Workload};
use latch_core::policy::{PolicyEngine, PolicySource};
use latch_core::ports::{CredentialProvider, IdentityVerifier, MintRequest, Minted, ProviderError};
use latch_core::{ApiError, Broker, BrokerSettings, ErrorCode, ManualClock};
use secrecy::SecretString;
use tokio::sync::Notify;

/// A provider with one target per resource; each target can hang (calls never answer until
/// released) or refuse (unreachable).
#[derive(Default)]
struct Targets {
    hung: Mutex<HashMap<String, Arc<Notify>>>,
    refusing: AtomicBool,
    live: Mutex<std::collections::HashSet<String>>,
    /// Revoke calls per lease id.
    revokes: Mutex<HashMap<String, u32>>,
}

impl Targets {
    fn hang(&self, resource: &str) {
        self.hung
            .lock()
            .unwrap()
            .insert(resource.to_owned(), Arc::new(Notify::new()));
    }
    fn release(&self, resource: &str) {
        if let Some(n) = self.hung.lock().unwrap().remove(resource) {
            n.notify_waiters();
        }
    }
    /// Waits while `resource` hangs (forever, unless released).
    async fn gate(&self, resource: &str) -> Result<(), ProviderError> {
        let n = self.hung.lock().unwrap().get(resource).cloned();
        if let Some(n) = n {
            n.notified().await;
        }
        if self.refusing.load(Ordering::SeqCst) {
            return Err(ProviderError::unreachable("connection refused"));
        }
        Ok(())
    }
}

#[async_trait]
impl CredentialProvider for Targets {
    fn kind(&self) -> &str {
        "gated"
    }
    fn has_external_state(&self) -> bool {
        true
    }
    async fn mint(&self, req: &MintRequest<'_>) -> Result<Minted, ProviderError> {
        self.gate(&req.resource.id).await?;
        self.live.lock().unwrap().insert(req.lease_id.to_owned());
        Ok(Minted {
            credential: latch_core::model::DeliveredCredential {
                kind: "password".into(),
                secret: SecretString::from(format!("pw-{}", req.lease_id)),
                metadata: serde_json::json!({}),
            },
            revocation_handle: req.lease_id.to_owned(),
        })
    }
    async fn revoke(&self, lease: &Lease) -> Result<(), ProviderError> {
        self.gate(&lease.resource_id).await?;
        *self
            .revokes
            .lock()
            .unwrap()
            .entry(lease.id.clone())
            .or_default() += 1;
        self.live.lock().unwrap().remove(&lease.id);
        Ok(())
    }
    async fn probe(&self, resource: &Resource) -> Result<(), ProviderError> {
        self.gate(&resource.id).await
    }
}

struct NoVerifier;
#[async_trait]
impl IdentityVerifier for NoVerifier {
    async fn verify(&self, _token: &str) -> Result<Principal, ApiError> {
        Err(ApiError::new(ErrorCode::SignatureInvalid, "not used"))
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
        claims: latch_core::model::WorkloadClaims {
            branch: Some("main".into()),
            ..Default::default()
        },
        token_expires_at_unix_secs: i64::MAX,
    }
}

fn resource(id: &str) -> Resource {
    Resource {
        id: id.into(),
        kind: "gated".into(),
        environment: "sandbox".into(),
        sensitivity: "internal".into(),
        audience: id.into(),
        actions: vec!["read".into()],
        max_ttl_secs: 600,
        max_lifetime_secs: 1200,
        default_ttl_secs: 600,
        owner: None,
        production: false,
        egress: false,
        end_task_on_budget_breach: false,
        settings: serde_json::Value::Null,
    }
}

const CALL_TIMEOUT: Duration = Duration::from_millis(400);

async fn broker(clock: &ManualClock, targets: Arc<Targets>) -> Broker {
    let store = Arc::new(
        latch_store::SqliteStore::open("sqlite::memory:")
            .await
            .unwrap(),
    );
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
        &["read".into()],
    )
    .unwrap();
    Broker::new(BrokerParts {
        clock: Arc::new(clock.clone()),
        store,
        verifier: Arc::new(NoVerifier),
        policy,
        providers: vec![targets],
        resources: vec![resource("db-a"), resource("db-b")],
        hmac_key: vec![7; 32],
        settings: BrokerSettings {
            target_call_timeout: CALL_TIMEOUT,
            reaper_claim_secs: 30,
            ..Default::default()
        },
    })
    .await
    .unwrap()
}

async fn task(b: &Broker, ttl: i64) -> latch_core::model::Task {
    b.open_task(
        &CallCtx::default(),
        &workload(),
        OpenTask {
            purpose: "p".into(),
            environment: "sandbox".into(),
            ttl_secs: Some(ttl),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

async fn grant(b: &Broker, task_id: &str, res: &str, ttl: i64) -> Result<Lease, ApiError> {
    let out = b
        .request_access(
            &CallCtx::default(),
            &workload(),
            task_id,
            RequestAccess {
                resource: res.into(),
                actions: vec!["read".into()],
                ttl_secs: Some(ttl),
                ..Default::default()
            },
            &latch_core::model::TokenBinding::NONE,
        )
        .await?;
    match out {
        AccessOutcome::Granted(g) => Ok(g.lease),
        other => panic!("granted expected, got {other:?}"),
    }
}

async fn lease(b: &Broker, id: &str) -> Lease {
    b.store().lease(id).await.unwrap().unwrap()
}

async fn events(b: &Broker, lease_id: &str, kind: &str) -> usize {
    b.store()
        .audit_events(&latch_core::model::AuditFilter {
            lease_id: Some(lease_id.into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == kind)
        .count()
}

#[tokio::test]
async fn a_hung_target_fails_its_own_calls_only_and_its_revocations_resume_when_it_answers() {
    let clock = ManualClock::new(1_000_000);
    let t = Arc::new(Targets::default());
    let b = broker(&clock, t.clone()).await;
    let w = workload();
    let t1 = task(&b, 3600).await;
    let t2 = task(&b, 3600).await;
    let a = grant(&b, &t1.id, "db-a", 600).await.unwrap();
    let b1 = grant(&b, &t1.id, "db-b", 600).await.unwrap();
    let b2 = grant(&b, &t2.id, "db-b", 60).await.unwrap();

    // db-a stops answering. Completing the task answers within one call deadline; db-b's
    // credential of the same task is revoked meanwhile, db-a's is parked, visibly.
    t.hang("db-a");
    let started = Instant::now();
    b.end_task(&CallCtx::default(), &w, &t1.id, TaskState::Completed)
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(
        took < CALL_TIMEOUT + Duration::from_millis(600),
        "task completion took {took:?}"
    );
    assert_eq!(lease(&b, &b1.id).await.state, LeaseState::Revoked);
    let stuck = lease(&b, &a.id).await;
    assert_eq!(stuck.state, LeaseState::Revoking);
    assert_eq!(stuck.revoke_attempts, 1, "the attempt is counted");
    assert!(
        stuck
            .last_revoke_error
            .as_deref()
            .is_some_and(|e| e.contains("did not answer")),
        "{stuck:?}"
    );
    let status = b.target_statuses();
    let down: Vec<_> = status.iter().filter(|s| !s.healthy).collect();
    assert_eq!(down.len(), 1, "{status:?}");
    assert_eq!(down[0].resource_id, "db-a");
    assert!(down[0].last_error.is_some());

    // A grant on the dead target fails at once, naming the outage; db-b still grants.
    let t3 = task(&b, 3600).await;
    let started = Instant::now();
    let e = grant(&b, &t3.id, "db-a", 60).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::TargetUnavailable, "{e:?}");
    assert!(started.elapsed() < Duration::from_millis(200));
    grant(&b, &t3.id, "db-b", 60).await.unwrap();

    // db-b's other lease expires: the reaper revokes it on time, although db-a's lease is due
    // too (parked, not attempted: no second wait on the dead target).
    clock.advance(61);
    let started = Instant::now();
    let r = b.reap().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(lease(&b, &b2.id).await.state, LeaseState::Revoked);
    assert!(r.revocations_parked >= 1, "{r:?}");
    assert_eq!(lease(&b, &a.id).await.revoke_attempts, 1);

    // Probing while it still hangs changes nothing.
    let r = b.tend_targets().await.unwrap();
    assert_eq!(r.probed, 1);
    assert!(r.recovered.is_empty());

    // db-a answers again: the next probe revokes the parked lease at once.
    t.release("db-a");
    let started = Instant::now();
    let r = b.tend_targets().await.unwrap();
    assert_eq!(r.recovered, vec!["db-a".to_owned()], "{r:?}");
    assert_eq!(r.leases_revoked, 1, "{r:?}");
    assert!(started.elapsed() < Duration::from_millis(300));
    let done = lease(&b, &a.id).await;
    assert_eq!(done.state, LeaseState::Revoked);
    assert!(!t.live.lock().unwrap().contains(&a.id));
    assert!(b.target_statuses().iter().all(|s| s.healthy));
    // One failure (the timed-out attempt), one revocation: nothing spurious.
    assert_eq!(events(&b, &a.id, "credential.revocation_failed").await, 1);
    assert_eq!(events(&b, &a.id, "credential.revoked").await, 1);
    for (id, n) in t.revokes.lock().unwrap().iter() {
        assert_eq!(*n, 1, "lease {id} revoked {n} times");
    }
}

#[tokio::test]
async fn a_successful_call_also_ends_the_outage_and_resumes_parked_revocations() {
    let clock = ManualClock::new(1_000_000);
    let t = Arc::new(Targets::default());
    let b = broker(&clock, t.clone()).await;
    let w = workload();
    let t1 = task(&b, 3600).await;
    let a = grant(&b, &t1.id, "db-a", 600).await.unwrap();
    t.refusing.store(true, Ordering::SeqCst);
    b.end_task(&CallCtx::default(), &w, &t1.id, TaskState::Completed)
        .await
        .unwrap();
    assert_eq!(lease(&b, &a.id).await.state, LeaseState::Revoking);
    assert!(!b.target_statuses()[0].healthy);
    // The target answers again; a probe notices, and the parked lease is revoked although its
    // backoff says later.
    t.refusing.store(false, Ordering::SeqCst);
    let r = b.tend_targets().await.unwrap();
    assert_eq!(r.leases_revoked, 1, "{r:?}");
    assert_eq!(lease(&b, &a.id).await.state, LeaseState::Revoked);
}

#[tokio::test]
async fn one_lease_is_revoked_by_one_worker_at_a_time() {
    let clock = ManualClock::new(1_000_000);
    let t = Arc::new(Targets::default());
    let b = Arc::new(broker(&clock, t.clone()).await);
    let w = workload();
    let t1 = task(&b, 3600).await;
    let a = grant(&b, &t1.id, "db-a", 600).await.unwrap();
    // The target is slow (not dead): the completing request's revocation waits on it.
    t.hang("db-a");
    let (b2, w2, id) = (b.clone(), w.clone(), t1.id.clone());
    let completing = tokio::spawn(async move {
        b2.end_task(&CallCtx::default(), &w2, &id, TaskState::Completed)
            .await
    });
    // Meanwhile the lease becomes due for the reaper (as if the claim lapsed): the reaper must
    // not revoke it a second time while the first attempt is under way.
    tokio::time::sleep(Duration::from_millis(50)).await;
    clock.advance(60);
    let r = b.reap().await.unwrap();
    assert_eq!(r.leases_revoked, 0, "{r:?}");
    t.release("db-a");
    completing.await.unwrap().unwrap();
    assert_eq!(lease(&b, &a.id).await.state, LeaseState::Revoked);
    assert_eq!(t.revokes.lock().unwrap().get(&a.id), Some(&1));
    assert_eq!(events(&b, &a.id, "credential.revocation_failed").await, 0);
}

#[tokio::test]
async fn every_lease_parked_behind_a_dead_target_says_what_it_waits_for() {
    let clock = ManualClock::new(1_000_000);
    let t = Arc::new(Targets::default());
    let b = broker(&clock, t.clone()).await;
    let t1 = task(&b, 3600).await;
    let mut ids = Vec::new();
    for _ in 0..7 {
        ids.push(grant(&b, &t1.id, "db-a", 600).await.unwrap().id);
    }
    // More leases than the target's lane (4): some are never attempted.
    t.hang("db-a");
    b.end_task(
        &CallCtx::default(),
        &workload(),
        &t1.id,
        TaskState::Completed,
    )
    .await
    .unwrap();
    let mut never_attempted = 0;
    for id in &ids {
        let l = lease(&b, id).await;
        assert_eq!(l.state, LeaseState::Revoking);
        let why = l.last_revoke_error.clone().unwrap_or_default();
        assert!(!why.is_empty(), "{l:?}");
        if l.revoke_attempts == 0 {
            never_attempted += 1;
            assert!(why.contains("not attempted"), "{why}");
        }
    }
    assert!(never_attempted >= 3, "{never_attempted}");
    t.release("db-a");
    let r = b.tend_targets().await.unwrap();
    assert_eq!(r.leases_revoked, 7, "{r:?}");
}
