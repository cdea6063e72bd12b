//! The change feed follower: with replicas sharing PostgreSQL, applies the other replicas'
//! changes to this broker's caches and keeps their trust state.

use std::sync::Arc;
use std::time::Duration;

use latch_core::Broker;
use tokio::sync::watch;

/// Applies the shared store's change feed to the broker's caches until shutdown.
///
/// The caches answer only while the feed has proved, within `max_staleness`, that it delivered
/// every earlier change (see [`latch_store::FeedSettings`]).
pub(crate) async fn run(
    broker: Arc<Broker>,
    max_staleness: Duration,
    mut feed: tokio::sync::mpsc::Receiver<latch_store::StoreChange>,
    mut stop: watch::Receiver<bool>,
) {
    use latch_store::StoreChange;
    let mut connected_before = false;
    loop {
        let change = tokio::select! {
            c = feed.recv() => c,
            r = stop.changed() => if r.is_err() || *stop.borrow() { return } else { continue },
        };
        match change {
            Some(StoreChange::Lease(id)) => broker.invalidate_lease(&id),
            Some(StoreChange::Task(id)) => broker.invalidate_task(&id),
            Some(StoreChange::Lost) => {
                // The feed starts with `Lost` (not yet connected): that is no interruption.
                if connected_before {
                    metrics::counter!("latch_change_feed_interruptions_total").increment(1);
                }
                broker.set_cache_trusted(false);
            }
            Some(StoreChange::Resynced) => {
                connected_before = true;
                tracing::info!("store change feed connected; caches trusted again");
                broker.follow_change_feed(max_staleness);
            }
            Some(StoreChange::Unknown) => broker.clear_caches(),
            Some(StoreChange::Fresh(as_of)) => {
                // The feed's instant, on the broker's monotonic clock.
                let now = broker.clock().monotonic();
                broker.confirm_cache_fresh(now.saturating_sub(as_of.elapsed()));
            }
            None => {
                // The feed task ended: never trust the caches again (every call reads the store).
                broker.set_cache_trusted(false);
                return;
            }
        }
    }
}
