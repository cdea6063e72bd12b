//! Conformance checks: the audit log and its filters, bulk reads, checkpoints, sink cursors,
//! key blobs and the hash chain.

use super::*;

/// Audit sequence numbers and every audit filter.
pub(super) async fn audit(s: &dyn Store) {
    let mut e1 = event("evt_c01", 100, "task.opened", Some("task_c02"), None);
    e1.detail = serde_json::Value::Null;
    let mut e2 = event(
        "evt_c02",
        101,
        "credential.issued",
        Some("task_c02"),
        Some("lease_c01"),
    );
    e2.seq = 999_999; // ignored: the store assigns seqs
    e2.access_request_id = Some("req_c01".to_owned());
    let e3 = event(
        "evt_c03",
        102,
        "credential.revoked",
        Some("task_c02"),
        Some("lease_c01"),
    );
    let mut e4 = event("evt_c04", 103, "credential_x.other", Some("task_c04"), None);
    e4.request_id = None;
    let e5 = event("evt_c05", 104, "cred%x.y", None, None);
    let e6 = event(
        "evt_c06",
        105,
        "credential.issued",
        Some("task_c04"),
        Some("lease_c07"),
    );

    let first = apply_ok(
        s,
        WriteBatch::new()
            .audit(e1.clone())
            .audit(e2.clone())
            .audit(e3.clone()),
        "append events",
    )
    .await;
    assert_eq!(first.len(), 3, "one seq per event");
    assert!(
        first.windows(2).all(|w| w[0] < w[1]),
        "seqs increase within a batch: {first:?}"
    );
    // Writes and events together.
    let mut t2 = ok(s.task("task_c02").await, "task").expect("task_c02 exists");
    t2.purpose = "touched".to_owned();
    t2.version += 1;
    let second = apply_ok(
        s,
        WriteBatch::new()
            .write(Write::UpdateTask(t2.clone()))
            .audit(e4.clone())
            .audit(e5.clone())
            .audit(e6.clone()),
        "append events with a write",
    )
    .await;
    assert_eq!(second.len(), 3, "one seq per event");
    assert!(
        second.windows(2).all(|w| w[0] < w[1]),
        "seqs increase within a batch: {second:?}"
    );
    assert!(second[0] > first[2], "seqs increase across batches");
    assert_eq!(
        ok(s.task("task_c02").await, "task"),
        Some(t2),
        "write committed with events"
    );

    let seqs: Vec<i64> = first.iter().chain(&second).copied().collect();
    let mut expected = vec![e1, e2, e3, e4, e5, e6];
    for (e, seq) in expected.iter_mut().zip(&seqs) {
        e.seq = *seq;
    }
    let base = seqs[0] - 1;
    let q = |f: AuditFilter| async move {
        let mut got = ok(s.audit_events(&f).await, "audit_events");
        for e in &mut got {
            assert!(
                e.hash.as_ref().is_some_and(|h| h.len() == 64) && e.prev_hash.is_some(),
                "audit_events fills the chain fields"
            );
            e.prev_hash = None;
            e.hash = None;
        }
        got
    };
    let after = |mut f: AuditFilter, a: i64| {
        f.after_seq = Some(a);
        f
    };

    let got = q(after(filter(None, None, None), base)).await;
    assert_eq!(
        got, expected,
        "audit_events: round trip with seq filled, in seq order"
    );
    // Filtered views skip records, yet each event carries its own predecessor's hash (the
    // store may derive it rather than keep a copy): the chain fields match the export's.
    let records = ok(s.audit_records(base - 1, 10).await, "audit_records");
    let by_task = ok(
        s.audit_events(&after(filter(Some("task_c04"), None, None), base))
            .await,
        "audit_events",
    );
    assert_eq!(by_task.len(), 2, "task_c04 has e4 and e6");
    for e in &by_task {
        let r = records.iter().find(|r| r.seq == e.seq).expect("exported");
        let p = records
            .iter()
            .find(|r| r.seq == e.seq - 1)
            .expect("predecessor");
        assert_eq!(
            e.prev_hash.as_deref(),
            Some(r.prev_hash.as_str()),
            "same as export"
        );
        assert_eq!(
            e.prev_hash.as_deref(),
            Some(p.hash.as_str()),
            "the predecessor's hash"
        );
        assert_eq!(e.hash.as_deref(), Some(r.hash.as_str()));
    }

    let got = q(after(filter(Some("task_c02"), None, None), base)).await;
    assert_eq!(
        ids(&got, event_id),
        ["evt_c01", "evt_c02", "evt_c03"],
        "filter task_id"
    );
    let got = q(filter(None, Some("lease_c01"), None)).await;
    assert_eq!(
        ids(&got, event_id),
        ["evt_c02", "evt_c03"],
        "filter lease_id"
    );
    let got = q(after(filter(None, None, Some("credential.")), base)).await;
    assert_eq!(
        ids(&got, event_id),
        ["evt_c02", "evt_c03", "evt_c06"],
        "filter kind prefix"
    );
    let got = q(after(filter(None, None, Some("credential.issued")), base)).await;
    assert_eq!(
        ids(&got, event_id),
        ["evt_c02", "evt_c06"],
        "kind prefix equal to the kind"
    );
    let got = q(after(filter(None, None, Some("credential_")), base)).await;
    assert_eq!(
        ids(&got, event_id),
        ["evt_c04"],
        "`_` in a kind prefix is literal"
    );
    let got = q(after(filter(None, None, Some("cred%")), base)).await;
    assert_eq!(
        ids(&got, event_id),
        ["evt_c05"],
        "`%` in a kind prefix is literal"
    );
    let got = q(after(filter(None, None, Some("Credential.")), base)).await;
    assert!(got.is_empty(), "kind prefix is case-sensitive");
    let got = q(after(filter(None, None, Some("nothing.")), base)).await;
    assert!(got.is_empty(), "unknown kind prefix");
    let got = q(filter(
        Some("task_c02"),
        Some("lease_c01"),
        Some("credential.rev"),
    ))
    .await;
    assert_eq!(
        ids(&got, event_id),
        ["evt_c03"],
        "task, lease and kind combined"
    );
    let got = q(filter(Some("task_c04"), Some("lease_c01"), None)).await;
    assert!(got.is_empty(), "task and lease combined");
    let got = q(filter(None, Some("lease_c07"), Some("credential."))).await;
    assert_eq!(ids(&got, event_id), ["evt_c06"], "lease and kind combined");

    let got = q(after(filter(Some("task_c02"), None, None), seqs[1])).await;
    assert_eq!(ids(&got, event_id), ["evt_c03"], "after_seq is exclusive");
    let got = q(after(filter(None, None, None), seqs[5])).await;
    assert!(got.is_empty(), "after the last seq");
    let mut f = after(filter(None, None, None), base);
    f.limit = Some(2);
    let got = q(f).await;
    assert_eq!(ids(&got, event_id), ["evt_c01", "evt_c02"], "limit");
}

