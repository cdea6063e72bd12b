//! A backend-agnostic conformance suite for [`Store`] implementations.
//!
//! [`run_all`] exercises every method of the trait against the documented semantics and panics
//! (with a message naming the check) on the first failure. Any backend — the embedded SQLite
//! store, a PostgreSQL store — runs the same suite from its tests:
//!
//! ```no_run
//! # async fn demo() {
//! let store = latch_store::SqliteStore::open("sqlite::memory:").await.unwrap();
//! latch_store::conformance::run_all(std::sync::Arc::new(store)).await;
//! # }
//! ```
//!
//! The suite uses fixed ids and times, so it needs an **empty** store, and it must run inside a
//! multi-threaded or current-thread Tokio runtime (it spawns tasks to race writers).
//! Parents are always written before their children (task → request → approval / lease), so a
//! backend may enforce foreign keys.

use std::collections::BTreeSet;
use std::sync::Arc;

use latch_core::audit::{AuditCheckpoint, GENESIS_HASH, chain_hash};
use latch_core::model::{
    AccessRequest, Approval, AuditEvent, AuditFilter, Decision, GroupQuorum, Lease, LeaseState,
    RequestState, Task, TaskState, Verdict, Workload, WorkloadClaims,
};
use latch_core::ports::{Store, StoreError, Write, WriteBatch};
use serde_json::json;

/// Runs every conformance check against `store`, which must be empty.
///
/// # Panics
/// On the first check that fails, with a message naming it.
pub async fn run_all(store: Arc<dyn Store>) {
    let s = store.as_ref();
    ping(s).await;
    tasks(s).await;
    require_task_open(s).await;
    batch_atomicity(s).await;
    requests(s).await;
    approvals(s).await;
    leases(s).await;
    concurrent_cas(store.clone()).await;
    audit(s).await;
    audit_bulk_limits(s).await;
    key_blobs(store.clone()).await;
    audit_filters(s).await;
    checkpoints_and_cursors(s).await;
    // Last: every section above appended events, some in batches that failed or raced.
    audit_chain(store.clone()).await;
}

// ------------------------------------------------------------------ fixtures

fn workload(id: &str) -> Workload {
    Workload {
        id: id.to_owned(),
        issuer: "https://issuer.example".to_owned(),
        subject: format!("sub-{id}"),
        preset: "generic".to_owned(),
        run_binding: Some("run-42".to_owned()),
        on_behalf_of: None,
        claims: WorkloadClaims {
            repository: Some("acme/payments".to_owned()),
            branch: Some("main".to_owned()),
            untrusted_source: false,
            ..WorkloadClaims::default()
        },
        token_expires_at_unix_secs: 10_000,
    }
}

fn task(id: &str, owner: &str, created: i64, expires: i64, state: TaskState) -> Task {
    Task {
        id: id.to_owned(),
        owner: workload(owner),
        purpose: format!("purpose of {id}"),
        repository: Some("acme/payments".to_owned()),
        branch: Some("main".to_owned()),
        environment: "staging".to_owned(),
        production: false,
        on_behalf_of: Some("alice".to_owned()),
        state,
        created_at_unix_secs: created,
        expires_at_unix_secs: expires,
        ended_at_unix_secs: None,
        version: 1,
    }
}

fn request(
    id: &str,
    task_id: &str,
    state: RequestState,
    created: i64,
    expires: i64,
) -> AccessRequest {
    let step_up_groups = match state {
        RequestState::Pending | RequestState::Approved => vec![GroupQuorum {
            group: "dba".to_owned(),
            quorum: 2,
        }],
        _ => vec![],
    };
    let decision = match state {
        RequestState::Pending => Decision::StepUp {
            policy_ids: vec!["prod-needs-approval".to_owned()],
            groups: step_up_groups.clone(),
        },
        RequestState::Denied => Decision::Deny {
            code: latch_core::model::DenyCode::PolicyDenied,
            policy_ids: vec![],
            reasons: vec!["no permit applies".to_owned()],
        },
        _ => Decision::Allow {
            policy_ids: vec!["staging-read".to_owned()],
            max_ttl_secs: Some(900),
        },
    };
    AccessRequest {
        id: id.to_owned(),
        task_id: task_id.to_owned(),
        principal_id: "wl_a".to_owned(),
        resource_id: "payments-db".to_owned(),
        actions: vec!["read".to_owned(), "write".to_owned()],
        ttl_secs: 600,
        justification: format!("justification of {id}"),
        state,
        decision,
        digest: format!("digest-{id}"),
        source_ip: Some("192.0.2.7".to_owned()),
        created_at_unix_secs: created,
        expires_at_unix_secs: expires,
        lease_id: None,
        approvers: vec![],
        params: serde_json::Value::Null,
        step_up_groups,
        version: 1,
    }
}

fn approval(id: &str, request_id: &str, approver: &str, created: i64) -> Approval {
    Approval {
        id: id.to_owned(),
        request_id: request_id.to_owned(),
        digest: format!("digest-{request_id}"),
        approver: approver.to_owned(),
        groups: vec!["dba".to_owned()],
        verdict: Verdict::Approve,
        reason: "looks right".to_owned(),
        created_at_unix_secs: created,
    }
}

fn lease(id: &str, task_id: &str, state: LeaseState, issued: i64, expires: i64) -> Lease {
    Lease {
        id: id.to_owned(),
        task_id: task_id.to_owned(),
        request_id: "req_c01".to_owned(),
        resource_id: "payments-db".to_owned(),
        provider: "jwt".to_owned(),
        actions: vec!["read".to_owned()],
        state,
        issued_at_unix_secs: issued,
        expires_at_unix_secs: expires,
        max_expires_at_unix_secs: expires + 3600,
        renewals: 0,
        revocation_handle: format!("handle-{id}"),
        credential_hmac: None,
        revoke_reason: None,
        revoke_attempts: 0,
        next_revoke_at_unix_secs: None,
        last_revoke_error: None,
        revoked_at_unix_secs: None,
        binding: Default::default(),
        version: 1,
    }
}

