//! Group commit on PostgreSQL: concurrent batches of one replica share transactions.
//!
//! [`Store::apply`] hands its batch (audit bodies already encoded, on the caller's task) to a
//! queue served by [`WRITERS`] writer tasks. A writer waits for one batch, drains whatever else
//! is queued (up to [`MAX_GROUP`]) and applies the group in one `READ COMMITTED` transaction:
//!
//! 1. each batch's writes (and its change notifications) inside a `SAVEPOINT`; a batch that
//!    fails (compare-and-set, unique key, guard, budget) is rolled back to its savepoint and
//!    answered with its own error, the others are unaffected;
//! 2. then, once per group, the audit events of every batch that stayed: the chain head row is
//!    locked (`SELECT … FOR UPDATE` on `audit_head`), each event gets the next `seq` and its
//!    hash, and all rows go in with one `INSERT … SELECT FROM unnest(…)` that also moves the
//!    head;
//! 3. `COMMIT` — one WAL flush for the group — and only then the replies.
//!
//! So the cluster-wide lock on the chain head is taken once per group, for two statements and
//! the commit, instead of once per grant; the chain stays one gapless chain across replicas
//! (every append still happens under that lock). A batch that met a deadlock or a serialisation
//! failure (`40P01`, `40001`; two groups locking the same counter rows in different orders) is
//! rolled back to its savepoint and carried into the writer's next group, a few times at most.
//!
//! Deadlines as the SQLite writer (`sqlite/group.rs`, and [`Handoff`]): a caller waits at most
//! the store's deadline; a batch abandoned before a writer took it is never written, one taken
//! is committed or not regardless (the caller answers [`StoreError::OutcomeUnknown`]).
//!
//! [`Store::apply`]: latch_core::ports::Store::apply

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use latch_core::audit::chain_hash;
use latch_core::ports::{StoreError, Write, WriteBatch};
use sqlx::postgres::PgPool;
use sqlx::{Postgres, Transaction};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::reads::{FreezeSnapshot, Reads};
use super::{counters, feed, write_error};
use crate::batch::apply_write;
use crate::codec::{decode_all, encode_audit};
use crate::handoff::{GroupStats, Handoff};
use crate::sql::TRY_AGAIN;
use crate::store::{commit_outcome, within};
use latch_core::freeze::Freeze;

/// Writer tasks per replica: two, so one group's statements overlap the other's commit.
pub(super) const WRITERS: usize = 2;
/// Most batches in one transaction: below PostgreSQL's 64 cached subtransaction ids per
/// backend, past which every other backend's snapshots get slower.
const MAX_GROUP: usize = 48;
/// Most active freezes a group reads under the chain head's lock (see `reads.rs`): past it the
/// group reads none and the grants' checks read afresh, so a pile of freezes (one per human a
/// Shared Signals transmitter flagged) never lengthens the lock every replica's appends wait on
/// by more than this many small rows.
pub(super) const SNAPSHOT_FREEZES: i64 = 32;
/// How often a batch that lost a deadlock is carried into a new group before it fails.
const MAX_RETRIES: u8 = 3;

type Outcome = Result<Vec<i64>, StoreError>;

/// One caller's batch in the queue.
struct Job {
    batch: WriteBatch,
    /// The encoded audit events, `audit_bodies[i]` of `batch.audit[i]`.
    audit_bodies: Vec<String>,
    reply: oneshot::Sender<Outcome>,
    handoff: Handoff,
    retries: u8,
}

impl Job {
    fn answer(self, outcome: Outcome) {
        // The caller may have gone away; its batch is committed (or not) regardless.
        let _ = self.reply.send(outcome);
    }
}

/// The queue and its writer tasks. The writers stop once this is closed (or dropped) and the
/// queue is drained.
pub(crate) struct GroupWriter {
    jobs: Mutex<Option<mpsc::UnboundedSender<Job>>>,
    writers: Mutex<Vec<JoinHandle<()>>>,
    stats: Arc<GroupStats>,
}

