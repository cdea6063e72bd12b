//! Failed authentications, per source: aggregated for the audit trail and rate-limited.
//!
//! A flood of bad credentials must neither fill the audit trail (one durable row per bad token)
//! nor make the broker verify every token. [`AuthFailures`] keeps, per source (the caller's IP
//! address; IPv6 addresses grouped by their /64 network, see [`source_key`]), one fixed
//! window of [`AuthFailureSettings::window_secs`] that starts at the source's first failure:
//!
//! * the first failure of each error code in a window is audited at once (so one bad token, or
//!   a new kind of failure, shows promptly); further failures are only counted;
//! * when the window closes (or the source is evicted, or the server stops), one summary
//!   `auth.failed` event with outcome `repeated` carries the window's total `count`, its codes,
//!   its bounds and how many requests were refused — written only when it adds something;
//! * after [`AuthFailureSettings::max_failures`] failures in a window, further calls from the
//!   source are refused (`rate_limited`, 429) until the window ends, before any token is
//!   verified or anything is written. Successful calls never count: failures are limited, not
//!   requests.
//!
//! So a source writes at most (distinct codes + 1) rows per window, whatever its rate. Memory is
//! bounded: at most [`AuthFailureSettings::max_sources`] sources are tracked (the oldest window
//! is evicted, its summary queued), and at most as many summaries wait for the flush (beyond
//! that they merge into one summary for source `*`).
//!
//! Time is the broker's [`Clock`](crate::Clock) (whole seconds), passed in by the caller.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;

use serde_json::json;

use crate::error::ErrorCode;
use crate::kinds::AuditKind;
use crate::model::AuditEvent;

/// Limits of [`AuthFailures`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFailureSettings {
    /// Length of a source's window, seconds (≥ 1; default 60).
    pub window_secs: i64,
    /// Failed authentications a source may have in one window before its further calls are
    /// refused with `rate_limited` until the window ends (≥ 1; default 30).
    pub max_failures: u64,
    /// Sources tracked at once (≥ 1; default 10,000): beyond it the oldest window is evicted.
    pub max_sources: usize,
}

impl Default for AuthFailureSettings {
    fn default() -> Self {
        Self {
            window_secs: 60,
            max_failures: 30,
            max_sources: 10_000,
        }
    }
}

/// The key a caller's address is tracked under: an IPv4 address as is (also when written as an
/// IPv4-mapped IPv6 address), an IPv6 address as its /64 network (one host usually holds a whole
/// /64), anything else as given (at most 64 characters).
pub fn source_key(source_ip: &str) -> String {
    match source_ip.parse::<IpAddr>() {
        Ok(ip) => ip_key(ip),
        Err(_) => source_ip.chars().take(64).collect(),
    }
}

/// [`source_key`] of a parsed address.
pub fn ip_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                format!("{net}/64")
            }
        },
    }
}

/// One source's window.
#[derive(Debug, Clone)]
struct Window {
    start: i64,
    /// Insertion number: with `start`, the window's place in [`Inner::order`].
    seq: u64,
    /// The address of the window's first failure.
    first_ip: String,
    failures: u64,
    /// Failures audited on their own (the first of each code).
    recorded: u64,
    rate_limited: u64,
    codes: BTreeMap<&'static str, u64>,
}

impl Window {
    fn new(start: i64, seq: u64, ip: &str) -> Self {
        Self {
            start,
            seq,
            first_ip: ip.chars().take(64).collect(),
            failures: 0,
            recorded: 0,
            rate_limited: 0,
            codes: BTreeMap::new(),
        }
    }

    /// The summary of this window, if it adds to what was recorded on its own.
    fn summary(self, source: String, end: i64, evicted: bool) -> Option<AuthFailureSummary> {
        (self.failures > self.recorded || self.rate_limited > 0).then_some(AuthFailureSummary {
            source,
            source_ip: self.first_ip,
            window_start_unix_secs: self.start,
            window_end_unix_secs: end,
            count: self.failures,
            recorded: self.recorded,
            rate_limited: self.rate_limited,
            codes: self.codes,
            evicted,
        })
    }
}

