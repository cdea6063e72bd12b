//! Latch's integration tests: one binary (as rustls does), every test against a real server on
//! 127.0.0.1:0 with a fake clock, over HTTP.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unimplemented,
    clippy::too_many_lines,
    reason = "test code: a failed step fails the test, and a scenario reads best in one piece"
)]
mod ambient;
mod api;
mod approvals;
mod audit;
mod auth;
mod bench;
mod cases;
mod cli;
mod cli_catalog;
mod cli_newcomer;
mod cli_next_step;
mod console;
mod console_links;
mod console_ops;
mod demo;
mod deny_codes;
mod docs;
mod echo;
mod edge;
mod exec;
mod flow;
mod gateway;
mod gh_action;
mod history;
mod interop;
mod kill_switch;
mod leak;
mod lifecycle;
mod log_secrets;
mod login;
mod mcp;
mod mcp_oauth;
mod metrics;
mod notify;
mod oauth;
mod oauth4webapi;
mod openapi;
mod operators;
mod otel;
mod outcome;
mod policy;
mod providers;
mod proxy;
mod replicas;
mod repo_identity;
mod report;
mod restart;
mod retention;
mod revocation;
mod revocation_lists;
mod spiffe;
mod ssf;
mod store_outage;
mod svid_credentials;
mod target_outage;
mod targets;
mod x509_svid;
