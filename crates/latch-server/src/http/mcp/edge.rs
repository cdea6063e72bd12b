//! The `/mcp` edge: streamable HTTP transport, `Origin`/`Host` checks (DNS-rebinding
//! protection), MCP authorization (a workload bearer token, else a 401 pointing at the RFC 9728
//! metadata) and session ownership.

use axum::response::IntoResponse;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use latch_core::broker::CallCtx;
use latch_core::{ApiError, ErrorCode};

use crate::http::body_guard::BodyGuard;
use crate::http::error::AppError;
use crate::http::extract::bearer;
use crate::http::middleware::request_meta;
use crate::http::state::AppState;

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

/// `/mcp` (streamable HTTP, behind the bearer-token check, its request bodies bounded by
/// `guard`) and its RFC 9728 metadata.
pub(crate) fn mcp_router(state: AppState, api: Router, guard: BodyGuard) -> Router {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    let dispatch: Arc<dyn crate::http::mcp::Dispatch> =
        Arc::new(crate::http::mcp::RouterDispatch::new(api));
    let allowed = mcp_allowed_hosts(&state.base_url);
    let origin_allowed = Arc::new(allowed.clone());
    let mut config = StreamableHttpServerConfig::default().with_allowed_hosts(allowed);
    config.cancellation_token = state.mcp_cancel.clone();
    config.max_request_body_bytes = guard.max_bytes;
    let service = StreamableHttpService::new(
        move || Ok(crate::http::mcp::LatchMcp::per_request(dispatch.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn(json_transport_errors))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| strict_json_body(req, next, guard.max_bytes),
        ))
        .layer(axum::middleware::from_fn_with_state(
            guard,
            crate::http::body_guard::body_guard,
        ))
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
                        Some(o) if !origin_is_allowed(o.to_str().unwrap_or(""), &allowed) => {
                            AppError(ApiError::new(
                                ErrorCode::OriginNotAllowed,
                                "the `Origin` of this request is not allowed to use /mcp",
                            ))
                            .into_response()
                        }
                        _ => next.run(req).await,
                    }
                }
            },
        ))
        .route(
            "/.well-known/oauth-protected-resource",
            get(crate::http::routes::oauth::protected_resource_metadata),
        )
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            get(crate::http::routes::oauth::protected_resource_metadata),
        )
        .method_not_allowed_fallback(crate::http::error::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::http::middleware::auth_limit,
        ))
        .layer(axum::middleware::from_fn(request_meta))
        .with_state(state)
}

/// JSON-RPC messages posted to `/mcp` are strict JSON ([`latch_core::json`]): a body sent as
/// `application/json` that is not JSON, or a member name repeated in one object (at any depth),
/// is refused with `400 invalid_request`, so a tool
/// call's arguments mean to Latch what they mean to any other reader. Bodies over the limit
/// get `413 body_too_large`. Runs after authentication (no body is read for an unknown caller).
async fn strict_json_body(req: Request, next: Next, max_body_bytes: usize) -> Response {
    if req.method() != axum::http::Method::POST {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return AppError(ApiError::new(
                ErrorCode::BodyTooLarge,
                "request body is too large",
            ))
            .into_response();
        }
    };
    let json_typed = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    match latch_core::json::parse(&bytes) {
        Err(latch_core::json::StrictJsonError::DuplicateMember(name)) => {
            return crate::http::extract::duplicate_member(&name).into_response();
        }
        // rmcp answers a body that is not JSON `415`; it is a malformed request.
        Err(latch_core::json::StrictJsonError::Invalid(m)) if json_typed => {
            return AppError(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("the body is not json: {m}"),
            ))
            .into_response();
        }
        // MCP 2025-06-18 dropped JSON-RPC batches: one message, one object.
        Ok(v) if json_typed && !v.is_object() => {
            return AppError(ApiError::new(
                ErrorCode::InvalidRequest,
                "a json-rpc message must be one json object (batches are not supported)",
            ))
            .into_response();
        }
        _ => {}
    }
    // Anything else that is not JSON-RPC is for the transport to answer.
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

