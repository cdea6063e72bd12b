//! The operators' console pages (humans in `[admin] groups`, the same check as `/v1/admin/*`):
//!
//! * `GET /console/operators[?workload=&repository=&resource=&environment=]`: open tasks and
//!   live leases of every workload;
//! * `POST /console/operators/leases/{id}/revoke`, `POST /console/operators/tasks/{id}/cancel`;
//! * `GET /console/kill-switch`, `POST /console/kill-switch` (engage: revoke every live
//!   credential in a scope and freeze it), `POST /console/kill-switch/{id}/lift`.
//!
//! Each handler finds the signed-in human, checks the form's CSRF token, and calls the same
//! broker use case as the API (which checks the operator and the reason, and audits both). A
//! non-admin gets a `403 not_admin` page. An action on a session whose sign-in is older than
//! `[console] authority_max_age` is not taken: the browser goes through sign-in again.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use latch_core::broker::{CallCtx, FreezeRequest, OperatorFilter};
use latch_core::freeze::{FreezeScope, ScopeKind};
use latch_core::model::Human;
use latch_core::{ApiError, ErrorCode};
use serde::Deserialize;

use crate::http::console::pages::{signed_in, who};
use crate::http::console::session::{self, SignedIn};
use crate::http::console::{csrf, error_page, html, ops_views, see_other};
use crate::http::state::{AppState, ReqMeta};

/// The operators' list filters, as query parameters (empty ones are ignored).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct FilterQuery {
    workload: Option<String>,
    repository: Option<String>,
    resource: Option<String>,
    environment: Option<String>,
}

