//! [`router`]: every route, its body limits, timeout and middleware; `/mcp` merged in from
//! [`crate::http::mcp::edge`].

use std::time::Duration;

use axum::routing::{get, post};
use axum::{Extension, Router};

use crate::http::body_guard::{BodyGuard, body_guard};
use crate::http::middleware::request_meta;
use crate::http::routes::{
    access, admin, approvals, audit, ca, dev, gateway, health, introspection, leases, login, oauth,
    proxy, resources, scan, tasks,
};
use crate::http::state::AppState;

/// The OAuth endpoints: token (exchange, code, refresh), MCP client registration and
/// revocation, grants, and the authorization server metadata (RFC 8414).
fn oauth_routes() -> Router<AppState> {
    use crate::http::routes::oauth_as;
    Router::new()
        .route("/oauth/token", post(oauth::token))
        .route("/oauth/register", post(oauth_as::register))
        .route("/oauth/revoke", post(oauth_as::revoke))
        .route(
            "/v1/oauth/grants/{id}",
            axum::routing::delete(oauth_as::revoke_grant),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(oauth::authorization_server_metadata),
        )
}

/// OpenID Shared Signals: the transmitter metadata, the (read-only) stream configuration and
/// status, and the push endpoint of transmitters (answering `404` for what is not configured).
fn ssf_routes() -> Router<AppState> {
    use crate::http::routes::ssf;
    Router::new()
        .route("/.well-known/ssf-configuration", get(ssf::configuration))
        .route(
            crate::ssf::CONFIGURATION_PATH,
            get(ssf::stream)
                .post(ssf::create_stream)
                .put(ssf::replace_stream)
                .patch(ssf::update_stream)
                .delete(ssf::delete_stream),
        )
        .route(crate::ssf::STATUS_PATH, get(ssf::status))
}

/// The push endpoint of transmitters (`POST /v1/ssf/events`), its body bounded by `g`, and what
/// the HTTP layer refuses there answered in the RFC 8935 form.
fn ssf_push_route(g: BodyGuard) -> Router<AppState> {
    use crate::http::routes::ssf;
    Router::new()
        .route(crate::ssf::EVENTS_PATH, post(ssf::receive))
        .layer(axum::middleware::from_fn_with_state(g, body_guard))
        .layer(axum::middleware::map_response(ssf::push_error_form))
}

