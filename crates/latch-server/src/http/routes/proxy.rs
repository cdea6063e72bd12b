//! `GET /v1/proxy/rules/{resource}`: the methods and paths `latch proxy` may forward for a
//! resource, from `[[proxy.rules]]` in `latch.toml`.
//!
//! The proxy holds the credential, not the agent, so the proxy is where the rules bite: it
//! fetches them at start and refuses (403) any request they do not allow. Resources without rules
//! are not restricted by the broker (the proxy's own `--allow` flags may still narrow them).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use latch_core::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::ProxyConfig;
use crate::http::error::{AppError, ErrorBody};
use crate::http::extract::{bearer, finish};
use crate::http::state::{AppState, ReqMeta};

/// Answer of `GET /v1/proxy/rules/{resource}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProxyRules {
    /// The resource.
    pub resource: String,
    /// Whether the broker restricts it (`false`: no `[[proxy.rules]]` entry).
    pub restricted: bool,
    /// Allowed `METHOD:PATH` entries (when `restricted`).
    pub allow: Vec<String>,
}

#[utoipa::path(get, path = "/v1/proxy/rules/{resource}", security(("bearer" = [])),
    params(("resource" = String, Path, description = "resource id")),
    responses((status = 200, body = ProxyRules, description = "what `latch proxy` may forward for this resource"),
        (status = 403, body = ErrorBody, description = "`wrong_principal_kind`: a human token"),
        (status = 422, body = ErrorBody, description = "`unknown_resource`: no such resource is configured")))]
pub(crate) async fn proxy_rules(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    Extension(cfg): Extension<Arc<ProxyConfig>>,
    Path(resource): Path<String>,
    headers: HeaderMap,
) -> Result<Json<ProxyRules>, AppError> {
    let ctx = m.ctx();
    let r = async {
        s.broker
            .authenticate_workload(&ctx, bearer(&headers))
            .await?;
        if !s.broker.resources().any(|r| r.id == resource) {
            return Err(ApiError::new(
                ErrorCode::UnknownResource,
                format!("no resource {}", latch_core::error::quote(&resource)),
            ));
        }
        let allow: Vec<String> = cfg
            .rules
            .iter()
            .filter(|r| r.resource == resource)
            .flat_map(|r| r.allow.iter().cloned())
            .collect();
        Ok(ProxyRules {
            restricted: cfg.rules.iter().any(|r| r.resource == resource),
            resource,
            allow,
        })
    }
    .await;
    Ok(Json(finish(&s, &ctx, r).await?))
}
