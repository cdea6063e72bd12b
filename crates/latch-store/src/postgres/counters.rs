//! Counter increments on PostgreSQL in one statement: the capped upsert of
//! [`crate::sql::UPSERT_COUNTER`] over `unnest` arrays, instead of one round trip per counter.

use std::collections::HashSet;

use latch_core::history::CounterDelta;
use latch_core::ports::StoreError;
use sqlx::{Postgres, Transaction};

use super::write_error;

/// The capped upsert of [`crate::sql::UPSERT_COUNTER`], one row per array element; returns the
/// keys it wrote (a row whose cap would pass is not written, so not returned).
const UPSERT_COUNTERS: &str = "INSERT INTO counters \
    (scope, subject, name, window_start, count, cap, updated_at) \
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], \
    $6::bigint[], $7::bigint[]) \
    ON CONFLICT (scope, subject, name) DO UPDATE SET \
    count = CASE WHEN counters.window_start = excluded.window_start \
    THEN counters.count + excluded.count ELSE excluded.count END, \
    window_start = excluded.window_start, cap = excluded.cap, updated_at = excluded.updated_at \
    WHERE excluded.cap IS NULL OR counters.window_start <> excluded.window_start \
    OR counters.count + excluded.count <= excluded.cap \
    RETURNING scope, subject, name";

/// Adds each delta in `tx` with one statement; a cap that would pass is
/// [`StoreError::LimitReached`] naming the first such counter (the caller rolls the batch
/// back). Deltas naming one counter twice take the per-counter path (one statement cannot
/// update a row twice).
///
/// # Errors
/// [`StoreError::LimitReached`], or a write error.
pub(super) async fn apply(
    tx: &mut Transaction<'static, Postgres>,
    deltas: &[CounterDelta],
) -> Result<(), StoreError> {
    let key = |d: &CounterDelta| (d.scope.as_str(), d.subject.clone(), d.name.clone());
    let distinct: HashSet<_> = deltas.iter().map(key).collect();
    if distinct.len() != deltas.len() {
        return crate::counters::apply::<Postgres>(tx, deltas).await;
    }
    // Rows are locked in this order: sorted, so two transactions lock shared rows alike.
    let mut sorted: Vec<&CounterDelta> = deltas.iter().collect();
    sorted.sort_by(|a, b| key(a).cmp(&key(b)));
    let written: Vec<(String, String, String)> = sqlx::query_as(UPSERT_COUNTERS)
        .bind(sorted.iter().map(|d| d.scope.as_str()).collect::<Vec<_>>())
        .bind(
            sorted
                .iter()
                .map(|d| d.subject.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(sorted.iter().map(|d| d.name.as_str()).collect::<Vec<_>>())
        .bind(sorted.iter().map(|d| d.window_start).collect::<Vec<_>>())
        .bind(sorted.iter().map(|d| d.by).collect::<Vec<_>>())
        .bind(sorted.iter().map(|d| d.cap).collect::<Vec<_>>())
        .bind(sorted.iter().map(|d| d.at_unix_secs).collect::<Vec<_>>())
        .fetch_all(&mut **tx)
        .await
        .map_err(|e| write_error("count", &e))?;
    if written.len() == deltas.len() {
        return Ok(());
    }
    let written: HashSet<(String, String, String)> = written.into_iter().collect();
    let refused = deltas.iter().find(|d| {
        !written.contains(&(
            d.scope.as_str().to_owned(),
            d.subject.clone(),
            d.name.clone(),
        ))
    });
    match refused {
        Some(d) => Err(StoreError::LimitReached(d.scope, d.name.clone())),
        None => Err(StoreError::Unavailable(
            "postgres: count: fewer rows written than asked".into(),
        )),
    }
}
