//! Audit retention ([`Store::prune_audit_before`](latch_core::ports::Store::prune_audit_before)):
//! a prefix of the audit trail deleted up to a cut signed by the broker, in one write
//! transaction under the chain head's lock, after checking that what goes is still the chain
//! that was written; the record at the cut stays as the stored chain's start, and the cut is
//! recorded in the chain.

use latch_core::audit::{AuditCheckpoint, AuditRecord, GENESIS_HASH, chain_hash};
use latch_core::model::AuditEvent;
use latch_core::ports::StoreError;
use serde_json::json;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Transaction, Type};

use crate::batch::append_events;
use crate::codec::{self, CheckpointRow, RecordRow};
use crate::sql::{self, Dialect, write_error};
use crate::store::SqlStore;

/// Most records one transaction deletes (the broker cuts within 2,000 of the oldest).
pub(crate) const MAX_PRUNE_RECORDS: i64 = 50_000;
/// The oldest audit record kept.
const AUDIT_FIRST: &str = "SELECT seq FROM audit_events ORDER BY seq LIMIT 1";
/// `$1` the lowest seq, `$2` the highest: the stored checkpoints between them.
const CHECKPOINTS_BETWEEN: &str = "SELECT seq, hash, at_unix_secs, kid, jws \
     FROM audit_checkpoints WHERE seq >= $1 AND seq <= $2 ORDER BY seq";
/// Stores the signed cut as the checkpoint of its record, replacing a periodic one of the same
/// record (same seq and hash) so the stored chain's first record is sealed by the cut itself.
const UPSERT_CUT: &str = "INSERT INTO audit_checkpoints (seq, hash, at_unix_secs, kid, jws) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (seq) DO UPDATE SET at_unix_secs = excluded.at_unix_secs, \
     kid = excluded.kid, jws = excluded.jws WHERE audit_checkpoints.hash = excluded.hash";

/// An audit chain alarm: nothing is pruned.
fn alarm(why: &str) -> StoreError {
    StoreError::Unavailable(format!("audit chain alarm: {why}; nothing pruned"))
}

/// Checks `records` (seq `first` to the cut, in order) are the chain as written: gapless, each
/// hash over its record, each linked to the one before (seq 1 to the genesis hash), and every
/// stored checkpoint among them matching its record.
fn check_segment(
    records: &[AuditRecord],
    (first, cut): (i64, &AuditCheckpoint),
    checkpoints: &[AuditCheckpoint],
) -> Result<(), StoreError> {
    let mut prev: Option<&AuditRecord> = None;
    for (want, r) in (first..).zip(records) {
        if r.seq != want {
            return Err(alarm(&format!("seq {want} is missing")));
        }
        let linked = match prev {
            Some(p) => r.prev_hash == p.hash,
            None => r.seq != 1 || r.prev_hash == GENESIS_HASH,
        };
        if !linked || chain_hash(&r.prev_hash, r.seq, &r.body) != r.hash {
            return Err(alarm(&format!(
                "seq {} is not the record that was written",
                r.seq
            )));
        }
        prev = Some(r);
    }
    match prev {
        Some(last) if last.seq == cut.seq && last.hash == cut.hash => {}
        _ => return Err(alarm(&format!("seq {} does not match the cut", cut.seq))),
    }
    for cp in checkpoints {
        let at = usize::try_from(cp.seq - first)
            .ok()
            .and_then(|i| records.get(i));
        if at.is_none_or(|r| r.hash != cp.hash) {
            return Err(alarm(&format!(
                "seq {} does not match its checkpoint",
                cp.seq
            )));
        }
    }
    Ok(())
}

impl<DB> SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> String: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
{
    /// See [`Store::prune_audit_before`](latch_core::ports::Store::prune_audit_before).
    pub(crate) async fn prune_audit(
        &self,
        cut: &AuditCheckpoint,
        record: AuditEvent,
    ) -> Result<u64, StoreError> {
        let mut tx = DB::begin_write(self).await?;
        // The chain head's lock first: prunes, and appends, wait for each other.
        DB::lock_chain_head(&mut tx).await?;
        let first: Option<(i64,)> = sqlx::query_as::<DB, (i64,)>(AUDIT_FIRST)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| write_error::<DB>("prune audit: first record", &e))?;
        let Some((first,)) = first.filter(|(f,)| *f < cut.seq) else {
            return Ok(0);
        };
        if cut.seq - first > MAX_PRUNE_RECORDS {
            return Err(StoreError::Unavailable(format!(
                "prune audit: at most {MAX_PRUNE_RECORDS} records a transaction"
            )));
        }
        let (records, checkpoints) = read_segment(&mut tx, first, cut.seq).await?;
        check_segment(&records, (first, cut), &checkpoints)?;
        let prev = &records[records.len() - 2].hash; // `first < cut.seq`: two records at least
        sqlx::query::<DB>(DB::AUDIT_SET_PREV_HASH)
            .bind(cut.seq)
            .bind(prev.as_str())
            .execute(&mut *tx)
            .await
            .map_err(|e| write_error::<DB>("prune audit: keep the previous hash", &e))?;
        let deleted = sqlx::query::<DB>(DB::AUDIT_DELETE_BEFORE)
            .bind(cut.seq)
            .execute(&mut *tx)
            .await
            .map(|d| DB::rows_affected(&d))
            .map_err(|e| write_error::<DB>("prune audit", &e))?;
        let stored = sqlx::query::<DB>(UPSERT_CUT)
            .bind(cut.seq)
            .bind(cut.hash.as_str())
            .bind(cut.at_unix_secs)
            .bind(cut.kid.as_str())
            .bind(cut.jws.as_str())
            .execute(&mut *tx)
            .await
            .map_err(|e| write_error::<DB>("prune audit: store the cut", &e))?;
        if DB::rows_affected(&stored) != 1 {
            return Err(alarm(&format!(
                "the checkpoint at seq {} differs from the cut",
                cut.seq
            )));
        }
        let record = record.detail(json!({
            "before_seq": cut.seq, "anchor_hash": cut.hash, "first_seq": first,
            "records": deleted, "cut": cut,
        }));
        append_events::<DB>(&mut tx, &[record]).await?;
        tx.commit()
            .await
            .map_err(|e| write_error::<DB>("commit", &e))?;
        Ok(deleted)
    }
}

/// The records `first..=last` (previous hashes as reads derive them) and the stored
/// checkpoints among them, read in the prune's transaction.
async fn read_segment<DB>(
    tx: &mut Transaction<'static, DB>,
    first: i64,
    last: i64,
) -> Result<(Vec<AuditRecord>, Vec<AuditCheckpoint>), StoreError>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'a> String: Decode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
{
    let rows = sqlx::query_as::<DB, RecordRow>(sql::AUDIT_RECORDS)
        .bind(first - 1)
        .bind(last - first + 1)
        .fetch_all(&mut **tx)
        .await
        .map_err(|e| write_error::<DB>("prune audit: read the records", &e))?;
    let cps = sqlx::query_as::<DB, CheckpointRow>(CHECKPOINTS_BETWEEN)
        .bind(first)
        .bind(last)
        .fetch_all(&mut **tx)
        .await
        .map_err(|e| write_error::<DB>("prune audit: read the checkpoints", &e))?;
    Ok((
        codec::records(rows),
        cps.into_iter().map(codec::checkpoint).collect(),
    ))
}
