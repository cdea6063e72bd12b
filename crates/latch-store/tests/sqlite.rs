//! `SqliteStore` against the conformance suite, plus durability and concurrency checks.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unimplemented,
    clippy::too_many_lines,
    reason = "test code: a failed step fails the test, and a scenario reads best in one piece"
)]
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use latch_core::model::{
    AccessRequest, AuditEvent, AuditFilter, AuditKind, Decision, Lease, LeaseState, RequestState,
    Task, TaskState, Workload, WorkloadClaims,
};
use latch_core::ports::{Store, StoreError, Write, WriteBatch};
use latch_store::SqliteStore;

/// A unique database path under the system temp dir, removed (with its WAL files) on drop.
struct TempDb(PathBuf);

impl TempDb {
    fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("latch-store-{tag}-{}-{n}-{nanos}.db", std::process::id());
        Self(std::env::temp_dir().join(name))
    }
    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.0.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

fn task(id: &str) -> Task {
    Task {
        id: id.to_owned(),
        owner: Workload {
            id: "wl_dur".to_owned(),
            issuer: "https://issuer.example".to_owned(),
            subject: "sub".to_owned(),
            preset: "generic".to_owned(),
            run_binding: None,
            on_behalf_of: None,
            claims: WorkloadClaims::default(),
            token_expires_at_unix_secs: 100,
        },
        purpose: "durability".to_owned(),
        repository: None,
        branch: None,
        environment: "sandbox".into(),
        production: false,
        on_behalf_of: None,
        state: TaskState::Open,
        created_at_unix_secs: 10,
        expires_at_unix_secs: 1000,
        ended_at_unix_secs: None,
        version: 1,
    }
}

fn request(id: &str, task_id: &str) -> AccessRequest {
    AccessRequest {
        id: id.to_owned(),
        task_id: task_id.to_owned(),
        principal_id: "wl_dur".to_owned(),
        resource_id: "db".to_owned(),
        actions: vec!["read".to_owned()],
        ttl_secs: 60,
        justification: "j".to_owned(),
        state: RequestState::Granted,
        decision: Decision::Allow {
            policy_ids: vec!["p".to_owned()],
            max_ttl_secs: None,
        },
        digest: "d".to_owned(),
        source_ip: None,
        created_at_unix_secs: 10,
        expires_at_unix_secs: 70,
        lease_id: Some("lease_dur".to_owned()),
        approvers: vec![],
        params: serde_json::Value::Null,
        step_up_groups: vec![],
        version: 1,
    }
}

