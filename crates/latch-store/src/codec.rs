//! Row codecs and error helpers every backend shares: JSON bodies in and out, page sizes,
//! `LIKE` prefixes, compare-and-set outcomes, and the row shapes selected from the audit tables.
//!
//! Nothing here quotes a row body in an error: bodies can hold principals and credential
//! metadata, so a failure names only what failed.

use latch_core::audit::{AuditCheckpoint, AuditRecord};
use latch_core::model::AuditEvent;
use latch_core::ports::{StoreError, Write};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Default and maximum page sizes of [`Store::audit_events`](latch_core::ports::Store::audit_events).
pub(crate) const AUDIT_DEFAULT_LIMIT: u32 = 100;
pub(crate) const AUDIT_MAX_LIMIT: u32 = 1000;
/// Largest page of [`Store::audit_records`](latch_core::ports::Store::audit_records) and
/// [`Store::checkpoints`](latch_core::ports::Store::checkpoints).
pub(crate) const BULK_MAX_LIMIT: u32 = 10_000;

/// `(seq, hash, at_unix_secs, kid, jws)` as selected from `audit_checkpoints`.
pub(crate) type CheckpointRow = (i64, String, i64, String, String);

/// `(seq, body, prev_hash, hash)` as selected from `audit_events` for [`decode_events`].
pub(crate) type EventRow = (i64, String, String, String);

/// `(seq, prev_hash, hash, body)` as selected from `audit_events` for [`records`].
pub(crate) type RecordRow = (i64, String, String, String);

/// The JSON body of a row.
///
/// # Errors
/// [`StoreError::Unavailable`] naming `what` (never the value).
pub(crate) fn encode<T: Serialize>(what: &str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|_| StoreError::Unavailable(format!("could not encode {what}")))
}

/// The body stored for one write (empty for a guard, which stores nothing).
///
/// # Errors
/// [`StoreError::Unavailable`] when the row cannot be encoded.
pub(crate) fn encode_write(w: &Write) -> Result<String, StoreError> {
    match w {
        Write::InsertTask(t) | Write::UpdateTask(t) => encode("task", t),
        Write::RequireTaskOpen { .. }
        | Write::Count(_)
        | Write::RequireLiveBelow { .. }
        | Write::RequireCounter { .. } => Ok(String::new()),
        Write::InsertRequest(r) | Write::UpdateRequest(r) => encode("request", r),
        Write::InsertApproval(a) => encode("approval", a),
        Write::InsertLease(l) | Write::UpdateLease(l) => encode("lease", l),
        Write::InsertFreeze(f) | Write::UpdateFreeze(f) => encode("freeze", f),
        Write::InsertNotification(n) | Write::UpdateNotification(n) => encode("notification", n),
        Write::InsertConsoleSession(c) => encode("console session", c),
        Write::DeleteConsoleSession { .. } => Ok(String::new()),
        Write::InsertOAuth(r) | Write::UpdateOAuth(r) => encode("oauth record", r),
        Write::InsertReceivedSet(r) => encode("received set", r),
    }
}

/// The canonical body of an audit event (what the hash chain covers).
///
/// # Errors
/// [`StoreError::Unavailable`] when the event cannot be encoded.
pub(crate) fn encode_audit(e: &AuditEvent) -> Result<String, StoreError> {
    latch_core::audit::encode_event(e)
        .map_err(|_| StoreError::Unavailable("could not encode audit event".into()))
}

/// A stored JSON body as `T`.
///
/// # Errors
/// [`StoreError::Unavailable`] naming `what`; the serde error, which can quote parts of the
/// body, is not passed on.
pub(crate) fn decode<T: DeserializeOwned>(what: &str, body: &str) -> Result<T, StoreError> {
    serde_json::from_str(body)
        .map_err(|_| StoreError::Unavailable(format!("stored {what} row cannot be decoded")))
}

/// [`decode`] for every body, in order.
///
/// # Errors
/// As [`decode`], for the first body that fails.
pub(crate) fn decode_all<T: DeserializeOwned>(
    what: &str,
    bodies: Vec<String>,
) -> Result<Vec<T>, StoreError> {
    bodies.iter().map(|b| decode(what, b)).collect()
}

/// Decodes audit rows, filling the chain fields from the columns.
///
/// # Errors
/// As [`decode`].
pub(crate) fn decode_events(rows: Vec<EventRow>) -> Result<Vec<AuditEvent>, StoreError> {
    rows.into_iter()
        .map(|(seq, body, prev_hash, hash)| {
            let mut e: AuditEvent = decode("audit event", &body)?;
            e.seq = seq;
            e.prev_hash = Some(prev_hash);
            e.hash = Some(hash);
            Ok(e)
        })
        .collect()
}

/// Audit rows as exported records (bodies byte for byte as stored).
pub(crate) fn records(rows: Vec<RecordRow>) -> Vec<AuditRecord> {
    rows.into_iter()
        .map(|(seq, prev_hash, hash, body)| AuditRecord {
            seq,
            prev_hash,
            hash,
            body,
        })
        .collect()
}

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

/// A page size as the SQL `LIMIT` value.
pub(crate) fn limit(n: u32) -> i64 {
    i64::from(n)
}

/// Escapes `%`, `_` and `\` for `LIKE … ESCAPE '\'` and appends `%`.
pub(crate) fn like_prefix(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// The credential-HMAC filter of an audit query: lower-cased hex, or `Err(())` when a filter
/// was given that no stored HMAC can match (so the answer is empty without a query).
pub(crate) fn hmac_filter(credential_hmac: Option<&str>) -> Result<Option<String>, ()> {
    match credential_hmac {
        None => Ok(None),
        Some(h) if h.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(Some(h.to_ascii_lowercase())),
        Some(_) => Err(()),
    }
}

/// Fails with a conflict when a compare-and-set update matched no row.
///
/// # Errors
/// [`StoreError::Conflict`] when `rows` is 0.
pub(crate) fn cas(what: &str, id: &str, rows: u64) -> Result<(), StoreError> {
    if rows == 0 {
        Err(StoreError::Conflict(format!(
            "{what} {id} was changed concurrently or does not exist"
        )))
    } else {
        Ok(())
    }
}

/// Checks a guarded counter (`Write::RequireCounter`): an error naming it when it moved.
///
/// # Errors
/// [`StoreError::HistoryMoved`].
pub(crate) fn counter_is(
    scope: latch_core::history::CounterScope,
    subject: &str,
    name: &str,
    found: i64,
    expected: i64,
) -> Result<(), StoreError> {
    if found == expected {
        return Ok(());
    }
    Err(StoreError::HistoryMoved(format!(
        "the {} history of `{subject}` changed while this was decided (counter `{name}` is {found}, not {expected}); ask again",
        scope.as_str()
    )))
}

/// A sqlx error in words, without anything a row held. Database errors give the server's
/// message and code (names of tables, columns and constraints; PostgreSQL's `DETAIL`, which can
/// quote values, is dropped).
pub(crate) fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("{} (code {code})", db.message()),
            None => db.message().to_owned(),
        },
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_prefix_escapes_wildcards() {
        assert_eq!(like_prefix("credential."), "credential.%");
        assert_eq!(like_prefix("a%b_c\\"), "a\\%b\\_c\\\\%");
    }

    #[test]
    fn hmac_filters_are_hex_only() {
        assert_eq!(hmac_filter(None), Ok(None));
        assert_eq!(hmac_filter(Some("00AA")), Ok(Some("00aa".into())));
        assert_eq!(hmac_filter(Some("zz")), Err(()));
    }
}
