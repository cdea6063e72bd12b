//! Sign-in and sign-out.
//!
//! * `GET /console/login`: with an OpenID Provider, a fresh login state (state, nonce, PKCE
//!   verifier) sealed into the login cookie and a `303` to the provider's authorization
//!   endpoint; without one, the development sign-in form.
//! * `GET /console/callback`: the provider's answer. The login cookie must be there, unexpired,
//!   unused, and hold this `state`; `iss` (RFC 9207), when sent, must be the issuer. The code is
//!   exchanged with the PKCE verifier and the ID token verified (nonce included); then a
//!   server-side session is opened and its cookie set. The answer is a small page that moves on
//!   to `/console/` itself: a `SameSite=Strict` cookie set at the end of a cross-site redirect
//!   chain would not be sent on a redirect that continues it.
//! * `GET|POST /console/login/dev`: only with `[dev_issuer] enabled` and no OpenID Provider
//!   configured, sign in by pasting a development human token (`latch dev token --kind human
//!   …`); the form is bound to the browser by the sealed login cookie.
//! * `POST /console/logout`: deletes the session (CSRF-checked).
//!
//! Every sign-in, failed sign-in and sign-out is audited (no token or code in the trail).

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use latch_core::model::Human;
use latch_core::{ApiError, ErrorCode};
use serde::Deserialize;

use crate::console::{ConsoleState, LOGIN_COOKIE, LoginState, random_token, safe_return_path};
use crate::http::console::session::{self, SignedIn};
use crate::http::console::{csrf, error_page, html, see_other, views};
use crate::http::state::{AppState, ReqMeta};

fn console(s: &AppState) -> Result<&ConsoleState, ApiError> {
    s.console
        .as_deref()
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "the console is not enabled"))
}

fn failed(m: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::SignInFailed, m)
}

fn now(s: &AppState) -> i64 {
    s.broker.clock().now_unix_secs()
}

/// Adds `Set-Cookie` values to a response.
fn with_cookies(mut resp: Response, cookies: &[String]) -> Response {
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

/// What a sign-in is started with: `next`, the console page to come back to.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct LoginQuery {
    next: Option<String>,
}

/// A fresh login state and its sealed cookie.
fn new_login(
    c: &ConsoleState,
    now: i64,
    start: (String, String, String),
    return_to: Option<&str>,
) -> Result<(LoginState, String), ApiError> {
    let (state, nonce, pkce_verifier) = start;
    let st = LoginState {
        id: random_token(32).map_err(failed)?,
        state,
        nonce,
        pkce_verifier,
        expires_at: now + c.login_ttl_secs,
        return_to: return_to.and_then(safe_return_path),
    };
    let sealed = c.sealer.seal(&st).map_err(failed)?;
    Ok((st, session::login_cookie(c, &sealed)))
}

/// The login state of this browser's sign-in in progress: sealed by this broker, unexpired,
/// and never used before (it is used up here).
async fn take_login(
    s: &AppState,
    c: &ConsoleState,
    headers: &HeaderMap,
) -> Result<LoginState, ApiError> {
    let st = session::cookie(headers, LOGIN_COOKIE)
        .and_then(|v| c.sealer.open(v))
        .ok_or_else(|| failed("no sign-in is in progress in this browser (start again)"))?;
    let now = now(s);
    if now >= st.expires_at {
        return Err(failed("the sign-in took too long (start again)"));
    }
    match c.first_use(&st.id, st.expires_at, now).await {
        Ok(true) => Ok(st),
        Ok(false) => Err(failed("this sign-in was already used (start again)")),
        Err(e) => {
            tracing::warn!(error = %e, "console login state could not be recorded");
            Err(ApiError::new(
                ErrorCode::StoreUnavailable,
                "the sign-in could not be recorded; try again",
            ))
        }
    }
}

/// `GET /console/login[?next=/console/…]`.
pub(crate) async fn login(State(s): State<AppState>, Query(q): Query<LoginQuery>) -> Response {
    match login_inner(&s, q.next.as_deref()).await {
        Ok(r) => r,
        Err(e) => error_page(&e),
    }
}

