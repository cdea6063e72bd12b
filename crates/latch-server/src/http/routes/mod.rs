//! One file per resource of the HTTP API. Handlers stay thin: extract, call the broker, map.

pub mod access;
pub mod admin;
pub mod approvals;
pub mod audit;
pub mod ca;
pub mod dev;
pub mod gateway;
pub mod health;
pub mod introspection;
pub mod leases;
pub mod login;
pub mod oauth;
pub mod oauth_as;
pub mod proxy;
pub mod reports;
pub mod resources;
pub mod scan;
pub mod ssf;
pub mod tasks;
