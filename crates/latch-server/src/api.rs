//! The HTTP API: thin axum handlers that extract the caller, validate the body, call one
//! [`Broker`] method and map the result. `router()` is testable with `tower::ServiceExt::oneshot`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Json, Router};
use latch_core::broker::{AccessOutcome, CallCtx, Grant, Introspection, OpenTask, RequestAccess};
use latch_core::model::{
    AccessRequest, Approval, AuditEvent, AuditFilter, Human, Lease, Task, TaskState, Verdict,
    Workload,
};
use latch_core::{ApiError, Broker, ErrorCode};
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::config::IntrospectionClient;
use crate::dev::{DevIssuer, DevTokenRequest};

/// Shared state of the HTTP layer.
#[derive(Clone)]
pub struct AppState {
    /// The broker.
    pub broker: Arc<Broker>,
    /// Development issuer, when enabled.
    pub dev: Option<Arc<DevIssuer>>,
    /// Published signing keys (RFC 7517 JWK Set).
    pub jwks: Arc<dyn Fn() -> serde_json::Value + Send + Sync>,
    /// Prometheus exposition.
    pub metrics: PrometheusHandle,
    /// RFC 7662 clients.
    pub introspection_clients: Arc<Vec<IntrospectionClient>>,
    /// Human groups allowed to read audit.
    pub admin_groups: Arc<Vec<String>>,
    /// Public base URL (the `iss` of minted tokens; DPoP `htu`s are checked against it).
    pub base_url: String,
    /// DPoP proof verifier (RFC 9449).
    pub dpop: Arc<crate::dpop::DpopVerifier>,
    /// Issuer URLs of the workload issuers (authorization servers of the MCP resource).
    pub workload_issuers: Arc<Vec<String>>,
    /// Cancelled at shutdown: ends open MCP streams so a graceful shutdown does not wait on them.
    pub mcp_cancel: tokio_util::sync::CancellationToken,
    /// Audit checkpoints and exports.
    pub checkpointer: Arc<crate::audit::Checkpointer>,
    /// The SSH certificate provider (CA public keys and KRL), when configured.
    pub ssh: Option<Arc<latch_providers::ssh::SshProvider>>,
    /// The X.509 certificate provider (CA certificates and CRL), when configured.
    pub x509: Option<Arc<latch_providers::x509::X509Provider>>,
    /// Leak scanning (`POST /v1/scan`).
    pub scan: Arc<crate::scan_api::ScanSettings>,
    /// `latch proxy` rules (`GET /v1/proxy/rules/{resource}`).
    pub proxy: Arc<crate::proxy_api::ProxyConfig>,
}

/// Request id and source address, set by middleware for every request.
#[derive(Debug, Clone)]
pub struct ReqMeta {
    /// `x-request-id` (taken from the caller if well-formed, else generated).
    pub request_id: String,
    /// Peer address.
    pub source_ip: Option<String>,
}

impl ReqMeta {
    pub(crate) fn ctx(&self) -> CallCtx {
        CallCtx::new(Some(self.request_id.clone()), self.source_ip.clone())
    }
}

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
                message: self.0.message.clone(),
                request_id: None,
            },
        };
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        resp.extensions_mut().insert(self.0);
        resp
    }
}

pub(crate) type ApiResult<T> = Result<T, AppError>;

/// JSON body extractor whose rejections are [`AppError`]s with code `invalid_request`.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = AppError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(AppError(ApiError::new(
                ErrorCode::BodyTooLarge,
                "request body is too large",
            ))),
            Err(e) => Err(AppError(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("invalid json body: {}", e.body_text()),
            ))),
        }
    }
}

/// The key binding asked for by a `DPoP` header (RFC 9449 §5) on a `POST path` REST call: the
/// minted credential is bound to the proof's key. No header: an unbound credential.
async fn rest_binding(
    s: &AppState,
    headers: &HeaderMap,
    path: &str,
) -> Result<latch_core::model::TokenBinding, ApiError> {
    let Some(v) = headers.get("dpop") else {
        return Ok(Default::default());
    };
    let proof = v
        .to_str()
        .map_err(|_| ApiError::new(ErrorCode::DpopProofInvalid, "dpop header is not ascii"))?;
    let htu = format!("{}{path}", s.base_url);
    let jkt = s
        .dpop
        .verify(
            proof,
            crate::dpop::ProofCheck {
                htm: "POST",
                htu: &htu,
                access_token: None,
                expected_jkt: None,
                relayed: false,
            },
        )
        .await?;
    Ok(latch_core::model::TokenBinding {
        jkt: Some(jkt),
        ..Default::default()
    })
}

