//! The hand-off of one batch from its caller to a group-commit writer (the SQLite writer
//! thread, the PostgreSQL writer tasks): one atomic decides whether a batch whose caller gave
//! up is still written.
//!
//! A batch is [`QUEUED`] until the writer, inside its transaction, takes it ([`TAKEN`]) or its
//! caller gives up first ([`ABANDONED`]); whichever compare-and-swap wins decides. A batch
//! abandoned before it was taken is never written, so its caller may answer "nothing written";
//! one taken is committed or not regardless, so a caller that gives up afterwards can only
//! answer "outcome unknown".
//!
//! [`GroupStats`] counts what a group-commit writer committed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use latch_core::ports::StoreError;

/// The batch waits in the queue.
const QUEUED: u8 = 0;
/// The writer has taken the batch: it will be committed or not, whatever the caller does.
const TAKEN: u8 = 1;
/// The caller gave up first: the writer skips the batch.
const ABANDONED: u8 = 2;

/// The shared state of one queued batch; the caller keeps one clone, the writer's job the other.
#[derive(Clone, Default)]
pub(crate) struct Handoff(Arc<AtomicU8>);

impl Handoff {
    /// Takes the batch for the writer's transaction: `false` if its caller gave up first (a
    /// batch taken earlier, being retried, stays taken).
    pub(crate) fn take(&self) -> bool {
        match self
            .0
            .compare_exchange(QUEUED, TAKEN, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(now) => now == TAKEN,
        }
    }

    /// Waits at most `deadline` for the writer's `answer` to the batch handed over with this
    /// hand-off (`label` names the backend in errors).
    ///
    /// # Errors
    /// The writer's own answer; [`StoreError::Unavailable`] if the writer stopped without one;
    /// past the deadline, [`give_up`](Self::give_up)'s answer.
    pub(crate) async fn answer<T>(
        &self,
        answer: tokio::sync::oneshot::Receiver<Result<T, StoreError>>,
        label: &str,
        deadline: Duration,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(deadline, answer).await {
            Ok(Ok(answered)) => answered,
            Ok(Err(_)) => Err(StoreError::Unavailable(format!("{label}: writer stopped"))),
            Err(_) => Err(self.give_up(label, deadline)),
        }
    }

    /// The answer of a caller whose `deadline` passed (`label` names the backend): nothing
    /// written ([`StoreError::Unavailable`]) if it withdrew its batch before the writer took
    /// it, otherwise [`StoreError::OutcomeUnknown`].
    pub(crate) fn give_up(&self, label: &str, deadline: Duration) -> StoreError {
        let waited = deadline.as_millis();
        match self
            .0
            .compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => StoreError::Unavailable(format!(
                "{label}: apply: the writer did not start the batch within {waited} ms"
            )),
            Err(_) => {
                StoreError::OutcomeUnknown(format!("{label}: commit: no answer within {waited} ms"))
            }
        }
    }
}

/// What the writers committed since start: `batches / commits` is the mean group size.
#[derive(Debug, Default)]
pub(crate) struct GroupStats {
    /// Transactions committed.
    pub(crate) commits: AtomicU64,
    /// Batches those transactions carried.
    pub(crate) batches: AtomicU64,
}

impl GroupStats {
    /// Counts one committed group of `batches` batches, here and in the exported metrics
    /// (`latch_store_commits_total`, `latch_store_batches_total`).
    pub(crate) fn committed(&self, batches: usize) {
        let n = u64::try_from(batches).unwrap_or(u64::MAX);
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.batches.fetch_add(n, Ordering::Relaxed);
        metrics::counter!("latch_store_commits_total").increment(1);
        metrics::counter!("latch_store_batches_total").increment(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_given_up_before_it_is_taken_is_never_taken() {
        let caller = Handoff::default();
        let writer = caller.clone();
        let answer = caller.give_up("x", Duration::from_millis(5));
        assert!(matches!(answer, StoreError::Unavailable(_)), "{answer:?}");
        assert!(!writer.take());
    }

    #[test]
    fn a_batch_taken_first_leaves_its_caller_an_unknown_outcome() {
        let caller = Handoff::default();
        let writer = caller.clone();
        assert!(writer.take());
        assert!(writer.take(), "a retried batch stays taken");
        let answer = caller.give_up("x", Duration::from_millis(5));
        assert!(
            matches!(answer, StoreError::OutcomeUnknown(_)),
            "{answer:?}"
        );
    }
}