fn event(
    id: &str,
    at: i64,
    kind: &str,
    task_id: Option<&str>,
    lease_id: Option<&str>,
) -> AuditEvent {
    AuditEvent {
        seq: 0,
        id: id.to_owned(),
        at_unix_secs: at,
        kind: kind.to_owned(),
        actor: "latch".to_owned(),
        request_id: Some(format!("http-{id}")),
        task_id: task_id.map(str::to_owned),
        access_request_id: None,
        lease_id: lease_id.map(str::to_owned),
        outcome: "ok".to_owned(),
        detail: json!({"n": at, "nested": {"list": [1, 2, 3], "s": "x"}}),
        prev_hash: None,
        hash: None,
    }
}

// ------------------------------------------------------------------ helpers

async fn apply_ok(s: &dyn Store, batch: WriteBatch, what: &str) -> Vec<i64> {
    match s.apply(batch).await {
        Ok(seqs) => seqs,
        Err(e) => panic!("{what}: apply failed: {e}"),
    }
}

async fn expect_conflict(s: &dyn Store, batch: WriteBatch, what: &str) {
    match s.apply(batch).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("{what}: expected StoreError::Conflict, got {other:?}"),
    }
}

fn ok<T>(r: Result<T, StoreError>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn ids<T>(items: &[T], id: impl Fn(&T) -> &str) -> Vec<String> {
    items.iter().map(|i| id(i).to_owned()).collect()
}

fn id_set<T>(items: &[T], id: impl Fn(&T) -> &str) -> BTreeSet<String> {
    items.iter().map(|i| id(i).to_owned()).collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

fn task_id(t: &Task) -> &str {
    &t.id
}
fn request_id(r: &AccessRequest) -> &str {
    &r.id
}
fn approval_id(a: &Approval) -> &str {
    &a.id
}
fn lease_id(l: &Lease) -> &str {
    &l.id
}
fn event_id(e: &AuditEvent) -> &str {
    &e.id
}

fn filter(task: Option<&str>, lease: Option<&str>, kind: Option<&str>) -> AuditFilter {
    AuditFilter {
        task_id: task.map(str::to_owned),
        lease_id: lease.map(str::to_owned),
        kind_prefix: kind.map(str::to_owned),
        ..AuditFilter::default()
    }
}

// ------------------------------------------------------------------ sections

async fn ping(s: &dyn Store) {
    ok(s.ping().await, "ping");
    let seqs = apply_ok(s, WriteBatch::new(), "empty batch").await;
    assert!(seqs.is_empty(), "an empty batch returns no seqs");
}

/// Task round trips, `tasks_by_owner`, `expired_open_tasks`, compare-and-set.
/// `RequireTaskOpen` passes only for an open task at exactly the given version, and a failing
/// guard undoes the whole batch.
async fn require_task_open(s: &dyn Store) {
    let t = task("task_g01", "wl_g", 1000, 5000, TaskState::Open);
    apply_ok(
        s,
        WriteBatch::new().write(Write::InsertTask(t.clone())),
        "insert guarded task",
    )
    .await;
    let guard = |v: i64| Write::RequireTaskOpen {
        task_id: t.id.clone(),
        version: v,
    };
    apply_ok(
        s,
        WriteBatch::new().write(guard(t.version)),
        "guard at current version",
    )
    .await;
    expect_conflict(
        s,
        WriteBatch::new().write(guard(t.version + 1)),
        "guard at another version",
    )
    .await;
    expect_conflict(
        s,
        WriteBatch::new().write(Write::RequireTaskOpen {
            task_id: "task_missing".into(),
            version: 1,
        }),
        "guard of a missing task",
    )
    .await;
    let mut ended = t.clone();
    ended.state = TaskState::Completed;
    ended.version += 1;
    apply_ok(
        s,
        WriteBatch::new().write(Write::UpdateTask(ended.clone())),
        "end task",
    )
    .await;
    let late = task("task_g02", "wl_g", 1000, 5000, TaskState::Open);
    expect_conflict(
        s,
        WriteBatch::new()
            .write(Write::InsertTask(late.clone()))
            .write(guard(ended.version)),
        "guard of an ended task",
    )
    .await;
    assert_eq!(
        ok(s.task(&late.id).await, "task"),
        None,
        "a failed guard undoes the batch"
    );
}

async fn tasks(s: &dyn Store) {
    let t1 = task("task_c01", "wl_a", 1000, 2000, TaskState::Open);
    let mut t2 = task("task_c02", "wl_a", 1500, 2500, TaskState::Open);
    t2.repository = None;
    t2.branch = None;
    t2.on_behalf_of = None;
    t2.production = true;
    t2.environment = "production".to_owned();
    let mut t3 = task("task_c03", "wl_b", 1200, 1800, TaskState::Completed);
    t3.ended_at_unix_secs = Some(1700);
    let t4 = task("task_c04", "wl_b", 1300, 3000, TaskState::Open);
    let batch = WriteBatch::new()
        .write(Write::InsertTask(t1.clone()))
        .write(Write::InsertTask(t2.clone()))
        .write(Write::InsertTask(t3.clone()))
        .write(Write::InsertTask(t4.clone()));
    let seqs = apply_ok(s, batch, "insert tasks").await;
    assert!(
        seqs.is_empty(),
        "a batch without audit events returns no seqs"
    );

    for t in [&t1, &t2, &t3, &t4] {
        assert_eq!(
            ok(s.task(&t.id).await, "task").as_ref(),
            Some(t),
            "task round trip {}",
            t.id
        );
    }
    assert_eq!(
        ok(s.task("task_missing").await, "task"),
        None,
        "missing task"
    );

    let by_a = ok(s.tasks_by_owner("wl_a", 10).await, "tasks_by_owner");
    assert_eq!(
        by_a,
        vec![t2.clone(), t1.clone()],
        "tasks_by_owner: newest first"
    );
    let by_a1 = ok(s.tasks_by_owner("wl_a", 1).await, "tasks_by_owner");
    assert_eq!(ids(&by_a1, task_id), ["task_c02"], "tasks_by_owner: limit");
    let by_b = ok(s.tasks_by_owner("wl_b", 10).await, "tasks_by_owner");
    assert_eq!(
        ids(&by_b, task_id),
        ["task_c04", "task_c03"],
        "tasks_by_owner: any state"
    );
    assert!(
        ok(s.tasks_by_owner("wl_z", 10).await, "tasks_by_owner").is_empty(),
        "unknown owner"
    );

    let exp = ok(s.expired_open_tasks(1999, 10).await, "expired_open_tasks");
    assert!(
        exp.is_empty(),
        "expired_open_tasks: nothing expired yet (completed task excluded)"
    );
    let exp = ok(s.expired_open_tasks(2000, 10).await, "expired_open_tasks");
    assert_eq!(
        exp,
        vec![t1.clone()],
        "expired_open_tasks: expires_at == now is expired"
    );
    let exp = ok(s.expired_open_tasks(2600, 10).await, "expired_open_tasks");
    assert_eq!(
        id_set(&exp, task_id),
        set(&["task_c01", "task_c02"]),
        "expired_open_tasks"
    );
    let exp = ok(s.expired_open_tasks(2600, 1).await, "expired_open_tasks");
    assert_eq!(exp.len(), 1, "expired_open_tasks: limit");

    // Compare-and-set.
    let mut t1v2 = t1.clone();
    t1v2.state = TaskState::Completed;
    t1v2.ended_at_unix_secs = Some(1900);
    t1v2.version = 2;
    apply_ok(
        s,
        WriteBatch::new().write(Write::UpdateTask(t1v2.clone())),
        "update task",
    )
    .await;
    assert_eq!(
        ok(s.task("task_c01").await, "task"),
        Some(t1v2.clone()),
        "updated task"
    );
    let exp = ok(s.expired_open_tasks(2000, 10).await, "expired_open_tasks");
    assert!(
        exp.is_empty(),
        "expired_open_tasks: follows the updated state"
    );

    let mut stale = t1.clone();
    stale.purpose = "stale".to_owned();
    stale.version = 2;
    expect_conflict(
        s,
        WriteBatch::new().write(Write::UpdateTask(stale)),
        "stale task update",
    )
    .await;
    let mut skip = t1v2.clone();
    skip.version = 4;
    expect_conflict(
        s,
        WriteBatch::new().write(Write::UpdateTask(skip)),
        "task version skip",
    )
    .await;
    let mut same = t1v2.clone();
    same.purpose = "same version".to_owned();
    expect_conflict(
        s,
        WriteBatch::new().write(Write::UpdateTask(same)),
        "task same version",
    )
    .await;
    assert_eq!(
        ok(s.task("task_c01").await, "task"),
        Some(t1v2),
        "conflicts change nothing"
    );

    let mut ghost = task("task_ghost", "wl_a", 1, 2, TaskState::Open);
    ghost.version = 2;
    expect_conflict(
        s,
        WriteBatch::new().write(Write::UpdateTask(ghost)),
        "update missing task",
    )
    .await;
    assert_eq!(
        ok(s.task("task_ghost").await, "task"),
        None,
        "update does not insert"
    );

    let mut dup = t2.clone();
    dup.purpose = "duplicate".to_owned();
    expect_conflict(
        s,
        WriteBatch::new().write(Write::InsertTask(dup)),
        "duplicate task insert",
    )
    .await;
    assert_eq!(
        ok(s.task("task_c02").await, "task"),
        Some(t2),
        "duplicate insert changes nothing"
    );
}

/// A failing write anywhere in a batch leaves nothing of the batch behind.
async fn batch_atomicity(s: &dyn Store) {
    let fresh = task("task_atom_1", "wl_atom", 5000, 6000, TaskState::Open);
    let mut stale = task("task_c04", "wl_b", 1300, 3000, TaskState::Open);
    stale.version = 5;
    let batch = WriteBatch::new()
        .write(Write::InsertTask(fresh.clone()))
        .write(Write::UpdateTask(stale))
        .audit(event(
            "evt_atom_1",
            5000,
            "task.opened",
            Some("task_atom_1"),
            None,
        ))
        .audit(event(
            "evt_atom_2",
            5000,
            "task.updated",
            Some("task_atom_1"),
            None,
        ));
    expect_conflict(s, batch, "batch with stale update").await;
    assert_eq!(
        ok(s.task("task_atom_1").await, "task"),
        None,
        "earlier insert rolled back"
    );
    let ev = ok(
        s.audit_events(&filter(Some("task_atom_1"), None, None))
            .await,
        "audit_events",
    );
    assert!(
        ev.is_empty(),
        "audit events of a failed batch are not written"
    );
    assert!(
        ok(s.tasks_by_owner("wl_atom", 10).await, "tasks_by_owner").is_empty(),
        "rolled-back task not listed"
    );

    // A valid update before a duplicate insert is rolled back too.
    let mut t4v2 = task("task_c04", "wl_b", 1300, 3000, TaskState::Cancelled);
    t4v2.version = 2;
    let batch = WriteBatch::new()
        .write(Write::UpdateTask(t4v2))
        .write(Write::InsertTask(fresh.clone()))
        .write(Write::InsertTask(task(
            "task_c02",
            "wl_a",
            1,
            2,
            TaskState::Open,
        )))
        .audit(event(
            "evt_atom_3",
            5000,
            "task.opened",
            Some("task_atom_1"),
            None,
        ));
    expect_conflict(s, batch, "batch with duplicate insert").await;
    let t4 = ok(s.task("task_c04").await, "task").expect("task_c04 exists");
    assert_eq!(
        (t4.version, t4.state),
        (1, TaskState::Open),
        "earlier update rolled back"
    );
    assert_eq!(
        ok(s.task("task_atom_1").await, "task"),
        None,
        "earlier insert rolled back"
    );
    let ev = ok(
        s.audit_events(&filter(Some("task_atom_1"), None, None))
            .await,
        "audit_events",
    );
    assert!(
        ev.is_empty(),
        "audit events of a failed batch are not written"
    );

    // The same events commit once the batch is valid (ids were not consumed).
    let batch = WriteBatch::new()
        .write(Write::InsertTask(fresh.clone()))
        .audit(event(
            "evt_atom_1",
            5000,
            "task.opened",
            Some("task_atom_1"),
            None,
        ));
    let seqs = apply_ok(s, batch, "valid batch after conflicts").await;
    assert_eq!(seqs.len(), 1, "one seq per audit event");
    assert_eq!(
        ok(s.task("task_atom_1").await, "task"),
        Some(fresh),
        "task written"
    );
    let ev = ok(
        s.audit_events(&filter(Some("task_atom_1"), None, None))
            .await,
        "audit_events",
    );
    assert_eq!(ids(&ev, event_id), ["evt_atom_1"], "event written");
    assert_eq!(ev[0].seq, seqs[0], "read-back seq equals the returned seq");
}

/// Request round trips, `pending_requests`, `expired_requests`, compare-and-set.
async fn requests(s: &dyn Store) {
    let r1 = request("req_c01", "task_c02", RequestState::Pending, 100, 500);
    let r2 = request("req_c02", "task_c02", RequestState::Pending, 50, 600);
    let mut r3 = request("req_c03", "task_c04", RequestState::Approved, 200, 400);
    r3.approvers = vec!["alice".to_owned(), "bob".to_owned()];
    r3.source_ip = None;
    let r4 = request("req_c04", "task_c04", RequestState::Denied, 10, 300);
    let mut r5 = request("req_c05", "task_c04", RequestState::Granted, 20, 100);
    r5.lease_id = Some("lease_c01".to_owned());
    let r6 = request("req_c06", "task_c04", RequestState::Expired, 30, 100);
    let all = [&r1, &r2, &r3, &r4, &r5, &r6];
    let mut batch = WriteBatch::new();
    for r in all {
        batch = batch.write(Write::InsertRequest(r.clone()));
    }
    apply_ok(s, batch, "insert requests").await;

    for r in all {
        assert_eq!(
            ok(s.request(&r.id).await, "request").as_ref(),
            Some(r),
            "request round trip {}",
            r.id
        );
    }
    assert_eq!(
        ok(s.request("req_missing").await, "request"),
        None,
        "missing request"
    );

    let pending = ok(s.pending_requests(10).await, "pending_requests");
    assert_eq!(
        pending,
        vec![r2.clone(), r1.clone()],
        "pending_requests: oldest first"
    );
    let pending = ok(s.pending_requests(1).await, "pending_requests");
    assert_eq!(
        ids(&pending, request_id),
        ["req_c02"],
        "pending_requests: limit"
    );

    let exp = ok(s.expired_requests(399, 10).await, "expired_requests");
    assert!(
        exp.is_empty(),
        "expired_requests: only pending/approved count"
    );
    let exp = ok(s.expired_requests(400, 10).await, "expired_requests");
    assert_eq!(
        exp,
        vec![r3.clone()],
        "expired_requests: approved, expires_at == now"
    );
    let exp = ok(s.expired_requests(600, 10).await, "expired_requests");
    assert_eq!(
        id_set(&exp, request_id),
        set(&["req_c01", "req_c02", "req_c03"]),
        "expired_requests"
    );
    let exp = ok(s.expired_requests(600, 2).await, "expired_requests");
    assert_eq!(exp.len(), 2, "expired_requests: limit");

    let mut r1v2 = r1.clone();
    r1v2.state = RequestState::Approved;
    r1v2.approvers = vec!["carol".to_owned()];
    r1v2.version = 2;
    apply_ok(
        s,
        WriteBatch::new().write(Write::UpdateRequest(r1v2.clone())),
        "update request",
    )
    .await;
    assert_eq!(
        ok(s.request("req_c01").await, "request"),
        Some(r1v2.clone()),
        "updated request"
    );
    let pending = ok(s.pending_requests(10).await, "pending_requests");
    assert_eq!(
        ids(&pending, request_id),
        ["req_c02"],
        "pending_requests follows the update"
    );
    let mut stale = r1.clone();
    stale.state = RequestState::Denied;
    stale.version = 2;
    expect_conflict(
        s,
        WriteBatch::new().write(Write::UpdateRequest(stale)),
        "stale request update",
    )
    .await;
    assert_eq!(
        ok(s.request("req_c01").await, "request"),
        Some(r1v2),
        "conflict changes nothing"
    );
    let dup = request("req_c02", "task_c02", RequestState::Denied, 1, 2);
    expect_conflict(
        s,
        WriteBatch::new().write(Write::InsertRequest(dup)),
        "duplicate request",
    )
    .await;
    assert_eq!(
        ok(s.request("req_c02").await, "request"),
        Some(r2),
        "duplicate changes nothing"
    );
}

/// Approvals keep insertion order and are unique per request and approver, ignoring case.
async fn approvals(s: &dyn Store) {
    // Ids and names sort the other way round from insertion order.
    let zoe = approval("apr_c02", "req_c02", "zoe", 300);
    let alice = approval("apr_c01", "req_c02", "alice", 300);
    apply_ok(
        s,
        WriteBatch::new().write(Write::InsertApproval(zoe.clone())),
        "insert approval",
    )
    .await;
    apply_ok(
        s,
        WriteBatch::new().write(Write::InsertApproval(alice.clone())),
        "insert approval",
    )
    .await;
    let got = ok(s.approvals("req_c02").await, "approvals");
    assert_eq!(
        got,
        vec![zoe.clone(), alice.clone()],
        "approvals: insertion order, round trip"
    );

    let shout = approval("apr_c03", "req_c02", "ALICE", 310);
    expect_conflict(
        s,
        WriteBatch::new().write(Write::InsertApproval(shout)),
        "same approver, other case",
    )
    .await;
    let again = approval("apr_c04", "req_c02", "zoe", 320);
    expect_conflict(
        s,
        WriteBatch::new().write(Write::InsertApproval(again)),
        "same approver twice",
    )
    .await;

    // The conflict rolls back the request update in the same batch.
    let mut r2v2 = ok(s.request("req_c02").await, "request").expect("req_c02 exists");
    r2v2.approvers.push("Zoe".to_owned());
    r2v2.version = 2;
    let batch = WriteBatch::new()
        .write(Write::InsertApproval(approval(
            "apr_c05", "req_c02", "Zoe", 330,
        )))
        .write(Write::UpdateRequest(r2v2))
        .audit(event(
            "evt_apr_1",
            330,
            "approval.recorded",
            Some("task_apr"),
            None,
        ));
    expect_conflict(s, batch, "duplicate approval with request update").await;
    let r2 = ok(s.request("req_c02").await, "request").expect("req_c02 exists");
    assert_eq!(r2.version, 1, "request update rolled back");
    assert!(
        ok(
            s.audit_events(&filter(Some("task_apr"), None, None)).await,
            "audit_events"
        )
        .is_empty(),
        "audit rolled back"
    );
    let got = ok(s.approvals("req_c02").await, "approvals");
    assert_eq!(
        ids(&got, approval_id),
        ["apr_c02", "apr_c01"],
        "no approval added by conflicts"
    );
    let dup_id = approval("apr_c01", "req_c01", "dave", 340);
    expect_conflict(
        s,
        WriteBatch::new().write(Write::InsertApproval(dup_id)),
        "duplicate approval id",
    )
    .await;

    // The same approver may approve another request.
    let other = approval("apr_c06", "req_c01", "alice", 350);
    apply_ok(
        s,
        WriteBatch::new().write(Write::InsertApproval(other.clone())),
        "approval on other request",
    )
    .await;
    assert_eq!(
        ok(s.approvals("req_c01").await, "approvals"),
        vec![other],
        "per-request approvals"
    );
    assert!(
        ok(s.approvals("req_missing").await, "approvals").is_empty(),
        "no approvals"
    );
}

/// Lease round trips and every lease query.
async fn leases(s: &dyn Store) {
    let mut l01 = lease("lease_c01", "task_c02", LeaseState::Active, 1000, 2000);
    l01.credential_hmac = Some("aa11".to_owned());
    let mut l02 = lease("lease_c02", "task_c02", LeaseState::Active, 1100, 3000);
    l02.credential_hmac = Some("bb22".to_owned());
    l02.renewals = 2;
    let l03 = lease("lease_c03", "task_c04", LeaseState::Issuing, 1500, 3000);
    let mut l04 = lease("lease_c04", "task_c04", LeaseState::Revoking, 1000, 3000);
    l04.next_revoke_at_unix_secs = Some(1800);
    l04.revoke_attempts = 1;
    l04.revoke_reason = Some("task_completed".to_owned());
    let mut l05 = lease(
        "lease_c05",
        "task_c04",
        LeaseState::RevokeFailed,
        1000,
        3000,
    );
    l05.next_revoke_at_unix_secs = Some(2500);
    l05.revoke_attempts = 7;
    l05.last_revoke_error = Some("target unreachable".to_owned());
    let mut l06 = lease("lease_c06", "task_c04", LeaseState::Revoked, 500, 1000);
    l06.credential_hmac = Some("cc33".to_owned());
    l06.revoked_at_unix_secs = Some(900);
    let l07 = lease("lease_c07", "task_c04", LeaseState::Active, 900, 5000);
    let l08 = lease("lease_c08", "task_c04", LeaseState::Issuing, 1900, 3000);
    // Revoking without a scheduled attempt is never due.
    let l09 = lease("lease_c09", "task_c04", LeaseState::Revoking, 1000, 1000);
    let all = [&l01, &l02, &l03, &l04, &l05, &l06, &l07, &l08, &l09];
    let mut batch = WriteBatch::new();
    for l in all {
        batch = batch.write(Write::InsertLease(l.clone()));
    }
    apply_ok(s, batch, "insert leases").await;

    for l in all {
        assert_eq!(
            ok(s.lease(&l.id).await, "lease").as_ref(),
            Some(l),
            "lease round trip {}",
            l.id
        );
    }
    assert_eq!(
        ok(s.lease("lease_missing").await, "lease"),
        None,
        "missing lease"
    );

    let by_task = ok(s.leases_by_task("task_c02").await, "leases_by_task");
    assert_eq!(
        id_set(&by_task, lease_id),
        set(&["lease_c01", "lease_c02"]),
        "leases_by_task"
    );
    let by_task = ok(s.leases_by_task("task_c04").await, "leases_by_task");
    assert_eq!(by_task.len(), 7, "leases_by_task: every state");
    assert!(
        ok(s.leases_by_task("task_c03").await, "leases_by_task").is_empty(),
        "no leases"
    );

    let act = ok(s.active_leases("", 10).await, "active_leases");
    assert_eq!(
        act,
        vec![l01.clone(), l02.clone(), l07.clone()],
        "active_leases: ordered by id"
    );
    let act = ok(s.active_leases("", 2).await, "active_leases");
    assert_eq!(
        ids(&act, lease_id),
        ["lease_c01", "lease_c02"],
        "active_leases: limit"
    );
    let act = ok(s.active_leases("lease_c02", 2).await, "active_leases");
    assert_eq!(
        ids(&act, lease_id),
        ["lease_c07"],
        "active_leases: after_id is exclusive"
    );
    let act = ok(s.active_leases("lease_c07", 10).await, "active_leases");
    assert!(act.is_empty(), "active_leases: past the end");

    let rv = ok(
        s.revoked_unexpired_leases(1500, "", 100).await,
        "revoked_unexpired_leases",
    );
    assert_eq!(
        rv.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(),
        ["lease_c04", "lease_c05"],
        "revoked_unexpired_leases: revoking/revoke_failed/revoked, not yet expired, by id"
    );
    let rv = ok(
        s.revoked_unexpired_leases(900, "lease_c04", 1).await,
        "revoked_unexpired_leases",
    );
    assert_eq!(
        rv.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(),
        ["lease_c05"],
        "revoked_unexpired_leases: after_id is exclusive, limit applies"
    );

    let due = ok(s.due_leases(1999, 300, 100).await, "due_leases");
    assert_eq!(
        id_set(&due, lease_id),
        set(&["lease_c03", "lease_c04"]),
        "due_leases at 1999"
    );
    let due = ok(s.due_leases(2000, 300, 100).await, "due_leases");
    assert_eq!(
        id_set(&due, lease_id),
        set(&["lease_c01", "lease_c03", "lease_c04"]),
        "due_leases: active expired at now, issuing past grace, revoking due"
    );
    let due = ok(s.due_leases(2000, 0, 100).await, "due_leases");
    assert_eq!(
        id_set(&due, lease_id),
        set(&["lease_c01", "lease_c03", "lease_c04", "lease_c08"]),
        "due_leases: grace 0"
    );
    let due = ok(s.due_leases(2500, 300, 100).await, "due_leases");
    assert_eq!(
        id_set(&due, lease_id),
        set(&[
            "lease_c01",
            "lease_c03",
            "lease_c04",
            "lease_c05",
            "lease_c08"
        ]),
        "due_leases: revoke_failed due at now, issuing past grace"
    );
    let due = ok(s.due_leases(2500, 300, 2).await, "due_leases");
    assert_eq!(due.len(), 2, "due_leases: limit");
    let due = ok(s.due_leases(900, 300, 100).await, "due_leases");
    assert!(due.is_empty(), "due_leases: nothing due early");

    let hit = ok(
        s.lease_by_credential_hmac("bb22").await,
        "lease_by_credential_hmac",
    );
    assert_eq!(hit, Some(l02.clone()), "lease_by_credential_hmac");
    let hit = ok(
        s.lease_by_credential_hmac("cc33").await,
        "lease_by_credential_hmac",
    );
    assert_eq!(
        hit.map(|l| l.id),
        Some("lease_c06".to_owned()),
        "revoked leases are found too"
    );
    let hit = ok(
        s.lease_by_credential_hmac("ffff").await,
        "lease_by_credential_hmac",
    );
    assert_eq!(hit, None, "unknown hmac");

    // Updates move the indexed columns with the body.
    let mut l02v2 = l02.clone();
    l02v2.state = LeaseState::Revoked;
    l02v2.credential_hmac = None;
    l02v2.revoked_at_unix_secs = Some(1200);
    l02v2.version = 2;
    let mut l03v2 = l03.clone();
    l03v2.state = LeaseState::Active;
    l03v2.credential_hmac = Some("dd44".to_owned());
    l03v2.version = 2;
    let batch = WriteBatch::new()
        .write(Write::UpdateLease(l02v2.clone()))
        .write(Write::UpdateLease(l03v2.clone()));
    apply_ok(s, batch, "update leases").await;
    assert_eq!(
        ok(s.lease("lease_c02").await, "lease"),
        Some(l02v2.clone()),
        "updated lease"
    );
    let act = ok(s.active_leases("", 10).await, "active_leases");
    assert_eq!(
        ids(&act, lease_id),
        ["lease_c01", "lease_c03", "lease_c07"],
        "active after update"
    );
    assert_eq!(
        ok(
            s.lease_by_credential_hmac("bb22").await,
            "lease_by_credential_hmac"
        ),
        None,
        "cleared hmac no longer found"
    );
    assert_eq!(
        ok(
            s.lease_by_credential_hmac("dd44").await,
            "lease_by_credential_hmac"
        ),
        Some(l03v2),
        "new hmac found"
    );
    let due = ok(s.due_leases(2000, 0, 100).await, "due_leases");
    assert_eq!(
        id_set(&due, lease_id),
        set(&["lease_c01", "lease_c04", "lease_c08"]),
        "due_leases follows the updated state"
    );

    let mut stale = l02.clone();
    stale.renewals = 3;
    stale.version = 2;
    expect_conflict(
        s,
        WriteBatch::new().write(Write::UpdateLease(stale)),
        "stale lease update",
    )
    .await;
    assert_eq!(
        ok(s.lease("lease_c02").await, "lease"),
        Some(l02v2),
        "conflict changes nothing"
    );
    let dup = lease("lease_c01", "task_c02", LeaseState::Active, 1, 2);
    expect_conflict(
        s,
        WriteBatch::new().write(Write::InsertLease(dup)),
        "duplicate lease",
    )
    .await;
    assert_eq!(
        ok(s.lease("lease_c01").await, "lease"),
        Some(l01),
        "duplicate changes nothing"
    );
}

/// Many writers race the same compare-and-set: exactly one wins.
async fn concurrent_cas(store: Arc<dyn Store>) {
    const WRITERS: u32 = 20;
    let base = lease("lease_race", "task_c04", LeaseState::Active, 4000, 9000);
    apply_ok(
        store.as_ref(),
        WriteBatch::new().write(Write::InsertLease(base.clone())),
        "insert race lease",
    )
    .await;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..WRITERS {
        let store = store.clone();
        let mut next = base.clone();
        next.renewals = i + 1;
        next.version = 2;
        set.spawn(async move {
            let r = store
                .apply(
                    WriteBatch::new()
                        .write(Write::UpdateLease(next.clone()))
                        .audit(event(
                            &format!("evt_race_{i:02}"),
                            4000,
                            "credential.renewed",
                            None,
                            Some("lease_race"),
                        )),
                )
                .await;
            (next, r)
        });
    }
    let mut winners = Vec::new();
    while let Some(joined) = set.join_next().await {
        let (next, r) = joined.expect("writer task");
        match r {
            Ok(seqs) => {
                assert_eq!(seqs.len(), 1, "winner gets its seq");
                winners.push(next);
            }
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("racing CAS: expected success or conflict, got {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "racing CAS: exactly one writer wins");
    let stored = ok(store.lease("lease_race").await, "lease");
    assert_eq!(
        stored.as_ref(),
        winners.first(),
        "racing CAS: the winner's value is stored"
    );
    let ev = ok(
        store
            .audit_events(&filter(None, Some("lease_race"), None))
            .await,
        "audit_events",
    );
    assert_eq!(
        ev.len(),
        1,
        "racing CAS: only the winner's audit event is stored"
    );
}

/// Audit sequence numbers and every audit filter.
async fn audit(s: &dyn Store) {
    let mut e1 = event("evt_c01", 100, "task.opened", Some("task_c02"), None);
    e1.detail = serde_json::Value::Null;
    let mut e2 = event(
        "evt_c02",
        101,
        "credential.issued",
        Some("task_c02"),
        Some("lease_c01"),
    );
    e2.seq = 999_999; // ignored: the store assigns seqs
    e2.access_request_id = Some("req_c01".to_owned());
    let e3 = event(
        "evt_c03",
        102,
        "credential.revoked",
        Some("task_c02"),
        Some("lease_c01"),
    );
    let mut e4 = event("evt_c04", 103, "credential_x.other", Some("task_c04"), None);
    e4.request_id = None;
    let e5 = event("evt_c05", 104, "cred%x.y", None, None);
    let e6 = event(
        "evt_c06",
        105,
        "credential.issued",
        Some("task_c04"),
        Some("lease_c07"),
    );

    let first = apply_ok(
        s,
        WriteBatch::new()
            .audit(e1.clone())
            .audit(e2.clone())
            .audit(e3.clone()),
        "append events",
    )
    .await;
    assert_eq!(first.len(), 3, "one seq per event");
    assert!(
        first.windows(2).all(|w| w[0] < w[1]),
        "seqs increase within a batch: {first:?}"
    );
    // Writes and events together.
    let mut t2 = ok(s.task("task_c02").await, "task").expect("task_c02 exists");
    t2.purpose = "touched".to_owned();
    t2.version += 1;
    let second = apply_ok(
        s,
        WriteBatch::new()
            .write(Write::UpdateTask(t2.clone()))
            .audit(e4.clone())
            .audit(e5.clone())
            .audit(e6.clone()),
        "append events with a write",
    )
    .await;
    assert_eq!(second.len(), 3, "one seq per event");
    assert!(
        second.windows(2).all(|w| w[0] < w[1]),
        "seqs increase within a batch: {second:?}"
    );
    assert!(second[0] > first[2], "seqs increase across batches");
    assert_eq!(
        ok(s.task("task_c02").await, "task"),
        Some(t2),
        "write committed with events"
    );

    let seqs: Vec<i64> = first.iter().chain(&second).copied().collect();
    let mut expected = vec![e1, e2, e3, e4, e5, e6];
    for (e, seq) in expected.iter_mut().zip(&seqs) {
        e.seq = *seq;
    }
    let base = seqs[0] - 1;
    let q = |f: AuditFilter| async move {
        let mut got = ok(s.audit_events(&f).await, "audit_events");
        for e in &mut got {
            assert!(
                e.hash.as_ref().is_some_and(|h| h.len() == 64) && e.prev_hash.is_some(),
                "audit_events fills the chain fields"
            );
            e.prev_hash = None;
            e.hash = None;
        }
        got
    };
    let after = |mut f: AuditFilter, a: i64| {
        f.after_seq = Some(a);
        f
    };

    let got = q(after(filter(None, None, None), base)).await;
    assert_eq!(
        got, expected,
        "audit_events: round trip with seq filled, in seq order"
    );

    let got = q(after(filter(Some("task_c02"), None, None), base)).await;
    assert_eq!(
        ids(&got, event_id),
        ["evt_c01", "evt_c02", "evt_c03"],
        "filter task_id"
    );
    let got = q(filter(None, Some("lease_c01"), None)).await;
    assert_eq!(
        ids(&got, event_id),
        ["evt_c02", "evt_c03"],
        "filter lease_id"
    );
    let got = q(after(filter(None, None, Some("credential.")), base)).await;
    assert_eq!(
        ids(&got, event_id),
        ["evt_c02", "evt_c03", "evt_c06"],
        "filter kind prefix"
    );
    let got = q(after(filter(None, None, Some("credential.issued")), base)).await;
    assert_eq!(
        ids(&got, event_id),
        ["evt_c02", "evt_c06"],
        "kind prefix equal to the kind"
    );
    let got = q(after(filter(None, None, Some("credential_")), base)).await;
    assert_eq!(
        ids(&got, event_id),
        ["evt_c04"],
        "`_` in a kind prefix is literal"
    );
    let got = q(after(filter(None, None, Some("cred%")), base)).await;
    assert_eq!(
        ids(&got, event_id),
        ["evt_c05"],
        "`%` in a kind prefix is literal"
    );
    let got = q(after(filter(None, None, Some("Credential.")), base)).await;
    assert!(got.is_empty(), "kind prefix is case-sensitive");
    let got = q(after(filter(None, None, Some("nothing.")), base)).await;
    assert!(got.is_empty(), "unknown kind prefix");
    let got = q(filter(
        Some("task_c02"),
        Some("lease_c01"),
        Some("credential.rev"),
    ))
    .await;
    assert_eq!(
        ids(&got, event_id),
        ["evt_c03"],
        "task, lease and kind combined"
    );
    let got = q(filter(Some("task_c04"), Some("lease_c01"), None)).await;
    assert!(got.is_empty(), "task and lease combined");
    let got = q(filter(None, Some("lease_c07"), Some("credential."))).await;
    assert_eq!(ids(&got, event_id), ["evt_c06"], "lease and kind combined");

    let got = q(after(filter(Some("task_c02"), None, None), seqs[1])).await;
    assert_eq!(ids(&got, event_id), ["evt_c03"], "after_seq is exclusive");
    let got = q(after(filter(None, None, None), seqs[5])).await;
    assert!(got.is_empty(), "after the last seq");
    let mut f = after(filter(None, None, None), base);
    f.limit = Some(2);
    let got = q(f).await;
    assert_eq!(ids(&got, event_id), ["evt_c01", "evt_c02"], "limit");
}

/// Default and maximum page sizes, and paging through a large batch.
async fn audit_bulk_limits(s: &dyn Store) {
    const N: usize = 1100;
    let mut batch = WriteBatch::new();
    for i in 0..N {
        batch = batch.audit(event(
            &format!("evt_bulk_{i:04}"),
            7000,
            "bulk.event",
            Some("task_bulk"),
            None,
        ));
    }
    let seqs = apply_ok(s, batch, "append bulk events").await;
    assert_eq!(seqs.len(), N, "one seq per event");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seqs increase");

    let f = filter(Some("task_bulk"), None, None);
    let got = ok(s.audit_events(&f).await, "audit_events");
    assert_eq!(got.len(), 100, "default limit is 100");
    assert_eq!(
        got.iter().map(|e| e.seq).collect::<Vec<_>>(),
        seqs[..100],
        "first page in order"
    );
    let mut big = f.clone();
    big.limit = Some(5000);
    let got = ok(s.audit_events(&big).await, "audit_events");
    assert_eq!(got.len(), 1000, "limit is capped at 1000");

    let mut seen = Vec::new();
    let mut page = f.clone();
    page.limit = Some(300);
    loop {
        let got = ok(s.audit_events(&page).await, "audit_events");
        let Some(last) = got.last() else { break };
        page.after_seq = Some(last.seq);
        seen.extend(got.iter().map(|e| e.seq));
    }
    assert_eq!(
        seen, seqs,
        "paging with after_seq visits every event once, in order"
    );
}

/// `put_key_blob_if_absent` keeps the first blob.
async fn key_blobs(store: Arc<dyn Store>) {
    let s = store.as_ref();
    assert_eq!(
        ok(s.key_blob("kek").await, "key_blob"),
        None,
        "missing blob"
    );
    let first = vec![0u8, 1, 2, 0, 255, 254];
    let got = ok(
        s.put_key_blob_if_absent("kek", &first).await,
        "put_key_blob_if_absent",
    );
    assert_eq!(got, first, "first put returns its blob");
    let got = ok(
        s.put_key_blob_if_absent("kek", &[9, 9, 9]).await,
        "put_key_blob_if_absent",
    );
    assert_eq!(got, first, "second put returns the first blob");
    assert_eq!(
        ok(s.key_blob("kek").await, "key_blob"),
        Some(first.clone()),
        "first blob kept"
    );
    let other = vec![7u8; 64];
    let got = ok(
        s.put_key_blob_if_absent("kek2", &other).await,
        "put_key_blob_if_absent",
    );
    assert_eq!(got, other, "names are independent");
    assert_eq!(
        ok(s.key_blob("kek").await, "key_blob"),
        Some(first),
        "names are independent"
    );

    // Racing puts all see one winner.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..10u8 {
        let store = store.clone();
        set.spawn(async move { store.put_key_blob_if_absent("kek_race", &[i; 16]).await });
    }
    let mut results = BTreeSet::new();
    while let Some(joined) = set.join_next().await {
        results.insert(ok(joined.expect("put task"), "put_key_blob_if_absent"));
    }
    assert_eq!(results.len(), 1, "racing puts return the same blob");
    let stored = ok(s.key_blob("kek_race").await, "key_blob");
    assert_eq!(
        stored.as_ref(),
        results.first(),
        "the returned blob is the stored one"
    );
}

/// Actor, time range and credential-HMAC filters.
async fn audit_filters(s: &dyn Store) {
    let mut a = event("evt_f01", 9_000, "tool.used", Some("task_f"), None);
    a.actor = "wl:alice".to_owned();
    let mut b = event("evt_f02", 9_010, "credential.issued", Some("task_f"), None);
    b.actor = "wl:bob".to_owned();
    b.detail = json!({"credential_hmac": "00aa11bb"});
    let mut c = event("evt_f03", 9_020, "tool.used", Some("task_f"), None);
    c.actor = "wl:alice".to_owned();
    apply_ok(
        s,
        WriteBatch::new().audit(a).audit(b).audit(c),
        "filter events",
    )
    .await;
    let q = |f: AuditFilter| async move { ok(s.audit_events(&f).await, "audit_events") };
    let base = filter(Some("task_f"), None, None);
    let got = q(AuditFilter {
        actor: Some("wl:alice".into()),
        ..base.clone()
    })
    .await;
    assert_eq!(ids(&got, event_id), ["evt_f01", "evt_f03"], "filter actor");
    let got = q(AuditFilter {
        since_unix_secs: Some(9_010),
        until_unix_secs: Some(9_020),
        ..base.clone()
    })
    .await;
    assert_eq!(
        ids(&got, event_id),
        ["evt_f02"],
        "time range: since inclusive, until exclusive"
    );
    let got = q(AuditFilter {
        credential_hmac: Some("00AA11BB".into()),
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(
        ids(&got, event_id),
        ["evt_f02"],
        "credential hmac, any case"
    );
    let got = q(AuditFilter {
        credential_hmac: Some("00aa11".into()),
        ..AuditFilter::default()
    })
    .await;
    assert!(got.is_empty(), "a prefix of an hmac matches nothing");
    let got = q(AuditFilter {
        credential_hmac: Some("%".into()),
        ..AuditFilter::default()
    })
    .await;
    assert!(got.is_empty(), "a non-hex hmac matches nothing");
}

/// Signed checkpoints (stored as given, first one per seq wins) and sink cursors (monotone).
async fn checkpoints_and_cursors(s: &dyn Store) {
    assert_eq!(
        ok(s.last_checkpoint().await, "last_checkpoint"),
        None,
        "none yet"
    );
    let cp = |seq: i64, jws: &str| AuditCheckpoint {
        seq,
        hash: format!("{seq:064x}"),
        at_unix_secs: 50 + seq,
        kid: "k1".into(),
        jws: jws.into(),
    };
    ok(s.put_checkpoint(&cp(3, "a.b.c")).await, "put_checkpoint");
    ok(
        s.put_checkpoint(&cp(3, "x.y.z")).await,
        "put_checkpoint again",
    );
    ok(s.put_checkpoint(&cp(9, "d.e.f")).await, "put_checkpoint");
    let got = ok(s.checkpoints(0, 10).await, "checkpoints");
    assert_eq!(
        got,
        vec![cp(3, "a.b.c"), cp(9, "d.e.f")],
        "first per seq wins"
    );
    let got = ok(s.checkpoints(3, 10).await, "checkpoints");
    assert_eq!(got, vec![cp(9, "d.e.f")], "after_seq is exclusive");
    assert_eq!(
        ok(s.last_checkpoint().await, "last_checkpoint"),
        Some(cp(9, "d.e.f")),
        "last_checkpoint is the highest seq"
    );

    assert_eq!(ok(s.sink_cursor("file").await, "sink_cursor"), 0, "unset");
    ok(s.set_sink_cursor("file", 7).await, "set_sink_cursor");
    ok(s.set_sink_cursor("file", 5).await, "set_sink_cursor back");
    ok(s.set_sink_cursor("hook", 2).await, "set_sink_cursor other");
    assert_eq!(
        ok(s.sink_cursor("file").await, "sink_cursor"),
        7,
        "monotone"
    );
    assert_eq!(
        ok(s.sink_cursor("hook").await, "sink_cursor"),
        2,
        "per sink"
    );
}

/// The whole log is one gapless chain from seq 1, including events from concurrent writers.
async fn audit_chain(store: Arc<dyn Store>) {
    let mut joins = Vec::new();
    for i in 0..16 {
        let st = store.clone();
        joins.push(tokio::spawn(async move {
            let mut b = WriteBatch::new();
            for j in 0..3 {
                b = b.audit(event(
                    &format!("evt_chain_{i}_{j}"),
                    8_000,
                    "chain.event",
                    None,
                    None,
                ));
            }
            st.apply(b).await.map(|seqs| seqs.len())
        }));
    }
    for j in joins {
        let n = j.await.expect("join").expect("concurrent apply");
        assert_eq!(n, 3);
    }
    let s = store.as_ref();
    let mut prev = GENESIS_HASH.to_owned();
    let mut expected_seq = 1;
    let mut after = 0;
    loop {
        let page = ok(s.audit_records(after, 500).await, "audit_records");
        let Some(last) = page.last() else { break };
        after = last.seq;
        for r in &page {
            assert_eq!(r.seq, expected_seq, "seqs are gapless from 1");
            assert_eq!(r.prev_hash, prev, "seq {} links to its predecessor", r.seq);
            assert_eq!(
                r.hash,
                chain_hash(&r.prev_hash, r.seq, &r.body),
                "seq {} hash covers its body",
                r.seq
            );
            prev = r.hash.clone();
            expected_seq += 1;
        }
    }
    assert!(
        expected_seq > 1100,
        "the log has the events of every section"
    );
    assert_eq!(
        ok(s.audit_head().await, "audit_head"),
        Some((expected_seq - 1, prev)),
        "audit_head is the last record"
    );
}
