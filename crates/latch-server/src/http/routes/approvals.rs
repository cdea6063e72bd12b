//! Step-up approvals: `GET /v1/approvals/pending`, `POST /v1/approvals/{rid}/approve`,
//! `…/deny`.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use latch_core::broker::CallCtx;
pub use latch_core::broker::PendingView;
use latch_core::model::{AccessRequest, Human, Verdict};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::{ApiJson, as_human};
use crate::http::state::{AppState, ReqMeta};

#[utoipa::path(get, path = "/v1/approvals/pending", security(("bearer" = [])),
    responses((status = 200, body = [PendingView], description = "requests the caller may vote on: pending, unexpired, in an open task"),
              (status = 403, body = ErrorBody, description = "`wrong_principal_kind`: a workload token")))]
pub(crate) async fn pending(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
) -> ApiResult<Json<Vec<PendingView>>> {
    let r = as_human(&s, &m, &headers, async |_ctx: &CallCtx, h: Human| {
        s.broker.pending_views(&h).await
    })
    .await;
    Ok(Json(r?))
}

/// A vote.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoteBody {
    /// The digest of the request being approved, as shown by `GET /v1/approvals/pending`.
    pub digest: String,
    /// Why (1–1024 characters, not only white space; no control, bidi or zero-width
    /// characters). Required: the audit trail records every verdict with its reason.
    #[schema(schema_with = reason_schema)]
    pub reason: String,
}

fn reason_schema() -> utoipa::openapi::schema::Object {
    latch_core::openapi::described(
        latch_core::openapi::text(1024, true, false),
        "Why (1–1024 characters, not only white space; no control, bidi or zero-width characters). Required.",
    )
}

async fn vote(
    s: AppState,
    m: ReqMeta,
    headers: HeaderMap,
    rid: String,
    body: VoteBody,
    verdict: Verdict,
) -> ApiResult<Json<AccessRequest>> {
    let r = as_human(&s, &m, &headers, async |ctx: &CallCtx, h: Human| {
        s.broker
            .vote(ctx, &h, &rid, &body.digest, verdict, &body.reason)
            .await
    })
    .await;
    Ok(Json(r?))
}

#[utoipa::path(post, path = "/v1/approvals/{rid}/approve", request_body = VoteBody, security(("bearer" = [])),
    params(("rid" = String, Path, description = "request id", pattern = "^req_[0-9a-f]{32}$")),
    responses((status = 200, body = AccessRequest, description = "the request with the vote counted"),
              (status = 403, body = ErrorBody, description = "`approver_not_eligible`, `self_approval_forbidden`, `wrong_principal_kind` (a workload token)"),
              (status = 404, body = ErrorBody, description = "`request_not_found`"),
              (status = 409, body = ErrorBody, description = "`task_ended` (the request's task was completed, cancelled or expired: the request is closed), `request_not_pending`, `already_voted`, `conflict`"),
              (status = 409, body = ErrorBody, description = "`request_expired`: the request expired before reaching quorum"),
              (status = 422, body = ErrorBody, description = "`approval_digest_mismatch`: the digest is not the pending request's")))]
pub(crate) async fn approve(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    Path(rid): Path<String>,
    ApiJson(body): ApiJson<VoteBody>,
) -> ApiResult<Json<AccessRequest>> {
    vote(s, m, headers, rid, body, Verdict::Approve).await
}

#[utoipa::path(post, path = "/v1/approvals/{rid}/deny", request_body = VoteBody, security(("bearer" = [])),
    params(("rid" = String, Path, description = "request id", pattern = "^req_[0-9a-f]{32}$")),
    responses((status = 200, body = AccessRequest, description = "the request with the vote counted"),
              (status = 403, body = ErrorBody, description = "`approver_not_eligible`, `self_approval_forbidden`, `wrong_principal_kind` (a workload token)"),
              (status = 404, body = ErrorBody, description = "`request_not_found`"),
              (status = 409, body = ErrorBody, description = "`task_ended` (the request's task was completed, cancelled or expired: the request is closed), `request_not_pending`, `already_voted`, `conflict`"),
              (status = 409, body = ErrorBody, description = "`request_expired`: the request expired before reaching quorum"),
              (status = 422, body = ErrorBody, description = "`approval_digest_mismatch`: the digest is not the pending request's")))]
pub(crate) async fn deny(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    Path(rid): Path<String>,
    ApiJson(body): ApiJson<VoteBody>,
) -> ApiResult<Json<AccessRequest>> {
    vote(s, m, headers, rid, body, Verdict::Deny).await
}
