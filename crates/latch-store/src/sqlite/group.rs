//! The group-commit writer of a file database.
//!
//! One OS thread owns a `rusqlite` connection and is the only path for [`Store::apply`]
//! (`crate::SqliteStore`'s `put_key_blob_if_absent` and the migrations still use sqlx; the
//! busy timeout orders them against this thread). A caller hands its whole batch over in one
//! channel send and awaits one reply, instead of one worker-thread round trip per statement.
//!
//! The thread blocks for a batch, then drains whatever else is queued (up to [`MAX_GROUP`]) and
//! commits the group in one `BEGIN IMMEDIATE … COMMIT` — one fsync — with each batch inside its
//! own `SAVEPOINT`. A batch that fails (compare-and-set, unique key, foreign key, guard) is rolled
//! back to its savepoint and answered with its own error; the others are unaffected. Replies are
//! sent only after `COMMIT` succeeded, so nothing is acknowledged that is not durable.
//!
//! A caller waits at most the store's deadline. A batch whose caller gave up before the thread
//! took it (after `BEGIN IMMEDIATE`, which may wait for another process's lock) is skipped,
//! never written, and the caller answers [`StoreError::Unavailable`]; once taken it is
//! committed (or not) regardless, and the caller that gave up answers
//! [`StoreError::OutcomeUnknown`]. One atomic per batch decides which ([`Handoff`]).
//!
//! [`Store::apply`]: latch_core::ports::Store::apply

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use latch_core::audit::{GENESIS_HASH, chain_hash};
use latch_core::history::{CounterDelta, CounterScope};
use latch_core::model::Lease;
use latch_core::notify::Notification;
use latch_core::ports::{StoreError, Write, WriteBatch};
use rusqlite::{Connection, OpenFlags, OptionalExtension, ToSql, params};
use tokio::sync::oneshot;

use crate::codec::{cas, encode_audit, encode_write};
use crate::handoff::{GroupStats, Handoff};
use crate::sql::{self, numbered_for_sqlite};

/// Most batches committed in one transaction.
const MAX_GROUP: usize = 128;

type Reply = oneshot::Sender<Result<Vec<i64>, StoreError>>;

/// A batch with its JSON bodies already encoded (on the caller's thread, outside the serial
/// section): `bodies[i]` belongs to `batch.writes[i]` (empty for a guard), `audit_bodies[i]` to
/// `batch.audit[i]`.
struct Job {
    batch: WriteBatch,
    bodies: Vec<String>,
    audit_bodies: Vec<String>,
    reply: Reply,
    /// Taken by the writer holding the write lock, or abandoned by its caller first.
    handoff: Handoff,
}

struct Running {
    jobs: mpsc::Sender<Job>,
    thread: JoinHandle<()>,
}

/// Handle to the writer thread. The thread stops when this is closed or dropped.
pub(super) struct GroupWriter {
    running: Mutex<Option<Running>>,
}

