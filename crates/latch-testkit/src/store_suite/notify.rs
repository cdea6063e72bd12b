//! The notification outbox: rows written in a batch, read back per request, due rows by time,
//! outcome updates as compare-and-set.

use latch_core::notify::{ApprovalNotice, Notification, NotificationState};
use latch_core::ports::{Store, Write, WriteBatch};

use super::{apply_ok, expect_conflict, ok};

pub(super) fn row(id: &str, request_id: &str, due: i64) -> Notification {
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
            request_id: request_id.to_owned(),
            task_id: "task_ntf".to_owned(),
            workload: "w".to_owned(),
            resource: "payments-db".to_owned(),
            environment: "production".to_owned(),
            sensitivity: "secret".to_owned(),
            actions: vec!["read".to_owned()],
            ttl_secs: 60,
            purpose: "p".to_owned(),
            justification: "j".to_owned(),
            repository: Some("acme/payments".to_owned()),
            branch: Some("main".to_owned()),
            on_behalf_of: None,
            groups: vec!["g".to_owned()],
            digest: "d".to_owned(),
            expires_at_unix_secs: 1000,
            console_url: Some(format!("http://latch.test/console/requests/{request_id}")),
        },
        version: 1,
    }
}

/// Outbox rows: insert in a batch, read per request, due by time (claimed or not, as the
/// backend does), outcome updates compare-and-set on the version.
pub(super) async fn notifications(s: &dyn Store) {
    let (a, b, later) = (
        row("ntf_suite_a", "req_ntf_1", 100),
        row("ntf_suite_b", "req_ntf_1", 150),
        row("ntf_suite_c", "req_ntf_2", 900),
    );
    apply_ok(
        s,
        WriteBatch::new()
            .write(Write::InsertNotification(a.clone()))
            .write(Write::InsertNotification(b.clone()))
            .write(Write::InsertNotification(later.clone())),
        "insert notifications",
    )
    .await;
    let mine = ok(
        s.notifications_for_request("req_ntf_1").await,
        "notifications_for_request",
    );
    assert_eq!(
        mine,
        vec![a.clone(), b.clone()],
        "notifications_for_request"
    );
    let due = ok(
        s.claim_due_notifications(120, "suite", 180, 100).await,
        "claim_due_notifications",
    );
    assert_eq!(
        due,
        vec![a.clone()],
        "claim_due_notifications: only what is due"
    );
    let mut done = a.clone();
    done.state = NotificationState::Delivered;
    done.delivered_at_unix_secs = Some(120);
    done.version = 2;
    apply_ok(
        s,
        WriteBatch::new().write(Write::UpdateNotification(done.clone())),
        "deliver notification",
    )
    .await;
    expect_conflict(
        s,
        WriteBatch::new().write(Write::UpdateNotification(done.clone())),
        "stale notification update",
    )
    .await;
    let due = ok(
        s.claim_due_notifications(200, "suite", 260, 100).await,
        "claim_due_notifications",
    );
    assert_eq!(
        due.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
        vec!["ntf_suite_b"],
        "claim_due_notifications: delivered rows are never due again"
    );
    let stored = ok(
        s.notifications_for_request("req_ntf_1").await,
        "notifications_for_request",
    );
    assert_eq!(stored[0], done, "the outcome is stored as written");
}