/// The summary of one source's window: written as one `auth.failed` event (outcome
/// `repeated`) by [`AuthFailureSummary::event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFailureSummary {
    /// The source key ([`source_key`]), or `*` for summaries merged under memory pressure.
    pub source: String,
    /// The address of the window's first failure.
    pub source_ip: String,
    /// When the window opened (its first failure), seconds since the epoch.
    pub window_start_unix_secs: i64,
    /// When it closed: its scheduled end, or earlier when evicted or at shutdown.
    pub window_end_unix_secs: i64,
    /// Every failed authentication of the window, including those audited on their own.
    pub count: u64,
    /// How many of `count` were audited on their own (the first of each code).
    pub recorded: u64,
    /// Calls refused with `rate_limited` in the window (not verified, not in `count`).
    pub rate_limited: u64,
    /// Failures per error code (sums to `count`).
    pub codes: BTreeMap<&'static str, u64>,
    /// Closed early: evicted to bound memory, or the server stopped.
    pub evicted: bool,
}

impl AuthFailureSummary {
    /// The audit event: kind `auth.failed`, actor `anonymous`, outcome `repeated`.
    pub fn event(&self) -> AuditEvent {
        AuditEvent::new(
            self.window_end_unix_secs,
            AuditKind::AuthFailed,
            "anonymous",
            "repeated",
        )
        .detail(json!({
            "source": self.source,
            "source_ip": self.source_ip,
            "window_start_unix_secs": self.window_start_unix_secs,
            "window_end_unix_secs": self.window_end_unix_secs,
            "count": self.count,
            "recorded": self.recorded,
            "rate_limited": self.rate_limited,
            "codes": self.codes,
            "closed_early": self.evicted,
        }))
    }

    fn merge(&mut self, other: Self) {
        self.window_start_unix_secs = self
            .window_start_unix_secs
            .min(other.window_start_unix_secs);
        self.window_end_unix_secs = self.window_end_unix_secs.max(other.window_end_unix_secs);
        self.count += other.count;
        self.recorded += other.recorded;
        self.rate_limited += other.rate_limited;
        for (c, n) in other.codes {
            *self.codes.entry(c).or_default() += n;
        }
        self.evicted |= other.evicted;
    }
}

/// What [`AuthFailures::record`] asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Audit this failure now (the first of its code in the source's window, which started
    /// at `window_start_unix_secs`).
    AuditNow {
        /// Start of the window the failure belongs to.
        window_start_unix_secs: i64,
    },
    /// Counted; the window's summary will carry it.
    Counted,
}

#[derive(Debug, Default)]
struct Inner {
    windows: HashMap<String, Window>,
    /// The windows by (start, seq): the oldest is evicted first.
    order: BTreeMap<(i64, u64), String>,
    next_seq: u64,
    /// Closed windows waiting for [`AuthFailures::take_due`].
    due: Vec<AuthFailureSummary>,
    /// Summaries merged once `due` is full.
    overflow: Option<AuthFailureSummary>,
}

impl Inner {
    fn queue(&mut self, s: Option<AuthFailureSummary>, cap: usize) {
        let Some(s) = s else { return };
        if self.due.len() < cap {
            self.due.push(s);
            return;
        }
        match &mut self.overflow {
            Some(o) => o.merge(s),
            None => {
                self.overflow = Some(AuthFailureSummary {
                    source: "*".into(),
                    source_ip: "*".into(),
                    ..s
                });
            }
        }
    }

    fn insert(&mut self, key: String, start: i64, ip: &str) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert((start, seq), key.clone());
        self.windows.insert(key, Window::new(start, seq, ip));
    }

    fn remove(&mut self, key: &str) -> Option<Window> {
        let w = self.windows.remove(key)?;
        self.order.remove(&(w.start, w.seq));
        Some(w)
    }

    /// Evicts the source whose window is oldest.
    fn evict_oldest(&mut self, now: i64, cap: usize) {
        let Some((_, k)) = self.order.pop_first() else {
            return;
        };
        if let Some(w) = self.windows.remove(&k) {
            let s = w.summary(k, now, true);
            self.queue(s, cap);
        }
    }
}

/// Per-source windows of failed authentications (see the module docs). Thread-safe; every
/// method takes the current time in seconds since the epoch.
#[derive(Debug)]
pub struct AuthFailures {
    settings: AuthFailureSettings,
    inner: Mutex<Inner>,
}

