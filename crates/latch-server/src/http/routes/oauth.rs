//! OAuth 2.0 endpoints for agents and CI: Token Exchange (RFC 8693) with Rich Authorization
//! Requests (RFC 9396) at `/oauth/token`, DPoP-bound results (RFC 9449), authorization server
//! metadata (RFC 8414) and protected resource metadata for the MCP endpoint (RFC 9728).
//!
//! The token endpoint is a thin front of the broker's token exchange use case
//! ([`latch_core::Broker::exchange_token`], which opens a task and asks for access, so policy
//! decides exactly as for `POST /v1/tasks/{id}/requests`): it checks the form, verifies the
//! DPoP proof (bound to this HTTP request) and renders the answer.
//! Errors use the OAuth error response (RFC 6749 §5.2): `{"error", "error_description"}`, plus
//! `latch_code` (the stable Latch error code) and, for denials and step-up, the details.

use secrecy::ExposeSecret;
use std::collections::HashMap;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use latch_core::broker::{CallCtx, ExchangeError, ExchangeOutcome, ExchangeRequest, auth_req_id};
use latch_core::model::Decision;
use latch_core::{ApiError, ErrorCode};
use serde::Serialize;
use serde_json::{Value, json};

use crate::http::dpop::{DPOP_ALGORITHMS, ProofCheck};
use crate::http::state::{AppState, ReqMeta};

/// `grant_type` of RFC 8693 §2.1.
pub const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// Token type of a JWT (RFC 8693 §3).
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// Token type of an OpenID Connect ID token (RFC 8693 §3).
pub const TOKEN_TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
/// Token type of an OAuth access token (RFC 8693 §3): what the endpoint issues.
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
pub use latch_core::broker::{AUTHZ_DETAILS_TYPE, LatchAccessDetail};

/// An OAuth error answer (RFC 6749 §5.2).
#[derive(Debug)]
struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
    latch_code: Option<&'static str>,
    extra: Value,
    dpop_nonce: Option<String>,
}

impl OAuthError {
    fn new(error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error,
            description: description.into(),
            latch_code: None,
            extra: Value::Null,
            dpop_nonce: None,
        }
    }
}

impl From<ApiError> for OAuthError {
    fn from(e: ApiError) -> Self {
        let (status, error) = match e.code {
            ErrorCode::DpopProofInvalid => (StatusCode::BAD_REQUEST, "invalid_dpop_proof"),
            ErrorCode::DpopNonceRequired => (StatusCode::BAD_REQUEST, "use_dpop_nonce"),
            ErrorCode::UnknownResource | ErrorCode::UnknownAction => {
                (StatusCode::BAD_REQUEST, "invalid_authorization_details")
            }
            // The details are fine; the request lacks the proof this resource needs.
            ErrorCode::DpopRequired => (StatusCode::BAD_REQUEST, "invalid_request"),
            ErrorCode::StoreUnavailable | ErrorCode::Internal | ErrorCode::ProviderFailed => {
                (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable")
            }
            ErrorCode::RequestExpired => (StatusCode::BAD_REQUEST, "expired_token"),
            // An operator froze the scope: a denial like policy's, `latch_code` says `frozen`.
            ErrorCode::Frozen => (StatusCode::BAD_REQUEST, "access_denied"),
            // Too many failed authentications from this source (`Retry-After` is added by the
            // `auth_limit` middleware); `latch_code` says `rate_limited`.
            ErrorCode::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "temporarily_unavailable"),
            ErrorCode::BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request"),
            c if c.http_status() == 401 => (StatusCode::BAD_REQUEST, "invalid_grant"),
            _ => (StatusCode::BAD_REQUEST, "invalid_request"),
        };
        Self {
            status,
            error,
            description: e.message,
            latch_code: Some(e.code.as_str()),
            extra: Value::Null,
            dpop_nonce: None,
        }
    }
}

