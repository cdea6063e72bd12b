//! [`Store`] implementations for Latch, and [`open`], which picks one from a URL and hands it
//! over as ports.
//!
//! * [`SqliteStore`]: the embedded default, on SQLite through sqlx (WAL, `synchronous=FULL`,
//!   one writer connection, a small read pool).
//! * [`PgStore`]: PostgreSQL through sqlx, for several broker replicas sharing one database
//!   (compare-and-set updates, a serialised audit chain, reaper claims with
//!   `FOR UPDATE SKIP LOCKED`, a `LISTEN`/`NOTIFY` [`ChangeFeed`] for cache invalidation and a
//!   shared [`UseOnce`] cache).
//!
//! Both are one generic store (`store.rs`) over the shared query text and row codecs
//! (`sql.rs`, `codec.rs`); each backend folder (`sqlite/`, `postgres/`) holds only how it
//! connects and what its SQL dialect does differently. The backend-agnostic conformance suite
//! every `Store` must pass lives in `latch_testkit::store_suite`.
//!
//! Row bodies (the JSON of tasks, requests, leases and audit events) are never logged and never
//! appear in error messages.

use std::sync::Arc;
use std::time::Duration;

use latch_core::ports::{ChangeFeed, Store, StoreError, UseOnce};

mod batch;
mod codec;
mod combine;
mod counters;
mod handoff;
mod postgres;
mod prune;
mod prune_audit;
mod sql;
mod sqlite;
mod statement;
mod store;

pub use latch_core::ports::{FeedSettings, StoreChange};
pub use postgres::{CHANGE_CHANNEL, PgStore};
pub use sqlite::SqliteStore;

/// A store opened by [`open`]: the [`Store`] port and the capabilities its backend has.
///
/// Startup wires these without knowing the backend: a replica follows `feed` to keep its
/// caches honest and checks one-time values (DPoP proofs) against `once`.
#[derive(Clone)]
pub struct Opened {
    /// Durable state.
    pub store: Arc<dyn Store>,
    /// Changes other writers commit (a store several processes share), if any.
    pub feed: Option<Arc<dyn ChangeFeed>>,
    /// A use-once cache every process sharing the store sees, if any.
    pub once: Option<Arc<dyn UseOnce>>,
    /// The backend's name for logs: `"sqlite"` or `"postgres"`.
    pub backend: &'static str,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("backend", &self.backend)
            .field("feed", &self.feed.is_some())
            .field("once", &self.once.is_some())
            .finish_non_exhaustive()
    }
}

/// How long store calls may take before they are answered [`StoreError::Unavailable`].
///
/// Every call of the [`Store`] port (and of the PostgreSQL use-once cache) is bounded by
/// `operation`, the wait for a connection included; a call whose deadline passes is abandoned
/// (its connection is dropped, so an uncommitted transaction is rolled back by the server). A
/// write abandoned after its `COMMIT` was sent answers [`StoreError::OutcomeUnknown`]: the
/// caller re-reads before reporting failure.
///
/// Backend details: PostgreSQL pools wait at most `acquire` for a connection (also the connect
/// timeout of [`open`]) and set `statement_timeout` to `operation` on their connections (a
/// statement stuck on a lock fails on the server too); SQLite's busy timeout is `operation`.
/// A frozen server (it accepts TCP and never answers) is caught only by the client-side
/// deadline, which is why both exist. Schema migrations at [`open`] are not bounded by
/// `operation` (they may take long) but by [`MIGRATION_TIMEOUT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// Longest wait for a pooled connection, and for the first connection at [`open`]
    /// (default 2 s).
    pub acquire: Duration,
    /// Longest one store call may take in all, the wait for a connection included
    /// (default 2 s).
    pub operation: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            acquire: DEFAULT_DEADLINE,
            operation: DEFAULT_DEADLINE,
        }
    }
}

/// The default of both [`Deadlines`]: 2 s.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(2);

/// How long the schema migrations at [`open`] may take (on PostgreSQL including the wait for
/// the advisory lock another replica holds while it migrates): 120 s.
pub const MIGRATION_TIMEOUT: Duration = Duration::from_secs(120);

/// [`open_with`] the default [`Deadlines`] (2 s).
///
/// # Errors
/// As [`open_with`].
pub async fn open(url: &str) -> Result<Opened, StoreError> {
    open_with(url, Deadlines::default()).await
}

/// Opens the store named by `url` and brings its schema up to date; every later store call
/// is bounded by `deadlines`.
///
/// * `postgres://…` or `postgresql://…`: a [`PgStore`], with its change feed and use-once
///   cache (it waits up to `deadlines.acquire` for an unreachable or unresponsive server).
/// * Anything else: a [`SqliteStore`] — `sqlite://path/to/file.db` (with optional `?…`
///   parameters), a plain file path, or `sqlite::memory:` / `:memory:` for a private in-memory
///   database. It has neither capability (one process owns it).
///
/// # Errors
/// [`StoreError::Unavailable`] when the URL is malformed, the database cannot be reached,
/// opened or created, or a migration fails.
///
/// # Security
/// A PostgreSQL URL may carry a password: it is never logged, and errors do not quote it.
pub async fn open_with(url: &str, deadlines: Deadlines) -> Result<Opened, StoreError> {
    if is_postgres_url(url) {
        tracing::info!("connecting to the postgresql store");
        let pg = Arc::new(PgStore::open_with(url, deadlines).await?);
        return Ok(Opened {
            store: pg.clone(),
            feed: Some(pg.clone()),
            once: Some(pg),
            backend: "postgres",
        });
    }
    Ok(Opened {
        store: Arc::new(SqliteStore::open_with(url, deadlines).await?),
        feed: None,
        once: None,
        backend: "sqlite",
    })
}

/// Whether a store URL names PostgreSQL.
pub fn is_postgres_url(url: &str) -> bool {
    let u = url.trim_start();
    u.starts_with("postgres://") || u.starts_with("postgresql://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_urls_are_recognised() {
        assert!(is_postgres_url("postgres://latch@127.0.0.1/latch"));
        assert!(is_postgres_url("  postgresql://h/db"));
        assert!(!is_postgres_url("sqlite://latch.db"));
        assert!(!is_postgres_url(":memory:"));
        assert!(!is_postgres_url("/var/lib/latch/postgres.db"));
    }

    #[tokio::test]
    async fn memory_urls_open_sqlite_without_capabilities() {
        for url in [":memory:", "sqlite::memory:"] {
            let opened = open(url).await.expect("open");
            assert_eq!(opened.backend, "sqlite");
            assert!(opened.feed.is_none() && opened.once.is_none());
            opened.store.ping().await.expect("ping");
        }
    }
}
