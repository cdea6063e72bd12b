//! Conformance checks: approvals, leases and racing compare-and-set writers.

use super::*;

/// Approvals keep insertion order and are unique per request and approver, ignoring case.
pub(super) async fn approvals(s: &dyn Store) {
    // Ids and names sort the other way round from insertion order.
    let zoe = approval("apr_c02", "req_c02", "zoe", 300);
    let alice = approval("apr_c01", "req_c02", "alice", 300);
    apply_ok(
        s,
        WriteBatch::new().write(Write::InsertApproval(zoe.clone())),
        "insert approval",
    )
    .await;
    apply_ok(
        s,
        WriteBatch::new().write(Write::InsertApproval(alice.clone())),
        "insert approval",
    )
    .await;
    let got = ok(s.approvals("req_c02").await, "approvals");
    assert_eq!(
        got,
        vec![zoe.clone(), alice.clone()],
        "approvals: insertion order, round trip"
    );

    let shout = approval("apr_c03", "req_c02", "ALICE", 310);
    expect_conflict(
        s,
        WriteBatch::new().write(Write::InsertApproval(shout)),
        "same approver, other case",
    )
    .await;
    let again = approval("apr_c04", "req_c02", "zoe", 320);
    expect_conflict(
        s,
        WriteBatch::new().write(Write::InsertApproval(again)),
        "same approver twice",
    )
    .await;

    // The conflict rolls back the request update in the same batch.
    let mut r2v2 = ok(s.request("req_c02").await, "request").expect("req_c02 exists");
    r2v2.approvers.push("Zoe".to_owned());
    r2v2.version = 2;
    let batch = WriteBatch::new()
        .write(Write::InsertApproval(approval(
            "apr_c05", "req_c02", "Zoe", 330,
        )))
        .write(Write::UpdateRequest(r2v2))
        .audit(event(
            "evt_apr_1",
            330,
            "approval.recorded",
            Some("task_apr"),
            None,
        ));
    expect_conflict(s, batch, "duplicate approval with request update").await;
    let r2 = ok(s.request("req_c02").await, "request").expect("req_c02 exists");
    assert_eq!(r2.version, 1, "request update rolled back");
    assert!(
        ok(
            s.audit_events(&filter(Some("task_apr"), None, None)).await,
            "audit_events"
        )
        .is_empty(),
        "audit rolled back"
    );
    let got = ok(s.approvals("req_c02").await, "approvals");
    assert_eq!(
        ids(&got, approval_id),
        ["apr_c02", "apr_c01"],
        "no approval added by conflicts"
    );
    let dup_id = approval("apr_c01", "req_c01", "dave", 340);
    expect_conflict(
        s,
        WriteBatch::new().write(Write::InsertApproval(dup_id)),
        "duplicate approval id",
    )
    .await;

    // The same approver may approve another request.
    let other = approval("apr_c06", "req_c01", "alice", 350);
    apply_ok(
        s,
        WriteBatch::new().write(Write::InsertApproval(other.clone())),
        "approval on other request",
    )
    .await;
    assert_eq!(
        ok(s.approvals("req_c01").await, "approvals"),
        vec![other],
        "per-request approvals"
    );
    assert!(
        ok(s.approvals("req_missing").await, "approvals").is_empty(),
        "no approvals"
    );
}

