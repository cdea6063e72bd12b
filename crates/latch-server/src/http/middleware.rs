//! Middleware every request passes: [`request_meta`] (request id, source address, access log,
//! request id in error bodies), [`auth_limit`] (sources with too many failed authentications
//! get `429` before any work), [`request_timeout`] (`408` past `[http] request_timeout`),
//! [`dpop_nonce`] (the `DPoP-Nonce` header of REST answers).

use axum::response::IntoResponse;
use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use latch_core::broker::CallCtx;
use latch_core::{ApiError, ErrorCode};

use crate::http::error::{AppError, ErrorBody, ErrorDetail};
use crate::http::state::{AppState, ReqMeta};

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
                // Logged and echoed: never a credential sent in its place.
                && !latch_core::error::looks_like_credential(v)
        })
        .map(str::to_owned);
    let resource = inherited.as_ref().and_then(|m| m.resource.clone());
    let source_ip = match &inherited {
        Some(m) => m.source_ip.clone(),
        None => req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string()),
    };
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    // The route template (`/v1/tasks/{id}`), never the raw path, labels the latency metric.
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_owned());
    // The listener inserts the connection's verified X.509-SVID (mutual TLS).
    let peer_svid = match &inherited {
        Some(m) => m.peer_svid.clone(),
        None => req
            .extensions()
            .get::<latch_core::broker::PeerSvid>()
            .cloned(),
    };
    req.extensions_mut().insert(ReqMeta {
        request_id: request_id.clone(),
        source_ip,
        peer_svid,
        resource,
    });
    let start = std::time::Instant::now();
    let span = request_span(route.as_deref(), &method, &path, &request_id);
    let mut resp = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    let status = resp.status().as_u16();
    let code = (resp.extensions().get::<ApiError>().map(|e| e.code.as_str())).or_else(|| {
        resp.extensions()
            .get::<crate::metrics::Outcome>()
            .map(|o| o.0)
    });
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "error");
    }
    if let Some(err) = resp.extensions_mut().remove::<ApiError>() {
        let message = latch_core::error::redact_credentials(&err.message).into_owned();
        let headers = resp.headers().clone();
        resp = if method == axum::http::Method::POST
            && crate::http::error::is_oauth_client_endpoint(&path)
        {
            let body = crate::http::error::OAuthClientError {
                error: crate::http::error::oauth_client_error(err.code),
                error_description: message,
                latch_code: err.code.as_str(),
                request_id: request_id.clone(),
            };
            (resp.status(), Json(body)).into_response()
        } else {
            let body = ErrorBody {
                error: ErrorDetail {
                    code: err.code.as_str().into(),
                    message,
                    request_id: Some(request_id.clone()),
                },
            };
            (resp.status(), Json(body)).into_response()
        };
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
    crate::metrics::http_request(
        route.as_deref(),
        method.as_str(),
        status,
        code,
        start.elapsed(),
    );
    tracing::info!(target: "latch::http", request_id = %request_id,
        client_request_id = client_request_id.as_deref().unwrap_or(""), %method, path = %crate::logging::path_for_log(&path), status,
        latency_us = start.elapsed().as_micros() as u64, "request");
    resp
}

/// The span of one HTTP request (exported as an OpenTelemetry server span when `[telemetry]` is
/// on): `METHOD route` as its name, the route template (never the raw path), the broker's
/// request id and, on routes under `/v1/tasks/{id}`, the task id.
///
/// # Security
/// No header, query or body value is recorded: the path's task id only when it is shaped like
/// one (`task_` and hex), never a segment a caller put a token in.
fn request_span(
    route: Option<&str>,
    method: &axum::http::Method,
    path: &str,
    request_id: &str,
) -> tracing::Span {
    let route = route.unwrap_or("unmatched");
    let span = tracing::info_span!(target: "latch::http", "http.request",
        otel.name = %format_args!("{method} {route}"), otel.kind = "server",
        otel.status_code = tracing::field::Empty, http.request.method = %method,
        http.route = route, http.response.status_code = tracing::field::Empty,
        latch.request_id = request_id, latch.task_id = tracing::field::Empty);
    if let Some(t) = task_id_in_path(route, path) {
        span.record("latch.task_id", t);
    }
    span
}

/// The task id in `path` where `route` has `/tasks/{id}`, if it is shaped like a task id.
fn task_id_in_path<'p>(route: &str, path: &'p str) -> Option<&'p str> {
    let mut template = route.split('/');
    let mut prev = "";
    for seg in path.split('/') {
        let t = template.next()?;
        if prev == "tasks" && t == "{id}" {
            let hex = seg.strip_prefix("task_")?;
            let ok = hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit());
            return ok.then_some(seg);
        }
        prev = t;
    }
    None
}

