//! Each [`Write`] as its SQL statement with the row bound (the sqlx side; the SQLite group
//! writer binds the same text with `rusqlite`).

use latch_core::ports::Write;
use sqlx::{Encode, IntoArguments, Type};

use crate::sql::{self, Dialect};

/// A write as its statement: (what failed, for errors; the row kind, for conflicts; the
/// compare-and-set key and replaced version of an update; the query with the row bound).
/// `None` for a guard, which writes nothing.
pub(crate) type WriteStatement<'q, DB> = (
    &'static str,
    &'static str,
    Option<(&'q str, i64)>,
    sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>,
);

/// The statement of one row write, with its body.
pub(crate) fn write_statement<DB>(w: &Write, body: String) -> Option<WriteStatement<'_, DB>>
where
    DB: Dialect,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> Option<&'a str>: Encode<'a, DB> + Type<DB>,
    for<'a> String: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Type<DB>,
    for<'a> Option<i64>: Encode<'a, DB> + Type<DB>,
{
    let statement = match w {
        Write::InsertTask(t) | Write::UpdateTask(t) => {
            let update = matches!(w, Write::UpdateTask(_));
            let q = sqlx::query::<DB>(if update {
                sql::UPDATE_TASK
            } else {
                sql::INSERT_TASK
            })
            .bind(t.id.as_str())
            .bind(t.owner.id.as_str())
            .bind(t.state.as_str())
            .bind(t.created_at_unix_secs)
            .bind(t.expires_at_unix_secs)
            .bind(t.version)
            .bind(body);
            let cas_on = update.then(|| (t.id.as_str(), t.version - 1));
            (
                if update { "update task" } else { "insert task" },
                "task",
                cas_on,
                q,
            )
        }
        Write::InsertRequest(r) | Write::UpdateRequest(r) => {
            let update = matches!(w, Write::UpdateRequest(_));
            let q = sqlx::query::<DB>(if update {
                sql::UPDATE_REQUEST
            } else {
                sql::INSERT_REQUEST
            })
            .bind(r.id.as_str())
            .bind(r.task_id.as_str())
            .bind(r.state.as_str())
            .bind(r.created_at_unix_secs)
            .bind(r.expires_at_unix_secs)
            .bind(r.version)
            .bind(body);
            let cas_on = update.then(|| (r.id.as_str(), r.version - 1));
            let what = if update {
                "update request"
            } else {
                "insert request"
            };
            (what, "request", cas_on, q)
        }
        Write::InsertApproval(a) => {
            let q = sqlx::query::<DB>(sql::INSERT_APPROVAL)
                .bind(a.id.as_str())
                .bind(a.request_id.as_str())
                .bind(a.approver.as_str())
                .bind(a.created_at_unix_secs)
                .bind(body);
            ("insert approval", "approval", None, q)
        }
        Write::InsertLease(l) | Write::UpdateLease(l) => {
            let update = matches!(w, Write::UpdateLease(_));
            let q = sqlx::query::<DB>(if update {
                DB::UPDATE_LEASE
            } else {
                sql::INSERT_LEASE
            })
            .bind(l.id.as_str())
            .bind(l.task_id.as_str())
            .bind(l.request_id.as_str())
            .bind(l.state.as_str())
            .bind(l.issued_at_unix_secs)
            .bind(l.expires_at_unix_secs)
            .bind(l.next_revoke_at_unix_secs)
            .bind(l.credential_hmac.as_deref())
            .bind(l.version)
            .bind(body);
            let cas_on = update.then(|| (l.id.as_str(), l.version - 1));
            (
                if update {
                    "update lease"
                } else {
                    "insert lease"
                },
                "lease",
                cas_on,
                q,
            )
        }
        Write::InsertNotification(_)
        | Write::UpdateNotification(_)
        | Write::InsertFreeze(_)
        | Write::UpdateFreeze(_)
        | Write::InsertConsoleSession(_)
        | Write::DeleteConsoleSession { .. }
        | Write::InsertOAuth(_)
        | Write::UpdateOAuth(_)
        | Write::InsertReceivedSet(_) => return side_statement(w, body),
        Write::RequireTaskOpen { .. }
        | Write::Count(_)
        | Write::RequireLiveBelow { .. }
        | Write::RequireCounter { .. } => {
            return None;
        }
    };
    Some(statement)
}

