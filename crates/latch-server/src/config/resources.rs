//! `[[resources]]` in `latch.toml`: what agents may ask for.

use std::time::Duration;

use serde::Deserialize;

/// One `[[resources]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    /// Id used in requests and policies.
    pub id: String,
    /// Provider kind: `jwt`, `postgres`, `redis`, `ssh` or `x509` (see [`latch_core::model::ProviderKind`]).
    pub kind: String,
    /// Environment it lives in.
    pub environment: String,
    /// `public`, `internal`, `confidential` or `secret` (see [`latch_core::model::Sensitivity`]).
    #[serde(default = "default_sensitivity")]
    pub sensitivity: String,
    /// Audience of its credentials.
    pub audience: String,
    /// Actions it offers.
    pub actions: Vec<String>,
    /// Longest TTL per issue or renewal.
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    /// TTL when a request names none (default: `max_ttl`).
    #[serde(default, with = "humantime_serde")]
    pub default_ttl: Option<Duration>,
    /// Longest life of one lease across renewals (default: 4 × `max_ttl`).
    #[serde(default, with = "humantime_serde")]
    pub max_lifetime: Option<Duration>,
    /// Owning team.
    pub owner: Option<String>,
    /// Data can leave through it (an external API, publishing, a deploy pipeline): policy reads
    /// `resource.egress` (the example policies hold it back for step-up in a tainted task).
    #[serde(default)]
    pub egress: bool,
    /// `"deny"` (default) or `"end_task"`: a budget breach on a request for it also ends the
    /// task.
    #[serde(default)]
    pub on_budget_breach: BreachAction,
    /// Provider settings.
    #[serde(default)]
    pub settings: toml::Table,
}

/// What a budget breach does besides denying (`on_budget_breach`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreachAction {
    /// Deny the request only.
    #[default]
    Deny,
    /// Deny it and end the task (every credential revoked).
    EndTask,
}

fn default_sensitivity() -> String {
    latch_core::model::Sensitivity::Internal.as_str().into()
}
