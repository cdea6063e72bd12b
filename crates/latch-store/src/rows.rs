//! Row shapes both stores read, mapped to domain types in one place.

use latch_core::audit::AuditCheckpoint;

/// `(seq, hash, at_unix_secs, kid, jws)` as selected from `audit_checkpoints`.
pub(crate) type CheckpointRow = (i64, String, i64, String, String);

/// An `audit_checkpoints` row as an [`AuditCheckpoint`].
pub(crate) fn checkpoint((seq, hash, at_unix_secs, kid, jws): CheckpointRow) -> AuditCheckpoint {
    AuditCheckpoint {
        seq,
        hash,
        at_unix_secs,
        kid,
        jws,
    }
}
