//! Counters (a task's history and the budgets, see [`latch_core::history`]) on the sqlx
//! backends: the capped upsert and the live-lease guard inside a batch's transaction, and the
//! reads the broker decides from. The SQLite group writer has its own `rusqlite` twin of the
//! writes (`sqlite/group.rs`).

use latch_core::history::{CounterDelta, CounterRow, CounterScope};
use latch_core::ports::StoreError;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, Transaction, Type};

use crate::sql::{self, Dialect, unavailable, write_error};

/// The live-lease count query of a scope.
fn live_sql(scope: CounterScope) -> &'static str {
    match scope {
        CounterScope::Task => sql::LIVE_LEASES_OF_TASK,
        CounterScope::Workload => sql::LIVE_LEASES_OF_WORKLOAD,
    }
}

/// Adds each delta in `tx`; a cap that would pass is [`StoreError::LimitReached`] (the
/// caller rolls the batch back).
///
/// # Errors
/// [`StoreError::LimitReached`], or a write error.
pub(crate) async fn apply<DB>(
    tx: &mut Transaction<'static, DB>,
    deltas: &[CounterDelta],
) -> Result<(), StoreError>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Type<DB>,
    for<'a> Option<i64>: Encode<'a, DB> + Type<DB>,
{
    for d in deltas {
        let done = sqlx::query::<DB>(sql::UPSERT_COUNTER)
            .bind(d.scope.as_str())
            .bind(d.subject.as_str())
            .bind(d.name.as_str())
            .bind(d.window_start)
            .bind(d.by)
            .bind(d.cap)
            .bind(d.at_unix_secs)
            .execute(&mut **tx)
            .await
            .map_err(|e| write_error::<DB>("count", &e))?;
        if DB::rows_affected(&done) == 0 {
            return Err(StoreError::LimitReached(d.scope, d.name.clone()));
        }
    }
    Ok(())
}

/// Fails unless fewer than `limit` leases of the scope are live, counted under the row lock
/// of the scope's `live` counter (PostgreSQL: a concurrent transaction on another replica
/// waits for this one's commit, then counts again with the new lease in view; `READ
/// COMMITTED` takes a fresh snapshot per statement).
///
/// # Errors
/// [`StoreError::LimitReached`] (counter `live`), or a write error.
pub(crate) async fn require_live_below<DB>(
    tx: &mut Transaction<'static, DB>,
    scope: CounterScope,
    subject: &str,
    limit: i64,
    now: i64,
) -> Result<(), StoreError>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
{
    sqlx::query::<DB>(sql::LOCK_LIVE_COUNTER)
        .bind(scope.as_str())
        .bind(subject)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(|e| write_error::<DB>("lock live counter", &e))?;
    let live: i64 = sqlx::query_scalar::<DB, i64>(live_sql(scope))
        .bind(subject)
        .bind(now)
        .fetch_one(&mut **tx)
        .await
        .map_err(|e| write_error::<DB>("count live leases", &e))?;
    if live >= limit {
        return Err(StoreError::LimitReached(scope, "live".into()));
    }
    Ok(())
}

/// Fails with a conflict unless the counter holds `equals` (a missing row holds 0), read
/// under a share lock where the backend locks rows.
///
/// # Errors
/// [`StoreError::Conflict`], or a write error.
pub(crate) async fn require_counter<DB>(
    tx: &mut Transaction<'static, DB>,
    (scope, subject, name): (CounterScope, &str, &str),
    equals: i64,
) -> Result<(), StoreError>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
{
    let found: Option<i64> = sqlx::query_scalar::<DB, i64>(DB::COUNTER_VALUE_LOCKED)
        .bind(scope.as_str())
        .bind(subject)
        .bind(name)
        .fetch_optional(&mut **tx)
        .await
        .map_err(|e| write_error::<DB>("check counter", &e))?;
    crate::codec::counter_is(scope, subject, name, found.unwrap_or(0), equals)
}

/// The counters of `scope` and `subject`.
///
/// # Errors
/// [`StoreError::Unavailable`].
pub(crate) async fn read<DB>(
    pool: &Pool<DB>,
    scope: CounterScope,
    subject: &str,
) -> Result<Vec<CounterRow>, StoreError>
where
    DB: Dialect,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> String: Decode<'a, DB> + Type<DB>,
    for<'a> i64: Decode<'a, DB> + Type<DB>,
{
    let rows: Vec<(String, i64, i64)> = sqlx::query_as::<DB, (String, i64, i64)>(sql::COUNTERS)
        .bind(scope.as_str())
        .bind(subject)
        .fetch_all(pool)
        .await
        .map_err(|e| unavailable::<DB>("read counters", &e))?;
    Ok(rows
        .into_iter()
        .map(|(name, window_start, count)| CounterRow {
            name,
            window_start,
            count,
        })
        .collect())
}

/// Live leases of `scope` and `subject` at `now`.
///
/// # Errors
/// [`StoreError::Unavailable`].
pub(crate) async fn live<DB>(
    pool: &Pool<DB>,
    scope: CounterScope,
    subject: &str,
    now: i64,
) -> Result<i64, StoreError>
where
    DB: Dialect,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
{
    sqlx::query_scalar::<DB, i64>(live_sql(scope))
        .bind(subject)
        .bind(now)
        .fetch_one(pool)
        .await
        .map_err(|e| unavailable::<DB>("count live leases", &e))
}