/// Middleware: a request carrying credentials (an `Authorization` header) from a source that
/// had too many failed authentications in its window is answered `429 rate_limited` at once,
/// before its body is read or its token verified. Every `429` gets a `Retry-After` (seconds
/// until the source's window ends; RFC 9110 §10.2.3), also those the broker gives for
/// credentials sent in a body (`POST /oauth/token`). Runs inside [`request_meta`].
pub async fn auth_limit(
    axum::extract::State(s): axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let source = req
        .extensions()
        .get::<ReqMeta>()
        .and_then(|m| m.source_ip.clone());
    if let Some(auth) = req.headers().get(header::AUTHORIZATION) {
        let ctx = CallCtx::new(None, source.clone());
        // `Bearer <token>` or `DPoP <token>` (RFC 6750 §2.1, RFC 9449 §7.1).
        let token = auth
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .map(|(_, t)| t.trim());
        if let Err(e) = s.broker.check_auth_limit_for(&ctx, token) {
            metrics::counter!("latch_auth_rate_limited_total").increment(1);
            let mut r = AppError(e).into_response();
            retry_after(&s, source.as_deref(), &mut r);
            return r;
        }
    }
    let mut resp = next.run(req).await;
    if resp.status() == StatusCode::TOO_MANY_REQUESTS {
        retry_after(&s, source.as_deref(), &mut resp);
    }
    resp
}

fn retry_after(s: &AppState, source: Option<&str>, resp: &mut Response) {
    if resp.headers().contains_key(header::RETRY_AFTER) {
        return;
    }
    let secs = s.broker.auth_retry_after(source).unwrap_or(1);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
}

/// Middleware: a request not answered within `limit` (its body read included) gets
/// `408 request_timeout`. Only the wait for the response head is bounded: a streamed body
/// (MCP SSE) is not cut; `/mcp` is not behind it at all.
pub async fn request_timeout(
    axum::extract::State(limit): axum::extract::State<std::time::Duration>,
    req: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            metrics::counter!("latch_http_request_timeouts_total").increment(1);
            AppError(ApiError::new(
                ErrorCode::RequestTimeout,
                "the request was not answered in time",
            ))
            .into_response()
        }
    }
}

/// Middleware: with `[oauth] dpop_require_nonce`, REST answers carry a fresh server nonce in a
/// `DPoP-Nonce` header (RFC 9449 §8) where a client needs one: on a `400 dpop_nonce_required`
/// (the challenge, so the client can retry at once) and on every successful answer to a
/// request that carried a `DPoP` proof (the nonce for its next proof). `/oauth/token` sets its
/// own.
pub async fn dpop_nonce(
    axum::extract::State(s): axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let sent_proof = req.headers().contains_key("dpop");
    let token_endpoint = req.uri().path() == "/oauth/token";
    let mut resp = next.run(req).await;
    if !s.dpop.requires_nonce() || token_endpoint || resp.headers().contains_key("dpop-nonce") {
        return resp;
    }
    let challenged = resp
        .extensions()
        .get::<ApiError>()
        .is_some_and(|e| e.code == ErrorCode::DpopNonceRequired);
    // The challenge comes after authentication (the proof is checked in the workload's call),
    // and a refused request gets no nonce: unauthenticated callers cannot farm them.
    if (challenged || (sent_proof && resp.status().is_success()))
        && let Ok(v) = HeaderValue::from_str(&s.dpop.issue_nonce())
    {
        resp.headers_mut().insert("dpop-nonce", v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::task_id_in_path;

    #[test]
    fn the_task_id_is_taken_from_task_routes_only_when_shaped_like_one() {
        let id = "task_0190a1b2c3d4e5f60718293a4b5c6d7e";
        assert_eq!(
            task_id_in_path(
                "/v1/tasks/{id}/requests",
                &format!("/v1/tasks/{id}/requests")
            ),
            Some(id)
        );
        assert_eq!(
            task_id_in_path("/v1/tasks/{id}", "/v1/tasks/eyJhbGciOi.x.y"),
            None
        );
        assert_eq!(
            task_id_in_path("/v1/leases/{id}/renew", "/v1/leases/lease_1/renew"),
            None
        );
        assert_eq!(task_id_in_path("/v1/tasks", "/v1/tasks"), None);
    }
}
