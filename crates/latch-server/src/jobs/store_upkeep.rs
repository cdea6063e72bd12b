//! Upkeep of a store shared by replicas: expired one-time values (DPoP proofs) are purged once
//! a minute, and the notification queue is watched every 10 s (when it is full, revocations
//! cannot commit).

use std::sync::Arc;
use std::time::Duration;

use latch_core::Clock;
use latch_core::ports::{ChangeFeed, UseOnce};
use tokio::sync::watch;

/// Warns once at start if the database is open to every role, then runs the upkeep every 10 s
/// until `stop` turns true.
pub(crate) async fn run(
    feed: Arc<dyn ChangeFeed>,
    once: Option<Arc<dyn UseOnce>>,
    clock: Arc<dyn Clock>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(10)) => {
                ticks += 1;
                watch_notification_queue(feed.as_ref()).await;
                if ticks.is_multiple_of(6)
                    && let Some(once) = &once
                    && let Err(e) = once.forget_expired(clock.now_unix_secs()).await
                {
                    tracing::warn!(error = %e, "cannot purge expired dpop proofs; will retry");
                }
            }
            r = stop.changed() => if r.is_err() || *stop.borrow() { break },
        }
    }
}

/// Warns when any role may connect to the store's database: such a role can pin the
/// notification queue and block revocations.
pub(crate) async fn warn_if_public(feed: &dyn ChangeFeed) {
    if feed.public_may_connect().await.unwrap_or(false) {
        tracing::warn!(
            "any role may connect to the store's database (PUBLIC has CONNECT): such a role can pin \
             PostgreSQL's notification queue and block revocations; run \
             `REVOKE CONNECT ON DATABASE <name> FROM PUBLIC` and grant CONNECT to latch's role only"
        );
    }
}

/// Publishes PostgreSQL's notification-queue usage (`latch_pg_notification_queue_usage`,
/// 0 to 1) and warns from half full: when it is full, no lease or task change can commit.
async fn watch_notification_queue(feed: &dyn ChangeFeed) {
    match feed.queue_usage().await {
        Ok(usage) => {
            metrics::gauge!("latch_pg_notification_queue_usage").set(usage);
            if usage >= 0.5 {
                tracing::warn!(
                    usage,
                    "postgres notification queue is filling: a session that LISTENs and stays in a \
                     transaction pins it (see pg_stat_activity); when full, revocations fail"
                );
            }
        }
        Err(e) => tracing::debug!(error = %e, "cannot read the notification queue usage"),
    }
}
