//! The task's past and the budgets as Cedar sees them: the `Latch::History` entity that
//! `context.history` references, and the `context.budget` record (see [`crate::history`]).
//!
//! `Latch::History::"<task id>"` has attributes `grants`, `renewals`, `grants_this_minute`,
//! `live_leases` (only when a live-lease budget is set), `resources`, `sensitivities`,
//! `tainted` (a `secret` credential was granted in the task), `egress`, `leaked`, `tools`,
//! `tool_calls`, and one **tag** per granted `"<resource>:<action>"` whose value is how many
//! times it was granted: `context.history.hasTag("db:write") &&
//! context.history.getTag("db:write") >= 3`.
//!
//! The history is the task's *before* this request: a request never counts itself. A renewal or
//! re-evaluation sees the whole history, its own lease's grant included.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use cedar_policy::{Entity, RestrictedExpression};

use super::{s, uid};
use crate::history::{BudgetLimits, Budgets, TaskHistory, Usage};

/// The past of a task and the budgets, as one decision reads them.
#[derive(Debug, Clone, Copy)]
pub struct HistoryInput<'a> {
    /// The task's history before this request.
    pub history: &'a TaskHistory,
    /// The configured budgets.
    pub budgets: &'a Budgets,
    /// The workload's usage in the current budget windows (zero when no workload budget is
    /// set: it is not counted then).
    pub workload_usage: &'a Usage,
}

static EMPTY_HISTORY: TaskHistory = TaskHistory {
    usage: NO_USAGE,
    resources: BTreeSet::new(),
    sensitivities: BTreeSet::new(),
    grant_counts: BTreeMap::new(),
    egress: false,
    leaked: false,
    tools: BTreeSet::new(),
    tool_calls: 0,
    version: 0,
};

const NO_USAGE: Usage = Usage {
    grants: 0,
    renewals: 0,
    grants_this_minute: 0,
    live_leases: None,
};

static NO_USAGE_STATIC: Usage = NO_USAGE;

const NO_LIMITS: BudgetLimits = BudgetLimits {
    max_grants: None,
    max_live_leases: None,
    max_renewals: None,
    grants_per_minute: None,
    end_task_on_breach: false,
};

static NO_BUDGETS: Budgets = Budgets {
    task: NO_LIMITS,
    workload: NO_LIMITS,
    workload_window_secs: 86_400,
};

impl HistoryInput<'static> {
    /// A task with no past and no budgets (a new task; schema probes).
    pub fn empty() -> Self {
        Self {
            history: &EMPTY_HISTORY,
            budgets: &NO_BUDGETS,
            workload_usage: &NO_USAGE_STATIC,
        }
    }
}

fn long(n: i64) -> RestrictedExpression {
    RestrictedExpression::new_long(n)
}

fn strings(v: &BTreeSet<String>) -> RestrictedExpression {
    RestrictedExpression::new_set(v.iter().map(|x| s(x)))
}

/// The `Latch::History` entity of task `task_id`.
///
/// # Errors
/// A message when Cedar refuses the entity (it never should: names and values are plain).
pub(super) fn history_entity(task_id: &str, h: &TaskHistory) -> Result<Entity, String> {
    let mut a: HashMap<String, RestrictedExpression> = HashMap::new();
    a.insert("grants".into(), long(h.usage.grants));
    a.insert("renewals".into(), long(h.usage.renewals));
    a.insert(
        "grants_this_minute".into(),
        long(h.usage.grants_this_minute),
    );
    if let Some(l) = h.usage.live_leases {
        a.insert("live_leases".into(), long(l));
    }
    a.insert("resources".into(), strings(&h.resources));
    a.insert("sensitivities".into(), strings(&h.sensitivities));
    a.insert(
        "tainted".into(),
        RestrictedExpression::new_bool(h.tainted()),
    );
    a.insert("egress".into(), RestrictedExpression::new_bool(h.egress));
    a.insert("leaked".into(), RestrictedExpression::new_bool(h.leaked));
    a.insert("tools".into(), strings(&h.tools));
    a.insert("tool_calls".into(), long(h.tool_calls));
    let tags = h
        .grant_counts
        .iter()
        .map(|(k, n)| (k.clone(), long(*n)))
        .collect::<Vec<_>>();
    Entity::new_with_tags(uid("History", task_id), a, HashSet::new(), tags)
        .map_err(|e| e.to_string())
}

/// `context.history`: a reference to the task's `Latch::History` entity.
pub(super) fn history_ref(task_id: &str) -> RestrictedExpression {
    RestrictedExpression::new_entity_uid(uid("History", task_id))
}

fn limits_record(l: &BudgetLimits) -> Result<RestrictedExpression, String> {
    let pairs = [
        ("max_grants", l.max_grants),
        ("max_live_leases", l.max_live_leases),
        ("max_renewals", l.max_renewals),
        ("grants_per_minute", l.grants_per_minute),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k.to_owned(), long(v))));
    RestrictedExpression::new_record(pairs).map_err(|e| e.to_string())
}

/// `context.budget`: `{task: limits, workload: limits, workload_usage: {grants, renewals,
/// grants_this_minute, live_leases?}}` (a limit that is not set is absent).
///
/// # Errors
/// A message when Cedar refuses the record (it never should).
pub(super) fn budget_record(h: &HistoryInput<'_>) -> Result<RestrictedExpression, String> {
    let u = h.workload_usage;
    let mut usage = vec![
        ("grants".to_owned(), long(u.grants)),
        ("renewals".to_owned(), long(u.renewals)),
        ("grants_this_minute".to_owned(), long(u.grants_this_minute)),
    ];
    if let Some(l) = u.live_leases {
        usage.push(("live_leases".to_owned(), long(l)));
    }
    RestrictedExpression::new_record([
        ("task".to_owned(), limits_record(&h.budgets.task)?),
        ("workload".to_owned(), limits_record(&h.budgets.workload)?),
        (
            "workload_usage".to_owned(),
            RestrictedExpression::new_record(usage).map_err(|e| e.to_string())?,
        ),
    ])
    .map_err(|e| e.to_string())
}
