//! `[targets]` in `latch.toml`: how the broker calls the systems its providers mint in
//! (databases, caches), and how it watches them.
//!
//! ```toml
//! [targets]
//! call_timeout = "10s"      # overall deadline of one mint, renew, revoke or probe, connect included
//! concurrency = 4           # revocations one target works on at once
//! probe_interval = "250ms"  # how often a target that stopped answering is probed
//! ready_requires_targets = false  # `/readyz` answers 503 while a target is down
//! ```

use std::time::Duration;

use serde::Deserialize;

/// `[targets]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetsConfig {
    /// Overall deadline of one provider call (mint, renew, revoke, probe), connect included
    /// (default 10 s, at least 100 ms). A target that accepts connections and never answers
    /// fails that call only, after this long.
    #[serde(default = "default_call_timeout", with = "humantime_serde")]
    pub call_timeout: Duration,
    /// Revocations one target works on at once (default 4, at least 1).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// How often a target that stopped answering is probed (default 250 ms, at least 50 ms). The
    /// first probe that succeeds revokes the leases parked behind the outage, so a revoked
    /// credential dies within about this long of its target answering again.
    #[serde(default = "default_probe_interval", with = "humantime_serde")]
    pub probe_interval: Duration,
    /// Whether `/readyz` answers 503 while any target is down (default false: it answers 200
    /// with `status: "degraded"` and the target listed, so one dead database does not take every
    /// replica out of a load balancer, and grants for other resources go on).
    #[serde(default)]
    pub ready_requires_targets: bool,
}

impl Default for TargetsConfig {
    fn default() -> Self {
        Self {
            call_timeout: default_call_timeout(),
            concurrency: default_concurrency(),
            probe_interval: default_probe_interval(),
            ready_requires_targets: false,
        }
    }
}

impl TargetsConfig {
    /// The call deadline, never below 100 ms.
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout.max(Duration::from_millis(100))
    }

    /// The probe interval, never below 50 ms.
    pub fn probe_interval(&self) -> Duration {
        self.probe_interval.max(Duration::from_millis(50))
    }
}

fn default_call_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_concurrency() -> usize {
    4
}

fn default_probe_interval() -> Duration {
    Duration::from_millis(250)
}