impl GroupWriter {
    /// Opens a connection to the (existing, migrated) database file, waiting at most
    /// `busy_timeout` on another process's lock, and starts the thread.
    pub(super) async fn start(path: &Path, busy_timeout: Duration) -> Result<Self, StoreError> {
        let path: PathBuf = path.to_owned();
        let conn = tokio::task::spawn_blocking(move || open(&path, busy_timeout))
            .await
            .map_err(|_| StoreError::Unavailable("sqlite: open writer: task failed".into()))??;
        let (jobs, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("latch-sqlite-writer".into())
            .spawn(move || run(conn, rx))
            .map_err(|_| StoreError::Unavailable("sqlite: could not start writer thread".into()))?;
        Ok(Self {
            running: Mutex::new(Some(Running { jobs, thread })),
        })
    }

    /// Commits `batch` (in a group with whatever else is queued) and returns its audit seqs,
    /// waiting at most `deadline` (see the module docs for what a caller that gives up answers).
    pub(super) async fn apply(
        &self,
        batch: WriteBatch,
        deadline: Duration,
    ) -> Result<Vec<i64>, StoreError> {
        let bodies = batch
            .writes
            .iter()
            .map(encode_write)
            .collect::<Result<Vec<_>, _>>()?;
        let audit_bodies = batch
            .audit
            .iter()
            .map(encode_audit)
            .collect::<Result<Vec<_>, _>>()?;
        let (reply, answer) = oneshot::channel();
        let handoff = Handoff::default();
        let job = Job {
            batch,
            bodies,
            audit_bodies,
            reply,
            handoff: handoff.clone(),
        };
        {
            let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(r) = running.as_ref() else {
                return Err(closed());
            };
            r.jobs.send(job).map_err(|_| closed())?;
        }
        handoff.answer(answer, "sqlite", deadline).await
    }

    /// Stops the thread after the batches already queued, and waits for it.
    pub(super) async fn close(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(Running { jobs, thread }) = running {
            drop(jobs);
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

fn closed() -> StoreError {
    StoreError::Unavailable("sqlite: store is closed".into())
}

fn open(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| unavailable("open writer", &e))?;
    conn.busy_timeout(busy_timeout)
        .map_err(|e| unavailable("set busy timeout", &e))?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(|e| unavailable("set journal mode", &e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unavailable(format!(
            "sqlite: journal mode is {mode}, expected wal"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(|e| unavailable("set synchronous", &e))?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(|e| unavailable("enable foreign keys", &e))?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// The writer thread: one group per wake-up until every sender is gone.
fn run(conn: Connection, jobs: mpsc::Receiver<Job>) {
    let stats = GroupStats::default();
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let results = {
            let refs: Vec<&Job> = group.iter().collect();
            commit_group(&conn, &refs, &stats)
        };
        for (job, result) in group.into_iter().zip(results) {
            // The caller may have gone away; its batch is committed (or not) regardless.
            let _ = job.reply.send(result);
        }
    }
}

fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

fn rollback(conn: &Connection) {
    if !conn.is_autocommit() {
        let _ = exec(conn, "ROLLBACK");
    }
}

/// Commits `group` in one transaction; one result per batch, in order.
fn commit_group(
    conn: &Connection,
    group: &[&Job],
    stats: &GroupStats,
) -> Vec<Result<Vec<i64>, StoreError>> {
    let all = |e: StoreError| -> Vec<Result<Vec<i64>, StoreError>> {
        group.iter().map(|_| Err(e.clone())).collect()
    };
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        rollback(conn);
        return all(unavailable("begin transaction", &e));
    }
    let mut results = Vec::with_capacity(group.len());
    for job in group {
        // Taken only now that the write lock is held (waiting for it can take up to the busy
        // timeout): a caller that gave up meanwhile gets its batch dropped unwritten.
        if !job.handoff.take() {
            results.push(Err(StoreError::Unavailable(
                "sqlite: apply: abandoned by its caller".into(),
            )));
            continue;
        }
        if let Err(e) = exec(conn, "SAVEPOINT b") {
            rollback(conn);
            return all(unavailable("savepoint", &e));
        }
        match apply_batch(conn, job) {
            Ok(seqs) => {
                if let Err(e) = exec(conn, "RELEASE b") {
                    rollback(conn);
                    return all(unavailable("release savepoint", &e));
                }
                results.push(Ok(seqs));
            }
            Err(err) => {
                if let Err(e) = exec(conn, "ROLLBACK TO b").and_then(|()| exec(conn, "RELEASE b")) {
                    rollback(conn);
                    return all(unavailable("roll back to savepoint", &e));
                }
                results.push(Err(err));
            }
        }
    }
    match exec(conn, "COMMIT") {
        Ok(()) => {
            stats.committed(results.iter().filter(|r| r.is_ok()).count());
            results
        }
        Err(e) => {
            rollback(conn);
            if group.len() > 1 && is_constraint(&e) {
                // A deferred constraint the per-batch checks did not catch: find the culprit by
                // committing each batch on its own.
                return group
                    .iter()
                    .flat_map(|job| commit_group(conn, std::slice::from_ref(job), stats))
                    .collect();
            }
            let err = write_error("commit", &e);
            results
                .into_iter()
                .map(|r| r.and(Err(err.clone())))
                .collect()
        }
    }
}

/// Applies one batch inside the open transaction (the caller handles the savepoint).
fn apply_batch(conn: &Connection, job: &Job) -> Result<Vec<i64>, StoreError> {
    for (w, body) in job.batch.writes.iter().zip(&job.bodies) {
        apply_write(conn, w, body)?;
    }
    // Foreign keys are DEFERRABLE INITIALLY DEFERRED, i.e. checked at COMMIT, which here ends
    // the whole group: check this batch's references now, after all its writes (so their order
    // inside the batch still does not matter), as the COMMIT of a batch of its own would.
    for w in &job.batch.writes {
        check_references(conn, w)?;
    }
    let mut seqs = Vec::with_capacity(job.batch.audit.len());
    if job.batch.audit.is_empty() {
        return Ok(seqs);
    }
    // The chain head as of this savepoint: a batch rolled back leaves no trace in it.
    let (mut seq, mut prev) = conn
        .prepare_cached(sql::AUDIT_TAIL)
        .and_then(|mut s| {
            s.query_row([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
                .optional()
        })
        .map_err(|err| write_error("read audit chain head", &err))?
        .unwrap_or_else(|| (0, GENESIS_HASH.to_owned()));
    for body in &job.audit_bodies {
        seq += 1;
        let hash = chain_hash(&prev, seq, body);
        execute(
            conn,
            "append audit event",
            sql::INSERT_AUDIT_EVENT,
            params![seq, body, hash],
        )?;
        prev = hash;
        seqs.push(seq);
    }
    Ok(seqs)
}

/// Runs one of the shared statements of [`crate::sql`] (`$n` placeholders, bound by position).
fn execute(
    conn: &Connection,
    what: &str,
    sql: &'static str,
    params: impl rusqlite::Params,
) -> Result<usize, StoreError> {
    conn.prepare_cached(&numbered_for_sqlite(sql))
        .and_then(|mut s| s.execute(params))
        .map_err(|e| write_error(what, &e))
}

fn apply_write(conn: &Connection, w: &Write, body: &str) -> Result<(), StoreError> {
    match w {
        Write::InsertTask(t) => {
            execute(
                conn,
                "insert task",
                sql::INSERT_TASK,
                params![
                    t.id,
                    t.owner.id,
                    t.state.as_str(),
                    t.created_at_unix_secs,
                    t.expires_at_unix_secs,
                    t.version,
                    body
                ],
            )?;
        }
        Write::UpdateTask(t) => {
            let n = execute(
                conn,
                "update task",
                sql::UPDATE_TASK,
                params![
                    t.id,
                    t.owner.id,
                    t.state.as_str(),
                    t.created_at_unix_secs,
                    t.expires_at_unix_secs,
                    t.version,
                    body,
                    t.version - 1
                ],
            )?;
            cas("task", &t.id, n as u64)?;
        }
        Write::RequireTaskOpen { task_id, version } => {
            let n: i64 = conn
                .prepare_cached(
                    "SELECT COUNT(*) FROM tasks WHERE id = ?1 AND version = ?2 AND state = 'open'",
                )
                .and_then(|mut s| s.query_row(params![task_id, version], |r| r.get(0)))
                .map_err(|e| write_error("check task", &e))?;
            cas("task", task_id, n as u64)?;
        }
        Write::InsertRequest(r) => {
            execute(
                conn,
                "insert request",
                sql::INSERT_REQUEST,
                params![
                    r.id,
                    r.task_id,
                    r.state.as_str(),
                    r.created_at_unix_secs,
                    r.expires_at_unix_secs,
                    r.version,
                    body
                ],
            )?;
        }
        Write::UpdateRequest(r) => {
            let n = execute(
                conn,
                "update request",
                sql::UPDATE_REQUEST,
                params![
                    r.id,
                    r.task_id,
                    r.state.as_str(),
                    r.created_at_unix_secs,
                    r.expires_at_unix_secs,
                    r.version,
                    body,
                    r.version - 1
                ],
            )?;
            cas("request", &r.id, n as u64)?;
        }
        Write::InsertApproval(a) => {
            execute(
                conn,
                "insert approval",
                sql::INSERT_APPROVAL,
                params![a.id, a.request_id, a.approver, a.created_at_unix_secs, body],
            )?;
        }
        Write::InsertLease(l) | Write::UpdateLease(l) => {
            apply_lease(conn, l, body, matches!(w, Write::UpdateLease(_)))?;
        }
        Write::InsertFreeze(f) | Write::UpdateFreeze(f) => {
            apply_freeze(conn, f, body, matches!(w, Write::UpdateFreeze(_)))?;
        }
        Write::InsertNotification(n) | Write::UpdateNotification(n) => {
            apply_notification(conn, n, body, matches!(w, Write::UpdateNotification(_)))?;
        }
        Write::InsertConsoleSession(c) => {
            execute(
                conn,
                "insert console session",
                sql::INSERT_CONSOLE_SESSION,
                params![c.id_hmac, c.human_id, c.expires_at_unix_secs, body],
            )?;
        }
        Write::DeleteConsoleSession { id_hmac } => {
            execute(
                conn,
                "delete console session",
                sql::DELETE_CONSOLE_SESSION,
                params![id_hmac],
            )?;
        }
        Write::InsertOAuth(r) | Write::UpdateOAuth(r) => {
            apply_oauth(conn, r, body, matches!(w, Write::UpdateOAuth(_)))?;
        }
        Write::InsertReceivedSet(r) => apply_received_set(conn, r, body)?,
        Write::Count(_) | Write::RequireLiveBelow { .. } | Write::RequireCounter { .. } => {
            apply_counting(conn, w)?;
        }
    }
    Ok(())
}

/// The counter writes: capped increments and the live-lease guard.
fn apply_counting(conn: &Connection, w: &Write) -> Result<(), StoreError> {
    match w {
        Write::Count(deltas) => apply_counters(conn, deltas),
        Write::RequireLiveBelow {
            scope,
            subject,
            limit,
            now_unix_secs,
        } => require_live_below(conn, *scope, subject, *limit, *now_unix_secs),
        Write::RequireCounter {
            scope,
            subject,
            name,
            equals,
        } => {
            // One writer: the read sees every earlier batch of the group.
            let count: Option<i64> = conn
                .prepare_cached(&numbered_for_sqlite(sql::COUNTER_VALUE))
                .and_then(|mut s| {
                    s.query_row(params![scope.as_str(), subject, name], |r| r.get(0))
                        .optional()
                })
                .map_err(|e| write_error("check counter", &e))?;
            crate::codec::counter_is(*scope, subject, name, count.unwrap_or(0), *equals)
        }
        _ => Ok(()),
    }
}

/// Fails unless fewer than `limit` leases of the scope are live. One writer: no lock to take;
/// the count sees every earlier batch of the group.
fn require_live_below(
    conn: &Connection,
    scope: CounterScope,
    subject: &str,
    limit: i64,
    now: i64,
) -> Result<(), StoreError> {
    let sql = match scope {
        CounterScope::Task => sql::LIVE_LEASES_OF_TASK,
        CounterScope::Workload => sql::LIVE_LEASES_OF_WORKLOAD,
    };
    let live: i64 = conn
        .prepare_cached(&numbered_for_sqlite(sql))
        .and_then(|mut s| s.query_row(params![subject, now], |r| r.get(0)))
        .map_err(|e| write_error("count live leases", &e))?;
    if live >= limit {
        return Err(StoreError::LimitReached(scope, "live".into()));
    }
    Ok(())
}

/// Adds each delta to its counter; a cap that would pass fails the batch.
fn apply_counters(conn: &Connection, deltas: &[CounterDelta]) -> Result<(), StoreError> {
    for d in deltas {
        let n = execute(
            conn,
            "count",
            sql::UPSERT_COUNTER,
            params![
                d.scope.as_str(),
                d.subject,
                d.name,
                d.window_start,
                d.by,
                d.cap,
                d.at_unix_secs
            ],
        )?;
        if n == 0 {
            return Err(StoreError::LimitReached(d.scope, d.name.clone()));
        }
    }
    Ok(())
}

/// Inserts the record of a received Security Event Token (an existing key: a replay).
fn apply_received_set(
    conn: &Connection,
    r: &latch_core::ssf::ReceivedSetRecord,
    body: &str,
) -> Result<(), StoreError> {
    execute(
        conn,
        "insert received set",
        sql::INSERT_RECEIVED_SET,
        params![r.key, r.issuer, r.expires_at_unix_secs, body],
    )?;
    Ok(())
}

/// Inserts an OAuth record, or updates it compare-and-set on its version.
fn apply_oauth(
    conn: &Connection,
    r: &latch_core::oauth_grant::OAuthRecord,
    body: &str,
    update: bool,
) -> Result<(), StoreError> {
    let key = r.key();
    let (kind, grant, human) = (r.kind(), r.grant_id(), r.human_id());
    let (expires, version, replaced) = (r.expires_at_unix_secs(), r.version(), r.version() - 1);
    let row: [&dyn ToSql; 8] = [
        &key, &kind, &grant, &human, &expires, &version, &body, &replaced,
    ];
    if !update {
        execute(conn, "insert oauth record", sql::INSERT_OAUTH, &row[..7])?;
        return Ok(());
    }
    let n = execute(conn, "update oauth record", sql::UPDATE_OAUTH, &row[..])?;
    cas("oauth record", r.kind(), n as u64)
}

/// Inserts a freeze, or updates it compare-and-set on its version.
fn apply_freeze(
    conn: &Connection,
    f: &latch_core::freeze::Freeze,
    body: &str,
    update: bool,
) -> Result<(), StoreError> {
    let state = f.state.as_str();
    let replaced = f.version - 1;
    let row: [&dyn ToSql; 6] = [
        &f.id,
        &state,
        &f.created_at_unix_secs,
        &f.version,
        &body,
        &replaced,
    ];
    if !update {
        execute(conn, "insert freeze", sql::INSERT_FREEZE, &row[..5])?;
        return Ok(());
    }
    let n = execute(conn, "update freeze", sql::UPDATE_FREEZE, &row[..])?;
    cas("freeze", &f.id, n as u64)
}

/// Inserts a lease, or updates it compare-and-set on its version.
fn apply_lease(conn: &Connection, l: &Lease, body: &str, update: bool) -> Result<(), StoreError> {
    let state = l.state.as_str();
    let hmac = l.credential_hmac.as_deref();
    let replaced = l.version - 1;
    let row: [&dyn ToSql; 11] = [
        &l.id,
        &l.task_id,
        &l.request_id,
        &state,
        &l.issued_at_unix_secs,
        &l.expires_at_unix_secs,
        &l.next_revoke_at_unix_secs,
        &hmac,
        &l.version,
        &body,
        &replaced,
    ];
    if !update {
        execute(conn, "insert lease", sql::INSERT_LEASE, &row[..10])?;
        return Ok(());
    }
    let n = execute(conn, "update lease", sql::UPDATE_LEASE, &row[..])?;
    cas("lease", &l.id, n as u64)
}

/// Inserts an outbox row, or updates it compare-and-set on its version.
fn apply_notification(
    conn: &Connection,
    n: &Notification,
    body: &str,
    update: bool,
) -> Result<(), StoreError> {
    let state = n.state.as_str();
    let replaced = n.version - 1;
    let row: [&dyn ToSql; 7] = [
        &n.id,
        &n.notice.request_id,
        &state,
        &n.next_attempt_at_unix_secs,
        &n.version,
        &body,
        &replaced,
    ];
    if !update {
        execute(
            conn,
            "insert notification",
            sql::INSERT_NOTIFICATION,
            &row[..6],
        )?;
        return Ok(());
    }
    let count = execute(
        conn,
        "update notification",
        sql::UPDATE_NOTIFICATION,
        &row[..],
    )?;
    cas("notification", &n.id, count as u64)
}

/// The foreign keys of the schema (`requests.task_id`, `approvals.request_id`,
/// `leases.task_id`), checked for one write.
fn check_references(conn: &Connection, w: &Write) -> Result<(), StoreError> {
    let (what, sql, parent) = match w {
        Write::InsertRequest(r) => ("insert request", TASK_EXISTS, &r.task_id),
        Write::UpdateRequest(r) => ("update request", TASK_EXISTS, &r.task_id),
        Write::InsertLease(l) => ("insert lease", TASK_EXISTS, &l.task_id),
        Write::UpdateLease(l) => ("update lease", TASK_EXISTS, &l.task_id),
        Write::InsertApproval(a) => (
            "insert approval",
            "SELECT EXISTS (SELECT 1 FROM requests WHERE id = ?1)",
            &a.request_id,
        ),
        Write::InsertTask(_)
        | Write::UpdateTask(_)
        | Write::RequireTaskOpen { .. }
        | Write::InsertFreeze(_)
        | Write::UpdateFreeze(_)
        | Write::InsertNotification(_)
        | Write::UpdateNotification(_)
        | Write::InsertConsoleSession(_)
        | Write::DeleteConsoleSession { .. }
        | Write::InsertOAuth(_)
        | Write::UpdateOAuth(_)
        | Write::Count(_)
        | Write::RequireLiveBelow { .. }
        | Write::RequireCounter { .. }
        | Write::InsertReceivedSet(_) => {
            return Ok(());
        }
    };
    let exists: bool = conn
        .prepare_cached(sql)
        .and_then(|mut s| s.query_row([parent], |r| r.get(0)))
        .map_err(|e| unavailable(what, &e))?;
    if exists {
        Ok(())
    } else {
        Err(StoreError::Conflict(format!(
            "{what}: refers to a row that does not exist"
        )))
    }
}

const TASK_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM tasks WHERE id = ?1)";

fn sqlite_code(e: &rusqlite::Error) -> Option<i32> {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => Some(f.extended_code),
        _ => None,
    }
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    sqlite_code(e).is_some_and(|c| c & 0xff == rusqlite::ffi::SQLITE_CONSTRAINT)
}

/// Maps an error onto [`StoreError::Unavailable`]. SQLite's messages name tables, columns and
/// constraints, never row values.
fn unavailable(what: &str, e: &rusqlite::Error) -> StoreError {
    let detail = match e {
        rusqlite::Error::SqliteFailure(f, Some(msg)) => format!("{msg} (code {})", f.extended_code),
        rusqlite::Error::SqliteFailure(f, None) => format!("{f} (code {})", f.extended_code),
        other => other.to_string(),
    };
    StoreError::Unavailable(format!("sqlite: {what}: {detail}"))
}

/// Maps an error from a write: unique and foreign-key violations are conflicts.
fn write_error(what: &str, e: &rusqlite::Error) -> StoreError {
    match sqlite_code(e) {
        Some(
            rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY,
        ) => StoreError::Conflict(format!("{what}: already exists")),
        Some(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY) => {
            StoreError::Conflict(format!("{what}: refers to a row that does not exist"))
        }
        _ => unavailable(what, e),
    }
}
