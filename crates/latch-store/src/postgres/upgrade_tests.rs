//! Upgrading a PostgreSQL store with audit records in it across migrations 0009–0010 (no more
//! stored `prev_hash` copies, id column, or stored filter columns): the records written before
//! keep verifying from genesis, new ones chain onto them, and every filter still finds both.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step fails the test"
)]

use latch_core::audit::{GENESIS_HASH, chain_hash, encode_event};
use latch_core::model::{AuditEvent, AuditFilter, AuditKind};
use latch_core::ports::{Store, WriteBatch};
use latch_testkit::{PG_ADDR, TempPgDatabase, service_available};

use super::MIGRATIONS;
use crate::PgStore;
use crate::store::migrator;

fn event(id: &str, hmac: &str) -> AuditEvent {
    let mut e = AuditEvent::new(500, AuditKind::CredentialIssued, "tester", "ok")
        .task("task_up")
        .lease(&format!("lease_{id}"))
        .detail(serde_json::json!({"credential_hmac": hmac}));
    e.id = format!("evt_{id}");
    e
}

/// Sets one field of a filter.
type SetFilter = fn(&mut AuditFilter);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_from_before_the_slimmer_schema_still_verify_and_filter() {
    if !service_available("postgres", PG_ADDR) {
        return;
    }
    let db = TempPgDatabase::create("upgrade").await;
    let pool = sqlx::PgPool::connect(&db.url()).await.expect("connect");
    let before = MIGRATIONS
        .iter()
        .position(|m| m.0 == 9)
        .expect("migration 9");
    migrator(&MIGRATIONS[..before])
        .run(&pool)
        .await
        .expect("schema as of migration 8");
    // Two records as binaries before 0009 wrote them: every column, prev_hash included.
    let mut prev = GENESIS_HASH.to_owned();
    for (seq, id) in [(1_i64, "old1"), (2, "old2")] {
        let body = encode_event(&event(id, &seq.to_string().repeat(64))).expect("encode");
        let hash = chain_hash(&prev, seq, &body);
        sqlx::query(
            "INSERT INTO audit_events (seq, body, prev_hash, hash) VALUES ($1, $2, $3, $4)",
        )
        .bind(seq)
        .bind(&body)
        .bind(&prev)
        .bind(&hash)
        .execute(&pool)
        .await
        .expect("old insert");
        prev = hash;
    }
    sqlx::query("UPDATE audit_head SET seq = 2, hash = $1 WHERE one")
        .bind(&prev)
        .execute(&pool)
        .await
        .expect("head");
    pool.close().await;

    let store = PgStore::open(&db.url())
        .await
        .expect("migrates 0009 and on");
    store
        .apply(WriteBatch::new().audit(event("new3", &"3".repeat(64))))
        .await
        .expect("appends after the old records");
    let records = store.audit_records(0, 10).await.expect("records");
    assert_eq!(records.len(), 3);
    latch_testkit::store_suite::assert_chained(&records);
    let find = |f: AuditFilter| {
        let store = &store;
        async move {
            let got = store.audit_events(&f).await.expect("filter");
            got.iter().map(|e| e.id.clone()).collect::<Vec<_>>()
        }
    };
    let by_task = AuditFilter {
        task_id: Some("task_up".into()),
        ..AuditFilter::default()
    };
    assert_eq!(find(by_task).await, ["evt_old1", "evt_old2", "evt_new3"]);
    let by_lease = AuditFilter {
        lease_id: Some("lease_old2".into()),
        ..AuditFilter::default()
    };
    assert_eq!(find(by_lease).await, ["evt_old2"]);
    let one = |f: SetFilter| {
        let mut filter = AuditFilter::default();
        f(&mut filter);
        filter
    };
    let filters: [(&str, SetFilter); 4] = [
        ("hmac", |f| f.credential_hmac = Some("1".repeat(64))),
        ("kind", |f| f.kind_prefix = Some("credential.".into())),
        ("actor", |f| f.actor = Some("tester".into())),
        ("since", |f| f.since_unix_secs = Some(500)),
    ];
    for (name, f) in filters {
        let got = find(one(f)).await;
        let want: &[&str] = if name == "hmac" {
            &["evt_old1"]
        } else {
            &["evt_old1", "evt_old2", "evt_new3"]
        };
        assert_eq!(got, want, "filter by {name}");
    }
    store.close().await;
    db.drop_db().await;
}

/// The task, lease and credential filters read their index on a large log, not the whole log
/// in `seq` order: the planner has statistics for the view's computed columns (a partial
/// expression index has none, and the planner then guessed 0.5 % of the log for a task of 20
/// records among a few busy ones, and walked the log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_of_a_large_log_use_their_indexes() {
    use crate::sql::{AUDIT_EVENTS_REST, Dialect, audit_events_lead};
    if !service_available("postgres", PG_ADDR) {
        return;
    }
    let db = TempPgDatabase::create("planner").await;
    let store = PgStore::open(&db.url()).await.expect("open");
    store.close().await;
    let pool = sqlx::PgPool::connect(&db.url()).await.expect("connect");
    sqlx::query(
        "INSERT INTO audit_log (seq, body, prev_hash, hash) SELECT i, json_build_object(\
         'id', 'evt_' || i, 'at_unix_secs', 500, 'kind', 'credential.issued', 'actor', 'wl', \
         'task_id', CASE WHEN i % 10000 = 7 THEN 'task_small' ELSE 'task_big_' || (i % 4) END, \
         'lease_id', 'lease_' || i, 'outcome', 'ok', \
         'detail', json_build_object('credential_hmac', md5(i::text) || md5(i::text)))::text, \
         '', md5(i::text) || md5(i::text) FROM generate_series(1, 200000) i",
    )
    .execute(&pool)
    .await
    .expect("fill");
    sqlx::query("ANALYZE audit_log")
        .execute(&pool)
        .await
        .expect("analyze");
    let cases = [
        (true, false, "audit_log_task"),
        (false, true, "audit_log_lease"),
        (false, false, "audit_log_hmac"),
    ];
    for (task, lease, index) in cases {
        let sql = format!(
            "EXPLAIN {}{}{}",
            audit_events_lead(task, lease),
            <sqlx::Postgres as Dialect>::AUDIT_KIND_FILTER,
            AUDIT_EVENTS_REST
        );
        let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(task.then_some("task_small"))
            .bind(lease.then_some("lease_777"))
            .bind(None::<String>)
            .bind(None::<String>)
            .bind(0_i64)
            .bind(100_i64)
            .bind(None::<String>)
            .bind(None::<i64>)
            .bind(None::<i64>)
            .bind((!task && !lease).then(|| "a".repeat(64)))
            .fetch_all(&pool)
            .await
            .expect("explain");
        let plan = plan.join("\n");
        assert!(plan.contains(index), "{index} not used:\n{plan}");
    }
    pool.close().await;
    db.drop_db().await;
}
