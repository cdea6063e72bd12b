//! Latch as an OAuth 2.1 authorization server for MCP clients: dynamic client registration
//! (`POST /oauth/register`, RFC 7591), the `authorization_code` and `refresh_token` grants of
//! `POST /oauth/token` (RFC 6749 §4.1.3, §6; PKCE RFC 7636; resource RFC 8707), token
//! revocation (`POST /oauth/revoke`, RFC 7009) and a human revoking a grant
//! (`DELETE /v1/oauth/grants/{id}`). The authorization endpoint is the console's
//! (`crate::http::console::authorize`). The use cases are the broker's.

use std::collections::HashMap;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use latch_core::broker::{CodeExchange, GrantError, IssuedTokens};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::http::error::ApiResult;
use crate::http::extract::{ApiJson, as_human};
use crate::http::state::{AppState, ReqMeta};
use latch_core::broker::CallCtx;
use latch_core::model::Human;

/// `grant_type` of the authorization code grant.
pub const GRANT_AUTHORIZATION_CODE: &str = "authorization_code";
/// `grant_type` of the refresh token grant.
pub const GRANT_REFRESH_TOKEN: &str = "refresh_token";

/// An RFC 6749 §5.2 error answer (`no-store`).
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let description = latch_core::error::redact_credentials(description).into_owned();
    let mut r = (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub use crate::console::cimd::check_redirect_uris;

/// A client registration request (RFC 7591 §2); other members are ignored.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RegistrationRequest {
    /// Where codes may be sent (1 to 10 absolute URIs: https, or http on a loopback host; no
    /// fragment).
    #[schema(min_items = 1, max_items = 10)]
    pub redirect_uris: Vec<String>,
    /// A name shown to the human on the consent page.
    #[serde(default)]
    pub client_name: Option<String>,
    /// Only `none` (public clients).
    #[serde(default)]
    pub token_endpoint_auth_method: Option<String>,
}

/// The registration answer (RFC 7591 §3.2.1).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RegistrationResponse {
    /// The assigned client id (`mcpc_…`).
    pub client_id: String,
    /// When it was issued (Unix seconds).
    pub client_id_issued_at: i64,
    /// As registered.
    pub client_name: Option<String>,
    /// As registered.
    pub redirect_uris: Vec<String>,
    /// `none`.
    pub token_endpoint_auth_method: &'static str,
    /// `authorization_code`, `refresh_token`.
    pub grant_types: Vec<&'static str>,
    /// `code`.
    pub response_types: Vec<&'static str>,
}

/// `POST /oauth/register`: dynamic client registration (RFC 7591) of a public MCP client.
#[utoipa::path(post, path = "/oauth/register", request_body = RegistrationRequest,
    responses((status = 201, body = RegistrationResponse, description = "RFC 7591 §3.2.1"),
              (status = 400, description = "RFC 7591 §3.2.2: `invalid_redirect_uri`, `invalid_client_metadata`")))]
pub async fn register(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    ApiJson(r): ApiJson<RegistrationRequest>,
) -> Response {
    if let Err(e) = check_redirect_uris(&r.redirect_uris) {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_redirect_uri", &e);
    }
    if r.token_endpoint_auth_method
        .as_deref()
        .is_some_and(|m| m != "none")
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_client_metadata",
            "only public clients (token_endpoint_auth_method none) are supported",
        );
    }
    let name = r
        .client_name
        .filter(|n| !n.is_empty())
        .map(|n| n.chars().filter(|c| !c.is_control()).take(128).collect());
    let ctx = m.ctx();
    match s
        .broker
        .oauth_register_client(&ctx, name, r.redirect_uris)
        .await
    {
        Ok(c) => (
            StatusCode::CREATED,
            axum::Json(RegistrationResponse {
                client_id: c.client_id,
                client_id_issued_at: c.created_at_unix_secs,
                client_name: c.client_name,
                redirect_uris: c.redirect_uris,
                token_endpoint_auth_method: "none",
                grant_types: vec![GRANT_AUTHORIZATION_CODE, GRANT_REFRESH_TOKEN],
                response_types: vec!["code"],
            }),
        )
            .into_response(),
        Err(e) => crate::http::error::AppError(e).into_response(),
    }
}

