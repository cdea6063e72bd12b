//! [`Store`](latch_core::ports::Store) implementations for Latch.
//!
//! * [`SqliteStore`]: the embedded default, on SQLite through sqlx (WAL, `synchronous=FULL`,
//!   one writer connection, a small read pool).
//! * [`PgStore`]: PostgreSQL through sqlx, for several broker replicas sharing one database
//!   (compare-and-set updates, a serialised audit chain, reaper claims with
//!   `FOR UPDATE SKIP LOCKED`, and a `LISTEN`/`NOTIFY` change feed for cache invalidation).
//! * [`conformance`]: a backend-agnostic test suite every `Store` must pass.
//!
//! Row bodies (the JSON of tasks, requests, leases and audit events) are never logged and never
//! appear in error messages.

pub mod conformance;
mod postgres;
mod rows;
mod sqlite;

pub use postgres::{CHANGE_CHANNEL, FeedSettings, PgStore, StoreChange};
pub use sqlite::SqliteStore;
