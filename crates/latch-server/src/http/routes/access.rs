//! Access requests and claims: `POST /v1/tasks/{id}/requests`, `GET …/requests/{rid}`,
//! `POST …/requests/{rid}/claim`, and the [`AccessResponse`] shape renewals share.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use latch_core::ErrorCode;
use latch_core::broker::CallCtx;
use latch_core::broker::{AccessOutcome, Grant, RequestAccess};
use latch_core::model::{AccessRequest, Decision, DenyCode, Lease};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::{ApiJson, as_workload, rest_binding};
use crate::http::state::{AppState, ReqMeta};

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
    /// For `pending`, when the broker serves the approval console (`[console] enabled`): the
    /// request's page there (`{public_url}/console/requests/{request id}`), where the agent
    /// sends its human. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_url: Option<String>,
    /// HTTP request id.
    pub request_id: String,
}

/// An access request as its owner reads it: the request, and while it waits for approvers the
/// console page to send a human to.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RequestView {
    /// The request and its decision.
    #[serde(flatten)]
    pub request: AccessRequest,
    /// While `pending`, when the console is served: the request's page in the approval
    /// console. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_url: Option<String>,
}

/// The console URL to show with `r`: only while it waits for approvers.
pub(crate) fn console_url_of(broker: &latch_core::Broker, r: &AccessRequest) -> Option<String> {
    (r.state == latch_core::model::RequestState::Pending)
        .then(|| broker.request_console_url(&r.id))
        .flatten()
}

/// A `403` of an access request or claim, for the OpenAPI document: a policy denial (an
/// [`AccessResponse`] with `status: denied`) or an [`ErrorBody`] (`wrong_principal_kind`).
#[derive(ToSchema)]
#[serde(untagged)]
pub enum AccessRefusal {
    /// Denied by policy.
    Denied(Box<AccessResponse>),
    /// Refused before policy ran.
    Error(ErrorBody),
}

pub(crate) fn grant_body(g: Grant, request_id: &str) -> AccessResponse {
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
        console_url: None,
        request_id: request_id.to_owned(),
    }
}

/// The error code a denied request answers on every surface (REST `code`, OAuth `latch_code`,
/// MCP `code`): the typed [`DenyCode`] the decision carries, mapped by
/// [`DenyCode::error_code`].
pub(crate) fn denial_code(decision: &Decision) -> ErrorCode {
    decision
        .deny_code()
        .unwrap_or(DenyCode::PolicyDenied)
        .error_code()
}

/// The answer to an access request or a claim. `claim`: a claim of a request still pending is
/// no new decision, so it is not counted as a step-up again.
fn outcome_response(
    broker: &latch_core::Broker,
    o: AccessOutcome,
    request_id: &str,
    claim: bool,
) -> (
    StatusCode,
    Extension<crate::metrics::Outcome>,
    Json<AccessResponse>,
) {
    let plain = |status: &str, code: Option<String>, request: AccessRequest| AccessResponse {
        status: status.into(),
        code,
        console_url: console_url_of(broker, &request),
        request,
        lease: None,
        credential: None,
        request_id: request_id.to_owned(),
    };
    let resource = match &o {
        AccessOutcome::Granted(g) => g.request.resource_id.clone(),
        AccessOutcome::Pending(r) | AccessOutcome::Denied(r) => r.resource_id.clone(),
    };
    let mut outcome = "ok";
    let still_pending = claim && matches!(o, AccessOutcome::Pending(_));
    let (st, body, decision) = match o {
        AccessOutcome::Granted(g) => (StatusCode::CREATED, grant_body(*g, request_id), "allow"),
        AccessOutcome::Pending(r) => (StatusCode::ACCEPTED, plain("pending", None, r), "step_up"),
        AccessOutcome::Denied(r) => {
            let code = denial_code(&r.decision);
            outcome = code.as_str();
            // A used-up budget is a quota (429); every other denial is 403.
            let status = if code == ErrorCode::BudgetExceeded {
                StatusCode::TOO_MANY_REQUESTS
            } else {
                StatusCode::FORBIDDEN
            };
            (
                status,
                plain("denied", Some(code.as_str().into()), r),
                "deny",
            )
        }
    };
    if !still_pending {
        crate::metrics::access_decision(decision, &resource);
    }
    (st, Extension(crate::metrics::Outcome(outcome)), Json(body))
}

