//! Background jobs started by [`crate::startup`], one file per job. Each runs until the
//! shutdown signal (a `watch` channel turning `true`) and never names a concrete store or
//! provider: what a job needs from them is a small trait implemented in `startup.rs`.

pub mod audit_sinks;
pub mod ca_rotation;
pub mod change_feed;
pub mod checkpoints;
pub mod notify;
pub mod policy_watch;
pub mod reaper;
pub mod retention;
pub mod serve;
pub mod ssf;
pub mod store_upkeep;
pub mod targets;
