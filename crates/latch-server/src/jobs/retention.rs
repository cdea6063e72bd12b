//! Retention: every `[retention] interval`, one pass of
//! [`Broker::prune_ended`](latch_core::broker::Broker::prune_ended) deletes ended tasks past
//! `ended_tasks` (with their requests and leases; the audit trail keeps them). Every replica
//! runs it; passes that meet on PostgreSQL delete each row once.

use std::sync::Arc;

use latch_core::broker::Broker;
use tokio::sync::watch;

use crate::config::RetentionConfig;

/// Runs a pass every `config.interval` until `stop` turns true, keeping what the store
/// cursors `cursors` (the Shared Signals streams) have not passed.
pub(crate) async fn run(
    broker: Arc<Broker>,
    (config, cursors): (RetentionConfig, Vec<String>),
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(config.interval) => {
                match broker.prune_ended(config.ended_tasks_secs(), &cursors).await {
                    Ok(r) if r.tasks > 0 => tracing::info!(tasks = r.tasks, requests = r.requests,
                        leases = r.leases, "retention: ended tasks pruned"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(code = %e.code, error = %e.message,
                        "retention: ended tasks could not be pruned; will retry"),
                }
            }
            r = stop.changed() => if r.is_err() || *stop.borrow() { break },
        }
    }
}