#[utoipa::path(post, path = "/v1/tasks/{id}/requests", request_body = RequestAccess, security(("bearer" = [])),
    params(("id" = String, Path, description = "task id", pattern = "^task_[0-9a-f]{32}$"),
           ("DPoP" = Option<String>, Header, description = "DPoP proof (RFC 9449) for `POST` of this URL: binds the credential to its key")),
    responses((status = 201, body = AccessResponse, description = "allowed: credential minted (shown once)"),
              (status = 202, body = AccessResponse, description = "step-up: waiting for approvers; `console_url` is the request's page in the approval console"),
              (status = 400, body = ErrorBody, description = "`invalid_request` (see the request schema; also parameters the resource's provider refuses), `dpop_required` (the resource only takes DPoP-bound credentials), `dpop_nonce_required`"),
              (status = 403, body = AccessRefusal, description = "denied (an `AccessResponse` with policy ids and reasons), or `wrong_principal_kind` (a human token)"),
              (status = 404, body = ErrorBody, description = "`task_not_found`"),
              (status = 409, body = ErrorBody, description = "`task_not_open`, `conflict`"),
              (status = 423, body = ErrorBody, description = "`frozen`: an operator froze grants for this workload, repository or resource (kill switch) until lifted"),
              (status = 422, body = ErrorBody, description = "`unknown_resource`, `unknown_action`: the resource or action is not configured"),
              (status = 429, body = AccessRefusal, description = "denied `budget_exceeded`: a budget of the task or workload (`[budgets]`) is used up; the reason names it"),
              (status = 502, body = ErrorBody, description = "`provider_failed`: the credential provider failed"),
              (status = 503, body = ErrorBody, description = "`target_unavailable` (the resource's target is down), `store_unavailable`")))]
pub(crate) async fn request_access(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RequestAccess>,
) -> ApiResult<(
    StatusCode,
    Extension<crate::metrics::Outcome>,
    Json<AccessResponse>,
)> {
    let r = as_workload(&s, &m, &headers, async |ctx: &CallCtx, w| {
        let binding = rest_binding(&s, &headers, &format!("/v1/tasks/{id}/requests")).await?;
        s.broker.request_access(ctx, &w, &id, body, &binding).await
    })
    .await;
    Ok(outcome_response(&s.broker, r?, &m.request_id, false))
}

#[utoipa::path(get, path = "/v1/tasks/{id}/requests/{rid}", security(("bearer" = [])),
    params(("id" = String, Path, description = "task id", pattern = "^task_[0-9a-f]{32}$"), ("rid" = String, Path, description = "request id", pattern = "^req_[0-9a-f]{32}$")),
    responses((status = 200, body = RequestView, description = "the request and its decision; while pending, its console page"),
              (status = 403, body = ErrorBody, description = "`wrong_principal_kind`: a human token"),
              (status = 404, body = ErrorBody, description = "`task_not_found`, `request_not_found`")))]
pub(crate) async fn get_request(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    Path((id, rid)): Path<(String, String)>,
) -> ApiResult<Json<RequestView>> {
    let r = as_workload(&s, &m, &headers, async |_ctx: &CallCtx, w| {
        s.broker.request(&w, &id, &rid).await
    })
    .await?;
    Ok(Json(RequestView {
        console_url: console_url_of(&s.broker, &r),
        request: r,
    }))
}

#[utoipa::path(post, path = "/v1/tasks/{id}/requests/{rid}/claim", security(("bearer" = [])),
    params(("id" = String, Path, description = "task id", pattern = "^task_[0-9a-f]{32}$"), ("rid" = String, Path, description = "request id", pattern = "^req_[0-9a-f]{32}$"),
           ("DPoP" = Option<String>, Header, description = "DPoP proof (RFC 9449) for `POST` of this URL: binds the credential to its key")),
    responses((status = 201, body = AccessResponse, description = "approved and re-evaluated: credential minted (once)"),
              (status = 202, body = AccessResponse, description = "still pending"),
              (status = 400, body = ErrorBody, description = "`dpop_required`, `dpop_nonce_required`"),
              (status = 403, body = AccessRefusal, description = "denied (an `AccessResponse`), or `wrong_principal_kind` (a human token)"),
              (status = 404, body = ErrorBody, description = "`task_not_found`, `request_not_found`"),
              (status = 409, body = ErrorBody, description = "`request_not_pending` (denied, or already claimed), `task_not_open` (also a request closed when its task ended), `conflict`"),
              (status = 423, body = ErrorBody, description = "`frozen`: an operator froze grants for this workload, repository or resource (kill switch) until lifted"),
              (status = 409, body = ErrorBody, description = "`request_expired`: not approved or claimed in time"),
              (status = 429, body = ErrorBody, description = "`budget_exceeded`: a budget of the task or workload is used up; the request stays approved"),
              (status = 502, body = ErrorBody, description = "`provider_failed`"),
              (status = 503, body = ErrorBody, description = "`target_unavailable`, `store_unavailable`")))]
pub(crate) async fn claim_request(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    Path((id, rid)): Path<(String, String)>,
) -> ApiResult<(
    StatusCode,
    Extension<crate::metrics::Outcome>,
    Json<AccessResponse>,
)> {
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
    Ok(outcome_response(&s.broker, r?, &m.request_id, true))
}
