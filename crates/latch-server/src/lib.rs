//! Latch's HTTP server: configuration (`latch.toml`), the axum [`http::router()`], background
//! [`jobs`] (reaper, policy watcher, change feed, audit sinks, …), and [`startup`], the one place
//! that names concrete implementations.

pub mod audit;
pub mod config;
pub mod console;
pub mod dev;
pub mod examples;
pub mod gateway;
pub mod http;
pub mod jobs;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod report;
pub mod ssf;
pub mod startup;
pub mod telemetry;
pub mod tls;

pub use config::Config;
pub use http::mcp;
pub use startup::{Server, StartError, StartOptions, start};
