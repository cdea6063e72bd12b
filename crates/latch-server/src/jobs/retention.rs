//! Retention: every `[retention] interval`, one pass of
//! [`Broker::prune_ended`](latch_core::broker::Broker::prune_ended) deletes ended tasks past
//! `ended_tasks` (with their requests and leases; the audit trail keeps them), and, with
//! `[retention] audit` set, one pass of
//! [`Broker::prune_audit`](latch_core::broker::Broker::prune_audit) deletes the audit records
//! every sink delivered, up to a signed checkpoint older than `audit`. Every replica runs it;
//! passes that meet on PostgreSQL delete each row once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use latch_core::audit::CutSigner;
use latch_core::broker::Broker;
use tokio::sync::watch;

use crate::config::RetentionConfig;

/// The store cursors retention waits for.
#[derive(Debug, Clone, Default)]
pub(crate) struct Readers {
    /// The Shared Signals streams' cursors: they read a revocation's task and lease, and its
    /// audit record, when they transmit it.
    pub(crate) streams: Vec<String>,
    /// The audit sinks' cursors: records go from the store only once each delivered them.
    pub(crate) sinks: Vec<String>,
}

/// Shortest pause between two retention calls of one pass.
const BETWEEN_CALLS: Duration = Duration::from_millis(20);
/// After a turn that took `t`, retention waits `t` times this, so it holds the store's writer
/// at most half the time and a grant waits at most one transaction (a soak at 100 tasks/s on
/// two cores showed a factor of 4 too slow to work off the audit records).
const PAUSE_FACTOR: u32 = 1;

/// The pause after a retention call that took `took`.
fn pause_after(took: Duration) -> Duration {
    (took * PAUSE_FACTOR).max(BETWEEN_CALLS)
}

/// Runs a pass every `config.interval` until `stop` turns true, keeping what the `readers`
/// have not passed; `signer` (the checkpointer) signs audit retention's cuts. A pass goes on
/// until nothing more is due, one task transaction and one audit transaction in turn, pausing
/// after each turn ([`pause_after`]), so retention keeps up with a steady load without starving
/// grants of the store's writer, and neither kind of retention waits for the other.
pub(crate) async fn run(
    broker: Arc<Broker>,
    (config, readers): (RetentionConfig, Readers),
    signer: Arc<dyn CutSigner>,
    mut stop: watch::Receiver<bool>,
) {
    let audit_readers: Vec<String> = readers
        .sinks
        .iter()
        .chain(&readers.streams)
        .cloned()
        .collect();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(config.interval) => {}
            r = stop.changed() => if r.is_err() || *stop.borrow() { break },
        }
        let (mut tasks_due, mut audit_due) = (true, config.audit_secs().is_some());
        let (mut tasks, mut records) = (0, 0);
        while (tasks_due || audit_due) && !*stop.borrow() {
            let started = Instant::now();
            if tasks_due {
                let n = prune_tasks(&broker, &config, &readers.streams).await;
                tasks += n;
                tasks_due = n > 0;
            }
            if let Some(keep) = config.audit_secs().filter(|_| audit_due) {
                let n = prune_audit(&broker, keep, &audit_readers, signer.as_ref()).await;
                records += n;
                audit_due = n > 0;
            }
            if tasks_due || audit_due {
                tokio::time::sleep(pause_after(started.elapsed())).await;
            }
        }
        if tasks > 0 {
            tracing::info!(tasks, "retention: ended tasks pruned");
        }
        if records > 0 {
            tracing::info!(records, "retention: audit records pruned");
        }
    }
}

/// One task retention transaction; the tasks deleted (0 on an error, logged).
async fn prune_tasks(broker: &Broker, config: &RetentionConfig, streams: &[String]) -> u64 {
    match broker.prune_ended(config.ended_tasks_secs(), streams).await {
        Ok(r) => r.tasks,
        Err(e) => {
            tracing::warn!(code = %e.code, error = %e.message,
                "retention: ended tasks could not be pruned; will retry");
            0
        }
    }
}

/// One audit retention transaction; the records deleted (0 on an error, logged, and counted
/// as an alarm when it is one).
async fn prune_audit(
    broker: &Broker,
    keep_secs: i64,
    readers: &[String],
    signer: &dyn CutSigner,
) -> u64 {
    match broker.prune_audit(keep_secs, readers, signer).await {
        Ok(n) => n,
        Err(e) if e.message.contains("audit chain alarm") => {
            metrics::counter!("latch_audit_chain_alarms_total").increment(1);
            tracing::error!(code = %e.code, error = %e.message,
                "audit chain alarm: retention refuses to prune the audit records");
            0
        }
        Err(e) => {
            tracing::warn!(code = %e.code, error = %e.message,
                "retention: audit records could not be pruned; will retry");
            0
        }
    }
}
