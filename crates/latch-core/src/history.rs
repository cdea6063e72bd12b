//! A task's history and the budgets of tasks and workloads: what Cedar sees of the past
//! (`context.history`, `context.budget`) and the counters the store keeps for it.
//!
//! Every fact is a **counter** row kept by the store ([`CounterDelta`] in a
//! [`Write::Count`](crate::ports::Write::Count)), written in the same commit as what it counts:
//! a grant's counters commit with its lease, a leak's with its `leak.detected` event, a tool
//! call's with its `tool.called` event. So the history a decision reads is exactly what
//! committed, on every replica, across restarts.
//!
//! A counter may carry a **cap**: the store refuses (and rolls back the whole batch) an
//! increment that would pass it ([`StoreError::LimitReached`](crate::ports::StoreError)). That
//! is how a budget holds when two replicas grant in the same task at the same instant: the
//! check is inside the commit, not before it.
//!
//! Counter names in scope `task` (subject: the task id):
//! * `grants`: credentials granted (renewals excluded);
//! * `renewals`: renewals;
//! * `minute`: grants in the current one-minute window (fixed windows aligned to the Unix
//!   epoch, so up to twice the rate can pass across a window edge);
//! * `resource:<id>`, `sensitivity:<s>`, `action:<resource>:<action>`: grants by resource,
//!   by data sensitivity, by resource and action;
//! * `egress`: grants of resources marked `egress`;
//! * `leaked`: credentials of the task reported leaked;
//! * `tool:<name>`, `tool_calls`: tool uses reported by the agent or called through the
//!   gateway.
//!
//! In scope `workload` (subject: the workload id), only when workload budgets are configured:
//! `grants` and `renewals` per budget window, `minute`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// Whose counter: a task's or a workload's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub enum CounterScope {
    /// Subject is a task id.
    Task,
    /// Subject is a workload id (`iss#sub`).
    Workload,
}

impl CounterScope {
    /// Stable string form, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Task => "task",
            Self::Workload => "workload",
        }
    }
}

/// One increment of one counter, committed inside a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterDelta {
    /// Task or workload.
    pub scope: CounterScope,
    /// The task id or workload id.
    pub subject: String,
    /// Counter name (see the module docs).
    pub name: String,
    /// Start of the counter's window (Unix seconds); `0` for a counter that never resets. A
    /// stored count from an older window is replaced, not added to.
    pub window_start: i64,
    /// Amount added (≥ 0; 0 only creates the row).
    pub by: i64,
    /// The count may not pass this (inclusive) after the increment; `None`: no cap.
    pub cap: Option<i64>,
    /// When (Unix seconds), recorded as the row's last update.
    pub at_unix_secs: i64,
}

/// A counter as read back from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterRow {
    /// Counter name.
    pub name: String,
    /// Start of the window its count belongs to (Unix seconds; `0`: never resets).
    pub window_start: i64,
    /// The count.
    pub count: i64,
}

/// Seconds in the rate window of `grants_per_minute`.
pub const MINUTE: i64 = 60;

/// Start of the fixed window of length `len` seconds that holds `now` (Unix seconds).
pub fn window_start(now_unix_secs: i64, len: i64) -> i64 {
    if len <= 0 {
        return 0;
    }
    now_unix_secs - now_unix_secs.rem_euclid(len)
}

/// The limits of one budget scope (`[budgets.task]` or `[budgets.workload]`); `None` is no
/// limit. Counts are inclusive: `max_grants = 3` allows three grants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct BudgetLimits {
    /// Most credentials granted (per task; per workload, per `window_secs`).
    pub max_grants: Option<i64>,
    /// Most credentials live (issuing or active, unexpired) at once.
    pub max_live_leases: Option<i64>,
    /// Most renewals (per task; per workload, per `window_secs`).
    pub max_renewals: Option<i64>,
    /// Most grants in one one-minute window.
    pub grants_per_minute: Option<i64>,
    /// Whether a breach of this scope's budget also ends the task that asked (all its
    /// credentials revoked).
    pub end_task_on_breach: bool,
}

impl BudgetLimits {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.max_grants.is_some()
            || self.max_live_leases.is_some()
            || self.max_renewals.is_some()
            || self.grants_per_minute.is_some()
    }
}

/// Budgets of tasks and of workloads (`[budgets]` in `latch.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Budgets {
    /// Per task.
    pub task: BudgetLimits,
    /// Per workload, across its tasks.
    pub workload: BudgetLimits,
    /// Window of the workload's `max_grants` and `max_renewals` (seconds, fixed windows
    /// aligned to the Unix epoch; default one day).
    pub workload_window_secs: i64,
}