impl From<ExchangeError> for OAuthError {
    fn from(e: ExchangeError) -> Self {
        match e {
            ExchangeError::InvalidRequest(m) => Self::new("invalid_request", m),
            ExchangeError::InvalidDetails(m) => Self::new("invalid_authorization_details", m),
            ExchangeError::Broker(e) => e.into(),
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let description = latch_core::error::redact_credentials(&self.description).into_owned();
        let mut body = json!({"error": self.error, "error_description": description});
        if let Some(c) = self.latch_code {
            body["latch_code"] = json!(c);
        }
        if let Value::Object(m) = self.extra {
            for (k, v) in m {
                body[k] = v;
            }
        }
        let mut r = (self.status, axum::Json(body)).into_response();
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(n) = self.dpop_nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
            r.headers_mut().insert("dpop-nonce", n);
        }
        r
    }
}

/// The successful answer of RFC 8693 §2.2.1.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ExchangeResponse {
    /// The credential (shown once).
    access_token: String,
    /// `urn:ietf:params:oauth:token-type:access_token`.
    issued_token_type: &'static str,
    /// `Bearer`, or `DPoP` when bound to the proof's key.
    token_type: &'static str,
    /// Seconds until it expires.
    expires_in: i64,
    /// The granted actions, space-separated.
    scope: String,
    /// The granted `latch_access` detail (RFC 9396).
    authorization_details: Vec<LatchAccessDetail>,
    /// The task opened for it.
    task_id: String,
    /// Its lease.
    lease_id: String,
}

/// An OAuth error answer of `POST /oauth/token` (RFC 6749 §5.2), for the OpenAPI document.
/// Step-up (`authorization_pending`) adds `auth_req_id`, `interval`, `expires_in`, `approvers`,
/// `request_digest` and, when the broker serves the approval console, `latch_console_url` (the
/// request's page there, where the agent sends its human); a denial (`access_denied`) adds `policy_ids`, `reasons`, `request_id`
/// and `task_id`.
#[derive(utoipa::ToSchema)]
#[expect(dead_code, reason = "only the OpenAPI document reads these fields")]
pub struct OAuthErrorBody {
    /// `invalid_request`, `invalid_grant`, `unsupported_grant_type`,
    /// `invalid_authorization_details`, `access_denied`, `authorization_pending`,
    /// `expired_token`, `invalid_dpop_proof`, `use_dpop_nonce`, `temporarily_unavailable`.
    error: String,
    /// Lowercase, secret-free description.
    error_description: String,
    /// The stable Latch error code, when one applies.
    latch_code: Option<ErrorCode>,
    /// `authorization_pending` only, and only when the broker serves the approval console
    /// (`[console] enabled`): the request's page there.
    latch_console_url: Option<String>,
}

fn form_value<'a>(f: &'a HashMap<String, String>, k: &str) -> Option<&'a str> {
    f.get(k).map(String::as_str).filter(|v| !v.is_empty())
}

/// The form of `POST /oauth/token` (`application/x-www-form-urlencoded`), for the OpenAPI
/// document; the handler reads the same fields.
#[derive(utoipa::ToSchema)]
#[expect(dead_code, reason = "only the OpenAPI document reads these fields")]
pub struct TokenExchangeForm {
    /// `urn:ietf:params:oauth:grant-type:token-exchange`.
    #[schema(schema_with = grant_type_schema)]
    grant_type: String,
    /// The workload identity token (or, for on-behalf-of, the human's): a compact JWS
    /// (RFC 7515 §7.1).
    #[schema(
        min_length = 5,
        pattern = "^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+$"
    )]
    subject_token: String,
    /// `urn:ietf:params:oauth:token-type:jwt` or `…:id_token`.
    #[schema(schema_with = subject_token_type_schema)]
    subject_token_type: String,
    /// Optional: the acting party's token (a human's, or the workload's for on-behalf-of).
    actor_token: Option<String>,
    /// Type of `actor_token` (required with it).
    #[schema(schema_with = actor_token_type_schema)]
    actor_token_type: Option<String>,
    /// JSON array with one `{"type": "latch_access", "resource", "actions", "repository",
    /// "branch", "environment", "purpose", "ttl_secs"}` (RFC 9396).
    authorization_details: Option<String>,
    /// To collect the token of an approved step-up: the `auth_req_id` of the
    /// `authorization_pending` answer (instead of `authorization_details`).
    auth_req_id: Option<String>,
}

