//! What may be requested: the configured resources as a caller sees them (`GET /v1/resources`,
//! `latch resources`). Policy still decides every request; the catalogue only names what exists.

use super::*;

/// One requestable resource: what `POST /v1/tasks/{id}/requests` may name, its environment,
/// actions and TTL bounds. Provider settings are left out (they name targets, not secrets, but
/// an agent needs none of them).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResourceInfo {
    /// Resource id (what a request names).
    pub id: String,
    /// Provider kind (`jwt`, `postgres`, `redis`, `ssh`, `x509`).
    pub kind: String,
    /// Environment it lives in; a task of another environment cannot request it.
    pub environment: String,
    /// Whether that environment is a production one (step-up rules usually apply).
    pub production: bool,
    /// `public`, `internal`, `confidential` or `secret`.
    pub sensitivity: String,
    /// Actions a request may ask for.
    pub actions: Vec<String>,
    /// Longest TTL a credential may have (seconds); longer requests are cut to it.
    pub max_ttl_secs: i64,
    /// TTL when a request gives none (seconds).
    pub default_ttl_secs: i64,
    /// Longest total life across renewals (seconds).
    pub max_lifetime_secs: i64,
    /// Owning team, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl Broker {
    /// The configured resources, sorted by environment then id.
    pub fn resource_catalog(&self) -> Vec<ResourceInfo> {
        let mut out: Vec<ResourceInfo> = self
            .resources()
            .map(|r| ResourceInfo {
                id: r.id.clone(),
                kind: r.kind.clone(),
                environment: r.environment.to_string(),
                production: r.production,
                sensitivity: r.sensitivity.clone(),
                actions: r.actions.clone(),
                max_ttl_secs: r.max_ttl_secs,
                default_ttl_secs: r.default_ttl_secs,
                max_lifetime_secs: r.max_lifetime_secs,
                owner: r.owner.clone(),
            })
            .collect();
        out.sort_by(|a, b| (&a.environment, &a.id).cmp(&(&b.environment, &b.id)));
        out
    }
}
