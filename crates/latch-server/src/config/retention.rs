//! `[retention]` in `latch.toml`: how long ended tasks, and (opt-in) audit records, are kept in
//! the store.
//!
//! ```toml
//! [retention]
//! ended_tasks = "30d"   # an ended task, its requests and leases go this long after it expired and ended
//! interval = "10m"      # how often each replica looks for them
//! enabled = true
//! # audit = "400d"      # off by default: audit records older than this, once every audit sink
//! #                     # delivered them, are deleted from the store up to a signed checkpoint
//! ```
//!
//! Only tasks that are over are deleted: not `open`, every lease `revoked` (a credential whose
//! revocation is not confirmed keeps its task), no approver notification pending. The audit
//! trail keeps every record of them, and each pass that deleted anything is recorded
//! (`store.pruned`, naming the tasks, in the deletion's transaction). A task is deleted only
//! once both its expiry and its end are `ended_tasks` ago, and once every Shared Signals stream
//! has sent its revocations.
//!
//! Audit retention needs at least one `[[audit.sinks]]` (the records live on there), signed
//! checkpoints (`[audit] checkpoint_interval` above `0s`) and to be at least `[tasks] max_ttl`.
//! Records go up to the newest checkpoint that is older than `audit` and that every sink and
//! Shared Signals stream has passed, after the store checked them; the first record kept is
//! sealed by a cut the broker signs, and an `audit.pruned` record in the chain says where it was
//! cut, so `latch audit verify` checks what is kept and reports any other missing start.

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
    /// least 1 minute: a task is taken only once its credentials expired, every lease is
    /// revoked and every Shared Signals stream passed its records, whatever this says).
    #[serde(default = "default_ended_tasks", with = "humantime_serde")]
    pub ended_tasks: Duration,
    /// How often each replica runs a pass (default 10 minutes, at least 1 second).
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// How long audit records are kept in the store (default: for ever; at least 1 minute).
    /// Only records every audit sink delivered go, up to a signed checkpoint.
    #[serde(default, with = "humantime_serde")]
    pub audit: Option<Duration>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ended_tasks: default_ended_tasks(),
            interval: default_interval(),
            audit: None,
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
        if self.ended_tasks < Duration::from_secs(60) {
            return Err("`retention.ended_tasks` must be at least 1m".into());
        }
        if self.audit.is_some_and(|a| a < Duration::from_secs(60)) {
            return Err("`retention.audit` must be at least 1m".into());
        }
        if self.interval < Duration::from_secs(1) {
            return Err("`retention.interval` must be at least 1s".into());
        }
        Ok(())
    }

    /// Checks audit retention against the rest of the configuration: it needs `sinks` (at
    /// least one), a `checkpoint_interval` above zero, and to be at least `max_task_ttl` (no
    /// credential outlives its task, so every record a live credential's leak response or
    /// timeline reads is kept).
    ///
    /// # Errors
    /// A message naming what is missing.
    pub fn validate_audit(
        &self,
        sinks: usize,
        checkpoint_interval: Duration,
        max_task_ttl: Duration,
    ) -> Result<(), String> {
        let Some(audit) = self.audit else {
            return Ok(());
        };
        if audit < max_task_ttl {
            return Err(format!(
                "`retention.audit` must be at least `tasks.max_ttl` ({}): a live task's \
                 credentials and timeline read its audit records",
                humantime_serde::re::humantime::format_duration(max_task_ttl)
            ));
        }
        if sinks == 0 {
            return Err(
                "`retention.audit` needs at least one `[[audit.sinks]]`: audit records \
                        are pruned only once every sink delivered them"
                    .into(),
            );
        }
        if checkpoint_interval.is_zero() {
            return Err(
                "`retention.audit` needs `audit.checkpoint_interval` above 0s: audit \
                        records are pruned only up to a signed checkpoint"
                    .into(),
            );
        }
        Ok(())
    }

    /// `audit` in whole seconds, when set.
    pub fn audit_secs(&self) -> Option<i64> {
        (self.audit).map(|a| i64::try_from(a.as_secs()).unwrap_or(i64::MAX))
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
        assert_eq!(c.audit_secs(), None);
        let c: RetentionConfig = toml::from_str("audit = \"400d\"").unwrap();
        assert_eq!(c.audit_secs(), Some(400 * 86_400));
        for bad in [
            "ended_tasks = \"59s\"",
            "interval = \"0s\"",
            "keep = 1",
            "audit = \"30s\"",
            "audit = \"soon\"",
        ] {
            let parsed = toml::from_str::<RetentionConfig>(bad)
                .map_err(|e| e.to_string())
                .and_then(|c| c.validate());
            assert!(parsed.is_err(), "{bad}");
        }
        let c: RetentionConfig = toml::from_str("audit = \"1d\"").unwrap();
        let (every, day, week) = (
            Duration::from_secs(60),
            Duration::from_secs(86_400),
            Duration::from_secs(7 * 86_400),
        );
        assert!(c.validate_audit(1, every, day).is_ok());
        assert!(
            c.validate_audit(0, every, day)
                .unwrap_err()
                .contains("audit.sinks")
        );
        assert!((c.validate_audit(1, Duration::ZERO, day).unwrap_err()).contains("checkpoint"));
        assert!((c.validate_audit(1, every, week).unwrap_err()).contains("tasks.max_ttl"));
        assert!((RetentionConfig::default().validate_audit(0, Duration::ZERO, week)).is_ok());
    }
}
