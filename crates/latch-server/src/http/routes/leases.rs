//! Leases: `GET /v1/tasks/{id}/leases`, `POST /v1/leases/{id}/renew`, `…/revoke`.

use latch_core::model::Lease;

use crate::http::routes::access::{AccessResponse, grant_body};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use latch_core::broker::CallCtx;
use latch_core::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::error::{ApiResult, AppError, ErrorBody};
use crate::http::extract::as_workload;
use crate::http::state::{AppState, ReqMeta};

#[utoipa::path(get, path = "/v1/tasks/{id}/leases", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = [Lease])))]
pub(crate) async fn task_leases(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<Lease>>> {
    let r = as_workload(&s, &m, &headers, async |_ctx: &CallCtx, w| {
        s.broker.leases(&w, &id).await
    })
    .await;
    Ok(Json(r?))
}

/// Renewal input.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewBody {
    /// Requested TTL in seconds (default: the original request's).
    pub ttl_secs: Option<i64>,
}

#[utoipa::path(post, path = "/v1/leases/{id}/renew", request_body = RenewBody, security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = AccessResponse, description = "fresh policy evaluation passed; new credential"),
              (status = 403, body = ErrorBody, description = "policy no longer allows it; the lease was revoked"),
              (status = 400, body = ErrorBody, description = "max ttl reached")))]
pub(crate) async fn renew_lease(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<AccessResponse>> {
    let body: RenewBody = if body.iter().all(u8::is_ascii_whitespace) {
        RenewBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            AppError(ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "invalid json body: {}",
                    latch_core::error::without_input_values(&e.to_string())
                ),
            ))
        })?
    };
    let ttl = body.ttl_secs;
    let r = as_workload(&s, &m, &headers, async |ctx: &CallCtx, w| {
        s.broker.renew(ctx, &w, &id, ttl).await
    })
    .await;
    let g = r?;
    let mut body = grant_body(g, &m.request_id);
    body.status = "renewed".into();
    metrics::counter!("latch_renewals_total").increment(1);
    Ok(Json(body))
}

#[utoipa::path(post, path = "/v1/leases/{id}/revoke", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = Lease), (status = 409, body = ErrorBody)))]
pub(crate) async fn revoke_lease(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Lease>> {
    let r = as_workload(&s, &m, &headers, async |ctx: &CallCtx, w| {
        s.broker.revoke(ctx, &w, &id).await
    })
    .await;
    Ok(Json(r?))
}
