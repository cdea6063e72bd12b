//! Combined reads: concurrent callers of one read share a single statement, and every caller is
//! still answered by a read that started after it asked.
//!
//! A caller queues its key, then waits for the combiner's lock. Whoever holds the lock takes
//! every queued key, runs one statement for all of them, and answers each before letting go;
//! so a caller that gets the lock finds its answer already there (a read taken after it queued)
//! or takes the queue itself. The store is read as often as the lock can be passed on, not once
//! per caller, and no caller ever gets a result older than its own call — which is what the
//! kill switch's check-after-commit and the history guard rely on.

use std::future::Future;
use std::sync::{Mutex, PoisonError};

use latch_core::ports::StoreError;
use tokio::sync::oneshot;

type Answer<V> = oneshot::Sender<Result<V, StoreError>>;

/// One combined read, keyed by `K`, answering `V` per key.
pub(crate) struct Combiner<K, V> {
    queued: Mutex<Vec<(K, Answer<V>)>>,
    lock: tokio::sync::Mutex<()>,
}

impl<K, V> Default for Combiner<K, V> {
    fn default() -> Self {
        Self {
            queued: Mutex::new(Vec::new()),
            lock: tokio::sync::Mutex::new(()),
        }
    }
}

impl<K: Clone, V> Combiner<K, V> {
    /// The answer for `key`, from a read of all keys queued with it that started after this
    /// call: `read(keys)` must return one value per key, in order.
    ///
    /// # Errors
    /// The error of the read that took the key (every key of a failed read gets it).
    pub(crate) async fn get<F, Fut>(&self, key: K, read: F) -> Result<V, StoreError>
    where
        F: Fn(Vec<K>) -> Fut,
        Fut: Future<Output = Result<Vec<V>, StoreError>>,
    {
        loop {
            let (tx, mut rx) = oneshot::channel();
            self.queued
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((key.clone(), tx));
            let _held = self.lock.lock().await;
            match rx.try_recv() {
                Ok(answer) => return answer,
                // Taken by a caller that gave up mid-read (its future was dropped): ask again.
                Err(oneshot::error::TryRecvError::Closed) => continue,
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            // Not answered, so still queued (keys are only taken under the lock, and answered
            // before it is let go): take the queue, this caller's key with it.
            let batch =
                std::mem::take(&mut *self.queued.lock().unwrap_or_else(PoisonError::into_inner));
            let keys = batch.iter().map(|(k, _)| k.clone()).collect();
            match read(keys).await {
                Ok(values) if values.len() == batch.len() => {
                    for ((_, tx), v) in batch.into_iter().zip(values) {
                        let _ = tx.send(Ok(v));
                    }
                }
                Ok(_) => {
                    let e = StoreError::Unavailable("combined read: answers do not match".into());
                    for (_, tx) in batch {
                        let _ = tx.send(Err(e.clone()));
                    }
                }
                Err(e) => {
                    for (_, tx) in batch {
                        let _ = tx.send(Err(e.clone()));
                    }
                }
            }
            if let Ok(answer) = rx.try_recv() {
                return answer;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_callers_share_reads_and_each_gets_its_own_key() {
        let combiner = Arc::new(Combiner::<u32, u32>::default());
        let reads = Arc::new(AtomicU64::new(0));
        let mut set = tokio::task::JoinSet::new();
        for i in 0..200u32 {
            let (c, reads) = (combiner.clone(), reads.clone());
            set.spawn(async move {
                let got = c
                    .get(i, |keys| {
                        let reads = reads.clone();
                        async move {
                            reads.fetch_add(1, Ordering::Relaxed);
                            tokio::task::yield_now().await;
                            Ok(keys.iter().map(|k| k * 2).collect())
                        }
                    })
                    .await;
                (i, got)
            });
        }
        while let Some(j) = set.join_next().await {
            let (i, got) = j.expect("join");
            assert_eq!(got.expect("read"), i * 2);
        }
        assert!(reads.load(Ordering::Relaxed) <= 200);
    }

    #[tokio::test]
    async fn an_answer_never_predates_the_call() {
        // A value written before a call is seen by it: the read runs after the key is queued.
        let combiner = Combiner::<(), u64>::default();
        let store = AtomicU64::new(0);
        for v in 1..50 {
            store.store(v, Ordering::SeqCst);
            let got = combiner
                .get((), |keys| {
                    let now = store.load(Ordering::SeqCst);
                    async move { Ok(keys.iter().map(|()| now).collect()) }
                })
                .await
                .expect("read");
            assert_eq!(got, v);
        }
    }

    #[tokio::test]
    async fn a_failed_read_fails_its_callers() {
        let combiner = Combiner::<u8, u8>::default();
        let got = combiner
            .get(1, |_| async { Err(StoreError::Unavailable("down".into())) })
            .await;
        assert!(matches!(got, Err(StoreError::Unavailable(_))));
    }
}
