//! Upkeep of a store shared by replicas: expired one-time values (DPoP proofs) are purged once
//! a minute, and the notification queue is watched every 10 s (when it is full, revocations
//! cannot commit).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use latch_core::Clock;
use latch_core::ports::StoreError;
use tokio::sync::watch;

/// What the upkeep job needs from a shared store. Implemented in `startup.rs` for the
/// PostgreSQL store, so this job never names it.
#[async_trait]
pub trait SharedStoreUpkeep: Send + Sync {
    /// Whether any role may connect to the store's database (PUBLIC has CONNECT).
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot answer.
    async fn public_may_connect(&self) -> Result<bool, StoreError>;

    /// Usage of the notification queue, 0 to 1.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot answer.
    async fn notification_queue_usage(&self) -> Result<f64, StoreError>;

    /// Deletes one-time values that expired before `now_unix_secs`; returns how many.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot answer.
    async fn forget_expired_once(&self, now_unix_secs: i64) -> Result<u64, StoreError>;
}

/// Warns once at start if the database is open to every role, then runs the upkeep every 10 s
/// until `stop` turns true.
pub(crate) async fn run(
    store: Arc<dyn SharedStoreUpkeep>,
    clock: Arc<dyn Clock>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(10)) => {
                ticks += 1;
                watch_notification_queue(store.as_ref()).await;
                if ticks.is_multiple_of(6)
                    && let Err(e) = store.forget_expired_once(clock.now_unix_secs()).await
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
pub(crate) async fn warn_if_public(store: &dyn SharedStoreUpkeep) {
    if store.public_may_connect().await.unwrap_or(false) {
        tracing::warn!(
            "any role may connect to the store's database (PUBLIC has CONNECT): such a role can pin \
             PostgreSQL's notification queue and block revocations; run \
             `REVOKE CONNECT ON DATABASE <name> FROM PUBLIC` and grant CONNECT to latch's role only"
        );
    }
}

/// Publishes PostgreSQL's notification-queue usage (`latch_pg_notification_queue_usage`,
/// 0 to 1) and warns from half full: when it is full, no lease or task change can commit.
async fn watch_notification_queue(pg: &dyn SharedStoreUpkeep) {
    match pg.notification_queue_usage().await {
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
