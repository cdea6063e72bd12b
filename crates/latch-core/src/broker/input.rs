//! Use-case inputs and outputs (task opening, access requests, grants) and the input checks
//! the use cases share.

use super::*;

/// Input to open a task.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OpenTask {
    /// Why access is needed (1–1024 characters; no control, bidi or zero-width characters).
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::purpose))]
    pub purpose: String,
    /// Repository; defaults to the workload's, and must equal it when the identity names one.
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::repository))]
    pub repository: Option<String>,
    /// Branch; defaults to the workload's, and must equal it when the identity names one.
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::branch))]
    pub branch: Option<String>,
    /// Environment (`sandbox`, `staging`, `production`, …).
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::environment))]
    pub environment: String,
    /// Task TTL in seconds (default and upper bound from configuration: `422
    /// ttl_out_of_bounds` above it).
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub ttl_secs: Option<i64>,
    /// Human the agent acts for; must match the identity's when it names one.
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::on_behalf_of))]
    pub on_behalf_of: Option<String>,
}

/// The schemas of the input fields (`schema_with` takes no description: each carries its
/// field's).
#[cfg(feature = "openapi")]
mod schemas {
    use crate::openapi::{described, name, text};
    use utoipa::openapi::schema::Object;

    pub(super) fn purpose() -> Object {
        described(
            text(1024, true, false),
            "Why access is needed (1–1024 characters; no control, bidi or zero-width characters).",
        )
    }
    pub(super) fn repository() -> Object {
        described(
            name(true),
            "Repository; defaults to the workload's, and must equal it when the identity names one.",
        )
    }
    pub(super) fn branch() -> Object {
        described(
            name(true),
            "Branch; defaults to the workload's, and must equal it when the identity names one.",
        )
    }
    pub(super) fn environment() -> Object {
        described(
            name(false),
            "Environment (`sandbox`, `staging`, `production`, …).",
        )
    }
    pub(super) fn on_behalf_of() -> Object {
        described(
            name(true),
            "Human the agent acts for; must match the identity's when it names one.",
        )
    }
    pub(super) fn justification() -> Object {
        described(
            text(1024, false, false),
            "Why (shown to approvers; ≤ 1024 characters, no control, bidi or zero-width characters).",
        )
    }
}

/// Input to request access in a task.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RequestAccess {
    /// Resource id (`422 unknown_resource` if none is configured by that id).
    pub resource: String,
    /// Actions, e.g. `["read"]` (`422 unknown_action` for one the resource does not offer).
    #[cfg_attr(feature = "openapi", schema(min_items = 1))]
    pub actions: Vec<String>,
    /// Requested TTL in seconds (default: the resource's default TTL); clamped to the
    /// resource's maximum.
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub ttl_secs: Option<i64>,
    /// Why (shown to approvers; ≤ 1024 characters, no control, bidi or zero-width
    /// characters).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::justification))]
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
