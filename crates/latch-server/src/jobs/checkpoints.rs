//! Periodic audit checkpoints (`[audit] checkpoint_interval`): the chain head signed with the
//! broker's key.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::audit::Checkpointer;

/// Runs the periodic checkpointer until `stop` turns true.
pub(crate) async fn run(cp: Arc<Checkpointer>, every: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {
                if let Err(e) = cp.checkpoint().await {
                    tracing::warn!(error = %e, "audit checkpoint failed; retrying next interval");
                }
            }
            r = stop.changed() => if r.is_err() || *stop.borrow() { break },
        }
    }
}
