//! Injected time. Production uses [`SystemClock`]; tests use [`ManualClock`] and never sleep.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// A source of the current time, in whole seconds since the Unix epoch (UTC).
///
/// Every TTL decision in Latch reads time through this trait so tests can move time by hand.
pub trait Clock: Send + Sync + 'static {
    /// Current time in seconds since the Unix epoch.
    fn now_unix_secs(&self) -> i64;
}

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix_secs(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to; cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock reading `start_unix_secs`.
    pub fn new(start_unix_secs: i64) -> Self {
        Self(Arc::new(AtomicI64::new(start_unix_secs)))
    }
    /// Moves the clock forward by `secs` seconds (negative moves it back).
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
    /// Sets the clock to `unix_secs`.
    pub fn set(&self, unix_secs: i64) {
        self.0.store(unix_secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_unix_secs(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}
