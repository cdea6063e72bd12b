//! The console's cookies and the signed-in human of a request.
//!
//! The session cookie (`latch_console`) holds a random 256-bit id; the store holds only its
//! keyed HMAC. It is `HttpOnly`, `SameSite=Strict`, `Path=/console`, and `Secure` unless the
//! public URL is loopback `http`. The login cookie (`latch_console_login`) holds the sealed
//! login state of a sign-in in progress; it is `SameSite=Lax` so that it comes back with the
//! provider's top-level redirect to the callback, and lives `login_ttl`.

use axum::http::HeaderMap;
use axum::http::header;
use axum::response::Response;
use latch_core::ApiError;
use latch_core::model::{ConsoleSession, Human};

use crate::console::{ConsoleState, LOGIN_COOKIE, SESSION_COOKIE};
use crate::http::state::AppState;

/// Longest session id accepted from a cookie (ours are 43 characters).
const MAX_ID: usize = 64;

/// The value of cookie `name` in the request's `Cookie` headers (the first one).
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// A `Set-Cookie` value: `name=value` under `/console`, `HttpOnly`, with `same_site`,
/// `Max-Age=max_age` (0 deletes it), and `Secure` when the console's cookies are.
pub fn set_cookie(
    c: &ConsoleState,
    name: &str,
    value: &str,
    same_site: &str,
    max_age: i64,
) -> String {
    let secure = if c.secure_cookies { "; Secure" } else { "" };
    format!(
        "{name}={value}; Path=/console; HttpOnly; SameSite={same_site}; Max-Age={max_age}{secure}"
    )
}

/// The session cookie for `id`.
pub fn session_cookie(c: &ConsoleState, id: &str) -> String {
    set_cookie(c, SESSION_COOKIE, id, "Strict", c.session_ttl_secs)
}

/// Deletes the session cookie.
pub fn clear_session_cookie(c: &ConsoleState) -> String {
    set_cookie(c, SESSION_COOKIE, "", "Strict", 0)
}

/// The login cookie holding `sealed`.
pub fn login_cookie(c: &ConsoleState, sealed: &str) -> String {
    set_cookie(c, LOGIN_COOKIE, sealed, "Lax", c.login_ttl_secs)
}

/// Deletes the login cookie.
pub fn clear_login_cookie(c: &ConsoleState) -> String {
    set_cookie(c, LOGIN_COOKIE, "", "Lax", 0)
}

/// A signed-in request: the session and the id its cookie holds (for its CSRF token).
pub struct SignedIn {
    /// The stored session.
    pub session: ConsoleSession,
    /// The session id from the cookie.
    pub id: String,
}

/// The live session of the request, if its cookie names one.
///
/// # Errors
/// `store_unavailable`.
pub async fn current(s: &AppState, headers: &HeaderMap) -> Result<Option<SignedIn>, ApiError> {
    let Some(id) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    if id.is_empty() || id.len() > MAX_ID {
        return Ok(None);
    }
    Ok(s.broker.console_session(id).await?.map(|session| SignedIn {
        session,
        id: id.to_owned(),
    }))
}

/// The human `signed` may act as now — vote, or act as an operator — or, when its sign-in is
/// older than `[console] authority_max_age`, the page asking to sign in again (a link to the
/// sign-in, which reads the groups afresh and comes back to `back`). Nothing is done in the
/// second case.
///
/// The answer is a page with a link, not a redirect: a redirect from a form's POST to the
/// identity provider would be blocked by the console's own `form-action 'self'`, and the
/// click would silently do nothing.
///
/// # Errors
/// The `403 reauthentication_required` page to answer instead.
pub fn authority(s: &AppState, signed: &SignedIn, back: &str) -> Result<Human, Box<Response>> {
    let max_age = s.console.as_deref().map_or(0, |c| c.authority_max_age_secs);
    s.broker
        .console_authority(&signed.session, max_age)
        .ok_or_else(|| {
            let q = serde_urlencoded::to_string([("next", back)]).unwrap_or_default();
            let mut resp = super::html(
                axum::http::StatusCode::FORBIDDEN,
                super::views::sign_in_again(&format!("/console/login?{q}"), max_age),
            );
            resp.headers_mut().insert(
                "x-latch-error",
                axum::http::HeaderValue::from_static("reauthentication_required"),
            );
            Box::new(resp)
        })
}
