//! The live-lease index (introspection cache) and the task cache, and how far they are
//! trusted when other replicas write to the same store.

use super::*;

/// Active credentials by keyed HMAC, a cache of the store. With replicas another broker may
/// revoke or renew a lease: the server feeds the store's change notifications into
/// [`Broker::invalidate_lease`] / [`Broker::set_cache_trusted`], and a miss is loaded from
/// the store.
#[derive(Debug)]
pub(super) struct LiveIndex {
    /// The entries, by credential HMAC and by lease id (compact: see [`LiveEntries`]).
    pub(super) entries: LiveEntries,
    /// Bumped by every invalidation, so a load that raced one is not cached.
    pub(super) generation: u64,
    /// Whether lookups may be answered from the index.
    pub(super) trust: CacheTrust,
}

/// When the live index may answer instead of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CacheTrust {
    /// No other writer: the broker sees every change itself (SQLite, a single broker).
    Always,
    /// Changes may be missed (the change feed is down): every lookup reads the store.
    Never,
    /// Other writers' changes arrive on a feed that proves its own currency: the index is
    /// current as of the newest proof, and answers only while that is younger than
    /// `max_staleness`. Instants are [`Clock::monotonic`] readings.
    Bounded {
        /// The newest instant as of which every change is known applied (`None`: none since
        /// the feed reconnected).
        current_as_of: Option<Duration>,
        max_staleness: Duration,
    },
}

impl CacheTrust {
    /// Whether a lookup at monotonic instant `now` may be answered from the index.
    pub(super) fn answers_at(self, now: impl FnOnce() -> Duration) -> bool {
        match self {
            Self::Always => true,
            Self::Never => false,
            Self::Bounded {
                current_as_of,
                max_staleness,
            } => current_as_of.is_some_and(|t| now().saturating_sub(t) < max_staleness),
        }
    }

    /// Records a proof that every change committed before `as_of` is applied, received at
    /// `now` (an `as_of` in the future is taken as `now`). Never moves the proof back.
    fn confirm(&mut self, as_of: Duration, now: Duration) {
        if let Self::Bounded { current_as_of, .. } = self {
            let as_of = as_of.min(now);
            if current_as_of.is_none_or(|t| t < as_of) {
                *current_as_of = Some(as_of);
            }
        }
    }

    fn state_at(self, now: Duration) -> CacheState {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        match self {
            Self::Always => CacheState::Exclusive,
            Self::Never => CacheState::Bypassed,
            Self::Bounded {
                current_as_of,
                max_staleness,
            } => {
                let age = current_as_of.map(|t| now.saturating_sub(t));
                match age {
                    Some(a) if a < max_staleness => CacheState::Fresh { age_ms: ms(a) },
                    _ => CacheState::Stale {
                        age_ms: age.map(ms),
                    },
                }
            }
        }
    }
}

/// How the broker's in-memory caches are trusted, for health reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum CacheState {
    /// No other writer: the caches are always current.
    Exclusive,
    /// The change feed is current: confirmed `age_ms` ago, within the staleness bound.
    Fresh {
        /// Milliseconds since the feed last proved it had delivered every earlier change.
        age_ms: u64,
    },
    /// The change feed has not proved its currency within the bound (stalled, lagging):
    /// lookups read the store until it does.
    Stale {
        /// Milliseconds since the last proof (`None`: none since the feed reconnected).
        age_ms: Option<u64>,
    },
    /// The change feed is down: every lookup reads the store.
    Bypassed,
}

/// What introspection answers for one live credential, owned (the index stores it compactly).
#[derive(Debug, Clone)]
pub(super) struct LiveEntry {
    pub(super) lease_id: String,
    pub(super) task_id: String,
    pub(super) sub: String,
    pub(super) aud: String,
    pub(super) scope: String,
    pub(super) resource: String,
    pub(super) iat: i64,
    pub(super) exp: i64,
    pub(super) binding: TokenBinding,
    pub(super) require_dpop: bool,
}

