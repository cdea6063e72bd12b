//! The development issuer's token endpoint, `POST /v1/dev/tokens`, and its public keys,
//! `GET /v1/dev/jwks.json` (both routed only when enabled).

use crate::dev::DevTokenRequest;
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use latch_core::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::error::{ApiResult, AppError, ErrorBody};
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
    responses((status = 200, body = DevTokenResponse, description = "a signed development token"),
              (status = 404, body = ErrorBody, description = "`not_found`: the development issuer is disabled (the route does not exist then)")))]
pub(crate) async fn dev_token(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<DevTokenRequest>,
) -> ApiResult<Json<DevTokenResponse>> {
    let dev = s.dev.as_ref().ok_or_else(|| {
        AppError(ApiError::new(
            ErrorCode::NotFound,
            "the development issuer is disabled",
        ))
    })?;
    let now = s.broker.clock().now_unix_secs();
    let token = dev
        .mint(&req, now)
        .map_err(|m| AppError(ApiError::new(ErrorCode::InvalidRequest, m)))?;
    Ok(Json(DevTokenResponse { token }))
}

/// `GET /v1/dev/jwks.json`: the development issuer's public key (RFC 7517 JWK Set), so that
/// anyone, not only Latch, can verify the tokens it mints for `latch-dev://workload` and
/// `latch-dev://human`. Routed only when the development issuer is enabled; advertised in the
/// authorization server metadata as `latch_dev_jwks_uri`. Deliberately apart from
/// `/.well-known/jwks.json`: those keys sign access tokens, this one signs identities anyone
/// may ask for, and a verifier must not trust the one for the other.
#[utoipa::path(get, path = "/v1/dev/jwks.json",
    responses((status = 200, description = "RFC 7517 JWK Set of the development issuer (issuers `latch-dev://workload` and `latch-dev://human`)"),
              (status = 404, body = ErrorBody, description = "`not_found`: the development issuer is disabled (the route does not exist then)")))]
pub(crate) async fn dev_jwks(State(s): State<AppState>) -> ApiResult<impl IntoResponse> {
    let dev = s.dev.as_ref().ok_or_else(|| {
        AppError(ApiError::new(
            ErrorCode::NotFound,
            "the development issuer is disabled",
        ))
    })?;
    Ok((
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(dev.jwks().clone()),
    ))
}