/// Query-string extractor whose rejections are [`AppError`]s with code `invalid_request`.
pub struct ApiQuery<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(Self(v)),
            Err(e) => Err(AppError(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("invalid query string: {}", e.body_text()),
            ))),
        }
    }
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Commits audit events still pending (e.g. the caller's authentication) and returns `r`.
/// Audit fails closed: if they cannot be recorded, the call fails.
pub(crate) async fn finish<T>(s: &AppState, ctx: &CallCtx, r: Result<T, ApiError>) -> ApiResult<T> {
    let flushed = s.broker.flush(ctx).await;
    match (r, flushed) {
        (Ok(v), Ok(())) => Ok(v),
        (Ok(_), Err(e)) => Err(AppError(e)),
        (Err(e), _) => {
            if matches!(e.code.http_status(), 401) {
                metrics::counter!("latch_auth_failures_total", "code" => e.code.as_str())
                    .increment(1);
            }
            Err(AppError(e))
        }
    }
}

/// Authenticates the caller as a workload, runs `op`, then commits the call's pending audit
/// events (audit fails closed). The shape of every workload handler.
async fn as_workload<T>(
    s: &AppState,
    m: &ReqMeta,
    headers: &HeaderMap,
    op: impl AsyncFnOnce(&CallCtx, Workload) -> Result<T, ApiError>,
) -> ApiResult<T> {
    let ctx = m.ctx();
    let r = match s.broker.authenticate_workload(&ctx, bearer(headers)).await {
        Ok(w) => op(&ctx, w).await,
        Err(e) => Err(e),
    };
    finish(s, &ctx, r).await
}

/// [`as_workload`] for calls made by a human (approvers, auditors).
async fn as_human<T>(
    s: &AppState,
    m: &ReqMeta,
    headers: &HeaderMap,
    op: impl AsyncFnOnce(&CallCtx, Human) -> Result<T, ApiError>,
) -> ApiResult<T> {
    let ctx = m.ctx();
    let r = match s.broker.authenticate_human(&ctx, bearer(headers)).await {
        Ok(h) => op(&ctx, h).await,
        Err(e) => Err(e),
    };
    finish(s, &ctx, r).await
}

/// Middleware: request id (always the broker's own), source address, structured access log,
/// error bodies get the id.
pub async fn request_meta(mut req: Request, next: Next) -> Response {
    // The id the audit trail records is always the broker's own: a caller could otherwise give
    // its events the id of someone else's call. A well-formed caller id is kept beside it (logs,
    // `x-client-request-id`) for correlation.
    // An in-process call made for an outer request (`/mcp` tool calls) keeps the outer
    // request's id and source (extensions are never set from the network).
    let inherited = req.extensions().get::<ReqMeta>().cloned();
    let request_id = inherited
        .as_ref()
        .map_or_else(|| latch_core::model::new_id("rq"), |m| m.request_id.clone());
    let client_request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
        .map(str::to_owned);
    let source_ip = match inherited {
        Some(m) => m.source_ip,
        None => req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string()),
    };
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    req.extensions_mut().insert(ReqMeta {
        request_id: request_id.clone(),
        source_ip,
    });
    let start = std::time::Instant::now();
    let mut resp = next.run(req).await;
    let status = resp.status().as_u16();
    if let Some(err) = resp.extensions_mut().remove::<ApiError>() {
        let body = ErrorBody {
            error: ErrorDetail {
                code: err.code.as_str().into(),
                message: err.message,
                request_id: Some(request_id.clone()),
            },
        };
        let headers = resp.headers().clone();
        resp = (resp.status(), Json(body)).into_response();
        for (k, v) in headers.iter() {
            if k != header::CONTENT_LENGTH {
                resp.headers_mut().insert(k.clone(), v.clone());
            }
        }
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    if let Some(v) = client_request_id
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
    {
        resp.headers_mut().insert("x-client-request-id", v);
    }
    metrics::counter!("latch_http_requests_total", "status" => status.to_string()).increment(1);
    tracing::info!(target: "latch::http", request_id = %request_id,
        client_request_id = client_request_id.as_deref().unwrap_or(""), %method, %path, status,
        latency_us = start.elapsed().as_micros() as u64, "request");
    resp
}

// ---------------------------------------------------------------- health, metrics, keys

#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "process is up")))]
async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Longest `/readyz` waits for the store before answering 503 (a load balancer's probe must
/// get an answer, not a hang, when the database stalls).
const READY_STORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Readiness: the store answers within [`READY_STORE_TIMEOUT`]. The body also reports how the
/// caches are trusted (`cache.state`: `exclusive` for a single broker; with replicas `fresh`,
/// `stale` or `bypassed`, as the change feed stands); a stale or bypassed cache is still
/// correct (lookups read the database), so it does not make the replica unready.
#[utoipa::path(get, path = "/readyz", responses((status = 200, description = "store reachable; `cache` reports the change feed"), (status = 503, body = ErrorBody)))]
async fn readyz(State(s): State<AppState>) -> ApiResult<Json<serde_json::Value>> {
    match tokio::time::timeout(READY_STORE_TIMEOUT, s.broker.store().ping()).await {
        Ok(r) => r.map_err(|e| AppError(e.into()))?,
        Err(_) => {
            return Err(AppError(ApiError::new(
                ErrorCode::StoreUnavailable,
                format!(
                    "the store did not answer within {}s",
                    READY_STORE_TIMEOUT.as_secs()
                ),
            )));
        }
    }
    Ok(Json(
        serde_json::json!({"status": "ready", "cache": s.broker.cache_state()}),
    ))
}

async fn metrics_endpoint(State(s): State<AppState>) -> impl IntoResponse {
    // 1 while introspection may answer from the in-memory cache, 0 while it reads the store.
    let answering = matches!(
        s.broker.cache_state(),
        latch_core::broker::CacheState::Exclusive | latch_core::broker::CacheState::Fresh { .. }
    );
    metrics::gauge!("latch_cache_answering").set(if answering { 1.0 } else { 0.0 });
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

#[utoipa::path(get, path = "/.well-known/jwks.json", responses((status = 200, description = "RFC 7517 JWK Set of the keys that sign access tokens")))]
async fn jwks(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json((s.jwks)()),
    )
}

// ---------------------------------------------------------------- certificate authorities

fn provider_unavailable(e: latch_core::ports::ProviderError) -> AppError {
    AppError(ApiError::new(
        if e.retryable {
            ErrorCode::StoreUnavailable
        } else {
            ErrorCode::ProviderFailed
        },
        e.message,
    ))
}

fn no_provider(kind: &str) -> AppError {
    AppError(ApiError::new(
        ErrorCode::InvalidRequest,
        format!("no {kind} provider is configured"),
    ))
}

#[utoipa::path(get, path = "/v1/ssh/ca.pub", responses((status = 200, content_type = "text/plain",
    description = "OpenSSH public keys of the user CA for sshd's `TrustedUserCAKeys` (current first, rotated-out keys while their certificates may be valid)")))]