impl Default for Budgets {
    fn default() -> Self {
        Self {
            task: BudgetLimits::default(),
            workload: BudgetLimits::default(),
            workload_window_secs: 86_400,
        }
    }
}

/// Which budget a request passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetKind {
    /// `max_grants`.
    Grants,
    /// `max_live_leases`.
    LiveLeases,
    /// `max_renewals`.
    Renewals,
    /// `grants_per_minute`.
    GrantsPerMinute,
}

impl BudgetKind {
    /// The configuration key.
    pub fn key(self) -> &'static str {
        match self {
            Self::Grants => "max_grants",
            Self::LiveLeases => "max_live_leases",
            Self::Renewals => "max_renewals",
            Self::GrantsPerMinute => "grants_per_minute",
        }
    }
}

/// A budget a request would pass: whose, which, and its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetBreach {
    /// Task or workload budget.
    pub scope: CounterScope,
    /// Which limit.
    pub kind: BudgetKind,
    /// The limit.
    pub limit: i64,
}

impl BudgetBreach {
    /// The reason a denial gives, e.g. `task budget max_grants (3) reached`.
    pub fn reason(&self) -> String {
        format!(
            "{} budget {} ({}) reached",
            self.scope.as_str(),
            self.kind.key(),
            self.limit
        )
    }

    /// The breach a capped counter named `name` in `scope` stands for (for a limit the store
    /// enforced inside the commit).
    pub fn of_counter(scope: CounterScope, name: &str, limits: &BudgetLimits) -> Option<Self> {
        let (kind, limit) = match name {
            "grants" => (BudgetKind::Grants, limits.max_grants?),
            "renewals" => (BudgetKind::Renewals, limits.max_renewals?),
            "minute" => (BudgetKind::GrantsPerMinute, limits.grants_per_minute?),
            "live" => (BudgetKind::LiveLeases, limits.max_live_leases?),
            _ => return None,
        };
        Some(Self { scope, kind, limit })
    }
}

/// A task's history and the budgets it is held to, as `GET /v1/tasks/{id}/history` shows
/// them: what policy sees (`context.history`, `context.budget`).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct HistoryReport {
    /// The task.
    pub task_id: String,
    /// Its history (live leases counted when a task live-lease budget is set).
    pub history: TaskHistory,
    /// Whether it is tainted (held a `secret` credential).
    pub tainted: bool,
    /// The configured budgets.
    pub budgets: Budgets,
    /// The task owner's usage in the current workload windows (zero without workload budgets).
    pub workload_usage: Usage,
}

/// What one scope has used, as the budgets count it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Usage {
    /// Grants (a task: ever; a workload: in the current budget window).
    pub grants: i64,
    /// Renewals (same windows as `grants`).
    pub renewals: i64,
    /// Grants in the current one-minute window.
    pub grants_this_minute: i64,
    /// Live leases, when counted (only when a `max_live_leases` budget is set: the count is
    /// bounded by it).
    pub live_leases: Option<i64>,
}

/// A task's history as policy sees it (`context.history`), read from its counters. In a
/// `latch policy test` case it is given as `history = { sensitivities = ["secret"], … }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TaskHistory {
    /// Counts of the task (grants, renewals, this minute's grants, live leases if counted).
    pub usage: Usage,
    /// Resource ids granted in the task.
    pub resources: BTreeSet<String>,
    /// Data sensitivities of what was granted.
    pub sensitivities: BTreeSet<String>,
    /// Grants by `"<resource>:<action>"`.
    pub grant_counts: BTreeMap<String, i64>,
    /// Whether a credential of an `egress` resource was granted.
    pub egress: bool,
    /// Whether a credential of the task was reported leaked.
    pub leaked: bool,
    /// Tools used (reported by the agent or called through the gateway).
    pub tools: BTreeSet<String>,
    /// Number of tool uses.
    pub tool_calls: i64,
    /// The history's version: bumped in the commit of every change that can withdraw access
    /// (a new sensitivity, the first egress grant, a leak). Every grant and renewal commits only
    /// if it is still the version its decision read (counter `version`), so a decision never
    /// races such a change.
    pub version: i64,
}

impl TaskHistory {
    /// Whether the task has held a `secret`-sensitivity credential: it is **tainted**.
    pub fn tainted(&self) -> bool {
        self.sensitivities.contains("secret")
    }