/// Lease round trips and every lease query.
pub(super) async fn leases(s: &dyn Store) {
    let mut l01 = lease("lease_c01", "task_c02", LeaseState::Active, 1000, 2000);
    l01.credential_hmac = Some("aa11".to_owned());
    let mut l02 = lease("lease_c02", "task_c02", LeaseState::Active, 1100, 3000);
    l02.credential_hmac = Some("bb22".to_owned());
    l02.renewals = 2;
    let l03 = lease("lease_c03", "task_c04", LeaseState::Issuing, 1500, 3000);
    let mut l04 = lease("lease_c04", "task_c04", LeaseState::Revoking, 1000, 3000);
    l04.next_revoke_at_unix_secs = Some(1800);
    l04.revoke_attempts = 1;
    l04.revoke_reason = Some("task_completed".to_owned());
    let mut l05 = lease(
        "lease_c05",
        "task_c04",
        LeaseState::RevokeFailed,
        1000,
        3000,
    );
    l05.next_revoke_at_unix_secs = Some(2500);
    l05.revoke_attempts = 7;
    l05.last_revoke_error = Some("target unreachable".to_owned());
    let mut l06 = lease("lease_c06", "task_c04", LeaseState::Revoked, 500, 1000);
    l06.credential_hmac = Some("cc33".to_owned());
    l06.revoked_at_unix_secs = Some(900);
    let l07 = lease("lease_c07", "task_c04", LeaseState::Active, 900, 5000);
    let l08 = lease("lease_c08", "task_c04", LeaseState::Issuing, 1900, 3000);
    // Revoking without a scheduled attempt is never due.
    let l09 = lease("lease_c09", "task_c04", LeaseState::Revoking, 1000, 1000);
    let all = [&l01, &l02, &l03, &l04, &l05, &l06, &l07, &l08, &l09];
    let mut batch = WriteBatch::new();
    for l in all {
        batch = batch.write(Write::InsertLease(l.clone()));
    }
    apply_ok(s, batch, "insert leases").await;

    for l in all {
        assert_eq!(
            ok(s.lease(&l.id).await, "lease").as_ref(),
            Some(l),
            "lease round trip {}",
            l.id
        );
    }
    assert_eq!(
        ok(s.lease("lease_missing").await, "lease"),
        None,
        "missing lease"
    );

    let by_task = ok(s.leases_by_task("task_c02").await, "leases_by_task");
    assert_eq!(
        id_set(&by_task, lease_id),
        set(&["lease_c01", "lease_c02"]),
        "leases_by_task"
    );
    let by_task = ok(s.leases_by_task("task_c04").await, "leases_by_task");
    assert_eq!(by_task.len(), 7, "leases_by_task: every state");
    assert!(
        ok(s.leases_by_task("task_c03").await, "leases_by_task").is_empty(),
        "no leases"
    );

    let act = ok(s.active_leases("", 10).await, "active_leases");
    assert_eq!(
        act,
        vec![l01.clone(), l02.clone(), l07.clone()],
        "active_leases: ordered by id"
    );
    let act = ok(s.active_leases("", 2).await, "active_leases");
    assert_eq!(
        ids(&act, lease_id),
        ["lease_c01", "lease_c02"],
        "active_leases: limit"
    );
    let act = ok(s.active_leases("lease_c02", 2).await, "active_leases");
    assert_eq!(
        ids(&act, lease_id),
        ["lease_c07"],
        "active_leases: after_id is exclusive"
    );
    let act = ok(s.active_leases("lease_c07", 10).await, "active_leases");
    assert!(act.is_empty(), "active_leases: past the end");
    // The tasks of the same page, each once (tasks task_c02 and task_c04 exist in the suite).
    let task_ids = |after: &'static str, n: u32| async move {
        let mut t = ok(s.active_lease_tasks(after, n).await, "active_lease_tasks");
        t.sort_by(|a, b| a.id.cmp(&b.id));
        t.into_iter().map(|t| t.id).collect::<Vec<_>>()
    };
    assert_eq!(
        task_ids("", 10).await,
        ["task_c02", "task_c04"],
        "active_lease_tasks: each once"
    );
    assert_eq!(
        task_ids("", 2).await,
        ["task_c02"],
        "active_lease_tasks: the page's only"
    );
    assert_eq!(
        task_ids("lease_c02", 2).await,
        ["task_c04"],
        "active_lease_tasks: after"
    );
    assert!(
        task_ids("lease_c07", 10).await.is_empty(),
        "active_lease_tasks: past the end"
    );

    let pending = ok(
        s.claim_pending_revocations(1000, "payments-db", "suite", 1030, 100)
            .await,
        "claim_pending_revocations",
    );
    assert_eq!(
        ids(&pending, lease_id),
        ["lease_c04", "lease_c05", "lease_c09"],
        "claim_pending_revocations: revoking/revoke_failed of the resource, whatever the schedule"
    );
    assert!(
        ok(
            s.claim_pending_revocations(1000, "other-db", "suite", 1030, 100)
                .await,
            "claim_pending_revocations",
        )
        .is_empty(),
        "claim_pending_revocations: another resource's leases are not returned"
    );
    assert_eq!(
        ok(
            s.claim_pending_revocations(1000, "payments-db", "suite", 1030, 100)
                .await,
            "claim_pending_revocations",
        )
        .len(),
        3,
        "claim_pending_revocations: the owner's own claims are taken again"
    );
    let rv = ok(
        s.revoked_unexpired_leases(1500, "", 100).await,
        "revoked_unexpired_leases",
    );
    assert_eq!(
        rv.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(),
        ["lease_c04", "lease_c05"],
        "revoked_unexpired_leases: revoking/revoke_failed/revoked, not yet expired, by id"
    );
    let rv = ok(
        s.revoked_unexpired_leases(900, "lease_c04", 1).await,
        "revoked_unexpired_leases",
    );
    assert_eq!(
        rv.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(),
        ["lease_c05"],
        "revoked_unexpired_leases: after_id is exclusive, limit applies"
    );

    let due = ok(s.due_leases(1999, 300, 100).await, "due_leases");
    assert_eq!(
        id_set(&due, lease_id),
        set(&["lease_c03", "lease_c04"]),
        "due_leases at 1999"
    );
    let due = ok(s.due_leases(2000, 300, 100).await, "due_leases");
    assert_eq!(
        id_set(&due, lease_id),
        set(&["lease_c01", "lease_c03", "lease_c04"]),
        "due_leases: active expired at now, issuing past grace, revoking due"
    );
    let due = ok(s.due_leases(2000, 0, 100).await, "due_leases");
    assert_eq!(
        id_set(&due, lease_id),
        set(&["lease_c01", "lease_c03", "lease_c04", "lease_c08"]),
        "due_leases: grace 0"
    );
    let due = ok(s.due_leases(2500, 300, 100).await, "due_leases");
    assert_eq!(
        id_set(&due, lease_id),
        set(&[
            "lease_c01",
            "lease_c03",
            "lease_c04",
            "lease_c05",
            "lease_c08"
        ]),
        "due_leases: revoke_failed due at now, issuing past grace"
    );
    let due = ok(s.due_leases(2500, 300, 2).await, "due_leases");
    assert_eq!(due.len(), 2, "due_leases: limit");
    let due = ok(s.due_leases(900, 300, 100).await, "due_leases");
    assert!(due.is_empty(), "due_leases: nothing due early");

    let hit = ok(
        s.lease_by_credential_hmac("bb22").await,
        "lease_by_credential_hmac",
    );
    assert_eq!(hit, Some(l02.clone()), "lease_by_credential_hmac");
    let hit = ok(
        s.lease_by_credential_hmac("cc33").await,
        "lease_by_credential_hmac",
    );
    assert_eq!(
        hit.map(|l| l.id),
        Some("lease_c06".to_owned()),
        "revoked leases are found too"
    );
    let hit = ok(
        s.lease_by_credential_hmac("ffff").await,
        "lease_by_credential_hmac",
    );
    assert_eq!(hit, None, "unknown hmac");

    // Updates move the indexed columns with the body.
    let mut l02v2 = l02.clone();
    l02v2.state = LeaseState::Revoked;
    l02v2.credential_hmac = None;
    l02v2.revoked_at_unix_secs = Some(1200);
    l02v2.version = 2;
    let mut l03v2 = l03.clone();
    l03v2.state = LeaseState::Active;
    l03v2.credential_hmac = Some("dd44".to_owned());
    l03v2.version = 2;
    let batch = WriteBatch::new()
        .write(Write::UpdateLease(l02v2.clone()))
        .write(Write::UpdateLease(l03v2.clone()));
    apply_ok(s, batch, "update leases").await;
    assert_eq!(
        ok(s.lease("lease_c02").await, "lease"),
        Some(l02v2.clone()),
        "updated lease"
    );
    let act = ok(s.active_leases("", 10).await, "active_leases");
    assert_eq!(
        ids(&act, lease_id),
        ["lease_c01", "lease_c03", "lease_c07"],
        "active after update"
    );
    assert_eq!(
        ok(
            s.lease_by_credential_hmac("bb22").await,
            "lease_by_credential_hmac"
        ),
        None,
        "cleared hmac no longer found"
    );
    assert_eq!(
        ok(
            s.lease_by_credential_hmac("dd44").await,
            "lease_by_credential_hmac"
        ),
        Some(l03v2),
        "new hmac found"
    );
    let due = ok(s.due_leases(2000, 0, 100).await, "due_leases");
    assert_eq!(
        id_set(&due, lease_id),
        set(&["lease_c01", "lease_c04", "lease_c08"]),
        "due_leases follows the updated state"
    );

    let mut stale = l02.clone();
    stale.renewals = 3;
    stale.version = 2;
    expect_conflict(
        s,
        WriteBatch::new().write(Write::UpdateLease(stale)),
        "stale lease update",
    )
    .await;
    assert_eq!(
        ok(s.lease("lease_c02").await, "lease"),
        Some(l02v2),
        "conflict changes nothing"
    );
    let dup = lease("lease_c01", "task_c02", LeaseState::Active, 1, 2);
    expect_conflict(
        s,
        WriteBatch::new().write(Write::InsertLease(dup)),
        "duplicate lease",
    )
    .await;
    assert_eq!(
        ok(s.lease("lease_c01").await, "lease"),
        Some(l01),
        "duplicate changes nothing"
    );
}