fn lease(id: &str, task_id: &str) -> Lease {
    Lease {
        id: id.to_owned(),
        task_id: task_id.to_owned(),
        request_id: "req_dur".to_owned(),
        resource_id: "db".to_owned(),
        provider: "jwt".to_owned(),
        actions: vec!["read".to_owned()],
        state: LeaseState::Active,
        issued_at_unix_secs: 10,
        expires_at_unix_secs: 70,
        max_expires_at_unix_secs: 700,
        renewals: 0,
        revocation_handle: String::new(),
        credential_hmac: Some("abcd".to_owned()),
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

fn event(id: &str) -> AuditEvent {
    let mut e = AuditEvent::new(10, AuditKind::CredentialIssued, "wl_dur", "ok")
        .task("task_dur")
        .lease("lease_dur");
    e.id = id.to_owned();
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_file() {
    let db = TempDb::new("conf");
    let store = SqliteStore::open(db.path()).await.expect("open");
    latch_testkit::store_suite::run_all(Arc::new(store.clone())).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_file_url() {
    let db = TempDb::new("conf-url");
    let store = SqliteStore::open(&format!("sqlite://{}", db.path()))
        .await
        .expect("open");
    latch_testkit::store_suite::run_all(Arc::new(store.clone())).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_memory() {
    let store = SqliteStore::open("sqlite::memory:").await.expect("open");
    latch_testkit::store_suite::run_all(Arc::new(store)).await;
}

#[tokio::test]
async fn memory_databases_are_private() {
    let a = SqliteStore::open(":memory:").await.expect("open");
    let b = SqliteStore::open(":memory:").await.expect("open");
    a.apply(WriteBatch::new().write(Write::InsertTask(task("task_mem"))))
        .await
        .expect("apply");
    assert!(a.task("task_mem").await.expect("read").is_some());
    assert!(b.task("task_mem").await.expect("read").is_none());
}

#[tokio::test]
async fn committed_batch_survives_reopen() {
    let db = TempDb::new("durable");
    let batch = WriteBatch::new()
        .write(Write::InsertTask(task("task_dur")))
        .write(Write::InsertRequest(request("req_dur", "task_dur")))
        .write(Write::InsertLease(lease("lease_dur", "task_dur")))
        .audit(event("evt_dur_1"))
        .audit(event("evt_dur_2"));
    let seqs = {
        let store = SqliteStore::open(db.path()).await.expect("open");
        let seqs = store.apply(batch).await.expect("apply");
        store.close().await;
        seqs
    };
    {
        // Dropped without close(): still durable.
        let store = SqliteStore::open(db.path()).await.expect("reopen");
        assert_eq!(
            store.task("task_dur").await.expect("read"),
            Some(task("task_dur"))
        );
        assert_eq!(
            store.request("req_dur").await.expect("read"),
            Some(request("req_dur", "task_dur"))
        );
        assert_eq!(
            store.lease_by_credential_hmac("abcd").await.expect("read"),
            Some(lease("lease_dur", "task_dur"))
        );
        let events = store
            .audit_events(&AuditFilter::default())
            .await
            .expect("read");
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), seqs);
        let mut l2 = lease("lease_dur", "task_dur");
        l2.state = LeaseState::Revoked;
        l2.version = 2;
        store
            .apply(WriteBatch::new().write(Write::UpdateLease(l2)))
            .await
            .expect("update");
    }
    let store = SqliteStore::open(&format!("sqlite://{}", db.path()))
        .await
        .expect("reopen");
    let l = store
        .lease("lease_dur")
        .await
        .expect("read")
        .expect("lease");
    assert_eq!((l.state, l.version), (LeaseState::Revoked, 2));
    // Sequence numbers keep increasing across restarts.
    let next = store
        .apply(WriteBatch::new().audit(event("evt_dur_3")))
        .await
        .expect("apply");
    assert!(next[0] > seqs[1]);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_of_fifty_concurrent_cas_updates_wins() {
    let db = TempDb::new("cas");
    let store = Arc::new(SqliteStore::open(db.path()).await.expect("open"));
    let base = WriteBatch::new()
        .write(Write::InsertTask(task("task_dur")))
        .write(Write::InsertRequest(request("req_dur", "task_dur")))
        .write(Write::InsertLease(lease("lease_dur", "task_dur")));
    store.apply(base).await.expect("seed");

    let mut set = tokio::task::JoinSet::new();
    for i in 0..50u32 {
        let store = store.clone();
        set.spawn(async move {
            let mut next = lease("lease_dur", "task_dur");
            next.renewals = i + 1;
            next.version = 2;
            let mut ev = event(&format!("evt_cas_{i}"));
            ev.kind = "credential.renewed".to_owned();
            store
                .apply(WriteBatch::new().write(Write::UpdateLease(next)).audit(ev))
                .await
        });
    }
    let (mut wins, mut conflicts) = (0, 0);
    while let Some(r) = set.join_next().await {
        match r.expect("join") {
            Ok(_) => wins += 1,
            Err(StoreError::Conflict(_)) => conflicts += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!((wins, conflicts), (1, 49));
    let l = store
        .lease("lease_dur")
        .await
        .expect("read")
        .expect("lease");
    assert_eq!(l.version, 2);
    let renewed = AuditFilter {
        kind_prefix: Some("credential.renewed".to_owned()),
        ..AuditFilter::default()
    };
    assert_eq!(store.audit_events(&renewed).await.expect("read").len(), 1);
    store.close().await;
}

#[tokio::test]
async fn dangling_references_conflict_and_leave_the_writer_usable() {
    let store = SqliteStore::open("sqlite::memory:").await.expect("open");
    let orphan = WriteBatch::new()
        .write(Write::InsertRequest(request("req_orphan", "task_nope")))
        .audit(event("evt_orphan"));
    match store.apply(orphan).await {
        Err(StoreError::Conflict(m)) => assert!(!m.contains("req_orphan")),
        other => panic!("expected conflict, got {other:?}"),
    }
    assert!(store.request("req_orphan").await.expect("read").is_none());
    assert!(
        store
            .audit_events(&AuditFilter::default())
            .await
            .expect("read")
            .is_empty()
    );
    // Order inside a batch does not matter: references are checked at commit.
    let batch = WriteBatch::new()
        .write(Write::InsertLease(lease("lease_dur", "task_dur")))
        .write(Write::InsertRequest(request("req_dur", "task_dur")))
        .write(Write::InsertTask(task("task_dur")));
    store
        .apply(batch)
        .await
        .expect("children before parent in one batch");
    assert!(store.lease("lease_dur").await.expect("read").is_some());
}

#[tokio::test]
async fn reopening_runs_no_migration_twice_and_accepts_plain_paths() {
    let db = TempDb::new("reopen");
    for _ in 0..3 {
        let store = SqliteStore::open(db.path()).await.expect("open");
        store.ping().await.expect("ping");
        store.close().await;
    }
    let store = SqliteStore::open(db.path()).await.expect("open");
    let mode: String = {
        // Journal mode is persistent in the file: check it through a fresh raw connection.
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.path()))
            .await
            .expect("raw connect");
        sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut c)
            .await
            .expect("pragma")
    };
    assert_eq!(mode, "wal");
    store.close().await;
}

#[tokio::test]
async fn closed_store_is_unavailable() {
    let db = TempDb::new("closed");
    let store = SqliteStore::open(db.path()).await.expect("open");
    store.close().await;
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store
            .apply(WriteBatch::new().write(Write::InsertTask(task("t"))))
            .await,
        Err(StoreError::Unavailable(_))
    ));
}

#[tokio::test]
async fn unopenable_location_is_unavailable() {
    let r = SqliteStore::open("/nonexistent-dir-latch/sub/latch.db").await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))));
}