/// Default and maximum page sizes, and paging through a large batch.
pub(super) async fn audit_bulk_limits(s: &dyn Store) {
    const N: usize = 1100;
    let mut batch = WriteBatch::new();
    for i in 0..N {
        batch = batch.audit(event(
            &format!("evt_bulk_{i:04}"),
            7000,
            "bulk.event",
            Some("task_bulk"),
            None,
        ));
    }
    let seqs = apply_ok(s, batch, "append bulk events").await;
    assert_eq!(seqs.len(), N, "one seq per event");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seqs increase");

    let f = filter(Some("task_bulk"), None, None);
    let got = ok(s.audit_events(&f).await, "audit_events");
    assert_eq!(got.len(), 100, "default limit is 100");
    assert_eq!(
        got.iter().map(|e| e.seq).collect::<Vec<_>>(),
        seqs[..100],
        "first page in order"
    );
    let mut big = f.clone();
    big.limit = Some(5000);
    let got = ok(s.audit_events(&big).await, "audit_events");
    assert_eq!(got.len(), 1000, "limit is capped at 1000");

    let mut seen = Vec::new();
    let mut page = f.clone();
    page.limit = Some(300);
    loop {
        let got = ok(s.audit_events(&page).await, "audit_events");
        let Some(last) = got.last() else { break };
        page.after_seq = Some(last.seq);
        seen.extend(got.iter().map(|e| e.seq));
    }
    assert_eq!(
        seen, seqs,
        "paging with after_seq visits every event once, in order"
    );
}

