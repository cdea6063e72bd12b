//! The policy watcher: polls the policy files (and listens for SIGHUP) and reloads them when
//! they change.

use std::sync::Arc;

use latch_core::Broker;
use tokio::sync::watch;

use crate::config::Config;
use crate::policy::{PolicyStamp, policy_stamp, reload_now};

/// Polls the policy files (and listens for SIGHUP). `last` is the snapshot taken before the
/// running policies were loaded, so a change made at any time after that load is seen.
pub(crate) async fn run(
    config: Config,
    broker: Arc<Broker>,
    mut last: PolicyStamp,
    mut stop: watch::Receiver<bool>,
) {
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let sighup = async {
            match hup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let sighup = std::future::pending::<()>();
        tokio::select! {
            _ = tokio::time::sleep(config.policy.poll_interval) => {
                let now = policy_stamp(&config);
                if now != last {
                    last = now;
                    let _ = reload_now(&config, &broker, "file_change").await;
                }
            }
            _ = sighup => {
                last = policy_stamp(&config);
                let _ = reload_now(&config, &broker, "sighup").await;
            }
            r = stop.changed() => if r.is_err() || *stop.borrow() { break },
        }
    }
}
