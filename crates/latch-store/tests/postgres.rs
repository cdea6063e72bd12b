//! `PgStore` against the conformance suite, plus the replica-specific behaviour: two stores
//! (two pools, as two replicas have) racing on one database, reaper claims, and the change feed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unimplemented,
    clippy::too_many_lines,
    reason = "test code: a failed step fails the test, and a scenario reads best in one piece"
)]
use std::sync::Arc;
use std::time::Duration;

use latch_core::audit::{AuditRecord, chain_hash};
use latch_core::model::{
    AuditEvent, AuditKind, Lease, LeaseState, Task, TaskState, Workload, WorkloadClaims,
};
use latch_core::ports::{Store, StoreError, Write, WriteBatch};
use latch_store::{PgStore, StoreChange};
use latch_testkit::{FrozenBackends, PG_ADDR, TempPgDatabase, service_available};

fn task(id: &str) -> Task {
    Task {
        id: id.to_owned(),
        owner: Workload {
            id: "wl_pg".to_owned(),
            issuer: "https://issuer.example".to_owned(),
            subject: "sub".to_owned(),
            preset: "generic".to_owned(),
            run_binding: None,
            on_behalf_of: None,
            claims: WorkloadClaims::default(),
            token_expires_at_unix_secs: 100,
        },
        purpose: "replicas".to_owned(),
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

fn lease(id: &str, task_id: &str, state: LeaseState, expires: i64) -> Lease {
    Lease {
        id: id.to_owned(),
        task_id: task_id.to_owned(),
        request_id: "req_pg".to_owned(),
        resource_id: "db".to_owned(),
        provider: "jwt".to_owned(),
        actions: vec!["read".to_owned()],
        state,
        issued_at_unix_secs: 10,
        expires_at_unix_secs: expires,
        max_expires_at_unix_secs: expires + 3600,
        renewals: 0,
        revocation_handle: format!("handle-{id}"),
        credential_hmac: Some(format!("{id}-hmac")),
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

fn event(id: &str, lease_id: Option<&str>) -> AuditEvent {
    let mut e = AuditEvent::new(500, AuditKind::ToolUsed, "tester", "ok");
    e.id = id.to_owned();
    if let Some(l) = lease_id {
        e = e.lease(l);
    }
    e
}

/// A fresh database and `n` stores on it (separate pools, like `n` replicas).
async fn replicas(tag: &str, n: usize) -> Option<(TempPgDatabase, Vec<Arc<PgStore>>)> {
    if !service_available("postgres", PG_ADDR) {
        return None;
    }
    let db = TempPgDatabase::create(tag).await;
    let mut stores = Vec::new();
    for _ in 0..n {
        stores.push(Arc::new(
            PgStore::open(&db.url()).await.expect("open store"),
        ));
    }
    Some((db, stores))
}

/// The next change on the feed, skipping heartbeat proofs ([`StoreChange::Fresh`]).
async fn next(feed: &mut tokio::sync::mpsc::Receiver<StoreChange>) -> StoreChange {
    loop {
        let c = next_any(feed).await;
        if !matches!(c, StoreChange::Fresh(_)) {
            return c;
        }
    }
}

async fn next_any(feed: &mut tokio::sync::mpsc::Receiver<StoreChange>) -> StoreChange {
    tokio::time::timeout(Duration::from_secs(5), feed.recv())
        .await
        .expect("a change within 5 s")
        .expect("feed open")
}

async fn finish(db: TempPgDatabase, stores: Vec<Arc<PgStore>>) {
    for s in stores {
        s.close().await;
    }
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_passes_the_conformance_suite() {
    let Some((db, stores)) = replicas("conf", 1).await else {
        return;
    };
    latch_testkit::store_suite::run_all(stores[0].clone()).await;
    finish(db, stores).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reopening_is_idempotent_and_an_empty_log_has_no_head() {
    let Some((db, stores)) = replicas("reopen", 2).await else {
        return;
    };
    assert_eq!(stores[1].audit_head().await.expect("head"), None);
    let third = PgStore::open(&db.url())
        .await
        .expect("migrated database reopens");
    third.ping().await.expect("ping");
    third.close().await;
    let bad = PgStore::open("postgres://postgres:s3cr3t-pw@127.0.0.1:1/none")
        .await
        .expect_err("nothing listens on port 1");
    assert!(!bad.to_string().contains("s3cr3t-pw"), "{bad}");
    finish(db, stores).await;
}

/// Two replicas race the same compare-and-set: exactly one wins, and only its audit event is
/// in the chain; the chain written by both stays one gapless chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_race_one_lease_and_keep_one_chain() {
    let Some((db, stores)) = replicas("race", 2).await else {
        return;
    };
    let base = lease("lease_r", "task_r", LeaseState::Active, 9_000);
    stores[0]
        .apply(
            WriteBatch::new()
                .write(Write::InsertTask(task("task_r")))
                .write(Write::InsertLease(base.clone())),
        )
        .await
        .expect("insert");
    let mut set = tokio::task::JoinSet::new();
    for i in 0..20u32 {
        let s = stores[(i % 2) as usize].clone();
        let mut next = base.clone();
        next.renewals = i + 1;
        next.version = 2;
        set.spawn(async move {
            s.apply(
                WriteBatch::new()
                    .write(Write::UpdateLease(next))
                    .audit(event(&format!("evt_race_{i}"), Some("lease_r"))),
            )
            .await
        });
    }
    // Unrelated appends from both replicas at the same time.
    for i in 0..40u32 {
        let s = stores[(i % 2) as usize].clone();
        set.spawn(async move {
            s.apply(
                WriteBatch::new()
                    .audit(event(&format!("evt_a_{i}"), None))
                    .audit(event(&format!("evt_b_{i}"), None)),
            )
            .await
        });
    }
    let (mut wins, mut conflicts) = (0, 0);
    while let Some(r) = set.join_next().await {
        match r.expect("join") {
            Ok(seqs) if seqs.len() == 1 => wins += 1,
            Ok(seqs) => assert_eq!(seqs.len(), 2),
            Err(StoreError::Conflict(_)) => conflicts += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((wins, conflicts), (1, 19), "exactly one CAS winner");
    let records = stores[1].audit_records(0, 1000).await.expect("records");
    assert_eq!(records.len(), 81, "80 appends + the winner's event");
    let prev = latch_testkit::store_suite::assert_chained(&records);
    assert_eq!(
        stores[0].audit_head().await.expect("head"),
        Some((81, prev))
    );
    finish(db, stores).await;
}

/// Replicas split due leases; a claim blocks others until it expires, and an update clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reaper_claims_split_work_and_expire() {
    let Some((db, stores)) = replicas("claims", 2).await else {
        return;
    };
    let (a, b) = (&stores[0], &stores[1]);
    let mut batch = WriteBatch::new().write(Write::InsertTask(task("task_c")));
    for i in 0..10 {
        batch = batch.write(Write::InsertLease(lease(
            &format!("lease_{i:02}"),
            "task_c",
            LeaseState::Active,
            100 + i,
        )));
    }
    a.apply(batch).await.expect("insert");
    // At now = 200 all ten are due. Replica A claims four until 260.
    let got_a = a
        .claim_due_leases(200, 120, "a", 260, 4)
        .await
        .expect("claim");
    assert_eq!(got_a.len(), 4);
    let got_b = b
        .claim_due_leases(200, 120, "b", 260, 100)
        .await
        .expect("claim");
    assert_eq!(got_b.len(), 6, "B gets only the unclaimed ones");
    let ids = |v: &[Lease]| v.iter().map(|l| l.id.clone()).collect::<Vec<_>>();
    assert!(ids(&got_a).iter().all(|id| !ids(&got_b).contains(id)));
    assert!(
        a.claim_due_leases(230, 120, "c", 290, 100)
            .await
            .expect("claim")
            .is_empty(),
        "everything is claimed until 260"
    );
    // B revokes one of its leases: the update clears the claim, and a revoked lease is not due.
    let mut done = got_b[0].clone();
    done.state = LeaseState::Revoked;
    done.version += 1;
    b.apply(WriteBatch::new().write(Write::UpdateLease(done)))
        .await
        .expect("revoke");
    // A and B die; at 300 their claims (until 260) have expired and C takes the nine leases
    // still due.
    let got_c = a
        .claim_due_leases(300, 120, "c", 360, 100)
        .await
        .expect("claim");
    assert_eq!(got_c.len(), 9, "expired claims are taken over");
    // The due-lease listing ignores claims.
    assert_eq!(b.due_leases(300, 120, 100).await.expect("due").len(), 9);
    finish(db, stores).await;
}

/// A target's pending revocations are claimed whatever their schedule; another replica's live
/// claim keeps them from a second worker until it expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pending_revocation_claims_keep_one_worker_per_lease() {
    let Some((db, stores)) = replicas("pendclaims", 2).await else {
        return;
    };
    let (a, b) = (&stores[0], &stores[1]);
    let mut batch = WriteBatch::new().write(Write::InsertTask(task("task_p")));
    for i in 0..3 {
        let mut l = lease(&format!("lease_p{i}"), "task_p", LeaseState::Revoking, 100);
        l.next_revoke_at_unix_secs = Some(10_000);
        batch = batch.write(Write::InsertLease(l));
    }
    a.apply(batch).await.expect("insert");
    let resource = stores[0]
        .lease("lease_p0")
        .await
        .expect("read")
        .expect("lease")
        .resource_id;
    let got_a = a
        .claim_pending_revocations(200, &resource, "a", 260, 100)
        .await
        .expect("claim");
    assert_eq!(got_a.len(), 3, "not due for hours, claimed anyway");
    assert!(
        b.claim_pending_revocations(230, &resource, "b", 290, 100)
            .await
            .expect("claim")
            .is_empty(),
        "A's claims hold B off"
    );
    assert_eq!(
        a.claim_pending_revocations(230, &resource, "a", 290, 100)
            .await
            .expect("claim")
            .len(),
        3,
        "A may take its own again"
    );
    assert_eq!(
        b.claim_pending_revocations(300, &resource, "b", 360, 100)
            .await
            .expect("claim")
            .len(),
        3,
        "expired claims are taken over"
    );
    finish(db, stores).await;
}

/// Concurrent claimers never get the same lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claimers_never_share_a_lease() {
    let Some((db, stores)) = replicas("claimrace", 2).await else {
        return;
    };
    let mut batch = WriteBatch::new().write(Write::InsertTask(task("task_c")));
    for i in 0..200 {
        batch = batch.write(Write::InsertLease(lease(
            &format!("lease_{i:03}"),
            "task_c",
            LeaseState::Active,
            100,
        )));
    }
    stores[0].apply(batch).await.expect("insert");
    let mut set = tokio::task::JoinSet::new();
    for i in 0..8usize {
        let s = stores[i % 2].clone();
        set.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = s
                    .claim_due_leases(200, 120, &format!("r{i}"), 500, 7)
                    .await
                    .expect("claim");
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|l| l.id));
            }
        });
    }
    let mut all = Vec::new();
    while let Some(r) = set.join_next().await {
        all.extend(r.expect("join"));
    }
    all.sort();
    let n = all.len();
    all.dedup();
    assert_eq!(
        (n, all.len()),
        (200, 200),
        "each lease claimed exactly once"
    );
    finish(db, stores).await;
}