impl Broker {
    /// Fills the live-lease index from the store's active leases, a page at a time, with the
    /// page's tasks read at once (a task missing from that read, one at a time).
    pub(super) async fn load_live_index(&self) -> Result<()> {
        let mut after = String::new();
        loop {
            let page = self.store.active_leases(&after, 500).await?;
            let Some(last) = page.last() else { break };
            // A row whose body names another id than its key would page forever.
            if last.id <= after {
                return Err(ApiError::new(
                    ErrorCode::StoreUnavailable,
                    "loading live leases: the store's lease ids do not advance (corrupt rows?)",
                ));
            }
            let mut tasks: HashMap<String, Option<Task>> = self
                .store
                .active_lease_tasks(&after, 500)
                .await?
                .into_iter()
                .map(|t| (t.id.clone(), Some(t)))
                .collect();
            after = last.id.clone();
            for l in &page {
                if !tasks.contains_key(&l.task_id) {
                    let task = self.store.task(&l.task_id).await?;
                    tasks.insert(l.task_id.clone(), task);
                }
                if let Some(Some(task)) = tasks.get(&l.task_id) {
                    self.index_insert(l, task);
                }
            }
        }
        Ok(())
    }

    /// Number of credentials in the live-lease (introspection) index, for metrics: each costs
    /// about 130 bytes of memory (see `live_index`).
    pub fn live_index_len(&self) -> usize {
        self.live
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .len()
    }

    pub(super) fn live_generation(&self) -> u64 {
        self.live
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .generation
    }

    /// Indexes a lease this broker just committed, unless an invalidation arrived since
    /// `generation` was read (another replica may have changed the lease after our commit).
    pub(super) fn index_insert_since(&self, l: &Lease, task: &Task, generation: u64) {
        self.index_insert_checked(l, task, Some(generation));
    }

    fn index_insert(&self, l: &Lease, task: &Task) {
        self.index_insert_checked(l, task, None);
    }

    fn index_insert_checked(&self, l: &Lease, task: &Task, generation: Option<u64>) {
        let Some(e) = self.live_entry(l, task) else {
            return;
        };
        let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
        if generation.is_some_and(|g| g != live.generation) {
            return;
        }
        // `insert` replaces the lease's previous entry itself.
        match &l.credential_hmac {
            Some(h) => live.entries.insert(h, &e),
            None => live.entries.remove_lease(&l.id),
        }
    }

    pub(super) fn live_entry(&self, l: &Lease, task: &Task) -> Option<LiveEntry> {
        let r = self.resources.get(&l.resource_id)?;
        l.credential_hmac.as_ref()?;
        Some(LiveEntry {
            lease_id: l.id.clone(),
            task_id: l.task_id.clone(),
            // As the token's `sub`: the exchanged subject when there was one.
            sub: l
                .binding
                .subject
                .clone()
                .unwrap_or_else(|| task.owner.id.clone()),
            aud: r.audience.clone(),
            scope: l.actions.join(" "),
            resource: l.resource_id.clone(),
            iat: l.issued_at_unix_secs,
            exp: l.expires_at_unix_secs,
            binding: l.binding.clone(),
            require_dpop: resource_requires_dpop(r),
        })
    }

    pub(super) fn index_remove(&self, l: &Lease) {
        let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
        live.entries.remove_lease(&l.id);
        if let Some(h) = &l.credential_hmac {
            live.entries.remove_hmac(h);
        }
    }

    /// Forgets any cached copy of lease `lease_id` (another replica changed it): introspection
    /// of its credentials is answered from the store again.
    pub fn invalidate_lease(&self, lease_id: &str) {
        let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
        live.generation += 1;
        live.entries.remove_lease(lease_id);
    }

    /// Forgets any cached copy of task `task_id` (another replica changed it).
    pub fn invalidate_task(&self, task_id: &str) {
        self.task_cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(task_id);
    }

    /// Says whether this broker receives every change other replicas make (default: true, as
    /// for a store no other process writes). Either way the caches are emptied; while
    /// untrusted, introspection reads the store on every call.
    ///
    /// # Security
    /// A replica that may have missed a revocation must not answer from its cache: the server
    /// sets `false` whenever its change feed is interrupted. With replicas it then uses
    /// [`follow_change_feed`](Self::follow_change_feed) rather than `true`, so that a feed that
    /// stalls without an error is noticed too.
    pub fn set_cache_trusted(&self, trusted: bool) {
        self.reset_caches(Some(if trusted {
            CacheTrust::Always
        } else {
            CacheTrust::Never
        }));
    }

    /// The change feed is (re)connected: empties the caches and trusts them only while the feed
    /// keeps proving its currency through [`confirm_cache_fresh`](Self::confirm_cache_fresh),
    /// at most `max_staleness` after the newest proof. Until the first proof, lookups read the
    /// store.
    ///
    /// # Security
    /// This is what bounds how long a revocation made on another replica can go unnoticed
    /// here: at most `max_staleness` (plus the feed's delivery of the proof), whatever happens
    /// to the feed's connection, since a silent stall simply stops the proofs.
    pub fn follow_change_feed(&self, max_staleness: Duration) {
        self.reset_caches(Some(CacheTrust::Bounded {
            current_as_of: None,
            max_staleness,
        }));
    }