fn given(v: Option<String>) -> Option<String> {
    v.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

impl From<FilterQuery> for OperatorFilter {
    fn from(q: FilterQuery) -> Self {
        OperatorFilter {
            workload: given(q.workload),
            repository: given(q.repository),
            resource: given(q.resource),
            environment: given(q.environment),
            after: None,
            limit: None,
        }
    }
}

/// A signed-in operator, or the answer to send instead (to the sign-in; a `403 not_admin`).
async fn operator(s: &AppState, headers: &HeaderMap) -> Result<SignedIn, Response> {
    let signed = signed_in(s, headers).await?;
    s.broker
        .require_operator(&signed.session.human())
        .map_err(|e| error_page(&e))?;
    Ok(signed)
}

/// `GET /console/operators`.
pub(crate) async fn operators(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<FilterQuery>,
) -> Response {
    let signed = match operator(&s, &headers).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let human = signed.session.human();
    let f = OperatorFilter::from(q);
    let lists = async {
        let tasks = s.broker.operator_tasks(&human, &f).await?;
        let leases = s.broker.operator_leases(&human, &f).await?;
        Ok::<_, ApiError>((tasks, leases))
    }
    .await;
    match lists {
        Ok((tasks, leases)) => {
            let token = csrf::token(&s, &signed);
            html(
                StatusCode::OK,
                ops_views::operators(&who(&s, &signed, &token), &f, &tasks, &leases),
            )
        }
        Err(e) => error_page(&e),
    }
}

/// `GET /console/kill-switch`.
pub(crate) async fn kill_switch(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let signed = match operator(&s, &headers).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    match s.broker.active_freezes(&signed.session.human()).await {
        Ok(freezes) => {
            let token = csrf::token(&s, &signed);
            html(
                StatusCode::OK,
                ops_views::kill_switch(&who(&s, &signed, &token), &freezes),
            )
        }
        Err(e) => error_page(&e),
    }
}

/// An operator's form: the CSRF token, the reason, and for the kill switch its scope.
#[derive(Deserialize)]
struct OpsForm {
    csrf: Option<String>,
    #[serde(default)]
    reason: String,
    kind: Option<String>,
    value: Option<String>,
}

/// What an operator's `POST` ends in: a redirect (done, or through sign-in again) or a page.
type Outcome = Result<Response, ApiError>;

/// The shape of every operator `POST`: a session (else a forgery), the CSRF token, an admin,
/// authority no older than `authority_max_age` (else through sign-in again, back to `back`),
/// then `act` with the fresh human and the form.
async fn operator_post(
    s: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
    back: &str,
    act: impl AsyncFnOnce(Human, OpsForm, SignedIn) -> Outcome,
) -> Response {
    let signed = match signed_in(s, headers).await {
        Ok(x) => x,
        Err(r) if r.status() == StatusCode::SEE_OTHER => {
            return error_page(&ApiError::new(
                ErrorCode::CsrfTokenInvalid,
                "this form was not sent from a signed-in console session",
            ));
        }
        Err(r) => return r,
    };
    let form: OpsForm = match serde_urlencoded::from_bytes(body) {
        Ok(f) => f,
        Err(_) => {
            // The token is checked first: a forged post is a 403 whatever else it holds.
            let e = csrf::check(s, &signed, None).err().unwrap_or_else(|| {
                ApiError::new(ErrorCode::InvalidRequest, "the form is incomplete")
            });
            return error_page(&e);
        }
    };
    if let Err(e) = csrf::check(s, &signed, form.csrf.as_deref()) {
        return error_page(&e);
    }
    // A stale sign-in first: it gets the sign-in-again page, not the broker's refusal.
    let human = match session::authority(s, &signed, back) {
        Ok(h) => h,
        Err(page) => return *page,
    };
    if let Err(e) = s.broker.require_operator_action(&human) {
        return error_page(&e);
    }
    act(human, form, signed)
        .await
        .unwrap_or_else(|e| error_page(&e))
}

/// `POST /console/operators/leases/{id}/revoke`.
pub(crate) async fn revoke_lease(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let ctx: CallCtx = m.ctx();
    operator_post(
        &s,
        &headers,
        &body,
        "/console/operators",
        async |h, f, _| {
            s.broker
                .operator_revoke_lease(&ctx, &h, &id, f.reason.trim())
                .await?;
            Ok(see_other("/console/operators"))
        },
    )
    .await
}

/// `POST /console/operators/tasks/{id}/cancel`.
pub(crate) async fn cancel_task(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let ctx = m.ctx();
    operator_post(
        &s,
        &headers,
        &body,
        "/console/operators",
        async |h, f, _| {
            s.broker
                .operator_cancel_task(&ctx, &h, &id, f.reason.trim())
                .await?;
            Ok(see_other("/console/operators"))
        },
    )
    .await
}

/// The scope a kill-switch form names.
fn scope(f: &OpsForm) -> Result<FreezeScope, ApiError> {
    let kind = match f.kind.as_deref().unwrap_or_default() {
        "workload" => ScopeKind::Workload,
        "repository" => ScopeKind::Repository,
        "resource" => ScopeKind::Resource,
        "all" => ScopeKind::All,
        "human" => ScopeKind::Human,
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "the scope must be workload, repository, resource, human or all",
            ));
        }
    };
    let value = f
        .value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned);
    Ok(FreezeScope { kind, value })
}

/// `POST /console/kill-switch`: engage a freeze (its live credentials are revoked first).
pub(crate) async fn engage(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ctx = m.ctx();
    operator_post(
        &s,
        &headers,
        &body,
        "/console/kill-switch",
        async |h, f, signed| {
            let input = FreezeRequest {
                scope: scope(&f)?,
                reason: f.reason.trim().to_owned(),
            };
            let report = s.broker.engage_freeze(&ctx, &h, input).await?;
            let token = csrf::token(&s, &signed);
            Ok(html(
                StatusCode::OK,
                ops_views::engaged(&who(&s, &signed, &token), &report),
            ))
        },
    )
    .await
}

/// `POST /console/kill-switch/{id}/lift`.
pub(crate) async fn lift(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let ctx = m.ctx();
    operator_post(
        &s,
        &headers,
        &body,
        "/console/kill-switch",
        async |h, f, _| {
            s.broker.lift_freeze(&ctx, &h, &id, f.reason.trim()).await?;
            Ok(see_other("/console/kill-switch"))
        },
    )
    .await
}