impl AuthFailures {
    /// An empty tracker; settings below their minimum are raised to it.
    pub fn new(settings: AuthFailureSettings) -> Self {
        Self {
            settings: AuthFailureSettings {
                window_secs: settings.window_secs.max(1),
                max_failures: settings.max_failures.max(1),
                max_sources: settings.max_sources.max(1),
            },
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &AuthFailureSettings {
        &self.settings
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open_until(&self, w: &Window) -> i64 {
        w.start.saturating_add(self.settings.window_secs)
    }

    /// Whether a call from `source_ip` may go on to verify its credentials. `Some(secs)`:
    /// refused, retry after `secs` (≥ 1); the refusal is counted in the window's summary.
    pub fn check(&self, source_ip: &str, now: i64) -> Option<u64> {
        self.limited(source_ip, now, true)
    }

    /// [`check`](Self::check) without counting a refusal (e.g. to compute a `Retry-After`).
    pub fn retry_after(&self, source_ip: &str, now: i64) -> Option<u64> {
        self.limited(source_ip, now, false)
    }

    fn limited(&self, source_ip: &str, now: i64, count: bool) -> Option<u64> {
        let key = source_key(source_ip);
        let mut g = self.lock();
        let w = g.windows.get_mut(&key)?;
        let end = w.start.saturating_add(self.settings.window_secs);
        if now >= end || w.failures < self.settings.max_failures {
            return None;
        }
        if count {
            w.rate_limited += 1;
        }
        Some(u64::try_from(end - now).unwrap_or(1).max(1))
    }

    /// Counts a failed authentication from `source_ip` with `code`, and says whether to audit
    /// it now.
    pub fn record(&self, source_ip: &str, code: ErrorCode, now: i64) -> Recorded {
        let key = source_key(source_ip);
        let cap = self.settings.max_sources;
        let mut g = self.lock();
        let closed = g
            .windows
            .get(&key)
            .is_some_and(|w| now >= self.open_until(w));
        if closed && let Some(w) = g.remove(&key) {
            let end = self.open_until(&w);
            let s = w.summary(key.clone(), end, false);
            g.queue(s, cap);
        }
        if !g.windows.contains_key(&key) {
            while g.windows.len() >= cap && !g.order.is_empty() {
                g.evict_oldest(now, cap);
            }
            g.insert(key.clone(), now, source_ip);
        }
        let Some(w) = g.windows.get_mut(&key) else {
            return Recorded::AuditNow {
                window_start_unix_secs: now,
            };
        };
        w.failures += 1;
        let n = w.codes.entry(code.as_str()).or_default();
        *n += 1;
        if *n == 1 {
            w.recorded += 1;
            Recorded::AuditNow {
                window_start_unix_secs: w.start,
            }
        } else {
            Recorded::Counted
        }
    }

    /// Takes the summaries to write: those of windows closed by `now`, or with `all` (at
    /// shutdown) of every window. Windows without anything to summarise are dropped.
    pub fn take_due(&self, now: i64, all: bool) -> Vec<AuthFailureSummary> {
        let window = self.settings.window_secs;
        let cap = self.settings.max_sources;
        let mut g = self.lock();
        // Oldest first: windows close in start order.
        let closed: Vec<String> = g
            .order
            .iter()
            .take_while(|((start, _), _)| all || now >= start.saturating_add(window))
            .map(|(_, k)| k.clone())
            .collect();
        for k in closed {
            if let Some(w) = g.remove(&k) {
                let end = w.start.saturating_add(window);
                let s = if now < end {
                    w.summary(k, now, true)
                } else {
                    w.summary(k, end, false)
                };
                g.queue(s, cap);
            }
        }
        let mut out = std::mem::take(&mut g.due);
        out.extend(g.overflow.take());
        out
    }

    /// Puts back summaries that could not be written (the store failed), for the next flush.
    pub fn requeue(&self, summaries: Vec<AuthFailureSummary>) {
        let cap = self.settings.max_sources;
        let mut g = self.lock();
        for s in summaries {
            g.queue(Some(s), cap);
        }
    }

    /// Sources tracked now (for tests and metrics).
    pub fn tracked_sources(&self) -> usize {
        self.lock().windows.len()
    }
}

#[cfg(test)]
mod tests;
