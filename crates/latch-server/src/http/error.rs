//! Error responses: `{"error": {"code", "message", "request_id"}}` ([`ErrorBody`]) and
//! [`AppError`], an [`ApiError`] as an HTTP response.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use latch_core::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Error body: `{"error": {"code", "message", "request_id"}}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Error details.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable code (see `ErrorCode`).
    pub code: String,
    /// Lowercase, secret-free message.
    pub message: String,
    /// The request id, for support.
    pub request_id: Option<String>,
}

/// The error body of the OAuth client endpoints, `/v1/oauth/introspect` (RFC 7662 §2.3) and
/// `/v1/oauth/revoke` (RFC 7009 §2.2.1), which answer errors as RFC 6749 §5.2 says:
/// `{"error", "error_description", "latch_code", "request_id"}`; a failed client
/// authentication is `401 invalid_client` with `WWW-Authenticate: Basic`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OAuthClientError {
    /// RFC 6749 §5.2 code: `invalid_client`, `invalid_request`, `temporarily_unavailable`.
    pub error: &'static str,
    /// Lowercase, secret-free description.
    pub error_description: String,
    /// The stable Latch error code (see `ErrorCode`).
    pub latch_code: &'static str,
    /// The request id, for support.
    pub request_id: String,
}

/// Whether `path` is an OAuth endpoint, whose errors take the RFC 6749 §5.2 shape
/// ([`OAuthClientError`]) also when a shared layer gives them (`408`, `413`, `429`): the token
/// endpoint and the client endpoints.
pub fn is_oauth_client_endpoint(path: &str) -> bool {
    matches!(
        path,
        "/oauth/token" | "/v1/oauth/introspect" | "/v1/oauth/revoke"
    )
}

/// The RFC 6749 §5.2 `error` for a Latch error code on an OAuth client endpoint.
pub fn oauth_client_error(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::ClientAuthFailed => "invalid_client",
        c if c.http_status() == 401 => "invalid_client",
        ErrorCode::RateLimited
        | ErrorCode::StoreUnavailable
        | ErrorCode::TargetUnavailable
        | ErrorCode::Internal
        | ErrorCode::RequestTimeout => "temporarily_unavailable",
        _ => "invalid_request",
    }
}

/// An [`ApiError`] as an HTTP response.
#[derive(Debug)]
pub struct AppError(pub ApiError);

impl From<ApiError> for AppError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.0.code.as_str().into(),
                // Whatever put a caller's credential into a message, it is not repeated.
                message: latch_core::error::redact_credentials(&self.0.message).into_owned(),
                request_id: None,
            },
        };
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, bearer_challenge(self.0.code));
        }
        resp.extensions_mut().insert(self.0);
        resp
    }
}

/// The `WWW-Authenticate` challenge of a `401` (RFC 6750 §3): a request that carried no token
/// gets no error code (§3.1: "the resource server SHOULD NOT include an error code"), a token
/// whose sign-in is too old for a vote or an operator action `insufficient_user_authentication`
/// (RFC 9470 §3), any other failed authentication `invalid_token`.
pub fn bearer_challenge(code: ErrorCode) -> HeaderValue {
    if code == ErrorCode::TokenMissing {
        HeaderValue::from_static("Bearer realm=\"latch\"")
    } else if code == ErrorCode::InsufficientUserAuthentication {
        // RFC 9470 §3: the token is valid, but its authentication is too old for this call.
        HeaderValue::from_static(
            "Bearer realm=\"latch\", error=\"insufficient_user_authentication\", error_description=\"a more recent sign-in is needed\"",
        )
    } else {
        HeaderValue::from_static("Bearer realm=\"latch\", error=\"invalid_token\"")
    }
}

/// Unknown paths: `404 not_found` in the JSON error shape.
pub(crate) async fn not_found() -> AppError {
    AppError(ApiError::new(ErrorCode::NotFound, "no such endpoint"))
}

/// A known path with a method it does not take: `405 method_not_allowed` in the JSON error
/// shape; axum adds the `Allow` header listing the methods it takes (RFC 9110 §15.5.6).
pub(crate) async fn method_not_allowed(method: axum::http::Method) -> AppError {
    AppError(ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!(
            "this endpoint does not take {}",
            latch_core::error::quote(method.as_str())
        ),
    ))
}

/// The result of a handler: a value or an [`AppError`] response.
pub type ApiResult<T> = Result<T, AppError>;
