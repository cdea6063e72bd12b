//! The reaper: one pass at start (revokes what expired while the broker was down), then one
//! per `[reaper] interval`, each followed by the scheduled CA rotation check.
//!
//! A pass never holds up the next: passes run as their own tasks, up to
//! `MAX_OVERLAPPING_PASSES` (3) at once, so a pass waiting on a target that stopped answering (at
//! most one `[targets] call_timeout`) does not delay the revocations other targets have due. The
//! broker keeps overlapping passes from working on the same lease (its in-flight set, and the
//! store's claims across replicas).

use std::sync::Arc;
use std::time::Duration;

use latch_core::Broker;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::jobs::ca_rotation::CaRotation;

/// Passes that may run at once.
pub(crate) const MAX_OVERLAPPING_PASSES: usize = 3;

/// How long startup waits for its reaper pass before serving anyway (the pass goes on in the
/// background): a restart never waits on a target that does not answer.
pub(crate) const STARTUP_PASS_WAIT: Duration = Duration::from_secs(2);

/// The startup pass: waits for it at most [`STARTUP_PASS_WAIT`], then lets it finish alone.
pub(crate) async fn reap_at_start(broker: Arc<Broker>) {
    let pass = tokio::spawn(async move { log_reap(broker.reap().await) });
    if tokio::time::timeout(STARTUP_PASS_WAIT, pass).await.is_err() {
        tracing::warn!(
            wait_ms = STARTUP_PASS_WAIT.as_millis() as u64,
            "startup reaper pass still running (a target is slow); serving meanwhile"
        );
    }
}

/// Runs a reaper pass and the CA rotation check every `every` until `stop` turns true.
pub(crate) async fn run(
    broker: Arc<Broker>,
    every: Duration,
    rotation: CaRotation,
    mut stop: watch::Receiver<bool>,
) {
    let mut passes = JoinSet::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {
                while passes.try_join_next().is_some() {}
                if passes.len() < MAX_OVERLAPPING_PASSES {
                    let b = broker.clone();
                    passes.spawn(async move { log_reap(b.reap().await) });
                } else {
                    tracing::warn!("reaper passes are all still running; skipping this tick");
                }
                rotation.run().await;
            }
            r = stop.changed() => if r.is_err() || *stop.borrow() { break },
        }
    }
    passes.abort_all();
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
                    revocations_parked = r.revocations_parked,
                    "reaper pass"
                );
            }
        }
        Err(e) => tracing::error!(code = %e.code, error = %e.message, "reaper pass failed"),
    }
}
