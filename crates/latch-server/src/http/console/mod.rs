//! The approval console: server-rendered HTML under `/console/` for signed-in humans.
//!
//! * [`session`]: the session cookie and the signed-in human of a request;
//! * [`csrf`]: the per-session token every form carries;
//! * [`login`]: sign-in (OpenID Connect code flow + PKCE, or the development sign-in),
//!   callback, sign-out;
//! * [`pages`]: the pending list, a request's page (approve / deny), a task's timeline, the
//!   stylesheet;
//! * [`ops`]: the operators' pages (open tasks and live leases, revoke, cancel, the kill
//!   switch), for humans in `[admin] groups`;
//! * [`views`], [`ops_views`]: the templates (`maud`, which escapes every value it renders).
//!
//! Routes: `GET /console/`, `GET|POST /console/requests/{request_id}`,
//! `GET /console/tasks/{task_id}`, `GET /console/operators`,
//! `POST /console/operators/leases/{id}/revoke`, `POST /console/operators/tasks/{id}/cancel`,
//! `GET|POST /console/kill-switch`, `POST /console/kill-switch/{id}/lift`,
//! `GET|POST /console/authorize` (the OAuth authorization endpoint for MCP clients),
//! `GET /console/login`, `GET /console/callback`, `GET|POST /console/login/dev` (only with
//! `[dev_issuer] enabled`), `GET|POST /console/logout`, `GET /console/static/console.css`;
//! anything else under `/console/` is a `404` page. They are HTML, not JSON API, and are left
//! out of the OpenAPI document.
//!
//! Every answer under `/console` — errors the router or its layers give included (`404`,
//! `405`, `413`, `408`, `429`) — carries a strict Content-Security-Policy (no script at all,
//! styles only from the stylesheet, forms only to the console itself, no framing), `nosniff`,
//! `no-referrer` and `Cache-Control: no-store` ([`console_headers`], a layer of the whole
//! router).

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use latch_core::{ApiError, ErrorCode};

use crate::http::state::AppState;

pub mod authorize;
pub mod csrf;
pub mod login;
pub mod ops;
pub mod ops_views;
pub mod pages;
pub mod session;
pub mod views;

/// The console's Content-Security-Policy.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// The console's routes (added to the API router when the console is enabled).
pub fn routes(dev_login: bool) -> Router<AppState> {
    let mut r = Router::new()
        .route("/console", get(pages::to_index))
        .route("/console/", get(pages::index))
        .route(
            "/console/requests/{request_id}",
            get(pages::request_page).post(pages::vote),
        )
        .route("/console/tasks/{task_id}", get(pages::task_page))
        .route("/console/operators", get(ops::operators))
        .route(
            "/console/operators/leases/{id}/revoke",
            post(ops::revoke_lease),
        )
        .route(
            "/console/operators/tasks/{id}/cancel",
            post(ops::cancel_task),
        )
        .route(
            "/console/kill-switch",
            get(ops::kill_switch).post(ops::engage),
        )
        .route("/console/kill-switch/{id}/lift", post(ops::lift))
        .route("/console/static/console.css", get(pages::stylesheet))
        .route(
            "/console/authorize",
            get(authorize::authorize).post(authorize::decide),
        )
        .route("/console/login", get(login::login))
        .route("/console/callback", get(login::callback))
        .route(
            "/console/logout",
            get(login::signed_out_page).post(login::logout),
        )
        .route("/console/{*rest}", axum::routing::any(not_found));
    if dev_login {
        r = r.route(
            "/console/login/dev",
            get(login::dev_form).post(login::dev_login),
        );
    }
    r
}

/// Any other path under `/console/`: a `404` page.
async fn not_found() -> Response {
    error_page(&ApiError::new(
        ErrorCode::NotFound,
        "there is no such page in the console",
    ))
}

/// Middleware of the whole router: adds the console's security headers to every answer to a
/// path under `/console` (pages, and the errors of the router and its layers alike).
pub async fn console_headers(req: Request, next: Next) -> Response {
    let console = {
        let p = req.uri().path();
        p == "/console" || p.starts_with("/console/")
    };
    let mut resp = next.run(req).await;
    if console {
        security_headers(&mut resp);
    }
    resp
}

/// The console's security headers.
fn security_headers(resp: &mut Response) {
    let h = resp.headers_mut();
    // A page may have set a narrower variant (the consent page adds its client's origin to
    // `form-action`); every other answer gets the console's own.
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
}

/// An HTML page with `status`.
pub(crate) fn html(status: StatusCode, page: maud::Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page.into_string(),
    )
        .into_response()
}

/// A `303 See Other` to `location` (a path on this broker, or the provider's URL).
pub(crate) fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => (StatusCode::SEE_OTHER, [(header::LOCATION, v)]).into_response(),
        Err(_) => error_page(&ApiError::new(ErrorCode::Internal, "bad redirect")),
    }
}

/// The page of a refusal: its stable code (also in the `x-latch-error` header), a sentence
/// saying what happened, and the status of the same error in the JSON API.
pub(crate) fn error_page(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    if status.is_server_error() {
        tracing::warn!(code = %e.code, message = %e.message, "console error");
    }
    let mut resp = html(status, views::error(e));
    if let Ok(v) = HeaderValue::from_str(e.code.as_str()) {
        resp.headers_mut().insert("x-latch-error", v);
    }
    resp
}