async fn login_inner(s: &AppState, next: Option<&str>) -> Result<Response, ApiError> {
    let c = console(s)?;
    let Some(rp) = &c.oidc else {
        return dev_form_inner(s, next);
    };
    let start = rp.start().await?;
    let (_, cookie) = new_login(
        c,
        now(s),
        (start.state, start.nonce, start.pkce_verifier),
        next,
    )?;
    Ok(with_cookies(see_other(&start.url), &[cookie]))
}

/// The provider's answer (RFC 6749 §4.1.2, §4.1.2.1; RFC 9207 `iss`).
#[derive(Debug, Deserialize)]
pub(crate) struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    iss: Option<String>,
    error: Option<String>,
}

/// `GET /console/callback`.
pub(crate) async fn callback(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let ctx = m.ctx();
    let Ok(c) = console(&s) else {
        return error_page(&ApiError::new(
            ErrorCode::NotFound,
            "the console is not enabled",
        ));
    };
    let clear = session::clear_login_cookie(c);
    // Sign-in failures count like every failed authentication: a flooding source is refused
    // before anything is exchanged or written.
    if let Err(e) = s.broker.check_auth_limit(&ctx) {
        return with_cookies(error_page(&e), &[clear]);
    }
    match finish_sign_in(&s, c, &headers, &q).await {
        Ok((human, name, back)) => {
            match open_session(&s, c, &ctx, &human, name.as_deref(), "oidc").await {
                Ok(cookie) => with_cookies(
                    html(StatusCode::OK, views::signed_in(back.as_deref())),
                    &[cookie, clear],
                ),
                Err(e) => with_cookies(error_page(&e), &[clear]),
            }
        }
        Err((who, e)) => {
            if let Err(audit) = s
                .broker
                .console_sign_in_failed(&ctx, who.as_deref(), e.code, &e.message)
                .await
            {
                return with_cookies(error_page(&audit), &[clear]);
            }
            with_cookies(error_page(&e), &[clear])
        }
    }
}

/// Checks the callback and completes the code flow: the human, their name, and the page to
/// return to; on failure, who (when known) and why.
async fn finish_sign_in(
    s: &AppState,
    c: &ConsoleState,
    headers: &HeaderMap,
    q: &CallbackQuery,
) -> Result<(Human, Option<String>, Option<String>), (Option<String>, ApiError)> {
    let rp = c
        .oidc
        .as_ref()
        .ok_or_else(|| (None, failed("no identity provider is configured")))?;
    let st = take_login(s, c, headers).await.map_err(|e| (None, e))?;
    let state_ok = q.state.as_deref().is_some_and(|v| {
        aws_lc_rs::constant_time::verify_slices_are_equal(v.as_bytes(), st.state.as_bytes()).is_ok()
    });
    if !state_ok {
        return Err((
            None,
            failed("the sign-in answer does not belong to this sign-in (state)"),
        ));
    }
    if let Some(err) = &q.error {
        let code: String = err
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        return Err((
            None,
            failed(format!(
                "the identity provider refused the sign-in ({code})"
            )),
        ));
    }
    if q.iss.as_deref().is_some_and(|i| i != rp.issuer) {
        return Err((
            None,
            failed("the sign-in answer comes from another issuer (iss)"),
        ));
    }
    let code = q
        .code
        .as_deref()
        .ok_or_else(|| (None, failed("the sign-in answer has no code")))?;
    let (human, name) = rp
        .finish(code, &st.pkce_verifier, &st.nonce)
        .await
        .map_err(|e| (None, e))?;
    Ok((human, name, st.return_to))
}

/// Opens a session for `human`; returns its cookie.
async fn open_session(
    s: &AppState,
    c: &ConsoleState,
    ctx: &latch_core::broker::CallCtx,
    human: &Human,
    name: Option<&str>,
    via: &str,
) -> Result<String, ApiError> {
    let id = random_token(32).map_err(failed)?;
    s.broker
        .open_console_session(ctx, human, name, via, &id, c.session_ttl_secs)
        .await?;
    Ok(session::session_cookie(c, &id))
}

/// `GET /console/login/dev[?next=/console/…]`: the development sign-in form.
pub(crate) async fn dev_form(State(s): State<AppState>, Query(q): Query<LoginQuery>) -> Response {
    dev_form_inner(&s, q.next.as_deref()).unwrap_or_else(|e| error_page(&e))
}