    /// Every change committed before `as_of` (a [`Clock::monotonic`] reading) has been
    /// applied to the caches (the change feed's heartbeat came back): they may answer until
    /// `as_of + max_staleness`. Ignored unless [`follow_change_feed`](Self::follow_change_feed)
    /// is in force; never moves the bound back, and a future `as_of` counts as now.
    pub fn confirm_cache_fresh(&self, as_of: Duration) {
        let now = self.clock.monotonic();
        self.live
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .trust
            .confirm(as_of, now);
    }

    /// How the caches are trusted right now (for `/readyz` and metrics).
    pub fn cache_state(&self) -> CacheState {
        let trust = self.live.read().unwrap_or_else(|p| p.into_inner()).trust;
        trust.state_at(self.clock.monotonic())
    }

    /// Empties the caches without changing how they are trusted (a change feed reported a
    /// change it could not attribute to rows).
    pub fn clear_caches(&self) {
        self.reset_caches(None);
    }

    /// Empties both caches (bumping the generation, so no racing load is cached) and, when
    /// given, sets how the index is trusted, in one critical section.
    fn reset_caches(&self, trust: Option<CacheTrust>) {
        {
            let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
            live.generation += 1;
            live.entries.clear();
            if let Some(t) = trust {
                live.trust = t;
            }
        }
        self.task_cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod cache_trust_tests {
    use super::{CacheState, CacheTrust};
    use proptest::prelude::*;
    use std::time::Duration;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn states() {
        let mut t = CacheTrust::Bounded {
            current_as_of: None,
            max_staleness: ms(500),
        };
        assert!(!t.answers_at(|| ms(1_000)), "no proof since reconnect");
        assert_eq!(t.state_at(ms(1_000)), CacheState::Stale { age_ms: None });
        t.confirm(ms(900), ms(1_000));
        assert!(t.answers_at(|| ms(1_399)));
        assert_eq!(t.state_at(ms(1_000)), CacheState::Fresh { age_ms: 100 });
        assert!(!t.answers_at(|| ms(1_400)), "the bound is exclusive");
        assert_eq!(
            t.state_at(ms(1_400)),
            CacheState::Stale { age_ms: Some(500) }
        );
        t.confirm(ms(5_000), ms(1_500)); // a proof "from the future" counts as now
        assert!(!t.answers_at(|| ms(2_000)));
        t.confirm(ms(100), ms(2_000)); // an older proof never moves the bound back
        assert_eq!(
            t.state_at(ms(2_000)),
            CacheState::Stale { age_ms: Some(500) }
        );
        assert!(CacheTrust::Always.answers_at(|| ms(0)));
        assert!(!CacheTrust::Never.answers_at(|| ms(0)));
    }

    proptest! {
        /// Safety: a change committed at `r` whose invalidation precedes (in the feed) every
        /// proof with `as_of > r` is never hidden by the cache for `max_staleness` or more
        /// after `r`: whenever the index answers at `t >= r + max_staleness`, a proof newer
        /// than `r` has been received (so the invalidation was applied). Liveness: a proof
        /// younger than the bound lets the index answer.
        #[test]
        fn the_cache_never_hides_a_change_past_the_bound(
            max in 1u64..2_000,
            r in 0u64..10_000,
            // (gap before receipt, as_of relative to receipt: negative = delay, positive = forged)
            proofs in proptest::collection::vec((0u64..700, -3_000i64..500), 0..40),
            probes in proptest::collection::vec(0u64..3_000, 1..20),
        ) {
            let max_staleness = ms(max);
            let mut trust = CacheTrust::Bounded { current_as_of: None, max_staleness };
            let mut now = 0u64;
            let mut newest_effective: Option<u64> = None;
            for (gap, rel) in proofs {
                now += gap;
                let as_of = now.saturating_add_signed(rel);
                trust.confirm(ms(as_of), ms(now));
                let effective = as_of.min(now);
                newest_effective = Some(newest_effective.map_or(effective, |e| e.max(effective)));
                for p in &probes {
                    let t = now + p;
                    let answers = trust.answers_at(|| ms(t));
                    if answers && t >= r + max {
                        prop_assert!(newest_effective.is_some_and(|e| e > r),
                            "answered at {t} though no proof is newer than the change at {r}");
                    }
                    if let Some(e) = newest_effective {
                        prop_assert_eq!(answers, t - e < max);
                    }
                }
            }
        }
    }
}