async fn ssh_ca(State(s): State<AppState>) -> Result<Response, AppError> {
    let p = s.ssh.as_ref().ok_or_else(|| no_provider("ssh"))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        p.ca_public_keys(),
    )
        .into_response())
}

#[utoipa::path(get, path = "/v1/ssh/krl", responses((status = 200, content_type = "application/octet-stream",
    description = "OpenSSH KRL (PROTOCOL.krl) of revoked certificates for sshd's `RevokedKeys`")))]
async fn ssh_krl(State(s): State<AppState>) -> Result<Response, AppError> {
    let p = s.ssh.as_ref().ok_or_else(|| no_provider("ssh"))?;
    let krl = p.krl().await.map_err(provider_unavailable)?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        krl,
    )
        .into_response())
}

#[utoipa::path(get, path = "/v1/x509/ca.pem", responses((status = 200, content_type = "application/x-pem-file",
    description = "PEM certificates of the client CA (current first, rotated-out ones while their certificates may be valid)")))]
async fn x509_ca(State(s): State<AppState>) -> Result<Response, AppError> {
    let p = s.x509.as_ref().ok_or_else(|| no_provider("x509"))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-pem-file"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        p.ca_pem(),
    )
        .into_response())
}

#[utoipa::path(get, path = "/v1/x509/crl", responses((status = 200, content_type = "application/x-pem-file",
    description = "PEM CRLs (RFC 5280), one per published CA, of revoked client certificates")))]
async fn x509_crl(State(s): State<AppState>) -> Result<Response, AppError> {
    let p = s.x509.as_ref().ok_or_else(|| no_provider("x509"))?;
    let crl = p.crl_pem().await.map_err(provider_unavailable)?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-pem-file"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        crl,
    )
        .into_response())
}

// ---------------------------------------------------------------- tasks

#[utoipa::path(post, path = "/v1/tasks", request_body = OpenTask, security(("bearer" = [])),
    responses((status = 201, body = Task), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn open_task(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<OpenTask>,
) -> ApiResult<(StatusCode, Json<Task>)> {
    let r = as_workload(&s, &m, &headers, async |ctx: &CallCtx, w| {
        s.broker.open_task(ctx, &w, body).await
    })
    .await;
    let t = r?;
    metrics::counter!("latch_tasks_opened_total").increment(1);
    Ok((StatusCode::CREATED, Json(t)))
}

#[utoipa::path(get, path = "/v1/tasks", security(("bearer" = [])), responses((status = 200, body = [Task])))]
async fn list_tasks(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
) -> ApiResult<Json<Vec<Task>>> {
    let r = as_workload(&s, &m, &headers, async |_ctx: &CallCtx, w| {
        s.broker.list_tasks(&w).await
    })
    .await;
    Ok(Json(r?))
}

#[utoipa::path(get, path = "/v1/tasks/{id}", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = Task), (status = 404, body = ErrorBody)))]
async fn get_task(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Task>> {
    let r = as_workload(&s, &m, &headers, async |_ctx: &CallCtx, w| {
        s.broker.task(&w, &id).await
    })
    .await;
    Ok(Json(r?))
}

async fn end_task(
    s: AppState,
    m: ReqMeta,
    headers: HeaderMap,
    id: String,
    state: TaskState,
) -> ApiResult<Json<Task>> {
    let r = as_workload(&s, &m, &headers, async |ctx: &CallCtx, w| {
        s.broker.end_task(ctx, &w, &id, state).await
    })
    .await;
    Ok(Json(r?))
}

#[utoipa::path(post, path = "/v1/tasks/{id}/complete", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = Task, description = "task completed; every lease revoked"), (status = 409, body = ErrorBody)))]
async fn complete_task(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Task>> {
    end_task(s, m, headers, id, TaskState::Completed).await
}

#[utoipa::path(post, path = "/v1/tasks/{id}/cancel", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = Task, description = "task cancelled; every lease revoked"), (status = 409, body = ErrorBody)))]
async fn cancel_task(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Task>> {
    end_task(s, m, headers, id, TaskState::Cancelled).await
}

// ---------------------------------------------------------------- access requests

/// A credential as delivered (once).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct CredentialBody {
    /// `bearer_token`, `dpop_token` (DPoP-bound, RFC 9449), …
    pub kind: String,
    /// The secret value. Shown only in this response; Latch keeps only its keyed HMAC.
    pub value: String,
    /// Non-secret metadata.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
}

// Debug of anything holding a credential says only that it is there (never the value).
impl std::fmt::Debug for CredentialBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialBody")
            .field("kind", &self.kind)
            .field("value", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for TokenForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenForm")
            .field("token", &"<redacted>")
            .field("token_type_hint", &self.token_type_hint)
            .finish()
    }
}

impl std::fmt::Debug for DevTokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DevTokenResponse { token: <redacted> }")
    }
}

/// Outcome of an access request, a claim, or a renewal.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AccessResponse {
    /// `granted`, `denied`, `pending` (step-up), or `renewed` (renewal).
    pub status: String,
    /// For `denied`: `policy_denied` or `environment_separation`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The request, with its decision (policy ids, reasons or step-up groups) and digest.
    pub request: AccessRequest,
    /// The lease, when granted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// The credential, when granted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialBody>,
    /// HTTP request id.
    pub request_id: String,
}

fn grant_body(g: Grant, request_id: &str) -> AccessResponse {
    AccessResponse {
        status: "granted".into(),
        code: None,
        request: g.request,
        lease: Some(g.lease),
        credential: Some(CredentialBody {
            kind: g.credential.kind.clone(),
            value: g.credential.secret.expose_secret().to_owned(),
            metadata: g.credential.metadata.clone(),
        }),
        request_id: request_id.to_owned(),
    }
}

