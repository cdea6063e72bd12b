//! One example request of a `latch policy test` file ([`PolicyTestCase`]).

use serde::{Deserialize, Serialize};

/// One example request in a `latch policy test` file, with its expected decision.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyTestCase {
    /// Name shown in the report.
    pub name: String,
    /// The workload principal's claims.
    #[serde(default)]
    pub principal: crate::model::WorkloadClaims,
    /// The principal's issuer preset (`github_actions`, `gitlab_ci`, `kubernetes`, `spiffe`,
    /// `mcp_client` for an MCP client acting for a human; default `generic`).
    #[serde(default)]
    pub preset: Option<String>,
    /// The human the principal acts for.
    #[serde(default)]
    pub on_behalf_of: Option<String>,
    /// The task's environment.
    pub environment: String,
    /// The task's repository (defaults to the principal's).
    pub repository: Option<String>,
    /// The task's branch (defaults to the principal's).
    pub branch: Option<String>,
    /// Resource id (must be configured).
    pub resource: String,
    /// Actions.
    pub actions: Vec<String>,
    /// Requested TTL, seconds.
    #[serde(default = "default_case_ttl")]
    pub ttl_secs: i64,
    /// Groups whose approval is in context.
    #[serde(default)]
    pub approved_groups: Vec<String>,
    /// The task's past (`context.history`), e.g. `{ sensitivities = ["secret"] }` for a
    /// tainted task; empty by default.
    #[serde(default)]
    pub history: crate::history::TaskHistory,
    /// Expected decision: `allow`, `deny` or `step_up`.
    pub expect: String,
}

fn default_case_ttl() -> i64 {
    300
}
