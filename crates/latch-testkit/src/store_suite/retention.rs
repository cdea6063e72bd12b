//! Retention: `prune_ended_tasks` deletes only ended tasks past the cut-off whose leases are
//! all `revoked` and whose notifications are delivered, with everything below them; it keeps
//! the audit trail, honours its limit, and deletes nothing twice.

use latch_core::history::{CounterDelta, CounterScope};
use latch_core::model::{AuditEvent, AuditKind, LeaseState, RequestState, TaskState};
use latch_core::notify::NotificationState;
use latch_core::ports::{PruneReport, Store, Write, WriteBatch};

use super::{apply_ok, approval, lease, notify, ok, request, task};

/// A task with one request (one approval, one notification in `note`) and one lease in
/// `lease_state`, expiring at `expires`, and a task counter.
async fn family(
    s: &dyn Store,
    id: &str,
    state: TaskState,
    expires: i64,
    lease_state: LeaseState,
    note: NotificationState,
) {
    let rid = format!("{id}_req");
    let mut l = lease(&format!("{id}_lease"), id, lease_state, -500, expires);
    l.request_id.clone_from(&rid);
    let mut n = notify::row(&format!("{id}_note"), &rid, -400);
    n.state = note;
    let batch = WriteBatch::new()
        .write(Write::InsertTask(task(id, "wl_prn", -1000, expires, state)))
        .write(Write::InsertRequest(request(
            &rid,
            id,
            RequestState::Granted,
            -900,
            expires,
        )))
        .write(Write::InsertApproval(approval(
            &format!("{id}_apr"),
            &rid,
            "bob",
            -800,
        )))
        .write(Write::InsertLease(l))
        .write(Write::InsertNotification(n))
        .write(Write::Count(vec![CounterDelta {
            scope: CounterScope::Task,
            subject: id.to_owned(),
            name: "grants".to_owned(),
            window_start: 0,
            by: 1,
            cap: None,
            at_unix_secs: -500,
        }]));
    apply_ok(s, batch, &format!("insert {id}")).await;
}

fn pruned() -> AuditEvent {
    AuditEvent::new(-1, AuditKind::StorePruned, "latch", "ok")
}

async fn gone(s: &dyn Store, id: &str) -> bool {
    let t = ok(s.task(id).await, "task").is_none();
    let r = ok(s.request(&format!("{id}_req")).await, "request").is_none();
    let l = ok(s.lease(&format!("{id}_lease")).await, "lease").is_none();
    let c = ok(s.counters(CounterScope::Task, id).await, "counters").is_empty();
    let n = ok(
        s.notifications_for_request(&format!("{id}_req")).await,
        "notifications",
    )
    .is_empty();
    assert_eq!([t, r, l, c, n], [t; 5], "{id}: pruned all or nothing");
    t
}

/// See the module documentation. Uses expiries below zero, so no other section's task is
/// past the cut-off.
pub(super) async fn prune_ended_tasks(s: &dyn Store) {
    use LeaseState::{Active, RevokeFailed, Revoked};
    use NotificationState::{Delivered, Failed, Pending};
    family(
        s,
        "prn_done",
        TaskState::Completed,
        -100,
        Revoked,
        Delivered,
    )
    .await;
    family(s, "prn_done2", TaskState::Expired, -99, Revoked, Failed).await;
    family(
        s,
        "prn_done3",
        TaskState::Cancelled,
        -98,
        Revoked,
        Delivered,
    )
    .await;
    family(s, "prn_live", TaskState::Cancelled, -100, Active, Delivered).await;
    family(
        s,
        "prn_failed",
        TaskState::Expired,
        -100,
        RevokeFailed,
        Delivered,
    )
    .await;
    family(s, "prn_note", TaskState::Completed, -100, Revoked, Pending).await;
    family(s, "prn_open", TaskState::Open, -100, Revoked, Delivered).await;
    family(
        s,
        "prn_recent",
        TaskState::Completed,
        -10,
        Revoked,
        Delivered,
    )
    .await;
    // Over, but a reader of the trail (a Shared Signals stream) has not passed its last record.
    family(
        s,
        "prn_unsent",
        TaskState::Cancelled,
        -100,
        Revoked,
        Delivered,
    )
    .await;
    let unsent = AuditEvent::new(-90, AuditKind::TaskCancelled, "t", "ok").task("prn_unsent");
    let seq = apply_ok(s, WriteBatch::new().audit(unsent), "prn_unsent's record").await[0];
    let head_before = ok(s.audit_head().await, "audit head").map_or(0, |h| h.0);

    let first = ok(
        s.prune_ended_tasks((-50, seq - 1, 1), pruned()).await,
        "prune, limit 1",
    );
    assert_eq!(
        first,
        PruneReport {
            tasks: 1,
            requests: 1,
            leases: 1
        },
        "the oldest one first, within the limit"
    );
    assert!(gone(s, "prn_done").await, "the oldest ended task is pruned");
    assert!(!gone(s, "prn_done2").await, "the limit holds");
    let rest = ok(
        s.prune_ended_tasks((-50, seq - 1, 100), pruned()).await,
        "prune, the rest",
    );
    assert_eq!(rest.tasks, 2, "{rest:?}");
    assert!(gone(s, "prn_done2").await && gone(s, "prn_done3").await);
    for kept in [
        "prn_live",
        "prn_failed",
        "prn_note",
        "prn_open",
        "prn_recent",
        "prn_unsent",
    ] {
        assert!(!gone(s, kept).await, "{kept} is kept");
    }
    let passed = ok(
        s.prune_ended_tasks((-50, seq, 100), pruned()).await,
        "prune, cursor passed",
    );
    assert_eq!(
        passed.tasks, 1,
        "once the cursor passed its record: {passed:?}"
    );
    assert!(gone(s, "prn_unsent").await);
    let again = ok(
        s.prune_ended_tasks((-50, i64::MAX, 100), pruned()).await,
        "prune again",
    );
    assert_eq!(again, PruneReport::default(), "nothing is pruned twice");
    assert_eq!(
        ok(s.audit_head().await, "audit head").map_or(0, |h| h.0),
        head_before + 3,
        "the trail gets one record per pass that deleted something, and loses none"
    );
    let records = ok(
        s.audit_records(head_before, 10).await,
        "the pruning records",
    );
    let ids: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            serde_json::from_str::<serde_json::Value>(&r.body).unwrap_or_default()["detail"]["task_ids"]
                .clone()
        })
        .collect();
    assert_eq!(
        ids,
        [
            serde_json::json!(["prn_done"]),
            serde_json::json!(["prn_done2", "prn_done3"]),
            serde_json::json!(["prn_unsent"])
        ],
        "each record names the tasks it deleted"
    );
    // A task that ended after it expired is kept until it has been over for as long.
    let mut late = task("prn_late", "wl_prn", -1000, -100, TaskState::Completed);
    late.ended_at_unix_secs = Some(-20);
    apply_ok(
        s,
        WriteBatch::new().write(Write::InsertTask(late)),
        "insert prn_late",
    )
    .await;
    assert_eq!(
        ok(
            s.prune_ended_tasks((-50, i64::MAX, 10), pruned()).await,
            "late"
        )
        .tasks,
        0
    );
    assert_eq!(
        ok(
            s.prune_ended_tasks((-10, i64::MAX, 10), pruned()).await,
            "late"
        )
        .tasks,
        1
    );
}