/// `put_key_blob_if_absent` keeps the first blob.
pub(super) async fn key_blobs(store: Arc<dyn Store>) {
    let s = store.as_ref();
    assert_eq!(
        ok(s.key_blob("kek").await, "key_blob"),
        None,
        "missing blob"
    );
    let first = vec![0u8, 1, 2, 0, 255, 254];
    let got = ok(
        s.put_key_blob_if_absent("kek", &first).await,
        "put_key_blob_if_absent",
    );
    assert_eq!(got, first, "first put returns its blob");
    let got = ok(
        s.put_key_blob_if_absent("kek", &[9, 9, 9]).await,
        "put_key_blob_if_absent",
    );
    assert_eq!(got, first, "second put returns the first blob");
    assert_eq!(
        ok(s.key_blob("kek").await, "key_blob"),
        Some(first.clone()),
        "first blob kept"
    );
    let other = vec![7u8; 64];
    let got = ok(
        s.put_key_blob_if_absent("kek2", &other).await,
        "put_key_blob_if_absent",
    );
    assert_eq!(got, other, "names are independent");
    assert_eq!(
        ok(s.key_blob("kek").await, "key_blob"),
        Some(first),
        "names are independent"
    );

    // Racing puts all see one winner.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..10u8 {
        let store = store.clone();
        set.spawn(async move { store.put_key_blob_if_absent("kek_race", &[i; 16]).await });
    }
    let mut results = BTreeSet::new();
    while let Some(joined) = set.join_next().await {
        results.insert(ok(joined.expect("put task"), "put_key_blob_if_absent"));
    }
    assert_eq!(results.len(), 1, "racing puts return the same blob");
    let stored = ok(s.key_blob("kek_race").await, "key_blob");
    assert_eq!(
        stored.as_ref(),
        results.first(),
        "the returned blob is the stored one"
    );
}