/// The `authorization_code` and `refresh_token` grants of `POST /oauth/token`, or `None` for
/// another grant type (the token exchange answers those).
pub async fn other_grant(
    s: &AppState,
    m: &ReqMeta,
    form: &HashMap<String, String>,
) -> Option<Response> {
    let get = |k: &str| form.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let ctx = m.ctx();
    let r = match get("grant_type")? {
        GRANT_AUTHORIZATION_CODE => {
            let (Some(code), Some(client_id), Some(redirect_uri), Some(verifier)) = (
                get("code"),
                get("client_id"),
                get("redirect_uri"),
                get("code_verifier"),
            ) else {
                return Some(oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "code, client_id, redirect_uri and code_verifier are required",
                ));
            };
            let x = CodeExchange {
                code,
                client_id,
                redirect_uri,
                code_verifier: verifier,
                resource: get("resource"),
            };
            s.broker.oauth_exchange_code(&ctx, x).await
        }
        GRANT_REFRESH_TOKEN => {
            let Some(rt) = get("refresh_token") else {
                return Some(oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "refresh_token is required",
                ));
            };
            s.broker
                .oauth_refresh(&ctx, rt, get("client_id"), get("resource"))
                .await
        }
        _ => return None,
    };
    let flushed = s.broker.flush(&ctx).await;
    Some(match (r, flushed) {
        (Ok(t), Ok(())) => tokens(t),
        (Ok(_), Err(e)) | (Err(GrantError::Broker(e)), _) => {
            let (status, error) = match e.code {
                latch_core::ErrorCode::RateLimited => {
                    (StatusCode::TOO_MANY_REQUESTS, "temporarily_unavailable")
                }
                _ => (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable"),
            };
            oauth_error(status, error, &e.message)
        }
        (Err(GrantError::OAuth { error, description }), _) => {
            oauth_error(StatusCode::BAD_REQUEST, error, &description)
        }
    })
}

/// The RFC 6749 §5.1 answer.
fn tokens(t: IssuedTokens) -> Response {
    let mut r = (
        StatusCode::OK,
        axum::Json(json!({
            "access_token": t.access_token.expose_secret(),
            "token_type": "Bearer",
            "expires_in": t.expires_in,
            "refresh_token": t.refresh_token.expose_secret(),
        })),
    )
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `POST /oauth/revoke` (RFC 7009): revokes the grant of a Latch-issued access or refresh
/// token (every token under it at once). Public clients: no client authentication. Always
/// `200` for a well-formed request, whether or not the token was known (§2.2).
#[utoipa::path(post, path = "/oauth/revoke",
    request_body(content = RevokeForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "RFC 7009 §2.2"),
              (status = 400, description = "`invalid_request`: no token")))]
pub async fn revoke(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    body: axum::body::Bytes,
) -> Response {
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let Some(token) = form.get("token").filter(|t| !t.is_empty()) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "token is required",
        );
    };
    let ctx = m.ctx();
    let r = s.broker.oauth_revoke_token(&ctx, token).await;
    match (r, s.broker.flush(&ctx).await) {
        (Ok(()), Ok(())) => StatusCode::OK.into_response(),
        (Err(e), _) | (_, Err(e)) => oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            &e.message,
        ),
    }
}

/// The form of `POST /oauth/revoke`.
#[derive(utoipa::ToSchema)]
#[expect(dead_code, reason = "only the OpenAPI document reads these fields")]
pub struct RevokeForm {
    /// The access or refresh token.
    #[schema(min_length = 1)]
    token: String,
    /// `access_token` or `refresh_token` (ignored: both revoke the grant).
    token_type_hint: Option<String>,
}

/// A grant after revocation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GrantView {
    /// The grant id.
    pub id: String,
    /// The client.
    pub client_id: String,
    /// `revoked`.
    pub state: String,
    /// `human` or `admin`.
    pub revoked_reason: Option<String>,
}

/// `DELETE /v1/oauth/grants/{id}`: the human a grant was given by (or an admin) revokes it;
/// its access and refresh tokens stop working at once.
#[utoipa::path(delete, path = "/v1/oauth/grants/{id}",
    params(("id" = String, Path, description = "The grant id (`ogr_…`)")),
    responses((status = 200, body = GrantView, description = "The revoked grant"),
              (status = 401, body = crate::http::error::ErrorBody, description = "No valid human token"),
              (status = 404, body = crate::http::error::ErrorBody, description = "`not_found`: no such grant of yours")),
    security(("bearer" = [])))]
pub async fn revoke_grant(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<GrantView>> {
    let r = as_human(&s, &m, &headers, async |ctx: &CallCtx, h: Human| {
        let g = s.broker.oauth_revoke_grant(ctx, &h, &id).await?;
        Ok(GrantView {
            id: g.id,
            client_id: g.client_id,
            state: "revoked".into(),
            revoked_reason: g.revoked_reason,
        })
    })
    .await;
    Ok(axum::Json(r?))
}

/// The metadata members of the authorization server for MCP clients (RFC 8414), present only
/// while the console (the authorization endpoint) is enabled.
pub fn metadata_members(s: &AppState) -> Value {
    let b = &s.base_url;
    if s.console.is_none() {
        return json!({});
    }
    json!({
        "authorization_endpoint": format!("{b}/console/authorize"),
        "registration_endpoint": format!("{b}/oauth/register"),
        "revocation_endpoint": format!("{b}/oauth/revoke"),
        "revocation_endpoint_auth_methods_supported": ["none"],
        "code_challenge_methods_supported": ["S256"],
        "client_id_metadata_document_supported": true,
        "response_types_supported": ["code"],
        "authorization_response_iss_parameter_supported": true,
    })
}
