//! CSRF protection of the console's forms: every form carries the session's token (a keyed
//! HMAC of the session id, `Broker::console_csrf_token`), and every `POST` is refused with
//! `403 csrf_token_invalid` unless it carries the same token (compared in constant time).
//! `SameSite=Strict` on the session cookie is the second line: a cross-site form post arrives
//! without the session at all.

use latch_core::{ApiError, ErrorCode};

use crate::http::console::session::SignedIn;
use crate::http::state::AppState;

/// The token forms of this session carry.
pub fn token(s: &AppState, signed: &SignedIn) -> String {
    s.broker.console_csrf_token(&signed.id)
}

/// Checks a form's token.
///
/// # Errors
/// `csrf_token_invalid` (403) when it is missing or not this session's.
pub fn check(s: &AppState, signed: &SignedIn, presented: Option<&str>) -> Result<(), ApiError> {
    match presented {
        Some(t) if s.broker.console_csrf_ok(&signed.id, t) => Ok(()),
        _ => Err(ApiError::new(
            ErrorCode::CsrfTokenInvalid,
            "this form did not come from your console session (reload the page and try again)",
        )),
    }
}