fn outcome_response(o: AccessOutcome, request_id: &str) -> (StatusCode, Json<AccessResponse>) {
    let plain = |status: &str, code: Option<String>, request: AccessRequest| AccessResponse {
        status: status.into(),
        code,
        request,
        lease: None,
        credential: None,
        request_id: request_id.to_owned(),
    };
    let (st, body, decision) = match o {
        AccessOutcome::Granted(g) => (StatusCode::CREATED, grant_body(*g, request_id), "allow"),
        AccessOutcome::Pending(r) => (StatusCode::ACCEPTED, plain("pending", None, r), "step_up"),
        AccessOutcome::Denied(r) => {
            let sep = r.decision.policy_ids().is_empty()
                && matches!(&r.decision, latch_core::model::Decision::Deny { reasons, .. }
                    if reasons.iter().any(|x| x.starts_with(latch_core::broker::SEPARATION_REASON)));
            let code = if sep {
                ErrorCode::EnvironmentSeparation
            } else {
                ErrorCode::PolicyDenied
            };
            (
                StatusCode::FORBIDDEN,
                plain("denied", Some(code.as_str().into()), r),
                "deny",
            )
        }
    };
    metrics::counter!("latch_access_decisions_total", "decision" => decision).increment(1);
    (st, Json(body))
}

#[utoipa::path(post, path = "/v1/tasks/{id}/requests", request_body = RequestAccess, security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 201, body = AccessResponse, description = "allowed: credential minted (shown once)"),
              (status = 202, body = AccessResponse, description = "step-up: waiting for approvers"),
              (status = 403, body = AccessResponse, description = "denied, with policy ids and reasons"),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn request_access(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RequestAccess>,
) -> ApiResult<(StatusCode, Json<AccessResponse>)> {
    let r = as_workload(&s, &m, &headers, async |ctx: &CallCtx, w| {
        let binding = rest_binding(&s, &headers, &format!("/v1/tasks/{id}/requests")).await?;
        s.broker.request_access(ctx, &w, &id, body, &binding).await
    })
    .await;
    Ok(outcome_response(r?, &m.request_id))
}

#[utoipa::path(get, path = "/v1/tasks/{id}/requests/{rid}", security(("bearer" = [])), params(("id" = String, Path), ("rid" = String, Path)),
    responses((status = 200, body = AccessRequest), (status = 404, body = ErrorBody)))]
async fn get_request(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    Path((id, rid)): Path<(String, String)>,
) -> ApiResult<Json<AccessRequest>> {
    let r = as_workload(&s, &m, &headers, async |_ctx: &CallCtx, w| {
        s.broker.request(&w, &id, &rid).await
    })
    .await;
    Ok(Json(r?))
}

#[utoipa::path(post, path = "/v1/tasks/{id}/requests/{rid}/claim", security(("bearer" = [])), params(("id" = String, Path), ("rid" = String, Path)),
    responses((status = 201, body = AccessResponse, description = "approved and re-evaluated: credential minted (once)"),
              (status = 202, body = AccessResponse, description = "still pending"),
              (status = 403, body = AccessResponse, description = "denied"),
              (status = 409, body = ErrorBody, description = "already claimed"), (status = 410, body = ErrorBody)))]
async fn claim_request(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    Path((id, rid)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<AccessResponse>)> {
    let r = as_workload(&s, &m, &headers, async |ctx: &CallCtx, w| {
        let binding = rest_binding(
            &s,
            &headers,
            &format!("/v1/tasks/{id}/requests/{rid}/claim"),
        )
        .await?;
        s.broker.claim(ctx, &w, &id, &rid, &binding).await
    })
    .await;
    Ok(outcome_response(r?, &m.request_id))
}

// ---------------------------------------------------------------- leases

#[utoipa::path(get, path = "/v1/tasks/{id}/leases", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = [Lease])))]
async fn task_leases(
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
async fn renew_lease(
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
                format!("invalid json body: {e}"),
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
async fn revoke_lease(
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

// ---------------------------------------------------------------- approvals

/// A pending request as an approver sees it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PendingView {
    /// The request (resource, actions, TTL, justification, step-up groups, digest).
    pub request: AccessRequest,
    /// Its task (purpose, repository, branch, environment, on whose behalf).
    pub task: Task,
    /// Votes so far.
    pub approvals: Vec<Approval>,
}

#[utoipa::path(get, path = "/v1/approvals/pending", security(("bearer" = [])),
    responses((status = 200, body = [PendingView], description = "requests the caller may vote on")))]
async fn pending(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
) -> ApiResult<Json<Vec<PendingView>>> {
    let r = as_human(&s, &m, &headers, async |_ctx: &CallCtx, h: Human| {
        let mut out = Vec::new();
        for (request, task) in s.broker.pending_for(&h).await? {
            let approvals = s.broker.approvals(&request.id).await?;
            out.push(PendingView {
                request,
                task,
                approvals,
            });
        }
        Ok(out)
    })
    .await;
    Ok(Json(r?))
}

/// A vote.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoteBody {
    /// The digest of the request being approved, as shown by `GET /v1/approvals/pending`.
    pub digest: String,
    /// Why.
    #[serde(default)]
    pub reason: String,
}

async fn vote(
    s: AppState,
    m: ReqMeta,
    headers: HeaderMap,
    rid: String,
    body: VoteBody,
    verdict: Verdict,
) -> ApiResult<Json<AccessRequest>> {
    let r = as_human(&s, &m, &headers, async |ctx: &CallCtx, h: Human| {
        s.broker
            .vote(ctx, &h, &rid, &body.digest, verdict, &body.reason)
            .await
    })
    .await;
    Ok(Json(r?))
}

