//! The console's pages: the pending list, a request's page and its vote, a task's timeline,
//! and the stylesheet. Each handler finds the signed-in human (else: to the sign-in), calls
//! one broker method, and renders what it returns.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use latch_core::model::Verdict;
use latch_core::{ApiError, ErrorCode};
use serde::Deserialize;

use crate::http::console::session::{self, SignedIn};
use crate::http::console::{csrf, error_page, html, see_other, views};
use crate::http::state::{AppState, ReqMeta};

/// The console's stylesheet.
const STYLESHEET: &str = include_str!("console.css");

/// What the page header needs to know about the viewer.
pub(crate) fn who<'a>(s: &AppState, signed: &'a SignedIn, csrf: &'a str) -> views::Who<'a> {
    views::Who {
        session: &signed.session,
        csrf,
        admin: s.broker.is_admin(&signed.session.human()),
    }
}

/// The signed-in human, or the answer to send instead (to the sign-in, or an error page).
pub(crate) async fn signed_in(s: &AppState, headers: &HeaderMap) -> Result<SignedIn, Response> {
    if s.console.is_none() {
        return Err(error_page(&ApiError::new(
            ErrorCode::NotFound,
            "the console is not enabled",
        )));
    }
    match session::current(s, headers).await {
        Ok(Some(signed)) => Ok(signed),
        Ok(None) => Err(see_other("/console/login")),
        Err(e) => Err(error_page(&e)),
    }
}

/// `GET /console`: to `/console/`.
pub(crate) async fn to_index() -> Response {
    see_other("/console/")
}

/// `GET /console/`: the requests the signed-in human may approve.
pub(crate) async fn index(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let signed = match signed_in(&s, &headers).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let human = signed.session.human();
    let token = csrf::token(&s, &signed);
    let who = who(&s, &signed, &token);
    let freezes = if who.admin {
        match s.broker.active_freezes(&human).await {
            Ok(f) => Some(f),
            Err(e) => return error_page(&e),
        }
    } else {
        None
    };
    match s.broker.console_pending(&human).await {
        Ok(views) => html(
            StatusCode::OK,
            views::pending(&who, &views, freezes.as_deref()),
        ),
        Err(e) => error_page(&e),
    }
}

/// `GET /console/requests/{request_id}`.
pub(crate) async fn request_page(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(request_id): Path<String>,
) -> Response {
    let signed = match signed_in(&s, &headers).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let human = signed.session.human();
    match s.broker.console_request(&human, &request_id).await {
        Ok(view) => {
            let token = csrf::token(&s, &signed);
            html(
                StatusCode::OK,
                views::request(&who(&s, &signed, &token), &view),
            )
        }
        Err(e) => error_page(&e),
    }
}

/// A vote from a request's page.
#[derive(Deserialize)]
struct VoteForm {
    csrf: Option<String>,
    digest: String,
    verdict: String,
    #[serde(default)]
    reason: String,
}

/// `POST /console/requests/{request_id}`: approve or deny what the page showed. The form
/// carries the digest of the request as displayed; the broker's vote refuses it unless it is
/// the request's digest now, so a vote never lands on something else.
pub(crate) async fn vote(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    Path(request_id): Path<String>,
    body: Bytes,
) -> Response {
    let signed = match signed_in(&s, &headers).await {
        Ok(x) => x,
        Err(r) => {
            // A form post without a session: refuse as a forgery rather than redirecting.
            if r.status() == StatusCode::SEE_OTHER {
                return error_page(&ApiError::new(
                    ErrorCode::CsrfTokenInvalid,
                    "this form was not sent from a signed-in console session",
                ));
            }
            return r;
        }
    };
    let ctx = m.ctx();
    let result = async {
        let form: Result<VoteForm, ApiError> = serde_urlencoded::from_bytes(&body).map_err(|_| {
            // The token is checked first, so a forged post is a 403 whatever else it holds.
            ApiError::new(ErrorCode::InvalidRequest, "the form is incomplete")
        });
        let form = match form {
            Ok(f) => f,
            Err(e) => {
                csrf::check(&s, &signed, None)?;
                return Err(e);
            }
        };
        csrf::check(&s, &signed, form.csrf.as_deref())?;
        let human =
            match session::authority(&s, &signed, &format!("/console/requests/{request_id}")) {
                Ok(h) => h,
                Err(page) => return Ok(Err(*page)),
            };
        let verdict = match form.verdict.as_str() {
            "approve" => Verdict::Approve,
            "deny" => Verdict::Deny,
            _ => {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    "the verdict must be approve or deny",
                ));
            }
        };
        s.broker
            .vote(
                &ctx,
                &human,
                &request_id,
                &form.digest,
                verdict,
                form.reason.trim(),
            )
            .await
            .map(Ok)
    }
    .await;
    match result {
        Ok(Ok(r)) => see_other(&format!("/console/requests/{}", r.id)),
        // The sign-in is too old to vote with: through sign-in again, back to this page.
        Ok(Err(redirect)) => redirect,
        Err(e) => error_page(&e),
    }
}

/// `GET /console/tasks/{task_id}`: a task's timeline (readable by the task's own human, the
/// approvers its requests ask, and admins).
pub(crate) async fn task_page(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(task_id): Path<String>,
) -> Response {
    let signed = match signed_in(&s, &headers).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let human = signed.session.human();
    match s.broker.console_task(&human, &task_id).await {
        Ok(t) => {
            let token = csrf::token(&s, &signed);
            html(StatusCode::OK, views::task(&who(&s, &signed, &token), &t))
        }
        Err(e) => error_page(&e),
    }
}

/// `GET /console/static/console.css`.
pub(crate) async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLESHEET,
    )
        .into_response()
}