/// A lease or task update on one replica reaches another replica's change feed; a rolled
/// back batch sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changes_reach_the_other_replica() {
    let Some((db, stores)) = replicas("feed", 2).await else {
        return;
    };
    let mut feed = stores[1].watch();
    assert_eq!(next(&mut feed).await, StoreChange::Lost);
    assert_eq!(next(&mut feed).await, StoreChange::Resynced);
    let l = lease("lease_f", "task_f", LeaseState::Active, 9_000);
    stores[0]
        .apply(
            WriteBatch::new()
                .write(Write::InsertTask(task("task_f")))
                .write(Write::InsertLease(l.clone())),
        )
        .await
        .expect("insert");
    // A failing batch (stale version) notifies nothing.
    let mut stale = l.clone();
    stale.version = 7;
    assert!(matches!(
        stores[0]
            .apply(WriteBatch::new().write(Write::UpdateLease(stale)))
            .await,
        Err(StoreError::Conflict(_))
    ));
    let mut revoked = l.clone();
    revoked.state = LeaseState::Revoked;
    revoked.version = 2;
    let mut ended = task("task_f");
    ended.state = TaskState::Completed;
    ended.version = 2;
    let started = std::time::Instant::now();
    stores[0]
        .apply(
            WriteBatch::new()
                .write(Write::UpdateLease(revoked))
                .write(Write::UpdateTask(ended)),
        )
        .await
        .expect("update");
    assert_eq!(next(&mut feed).await, StoreChange::Lease("lease_f".into()));
    assert_eq!(next(&mut feed).await, StoreChange::Task("task_f".into()));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "within a second"
    );
    // The feed notices a lost connection and resyncs.
    sqlx_kill_listeners(&db).await;
    assert_eq!(next(&mut feed).await, StoreChange::Lost);
    assert_eq!(next(&mut feed).await, StoreChange::Resynced);
    drop(feed);
    finish(db, stores).await;
}

