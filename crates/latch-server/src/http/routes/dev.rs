//! The development issuer's token endpoint: `POST /v1/dev/tokens` (routed only when enabled).

use crate::dev::DevTokenRequest;
use axum::Json;
use axum::extract::State;
use latch_core::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::error::{ApiResult, AppError};
use crate::http::extract::ApiJson;
use crate::http::state::AppState;

/// A development token.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct DevTokenResponse {
    /// The signed token.
    pub token: String,
}

impl std::fmt::Debug for DevTokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DevTokenResponse { token: <redacted> }")
    }
}

#[utoipa::path(post, path = "/v1/dev/tokens", request_body = DevTokenRequest,
    responses((status = 200, body = DevTokenResponse), (status = 404, description = "development issuer disabled")))]
pub(crate) async fn dev_token(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<DevTokenRequest>,
) -> ApiResult<Json<DevTokenResponse>> {
    let dev = s.dev.as_ref().ok_or_else(|| {
        AppError(ApiError::new(
            ErrorCode::InvalidRequest,
            "the development issuer is disabled",
        ))
    })?;
    let now = s.broker.clock().now_unix_secs();
    let token = dev
        .mint(&req, now)
        .map_err(|m| AppError(ApiError::new(ErrorCode::InvalidRequest, m)))?;
    Ok(Json(DevTokenResponse { token }))
}
