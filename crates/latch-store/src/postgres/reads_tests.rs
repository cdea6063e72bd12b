//! The grant path's reads without transactions of their own, on a real PostgreSQL with two
//! replicas of one database: the freezes a group commit reads under the chain head's lock, and
//! the task counters a replica keeps from its own reads and commits.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step fails the test"
)]

use std::sync::Arc;

use latch_core::freeze::{Freeze, FreezeScope, FreezeState, ScopeKind};
use latch_core::history::{CounterDelta, CounterRow, CounterScope};
use latch_core::model::{AuditEvent, AuditKind};
use latch_core::ports::{Store, StoreError, Write, WriteBatch};
use latch_testkit::{PG_ADDR, TempPgDatabase, service_available};

use super::Reads;
use crate::PgStore;

fn event(id: &str) -> AuditEvent {
    let mut e = AuditEvent::new(500, AuditKind::ToolUsed, "tester", "ok");
    e.id = id.to_owned();
    e
}

fn freeze(id: &str) -> Freeze {
    Freeze {
        id: id.to_owned(),
        scope: FreezeScope {
            kind: ScopeKind::All,
            value: None,
        },
        state: FreezeState::Active,
        engaged_by: "hum_operator".to_owned(),
        reason: "incident".to_owned(),
        created_at_unix_secs: 500,
        lifted_by: None,
        lift_reason: None,
        lifted_at_unix_secs: None,
        version: 1,
    }
}

/// An engagement as the broker commits it: the freeze and its audit event in one batch.
fn engage(id: &str) -> WriteBatch {
    WriteBatch::new()
        .write(Write::InsertFreeze(freeze(id)))
        .audit(event(&format!("evt_{id}")))
}

fn ids(freezes: &[Freeze]) -> Vec<&str> {
    freezes.iter().map(|f| f.id.as_str()).collect()
}

fn version(task_id: &str, by: i64) -> CounterDelta {
    CounterDelta {
        scope: CounterScope::Task,
        subject: task_id.to_owned(),
        name: "version".to_owned(),
        window_start: 0,
        by,
        cap: None,
        at_unix_secs: 500,
    }
}

fn guard(task_id: &str, equals: i64) -> Write {
    Write::RequireCounter {
        scope: CounterScope::Task,
        subject: task_id.to_owned(),
        name: "version".to_owned(),
        equals,
    }
}

/// Two replicas (stores with their own pools and group writers) of one new database.
async fn replicas(tag: &str) -> Option<(TempPgDatabase, Arc<PgStore>, Arc<PgStore>)> {
    if !service_available("postgres", PG_ADDR) {
        return None;
    }
    let db = TempPgDatabase::create(tag).await;
    let a = PgStore::open(&db.url()).await.expect("open replica a");
    let b = PgStore::open(&db.url()).await.expect("open replica b");
    Some((db, Arc::new(a), Arc::new(b)))
}

#[tokio::test]
async fn a_check_after_a_commit_sees_a_freeze_another_replica_engaged_before_it() {
    let Some((db, a, b)) = replicas("freeze_after").await else {
        return;
    };
    let s0 = a
        .apply(WriteBatch::new().audit(event("evt_0")))
        .await
        .unwrap();
    assert!(a.active_freezes_after(s0[0]).await.unwrap().is_empty());
    b.apply(engage("frz_b")).await.expect("engage on b");
    // Replica a's own snapshot predates the engagement: a grant may decide on it (and is then
    // refused by the check after its commit, below).
    assert!(
        a.extra.reads.recent_freezes().is_some_and(|f| f.is_empty()),
        "a's snapshot is from before the engagement"
    );
    let s1 = a
        .apply(WriteBatch::new().audit(event("evt_1")))
        .await
        .unwrap();
    assert_eq!(
        ids(&a.active_freezes_after(s1[0]).await.unwrap()),
        ["frz_b"],
        "the group that committed after the engagement read it under the head's lock"
    );
    assert_eq!(
        ids(&a.recent_active_freezes().await.unwrap()),
        ["frz_b"],
        "and the next grant's early check has it too"
    );
    // A seq no group of this replica has reached (another replica's) gets a fresh read.
    assert!(a.extra.reads.freezes_after(s1[0] + 100).is_none());
    assert_eq!(
        ids(&a.active_freezes_after(s1[0] + 100).await.unwrap()),
        ["frz_b"]
    );
    db.drop_db().await;
}

#[tokio::test]
async fn the_replica_that_engaged_a_freeze_holds_it_from_its_own_commit() {
    let Some((db, a, _b)) = replicas("freeze_own").await else {
        return;
    };
    let seqs = a.apply(engage("frz_a")).await.expect("engage");
    assert_eq!(
        a.extra.reads.recent_freezes().map(|f| ids(&f).join(",")),
        Some("frz_a".to_owned()),
        "the engagement's own group read it: no grant here decides without it"
    );
    assert_eq!(
        a.extra
            .reads
            .freezes_after(seqs[0])
            .map(|f| ids(&f).join(",")),
        Some("frz_a".to_owned())
    );
    db.drop_db().await;
}

