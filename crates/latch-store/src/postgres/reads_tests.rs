//! The freezes a group commit reads under the chain head's lock, which answer a grant's checks
//! without a transaction of their own, on a real PostgreSQL with two replicas of one database.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step fails the test"
)]

use std::sync::Arc;

use latch_core::freeze::{Freeze, FreezeScope, FreezeState, ScopeKind};
use latch_core::model::{AuditEvent, AuditKind};
use latch_core::ports::{Store, Write, WriteBatch};
use latch_testkit::{PG_ADDR, TempPgDatabase, service_available};

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

/// Past `SNAPSHOT_FREEZES` active freezes a group reads none under the lock, and the checks
/// read afresh: a pile of freezes never lengthens the lock every replica waits on.
#[tokio::test]
async fn past_the_snapshot_limit_the_checks_read_afresh() {
    let Some((db, a, _b)) = replicas("freeze_many").await else {
        return;
    };
    let mut batch = WriteBatch::new().audit(event("evt_many"));
    for i in 0..=super::super::group::SNAPSHOT_FREEZES {
        batch = batch.write(Write::InsertFreeze(freeze(&format!("frz_{i:03}"))));
    }
    let seqs = a.apply(batch).await.expect("engage many");
    assert!(
        a.extra.reads.freezes_after(seqs[0]).is_none(),
        "no snapshot past the limit"
    );
    let all = a.active_freezes_after(seqs[0]).await.unwrap();
    assert_eq!(
        all.len(),
        usize::try_from(super::super::group::SNAPSHOT_FREEZES).unwrap() + 1,
        "the fresh read has every one"
    );
    db.drop_db().await;
}
