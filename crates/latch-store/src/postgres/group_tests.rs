//! Group commit on a real PostgreSQL: concurrent batches share transactions, a failing batch
//! fails alone, and the audit chain stays one gapless chain.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step fails the test"
)]

use std::sync::Arc;
use std::sync::atomic::Ordering;

use latch_core::history::{CounterDelta, CounterScope};
use latch_core::model::{AuditEvent, AuditKind, Task, TaskState, Workload, WorkloadClaims};
use latch_core::ports::{Store, StoreError, Write, WriteBatch};
use latch_testkit::{PG_ADDR, TempPgDatabase, service_available};

use crate::PgStore;

fn task(id: &str) -> Task {
    Task {
        id: id.to_owned(),
        owner: Workload {
            id: "wl_group".to_owned(),
            issuer: "https://issuer.example".to_owned(),
            subject: "sub".to_owned(),
            preset: "generic".to_owned(),
            run_binding: None,
            on_behalf_of: None,
            claims: WorkloadClaims::default(),
            token_expires_at_unix_secs: 100,
        },
        purpose: "group commit".to_owned(),
        repository: None,
        branch: None,
        environment: "sandbox".into(),
        production: false,
        on_behalf_of: None,
        state: TaskState::Open,
        created_at_unix_secs: 10,
        expires_at_unix_secs: 10_000,
        ended_at_unix_secs: None,
        version: 1,
    }
}

fn event(id: &str) -> AuditEvent {
    let mut e = AuditEvent::new(500, AuditKind::ToolUsed, "tester", "ok");
    e.id = id.to_owned();
    e
}

fn count(subject: &str, name: &str, cap: Option<i64>) -> CounterDelta {
    CounterDelta {
        scope: CounterScope::Workload,
        subject: subject.to_owned(),
        name: name.to_owned(),
        window_start: 0,
        by: 1,
        cap,
        at_unix_secs: 500,
    }
}

async fn open(tag: &str) -> Option<(TempPgDatabase, Arc<PgStore>)> {
    if !service_available("postgres", PG_ADDR) {
        return None;
    }
    let db = TempPgDatabase::create(tag).await;
    let store = PgStore::open(&db.url()).await.expect("open store");
    Some((db, Arc::new(store)))
}

/// Checks the whole audit log is one gapless chain from genesis; returns its length.
async fn verify_chain(store: &PgStore) -> usize {
    let records = store.audit_records(0, 10_000).await.expect("records");
    let prev = latch_testkit::store_suite::assert_chained(&records);
    assert_eq!(
        store.audit_head().await.expect("head"),
        Some((i64::try_from(records.len()).unwrap(), prev)),
        "the head row names the last record"
    );
    records.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batches_share_commits_and_a_failing_one_fails_alone() {
    let Some((db, store)) = open("group").await else {
        return;
    };
    store
        .apply(WriteBatch::new().write(Write::InsertTask(task("task_taken"))))
        .await
        .expect("seed");
    let before = store.extra.group.stats().commits.load(Ordering::Relaxed);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..200u32 {
        let s = store.clone();
        // Every tenth batch inserts a task that exists: it must fail alone.
        let id = if i % 10 == 9 {
            "task_taken".to_owned()
        } else {
            format!("task_{i}")
        };
        set.spawn(async move {
            let batch = WriteBatch::new()
                .write(Write::InsertTask(task(&id)))
                .write(Write::Count(vec![
                    count("wl_group", "grants", None),
                    count(&format!("wl_{i}"), "grants", None),
                ]))
                .audit(event(&format!("evt_{i}_a")))
                .audit(event(&format!("evt_{i}_b")));
            (i, s.apply(batch).await)
        });
    }
    let mut seqs = Vec::new();
    let mut conflicts = 0;
    while let Some(joined) = set.join_next().await {
        let (i, outcome) = joined.expect("join");
        match outcome {
            Ok(s) => {
                assert_ne!(i % 10, 9, "a duplicate insert was committed");
                assert_eq!(s.len(), 2, "two events, two seqs");
                assert_eq!(s[1], s[0] + 1, "one batch's events are adjacent");
                seqs.extend(s);
            }
            Err(StoreError::Conflict(_)) => {
                assert_eq!(i % 10, 9, "only the duplicates fail");
                conflicts += 1;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(conflicts, 20);
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=360).collect::<Vec<i64>>(), "every seq once");
    assert_eq!(verify_chain(&store).await, 360);
    // The failed batches left nothing: no row, no counter, no audit event.
    let shared = store
        .counters(CounterScope::Workload, "wl_group")
        .await
        .expect("counters");
    assert_eq!(shared[0].count, 180, "only the committed batches counted");
    assert!(
        store
            .counters(CounterScope::Workload, "wl_9")
            .await
            .expect("counters")
            .is_empty()
    );
    let stats = store.extra.group.stats();
    let commits = stats.commits.load(Ordering::Relaxed) - before;
    assert!(
        commits < 180,
        "180 batches in {commits} commits: concurrent batches share transactions"
    );
    store.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_capped_counter_names_itself_and_the_batch_writes_nothing() {
    let Some((db, store)) = open("group_cap").await else {
        return;
    };
    let capped = |by_cap: i64| {
        WriteBatch::new()
            .write(Write::Count(vec![
                count("wl_a", "grants", None),
                count("wl_b", "live", Some(by_cap)),
            ]))
            .audit(event(&format!("evt_cap_{by_cap}")))
    };
    store.apply(capped(1)).await.expect("first fits its cap");
    match store.apply(capped(1)).await {
        Err(StoreError::LimitReached(CounterScope::Workload, name)) => assert_eq!(name, "live"),
        other => panic!("expected the cap, got {other:?}"),
    }
    let a = store
        .counters(CounterScope::Workload, "wl_a")
        .await
        .expect("counters");
    assert_eq!(
        a[0].count, 1,
        "the refused batch's other counter is rolled back"
    );
    // One counter twice in a batch takes the per-counter path.
    store
        .apply(WriteBatch::new().write(Write::Count(vec![
            count("wl_a", "grants", None),
            count("wl_a", "grants", None),
        ])))
        .await
        .expect("twice");
    let a = store
        .counters(CounterScope::Workload, "wl_a")
        .await
        .expect("counters");
    assert_eq!(a[0].count, 3);
    assert_eq!(verify_chain(&store).await, 1);
    store.close().await;
    db.drop_db().await;
}
