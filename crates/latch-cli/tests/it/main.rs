//! Latch's integration tests: one binary (as rustls does), every test against a real server on
//! 127.0.0.1:0 with a fake clock, over HTTP.

mod api;
mod approvals;
mod audit;
mod auth;
mod cases;
mod cli;
mod deny_codes;
mod exec;
mod flow;
mod interop;
mod leak;
mod mcp;
mod oauth;
mod policy;
mod providers;
mod proxy;
mod replicas;
mod restart;
mod revocation;