#[utoipa::path(post, path = "/v1/approvals/{rid}/approve", request_body = VoteBody, security(("bearer" = [])), params(("rid" = String, Path)),
    responses((status = 200, body = AccessRequest), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn approve(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    Path(rid): Path<String>,
    ApiJson(body): ApiJson<VoteBody>,
) -> ApiResult<Json<AccessRequest>> {
    vote(s, m, headers, rid, body, Verdict::Approve).await
}

#[utoipa::path(post, path = "/v1/approvals/{rid}/deny", request_body = VoteBody, security(("bearer" = [])), params(("rid" = String, Path)),
    responses((status = 200, body = AccessRequest), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn deny(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    Path(rid): Path<String>,
    ApiJson(body): ApiJson<VoteBody>,
) -> ApiResult<Json<AccessRequest>> {
    vote(s, m, headers, rid, body, Verdict::Deny).await
}

// ---------------------------------------------------------------- OAuth introspection / revocation

/// `application/x-www-form-urlencoded` body of RFC 7662 / RFC 7009 calls.
#[derive(Deserialize, ToSchema)]
pub struct TokenForm {
    /// The token.
    pub token: String,
    /// Ignored hint.
    #[serde(default)]
    pub token_type_hint: Option<String>,
    /// Latch extension for resource servers: the `DPoP` proof that came with the token. When
    /// given, the token is active only if the proof verifies against the token's `cnf.jkt`,
    /// `ath`, `htm` and `htu` (both required with a proof), and its `jti` was not used
    /// before. Required for every DPoP-bound token (`cnf.jkt`): without it such a token is
    /// inactive. Relayed proofs need no server nonce.
    #[serde(default)]
    pub dpop_proof: Option<String>,
    /// Method of the request the resource server received (with `dpop_proof`).
    #[serde(default)]
    pub htm: Option<String>,
    /// URL of the request the resource server received (with `dpop_proof`).
    #[serde(default)]
    pub htu: Option<String>,
}

fn client_auth(s: &AppState, headers: &HeaderMap) -> Option<String> {
    use base64::Engine;
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (id, secret) = raw.split_once(':')?;
    let got = hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        secret.as_bytes(),
    ));
    let mut ok = None;
    for c in s.introspection_clients.iter() {
        let same = aws_lc_rs::constant_time::verify_slices_are_equal(
            got.as_bytes(),
            c.secret_sha256.to_ascii_lowercase().as_bytes(),
        )
        .is_ok();
        if c.id == id && same {
            ok = Some(c.id.clone());
        }
    }
    ok
}

fn client_auth_failed() -> Response {
    let mut r = AppError(ApiError::new(
        ErrorCode::ClientAuthFailed,
        "client authentication failed",
    ))
    .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"latch\""),
    );
    r
}

#[utoipa::path(post, path = "/v1/oauth/introspect", request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    security(("basic" = [])), responses((status = 200, body = Introspection), (status = 401, body = ErrorBody)))]
async fn introspect(
    State(s): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    if client_auth(&s, &headers).is_none() {
        return client_auth_failed();
    }
    // A relayed proof is only meaningful with the request it was made for.
    if form.dpop_proof.is_some() && (form.htm.is_none() || form.htu.is_none()) {
        return AppError(ApiError::new(
            ErrorCode::InvalidRequest,
            "`dpop_proof` needs `htm` and `htu` of the request it came with",
        ))
        .into_response();
    }
    let mut i = s.broker.introspect(&form.token).await;
    if i.active {
        let jkt = i
            .cnf
            .as_ref()
            .and_then(|c| c.get("jkt"))
            .and_then(|j| j.as_str())
            .map(str::to_owned);
        let verified = match (&form.dpop_proof, &jkt) {
            (Some(proof), Some(jkt)) => s
                .dpop
                .verify(
                    proof,
                    crate::dpop::ProofCheck {
                        htm: form.htm.as_deref().unwrap_or(""),
                        htu: form.htu.as_deref().unwrap_or(""),
                        access_token: Some(&form.token),
                        expected_jkt: Some(jkt),
                        relayed: true,
                    },
                )
                .await
                .map_err(|e| tracing::info!(code = %e.code, error = %e.message, "introspection: dpop proof refused"))
                .is_ok(),
            // A bound token is only active for a holder that proves its key.
            (None, Some(_)) => false,
            // A proof for an unbound token proves nothing; a resource that requires binding
            // never accepts an unbound token.
            (Some(_), None) | (None, None) => !i.requires_dpop,
        };
        if !verified {
            i = Introspection::default();
        }
    }
    ([(header::CACHE_CONTROL, "no-store")], Json(i)).into_response()
}

#[utoipa::path(post, path = "/v1/oauth/revoke", request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    security(("basic" = []), ("bearer" = [])), responses((status = 200, description = "revoked, or unknown (RFC 7009 §2.2)"), (status = 401, body = ErrorBody)))]
async fn oauth_revoke(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    let ctx = m.ctx();
    let owner: Option<Workload>;
    let actor = if let Some(c) = client_auth(&s, &headers) {
        owner = None;
        format!("client:{c}")
    } else {
        match s.broker.authenticate_workload(&ctx, bearer(&headers)).await {
            Ok(w) => {
                let id = w.id.clone();
                owner = Some(w);
                id
            }
            Err(_) => return client_auth_failed(),
        }
    };
    let r = s
        .broker
        .revoke_by_value(&ctx, &form.token, &actor, owner.as_ref())
        .await;
    match finish(&s, &ctx, r).await {
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => e.into_response(),
    }
}

// ---------------------------------------------------------------- audit

/// Audit query. Every filter is optional; results are in `seq` order.
#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct AuditQuery {
    /// Only this task.
    pub task_id: Option<String>,
    /// Only this lease.
    pub lease_id: Option<String>,
    /// Only this actor (agent principal id, human id, or `latch`).
    pub actor: Option<String>,
    /// Kind prefix, e.g. `credential.`.
    pub kind: Option<String>,
    /// Only events at or after this time.
    pub since_unix_secs: Option<i64>,
    /// Only events before this time.
    pub until_unix_secs: Option<i64>,
    /// Only after this sequence number (paging: pass the last `seq` you got).
    pub after_seq: Option<i64>,
    /// Without `after_seq`: start from the last this-many records of the log (before the other
    /// filters apply), as `tail` does.
    pub last: Option<u32>,
    /// Page size (default 100, at most 1000).
    pub limit: Option<u32>,
}