fn enum_of(values: &[&str], description: &str) -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(values.iter().copied()))
        .description(Some(description))
        .build()
}

fn grant_type_schema() -> utoipa::openapi::schema::Object {
    enum_of(
        &[GRANT_TOKEN_EXCHANGE],
        "The token-exchange grant (RFC 8693 §2.1).",
    )
}

fn subject_token_type_schema() -> utoipa::openapi::schema::Object {
    enum_of(
        &[TOKEN_TYPE_JWT, TOKEN_TYPE_ID_TOKEN],
        "Type of `subject_token` (RFC 8693 §3).",
    )
}

fn actor_token_type_schema() -> utoipa::openapi::schema::Object {
    enum_of(
        &[TOKEN_TYPE_JWT, TOKEN_TYPE_ID_TOKEN],
        "Type of `actor_token` (required with it).",
    )
}

/// `POST /oauth/token` (RFC 8693 token exchange).
///
/// Form parameters: `grant_type` (token exchange), `subject_token` + `subject_token_type`
/// (`jwt` or `id_token`), optional `actor_token` + `actor_token_type`, `authorization_details`
/// (a JSON array with exactly one `latch_access` object), or, to collect a credential after a
/// step-up was approved, `auth_req_id` from the earlier `authorization_pending` answer. A
/// `DPoP` header binds the issued token to the proof's key (RFC 9449 §5).
#[utoipa::path(post, path = "/oauth/token",
    request_body(content = TokenExchangeForm, content_type = "application/x-www-form-urlencoded"),
    params(("DPoP" = Option<String>, Header, description = "DPoP proof (RFC 9449): binds the issued token to its key")),
    responses((status = 200, body = ExchangeResponse, description = "RFC 8693 §2.2.1 answer"),
              (status = 400, body = OAuthErrorBody, description = "RFC 6749 §5.2 error: `invalid_request` (also a body that is not `application/x-www-form-urlencoded`, or a parameter given twice), `invalid_grant`, `unsupported_grant_type`, `invalid_authorization_details`, `access_denied` (policy ids and reasons; `latch_code` `frozen` when an operator froze the scope), `authorization_pending` (step-up; poll with `auth_req_id`), `expired_token`, `invalid_dpop_proof`, `use_dpop_nonce` (with a `DPoP-Nonce` header)"),
              (status = 408, body = OAuthErrorBody, description = "`temporarily_unavailable` with `latch_code` `request_timeout`: the body or the answer took too long"),
              (status = 413, body = OAuthErrorBody, description = "`invalid_request` with `latch_code` `body_too_large`"),
              (status = 429, body = OAuthErrorBody, description = "`temporarily_unavailable` with `latch_code` `rate_limited`: too many failed authentications from this source; see `Retry-After`"),
              (status = 503, body = OAuthErrorBody, description = "`temporarily_unavailable`: the store or the credential provider failed")))]
pub async fn token(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let form = match read_form(&headers, body) {
        Ok(f) => f,
        Err(e) => return (*e).into_response(),
    };
    // The authorization code and refresh token grants of MCP clients (`oauth_as`).
    if let Some(resp) = crate::http::routes::oauth_as::other_grant(&s, &m, &form).await {
        return resp;
    }
    let ctx = CallCtx::new(Some(m.request_id.clone()), m.source_ip.clone());
    let r = exchange(&s, &ctx, &headers, &form).await;
    let flushed = s.broker.flush(&ctx).await;
    // Nonces (stateless) only where a client needs one: a `use_dpop_nonce` challenge, and
    // successful answers (the nonce for the next proof).
    let nonce = s.dpop.requires_nonce().then(|| s.dpop.issue_nonce());
    let mut resp = match (r, flushed) {
        (Ok(ok), Ok(())) => {
            let mut r = (StatusCode::OK, axum::Json(ok)).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        (Ok(_), Err(e)) => OAuthError::from(e).into_response(),
        (Err(mut e), _) => {
            if e.error == "use_dpop_nonce" {
                e.dpop_nonce = nonce;
            }
            return e.into_response();
        }
    };
    if let Some(n) = nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
        resp.headers_mut().insert("dpop-nonce", n);
    }
    resp
}