    /// The history read from a task's counter rows at `now` (a windowed count from an older
    /// window reads as 0).
    pub fn from_rows(rows: &[CounterRow], now_unix_secs: i64) -> Self {
        let mut h = Self::default();
        let minute = window_start(now_unix_secs, MINUTE);
        for r in rows {
            let n = r.name.as_str();
            match n {
                "grants" => h.usage.grants = r.count,
                "renewals" => h.usage.renewals = r.count,
                "minute" if r.window_start == minute => h.usage.grants_this_minute = r.count,
                "egress" => h.egress = r.count > 0,
                "leaked" => h.leaked = r.count > 0,
                "tool_calls" => h.tool_calls = r.count,
                "version" => h.version = r.count,
                _ => {
                    if let Some(v) = n.strip_prefix("resource:") {
                        h.resources.insert(v.to_owned());
                    } else if let Some(v) = n.strip_prefix("sensitivity:") {
                        h.sensitivities.insert(v.to_owned());
                    } else if let Some(v) = n.strip_prefix("action:") {
                        h.grant_counts.insert(v.to_owned(), r.count);
                    } else if let Some(v) = n.strip_prefix("tool:") {
                        h.tools.insert(v.to_owned());
                    }
                }
            }
        }
        h
    }
}

/// A workload's usage read from its counter rows at `now`, for budget `window_secs`.
pub fn workload_usage(rows: &[CounterRow], now_unix_secs: i64, window_secs: i64) -> Usage {
    let window = window_start(now_unix_secs, window_secs);
    let minute = window_start(now_unix_secs, MINUTE);
    let mut u = Usage::default();
    for r in rows {
        match r.name.as_str() {
            "grants" if r.window_start == window => u.grants = r.count,
            "renewals" if r.window_start == window => u.renewals = r.count,
            "minute" if r.window_start == minute => u.grants_this_minute = r.count,
            _ => {}
        }
    }
    u
}

/// The first budget of `limits` that one more grant would pass, given `usage`.
pub fn grant_breach(
    scope: CounterScope,
    limits: &BudgetLimits,
    usage: &Usage,
) -> Option<BudgetBreach> {
    let over = |limit: Option<i64>, used: i64| limit.filter(|l| used >= *l);
    let b = |kind, limit| Some(BudgetBreach { scope, kind, limit });
    if let Some(l) = over(limits.max_grants, usage.grants) {
        return b(BudgetKind::Grants, l);
    }
    if let Some(l) = over(limits.grants_per_minute, usage.grants_this_minute) {
        return b(BudgetKind::GrantsPerMinute, l);
    }
    if let (Some(l), Some(live)) = (limits.max_live_leases, usage.live_leases)
        && live >= l
    {
        return b(BudgetKind::LiveLeases, l);
    }
    None
}

/// The first budget of `limits` that one more renewal would pass, given `usage`.
pub fn renewal_breach(
    scope: CounterScope,
    limits: &BudgetLimits,
    usage: &Usage,
) -> Option<BudgetBreach> {
    limits
        .max_renewals
        .filter(|l| usage.renewals >= *l)
        .map(|limit| BudgetBreach {
            scope,
            kind: BudgetKind::Renewals,
            limit,
        })
}

/// What one grant adds: for `resource` (`sensitivity`, `egress`) with `actions`.
#[derive(Debug, Clone, Copy)]
pub struct GrantFacts<'a> {
    /// The task id.
    pub task_id: &'a str,
    /// The workload id (the task's owner).
    pub workload_id: &'a str,
    /// Resource id.
    pub resource: &'a str,
    /// Its data sensitivity.
    pub sensitivity: &'a str,
    /// Whether it is marked `egress`.
    pub egress: bool,
    /// Granted actions.
    pub actions: &'a [String],
}

fn delta(
    scope: CounterScope,
    subject: &str,
    name: String,
    window_start: i64,
    cap: Option<i64>,
) -> CounterDelta {
    CounterDelta {
        scope,
        subject: subject.to_owned(),
        name,
        window_start,
        by: 1,
        cap,
        at_unix_secs: 0,
    }
}

/// Stamps every delta with `now`.
fn at(mut v: Vec<CounterDelta>, now_unix_secs: i64) -> Vec<CounterDelta> {
    for d in &mut v {
        d.at_unix_secs = now_unix_secs;
    }
    v
}