fn require_admin(s: &AppState, h: &Human) -> Result<(), ApiError> {
    if h.groups.iter().any(|g| s.admin_groups.contains(g)) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::WrongPrincipalKind,
            "reading the audit log needs an admin group",
        ))
    }
}

#[utoipa::path(get, path = "/v1/audit", params(AuditQuery), security(("bearer" = [])),
    responses((status = 200, body = [AuditEvent]), (status = 403, body = ErrorBody)))]
async fn audit(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<Vec<AuditEvent>>> {
    let r = as_human(&s, &m, &headers, async |_ctx: &CallCtx, h: Human| {
        require_admin(&s, &h)?;
        let after_seq = match (q.after_seq, q.last) {
            (Some(a), _) => Some(a),
            (None, Some(n)) => {
                let head = s.broker.store().audit_head().await?.map_or(0, |h| h.0);
                Some((head - i64::from(n)).max(0))
            }
            (None, None) => None,
        };
        let f = AuditFilter {
            task_id: q.task_id,
            lease_id: q.lease_id,
            kind_prefix: q.kind,
            actor: q.actor,
            since_unix_secs: q.since_unix_secs,
            until_unix_secs: q.until_unix_secs,
            credential_hmac: None,
            after_seq,
            limit: Some(q.limit.unwrap_or(100).min(1000)),
        };
        Ok(s.broker.store().audit_events(&f).await?)
    })
    .await;
    Ok(Json(r?))
}

/// Export query.
#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct ExportQuery {
    /// Only records after this sequence number.
    pub after_seq: Option<i64>,
    /// Only the signed checkpoints (to keep elsewhere).
    #[serde(default)]
    pub checkpoints_only: bool,
}

#[utoipa::path(get, path = "/v1/audit/export", params(ExportQuery), security(("bearer" = [])),
    responses((status = 200, content_type = "application/x-ndjson",
        description = "JSON lines: records with their chain hashes, each checkpoint after the record it seals (format `latch-audit/1`)"),
        (status = 403, body = ErrorBody)))]
async fn audit_export(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> ApiResult<Response> {
    let r = as_human(&s, &m, &headers, async |ctx: &CallCtx, h: Human| {
        require_admin(&s, &h)?;
        let ev = AuditEvent::new(
            s.broker.clock().now_unix_secs(),
            "audit.exported",
            &h.id,
            "ok",
        )
        .detail(serde_json::json!({
            "after_seq": q.after_seq, "checkpoints_only": q.checkpoints_only,
        }));
        s.broker.record_event(ctx, ev).await?;
        Ok(s.checkpointer
            .export(q.after_seq.unwrap_or(0).max(0), q.checkpoints_only)
            .await?)
    })
    .await;
    let body = r?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        )],
        body,
    )
        .into_response())
}

#[utoipa::path(post, path = "/v1/audit/checkpoints", security(("bearer" = [])),
    responses((status = 200, body = latch_core::audit::AuditCheckpoint, description = "the checkpoint at the chain head (signed now unless it already was)"),
        (status = 204, description = "the log is empty"), (status = 403, body = ErrorBody)))]
async fn audit_checkpoint(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let r = as_human(&s, &m, &headers, async |_ctx: &CallCtx, h: Human| {
        require_admin(&s, &h)?;
        Ok(s.checkpointer.checkpoint().await?)
    })
    .await;
    Ok(match r? {
        Some(cp) => Json(cp).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

/// A credential value to look for (`latch audit find`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FindRequest {
    /// The leaked value; surrounding whitespace is ignored.
    ///
    /// # Security
    /// Only its keyed HMAC is computed and compared; the value is neither stored nor logged.
    #[schema(value_type = String)]
    pub value: secrecy::SecretString,
}

impl std::fmt::Debug for FindRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FindRequest { value: [redacted] }")
    }
}

#[utoipa::path(post, path = "/v1/audit/find", request_body = FindRequest, security(("bearer" = [])),
    responses((status = 200, body = [AuditEvent], description = "events that name the credential by its keyed HMAC"),
        (status = 403, body = ErrorBody)))]
async fn audit_find(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<FindRequest>,
) -> ApiResult<Json<Vec<AuditEvent>>> {
    let r = as_human(&s, &m, &headers, async |ctx: &CallCtx, h: Human| {
        require_admin(&s, &h)?;
        let value = body.value.expose_secret().trim();
        if value.is_empty() {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "`value` must not be empty",
            ));
        }
        let hmac = s.broker.credential_hmac(value);
        let f = AuditFilter {
            credential_hmac: Some(hmac),
            limit: Some(1000),
            ..AuditFilter::default()
        };
        let mut found = s.broker.store().audit_events(&f).await?;
        // The lease's later events (renewals, revocation) belong to the story too.
        let leases: std::collections::BTreeSet<String> =
            found.iter().filter_map(|e| e.lease_id.clone()).collect();
        for l in leases {
            let more = s
                .broker
                .store()
                .audit_events(&AuditFilter {
                    lease_id: Some(l),
                    limit: Some(1000),
                    ..AuditFilter::default()
                })
                .await?;
            found.extend(more);
        }
        found.sort_by_key(|e| e.seq);
        found.dedup_by_key(|e| e.seq);
        let ev = AuditEvent::new(
            s.broker.clock().now_unix_secs(),
            "audit.searched",
            &h.id,
            "ok",
        )
        .detail(serde_json::json!({ "matches": found.len() }));
        s.broker.record_event(ctx, ev).await?;
        Ok(found)
    })
    .await;
    Ok(Json(r?))
}

