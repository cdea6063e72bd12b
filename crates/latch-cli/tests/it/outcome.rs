//! A commit whose answer is lost (issue 13): the store commits a batch and then fails, or
//! fails without committing, and says the outcome is unknown. The broker reads back before it
//! answers, so a write that committed is never answered as failed; ending a task twice in the
//! same state answers the task, so a retry after a lost answer is safe either way.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use latch_core::audit::{AuditCheckpoint, AuditRecord, ToolUseReport};
use latch_core::broker::{AccessOutcome, BrokerParts, CallCtx, OpenTask, RequestAccess};
use latch_core::model::{
    AccessRequest, Approval, AuditEvent, AuditFilter, Lease, LeaseState, Principal, Resource, Task,
    TaskState, Workload, WorkloadClaims,
};
use latch_core::policy::{PolicyEngine, PolicySource};
use latch_core::ports::{
    CredentialProvider, IdentityVerifier, MintRequest, Minted, ProviderError, Store, StoreError,
    WriteBatch,
};
use latch_core::{ApiError, Broker, BrokerSettings, ErrorCode, ManualClock};
use secrecy::SecretString;

/// What the next [`Faulty::apply`] does wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Nothing.
    None,
    /// Commits the batch, then answers [`StoreError::OutcomeUnknown`] (the answer was lost).
    CommitThenLose,
    /// Answers [`StoreError::OutcomeUnknown`] without committing (the commit was lost).
    LoseUncommitted,
    /// Commits, answers, and then the store stops answering lease reads (it went down right
    /// after the commit).
    CommitThenDown,
}

/// A store that injects one [`Fault`] into the next `apply`, delegating everything else.
struct Faulty {
    inner: Arc<dyn Store>,
    next: Mutex<Fault>,
    down: std::sync::atomic::AtomicBool,
    /// Answers [`Store::recent_active_freezes`] with no freezes, as a replica's snapshot from
    /// before another replica's engagement would.
    stale_recent: std::sync::atomic::AtomicBool,
}

impl Faulty {
    fn arm(&self, f: Fault) {
        *self.next.lock().unwrap() = f;
    }
}

fn lost() -> StoreError {
    StoreError::OutcomeUnknown("test: commit: connection reset".into())
}

