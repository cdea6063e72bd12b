//! TTL rules, as pure functions so their bounds can be property-tested.
//!
//! * Grant: `ttl = min(requested, resource max, policy max, task remaining)`, and the lease's
//!   hard end `max_expires_at = min(issued + resource max lifetime, task end)`.
//! * Renewal: a fresh policy evaluation (in [`crate::broker`]) and then
//!   `expires = min(now + min(requested, resource max, policy max), max_expires_at, task end)`;
//!   never past the lease's max, never past the task.

/// The outcome of a TTL computation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// New end of validity.
    pub expires_at_unix_secs: i64,
    /// Hard end no renewal passes.
    pub max_expires_at_unix_secs: i64,
}

/// Computes the validity window of a new lease, or `None` if nothing positive remains (the
/// task has ended, or a bound is zero).
///
/// `requested_secs`, `resource_max_secs` and `policy_max_secs` must be positive to yield a window.
pub fn grant_window(
    now_unix_secs: i64,
    requested_secs: i64,
    resource_max_secs: i64,
    resource_max_lifetime_secs: i64,
    policy_max_secs: Option<i64>,
    task_expires_at_unix_secs: i64,
) -> Option<Window> {
    let ttl = requested_secs
        .min(resource_max_secs)
        .min(policy_max_secs.unwrap_or(i64::MAX));
    if ttl <= 0 {
        return None;
    }
    let max_expires = now_unix_secs
        .saturating_add(resource_max_lifetime_secs.max(resource_max_secs))
        .min(task_expires_at_unix_secs);
    let expires = now_unix_secs.saturating_add(ttl).min(max_expires);
    (expires > now_unix_secs).then_some(Window {
        expires_at_unix_secs: expires,
        max_expires_at_unix_secs: max_expires.max(expires),
    })
}

/// Computes the new end of validity on renewal, or `None` if the lease cannot be extended to
/// any time after `now` (its max TTL or its task is over).
pub fn renewal_expiry(
    now_unix_secs: i64,
    requested_secs: i64,
    resource_max_secs: i64,
    policy_max_secs: Option<i64>,
    lease_max_expires_at_unix_secs: i64,
    task_expires_at_unix_secs: i64,
) -> Option<i64> {
    let ttl = requested_secs
        .min(resource_max_secs)
        .min(policy_max_secs.unwrap_or(i64::MAX));
    if ttl <= 0 {
        return None;
    }
    let expires = now_unix_secs
        .saturating_add(ttl)
        .min(lease_max_expires_at_unix_secs)
        .min(task_expires_at_unix_secs);
    (expires > now_unix_secs).then_some(expires)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A grant never exceeds any bound and never outlives its task.
        #[test]
        fn grant_respects_every_bound(
            now in 0i64..4_000_000_000,
            req in -10i64..200_000,
            rmax in 1i64..100_000,
            life_extra in 0i64..100_000,
            pmax in proptest::option::of(1i64..100_000),
            task_left in -1000i64..200_000,
        ) {
            let life = rmax + life_extra;
            let task_end = now + task_left;
            match grant_window(now, req, rmax, life, pmax, task_end) {
                Some(w) => {
                    let ttl = w.expires_at_unix_secs - now;
                    prop_assert!(ttl > 0);
                    prop_assert!(ttl <= req);
                    prop_assert!(ttl <= rmax);
                    if let Some(p) = pmax { prop_assert!(ttl <= p); }
                    prop_assert!(w.expires_at_unix_secs <= task_end);
                    prop_assert!(w.max_expires_at_unix_secs <= task_end);
                    prop_assert!(w.max_expires_at_unix_secs <= now + life);
                    prop_assert!(w.expires_at_unix_secs <= w.max_expires_at_unix_secs);
                    // It is exactly the minimum of the bounds.
                    let want = req.min(rmax).min(pmax.unwrap_or(i64::MAX)).min(task_left).min(life);
                    prop_assert_eq!(ttl, want);
                }
                None => prop_assert!(req <= 0 || task_left <= 0),
            }
        }

        /// Any sequence of renewals stays within the lease's max and the task's end.
        #[test]
        fn renewals_never_pass_max(
            start in 0i64..1_000_000,
            rmax in 1i64..10_000,
            life_extra in 0i64..50_000,
            task_left in 1i64..100_000,
            steps in proptest::collection::vec((0i64..5_000, 1i64..20_000, proptest::option::of(1i64..10_000)), 1..20),
        ) {
            let task_end = start + task_left;
            let Some(w) = grant_window(start, rmax, rmax, rmax + life_extra, None, task_end) else {
                return Ok(());
            };
            let mut now = start;
            for (dt, req, pmax) in steps {
                now += dt;
                if let Some(exp) = renewal_expiry(now, req, rmax, pmax, w.max_expires_at_unix_secs, task_end) {
                    prop_assert!(exp > now);
                    prop_assert!(exp <= w.max_expires_at_unix_secs);
                    prop_assert!(exp <= task_end);
                    prop_assert!(exp - now <= rmax);
                    prop_assert!(exp - now <= req);
                    if let Some(p) = pmax { prop_assert!(exp - now <= p); }
                } else {
                    prop_assert!(now >= w.max_expires_at_unix_secs || now >= task_end);
                }
            }
        }
    }
}