/// Timeline query.
#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct EventsQuery {
    /// Only after this sequence number.
    pub after_seq: Option<i64>,
    /// Page size (default 1000, at most 1000).
    pub limit: Option<u32>,
}

#[utoipa::path(post, path = "/v1/tasks/{id}/events", request_body = latch_core::audit::ToolUseReport,
    security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 201, body = AuditEvent, description = "recorded as a `tool.used` event"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn report_tool_use(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<latch_core::audit::ToolUseReport>,
) -> ApiResult<(StatusCode, Json<AuditEvent>)> {
    let r = as_workload(&s, &m, &headers, async |ctx: &CallCtx, w| {
        s.broker.report_tool_use(ctx, &w, &id, body).await
    })
    .await;
    Ok((StatusCode::CREATED, Json(r?)))
}

#[utoipa::path(get, path = "/v1/tasks/{id}/events", params(("id" = String, Path), EventsQuery),
    security(("bearer" = [])),
    responses((status = 200, body = [AuditEvent], description = "the task's timeline, in order"),
        (status = 404, body = ErrorBody)))]
async fn task_events(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> ApiResult<Json<Vec<AuditEvent>>> {
    let r = as_workload(&s, &m, &headers, async |_ctx: &CallCtx, w| {
        s.broker
            .task_events(&w, &id, q.after_seq, q.limit.unwrap_or(1000).min(1000))
            .await
    })
    .await;
    Ok(Json(r?))
}

// ---------------------------------------------------------------- development issuer

/// A development token.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct DevTokenResponse {
    /// The signed token.
    pub token: String,
}

#[utoipa::path(post, path = "/v1/dev/tokens", request_body = DevTokenRequest,
    responses((status = 200, body = DevTokenResponse), (status = 404, description = "development issuer disabled")))]
async fn dev_token(
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

// ---------------------------------------------------------------- router and OpenAPI

/// The OpenAPI 3.1 document served at `/v1/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(title = "Latch", description = "Just-in-time access broker for AI agents and workloads"),
    paths(healthz, readyz, jwks, ssh_ca, ssh_krl, x509_ca, x509_crl, open_task, list_tasks, get_task, complete_task, cancel_task, request_access,
          get_request, claim_request, task_leases, renew_lease, revoke_lease, pending, approve, deny,
          introspect, oauth_revoke, audit, audit_export, audit_checkpoint, audit_find,
          report_tool_use, task_events, dev_token, crate::oauth::token,
          crate::oauth::authorization_server_metadata, crate::oauth::protected_resource_metadata,
          crate::scan_api::scan, crate::proxy_api::proxy_rules),
    components(schemas(ErrorBody, ErrorDetail, AccessResponse, CredentialBody, PendingView, VoteBody, RenewBody,
                       TokenForm, DevTokenResponse, DevTokenRequest, ErrorCode, FindRequest,
                       latch_core::audit::ToolUseReport, latch_core::audit::AuditCheckpoint,
                       crate::oauth::TokenExchangeForm,
                       crate::scan_api::ScanRequest, crate::scan_api::ScanResponse, crate::scan_api::ScanFinding, crate::proxy_api::ProxyRules,
                       latch_core::broker::LeakResponse)),
    modifiers(&Security)
)]
pub struct ApiDoc;

struct Security;
impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let c = openapi.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        c.add_security_scheme(
            "basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
    }
}

async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

async fn not_found() -> AppError {
    AppError(ApiError::new(ErrorCode::InvalidRequest, "no such endpoint"))
}

/// The whole HTTP API.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let mut r = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_endpoint))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/v1/ssh/ca.pub", get(ssh_ca))
        .route("/v1/ssh/krl", get(ssh_krl))
        .route("/v1/x509/ca.pem", get(x509_ca))
        .route("/v1/x509/crl", get(x509_crl))
        .route("/v1/openapi.json", get(openapi_json))
        .route("/v1/tasks", post(open_task).get(list_tasks))
        .route("/v1/tasks/{id}", get(get_task))
        .route("/v1/tasks/{id}/complete", post(complete_task))
        .route("/v1/tasks/{id}/cancel", post(cancel_task))
        .route("/v1/tasks/{id}/requests", post(request_access))
        .route("/v1/tasks/{id}/requests/{rid}", get(get_request))
        .route("/v1/tasks/{id}/requests/{rid}/claim", post(claim_request))
        .route("/v1/tasks/{id}/leases", get(task_leases))
        .route("/v1/leases/{id}/renew", post(renew_lease))
        .route("/v1/leases/{id}/revoke", post(revoke_lease))
        .route("/v1/approvals/pending", get(pending))
        .route("/v1/approvals/{rid}/approve", post(approve))
        .route("/v1/approvals/{rid}/deny", post(deny))
        .route("/v1/oauth/introspect", post(introspect))
        .route("/v1/oauth/revoke", post(oauth_revoke))
        .route("/v1/audit", get(audit))
        .route("/v1/audit/export", get(audit_export))
        .route("/v1/audit/checkpoints", post(audit_checkpoint))
        .route("/v1/audit/find", post(audit_find))
        .route(
            "/v1/tasks/{id}/events",
            post(report_tool_use).get(task_events),
        )
        .route("/oauth/token", post(crate::oauth::token))
        .route(
            "/.well-known/oauth-authorization-server",
            get(crate::oauth::authorization_server_metadata),
        )
        .merge(
            Router::new()
                .route("/v1/scan", post(crate::scan_api::scan))
                .layer(axum::extract::DefaultBodyLimit::max(
                    state
                        .scan
                        .config
                        .max_bytes
                        .saturating_mul(2)
                        .saturating_add(4096),
                ))
                .layer(Extension(state.scan.clone())),
        )
        .merge(
            Router::new()
                .route(
                    "/v1/proxy/rules/{resource}",
                    get(crate::proxy_api::proxy_rules),
                )
                .layer(Extension(state.proxy.clone())),
        );
    if state.dev.is_some() {
        r = r.route("/v1/dev/tokens", post(dev_token));
    }
    let api: Router = r
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn(request_meta))
        .with_state(state.clone());
    mcp_router(state, api.clone(), max_body_bytes).merge(api)
}

