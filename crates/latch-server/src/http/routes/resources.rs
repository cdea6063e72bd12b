//! `GET /v1/resources`: what may be requested (any verified caller: workload or human).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::{Extension, Json};
use latch_core::broker::ResourceInfo;

use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::{bearer, finish};
use crate::http::state::{AppState, ReqMeta};

#[utoipa::path(get, path = "/v1/resources", security(("bearer" = [])),
    responses((status = 200, body = [ResourceInfo], description = "the configured resources, by environment then id: kind, actions, TTL bounds (policy still decides each request)"),
              (status = 401, body = ErrorBody, description = "`token_missing` or another authentication code")))]
pub(crate) async fn list_resources(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
) -> ApiResult<Json<Vec<ResourceInfo>>> {
    let ctx = m.ctx();
    let r = s
        .broker
        .authenticate(&ctx, bearer(&headers))
        .await
        .map(|_| s.broker.resource_catalog());
    Ok(Json(finish(&s, &ctx, r).await?))
}
