use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn budgets(max_grants: Option<i64>, per_minute: Option<i64>) -> Budgets {
    Budgets {
        task: BudgetLimits {
            max_grants,
            grants_per_minute: per_minute,
            ..BudgetLimits::default()
        },
        ..Budgets::default()
    }
}

fn facts<'a>(actions: &'a [String], sensitivity: &'a str, egress: bool) -> GrantFacts<'a> {
    GrantFacts {
        task_id: "t1",
        workload_id: "iss#wl",
        resource: "vault",
        sensitivity,
        egress,
        actions,
    }
}

fn rows_of(
    m: &BTreeMap<(CounterScope, String, String), CounterRow>,
    scope: CounterScope,
) -> Vec<CounterRow> {
    m.iter()
        .filter(|((s, _, _), _)| *s == scope)
        .map(|(_, r)| r.clone())
        .collect()
}

#[test]
fn a_secret_grant_taints_the_task_and_is_counted_by_resource_and_action() {
    let mut m = BTreeMap::new();
    let actions = vec!["read".to_owned(), "write".to_owned()];
    let d = grant_deltas(&facts(&actions, "secret", false), &Budgets::default(), 120);
    apply_in_memory(&mut m, &d).unwrap();
    apply_in_memory(&mut m, &tool_deltas("t1", "github__push", 125)).unwrap();
    apply_in_memory(&mut m, &leak_deltas("t1", 126)).unwrap();
    let h = TaskHistory::from_rows(&rows_of(&m, CounterScope::Task), 130);
    assert!(h.tainted());
    assert!(h.leaked);
    assert!(!h.egress);
    assert_eq!(h.usage.grants, 1);
    assert_eq!(h.usage.grants_this_minute, 1);
    assert_eq!(h.grant_counts.get("vault:read"), Some(&1));
    assert_eq!(h.grant_counts.get("vault:write"), Some(&1));
    assert!(h.resources.contains("vault"));
    assert!(h.tools.contains("github__push"));
    assert_eq!(h.tool_calls, 1);
    assert_eq!(h.version, 1, "the leak moved the history's version");
    // A minute later the rate window has moved on.
    let later = TaskHistory::from_rows(&rows_of(&m, CounterScope::Task), 185);
    assert_eq!(later.usage.grants_this_minute, 0);
    assert_eq!(later.usage.grants, 1);
}

#[test]
fn workload_counters_only_when_workload_budgets_are_set() {
    let actions = vec!["read".to_owned()];
    let d = grant_deltas(&facts(&actions, "internal", true), &Budgets::default(), 0);
    assert!(d.iter().all(|d| d.scope == CounterScope::Task));
    let mut b = Budgets::default();
    b.workload.max_grants = Some(10);
    let d = grant_deltas(&facts(&actions, "internal", true), &b, 0);
    assert!(
        d.iter()
            .any(|d| d.scope == CounterScope::Workload && d.cap == Some(10))
    );
}

#[test]
fn breach_names_the_budget_in_its_reason() {
    let b = grant_breach(
        CounterScope::Task,
        &BudgetLimits {
            max_grants: Some(3),
            ..BudgetLimits::default()
        },
        &Usage {
            grants: 3,
            ..Usage::default()
        },
    )
    .unwrap();
    assert_eq!(b.reason(), "task budget max_grants (3) reached");
    assert_eq!(
        BudgetBreach::of_counter(
            CounterScope::Task,
            "minute",
            &BudgetLimits {
                grants_per_minute: Some(5),
                ..BudgetLimits::default()
            }
        )
        .map(|b| b.kind),
        Some(BudgetKind::GrantsPerMinute)
    );
}

proptest! {
    /// Whatever the order and timing of grants, the committed count never passes a cap: in any
    /// one minute at most `per_minute` grants, in all at most `max_grants`; and the pre-check
    /// (`grant_breach`) refuses exactly when the commit would.
    #[test]
    fn caps_are_never_passed(
        max_grants in 1i64..20,
        per_minute in 1i64..8,
        steps in proptest::collection::vec(0i64..40, 1..80),
    ) {
        let b = budgets(Some(max_grants), Some(per_minute));
        let actions = vec!["read".to_owned()];
        let mut m = BTreeMap::new();
        let mut now = 1_000_000;
        let mut granted_at: Vec<i64> = Vec::new();
        for dt in steps {
            now += dt;
            let h = TaskHistory::from_rows(&rows_of(&m, CounterScope::Task), now);
            let pre = grant_breach(CounterScope::Task, &b.task, &h.usage);
            let d = grant_deltas(&facts(&actions, "internal", false), &b, now);
            let committed = apply_in_memory(&mut m, &d);
            prop_assert_eq!(pre.is_none(), committed.is_ok());
            if committed.is_ok() {
                granted_at.push(now);
            }
        }
        prop_assert!(granted_at.len() as i64 <= max_grants);
        let mut per_window: BTreeMap<i64, i64> = BTreeMap::new();
        for t in &granted_at {
            *per_window.entry(window_start(*t, MINUTE)).or_default() += 1;
        }
        prop_assert!(per_window.values().all(|n| *n <= per_minute));
    }

    /// Two replicas committing interleaved grants against one store never pass the task's
    /// `max_grants`: the cap is checked by whichever commit comes second.
    #[test]
    fn interleaved_replicas_never_pass_max_grants(max_grants in 1i64..10, n in 1usize..40) {
        let b = budgets(Some(max_grants), None);
        let actions = vec!["read".to_owned()];
        let mut m = BTreeMap::new();
        // Both replicas read the same (stale) history, then both commit.
        let mut ok = 0;
        for _ in 0..n {
            let d = grant_deltas(&facts(&actions, "internal", false), &b, 5);
            if apply_in_memory(&mut m, &d).is_ok() { ok += 1; }
            if apply_in_memory(&mut m, &d).is_ok() { ok += 1; }
        }
        prop_assert!(ok <= max_grants);
    }
}
