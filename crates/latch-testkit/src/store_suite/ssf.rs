//! Received Security Event Tokens: one row per issuer and `jti`; a replay conflicts and rolls
//! back its whole batch (audit events included); rows are purged once expired.

use latch_core::model::{AuditEvent, AuditKind};
use latch_core::ports::{Store, Write, WriteBatch};
use latch_core::ssf::ReceivedSetRecord;

use super::{apply_ok, expect_conflict, ok};

fn record(issuer: &str, jti: &str, expires: i64) -> ReceivedSetRecord {
    ReceivedSetRecord {
        key: ReceivedSetRecord::key_for(issuer, jti),
        transmitter: "idp".to_owned(),
        issuer: issuer.to_owned(),
        jti: jti.to_owned(),
        received_at_unix_secs: 1000,
        expires_at_unix_secs: expires,
    }
}

fn received(jti: &str) -> AuditEvent {
    AuditEvent::new(1000, AuditKind::SsfReceived, "ssf:idp", "acted")
        .detail(serde_json::json!({"jti": jti}))
}

pub(super) async fn received_sets(s: &dyn Store) {
    let first = record("https://idp.example", "set-1", 2000);
    apply_ok(
        s,
        WriteBatch::new()
            .write(Write::InsertReceivedSet(first.clone()))
            .audit(received("set-1")),
        "insert received set",
    )
    .await;
    let head = ok(s.audit_head().await, "audit head");
    expect_conflict(
        s,
        WriteBatch::new()
            .write(Write::InsertReceivedSet(first.clone()))
            .audit(received("set-1")),
        "a replayed jti",
    )
    .await;
    assert_eq!(
        ok(s.audit_head().await, "audit head"),
        head,
        "a replay's batch writes nothing, its audit events included"
    );
    // The same jti from another issuer is another SET.
    apply_ok(
        s,
        WriteBatch::new().write(Write::InsertReceivedSet(record(
            "https://other.example",
            "set-1",
            5000,
        ))),
        "same jti, other issuer",
    )
    .await;
    assert_eq!(
        ok(s.purge_received_sets(3000).await, "purge received sets"),
        1,
        "only the expired record is purged"
    );
    apply_ok(
        s,
        WriteBatch::new().write(Write::InsertReceivedSet(first)),
        "a jti is accepted again once its record expired and was purged",
    )
    .await;
}