fn dev_form_inner(s: &AppState, next: Option<&str>) -> Result<Response, ApiError> {
    let c = console(s)?;
    if !c.dev_login {
        return Err(failed(
            "no identity provider is configured for the console, and the development issuer is off",
        ));
    }
    let (st, cookie) = new_login(c, now(s), Default::default(), next)?;
    Ok(with_cookies(
        html(StatusCode::OK, views::dev_login(&st.id)),
        &[cookie],
    ))
}

/// The development sign-in form.
#[derive(Deserialize)]
struct DevLoginForm {
    login: String,
    token: String,
}

/// `POST /console/login/dev`.
pub(crate) async fn dev_login(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ctx = m.ctx();
    let Ok(c) = console(&s) else {
        return error_page(&ApiError::new(
            ErrorCode::NotFound,
            "the console is not enabled",
        ));
    };
    let clear = session::clear_login_cookie(c);
    if let Err(e) = s.broker.check_auth_limit(&ctx) {
        return with_cookies(error_page(&e), &[clear]);
    }
    let result = async {
        let form: DevLoginForm = serde_urlencoded::from_bytes(&body)
            .map_err(|_| failed("the sign-in form is incomplete"))?;
        let st = take_login(&s, c, &headers).await?;
        let bound = aws_lc_rs::constant_time::verify_slices_are_equal(
            form.login.as_bytes(),
            st.id.as_bytes(),
        )
        .is_ok();
        if !bound {
            return Err(ApiError::new(
                ErrorCode::CsrfTokenInvalid,
                "this form did not come from this browser's sign-in page",
            ));
        }
        let human = s
            .broker
            .authenticate_human(&ctx, Some(form.token.trim()))
            .await?;
        if human.issuer != crate::dev::DEV_HUMAN_ISSUER {
            return Err(failed(
                "the development sign-in takes development human tokens only",
            ));
        }
        let cookie = open_session(&s, c, &ctx, &human, None, "dev").await?;
        Ok((cookie, st.return_to))
    }
    .await;
    match result {
        Ok((cookie, back)) => with_cookies(
            see_other(back.as_deref().unwrap_or("/console/")),
            &[cookie, clear],
        ),
        Err(e) => {
            let _ = s
                .broker
                .console_sign_in_failed(&ctx, None, e.code, &e.message)
                .await;
            with_cookies(error_page(&e), &[clear])
        }
    }
}

/// The sign-out form.
#[derive(Deserialize)]
struct LogoutForm {
    csrf: Option<String>,
}

/// `POST /console/logout`.
pub(crate) async fn logout(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ctx = m.ctx();
    let result = async {
        let c = console(&s)?;
        let signed: Option<SignedIn> = session::current(&s, &headers).await?;
        let Some(signed) = signed else {
            return Ok(with_cookies(
                signed_out(c).await,
                &[session::clear_session_cookie(c)],
            ));
        };
        let form: LogoutForm =
            serde_urlencoded::from_bytes(&body).unwrap_or(LogoutForm { csrf: None });
        csrf::check(&s, &signed, form.csrf.as_deref())?;
        s.broker
            .close_console_session(&ctx, &signed.session)
            .await?;
        Ok(with_cookies(
            signed_out(c).await,
            &[session::clear_session_cookie(c)],
        ))
    }
    .await;
    result.unwrap_or_else(|e| error_page(&e))
}

/// The signed-out page: the provider's own session is unchanged; a link to end it too when
/// the provider offers RP-Initiated Logout.
async fn signed_out(c: &ConsoleState) -> Response {
    let provider = match &c.oidc {
        Some(rp) => Some((rp.issuer_name.as_str(), rp.end_session_url().await)),
        None => None,
    };
    html(StatusCode::OK, views::signed_out(provider))
}

/// `GET /console/logout`: the signed-out page (also where the provider sends the browser back
/// after signing out there). Signs nothing out: that is `POST`, with the CSRF token.
pub(crate) async fn signed_out_page(State(s): State<AppState>) -> Response {
    match console(&s) {
        Ok(c) => signed_out(c).await,
        Err(e) => error_page(&e),
    }
}