/// The feed proves itself current with heartbeats, each proof no older than the changes before
/// it; when its connection stalls without an error (the listening backend is frozen with
/// SIGSTOP), the proofs stop, and the feed replaces the connection by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heartbeats_prove_the_feed_current_and_a_stalled_listener_is_replaced() {
    let Some((db, stores)) = replicas("heartbeat", 2).await else {
        return;
    };
    let settings = latch_store::FeedSettings {
        heartbeat_every: Duration::from_millis(20),
        stall_after: Duration::from_millis(400),
    };
    let mut feed = stores[1].watch_with(settings);
    assert_eq!(next_any(&mut feed).await, StoreChange::Lost);
    assert_eq!(next_any(&mut feed).await, StoreChange::Resynced);
    // Proofs arrive, never from the future, and move forward.
    let mut last = None;
    for _ in 0..5 {
        match next_any(&mut feed).await {
            StoreChange::Fresh(t) => {
                assert!(t <= tokio::time::Instant::now());
                assert!(last.is_none_or(|l| l <= t), "proofs move forward");
                last = Some(t);
            }
            other => panic!("expected a heartbeat proof, got {other:?}"),
        }
    }
    // A change committed before a heartbeat is sent arrives before that heartbeat's proof.
    revoke_new_lease(&stores[0], "lease_hb", "task_hb").await;
    let committed = tokio::time::Instant::now();
    loop {
        match next_any(&mut feed).await {
            StoreChange::Fresh(t) => assert!(
                t < committed,
                "a proof after the commit came before its change"
            ),
            StoreChange::Lease(id) => {
                assert_eq!(id, "lease_hb");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    if !latch_testkit::can_freeze_backends() {
        drop(feed);
        finish(db, stores).await;
        return;
    }
    let listening = db.listening_backends().await;
    assert_eq!(listening.len(), 1, "one listener: {listening:?}");
    let mut frozen = FrozenBackends::default();
    frozen.freeze(&listening);
    let stalled_at = tokio::time::Instant::now();
    // No error, no notification: the proofs stop, and after `stall_after` the feed gives up
    // on the connection and listens on a new one.
    loop {
        match next_any(&mut feed).await {
            StoreChange::Fresh(t) => assert!(t <= stalled_at, "a proof through a frozen listener"),
            StoreChange::Lost => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(next_any(&mut feed).await, StoreChange::Resynced);
    assert!(matches!(next_any(&mut feed).await, StoreChange::Fresh(_)));
    let now_listening = db.listening_backends().await;
    assert!(
        now_listening.iter().any(|p| !frozen.pids().contains(p)),
        "a new listener: {now_listening:?} (frozen {frozen:?})"
    );
    drop(frozen);
    drop(feed);
    finish(db, stores).await;
}

/// Any role that can connect may `LISTEN` and `NOTIFY` on the channel: heartbeats it forges,
/// and copies of real heartbeats it saw, prove nothing (the red-team attack that kept a
/// stale cache "fresh" for seconds behind a notification backlog).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_and_copied_heartbeats_prove_nothing() {
    use sqlx::Connection;
    let Some((db, stores)) = replicas("forged", 2).await else {
        return;
    };
    // The attacker listens first, so it sees the feed's real heartbeat.
    let mut spy = sqlx::postgres::PgListener::connect(&db.url())
        .await
        .expect("spy listens");
    spy.listen(latch_store::CHANGE_CHANNEL)
        .await
        .expect("listen");
    // One heartbeat only (an interval's first tick), and no stall detection in the way.
    let mut feed = stores[1].watch_with(latch_store::FeedSettings {
        heartbeat_every: Duration::from_secs(3600),
        stall_after: Duration::from_secs(3600),
    });
    assert_eq!(next_any(&mut feed).await, StoreChange::Lost);
    assert_eq!(next_any(&mut feed).await, StoreChange::Resynced);
    assert!(
        matches!(next_any(&mut feed).await, StoreChange::Fresh(_)),
        "listening"
    );
    assert!(
        matches!(next_any(&mut feed).await, StoreChange::Fresh(_)),
        "the real heartbeat"
    );
    let real = loop {
        let n = tokio::time::timeout(Duration::from_secs(5), spy.recv())
            .await
            .expect("the spy sees the heartbeat")
            .expect("recv");
        if n.payload().starts_with("[\"h:") {
            break n.payload().to_owned();
        }
    };
    // Copies of it, and forgeries, then a real change as a marker.
    let mut c = sqlx::PgConnection::connect(&db.url())
        .await
        .expect("connect");
    sqlx::query(
        "SELECT pg_notify($1, p) FROM (SELECT $2 AS p UNION ALL \
         SELECT '[\"h:' || md5(g::text) || '\"]' FROM generate_series(1, 200) g \
         UNION ALL SELECT $2 || ' ' UNION ALL SELECT 'not json') AS forged",
    )
    .bind(latch_store::CHANGE_CHANNEL)
    .bind(&real)
    .execute(&mut c)
    .await
    .expect("forge");
    revoke_new_lease(&stores[0], "lease_mark", "task_mark").await;
    // The unparsable payload only empties caches; nothing forged or copied proves anything.
    assert_eq!(next_any(&mut feed).await, StoreChange::Unknown);
    match next_any(&mut feed).await {
        StoreChange::Lease(id) => assert_eq!(id, "lease_mark"),
        other => panic!("a forged or copied heartbeat was taken as proof: {other:?}"),
    }
    let _ = c.close().await;
    drop(feed);
    finish(db, stores).await;
}

/// Each connection the feed gives up on stays hung (sqlx tries `UNLISTEN *` on it, without a
/// time limit). Those connections are the feed's own, never the shared pool's: after more
/// stalls than the pool has connections, the store still answers at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_listeners_do_not_take_the_pool() {
    let Some((db, stores)) = replicas("stalls", 2).await else {
        return;
    };
    if !latch_testkit::can_freeze_backends() {
        finish(db, stores).await;
        return;
    }
    let mut feed = stores[1].watch_with(latch_store::FeedSettings {
        heartbeat_every: Duration::from_millis(20),
        stall_after: Duration::from_millis(200),
    });
    assert_eq!(next(&mut feed).await, StoreChange::Lost);
    assert_eq!(next(&mut feed).await, StoreChange::Resynced);
    let mut frozen = FrozenBackends::default();
    for round in 0..18 {
        let pids: Vec<i32> = db
            .listening_backends()
            .await
            .into_iter()
            .filter(|p| !frozen.pids().contains(p))
            .collect();
        assert_eq!(pids.len(), 1, "round {round}: one live listener: {pids:?}");
        frozen.freeze(&pids);
        assert_eq!(next(&mut feed).await, StoreChange::Lost, "round {round}");
        assert_eq!(
            next(&mut feed).await,
            StoreChange::Resynced,
            "round {round}"
        );
    }
    let asked = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(2), stores[1].ping())
        .await
        .expect("the pool still has connections")
        .expect("ping");
    assert!(asked.elapsed() < Duration::from_secs(2));
    drop(frozen);
    drop(feed);
    finish(db, stores).await;
}

/// The health readings operators are pointed at: whether PUBLIC may connect (the test
/// database revokes it, as the README asks), and the notification queue's usage.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reports_public_connect_and_notification_queue_usage() {
    use sqlx::Connection;
    let Some((db, stores)) = replicas("health", 1).await else {
        return;
    };
    assert!(!stores[0].public_may_connect().await.expect("privileges"));
    let mut c = sqlx::PgConnection::connect(&db.url())
        .await
        .expect("connect");
    let grant: String = sqlx::query_scalar(
        "SELECT format('GRANT CONNECT ON DATABASE %I TO PUBLIC', current_database())",
    )
    .fetch_one(&mut c)
    .await
    .expect("format");
    sqlx::query(sqlx::AssertSqlSafe(grant))
        .execute(&mut c)
        .await
        .expect("grant");
    assert!(stores[0].public_may_connect().await.expect("privileges"));
    let usage = stores[0]
        .notification_queue_usage()
        .await
        .expect("queue usage");
    assert!((0.0..=1.0).contains(&usage), "{usage}");
    let _ = c.close().await;
    finish(db, stores).await;
}

