//! The facts of the configuration and of the loaded policies a control report reads. The server
//! builds [`ControlConfig`] from `latch.toml` at start; the broker adds the resources and
//! [`PolicyFacts`] when a report is computed (policies can be reloaded meanwhile).

use serde::{Deserialize, Serialize};
#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// The live configuration a control report reads. Never holds a secret: names, kinds and
/// bounds only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ControlConfig {
    /// `[[issuers]]`: trusted identity issuers.
    pub issuers: Vec<IssuerFact>,
    /// `[dev_issuer] enabled`: the development issuer mints any workload or human token for
    /// whoever reaches `POST /v1/dev/tokens`.
    pub dev_issuer_enabled: bool,
    /// The master key was generated into the data directory (`[keys] generate_if_missing`
    /// with no key file or variable configured): development keys.
    pub generated_master_key: bool,
    /// `[tasks] production_environments`.
    pub production_environments: Vec<String>,
    /// `[tasks] max_ttl`, seconds.
    pub task_max_ttl_secs: i64,
    /// `[admin] groups`: who may read the trail, act as operator and engage the kill switch.
    pub admin_groups: Vec<String>,
    /// `[audit] checkpoint_interval`, seconds (0: only on export or report).
    pub checkpoint_interval_secs: i64,
    /// `[[audit.sinks]]`: where events are streamed besides the store.
    pub audit_sinks: Vec<SinkFact>,
    /// `[[notifications]]`: channel names (they tell approvers a request waits).
    pub notification_channels: Vec<String>,
    /// `[scan] on_leak`: what a leaked live credential takes down (`credential` or `task`).
    pub scan_on_leak: String,
    /// `[oauth] dpop_require_nonce`.
    pub dpop_require_nonce: bool,
    /// `[reaper] enabled`: expired tasks and failed revocations are worked on.
    pub reaper_enabled: bool,
    /// `[reaper] alert_after_attempts`.
    pub revoke_alert_after_attempts: u32,
    /// `[[mcp.upstreams]]`: the MCP gateway's upstream servers.
    pub mcp_upstreams: Vec<UpstreamFact>,
    /// The public URL (`[server] public_url` or the bound address).
    pub public_url: String,
    /// `[server.tls]` is configured (HTTPS on the listener).
    pub tls: bool,
    /// `[server.tls] client_certificates` (`none`, `optional`, `required`), when TLS is on.
    pub client_certificates: Option<String>,
    /// `[console] enabled`.
    pub console_enabled: bool,
    /// `[console] issuer`: humans sign in to the console at this issuer (else only the
    /// development sign-in, while the development issuer is on).
    pub console_issuer: Option<String>,
    /// `[[introspection_clients]]`: how many resource servers may introspect.
    pub introspection_clients: u32,
    /// Per-task and per-workload budgets are configured (`[budgets]`).
    pub budgets_configured: bool,
    /// Shared Signals receivers configured (`[[ssf.receivers]]`).
    pub ssf_receivers: u32,
    /// Shared Signals transmitters configured (`[[ssf.transmitters]]`).
    pub ssf_transmitters: u32,
}

/// One trusted issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct IssuerFact {
    /// Its name in `latch.toml`.
    pub name: String,
    /// `workload`, `human` or `spiffe`.
    pub kind: String,
    /// Claim preset (`github_actions`, `gitlab_ci`, `kubernetes`, `generic`, `human`,
    /// `spiffe`).
    pub preset: String,
    /// Longest accepted token lifetime, seconds.
    pub max_token_lifetime_secs: i64,
}

/// One audit sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SinkFact {
    /// Its name.
    pub name: String,
    /// `file`, `stdout` or `webhook`.
    pub kind: String,
}

/// One MCP gateway upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct UpstreamFact {
    /// Its name (the prefix of its tools).
    pub name: String,
    /// `streamable_http` or `stdio`.
    pub transport: String,
    /// Latch presents a configured (static) secret to it.
    pub static_credential: bool,
}

/// One configured resource, as the rules read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ResourceFact {
    /// Resource id.
    pub id: String,
    /// Provider kind.
    pub kind: String,
    /// Environment.
    pub environment: String,
    /// Whether the environment is a production one.
    pub production: bool,
    /// Sensitivity (`public`, `internal`, `confidential`, `secret`).
    pub sensitivity: String,
    /// Audience of its credentials.
    pub audience: String,
    /// Actions it offers.
    pub actions: Vec<String>,
    /// Longest TTL per issue or renewal, seconds.
    pub max_ttl_secs: i64,
    /// Longest life of one lease across renewals, seconds.
    pub max_lifetime_secs: i64,
    /// Owning team.
    pub owner: Option<String>,
}

impl From<&crate::model::Resource> for ResourceFact {
    fn from(r: &crate::model::Resource) -> Self {
        Self {
            id: r.id.clone(),
            kind: r.kind.clone(),
            environment: r.environment.as_str().to_owned(),
            production: r.production,
            sensitivity: r.sensitivity.clone(),
            audience: r.audience.clone(),
            actions: r.actions.clone(),
            max_ttl_secs: r.max_ttl_secs,
            max_lifetime_secs: r.max_lifetime_secs,
            owner: r.owner.clone(),
        }
    }
}

/// The loaded policy set, and what it answers to the probe requests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PolicyFacts {
    /// Short SHA-256 fingerprint of the loaded schema and policies (as in `policy.reloaded`).
    pub fingerprint: String,
    /// Number of policies loaded.
    pub policies: u32,
    /// The `@step_up` forbids: which group (and quorum) lifts each.
    pub step_up: Vec<StepUpFact>,
    /// One answer per probed resource and action (see [`super::probe`]).
    pub probes: Vec<ProbeResult>,
}

/// One `@step_up` forbid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct StepUpFact {
    /// Policy id.
    pub policy_id: String,
    /// The group whose approval lifts it.
    pub group: String,
    /// Distinct approvers needed.
    pub quorum: u32,
}

/// What the loaded policies answer for one resource and action, asked without approval by
/// each probe principal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ProbeResult {
    /// Resource id.
    pub resource: String,
    /// The action asked for.
    pub action: String,
    /// Whether the resource is in a production environment.
    pub production: bool,
    /// The most permissive answer over the probe principals: `allow`, `step_up` or `deny`.
    pub decision: String,
    /// The presets of the probe principals that got `decision`.
    pub presets: Vec<String>,
    /// The policies that decided it (for the first of `presets`).
    pub policy_ids: Vec<String>,
}
