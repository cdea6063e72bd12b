//! `[retention]` in `latch.toml`: how long ended tasks are kept in the store.
//!
//! ```toml
//! [retention]
//! ended_tasks = "30d"   # an ended task, its requests and leases go this long after it expired and ended
//! interval = "10m"      # how often each replica looks for them
//! enabled = true
//! ```
//!
//! Only tasks that are over are deleted: not `open`, every lease `revoked` (a credential whose
//! revocation is not confirmed keeps its task), no approver notification pending. The audit
//! trail keeps every record of them, and each pass that deleted anything is recorded
//! (`store.pruned`, naming the tasks, in the deletion's transaction). A task is deleted only
//! once both its expiry and its end are `ended_tasks` ago, and once every Shared Signals stream
//! has sent its revocations.

use std::time::Duration;

use serde::Deserialize;

/// `[retention]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Whether ended tasks are pruned at all (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How long after its expiry (and its end) an ended task is kept (default 30 days, at
    /// least 1 hour: long enough for a late reaper and a lagging Shared Signals stream).
    #[serde(default = "default_ended_tasks", with = "humantime_serde")]
    pub ended_tasks: Duration,
    /// How often each replica runs a pass (default 10 minutes, at least 1 second).
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ended_tasks: default_ended_tasks(),
            interval: default_interval(),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_ended_tasks() -> Duration {
    Duration::from_secs(30 * 86_400)
}

fn default_interval() -> Duration {
    Duration::from_secs(600)
}

impl RetentionConfig {
    /// Checks the bounds.
    ///
    /// # Errors
    /// A message naming the key and its bound.
    pub fn validate(&self) -> Result<(), String> {
        if self.ended_tasks < Duration::from_secs(3600) {
            return Err("`retention.ended_tasks` must be at least 1h".into());
        }
        if self.interval < Duration::from_secs(1) {
            return Err("`retention.interval` must be at least 1s".into());
        }
        Ok(())
    }

    /// `ended_tasks` in whole seconds.
    pub fn ended_tasks_secs(&self) -> i64 {
        i64::try_from(self.ended_tasks.as_secs()).unwrap_or(i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        let c: RetentionConfig = toml::from_str("").unwrap();
        assert!(c.enabled);
        assert_eq!(c.ended_tasks_secs(), 30 * 86_400);
        assert!(c.validate().is_ok());
        for bad in ["ended_tasks = \"59m\"", "interval = \"0s\"", "keep = 1"] {
            let parsed = toml::from_str::<RetentionConfig>(bad)
                .map_err(|e| e.to_string())
                .and_then(|c| c.validate());
            assert!(parsed.is_err(), "{bad}");
        }
    }
}