/// The statements of the side tables (notifications, freezes, console sessions): the rest of
/// [`write_statement`].
fn side_statement<DB>(w: &Write, body: String) -> Option<WriteStatement<'_, DB>>
where
    DB: Dialect,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> Option<&'a str>: Encode<'a, DB> + Type<DB>,
    for<'a> String: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Type<DB>,
    for<'a> Option<i64>: Encode<'a, DB> + Type<DB>,
{
    let statement = match w {
        Write::InsertNotification(n) | Write::UpdateNotification(n) => {
            let update = matches!(w, Write::UpdateNotification(_));
            let q = sqlx::query::<DB>(if update {
                sql::UPDATE_NOTIFICATION
            } else {
                sql::INSERT_NOTIFICATION
            })
            .bind(n.id.as_str())
            .bind(n.notice.request_id.as_str())
            .bind(n.state.as_str())
            .bind(n.next_attempt_at_unix_secs)
            .bind(n.version)
            .bind(body);
            let cas_on = update.then(|| (n.id.as_str(), n.version - 1));
            let what = if update {
                "update notification"
            } else {
                "insert notification"
            };
            (what, "notification", cas_on, q)
        }
        Write::InsertFreeze(f) | Write::UpdateFreeze(f) => {
            let update = matches!(w, Write::UpdateFreeze(_));
            let q = sqlx::query::<DB>(if update {
                sql::UPDATE_FREEZE
            } else {
                sql::INSERT_FREEZE
            })
            .bind(f.id.as_str())
            .bind(f.state.as_str())
            .bind(f.created_at_unix_secs)
            .bind(f.version)
            .bind(body);
            let cas_on = update.then(|| (f.id.as_str(), f.version - 1));
            let what = if update {
                "update freeze"
            } else {
                "insert freeze"
            };
            (what, "freeze", cas_on, q)
        }
        Write::InsertConsoleSession(c) => {
            let q = sqlx::query::<DB>(sql::INSERT_CONSOLE_SESSION)
                .bind(c.id_hmac.as_str())
                .bind(c.human_id.as_str())
                .bind(c.expires_at_unix_secs)
                .bind(body);
            ("insert console session", "console session", None, q)
        }
        Write::DeleteConsoleSession { id_hmac } => {
            let q = sqlx::query::<DB>(sql::DELETE_CONSOLE_SESSION).bind(id_hmac.as_str());
            ("delete console session", "console session", None, q)
        }
        Write::InsertOAuth(r) | Write::UpdateOAuth(r) => {
            let update = matches!(w, Write::UpdateOAuth(_));
            let q = sqlx::query::<DB>(if update {
                sql::UPDATE_OAUTH
            } else {
                sql::INSERT_OAUTH
            })
            .bind(r.key())
            .bind(r.kind())
            .bind(r.grant_id().to_owned())
            .bind(r.human_id().to_owned())
            .bind(r.expires_at_unix_secs())
            .bind(r.version())
            .bind(body);
            // The key is owned here, so the compare-and-set names the row kind only.
            let cas_on = update.then_some(("oauth record", r.version() - 1));
            let what = if update {
                "update oauth record"
            } else {
                "insert oauth record"
            };
            (what, "oauth record", cas_on, q)
        }
        Write::InsertReceivedSet(r) => {
            let q = sqlx::query::<DB>(sql::INSERT_RECEIVED_SET)
                .bind(r.key.as_str())
                .bind(r.issuer.as_str())
                .bind(r.expires_at_unix_secs)
                .bind(body);
            ("insert received set", "received set", None, q)
        }
        // Written by `write_statement` itself.
        _ => return None,
    };
    Some(statement)
}