/// Commits a new task and lease, then the lease's revocation (which notifies).
async fn revoke_new_lease(store: &PgStore, lease_id: &str, task_id: &str) {
    let l = lease(lease_id, task_id, LeaseState::Active, 9_000);
    store
        .apply(
            WriteBatch::new()
                .write(Write::InsertTask(task(task_id)))
                .write(Write::InsertLease(l.clone())),
        )
        .await
        .expect("insert");
    let mut revoked = l;
    revoked.state = LeaseState::Revoked;
    revoked.version = 2;
    store
        .apply(WriteBatch::new().write(Write::UpdateLease(revoked)))
        .await
        .expect("revoke");
}

/// Ends every `LISTEN`ing session on the test database (as a server restart would).
async fn sqlx_kill_listeners(db: &TempPgDatabase) {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(&db.url())
        .await
        .expect("connect");
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE 'LISTEN%'",
    )
    .fetch_all(&mut c)
    .await
    .expect("terminate");
    assert!(!killed.is_empty(), "a listener was connected");
    let _ = c.close().await;
}

/// A batch changing hundreds of leases (a task ended with many credentials) commits, and every
/// change is delivered (notifications are split under PostgreSQL's payload limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_of_many_lease_changes_notifies_them_all() {
    let Some((db, stores)) = replicas("many", 2).await else {
        return;
    };
    let mut feed = stores[1].watch();
    assert_eq!(next(&mut feed).await, StoreChange::Lost);
    assert_eq!(next(&mut feed).await, StoreChange::Resynced);
    let leases: Vec<Lease> = (0..300)
        .map(|i| {
            lease(
                &format!("lease_many_{i:03}"),
                "task_m",
                LeaseState::Active,
                9_000,
            )
        })
        .collect();
    let mut insert = WriteBatch::new().write(Write::InsertTask(task("task_m")));
    let mut revoke = WriteBatch::new();
    for l in &leases {
        insert = insert.write(Write::InsertLease(l.clone()));
        let mut r = l.clone();
        r.state = LeaseState::Revoked;
        r.version = 2;
        revoke = revoke.write(Write::UpdateLease(r));
    }
    stores[0].apply(insert).await.expect("insert");
    stores[0]
        .apply(revoke)
        .await
        .expect("revoke all in one batch");
    for l in &leases {
        assert_eq!(next(&mut feed).await, StoreChange::Lease(l.id.clone()));
    }
    drop(feed);
    finish(db, stores).await;
}