/// The form of a token request (RFC 6749 §3.2: `application/x-www-form-urlencoded`, no
/// parameter more than once), or the OAuth error saying what is wrong with it: `400
/// invalid_request` (`latch_code` `unsupported_media_type` or `invalid_request`), `413` for a
/// body over the limit (`body_too_large`).
fn read_form(
    headers: &HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<HashMap<String, String>, Box<OAuthError>> {
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim())
        .is_some_and(|m| m.eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !form_type {
        return Err(Box::new(OAuthError::from(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "the request body must be `application/x-www-form-urlencoded` (rfc 6749 §3.2)",
        ))));
    }
    let body = body.map_err(|e| {
        Box::new(if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            OAuthError::from(ApiError::new(
                ErrorCode::BodyTooLarge,
                "request body is too large",
            ))
        } else {
            OAuthError::new("invalid_request", "the request body could not be read")
        })
    })?;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).map_err(|e| {
        Box::new(OAuthError::new(
            "invalid_request",
            format!(
                "invalid form body: {}",
                latch_core::error::without_input_values(&e.to_string())
            ),
        ))
    })?;
    let mut form = HashMap::with_capacity(pairs.len());
    for (k, v) in pairs {
        if form.contains_key(&k) {
            return Err(Box::new(OAuthError::new(
                "invalid_request",
                format!(
                    "parameter {} is given more than once (rfc 6749 §3.2)",
                    latch_core::error::quote(&k)
                ),
            )));
        }
        form.insert(k, v);
    }
    Ok(form)
}