/// Concurrent batches on a file database are committed in groups: a failing batch (dangling
/// reference, duplicate key, lost compare-and-set) gets its own conflict and leaves nothing
/// behind, while the batches grouped with it commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouped_batches_fail_and_succeed_independently() {
    let db = TempDb::new("group");
    let store = Arc::new(SqliteStore::open(db.path()).await.expect("open"));
    store
        .apply(WriteBatch::new().write(Write::InsertTask(task("task_dur"))))
        .await
        .expect("seed");
    let mut set = tokio::task::JoinSet::new();
    for i in 0..60u32 {
        let store = store.clone();
        set.spawn(async move {
            let req = format!("req_g{i}");
            let lease_id = format!("lease_g{i}");
            let (task_id, req_id) = match i % 3 {
                // Dangling reference: the parent task does not exist.
                1 => ("task_nope".to_owned(), req.clone()),
                // Duplicate key: every such batch reuses one request id; only the first wins.
                2 => ("task_dur".to_owned(), "req_dup".to_owned()),
                _ => ("task_dur".to_owned(), req.clone()),
            };
            let mut ev = event(&format!("evt_g{i}"));
            ev.lease_id = Some(lease_id.clone());
            let batch = WriteBatch::new()
                .write(Write::InsertLease(lease(&lease_id, &task_id)))
                .write(Write::InsertRequest(request(&req_id, &task_id)))
                .audit(ev);
            (i, lease_id, store.apply(batch).await)
        });
    }
    let (mut ok, mut dup_wins) = (0, 0);
    while let Some(r) = set.join_next().await {
        let (i, lease_id, result) = r.expect("join");
        let stored = store.lease(&lease_id).await.expect("read").is_some();
        match (i % 3, result) {
            (0, Ok(seqs)) => {
                assert_eq!(seqs.len(), 1);
                assert!(stored);
                ok += 1;
            }
            (1, Err(StoreError::Conflict(_))) => assert!(!stored, "dangling batch {i} left rows"),
            (2, Ok(_)) => {
                assert!(stored);
                dup_wins += 1;
            }
            (2, Err(StoreError::Conflict(_))) => assert!(!stored, "duplicate batch {i} left rows"),
            (_, other) => panic!("batch {i}: unexpected {other:?}"),
        }
    }
    assert_eq!((ok, dup_wins), (20, 1));
    let events = store
        .audit_events(&AuditFilter {
            limit: Some(1000),
            ..AuditFilter::default()
        })
        .await
        .expect("read");
    assert_eq!(events.len(), 21, "one audit event per committed batch");
    store.close().await;
}

/// Another process holds the write lock: a write answers `Unavailable` within the store's
/// deadline (not after a long busy wait), writes nothing (the writer thread drops the batch its
/// caller gave up on), and writes work again once the lock is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_fails_fast_and_unwritten_while_another_process_holds_the_lock() {
    let db = TempDb::new("locked");
    let deadline = std::time::Duration::from_millis(300);
    let store = SqliteStore::open_with(
        db.path(),
        latch_store::Deadlines {
            acquire: deadline,
            operation: deadline,
        },
    )
    .await
    .expect("open");
    let other = rusqlite::Connection::open(db.path()).expect("second connection");
    other
        .execute_batch("BEGIN IMMEDIATE")
        .expect("take the lock");
    let started = std::time::Instant::now();
    let r = store
        .apply(WriteBatch::new().write(Write::InsertTask(task("task_locked"))))
        .await;
    let took = started.elapsed();
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    assert!(
        took < std::time::Duration::from_millis(1500),
        "answered after {took:?}"
    );
    other.execute_batch("ROLLBACK").expect("release the lock");
    store
        .apply(WriteBatch::new().write(Write::InsertTask(task("task_after"))))
        .await
        .expect("write after the lock is gone");
    assert!(store.task("task_locked").await.expect("read").is_none());
    assert!(store.task("task_after").await.expect("read").is_some());
    store.close().await;
}