fn notification(id: &str, due: i64) -> latch_core::notify::Notification {
    use latch_core::notify::{ApprovalNotice, Notification, NotificationState};
    Notification {
        id: id.to_owned(),
        channel: "hook".to_owned(),
        event: "request.step_up".to_owned(),
        state: NotificationState::Pending,
        created_at_unix_secs: 10,
        next_attempt_at_unix_secs: due,
        attempts: 0,
        last_error: None,
        delivered_at_unix_secs: None,
        notice: ApprovalNotice {
            request_id: "req_pg".to_owned(),
            task_id: "task_n".to_owned(),
            workload: "w".to_owned(),
            resource: "db".to_owned(),
            environment: "production".to_owned(),
            sensitivity: "secret".to_owned(),
            actions: vec!["read".to_owned()],
            ttl_secs: 60,
            purpose: "p".to_owned(),
            justification: "j".to_owned(),
            repository: None,
            branch: None,
            on_behalf_of: None,
            groups: vec!["g".to_owned()],
            digest: "d".to_owned(),
            expires_at_unix_secs: 1000,
            console_url: Some("http://latch.test/console/requests/req_pg".to_owned()),
        },
        version: 1,
    }
}

/// The notification outbox on PostgreSQL: replicas split due rows, a live claim keeps others
/// off, an outcome update (compare-and-set) releases it, and expired claims are taken over.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notification_claims_split_work_and_expire() {
    use latch_core::notify::NotificationState;
    let Some((db, stores)) = replicas("notify", 2).await else {
        return;
    };
    let (a, b) = (&stores[0], &stores[1]);
    let mut batch = WriteBatch::new();
    for i in 0..6 {
        batch = batch.write(Write::InsertNotification(notification(
            &format!("ntf_{i:02}"),
            100 + i,
        )));
    }
    batch = batch.write(Write::InsertNotification(notification("ntf_later", 900)));
    a.apply(batch).await.expect("insert");
    assert_eq!(
        b.notifications_for_request("req_pg").await.unwrap().len(),
        7
    );
    let got_a = a.claim_due_notifications(200, "a", 260, 4).await.unwrap();
    let got_b = b.claim_due_notifications(200, "b", 260, 100).await.unwrap();
    assert_eq!(
        (got_a.len(), got_b.len()),
        (4, 2),
        "B gets only the unclaimed due rows"
    );
    assert!(
        a.claim_due_notifications(230, "c", 290, 100)
            .await
            .unwrap()
            .is_empty(),
        "everything due is claimed until 260"
    );
    // B records a delivery: compare-and-set, and a stale second write is a conflict.
    let mut done = got_b[0].clone();
    done.state = NotificationState::Delivered;
    done.version += 1;
    b.apply(WriteBatch::new().write(Write::UpdateNotification(done.clone())))
        .await
        .expect("deliver");
    assert!(matches!(
        a.apply(WriteBatch::new().write(Write::UpdateNotification(done)))
            .await,
        Err(StoreError::Conflict(_))
    ));
    // Past the claims, C takes over the five rows still due (not the delivered one, not the
    // one due at 900).
    let got_c = a.claim_due_notifications(300, "c", 360, 100).await.unwrap();
    assert_eq!(got_c.len(), 5, "expired claims are taken over");
    finish(db, stores).await;
}

