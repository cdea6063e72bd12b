//! The targets job: every `[targets] probe_interval`, probes the targets that stopped answering
//! and, as soon as one answers again, revokes the leases parked behind its outage
//! ([`Broker::tend_targets`]). It also keeps the `latch_target_up` gauge current.

use std::sync::Arc;
use std::time::Duration;

use latch_core::Broker;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Probe passes that may run at once. A probe of a target that accepts connections and never
/// answers waits out the call deadline; the next tick starts a fresh probe meanwhile, so the
/// target's recovery is seen within one probe interval, not one deadline.
const MAX_OVERLAPPING_PROBES: usize = 8;

/// Runs [`Broker::tend_targets`] every `every` until `stop` turns true.
pub(crate) async fn run(broker: Arc<Broker>, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut passes = JoinSet::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {
                while passes.try_join_next().is_some() {}
                if passes.len() < MAX_OVERLAPPING_PROBES {
                    let b = broker.clone();
                    passes.spawn(async move { tend(&b).await });
                }
            }
            r = stop.changed() => if r.is_err() || *stop.borrow() { break },
        }
    }
    passes.abort_all();
}

async fn tend(broker: &Broker) {
    match broker.tend_targets().await {
        Ok(r) => {
            if r.leases_revoked > 0 || r.revocations_failed > 0 {
                metrics::counter!("latch_leases_reaped_total").increment(r.leases_revoked as u64);
                metrics::counter!("latch_revocation_failures_total")
                    .increment(r.revocations_failed as u64);
                tracing::info!(
                    recovered = ?r.recovered,
                    leases_revoked = r.leases_revoked,
                    revocations_failed = r.revocations_failed,
                    "revocations resumed after target recovery"
                );
            }
        }
        Err(e) => tracing::warn!(code = %e.code, error = %e.message, "target probe pass failed"),
    }
}

/// Sets `latch_target_up{resource,provider}` (1 healthy, 0 down) and
/// `latch_target_consecutive_failures{resource,provider}` for every target.
pub(crate) fn export_gauges(broker: &Broker) {
    for t in broker.target_statuses() {
        let labels = [
            ("resource", t.resource_id.clone()),
            ("provider", t.provider.clone()),
        ];
        metrics::gauge!("latch_target_up", &labels).set(if t.healthy { 1.0 } else { 0.0 });
        metrics::gauge!("latch_target_consecutive_failures", &labels)
            .set(f64::from(t.consecutive_failures));
    }
}
