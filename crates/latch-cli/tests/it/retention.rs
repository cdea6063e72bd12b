//! Retention (issue 19, item 4): an ended task past `[retention] ended_tasks` is deleted from
//! the store with its request and lease, the audit trail keeps every record of it plus a
//! `store.pruned` event, and a task that is not over stays. Driven through the broker's use
//! case on the fake clock (the background job only calls it every `interval`).

use latch_testkit::{TestOptions, TestServer};
use serde_json::json;

#[tokio::test]
async fn ended_tasks_past_retention_leave_the_store_and_stay_in_the_audit_trail() {
    let s = TestServer::start_with(TestOptions {
        extra_config: "\n[retention]\nended_tasks = \"1h\"\ninterval = \"1h\"\n".into(),
        ..Default::default()
    })
    .await;
    let agent = s.agent("retention-1").await;
    let done = s.open_task(&agent, "sandbox", 600).await;
    let open = s.open_task(&agent, "sandbox", 600).await;
    for t in [&done, &open] {
        let g = s.request(&agent, t, "ci-cache", &["read"], None).await;
        assert_eq!(g.status, 201, "{}", g.body);
    }
    let c = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{done}/complete"),
            json!({}),
        )
        .await;
    assert_eq!(c.status, 200, "{}", c.body);
    let recorded = s.audit(&format!("task_id={done}")).await.len();
    assert!(recorded >= 3, "{recorded}");

    // Not yet: the task expires in 10 minutes, and is kept an hour past that.
    let none = s.broker().prune_ended(3600, &[]).await.unwrap();
    assert_eq!(none.tasks, 0);
    s.clock.advance(600 + 3601);
    let pruned = s.broker().prune_ended(3600, &[]).await.unwrap();
    assert_eq!(
        (pruned.tasks, pruned.requests, pruned.leases),
        (1, 1, 1),
        "{pruned:?}"
    );

    let agent = s.agent("retention-1").await; // the first token expired meanwhile
    let gone = s.get(Some(&agent), &format!("/v1/tasks/{done}")).await;
    assert_eq!(gone.status, 404, "{}", gone.body);
    // The open task expired meanwhile but its lease is revoked by the reaper, not by retention:
    // it is still there.
    let kept = s.get(Some(&agent), &format!("/v1/tasks/{open}")).await;
    assert_eq!(kept.status, 200, "{}", kept.body);
    assert!(
        s.audit(&format!("task_id={done}")).await.len() >= recorded,
        "the audit trail keeps the pruned task's records"
    );
    let events = s.audit("kind=store.pruned").await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["detail"]["tasks"], 1);
    assert_eq!(events[0]["detail"]["leases"], 1);
    let verify = s.get(None, "/healthz").await;
    assert_eq!(verify.status, 200);
    s.stop().await;
}