/// A replica still on a binary from before migrations 0009–0010 (a rolling upgrade) keeps
/// working: its own reads of `audit_events.prev_hash` see the chain's value for rows the new
/// binary wrote with none stored, its inserts of `(seq, body, prev_hash, hash)` land in the
/// chain, and the filter columns still cannot be edited apart from the hashed body.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_older_replica_reads_and_writes_the_chain_during_a_rolling_upgrade() {
    use sqlx::Connection;
    let Some((db, stores)) = replicas("rolling", 1).await else {
        return;
    };
    let batch = WriteBatch::new()
        .audit(event("evt_new_1", Some("lease_x")))
        .audit(event("evt_new_2", None));
    stores[0].apply(batch).await.expect("new binary appends");
    let mut old = sqlx::PgConnection::connect(&db.url())
        .await
        .expect("connect");
    // The old binary's group insert, verbatim in shape: head locked, rows with their prev_hash.
    let mut tx = old.begin().await.expect("begin");
    let (seq, prev): (i64, String) =
        sqlx::query_as("SELECT seq, hash FROM audit_head WHERE one FOR UPDATE")
            .fetch_one(&mut *tx)
            .await
            .expect("head");
    let body = latch_core::audit::encode_event(&event("evt_old", None)).expect("encode");
    let hash = chain_hash(&prev, seq + 1, &body);
    sqlx::query(
        "WITH appended AS (INSERT INTO audit_events (seq, body, prev_hash, hash) \
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[])) \
         UPDATE audit_head SET seq = $5, hash = $6 WHERE one",
    )
    .bind(vec![seq + 1])
    .bind(vec![body.clone()])
    .bind(vec![prev.clone()])
    .bind(vec![hash.clone()])
    .bind(seq + 1)
    .bind(&hash)
    .execute(&mut *tx)
    .await
    .expect("the old binary's insert is accepted");
    tx.commit().await.expect("commit");
    stores[0]
        .apply(WriteBatch::new().audit(event("evt_new_3", None)))
        .await
        .expect("new binary appends after it");
    // The old binary's export query sees one unbroken chain.
    let rows: Vec<(i64, String, String, String)> =
        sqlx::query_as("SELECT seq, prev_hash, hash, body FROM audit_events ORDER BY seq")
            .fetch_all(&mut old)
            .await
            .expect("old read");
    let rows: Vec<AuditRecord> = rows
        .into_iter()
        .map(|(seq, prev_hash, hash, body)| AuditRecord {
            seq,
            prev_hash,
            hash,
            body,
        })
        .collect();
    assert_eq!(rows.len(), 4);
    latch_testkit::store_suite::assert_chained(&rows);
    let records = stores[0].audit_records(0, 10).await.expect("records");
    assert_eq!(
        records.len(),
        4,
        "the new binary's export has the old insert too"
    );
    let (stored_prev,): (String,) = sqlx::query_as("SELECT prev_hash FROM audit_log WHERE seq = 3")
        .fetch_one(&mut old)
        .await
        .expect("stored row");
    assert_eq!(stored_prev, "", "the repeated hash is not stored");
    let edit = sqlx::query("UPDATE audit_events SET task_id = 'task_hidden' WHERE seq = 1")
        .execute(&mut old)
        .await;
    assert!(edit.is_err(), "a filter column cannot be edited on its own");
    let _ = old.close().await;
    finish(db, stores).await;
}