impl std::fmt::Debug for GroupWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupWriter")
            .field("commits", &self.stats.commits.load(Ordering::Relaxed))
            .field("batches", &self.stats.batches.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl GroupWriter {
    /// Starts [`WRITERS`] writer tasks on `pool`, each group bounded by `deadline`.
    pub(super) fn start(pool: &PgPool, deadline: Duration, reads: Arc<Reads>) -> Self {
        let (jobs, rx) = mpsc::unbounded_channel::<Job>();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let stats = Arc::new(GroupStats::default());
        let writers = (0..WRITERS)
            .map(|_| {
                let writer = Writer {
                    pool: pool.clone(),
                    deadline,
                    stats: stats.clone(),
                    reads: reads.clone(),
                };
                tokio::spawn(writer.run(rx.clone()))
            })
            .collect();
        Self {
            jobs: Mutex::new(Some(jobs)),
            writers: Mutex::new(writers),
            stats,
        }
    }

    /// What the writers committed so far.
    #[cfg(test)]
    pub(crate) fn stats(&self) -> &GroupStats {
        &self.stats
    }

    /// Commits `batch` in a group with whatever else is queued and returns its audit seqs,
    /// waiting at most `deadline`.
    ///
    /// # Errors
    /// As [`Store::apply`](latch_core::ports::Store::apply); see the module docs for what a
    /// caller whose deadline passed answers.
    pub(super) async fn apply(&self, batch: WriteBatch, deadline: Duration) -> Outcome {
        let audit_bodies = batch
            .audit
            .iter()
            .map(encode_audit)
            .collect::<Result<Vec<_>, _>>()?;
        let (reply, answer) = oneshot::channel();
        let handoff = Handoff::default();
        let job = Job {
            batch,
            audit_bodies,
            reply,
            handoff: handoff.clone(),
            retries: 0,
        };
        {
            let jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(jobs) = jobs.as_ref() else {
                return Err(closed());
            };
            jobs.send(job).map_err(|_| closed())?;
        }
        handoff.answer(answer, "postgres", deadline).await
    }

    /// Stops taking batches, lets the writers finish the queued ones, and waits for them.
    pub(super) async fn close(&self) {
        drop(
            self.jobs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let writers =
            std::mem::take(&mut *self.writers.lock().unwrap_or_else(PoisonError::into_inner));
        for w in writers {
            let _ = w.await;
        }
    }
}

fn closed() -> StoreError {
    StoreError::Unavailable("postgres: store is closed".into())
}

/// One writer task: its connections, its deadline per group, the shared counts, and the
/// replica's reads (which keep the freezes each group reads).
struct Writer {
    pool: PgPool,
    deadline: Duration,
    stats: Arc<GroupStats>,
    reads: Arc<Reads>,
}

impl Writer {
    /// A group per wake-up until the queue is closed and drained.
    async fn run(self, queue: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Job>>>) {
        let mut carried: Vec<Job> = Vec::new();
        loop {
            let mut group = std::mem::take(&mut carried);
            {
                let mut rx = queue.lock().await;
                if group.is_empty() {
                    let Some(first) = rx.recv().await else {
                        return;
                    };
                    group.push(first);
                }
                while group.len() < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(job) => group.push(job),
                        Err(_) => break,
                    }
                }
            }
            carried = self.commit_group(group).await;
        }
    }

    /// Applies and commits `group` in one transaction, answering every batch; returns the
    /// batches to carry into the next group (they lost a deadlock and were rolled back).
    async fn commit_group(&self, group: Vec<Job>) -> Vec<Job> {
        let deadline = self.deadline;
        let until = Instant::now() + deadline;
        let begun = within::<Postgres, _>(until, deadline, "begin transaction", async {
            self.pool
                .begin()
                .await
                .map_err(|e| super::unavailable("begin transaction", &e))
        })
        .await;
        let mut tx = match begun {
            Ok(tx) => tx,
            Err(e) => {
                // Nothing was taken: every batch is answered "nothing written".
                fail_all(group.into_iter(), &e);
                return Vec::new();
            }
        };
        let mut staged: Vec<Job> = Vec::with_capacity(group.len());
        let mut carried = Vec::new();
        let mut rest = group.into_iter();
        while let Some(mut job) = rest.next() {
            if !job.handoff.take() {
                job.answer(Err(StoreError::Unavailable(
                    "postgres: apply: abandoned by its caller".into(),
                )));
                continue;
            }
            let Err(err) =
                within::<Postgres, _>(until, deadline, "apply", stage(&mut tx, &job)).await
            else {
                staged.push(job);
                continue;
            };
            let undone = within::<Postgres, _>(until, deadline, "roll back to savepoint", async {
                exec(&mut tx, "ROLLBACK TO SAVEPOINT batch").await
            })
            .await;
            if let Err(e) = undone {
                // The transaction is lost: nothing of the group is written.
                fail_all(
                    std::iter::once(job)
                        .chain(staged)
                        .chain(rest)
                        .chain(carried),
                    &e,
                );
                return Vec::new();
            }
            let lost_a_deadlock = matches!(&err, StoreError::Conflict(m) if m.ends_with(TRY_AGAIN));
            if lost_a_deadlock && job.retries < MAX_RETRIES {
                job.retries += 1;
                carried.push(job);
            } else {
                job.answer(Err(err));
            }
        }
        if staged.is_empty() {
            let _ = tx.rollback().await;
            return carried;
        }
        let appended = within::<Postgres, _>(
            until,
            deadline,
            "append audit events",
            append(&mut tx, &staged),
        )
        .await;
        let (seqs, freezes) = match appended {
            Ok(done) => done,
            Err(e) => {
                let _ = tx.rollback().await;
                fail_all(staged.into_iter().chain(carried), &e);
                return Vec::new();
            }
        };
        let committed = match tokio::time::timeout_at(until, tx.commit()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(commit_outcome::<Postgres>(&e)),
            Err(_) => Err(StoreError::OutcomeUnknown(format!(
                "postgres: commit: no answer within {} ms",
                deadline.as_millis()
            ))),
        };
        match committed {
            Ok(()) => {
                self.stats.committed(staged.len());
                // Before any answer: a caller checks its grant against this read next.
                match freezes {
                    Some(Some(snap)) => self.reads.publish(snap),
                    Some(None) => self.reads.forget(),
                    None => {}
                }
                for (job, seqs) in staged.into_iter().zip(seqs) {
                    job.answer(Ok(seqs));
                }
            }
            Err(e) => fail_all(staged.into_iter(), &e),
        }
        carried
    }
}

