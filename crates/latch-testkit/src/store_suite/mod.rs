//! A backend-agnostic conformance suite for [`Store`] implementations (moved here from
//! `latch-store`, so the production crate ships no panicking test code).
//!
//! [`run_all`] exercises every method of the trait against the documented semantics and panics
//! (with a message naming the check) on the first failure. Any backend — the embedded SQLite
//! store, a PostgreSQL store — runs the same suite from its tests:
//!
//! ```no_run
//! # async fn demo() {
//! let store = latch_store::SqliteStore::open("sqlite::memory:").await.unwrap();
//! latch_testkit::store_suite::run_all(std::sync::Arc::new(store)).await;
//! # }
//! ```
//!
//! The suite uses fixed ids and times, so it needs an **empty** store, and it must run inside a
//! multi-threaded or current-thread Tokio runtime (it spawns tasks to race writers).
//! Parents are always written before their children (task → request → approval / lease), so a
//! backend may enforce foreign keys.
//!
//! Files: this root holds the fixtures and helpers; `rows.rs` the task, request and
//! batch checks; `leases.rs` approvals, leases and racing writers; `audit.rs` the audit log,
//! checkpoints, sink cursors and key blobs.

use std::collections::BTreeSet;
use std::sync::Arc;

use latch_core::audit::{AuditCheckpoint, GENESIS_HASH, chain_hash};
use latch_core::model::{
    AccessRequest, Approval, AuditEvent, AuditFilter, Decision, GroupQuorum, Lease, LeaseState,
    RequestState, Task, TaskState, Verdict, Workload, WorkloadClaims,
};
use latch_core::ports::{Store, StoreError, Write, WriteBatch};
use serde_json::json;

mod audit;
mod leases;
mod notify;
mod operators;
mod retention;
mod rows;
mod ssf;

use audit::{
    audit, audit_bulk_limits, audit_chain, audit_filters, checkpoints_and_cursors, key_blobs,
};
use leases::{approvals, concurrent_cas, leases};
use rows::{batch_atomicity, console_sessions, ping, requests, require_task_open, tasks};

/// Checks that `records` are one whole audit chain from its start: `seq` 1, 2, 3, … without a
/// gap, each `prev_hash` the previous record's `hash` (genesis for the first), and each `hash`
/// [`chain_hash`] over the record. Returns the last hash (genesis for none).
///
/// # Panics
/// At the first record that breaks the chain, naming its `seq`.
pub fn assert_chained(records: &[latch_core::audit::AuditRecord]) -> String {
    let mut prev = GENESIS_HASH.to_owned();
    for (i, r) in (1_i64..).zip(records) {
        assert_eq!(r.seq, i, "seqs are gapless from 1");
        assert_eq!(r.prev_hash, prev, "seq {} links to its predecessor", r.seq);
        assert_eq!(
            r.hash,
            chain_hash(&r.prev_hash, r.seq, &r.body),
            "seq {} hash covers its body",
            r.seq
        );
        prev.clone_from(&r.hash);
    }
    prev
}

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
    operators::open_requests(s).await;
    operators::operator_pages(s).await;
    operators::freezes(s).await;
    concurrent_cas(store.clone()).await;
    audit(s).await;
    audit_bulk_limits(s).await;
    key_blobs(store.clone()).await;
    audit_filters(s).await;
    checkpoints_and_cursors(s).await;
    notify::notifications(s).await;
    console_sessions(s).await;
    ssf::received_sets(s).await;
    operators::census(s).await;
    retention::prune_ended_tasks(s).await;
    // Last: every section above appended events, some in batches that failed or raced.
    audit_chain(store.clone()).await;
    // After the whole chain was checked: it deletes the older half of the log.
    retention::prune_audit(s).await;
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
        environment: "staging".into(),
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
        revoke_requested_at_unix_millis: None,
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