/// The whole HTTP API: request bodies up to `max_body_bytes` (`/v1/scan`: its own bound; a
/// larger declared length gets `413` before the body is read), received within `body_timeout`
/// of the request head on every route, `/mcp` included (else `408`), and every route but `/mcp`
/// answered within `request_timeout` (else `408`).
pub fn router(
    state: AppState,
    max_body_bytes: usize,
    request_timeout: Duration,
    body_timeout: Duration,
) -> Router {
    let guard = |max_bytes: usize| {
        axum::middleware::from_fn_with_state(
            BodyGuard {
                max_bytes,
                timeout: body_timeout,
            },
            body_guard,
        )
    };
    let api_guard = BodyGuard {
        max_bytes: max_body_bytes,
        timeout: body_timeout,
    };
    let scan_max = state
        .scan
        .config
        .max_bytes
        .saturating_mul(2)
        .saturating_add(4096);
    let mut r = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics_endpoint))
        .route("/.well-known/jwks.json", get(health::jwks))
        .route("/v1/ssh/ca.pub", get(ca::ssh_ca))
        .route("/v1/ssh/krl", get(ca::ssh_krl))
        .route("/v1/x509/ca.pem", get(ca::x509_ca))
        .route("/v1/x509/crl", get(ca::x509_crl))
        .route("/v1/spiffe/bundle", get(ca::spiffe_bundle))
        .route("/v1/openapi.json", get(crate::http::openapi::openapi_json))
        .route("/v1/whoami", get(login::whoami))
        .route("/v1/resources", get(resources::list_resources))
        .route("/v1/login/config", get(login::login_config))
        .route("/v1/tasks", post(tasks::open_task).get(tasks::list_tasks))
        .route("/v1/tasks/{id}", get(tasks::get_task))
        .route("/v1/tasks/{id}/history", get(tasks::task_history))
        .route("/v1/tasks/{id}/complete", post(tasks::complete_task))
        .route("/v1/tasks/{id}/cancel", post(tasks::cancel_task))
        .route("/v1/tasks/{id}/requests", post(access::request_access))
        .route("/v1/tasks/{id}/requests/{rid}", get(access::get_request))
        .route(
            "/v1/tasks/{id}/requests/{rid}/claim",
            post(access::claim_request),
        )
        .route("/v1/tasks/{id}/leases", get(leases::task_leases))
        .route("/v1/tasks/{id}/tool-calls", post(gateway::call_tool))
        .route("/v1/gateway/tools", get(gateway::tools))
        .route("/v1/leases/{id}/renew", post(leases::renew_lease))
        .route("/v1/leases/{id}/revoke", post(leases::revoke_lease))
        .route("/v1/approvals/pending", get(approvals::pending))
        .route("/v1/approvals/{rid}/approve", post(approvals::approve))
        .route("/v1/approvals/{rid}/deny", post(approvals::deny))
        .route("/v1/admin/tasks", get(admin::tasks))
        .route("/v1/admin/tasks/{id}/cancel", post(admin::cancel_task))
        .route("/v1/admin/leases", get(admin::leases))
        .route("/v1/admin/leases/{id}/revoke", post(admin::revoke_lease))
        .route("/v1/admin/freezes", get(admin::freezes).post(admin::engage))
        .route("/v1/admin/freezes/{id}/lift", post(admin::lift))
        .route(
            "/v1/admin/reports/controls",
            get(crate::http::routes::reports::controls),
        )
        .route("/v1/oauth/introspect", post(introspection::introspect))
        .route("/v1/oauth/revoke", post(introspection::oauth_revoke))
        .route("/v1/audit", get(audit::audit))
        .route("/v1/audit/export", get(audit::audit_export))
        .route("/v1/audit/checkpoints", post(audit::audit_checkpoint))
        .route("/v1/audit/find", post(audit::audit_find))
        .route(
            "/v1/tasks/{id}/events",
            post(tasks::report_tool_use).get(tasks::task_events),
        )
        .merge(oauth_routes())
        .merge(ssf_routes())
        .merge(
            Router::new()
                .route("/v1/proxy/rules/{resource}", get(proxy::proxy_rules))
                .layer(Extension(state.proxy.clone())),
        );
    if state.dev.is_some() {
        r = r
            .route("/v1/dev/tokens", post(dev::dev_token))
            .route("/v1/dev/jwks.json", get(dev::dev_jwks));
    }
    if let Some(c) = &state.console {
        r = r.merge(crate::http::console::routes(c.dev_login));
    }
    // The body guard of the routes so far, then `/v1/scan` with its own bound.
    let api: Router = r
        .route_layer(guard(max_body_bytes))
        .merge(
            Router::new()
                .route("/v1/scan", post(scan::scan))
                .layer(guard(scan_max))
                .layer(axum::extract::DefaultBodyLimit::max(scan_max))
                .layer(Extension(state.scan.clone())),
        )
        .merge(ssf_push_route(api_guard))
        .fallback(crate::http::error::not_found)
        .method_not_allowed_fallback(crate::http::error::method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            request_timeout,
            crate::http::middleware::request_timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::http::middleware::dpop_nonce,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::http::middleware::auth_limit,
        ))
        .layer(axum::middleware::from_fn(request_meta))
        .layer(axum::middleware::from_fn(
            crate::http::console::console_headers,
        ))
        .with_state(state.clone());
    crate::http::mcp::edge::mcp_router(state, api.clone(), api_guard).merge(api)
}