/// The RFC 8693 exchange behind `POST /oauth/token`: the form checks, the parties, the DPoP
/// proof, then the broker's [`latch_core::Broker::exchange_token`], rendered.
async fn exchange(
    s: &AppState,
    ctx: &CallCtx,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<ExchangeResponse, OAuthError> {
    let (subject_token, actor_token) = check_form(form).map_err(|e| *e)?;
    let parties = s
        .broker
        .exchange_parties(ctx, subject_token, actor_token)
        .await?;
    // DPoP only once the caller authenticated (so anonymous callers cannot fill the replay
    // cache), but before any state change (so a nonce challenge costs nothing).
    let jkt = dpop_jkt(s, headers).await?;
    let request = ExchangeRequest {
        jkt,
        auth_req_id: form_value(form, "auth_req_id").map(str::to_owned),
        authorization_details: form_value(form, "authorization_details").map(str::to_owned),
    };
    let outcome = s.broker.exchange_token(ctx, &parties, request).await?;
    render(s, outcome).map_err(|e| *e)
}

/// The grant type and token types of the form (RFC 8693 §2.1); returns the subject token and
/// the actor token, if any.
fn check_form(form: &HashMap<String, String>) -> Result<(&str, Option<&str>), Box<OAuthError>> {
    match form_value(form, "grant_type") {
        Some(GRANT_TOKEN_EXCHANGE) => {}
        Some(_) => {
            return Err(Box::new(OAuthError::new(
                "unsupported_grant_type",
                "only the token-exchange grant (rfc 8693) is supported",
            )));
        }
        None => {
            return Err(Box::new(OAuthError::new(
                "invalid_request",
                "`grant_type` is missing",
            )));
        }
    }
    let token_type_ok = |t: Option<&str>| matches!(t, Some(TOKEN_TYPE_JWT | TOKEN_TYPE_ID_TOKEN));
    let subject_token = form_value(form, "subject_token").ok_or_else(|| {
        Box::new(OAuthError::new(
            "invalid_request",
            "`subject_token` is missing",
        ))
    })?;
    if !token_type_ok(form_value(form, "subject_token_type")) {
        return Err(Box::new(OAuthError::new(
            "invalid_request",
            "`subject_token_type` must be urn:ietf:params:oauth:token-type:jwt or :id_token",
        )));
    }
    let actor_token = form_value(form, "actor_token");
    if actor_token.is_some() && !token_type_ok(form_value(form, "actor_token_type")) {
        return Err(Box::new(OAuthError::new(
            "invalid_request",
            "`actor_token_type` must be urn:ietf:params:oauth:token-type:jwt or :id_token",
        )));
    }
    Ok((subject_token, actor_token))
}

/// The key thumbprint of the request's `DPoP` proof for `POST /oauth/token` (RFC 9449 §4.3),
/// `None` without a proof.
async fn dpop_jkt(s: &AppState, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    crate::http::dpop::one_proof_header(headers)?;
    match headers.get("dpop").map(|v| v.to_str()) {
        None => Ok(None),
        Some(Err(_)) => Err(ApiError::new(
            ErrorCode::DpopProofInvalid,
            "dpop header is not ascii",
        )),
        Some(Ok(proof)) => {
            let htu = format!("{}/oauth/token", s.base_url);
            let check = ProofCheck {
                htm: "POST",
                htu: &htu,
                access_token: None,
                expected_jkt: None,
                relayed: false,
            };
            Ok(Some(s.dpop.verify(proof, check).await?))
        }
    }
}

/// The RFC 8693 §2.2.1 answer of a grant, or the RFC 6749 §5.2 error of a step-up
/// (`authorization_pending`) or a denial (`access_denied`, with the denial's Latch code).
fn render(s: &AppState, outcome: ExchangeOutcome) -> Result<ExchangeResponse, Box<OAuthError>> {
    let now = s.broker.clock().now_unix_secs();
    match outcome {
        ExchangeOutcome::Granted { grant: g, detail } => {
            let bound = g.lease.binding.jkt.is_some();
            crate::metrics::access_decision("allow", &g.lease.resource_id);
            Ok(ExchangeResponse {
                access_token: g.credential.secret.expose_secret().to_owned(),
                issued_token_type: TOKEN_TYPE_ACCESS_TOKEN,
                token_type: if bound { "DPoP" } else { "Bearer" },
                expires_in: g.lease.expires_at_unix_secs - now,
                scope: g.lease.actions.join(" "),
                authorization_details: vec![detail],
                task_id: g.lease.task_id.clone(),
                lease_id: g.lease.id.clone(),
            })
        }
        ExchangeOutcome::Pending(r) => {
            crate::metrics::access_decision("step_up", &r.resource_id);
            let (groups, names) = match &r.decision {
                Decision::StepUp { groups, .. } => (
                    json!(groups),
                    groups
                        .iter()
                        .map(|g| format!("{} of `{}`", g.quorum, g.group))
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
                _ => (json!([]), String::new()),
            };
            let mut extra = json!({
                "auth_req_id": auth_req_id(&r),
                "interval": 5,
                "expires_in": r.expires_at_unix_secs - now,
                "approvers": groups,
                "request_digest": r.digest,
            });
            // Only a console this broker serves is linked (otherwise the link would be a 404).
            if let Some(url) = s.broker.request_console_url(&r.id) {
                extra["latch_console_url"] = json!(url);
            }
            Err(Box::new(OAuthError {
                status: StatusCode::BAD_REQUEST,
                error: "authorization_pending",
                description: format!(
                    "approval needed (step-up) from {names}; repeat this request with `auth_req_id` until it is granted"
                ),
                latch_code: None,
                extra,
                dpop_nonce: None,
            }))
        }
        ExchangeOutcome::Denied(r) => {
            crate::metrics::access_decision("deny", &r.resource_id);
            let (ids, reasons) = match &r.decision {
                Decision::Deny {
                    policy_ids,
                    reasons,
                    ..
                } => (policy_ids.clone(), reasons.clone()),
                d => (d.policy_ids().to_vec(), vec![]),
            };
            Err(Box::new(OAuthError {
                status: StatusCode::BAD_REQUEST,
                error: "access_denied",
                description: format!("policy denied the request: {}", reasons.join("; ")),
                latch_code: Some(crate::http::routes::access::denial_code(&r.decision).as_str()),
                extra: json!({"policy_ids": ids, "reasons": reasons, "request_id": r.id, "task_id": r.task_id}),
                dpop_nonce: None,
            }))
        }
    }
}

/// `GET /.well-known/oauth-authorization-server` (RFC 8414 §3).
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server",
    responses((status = 200, description = "RFC 8414 authorization server metadata")))]