/// Actor, time range and credential-HMAC filters.
pub(super) async fn audit_filters(s: &dyn Store) {
    let mut a = event("evt_f01", 9_000, "tool.used", Some("task_f"), None);
    a.actor = "wl:alice".to_owned();
    let mut b = event("evt_f02", 9_010, "credential.issued", Some("task_f"), None);
    b.actor = "wl:bob".to_owned();
    b.detail = json!({"credential_hmac": "00aa11bb"});
    let mut c = event("evt_f03", 9_020, "tool.used", Some("task_f"), None);
    c.actor = "wl:alice".to_owned();
    apply_ok(
        s,
        WriteBatch::new().audit(a).audit(b).audit(c),
        "filter events",
    )
    .await;
    let q = |f: AuditFilter| async move { ok(s.audit_events(&f).await, "audit_events") };
    let base = filter(Some("task_f"), None, None);
    let got = q(AuditFilter {
        actor: Some("wl:alice".into()),
        ..base.clone()
    })
    .await;
    assert_eq!(ids(&got, event_id), ["evt_f01", "evt_f03"], "filter actor");
    let got = q(AuditFilter {
        since_unix_secs: Some(9_010),
        until_unix_secs: Some(9_020),
        ..base.clone()
    })
    .await;
    assert_eq!(
        ids(&got, event_id),
        ["evt_f02"],
        "time range: since inclusive, until exclusive"
    );
    let got = q(AuditFilter {
        credential_hmac: Some("00AA11BB".into()),
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(
        ids(&got, event_id),
        ["evt_f02"],
        "credential hmac, any case"
    );
    let got = q(AuditFilter {
        credential_hmac: Some("00aa11".into()),
        ..AuditFilter::default()
    })
    .await;
    assert!(got.is_empty(), "a prefix of an hmac matches nothing");
    let got = q(AuditFilter {
        credential_hmac: Some("%".into()),
        ..AuditFilter::default()
    })
    .await;
    assert!(got.is_empty(), "a non-hex hmac matches nothing");
}

/// Signed checkpoints (stored as given, first one per seq wins) and sink cursors (monotone).
pub(super) async fn checkpoints_and_cursors(s: &dyn Store) {
    assert_eq!(
        ok(s.last_checkpoint().await, "last_checkpoint"),
        None,
        "none yet"
    );
    // Each seals the record it names, as a broker's would (audit retention later checks them).
    let records = ok(s.audit_records(0, 10).await, "audit_records");
    assert!(records.len() >= 9, "the sections above appended records");
    let cp = |seq: i64, jws: &str| AuditCheckpoint {
        seq,
        hash: records[usize::try_from(seq - 1).expect("seq")].hash.clone(),
        at_unix_secs: 50 + seq,
        kid: "k1".into(),
        jws: jws.into(),
    };
    ok(s.put_checkpoint(&cp(3, "a.b.c")).await, "put_checkpoint");
    ok(
        s.put_checkpoint(&cp(3, "x.y.z")).await,
        "put_checkpoint again",
    );
    ok(s.put_checkpoint(&cp(9, "d.e.f")).await, "put_checkpoint");
    let got = ok(s.checkpoints(0, 10).await, "checkpoints");
    assert_eq!(
        got,
        vec![cp(3, "a.b.c"), cp(9, "d.e.f")],
        "first per seq wins"
    );
    let got = ok(s.checkpoints(3, 10).await, "checkpoints");
    assert_eq!(got, vec![cp(9, "d.e.f")], "after_seq is exclusive");
    assert_eq!(
        ok(s.last_checkpoint().await, "last_checkpoint"),
        Some(cp(9, "d.e.f")),
        "last_checkpoint is the highest seq"
    );

    assert_eq!(ok(s.sink_cursor("file").await, "sink_cursor"), 0, "unset");
    ok(s.set_sink_cursor("file", 7).await, "set_sink_cursor");
    ok(s.set_sink_cursor("file", 5).await, "set_sink_cursor back");
    ok(s.set_sink_cursor("hook", 2).await, "set_sink_cursor other");
    assert_eq!(
        ok(s.sink_cursor("file").await, "sink_cursor"),
        7,
        "monotone"
    );
    assert_eq!(
        ok(s.sink_cursor("hook").await, "sink_cursor"),
        2,
        "per sink"
    );
}

/// The whole log is one gapless chain from seq 1, including events from concurrent writers.
pub(super) async fn audit_chain(store: Arc<dyn Store>) {
    let mut joins = Vec::new();
    for i in 0..16 {
        let st = store.clone();
        joins.push(tokio::spawn(async move {
            let mut b = WriteBatch::new();
            for j in 0..3 {
                b = b.audit(event(
                    &format!("evt_chain_{i}_{j}"),
                    8_000,
                    "chain.event",
                    None,
                    None,
                ));
            }
            st.apply(b).await.map(|seqs| seqs.len())
        }));
    }
    for j in joins {
        let n = j.await.expect("join").expect("concurrent apply");
        assert_eq!(n, 3);
    }
    let s = store.as_ref();
    let mut records = Vec::new();
    loop {
        let after = records
            .last()
            .map_or(0, |r: &latch_core::audit::AuditRecord| r.seq);
        let page = ok(s.audit_records(after, 500).await, "audit_records");
        if page.is_empty() {
            break;
        }
        records.extend(page);
    }
    let prev = super::assert_chained(&records);
    let expected_seq = i64::try_from(records.len()).expect("count") + 1;
    assert!(
        expected_seq > 1100,
        "the log has the events of every section"
    );
    assert_eq!(
        ok(s.audit_head().await, "audit_head"),
        Some((expected_seq - 1, prev)),
        "audit_head is the last record"
    );
}