/// The counter increments of one grant at `now`, capped by `budgets` (the store refuses the
/// commit that would pass a cap). Workload counters only when workload budgets are set.
pub fn grant_deltas(
    f: &GrantFacts<'_>,
    budgets: &Budgets,
    now_unix_secs: i64,
) -> Vec<CounterDelta> {
    use CounterScope::{Task, Workload};
    let minute = window_start(now_unix_secs, MINUTE);
    let t = &budgets.task;
    let mut v = vec![
        delta(Task, f.task_id, "grants".into(), 0, t.max_grants),
        delta(
            Task,
            f.task_id,
            "minute".into(),
            minute,
            t.grants_per_minute,
        ),
        delta(Task, f.task_id, format!("resource:{}", f.resource), 0, None),
        delta(
            Task,
            f.task_id,
            format!("sensitivity:{}", f.sensitivity),
            0,
            None,
        ),
    ];
    for a in f.actions {
        v.push(delta(
            Task,
            f.task_id,
            format!("action:{}:{a}", f.resource),
            0,
            None,
        ));
    }
    if f.egress {
        v.push(delta(Task, f.task_id, "egress".into(), 0, None));
    }
    let w = &budgets.workload;
    if w.any() {
        let window = window_start(now_unix_secs, budgets.workload_window_secs);
        v.push(delta(
            Workload,
            f.workload_id,
            "grants".into(),
            window,
            w.max_grants,
        ));
        v.push(delta(
            Workload,
            f.workload_id,
            "minute".into(),
            minute,
            w.grants_per_minute,
        ));
    }
    at(v, now_unix_secs)
}

/// The counter increments of one renewal at `now`, capped by `budgets`.
pub fn renewal_deltas(
    task_id: &str,
    workload_id: &str,
    budgets: &Budgets,
    now_unix_secs: i64,
) -> Vec<CounterDelta> {
    let mut v = vec![delta(
        CounterScope::Task,
        task_id,
        "renewals".into(),
        0,
        budgets.task.max_renewals,
    )];
    if budgets.workload.any() {
        let window = window_start(now_unix_secs, budgets.workload_window_secs);
        v.push(delta(
            CounterScope::Workload,
            workload_id,
            "renewals".into(),
            window,
            budgets.workload.max_renewals,
        ));
    }
    at(v, now_unix_secs)
}

/// The counter increments recording a leaked credential of `task_id` at `now` (a change
/// that can withdraw access: the history's version moves too).
pub fn leak_deltas(task_id: &str, now_unix_secs: i64) -> Vec<CounterDelta> {
    at(
        vec![
            delta(CounterScope::Task, task_id, "leaked".into(), 0, None),
            version_delta(task_id, 1),
        ],
        now_unix_secs,
    )
}

/// The counter increments recording data sent out through an egress tool in `task_id` at
/// `now`; `first` (the task had no egress yet) also moves the history's version.
pub fn egress_deltas(task_id: &str, first: bool, now_unix_secs: i64) -> Vec<CounterDelta> {
    let mut v = vec![delta(CounterScope::Task, task_id, "egress".into(), 0, None)];
    if first {
        v.push(version_delta(task_id, 1));
    }
    at(v, now_unix_secs)
}

/// The increment of a task's history version by `by` (0 creates the row at task open, so a
/// guard on it has a row to lock from the first grant on).
pub fn version_delta(task_id: &str, by: i64) -> CounterDelta {
    let mut d = delta(CounterScope::Task, task_id, "version".into(), 0, None);
    d.by = by;
    d
}

/// The counter increments recording one use of tool `tool` in `task_id` at `now`.
pub fn tool_deltas(task_id: &str, tool: &str, now_unix_secs: i64) -> Vec<CounterDelta> {
    at(
        vec![
            delta(CounterScope::Task, task_id, format!("tool:{tool}"), 0, None),
            delta(CounterScope::Task, task_id, "tool_calls".into(), 0, None),
        ],
        now_unix_secs,
    )
}

/// Applies `deltas` to `rows` in memory the way the store does (same-window add, new-window
/// replace), refusing like the store when a cap would pass. For tests and property checks of
/// the store's rule.
///
/// # Errors
/// The name of the first counter whose cap would pass; `rows` is then unchanged.
pub fn apply_in_memory(
    rows: &mut BTreeMap<(CounterScope, String, String), CounterRow>,
    deltas: &[CounterDelta],
) -> Result<(), String> {
    let mut next = rows.clone();
    for d in deltas {
        let key = (d.scope, d.subject.clone(), d.name.clone());
        let row = next.entry(key).or_insert(CounterRow {
            name: d.name.clone(),
            window_start: d.window_start,
            count: 0,
        });
        let base = if row.window_start == d.window_start {
            row.count
        } else {
            0
        };
        if d.cap.is_some_and(|c| base + d.by > c) {
            return Err(d.name.clone());
        }
        row.window_start = d.window_start;
        row.count = base + d.by;
    }
    *rows = next;
    Ok(())
}

#[cfg(test)]
mod tests;
