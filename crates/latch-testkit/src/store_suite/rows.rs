//! Conformance checks: ping, tasks, the task-open guard, batch atomicity, requests.

use super::*;

pub(super) async fn ping(s: &dyn Store) {
    ok(s.ping().await, "ping");
    let seqs = apply_ok(s, WriteBatch::new(), "empty batch").await;
    assert!(seqs.is_empty(), "an empty batch returns no seqs");
}

/// Task round trips, `tasks_by_owner`, `expired_open_tasks`, compare-and-set.
/// `RequireTaskOpen` passes only for an open task at exactly the given version, and a failing
/// guard undoes the whole batch.
pub(super) async fn require_task_open(s: &dyn Store) {
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

pub(super) async fn tasks(s: &dyn Store) {
    let t1 = task("task_c01", "wl_a", 1000, 2000, TaskState::Open);
    let mut t2 = task("task_c02", "wl_a", 1500, 2500, TaskState::Open);
    t2.repository = None;
    t2.branch = None;
    t2.on_behalf_of = None;
    t2.production = true;
    t2.environment = "production".into();
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
pub(super) async fn batch_atomicity(s: &dyn Store) {
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
pub(super) async fn requests(s: &dyn Store) {
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

/// Console sessions: inserted and read back by the HMAC of their id, deleted (deleting one that
/// is gone is no error), and purged once expired; never keyed by anything but the HMAC.
pub(super) async fn console_sessions(s: &dyn Store) {
    let session = |h: &str, expires: i64| latch_core::model::ConsoleSession {
        id_hmac: h.to_owned(),
        human_id: "bob".to_owned(),
        issuer: "https://sso.example".to_owned(),
        groups: vec!["prod-approvers".to_owned()],
        name: Some("Bob".to_owned()),
        via: "oidc".to_owned(),
        created_at_unix_secs: 1000,
        expires_at_unix_secs: expires,
    };
    let a = session("aa01", 2000);
    let b = session("bb02", 5000);
    for x in [&a, &b] {
        apply_ok(
            s,
            WriteBatch::new().write(Write::InsertConsoleSession(x.clone())),
            "insert console session",
        )
        .await;
    }
    assert_eq!(
        ok(s.console_session("aa01").await, "read console session"),
        Some(a.clone()),
        "a console session reads back as written"
    );
    assert_eq!(ok(s.console_session("cc03").await, "read"), None);
    let dup = s
        .apply(WriteBatch::new().write(Write::InsertConsoleSession(a.clone())))
        .await;
    assert!(dup.is_err(), "one session per id");
    assert_eq!(
        ok(
            s.purge_console_sessions(3000).await,
            "purge console sessions"
        ),
        1,
        "only the expired session is purged"
    );
    assert_eq!(ok(s.console_session("aa01").await, "read"), None);
    for _ in 0..2 {
        apply_ok(
            s,
            WriteBatch::new().write(Write::DeleteConsoleSession {
                id_hmac: "bb02".to_owned(),
            }),
            "delete console session",
        )
        .await;
    }
    assert_eq!(ok(s.console_session("bb02").await, "read"), None);
}
