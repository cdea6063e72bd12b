//! The store methods behind operators and freezes (issue 15): a task's open requests, open
//! tasks and live leases paged by id, freezes inserted, read, and lifted compare-and-set.

use latch_core::freeze::{Freeze, FreezeScope, FreezeState, ScopeKind};
use latch_core::model::RequestState;
use latch_core::ports::{Store, Write, WriteBatch};

use super::{apply_ok, expect_conflict, ok};

/// `open_requests_by_task`: pending and approved only, of that task, oldest first.
pub(super) async fn open_requests(s: &dyn Store) {
    // Rows of `requests` (rows.rs): task_c02 has req_c01 (approved by then) and req_c02
    // (pending); task_c04 has one approved request among decided ones.
    let c02 = ok(
        s.open_requests_by_task("task_c02").await,
        "open_requests_by_task",
    );
    assert!(
        c02.iter().all(|r| r.task_id == "task_c02"
            && matches!(r.state, RequestState::Pending | RequestState::Approved)),
        "only the task's pending and approved requests: {c02:?}"
    );
    assert!(!c02.is_empty(), "task_c02 has open requests");
    let c04 = ok(
        s.open_requests_by_task("task_c04").await,
        "open_requests_by_task",
    );
    assert!(
        c04.iter()
            .all(|r| matches!(r.state, RequestState::Pending | RequestState::Approved)),
        "decided, granted and expired requests are not open: {c04:?}"
    );
    let none = ok(
        s.open_requests_by_task("task_missing").await,
        "open_requests_by_task",
    );
    assert!(none.is_empty());
}

/// `open_tasks` and `live_leases` page by id and return only open tasks / issuing and active
/// leases.
pub(super) async fn operator_pages(s: &dyn Store) {
    let tasks = ok(s.open_tasks("", 1000).await, "open_tasks");
    assert!(tasks.windows(2).all(|w| w[0].id < w[1].id), "by id");
    assert!(
        tasks
            .iter()
            .all(|t| t.state == latch_core::model::TaskState::Open)
    );
    if let Some(first) = tasks.first() {
        let rest = ok(s.open_tasks(&first.id, 1000).await, "open_tasks after");
        assert_eq!(rest.len(), tasks.len() - 1, "after the first id");
        let one = ok(s.open_tasks("", 1).await, "open_tasks limit");
        assert_eq!(one.len(), 1, "limit");
    }
    let leases = ok(s.live_leases("", 1000).await, "live_leases");
    assert!(leases.windows(2).all(|w| w[0].id < w[1].id), "by id");
    assert!(
        leases.iter().all(|l| matches!(
            l.state,
            latch_core::model::LeaseState::Active | latch_core::model::LeaseState::Issuing
        )),
        "only live leases"
    );
}

fn freeze(id: &str, kind: ScopeKind, value: Option<&str>, at: i64) -> Freeze {
    Freeze {
        id: id.to_owned(),
        scope: FreezeScope {
            kind,
            value: value.map(str::to_owned),
        },
        state: FreezeState::Active,
        engaged_by: "olga".to_owned(),
        reason: "drill".to_owned(),
        created_at_unix_secs: at,
        lifted_by: None,
        lift_reason: None,
        lifted_at_unix_secs: None,
        version: 1,
    }
}

/// Freezes round trip, list active ones oldest first, and lift compare-and-set.
pub(super) async fn freezes(s: &dyn Store) {
    let f1 = freeze("frz_c01", ScopeKind::Repository, Some("acme/payments"), 200);
    let f2 = freeze("frz_c02", ScopeKind::All, None, 100);
    apply_ok(
        s,
        WriteBatch::new()
            .write(Write::InsertFreeze(f1.clone()))
            .write(Write::InsertFreeze(f2.clone())),
        "insert freezes",
    )
    .await;
    assert_eq!(ok(s.freeze("frz_c01").await, "freeze"), Some(f1.clone()));
    assert_eq!(ok(s.freeze("frz_missing").await, "freeze"), None);
    assert_eq!(
        ok(s.active_freezes().await, "active_freezes"),
        vec![f2.clone(), f1.clone()],
        "oldest first"
    );
    let mut lifted = f2.clone();
    lifted.state = FreezeState::Lifted;
    lifted.lifted_by = Some("olga".to_owned());
    lifted.version = 2;
    apply_ok(
        s,
        WriteBatch::new().write(Write::UpdateFreeze(lifted.clone())),
        "lift",
    )
    .await;
    expect_conflict(
        s,
        WriteBatch::new().write(Write::UpdateFreeze(lifted.clone())),
        "lift twice at the same version",
    )
    .await;
    assert_eq!(
        ok(s.active_freezes().await, "active_freezes"),
        vec![f1],
        "a lifted freeze is not active"
    );
    assert_eq!(ok(s.freeze("frz_c02").await, "freeze"), Some(lifted));
}

/// `census`: the counts behind the `/metrics` gauges agree with the listings they summarise.
pub(super) async fn census(s: &dyn Store) {
    let c = ok(s.census().await, "census");
    let open = ok(s.open_tasks("", 10_000).await, "open_tasks");
    let live = ok(s.live_leases("", 10_000).await, "live_leases");
    let pending = ok(s.pending_requests(10_000).await, "pending_requests");
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    assert_eq!(c.open_tasks, count(open.len()), "open tasks: {c:?}");
    assert_eq!(c.live_leases, count(live.len()), "live leases: {c:?}");
    assert_eq!(
        c.pending_requests,
        count(pending.len()),
        "pending requests: {c:?}"
    );
    assert!(
        c.revoking_leases >= 0 && c.pending_notifications >= 0,
        "{c:?}"
    );
    assert!(
        c.retrying_notifications <= c.pending_notifications
            && c.retrying_revocations <= c.revoking_leases + c.revoke_failed_leases,
        "{c:?}"
    );
    // Revocations and notifications that failed at least once are counted as retrying (read
    // from the JSON body: each backend's own JSON functions).
    use latch_core::model::LeaseState;
    let first = super::lease("lease_cen_1", "task_c02", LeaseState::Revoking, 100, 9_000);
    let retried = latch_core::model::Lease {
        revoke_attempts: 2,
        ..super::lease("lease_cen_2", "task_c02", LeaseState::Revoking, 100, 9_000)
    };
    let alarmed = latch_core::model::Lease {
        revoke_attempts: 5,
        ..super::lease(
            "lease_cen_3",
            "task_c02",
            LeaseState::RevokeFailed,
            100,
            9_000,
        )
    };
    let fresh = super::notify::row("ntf_cen_1", "req_cen", 100);
    let failed_once = latch_core::notify::Notification {
        attempts: 1,
        ..super::notify::row("ntf_cen_2", "req_cen", 100)
    };
    apply_ok(
        s,
        WriteBatch::new()
            .write(Write::InsertLease(first))
            .write(Write::InsertLease(retried))
            .write(Write::InsertLease(alarmed))
            .write(Write::InsertNotification(fresh))
            .write(Write::InsertNotification(failed_once)),
        "insert census rows",
    )
    .await;
    let d = ok(s.census().await, "census");
    assert_eq!(d.revoking_leases - c.revoking_leases, 2, "{d:?}");
    assert_eq!(d.revoke_failed_leases - c.revoke_failed_leases, 1, "{d:?}");
    assert_eq!(d.retrying_revocations - c.retrying_revocations, 2, "{d:?}");
    assert_eq!(
        d.pending_notifications - c.pending_notifications,
        2,
        "{d:?}"
    );
    assert_eq!(
        d.retrying_notifications - c.retrying_notifications,
        1,
        "{d:?}"
    );
}
