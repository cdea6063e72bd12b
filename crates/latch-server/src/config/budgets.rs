//! `[budgets]` in `latch.toml`: how much one task, and one workload across its tasks, may be
//! granted (see [`latch_core::history`]).
//!
//! ```toml
//! [budgets.task]
//! max_grants = 20            # credentials granted in one task (renewals excluded)
//! max_live_leases = 5        # live at once
//! max_renewals = 40
//! grants_per_minute = 10     # fixed one-minute windows
//! end_task_on_breach = true  # a breach also ends the task (every credential revoked)
//!
//! [budgets.workload]         # across all tasks of one workload
//! max_grants = 500           # per `window`
//! max_live_leases = 50
//! max_renewals = 1000        # per `window`
//! grants_per_minute = 60
//! window = "24h"             # fixed windows aligned to the Unix epoch (default 24h)
//! ```
//!
//! Every limit is optional (absent: no limit) and at least 1. Counts are kept in the store, in
//! the same commit as the grant, so they hold across restarts and replicas. A resource can
//! also say that a breach on a request for it ends the task: `on_budget_breach = "end_task"`.

use std::time::Duration;

use latch_core::history::{BudgetLimits, Budgets};
use serde::Deserialize;

/// `[budgets]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetsConfig {
    /// Per task.
    #[serde(default)]
    pub task: LimitsConfig,
    /// Per workload, across its tasks.
    #[serde(default)]
    pub workload: WorkloadLimitsConfig,
}

/// `[budgets.task]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Most credentials granted.
    pub max_grants: Option<i64>,
    /// Most credentials live at once.
    pub max_live_leases: Option<i64>,
    /// Most renewals.
    pub max_renewals: Option<i64>,
    /// Most grants in one one-minute window.
    pub grants_per_minute: Option<i64>,
    /// Whether a breach also ends the task (default false: the request is only denied).
    #[serde(default)]
    pub end_task_on_breach: bool,
}

/// `[budgets.workload]`: the task limits plus the window of `max_grants` and `max_renewals`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadLimitsConfig {
    /// Most credentials granted per `window`.
    pub max_grants: Option<i64>,
    /// Most credentials live at once across the workload's open tasks.
    pub max_live_leases: Option<i64>,
    /// Most renewals per `window`.
    pub max_renewals: Option<i64>,
    /// Most grants in one one-minute window.
    pub grants_per_minute: Option<i64>,
    /// Whether a breach also ends the task that asked.
    #[serde(default)]
    pub end_task_on_breach: bool,
    /// Window of `max_grants` and `max_renewals` (default 24h, at least 1 minute).
    #[serde(default, with = "humantime_serde")]
    pub window: Option<Duration>,
}

/// The largest limit accepted: a bigger one is no budget (leave the key out for that).
const MAX_LIMIT: i64 = 1_000_000_000;

fn check(scope: &str, key: &str, v: Option<i64>) -> Result<(), String> {
    match v {
        Some(n) if !(1..=MAX_LIMIT).contains(&n) => Err(format!(
            "[budgets.{scope}] `{key}` must be 1 to {MAX_LIMIT}, got {n} (leave it out for no limit)"
        )),
        _ => Ok(()),
    }
}

impl BudgetsConfig {
    /// Checks every limit.
    ///
    /// # Errors
    /// A message naming the key.
    pub fn validate(&self) -> Result<(), String> {
        let t = &self.task;
        let w = &self.workload;
        for (scope, key, v) in [
            ("task", "max_grants", t.max_grants),
            ("task", "max_live_leases", t.max_live_leases),
            ("task", "max_renewals", t.max_renewals),
            ("task", "grants_per_minute", t.grants_per_minute),
            ("workload", "max_grants", w.max_grants),
            ("workload", "max_live_leases", w.max_live_leases),
            ("workload", "max_renewals", w.max_renewals),
            ("workload", "grants_per_minute", w.grants_per_minute),
        ] {
            check(scope, key, v)?;
        }
        if w.window
            .is_some_and(|d| d < Duration::from_secs(60) || d > Duration::from_secs(366 * 86_400))
        {
            return Err("[budgets.workload] `window` must be 1m to 366d".into());
        }
        Ok(())
    }

    /// The budgets as the broker enforces them.
    pub fn budgets(&self) -> Budgets {
        let t = &self.task;
        let w = &self.workload;
        Budgets {
            task: BudgetLimits {
                max_grants: t.max_grants,
                max_live_leases: t.max_live_leases,
                max_renewals: t.max_renewals,
                grants_per_minute: t.grants_per_minute,
                end_task_on_breach: t.end_task_on_breach,
            },
            workload: BudgetLimits {
                max_grants: w.max_grants,
                max_live_leases: w.max_live_leases,
                max_renewals: w.max_renewals,
                grants_per_minute: w.grants_per_minute,
                end_task_on_breach: w.end_task_on_breach,
            },
            workload_window_secs: w
                .window
                .map_or(86_400, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_refused_and_absent_is_no_limit() {
        let c: BudgetsConfig = toml::from_str("[task]\nmax_grants = 0\n").unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .contains("`max_grants` must be 1 to")
        );
        let c: BudgetsConfig =
            toml::from_str("[task]\nmax_grants = 3\n[workload]\nwindow = \"1h\"\n").unwrap();
        c.validate().unwrap();
        let b = c.budgets();
        assert_eq!(b.task.max_grants, Some(3));
        assert_eq!(b.task.max_live_leases, None);
        assert_eq!(b.workload_window_secs, 3600);
        assert!(!b.workload.any());
        let c: BudgetsConfig =
            toml::from_str("[task]\nmax_grants = 9223372036854775807\n").unwrap();
        assert!(c.validate().is_err());
        let c: BudgetsConfig = toml::from_str("[workload]\nwindow = \"100000d\"\n").unwrap();
        assert!(c.validate().unwrap_err().contains("1m to 366d"));
    }
}
