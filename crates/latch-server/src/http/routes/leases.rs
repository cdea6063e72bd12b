//! Leases: `GET /v1/tasks/{id}/leases`, `POST /v1/leases/{id}/renew`, `…/revoke`.

use latch_core::model::Lease;

use crate::http::routes::access::{AccessResponse, grant_body};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use latch_core::broker::CallCtx;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::{ApiJsonOrEmpty, as_workload};
use crate::http::state::{AppState, ReqMeta};

#[utoipa::path(get, path = "/v1/tasks/{id}/leases", security(("bearer" = [])), params(("id" = String, Path, description = "task id", pattern = "^task_[0-9a-f]{32}$")),
    responses((status = 200, body = [Lease], description = "the task's leases"),
              (status = 403, body = ErrorBody, description = "`wrong_principal_kind`: a human token"),
              (status = 404, body = ErrorBody, description = "`task_not_found`")))]
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
    /// Requested TTL in seconds (default: the original request's); clamped to the resource's
    /// maximum.
    #[schema(minimum = 1)]
    pub ttl_secs: Option<i64>,
}

#[utoipa::path(post, path = "/v1/leases/{id}/renew", request_body(content = Option<RenewBody>, description = "optional: an empty body keeps the original TTL"),
    security(("bearer" = [])), params(("id" = String, Path, description = "lease id", pattern = "^lease_[0-9a-f]{32}$")),
    responses((status = 200, body = AccessResponse, description = "fresh policy evaluation passed; new credential"),
              (status = 403, body = ErrorBody, description = "`policy_denied`, `environment_separation`: policy no longer allows it, the lease was revoked; `wrong_principal_kind`: a human token"),
              (status = 404, body = ErrorBody, description = "`lease_not_found`"),
              (status = 409, body = ErrorBody, description = "`lease_not_active`, `task_not_open`, `conflict`"),
              (status = 423, body = ErrorBody, description = "`frozen`: an operator froze grants for this workload, repository or resource (kill switch) until lifted"),
              (status = 422, body = ErrorBody, description = "`ttl_out_of_bounds`: the lease reached its resource's maximum TTL"),
              (status = 429, body = ErrorBody, description = "`budget_exceeded`: the renewal budget of the task or workload is used up; the lease keeps working until it expires"),
              (status = 502, body = ErrorBody, description = "`provider_failed`"),
              (status = 503, body = ErrorBody, description = "`target_unavailable`, `store_unavailable`")))]
pub(crate) async fn renew_lease(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJsonOrEmpty(body): ApiJsonOrEmpty<RenewBody>,
) -> ApiResult<Json<AccessResponse>> {
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

#[utoipa::path(post, path = "/v1/leases/{id}/revoke", security(("bearer" = [])), params(("id" = String, Path, description = "lease id", pattern = "^lease_[0-9a-f]{32}$")),
    responses((status = 200, body = Lease, description = "the lease, revoked"),
              (status = 403, body = ErrorBody, description = "`wrong_principal_kind`: a human token"),
              (status = 404, body = ErrorBody, description = "`lease_not_found`"),
              (status = 409, body = ErrorBody, description = "`lease_not_active`, `conflict`")))]
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
