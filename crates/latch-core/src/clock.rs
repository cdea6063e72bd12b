//! Injected time. Production uses [`SystemClock`]; tests use [`ManualClock`] and never sleep.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A source of the current time, in whole seconds since the Unix epoch (UTC), and of a
/// monotonic reading for sub-second bounds.
///
/// Every TTL decision in Latch reads time through this trait so tests can move time by hand.
pub trait Clock: Send + Sync + 'static {
    /// Current time in seconds since the Unix epoch.
    fn now_unix_secs(&self) -> i64;

    /// Current time in milliseconds since the Unix epoch, for latencies measured across
    /// processes (a revocation decided on one replica and confirmed on another). The default is
    /// [`now_unix_secs`](Self::now_unix_secs) in milliseconds.
    fn now_unix_millis(&self) -> i64 {
        self.now_unix_secs().saturating_mul(1000)
    }

    /// Monotonic time since an arbitrary origin fixed for the process: never goes back, and
    /// only differences between readings mean anything. Used for sub-second bounds such as
    /// a replica's cache staleness. The default reads [`std::time::Instant`].
    fn monotonic(&self) -> Duration {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        ORIGIN.get_or_init(Instant::now).elapsed()
    }
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

    fn now_unix_millis(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to; cheap to clone (shared state). Its
/// [`monotonic`](Clock::monotonic) reading moves with it (milliseconds since the epoch), so
/// tests must not move it back across a sub-second bound they check.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock reading `start_unix_secs`.
    pub fn new(start_unix_secs: i64) -> Self {
        Self(Arc::new(AtomicI64::new(
            start_unix_secs.saturating_mul(1000),
        )))
    }
    /// Moves the clock forward by `secs` seconds (negative moves it back).
    pub fn advance(&self, secs: i64) {
        self.0
            .fetch_add(secs.saturating_mul(1000), Ordering::SeqCst);
    }
    /// Moves the clock forward by `millis` milliseconds (negative moves it back).
    pub fn advance_millis(&self, millis: i64) {
        self.0.fetch_add(millis, Ordering::SeqCst);
    }
    /// Sets the clock to `unix_secs`.
    pub fn set(&self, unix_secs: i64) {
        self.0
            .store(unix_secs.saturating_mul(1000), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_unix_secs(&self) -> i64 {
        self.0.load(Ordering::SeqCst).div_euclid(1000)
    }

    fn now_unix_millis(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }

    fn monotonic(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.0.load(Ordering::SeqCst)).unwrap_or(0))
    }
}
