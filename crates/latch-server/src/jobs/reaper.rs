//! The reaper: one pass at start (revokes what expired while the broker was down), then one
//! per `[reaper] interval`, each followed by the scheduled CA rotation check.

use std::sync::Arc;
use std::time::Duration;

use latch_core::Broker;
use tokio::sync::watch;

use crate::jobs::ca_rotation::CaRotation;

/// One reaper pass, logged and counted.
pub(crate) async fn reap_once(broker: &Broker) {
    log_reap(broker.reap().await);
}

/// Runs a reaper pass and the CA rotation check every `every` until `stop` turns true.
pub(crate) async fn run(
    broker: Arc<Broker>,
    every: Duration,
    rotation: CaRotation,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {
                log_reap(broker.reap().await);
                rotation.run().await;
            }
            r = stop.changed() => if r.is_err() || *stop.borrow() { break },
        }
    }
}

fn log_reap(r: latch_core::error::Result<latch_core::broker::ReapReport>) {
    match r {
        Ok(r) => {
            if r.revocations_failed > 0 {
                metrics::counter!("latch_revocation_failures_total")
                    .increment(r.revocations_failed as u64);
            }
            metrics::counter!("latch_leases_reaped_total").increment(r.leases_revoked as u64);
            if r != latch_core::broker::ReapReport::default() {
                tracing::info!(
                    tasks_expired = r.tasks_expired,
                    requests_expired = r.requests_expired,
                    leases_revoked = r.leases_revoked,
                    revocations_failed = r.revocations_failed,
                    "reaper pass"
                );
            }
        }
        Err(e) => tracing::error!(code = %e.code, error = %e.message, "reaper pass failed"),
    }
}