/// Whether a browser `Origin` (`scheme://host[:port]`) names one of the allowed hosts (MCP
/// streamable HTTP: servers must validate `Origin`). `null` and anything unparsable are not.
fn origin_is_allowed(origin: &str, allowed: &[String]) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    if !matches!(scheme, "http" | "https") || authority.is_empty() || authority.contains('/') {
        return false;
    }
    let host = match authority.strip_prefix('[') {
        Some(r) => r.split_once(']').map_or("", |(h, _)| h),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    allowed
        .iter()
        .any(|a| a.eq_ignore_ascii_case(authority) || a.eq_ignore_ascii_case(host))
}

/// Host names the MCP endpoint accepts in `Host` (DNS-rebinding protection): loopback and
/// the public URL's authority.
fn mcp_allowed_hosts(base_url: &str) -> Vec<String> {
    let mut v = vec!["localhost".to_owned(), "127.0.0.1".into(), "::1".into()];
    let authority = base_url
        .split_once("://")
        .map_or(base_url, |(_, r)| r)
        .split('/')
        .next()
        .unwrap_or_default();
    if !authority.is_empty() {
        v.push(authority.to_owned());
        if let Some((host, _)) = authority.rsplit_once(':') {
            v.push(host.to_owned());
        }
    }
    v
}

/// `/mcp` (streamable HTTP, behind the bearer-token check) and its RFC 9728 metadata.
fn mcp_router(state: AppState, api: Router, max_body_bytes: usize) -> Router {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    let dispatch: Arc<dyn crate::mcp::Dispatch> = Arc::new(crate::mcp::RouterDispatch::new(api));
    let allowed = mcp_allowed_hosts(&state.base_url);
    let origin_allowed = Arc::new(allowed.clone());
    let mut config = StreamableHttpServerConfig::default().with_allowed_hosts(allowed);
    config.cancellation_token = state.mcp_cancel.clone();
    config.max_request_body_bytes = max_body_bytes;
    let service = StreamableHttpService::new(
        move || Ok(crate::mcp::LatchMcp::per_request(dispatch.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            mcp_auth,
        ))
        .layer(Extension(McpSessions::default()))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                let allowed = origin_allowed.clone();
                async move {
                    match req.headers().get(header::ORIGIN) {
                        Some(o) if !origin_is_allowed(o.to_str().unwrap_or(""), &allowed) => (
                            StatusCode::FORBIDDEN,
                            "the `Origin` of this request is not allowed to use /mcp",
                        )
                            .into_response(),
                        _ => next.run(req).await,
                    }
                }
            },
        ))
        .route(
            "/.well-known/oauth-protected-resource",
            get(crate::oauth::protected_resource_metadata),
        )
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            get(crate::oauth::protected_resource_metadata),
        )
        .layer(axum::middleware::from_fn(request_meta))
        .with_state(state)
}

/// Which workload (id and run) created each MCP session. Bounded: beyond the cap the oldest
/// bindings are dropped, and an unbound session id is refused (404) rather than trusted.
#[derive(Clone, Default)]
struct McpSessions(Arc<std::sync::Mutex<McpSessionMap>>);

#[derive(Default)]
struct McpSessionMap {
    owners: std::collections::HashMap<String, String>,
    order: std::collections::VecDeque<String>,
}

const MAX_MCP_SESSIONS: usize = 10_000;

impl McpSessions {
    fn owner(&self, id: &str) -> Option<String> {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.owners.get(id).cloned()
    }

    fn bind(&self, id: &str, who: String) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.owners.insert(id.to_owned(), who).is_none() {
            g.order.push_back(id.to_owned());
        }
        while g.order.len() > MAX_MCP_SESSIONS {
            if let Some(old) = g.order.pop_front() {
                g.owners.remove(&old);
            }
        }
    }
}

/// The MCP authorization check (MCP spec, Authorization; RFC 6750 §3; RFC 9728 §5.1): a valid
/// workload token (issuer, signature, expiry and audience checked by the broker) or a 401 whose
/// challenge names the protected resource metadata.
async fn mcp_auth(
    State(s): State<AppState>,
    Extension(sessions): Extension<McpSessions>,
    req: Request,
    next: Next,
) -> Response {
    let ctx = CallCtx::new(None, None);
    match s
        .broker
        .authenticate_workload(&ctx, bearer(req.headers()))
        .await
    {
        // The tool calls authenticate (and audit) again through the REST API. An MCP session
        // belongs to the workload (down to its run) that created it: to anyone else it does
        // not exist.
        Ok(w) => {
            let who = format!("{}\n{}", w.id, w.run_binding.as_deref().unwrap_or(""));
            let sid = req
                .headers()
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            if let Some(id) = &sid
                && sessions.owner(id).as_deref() != Some(who.as_str())
            {
                return (StatusCode::NOT_FOUND, "no such mcp session").into_response();
            }
            let resp = next.run(req).await;
            if sid.is_none()
                && let Some(new) = resp
                    .headers()
                    .get("mcp-session-id")
                    .and_then(|v| v.to_str().ok())
            {
                sessions.bind(new, who);
            }
            resp
        }
        Err(e) => {
            let status =
                StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
            let err = if status == StatusCode::FORBIDDEN {
                "insufficient_scope"
            } else {
                "invalid_token"
            };
            let challenge = format!(
                "Bearer resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\", error=\"{err}\"",
                s.base_url
            );
            let mut r = AppError(e).into_response();
            *r.status_mut() = status;
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            r
        }
    }
}