///
/// With the development issuer enabled, two Latch extensions say where to verify its tokens:
/// `latch_dev_issuers` (its `iss` values) and `latch_dev_jwks_uri` (its JWK Set).
pub async fn authorization_server_metadata(State(s): State<AppState>) -> axum::Json<Value> {
    let b = &s.base_url;
    let mut m = json!({
        "issuer": b,
        "token_endpoint": format!("{b}/oauth/token"),
        "jwks_uri": format!("{b}/.well-known/jwks.json"),
        "introspection_endpoint": format!("{b}/v1/oauth/introspect"),
        "revocation_endpoint": format!("{b}/v1/oauth/revoke"),
        "grant_types_supported": [GRANT_TOKEN_EXCHANGE],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": ["none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic"],
        "authorization_details_types_supported": [AUTHZ_DETAILS_TYPE],
        "dpop_signing_alg_values_supported": DPOP_ALGORITHMS,
        "subject_token_types_supported": [TOKEN_TYPE_JWT, TOKEN_TYPE_ID_TOKEN],
        "actor_token_types_supported": [TOKEN_TYPE_JWT, TOKEN_TYPE_ID_TOKEN],
        "issued_token_types_supported": [TOKEN_TYPE_ACCESS_TOKEN],
    });
    if let (Value::Object(m), Value::Object(extra)) =
        (&mut m, crate::http::routes::oauth_as::metadata_members(&s))
    {
        if s.console.is_some() {
            m.insert(
                "grant_types_supported".into(),
                json!([GRANT_TOKEN_EXCHANGE, "authorization_code", "refresh_token"]),
            );
            // `/v1/oauth/revoke` stays the lease revocation of resource servers.
            m.insert(
                "latch_lease_revocation_endpoint".into(),
                json!(format!("{b}/v1/oauth/revoke")),
            );
        }
        m.extend(extra);
    }
    if s.dev.is_some() {
        m["latch_dev_issuers"] = json!([
            crate::dev::DEV_WORKLOAD_ISSUER,
            crate::dev::DEV_HUMAN_ISSUER
        ]);
        m["latch_dev_jwks_uri"] = json!(format!("{b}/v1/dev/jwks.json"));
    }
    axum::Json(m)
}

/// `GET /.well-known/oauth-protected-resource[/mcp]` (RFC 9728 §3): metadata of the MCP
/// endpoint as a protected resource. Its bearer tokens are workload identity tokens from the
/// configured workload issuers, with the broker's configured audience.
#[utoipa::path(get, path = "/.well-known/oauth-protected-resource/mcp",
    responses((status = 200, description = "RFC 9728 protected resource metadata of `/mcp`")))]
pub async fn protected_resource_metadata(State(s): State<AppState>) -> axum::Json<Value> {
    let b = &s.base_url;
    axum::Json(json!({
        "resource": format!("{b}/mcp"),
        // With the console on, Latch is the authorization server MCP clients sign in at;
        // otherwise bearer tokens are the workload issuers' own.
        "authorization_servers": if s.console.is_some() {
            vec![b.clone()]
        } else {
            (*s.workload_issuers).clone()
        },
        "bearer_methods_supported": ["header"],
        "resource_name": "Latch MCP server",
        "resource_documentation": format!("{b}/v1/openapi.json"),
    }))
}