/// The safety rule of the check after a commit, under load on two replicas: a grant whose
/// commit came after an engagement's (its seq is higher) is always checked against that
/// freeze. One that came before may not be, and the engagement's sweep finds its lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_grant_committed_after_an_engagement_is_checked_without_it() {
    let Some((db, a, b)) = replicas("freeze_race").await else {
        return;
    };
    let mut set = tokio::task::JoinSet::new();
    for i in 0..300u32 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        set.spawn(async move {
            let seqs = store
                .apply(WriteBatch::new().audit(event(&format!("evt_g{i}"))))
                .await
                .expect("grant");
            let seq = seqs[0];
            let seen = store.active_freezes_after(seq).await.expect("check");
            (seq, !seen.is_empty())
        });
        if i == 150 {
            let engaged = a.apply(engage("frz_race")).await.expect("engage");
            set.spawn(async move { (-engaged[0], true) });
        }
    }
    let mut checks = Vec::new();
    let mut engaged_at = None;
    while let Some(done) = set.join_next().await {
        let (seq, seen) = done.expect("join");
        if seq < 0 {
            engaged_at = Some(-seq);
        } else {
            checks.push((seq, seen));
        }
    }
    let engaged_at = engaged_at.expect("the engagement committed");
    let late: Vec<_> = checks.iter().filter(|(s, _)| *s > engaged_at).collect();
    assert!(
        !late.is_empty(),
        "some grants committed after the engagement"
    );
    for (seq, seen) in late {
        assert!(
            seen,
            "grant at seq {seq} (after the engagement at {engaged_at}) missed it"
        );
    }
    db.drop_db().await;
}

#[tokio::test]
async fn kept_task_counters_follow_commits_and_a_stale_one_fails_the_version_guard() {
    let Some((db, a, b)) = replicas("task_counters").await else {
        return;
    };
    let t = "task_kept";
    assert!(
        a.extra.reads.recent_task_counters(t).is_none(),
        "nothing kept before a read"
    );
    assert!(a.recent_task_counters(t).await.unwrap().is_empty());
    a.apply(WriteBatch::new().write(Write::Count(vec![version(t, 1)])))
        .await
        .unwrap();
    let kept = a.extra.reads.recent_task_counters(t).expect("kept");
    assert_eq!((kept[0].name.as_str(), kept[0].count), ("version", 1));
    // Another replica moves the history: a's kept copy is now older than the store.
    b.apply(WriteBatch::new().write(Write::Count(vec![version(t, 1)])))
        .await
        .unwrap();
    assert_eq!(a.recent_task_counters(t).await.unwrap()[0].count, 1);
    // A decision made on it commits under the guard, which refuses it.
    let refused = a.apply(WriteBatch::new().write(guard(t, 1))).await;
    assert!(
        matches!(refused, Err(StoreError::HistoryMoved(_))),
        "{refused:?}"
    );
    // Deciding again reads afresh, and that read is kept.
    assert_eq!(a.counters(CounterScope::Task, t).await.unwrap()[0].count, 2);
    assert_eq!(a.recent_task_counters(t).await.unwrap()[0].count, 2);
    a.apply(WriteBatch::new().write(guard(t, 2)))
        .await
        .expect("the guard holds on the fresh read");
    db.drop_db().await;
}

#[test]
fn a_kept_counter_never_moves_back() {
    let reads = Reads::default();
    let row = |name: &str, window_start, count| CounterRow {
        name: name.to_owned(),
        window_start,
        count,
    };
    reads.keep_task_counters("t", &[row("version", 0, 3)], false);
    assert!(
        reads.recent_task_counters("t").is_none(),
        "a write alone does not say what else the task has"
    );
    reads.keep_task_counters("t", &[row("version", 0, 3), row("minute", 60, 2)], true);
    // Answers that arrive late (an older read, an older commit) change nothing.
    reads.keep_task_counters("t", &[row("version", 0, 2)], true);
    reads.keep_task_counters("t", &[row("minute", 60, 1)], false);
    // A later window replaces the count, a higher count in the window raises it.
    reads.keep_task_counters("t", &[row("minute", 120, 1)], false);
    reads.keep_task_counters("t", &[row("grants", 0, 1)], false);
    assert_eq!(
        reads.recent_task_counters("t").unwrap(),
        [
            row("grants", 0, 1),
            row("minute", 120, 1),
            row("version", 0, 3)
        ]
    );
}
