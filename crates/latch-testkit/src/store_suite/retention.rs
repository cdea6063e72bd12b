//! Retention: `prune_ended_tasks` deletes only ended tasks past the cut-off whose leases are
//! all `revoked` and whose notifications are delivered, with everything below them; it keeps
//! the audit trail, honours its limit, and deletes nothing twice.

use latch_core::history::{CounterDelta, CounterScope};
use latch_core::model::{AuditEvent, AuditKind, LeaseState, RequestState, TaskState};
use latch_core::notify::NotificationState;
use latch_core::ports::{PruneReport, Store, Write, WriteBatch};

use serde_json::json;

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

/// Trusts any checkpoint whose `jws` is `trusted` (signatures are tested with real keys in the
/// integration tests; here the store's side of the cut is).
struct Trusting;

impl latch_core::audit::CheckpointVerifier for Trusting {
    fn verify(
        &self,
        cp: &latch_core::audit::AuditCheckpoint,
    ) -> Result<latch_core::audit::CheckpointClaims, String> {
        (cp.jws.starts_with("trusted"))
            .then(|| latch_core::audit::CheckpointClaims {
                iss: "latch".into(),
                typ: latch_core::audit::CHECKPOINT_TYP.into(),
                seq: cp.seq,
                hash: cp.hash.clone(),
                iat: cp.at_unix_secs,
                chain_start: cp.jws == "trusted-cut",
            })
            .ok_or_else(|| "untrusted".into())
    }
}

/// Every stored record from the first kept.
async fn all_records(s: &dyn Store) -> Vec<latch_core::audit::AuditRecord> {
    let mut out: Vec<latch_core::audit::AuditRecord> = Vec::new();
    loop {
        let after = out.last().map_or(0, |r| r.seq);
        let page = ok(s.audit_records(after, 500).await, "audit_records");
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// A cut of record `seq` with hash `hash` signed as `jws`.
fn signed_cut(seq: i64, hash: &str, jws: &str) -> latch_core::audit::AuditCheckpoint {
    latch_core::audit::AuditCheckpoint {
        seq,
        hash: hash.to_owned(),
        at_unix_secs: 0,
        kid: "k".into(),
        jws: jws.into(),
    }
}

/// `prune_audit_before` deletes the prefix before the cut's record after checking it, keeps
/// that record with its previous hash and the cut as its checkpoint, records the cut in the
/// chain (which then verifies from the cut), refuses a cut or a stored checkpoint that does not
/// match, and deletes nothing twice. Runs last: it deletes records.
pub(super) async fn prune_audit(s: &dyn Store) {
    let before = all_records(s).await;
    let head = before.last().expect("the suite appended records").seq;
    let at = |seq: i64| &before[usize::try_from(seq - 1).expect("seq")];
    let cut = head / 4;
    let record = || AuditEvent::new(-1, AuditKind::AuditPruned, "latch", "ok");
    let alarm = |e: latch_core::ports::StoreError| {
        assert!(e.to_string().contains("audit chain alarm"), "{e}");
    };
    // A cut that does not match its record is an alarm: nothing goes.
    let wrong = signed_cut(cut, &"0".repeat(64), "trusted-cut");
    alarm(
        s.prune_audit_before(&wrong, record())
            .await
            .expect_err("a wrong cut"),
    );
    assert_eq!(all_records(s).await.len(), before.len(), "nothing pruned");

    let good = signed_cut(cut, &at(cut).hash, "trusted-cut");
    let n = ok(s.prune_audit_before(&good, record()).await, "prune audit");
    assert_eq!(n, u64::try_from(cut - 1).expect("count"));
    let after = all_records(s).await;
    assert_eq!(
        after.len(),
        before.len() - usize::try_from(n).expect("n") + 1
    );
    let first = &after[0];
    assert_eq!(
        (first.seq, &first.prev_hash, &first.hash, &first.body),
        (cut, &at(cut - 1).hash, &at(cut).hash, &at(cut).body),
        "the record at the cut is kept as it was, with its previous hash"
    );
    let last = after.last().expect("records");
    assert_eq!(last.seq, head + 1, "the cut is appended to the chain");
    let event: AuditEvent = serde_json::from_str(&last.body).expect("event");
    assert_eq!(event.kind, "audit.pruned");
    assert_eq!(
        [
            &event.detail["before_seq"],
            &event.detail["first_seq"],
            &event.detail["records"]
        ],
        [&json!(cut), &json!(1), &json!(cut - 1)]
    );
    assert_eq!(event.detail["anchor_hash"], at(cut).hash.as_str());
    assert_eq!(event.detail["cut"]["jws"], "trusted-cut");

    // What is kept verifies as a whole export, the stored cut sealing its first record.
    let cps = ok(s.checkpoints(cut - 1, 500).await, "checkpoints");
    assert_eq!(
        cps.first().map(|c| (c.seq, c.jws.as_str())),
        Some((cut, "trusted-cut"))
    );
    let mut export = String::new();
    for r in &after {
        export.push_str(&r.export_line().expect("line"));
        export.push('\n');
        for c in cps.iter().filter(|c| c.seq == r.seq) {
            export.push_str(&c.export_line().expect("line"));
            export.push('\n');
        }
    }
    let report =
        latch_core::audit::verify_export(export.as_bytes(), &Trusting, &[], &Default::default())
            .expect("read");
    assert_eq!((report.problem, report.pruned_before), (None, Some(cut)));

    // Again at the same cut, or an older one: nothing to do, nothing written.
    for seq in [cut, cut - 1] {
        let again = signed_cut(seq, &at(seq).hash, "trusted-cut");
        assert_eq!(ok(s.prune_audit_before(&again, record()).await, "again"), 0);
    }
    assert_eq!(all_records(s).await.len(), after.len());

    // A stored checkpoint among the records to go that they no longer match: an alarm.
    let later = head / 2;
    let stale = signed_cut(later - 5, &"1".repeat(64), "trusted");
    ok(s.put_checkpoint(&stale).await, "put checkpoint");
    let next = signed_cut(later, &at(later).hash, "trusted-cut");
    alarm(
        s.prune_audit_before(&next, record())
            .await
            .expect_err("a stale checkpoint"),
    );
    assert_eq!(all_records(s).await.len(), after.len(), "nothing pruned");

    // Appends go on from the head.
    let seqs = ok(
        s.apply(WriteBatch::new().audit(AuditEvent::new(
            9_000,
            AuditKind::StorePruned,
            "latch",
            "ok",
        )))
        .await,
        "append after the cut",
    );
    assert_eq!(seqs, vec![head + 2]);
}
