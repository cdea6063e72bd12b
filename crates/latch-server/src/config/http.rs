//! `[http]` (limits of the HTTP listener) and `[auth_failures]` (aggregation and rate limit of
//! failed authentications) in `latch.toml`.

use std::time::Duration;

use serde::Deserialize;

/// `[http]`: what one client may hold of the listener. Request bodies are bounded by
/// `server.max_body_bytes` (and `scan.max_bytes` for `POST /v1/scan`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Longest wait for a complete request head, counted from when the server starts waiting
    /// for one (the connection opened, or the previous response was sent): a connection that
    /// sends nothing, or only part of a head, is closed after it. Default 10 s.
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection on which no byte moves either way for this long is closed (a stalled
    /// upload, a client that stopped reading its response). Long-lived MCP streams send a
    /// keep-alive every 15 s and are not affected. Default 60 s.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Longest time to answer a request (reading its body included); past it the answer is
    /// `408 request_timeout`. Streams already answered (MCP SSE) are not cut. Default 30 s.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Longest wait for a request's whole body, from its request head, on every route (`/mcp`
    /// included); past it the answer is `408 request_timeout` and the connection is closed.
    /// Only the body's arrival is bounded: a long-lived response (MCP SSE, a streamed `POST
    /// /mcp` answer) is not cut. Default 10 s.
    #[serde(default = "default_body_timeout", with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Connections open at once (default 1,024, lowered at start to leave 128 file
    /// descriptors of the process limit for everything else). When full, a new connection
    /// closes the oldest one with no request in flight (idle, or still receiving a request
    /// head or body); if there is none, the new one is closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections open at once from one address (IPv6: one /64 network); default 64. Past
    /// it, as for `max_connections`, among that address's connections.
    #[serde(default = "default_max_connections_per_address")]
    pub max_connections_per_address: usize,
    /// Largest request head (request line and headers), bytes: 8 KiB to 1 MiB, default
    /// 64 KiB. A larger head is answered `431`.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
}

fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_body_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_connections() -> usize {
    1024
}
fn default_max_connections_per_address() -> usize {
    64
}
fn default_max_header_bytes() -> usize {
    64 * 1024
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: default_header_read_timeout(),
            idle_timeout: default_idle_timeout(),
            request_timeout: default_request_timeout(),
            body_timeout: default_body_timeout(),
            max_connections: default_max_connections(),
            max_connections_per_address: default_max_connections_per_address(),
            max_header_bytes: default_max_header_bytes(),
        }
    }
}

/// Smallest accepted `http.max_header_bytes` (hyper's smallest read buffer).
pub const MIN_HEADER_BYTES: usize = 8 * 1024;
/// Largest accepted `http.max_header_bytes`.
pub const MAX_HEADER_BYTES: usize = 1 << 20;

impl HttpConfig {
    /// Checks the bounds.
    ///
    /// # Errors
    /// A message naming the bad key.
    pub fn validate(&self) -> Result<(), String> {
        for (key, d) in [
            ("header_read_timeout", self.header_read_timeout),
            ("idle_timeout", self.idle_timeout),
            ("request_timeout", self.request_timeout),
            ("body_timeout", self.body_timeout),
        ] {
            if d < Duration::from_millis(100) {
                return Err(format!("`http.{key}` must be at least 100ms"));
            }
        }
        if self.max_connections == 0 {
            return Err("`http.max_connections` must be at least 1".into());
        }
        if self.max_connections_per_address == 0
            || self.max_connections_per_address > self.max_connections
        {
            return Err(
                "`http.max_connections_per_address` must be 1 to `http.max_connections`".into(),
            );
        }
        if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&self.max_header_bytes) {
            return Err("`http.max_header_bytes` must be 8 KiB to 1 MiB".into());
        }
        Ok(())
    }
}

/// `[auth_failures]`: failed authentications per source (the caller's IP address; IPv6: its
/// /64 network). The first failure of each code in a source's window is audited at once, the
/// rest are counted into one summary event when the window closes; after `max_failures` in a
/// window, the source's calls are answered `429 rate_limited` (with `Retry-After`) until the
/// window ends, before any credential is checked.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFailuresConfig {
    /// Length of a source's window, from its first failure (at least 1 s; default 60 s).
    #[serde(default = "default_window", with = "humantime_serde")]
    pub window: Duration,
    /// Failures allowed per source and window before it is refused (at least 1; default 30).
    #[serde(default = "default_max_failures")]
    pub max_failures: u64,
    /// Sources tracked at once (1 to 1,000,000; default 10,000); beyond it the oldest window
    /// is closed early (its summary kept).
    #[serde(default = "default_max_sources")]
    pub max_sources: usize,
}

fn default_window() -> Duration {
    Duration::from_secs(60)
}
fn default_max_failures() -> u64 {
    30
}
fn default_max_sources() -> usize {
    10_000
}

impl Default for AuthFailuresConfig {
    fn default() -> Self {
        Self {
            window: default_window(),
            max_failures: default_max_failures(),
            max_sources: default_max_sources(),
        }
    }
}

impl AuthFailuresConfig {
    /// Checks the bounds.
    ///
    /// # Errors
    /// A message naming the bad key.
    pub fn validate(&self) -> Result<(), String> {
        if self.window < Duration::from_secs(1) {
            return Err("`auth_failures.window` must be at least 1s".into());
        }
        if self.max_failures == 0 {
            return Err("`auth_failures.max_failures` must be at least 1".into());
        }
        if !(1..=1_000_000).contains(&self.max_sources) {
            return Err("`auth_failures.max_sources` must be 1 to 1000000".into());
        }
        Ok(())
    }

    /// The broker's settings.
    pub fn settings(&self) -> latch_core::auth_failures::AuthFailureSettings {
        latch_core::auth_failures::AuthFailureSettings {
            window_secs: i64::try_from(self.window.as_secs()).unwrap_or(i64::MAX),
            max_failures: self.max_failures,
            max_sources: self.max_sources,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_safe_and_bounds_are_checked() {
        let h = HttpConfig::default();
        assert!(h.validate().is_ok());
        assert_eq!(h.header_read_timeout, Duration::from_secs(10));
        assert_eq!(h.max_connections_per_address, 64);
        let bad = |f: fn(&mut HttpConfig)| {
            let mut c = HttpConfig::default();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert!(bad(|c| c.idle_timeout = Duration::ZERO).contains("http.idle_timeout"));
        assert_eq!(h.body_timeout, Duration::from_secs(10));
        assert!(bad(|c| c.body_timeout = Duration::from_millis(50)).contains("http.body_timeout"));
        assert!(bad(|c| c.max_connections = 0).contains("http.max_connections"));
        assert!(bad(|c| c.max_connections_per_address = 2_000).contains("per_address"));
        assert!(bad(|c| c.max_header_bytes = 1024).contains("max_header_bytes"));
        let a = AuthFailuresConfig::default();
        assert!(a.validate().is_ok());
        assert_eq!(a.settings().window_secs, 60);
        let zero = AuthFailuresConfig {
            max_failures: 0,
            ..AuthFailuresConfig::default()
        };
        assert!(zero.validate().is_err());
        let short = AuthFailuresConfig {
            window: Duration::from_millis(500),
            ..AuthFailuresConfig::default()
        };
        assert!(short.validate().is_err());
    }
}