/// Many writers race the same compare-and-set: exactly one wins.
pub(super) async fn concurrent_cas(store: Arc<dyn Store>) {
    const WRITERS: u32 = 20;
    let base = lease("lease_race", "task_c04", LeaseState::Active, 4000, 9000);
    apply_ok(
        store.as_ref(),
        WriteBatch::new().write(Write::InsertLease(base.clone())),
        "insert race lease",
    )
    .await;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..WRITERS {
        let store = store.clone();
        let mut next = base.clone();
        next.renewals = i + 1;
        next.version = 2;
        set.spawn(async move {
            let r = store
                .apply(
                    WriteBatch::new()
                        .write(Write::UpdateLease(next.clone()))
                        .audit(event(
                            &format!("evt_race_{i:02}"),
                            4000,
                            "credential.renewed",
                            None,
                            Some("lease_race"),
                        )),
                )
                .await;
            (next, r)
        });
    }
    let mut winners = Vec::new();
    while let Some(joined) = set.join_next().await {
        let (next, r) = joined.expect("writer task");
        match r {
            Ok(seqs) => {
                assert_eq!(seqs.len(), 1, "winner gets its seq");
                winners.push(next);
            }
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("racing CAS: expected success or conflict, got {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "racing CAS: exactly one writer wins");
    let stored = ok(store.lease("lease_race").await, "lease");
    assert_eq!(
        stored.as_ref(),
        winners.first(),
        "racing CAS: the winner's value is stored"
    );
    let ev = ok(
        store
            .audit_events(&filter(None, Some("lease_race"), None))
            .await,
        "audit_events",
    );
    assert_eq!(
        ev.len(),
        1,
        "racing CAS: only the winner's audit event is stored"
    );
}
