//! Latch core: the domain of a just-in-time access broker for AI agents and other workloads.
//!
//! A workload proves **what it is** (workload identity), opens a [`model::Task`], and asks for
//! access. A Cedar policy ([`policy::PolicyEngine`]) decides at request time: allow, deny with
//! reasons, or step-up (human approval). Allowed access is minted per task by a
//! [`ports::CredentialProvider`] and recorded as a [`model::Lease`] with a tight TTL, revoked when
//! the task ends. Every state change commits together with its [`model::AuditEvent`].
//!
//! This crate depends on no web, SQL or HTTP-client crate: adapters implement the ports in
//! [`ports`] (`Clock`, `IdentityVerifier`, `CredentialProvider`, `Store`) and [`broker::Broker`]
//! orchestrates them.

pub mod audit;
pub mod auth_failures;
pub mod broker;
pub mod clock;
pub mod console;
pub mod console_session;
pub mod controls;
pub mod credential_format;
pub mod digest;
pub mod error;
pub mod freeze;
pub mod gateway;
pub mod history;
pub mod json;
pub mod kinds;
pub mod model;
pub mod notify;
pub mod oauth_grant;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod policy;
pub mod ports;
pub mod ssf;
pub mod telemetry;
pub mod ttl;
pub mod workload_claims;

pub use broker::{Broker, BrokerSettings};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{ApiError, ErrorCode};
