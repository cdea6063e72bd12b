//! The transaction steps of one batch on the sqlx backends: each write (guards, counters, row
//! statements) and the audit events appended after the chain head.

use latch_core::audit::chain_hash;
use latch_core::model::AuditEvent;
use latch_core::ports::{StoreError, Write};
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Transaction, Type};

use crate::codec::{cas, encode_audit, encode_write};
use crate::sql::{self, Dialect, write_error};
use crate::statement::write_statement;

/// Applies one write in `tx`.
pub(crate) async fn apply_write<DB>(
    tx: &mut Transaction<'static, DB>,
    w: &Write,
) -> Result<(), StoreError>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> Option<&'a str>: Encode<'a, DB> + Type<DB>,
    for<'a> String: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> Option<i64>: Encode<'a, DB> + Type<DB>,
{
    match w {
        Write::Count(deltas) => return crate::counters::apply(tx, deltas).await,
        Write::RequireLiveBelow {
            scope,
            subject,
            limit,
            now_unix_secs,
        } => {
            return crate::counters::require_live_below(
                tx,
                *scope,
                subject,
                *limit,
                *now_unix_secs,
            )
            .await;
        }
        Write::RequireCounter {
            scope,
            subject,
            name,
            equals,
        } => {
            return crate::counters::require_counter(tx, (*scope, subject, name), *equals).await;
        }
        _ => {}
    }
    if let Write::RequireTaskOpen { task_id, version } = w {
        let found = sqlx::query::<DB>(DB::REQUIRE_TASK_OPEN)
            .bind(task_id.as_str())
            .bind(*version)
            .fetch_optional(&mut **tx)
            .await
            .map_err(|e| write_error::<DB>("check task", &e))?;
        return cas("task", task_id, u64::from(found.is_some()));
    }
    let Some((what, kind, cas_on, query)) = write_statement::<DB>(w, encode_write(w)?) else {
        return Ok(());
    };
    match cas_on {
        Some((id, replaced)) => {
            let done = query
                .bind(replaced)
                .execute(&mut **tx)
                .await
                .map_err(|e| write_error::<DB>(what, &e))?;
            cas(kind, id, DB::rows_affected(&done))
        }
        None => {
            query
                .execute(&mut **tx)
                .await
                .map_err(|e| write_error::<DB>(what, &e))?;
            Ok(())
        }
    }
}

/// Appends `events` after the chain head ([`Dialect::lock_chain_head`]); returns their seqs.
pub(crate) async fn append_events<DB>(
    tx: &mut Transaction<'static, DB>,
    events: &[AuditEvent],
) -> Result<Vec<i64>, StoreError>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> String: Encode<'a, DB> + Type<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Type<DB>,
{
    let bodies = events
        .iter()
        .map(encode_audit)
        .collect::<Result<Vec<_>, _>>()?;
    let (mut seq, mut prev) = DB::lock_chain_head(tx).await?;
    let mut seqs = Vec::with_capacity(events.len());
    for body in bodies {
        seq += 1;
        let hash = chain_hash(&prev, seq, &body);
        sqlx::query::<DB>(sql::INSERT_AUDIT_EVENT)
            .bind(seq)
            .bind(body)
            .bind(hash.as_str())
            .execute(&mut **tx)
            .await
            .map_err(|err| write_error::<DB>("append audit event", &err))?;
        prev = hash;
        seqs.push(seq);
    }
    DB::after_appends(tx, seq, &prev).await?;
    Ok(seqs)
}
