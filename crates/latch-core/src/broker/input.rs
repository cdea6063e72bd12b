//! Use-case inputs and outputs (task opening, access requests, grants) and the input checks
//! the use cases share.

use super::*;

/// Input to open a task.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OpenTask {
    /// Why access is needed (1–1024 characters).
    pub purpose: String,
    /// Repository; defaults to the workload's, and must equal it when the identity names one.
    pub repository: Option<String>,
    /// Branch; defaults to the workload's, and must equal it when the identity names one.
    pub branch: Option<String>,
    /// Environment (`sandbox`, `staging`, `production`, …).
    pub environment: String,
    /// Task TTL in seconds (default and bound from configuration).
    pub ttl_secs: Option<i64>,
    /// Human the agent acts for; must match the identity's when it names one.
    pub on_behalf_of: Option<String>,
}

/// Input to request access in a task.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RequestAccess {
    /// Resource id.
    pub resource: String,
    /// Actions, e.g. `["read"]`.
    pub actions: Vec<String>,
    /// Requested TTL in seconds (default: the resource's default TTL); clamped to the bounds.
    pub ttl_secs: Option<i64>,
    /// Why (shown to approvers; ≤ 1024 characters).
    #[serde(default)]
    pub justification: String,
    /// Provider-specific parameters (e.g. a public key); never secrets.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub params: serde_json::Value,
}

/// A minted credential, delivered once, with its lease.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The request.
    pub request: AccessRequest,
    /// The lease.
    pub lease: Lease,
    /// The credential.
    pub credential: DeliveredCredential,
}

/// Outcome of an access request (or its claim after approval).
#[derive(Debug, Clone)]
pub enum AccessOutcome {
    /// Allowed and minted.
    Granted(Box<Grant>),
    /// Denied; the request carries the decision with policy ids and reasons.
    Denied(AccessRequest),
    /// Waiting for approvers (step-up).
    Pending(AccessRequest),
}

/// Whether a resource only accepts key-bound credentials (`settings.require_dpop = true`).
pub fn resource_requires_dpop(resource: &Resource) -> bool {
    resource
        .settings
        .get("require_dpop")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false)
}

pub(super) fn check_binding(resource: &Resource, binding: &TokenBinding) -> Result<()> {
    if resource_requires_dpop(resource) && binding.jkt.is_none() {
        return Err(ApiError::new(
            ErrorCode::DpopRequired,
            format!(
                "resource `{}` only accepts dpop-bound credentials: send a `DPoP` proof (rfc 9449) with the request",
                resource.id
            ),
        ));
    }
    Ok(())
}

/// Whether `id` is an acceptable human id: 1–128 ASCII letters, digits and `._@+-`. Ids are
/// compared case-insensitively, so with this alphabet one human has exactly one spelling —
/// no whitespace, invisible or look-alike characters can make a second approver out of one.
pub fn valid_human_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '+' | '-'))
}

pub(super) fn check_name(field: &str, v: &str) -> Result<()> {
    let ok = !v.is_empty()
        && v.len() <= 128
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':'));
    if !ok {
        return Err(bad(format!("`{field}` {} is not a valid name", quote(v))));
    }
    if crate::error::looks_like_credential(v) {
        return Err(bad(format!(
            "`{field}` looks like a credential; never paste one into a request"
        )));
    }
    Ok(())
}
