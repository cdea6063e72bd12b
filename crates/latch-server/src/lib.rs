//! Latch's HTTP server: configuration (`latch.toml`), the axum [`api::router`], background jobs
//! (reaper, policy watcher), and [`startup`], the one place that names concrete implementations.

pub mod api;
pub mod audit;
pub mod config;
pub mod dev;
pub mod dpop;
pub mod examples;
pub mod mcp;
pub mod oauth;
pub mod proxy_api;
pub mod scan_api;
pub mod startup;

pub use config::Config;
pub use startup::{Server, StartError, StartOptions, start};