fn fail_all(jobs: impl Iterator<Item = Job>, e: &StoreError) {
    for job in jobs {
        job.answer(Err(e.clone()));
    }
}

async fn exec(
    tx: &mut Transaction<'static, Postgres>,
    sql: &'static str,
) -> Result<(), StoreError> {
    sqlx::query(sql)
        .execute(&mut **tx)
        .await
        .map(|_| ())
        .map_err(|e| super::unavailable(sql, &e))
}

/// One batch's writes and change notifications, after a savepoint of its own (savepoints
/// nest; a later `ROLLBACK TO` undoes only this batch).
async fn stage(tx: &mut Transaction<'static, Postgres>, job: &Job) -> Result<(), StoreError> {
    exec(tx, "SAVEPOINT batch").await?;
    for w in &job.batch.writes {
        match w {
            Write::Count(deltas) => counters::apply(tx, deltas).await?,
            other => apply_write::<Postgres>(tx, other).await?,
        }
    }
    feed::notify_changes(tx, &job.batch.writes).await
}

/// Appends the audit events of every staged batch after the locked chain head, in one
/// statement that also moves the head and reads the active freezes (its snapshot is taken
/// with the lock held: see `reads.rs`); returns each batch's seqs and that read (`None`: no
/// read, no events to append; `Some(None)`: read, but nothing to keep).
async fn append(
    tx: &mut Transaction<'static, Postgres>,
    staged: &[Job],
) -> Result<(Vec<Vec<i64>>, Option<Option<FreezeSnapshot>>), StoreError> {
    let total: usize = staged.iter().map(|j| j.audit_bodies.len()).sum();
    if total == 0 {
        return Ok((staged.iter().map(|_| Vec::new()).collect(), None));
    }
    let (mut seq, mut prev) =
        sqlx::query_as::<_, (i64, String)>("SELECT seq, hash FROM audit_head WHERE one FOR UPDATE")
            .fetch_one(&mut **tx)
            .await
            .map_err(|e| write_error("lock audit chain head", &e))?;
    let mut seqs = Vec::with_capacity(total);
    let mut bodies = Vec::with_capacity(total);
    let mut hashes = Vec::with_capacity(total);
    let mut per_batch = Vec::with_capacity(staged.len());
    for job in staged {
        let mut mine = Vec::with_capacity(job.audit_bodies.len());
        for body in &job.audit_bodies {
            seq += 1;
            let hash = chain_hash(&prev, seq, body);
            seqs.push(seq);
            bodies.push(body.as_str());
            prev.clone_from(&hash);
            hashes.push(hash);
            mine.push(seq);
        }
        per_batch.push(mine);
    }
    // The read's snapshot is taken when the statement starts.
    let at = Instant::now();
    let bodies = sqlx::query_scalar::<_, String>(
        // `prev_hash` is not stored again (see `sql::INSERT_AUDIT_EVENT`); straight into the
        // table under the `audit_events` view (migration 0010), not through its trigger. The
        // freezes as `sql::ACTIVE_FREEZES` reads them.
        "WITH appended AS (INSERT INTO audit_log (seq, body, prev_hash, hash) \
         SELECT s, b, '', h FROM unnest($1::bigint[], $2::text[], $3::text[]) AS u (s, b, h)), \
         head AS (UPDATE audit_head SET seq = $4, hash = $5 WHERE one) \
         SELECT body FROM freezes WHERE state = 'active' ORDER BY created_at, id LIMIT $6",
    )
    .bind(&seqs)
    .bind(&bodies)
    .bind(&hashes)
    .bind(seq)
    .bind(prev.as_str())
    .bind(SNAPSHOT_FREEZES + 1)
    .fetch_all(&mut **tx)
    .await
    .map_err(|e| write_error("append audit events", &e))?;
    // More active freezes than a snapshot holds, or a body that does not decode, leave no
    // snapshot: the checks then read afresh, outside the lock.
    if bodies.len() > SNAPSHOT_FREEZES as usize {
        return Ok((per_batch, Some(None)));
    }
    let snap = decode_all::<Freeze>("freeze", bodies)
        .ok()
        .map(|freezes| FreezeSnapshot { seq, at, freezes });
    Ok((per_batch, Some(snap)))
}

#[cfg(test)]
#[path = "group_tests.rs"]
mod tests;