#[async_trait]
impl Store for Faulty {
    async fn apply(&self, batch: WriteBatch) -> Result<Vec<i64>, StoreError> {
        let fault = std::mem::replace(&mut *self.next.lock().unwrap(), Fault::None);
        match fault {
            Fault::None => self.inner.apply(batch).await,
            Fault::CommitThenLose => {
                self.inner.apply(batch).await?;
                Err(lost())
            }
            Fault::LoseUncommitted => Err(lost()),
            Fault::CommitThenDown => {
                let seqs = self.inner.apply(batch).await?;
                self.down.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(seqs)
            }
        }
    }
    async fn task(&self, id: &str) -> Result<Option<Task>, StoreError> {
        self.inner.task(id).await
    }
    async fn counters(
        &self,
        scope: latch_core::history::CounterScope,
        subject: &str,
    ) -> Result<Vec<latch_core::history::CounterRow>, StoreError> {
        self.inner.counters(scope, subject).await
    }
    async fn live_lease_count(
        &self,
        scope: latch_core::history::CounterScope,
        subject: &str,
        now: i64,
    ) -> Result<i64, StoreError> {
        self.inner.live_lease_count(scope, subject, now).await
    }
    async fn tasks_by_owner(&self, owner: &str, n: u32) -> Result<Vec<Task>, StoreError> {
        self.inner.tasks_by_owner(owner, n).await
    }
    async fn expired_open_tasks(&self, now: i64, n: u32) -> Result<Vec<Task>, StoreError> {
        self.inner.expired_open_tasks(now, n).await
    }
    async fn request(&self, id: &str) -> Result<Option<AccessRequest>, StoreError> {
        self.inner.request(id).await
    }
    async fn pending_requests(&self, n: u32) -> Result<Vec<AccessRequest>, StoreError> {
        self.inner.pending_requests(n).await
    }
    async fn expired_requests(&self, now: i64, n: u32) -> Result<Vec<AccessRequest>, StoreError> {
        self.inner.expired_requests(now, n).await
    }
    async fn open_tasks(&self, after: &str, n: u32) -> Result<Vec<Task>, StoreError> {
        self.inner.open_tasks(after, n).await
    }
    async fn live_leases(&self, after: &str, n: u32) -> Result<Vec<Lease>, StoreError> {
        self.inner.live_leases(after, n).await
    }
    async fn active_freezes(&self) -> Result<Vec<latch_core::freeze::Freeze>, StoreError> {
        self.inner.active_freezes().await
    }
    async fn recent_active_freezes(&self) -> Result<Vec<latch_core::freeze::Freeze>, StoreError> {
        if self.stale_recent.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(Vec::new());
        }
        self.inner.recent_active_freezes().await
    }
    async fn freeze(&self, id: &str) -> Result<Option<latch_core::freeze::Freeze>, StoreError> {
        self.inner.freeze(id).await
    }
    async fn open_requests_by_task(&self, task_id: &str) -> Result<Vec<AccessRequest>, StoreError> {
        self.inner.open_requests_by_task(task_id).await
    }
    async fn approvals(&self, request_id: &str) -> Result<Vec<Approval>, StoreError> {
        self.inner.approvals(request_id).await
    }
    async fn lease(&self, id: &str) -> Result<Option<Lease>, StoreError> {
        self.inner.lease(id).await
    }
    async fn leases_by_task(&self, task_id: &str) -> Result<Vec<Lease>, StoreError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "test: leases by task: no answer".into(),
            ));
        }
        self.inner.leases_by_task(task_id).await
    }
    async fn active_leases(&self, after: &str, n: u32) -> Result<Vec<Lease>, StoreError> {
        self.inner.active_leases(after, n).await
    }
    async fn due_leases(&self, now: i64, grace: i64, n: u32) -> Result<Vec<Lease>, StoreError> {
        self.inner.due_leases(now, grace, n).await
    }
    async fn claim_pending_revocations(
        &self,
        now: i64,
        resource_id: &str,
        owner: &str,
        until: i64,
        n: u32,
    ) -> Result<Vec<Lease>, StoreError> {
        self.inner
            .claim_pending_revocations(now, resource_id, owner, until, n)
            .await
    }
    async fn revoked_unexpired_leases(
        &self,
        now: i64,
        after: &str,
        n: u32,
    ) -> Result<Vec<Lease>, StoreError> {
        self.inner.revoked_unexpired_leases(now, after, n).await
    }
    async fn lease_by_credential_hmac(&self, hmac: &str) -> Result<Option<Lease>, StoreError> {
        self.inner.lease_by_credential_hmac(hmac).await
    }
    async fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        self.inner.audit_events(filter).await
    }
    async fn audit_records(&self, after: i64, n: u32) -> Result<Vec<AuditRecord>, StoreError> {
        self.inner.audit_records(after, n).await
    }
    async fn audit_head(&self) -> Result<Option<(i64, String)>, StoreError> {
        self.inner.audit_head().await
    }
    async fn put_checkpoint(&self, cp: &AuditCheckpoint) -> Result<(), StoreError> {
        self.inner.put_checkpoint(cp).await
    }
    async fn checkpoints(&self, after: i64, n: u32) -> Result<Vec<AuditCheckpoint>, StoreError> {
        self.inner.checkpoints(after, n).await
    }
    async fn last_checkpoint(&self) -> Result<Option<AuditCheckpoint>, StoreError> {
        self.inner.last_checkpoint().await
    }
    async fn sink_cursor(&self, sink: &str) -> Result<i64, StoreError> {
        self.inner.sink_cursor(sink).await
    }
    async fn set_sink_cursor(&self, sink: &str, seq: i64) -> Result<(), StoreError> {
        self.inner.set_sink_cursor(sink, seq).await
    }
    async fn key_blob(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.key_blob(name).await
    }
    async fn put_key_blob_if_absent(&self, name: &str, blob: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.inner.put_key_blob_if_absent(name, blob).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

/// A provider with nothing outside the broker: its leases are revoked in place.
struct Local;

#[async_trait]
impl CredentialProvider for Local {
    fn kind(&self) -> &str {
        "local"
    }
    async fn mint(&self, req: &MintRequest<'_>) -> Result<Minted, ProviderError> {
        Ok(Minted {
            credential: latch_core::model::DeliveredCredential {
                kind: "password".into(),
                secret: SecretString::from(format!("pw-{}", req.lease_id)),
                metadata: serde_json::json!({}),
            },
            revocation_handle: req.lease_id.to_owned(),
        })
    }
    async fn revoke(&self, _lease: &Lease) -> Result<(), ProviderError> {
        Ok(())
    }
}

/// A provider that creates state at a target (as a database role would), counting its mints.
struct Remote(std::sync::atomic::AtomicUsize);

#[async_trait]
impl CredentialProvider for Remote {
    fn kind(&self) -> &str {
        "remote"
    }
    fn has_external_state(&self) -> bool {
        true
    }
    async fn mint(&self, req: &MintRequest<'_>) -> Result<Minted, ProviderError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Local.mint(req).await
    }
    async fn revoke(&self, _lease: &Lease) -> Result<(), ProviderError> {
        Ok(())
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
        claims: WorkloadClaims::default(),
        token_expires_at_unix_secs: i64::MAX,
    }
}

/// A broker on a [`Faulty`] in-memory store, with one `local` resource `db`.
async fn broker() -> (Broker, Arc<Faulty>) {
    let (b, store, _) = broker_with_remote().await;
    (b, store)
}

/// As [`broker`], with a second resource `pg` whose [`Remote`] provider is returned too.
async fn broker_with_remote() -> (Broker, Arc<Faulty>, Arc<Remote>) {
    let inner = latch_store::SqliteStore::open("sqlite::memory:")
        .await
        .unwrap();
    let faulty = Arc::new(Faulty {
        inner: Arc::new(inner),
        next: Mutex::new(Fault::None),
        down: std::sync::atomic::AtomicBool::new(false),
        stale_recent: std::sync::atomic::AtomicBool::new(false),
    });
    let schema = PolicySource {
        name: "s".into(),
        text: latch_server::examples::EXAMPLE_SCHEMA.into(),
    };
    let policy = PolicyEngine::load(
        &schema,
        &[PolicySource {
            name: "p.cedar".into(),
            text: "permit (principal, action, resource);\n\
                   forbid (principal, action, resource == Latch::Resource::\"denied\");"
                .into(),
        }],
        &["read".into()],
    )
    .unwrap();
    let resource = Resource {
        id: "db".into(),
        kind: "local".into(),
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
    let remote = Arc::new(Remote(std::sync::atomic::AtomicUsize::new(0)));
    let pg = Resource {
        id: "pg".into(),
        kind: "remote".into(),
        ..resource.clone()
    };
    let denied = Resource {
        id: "denied".into(),
        ..resource.clone()
    };
    let b = Broker::new(BrokerParts {
        clock: Arc::new(ManualClock::new(1_000_000)),
        store: faulty.clone(),
        verifier: Arc::new(NoVerifier),
        policy,
        providers: vec![Arc::new(Local), remote.clone()],
        resources: vec![resource, pg, denied],
        hmac_key: vec![7; 32],
        settings: BrokerSettings::default(),
    })
    .await
    .unwrap();
    (b, faulty, remote)
}

async fn open_task(b: &Broker) -> Task {
    b.open_task(
        &CallCtx::default(),
        &workload(),
        OpenTask {
            purpose: "p".into(),
            environment: "sandbox".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

async fn grant(b: &Broker, task_id: &str) -> Lease {
    let out = b
        .request_access(
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
        .unwrap();
    let AccessOutcome::Granted(g) = out else {
        panic!("granted expected")
    };
    g.lease
}

async fn events_of_kind(store: &dyn Store, task_id: &str, kind: &str) -> Vec<AuditEvent> {
    let filter = AuditFilter {
        task_id: Some(task_id.into()),
        kind_prefix: Some(kind.into()),
        ..AuditFilter::default()
    };
    store.audit_events(&filter).await.unwrap()
}

/// The completion commits but its answer is lost: the broker reads it back and answers the
/// completed task, and the lease it revoked is gone from introspection.
#[tokio::test]
async fn a_completion_whose_answer_was_lost_but_committed_is_answered_done() {
    let (b, store) = broker().await;
    let ctx = CallCtx::default();
    let task = open_task(&b).await;
    let lease = grant(&b, &task.id).await;
    store.arm(Fault::CommitThenLose);
    let ended = b
        .end_task(&ctx, &workload(), &task.id, TaskState::Completed)
        .await
        .expect("committed, so answered as done");
    assert_eq!(ended.state, TaskState::Completed);
    let stored = store.task(&task.id).await.unwrap().unwrap();
    assert_eq!(stored, ended);
    let l = store.lease(&lease.id).await.unwrap().unwrap();
    assert_eq!(l.state, LeaseState::Revoked);
    assert_eq!(
        events_of_kind(store.as_ref(), &task.id, "task.completed")
            .await
            .len(),
        1
    );
}

/// The batch's audit seqs are recovered from the log too: a tool report whose answer was lost
/// comes back with the seq it was stored under.
#[tokio::test]
async fn a_report_whose_answer_was_lost_gets_its_stored_seq() {
    let (b, store) = broker().await;
    let task = open_task(&b).await;
    store.arm(Fault::CommitThenLose);
    let report: ToolUseReport = serde_json::from_value(serde_json::json!({
        "tool": "psql", "outcome": "ok"
    }))
    .unwrap();
    let ev = b
        .report_tool_use(&CallCtx::default(), &workload(), &task.id, report)
        .await
        .expect("committed");
    let stored = events_of_kind(store.as_ref(), &task.id, "tool.used").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(ev.seq, stored[0].seq);
    assert!(ev.seq > 0);
}

/// The commit was lost before it happened: the answer stays 503 `store_unavailable` (with the
/// advice to read back), nothing is written, and the retry ends the task.
#[tokio::test]
async fn a_lost_commit_that_did_not_happen_stays_unavailable_and_the_retry_works() {
    let (b, store) = broker().await;
    let ctx = CallCtx::default();
    let task = open_task(&b).await;
    store.arm(Fault::LoseUncommitted);
    let e = b
        .end_task(&ctx, &workload(), &task.id, TaskState::Cancelled)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::StoreUnavailable, "{e}");
    assert!(e.message.contains("read it back"), "{e}");
    assert_eq!(
        store.task(&task.id).await.unwrap().unwrap().state,
        TaskState::Open
    );
    let ended = b
        .end_task(&ctx, &workload(), &task.id, TaskState::Cancelled)
        .await
        .expect("retry");
    assert_eq!(ended.state, TaskState::Cancelled);
}

/// Ending a task again in the state it has answers the task as stored, writes no second
/// event, and still refuses the other state (409 `task_not_open`).
#[tokio::test]
async fn ending_a_task_twice_in_the_same_state_answers_the_task() {
    let (b, store) = broker().await;
    let ctx = CallCtx::default();
    let task = open_task(&b).await;
    let lease = grant(&b, &task.id).await;
    let first = b
        .end_task(&ctx, &workload(), &task.id, TaskState::Completed)
        .await
        .unwrap();
    let again = b
        .end_task(&ctx, &workload(), &task.id, TaskState::Completed)
        .await
        .expect("idempotent");
    assert_eq!(again, first);
    assert_eq!(
        events_of_kind(store.as_ref(), &task.id, "task.completed")
            .await
            .len(),
        1
    );
    assert_eq!(
        store.lease(&lease.id).await.unwrap().unwrap().state,
        LeaseState::Revoked
    );
    let e = b
        .end_task(&ctx, &workload(), &task.id, TaskState::Cancelled)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::TaskNotOpen);
    // Another workload still cannot see it.
    let mut other = workload();
    other.run_binding = Some("run-2".into());
    let e = b
        .end_task(&ctx, &other, &task.id, TaskState::Completed)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::TaskNotFound);
}

/// The end committed, then the store went down before the safety sweep could read the task's
/// leases: the completion is answered as done, not 503 (found by a tester: 2 of 65 trials).
#[tokio::test]
async fn a_completion_whose_sweep_cannot_read_after_the_commit_is_answered_done() {
    let (b, store) = broker().await;
    let task = open_task(&b).await;
    grant(&b, &task.id).await;
    store.arm(Fault::CommitThenDown);
    let ended = b
        .end_task(
            &CallCtx::default(),
            &workload(),
            &task.id,
            TaskState::Completed,
        )
        .await
        .expect("the end committed, so it is answered as done");
    assert_eq!(ended.state, TaskState::Completed);
    assert_eq!(
        store.task(&task.id).await.unwrap().unwrap().state,
        TaskState::Completed
    );
}

/// A replica whose recent read of the freezes predates an engagement (another replica's): a
/// grant of a credential that never leaves the broker passes the early check, commits, and is
/// refused and revoked by the check after its commit; a grant at a provider with external state
/// reads afresh first, so nothing is minted at the target.
#[tokio::test]
async fn a_stale_early_freeze_read_never_delivers_a_credential_or_mints_at_a_target() {
    let (b, store, remote) = broker_with_remote().await;
    let t = open_task(&b).await;
    store
        .stale_recent
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let freeze = latch_core::freeze::Freeze {
        id: "frz_all".into(),
        scope: latch_core::freeze::FreezeScope {
            kind: latch_core::freeze::ScopeKind::All,
            value: None,
        },
        state: latch_core::freeze::FreezeState::Active,
        engaged_by: "hum_op".into(),
        reason: "incident".into(),
        created_at_unix_secs: 1_000_000,
        lifted_by: None,
        lift_reason: None,
        lifted_at_unix_secs: None,
        version: 1,
    };
    let engaged = AuditEvent::new(
        1_000_000,
        latch_core::model::AuditKind::FreezeEngaged,
        "hum_op",
        "ok",
    );
    store
        .apply(
            WriteBatch::new()
                .write(latch_core::ports::Write::InsertFreeze(freeze))
                .audit(engaged),
        )
        .await
        .unwrap();
    let ask = |resource: &str| RequestAccess {
        resource: resource.into(),
        actions: vec!["read".into()],
        ..Default::default()
    };
    let none = latch_core::model::TokenBinding::NONE;
    let ctx = CallCtx::default();
    let refused = b
        .request_access(&ctx, &workload(), &t.id, ask("db"), &none)
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::Frozen);
    let leases = store.leases_by_task(&t.id).await.unwrap();
    assert_eq!(
        leases.len(),
        1,
        "the local grant committed before its check"
    );
    assert_eq!(
        leases[0].state,
        LeaseState::Revoked,
        "and was revoked by it"
    );
    let refused = b
        .request_access(&ctx, &workload(), &t.id, ask("pg"), &none)
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::Frozen);
    assert_eq!(
        remote.0.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing was created at the target"
    );
    assert_eq!(store.leases_by_task(&t.id).await.unwrap().len(), 1);
    // A denial is not checked after a commit: it is refused on a fresh read, not stored.
    let decided = events_of_kind(store.as_ref(), &t.id, "request.decided")
        .await
        .len();
    let refused = b
        .request_access(&ctx, &workload(), &t.id, ask("denied"), &none)
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::Frozen, "{refused:?}");
    assert_eq!(
        events_of_kind(store.as_ref(), &t.id, "request.decided")
            .await
            .len(),
        decided,
        "no denial was recorded during the freeze"
    );
}