/// The transport's own refusals (rmcp answers them in `text/plain`: no session id, an unknown
/// session, a wrong method, `Accept` or `Content-Type`, a body that is not JSON-RPC) get the
/// API's JSON error shape, like every other error of the broker: `400 invalid_request`,
/// `404 not_found`, `405 method_not_allowed` (its `Allow` kept), `406 not_acceptable`,
/// `415 unsupported_media_type`. JSON-RPC answers (`application/json`, `text/event-stream`)
/// pass as they are.
///
/// # Security
/// The transport's text is kept as the message only after credential-shaped words are
/// redacted ([`latch_core::error::redact_credentials`]) and cut to 200 characters.
async fn json_transport_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_text = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| !v.contains("json") && !v.contains("event-stream"));
    if status.as_u16() < 400 || !is_text {
        return resp;
    }
    let code = match status.as_u16() {
        400 => ErrorCode::InvalidRequest,
        403 => ErrorCode::OriginNotAllowed,
        404 => ErrorCode::NotFound,
        405 => ErrorCode::MethodNotAllowed,
        406 => ErrorCode::NotAcceptable,
        413 => ErrorCode::BodyTooLarge,
        415 => ErrorCode::UnsupportedMediaType,
        _ => ErrorCode::Internal,
    };
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let clean: String = latch_core::error::redact_credentials(text.trim())
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    let message = if clean.is_empty() {
        format!("mcp transport refused the request ({status})")
    } else {
        format!("mcp transport: {}", clean.to_lowercase())
    };
    let mut out = AppError(ApiError::new(code, message)).into_response();
    *out.status_mut() = status;
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().append(name.clone(), value.clone());
        }
    }
    out
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

    /// Forgets a terminated session (its id is then refused, 404, as an unknown one).
    fn unbind(&self, id: &str) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.owners.remove(id).is_some() {
            g.order.retain(|o| o != id);
        }
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
    mut req: Request,
    next: Next,
) -> Response {
    // The peer's address, so failures are counted (and limited) per source; and this
    // resource, so tokens Latch issued for `/mcp` work here and in the tools' REST calls.
    let resource = Some(format!("{}/mcp", s.base_url));
    let source_ip = match req
        .extensions_mut()
        .get_mut::<crate::http::state::ReqMeta>()
    {
        Some(m) => {
            m.resource.clone_from(&resource);
            m.source_ip.clone()
        }
        None => None,
    };
    let ctx = CallCtx::new(None, source_ip).with_resource(resource);
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
                return AppError(ApiError::new(ErrorCode::NotFound, "no such mcp session"))
                    .into_response();
            }
            let deleting = req.method() == axum::http::Method::DELETE;
            let mut resp = next.run(req).await;
            if deleting && resp.status() == StatusCode::ACCEPTED {
                // rmcp answers a session termination `202`; clients (the MCP Python SDK) take
                // only `200`/`204` as done (`405` would mean "not supported"): the session is
                // closed, nothing is to come, so `204`.
                if let Some(id) = &sid {
                    sessions.unbind(id);
                }
                resp = StatusCode::NO_CONTENT.into_response();
            }
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
        // Too many failures from this source: no challenge, `Retry-After` (from `auth_limit`).
        Err(e) if e.code == latch_core::ErrorCode::RateLimited => AppError(e).into_response(),
        Err(e) => {
            let status =
                StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
            // RFC 6750 §3.1: no error code when the request carried no token at all.
            let err = if status == StatusCode::FORBIDDEN {
                ", error=\"insufficient_scope\""
            } else if e.code == latch_core::ErrorCode::TokenMissing {
                ""
            } else {
                ", error=\"invalid_token\""
            };
            let challenge = format!(
                "Bearer resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"{err}",
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
