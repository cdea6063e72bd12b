//! [`Store`](latch_core::ports::Store) implementations for Latch.
//!
//! * [`SqliteStore`]: the embedded default, on SQLite through sqlx (WAL, `synchronous=FULL`,
//!   one writer connection, a small read pool).
//! * [`conformance`]: a backend-agnostic test suite every `Store` must pass.
//!
//! Row bodies (the JSON of tasks, requests, leases and audit events) are never logged and never
//! appear in error messages.

pub mod conformance;
mod sqlite;

pub use sqlite::SqliteStore;
