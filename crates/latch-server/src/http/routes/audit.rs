//! Reading the audit trail (admin groups only): `/v1/audit`, `/v1/audit/export`,
//! `/v1/audit/checkpoints`, `/v1/audit/find`.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::response::Response;
use axum::{Extension, Json};
use latch_core::broker::CallCtx;
use latch_core::model::{AuditEvent, AuditFilter, Human};
use secrecy::ExposeSecret;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::{ApiJson, ApiQuery, as_human};
use crate::http::state::{AppState, ReqMeta};

/// Audit query. Every filter is optional; results are in `seq` order.
#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this task.
    pub task_id: Option<String>,
    /// Only this lease.
    pub lease_id: Option<String>,
    /// Only this actor (agent principal id, human id, or `latch`).
    pub actor: Option<String>,
    /// Kind prefix, e.g. `credential.`.
    pub kind: Option<String>,
    /// Only events at or after this time.
    pub since_unix_secs: Option<i64>,
    /// Only events before this time.
    pub until_unix_secs: Option<i64>,
    /// Only after this sequence number (paging: pass the last `seq` you got).
    pub after_seq: Option<i64>,
    /// Without `after_seq`: start from the last this-many records of the log (before the other
    /// filters apply), as `tail` does.
    #[param(value_type = Option<u64>, maximum = 4294967295_u64)]
    pub last: Option<u32>,
    /// Page size (default 100; larger values are read as 1000).
    #[param(value_type = Option<u64>, maximum = 4294967295_u64)]
    pub limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/audit", params(AuditQuery), security(("bearer" = [])),
    responses((status = 200, body = [AuditEvent], description = "matching records, in `seq` order"),
        (status = 403, body = ErrorBody, description = "`wrong_principal_kind`: not a human of the admin groups (`[admin] groups`)")))]
pub(crate) async fn audit(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<Vec<AuditEvent>>> {
    let r = as_human(&s, &m, &headers, async |_ctx: &CallCtx, h: Human| {
        let f = AuditFilter {
            task_id: q.task_id,
            lease_id: q.lease_id,
            kind_prefix: q.kind,
            actor: q.actor,
            since_unix_secs: q.since_unix_secs,
            until_unix_secs: q.until_unix_secs,
            credential_hmac: None,
            after_seq: q.after_seq,
            limit: q.limit,
        };
        s.broker.audit_query(&h, f, q.last).await
    })
    .await;
    Ok(Json(r?))
}

/// Export query.
#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// Only records after this sequence number.
    pub after_seq: Option<i64>,
    /// Only the signed checkpoints (to keep elsewhere).
    #[serde(default)]
    pub checkpoints_only: bool,
}

#[utoipa::path(get, path = "/v1/audit/export", params(ExportQuery), security(("bearer" = [])),
    responses((status = 200, content_type = "application/x-ndjson",
        description = "JSON lines: records with their chain hashes, each checkpoint after the record it seals (format `latch-audit/1`)"),
        (status = 403, body = ErrorBody, description = "`wrong_principal_kind`: not a human of the admin groups (`[admin] groups`)")))]
pub(crate) async fn audit_export(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> ApiResult<Response> {
    let r = as_human(&s, &m, &headers, async |ctx: &CallCtx, h: Human| {
        let after_seq = s
            .broker
            .export_audit(ctx, &h, q.after_seq, q.checkpoints_only)
            .await?;
        Ok(s.checkpointer.export(after_seq, q.checkpoints_only).await?)
    })
    .await;
    let body = r?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        )],
        body,
    )
        .into_response())
}

#[utoipa::path(post, path = "/v1/audit/checkpoints", security(("bearer" = [])),
    responses((status = 200, body = latch_core::audit::AuditCheckpoint, description = "the checkpoint at the chain head (signed now unless it already was)"),
        (status = 204, description = "the log is empty"), (status = 403, body = ErrorBody, description = "`wrong_principal_kind`: not a human of the admin groups (`[admin] groups`)")))]
pub(crate) async fn audit_checkpoint(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let r = as_human(&s, &m, &headers, async |_ctx: &CallCtx, h: Human| {
        s.broker.require_audit_admin(&h)?;
        Ok(s.checkpointer.checkpoint().await?)
    })
    .await;
    Ok(match r? {
        Some(cp) => Json(cp).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

/// A credential value to look for (`latch audit find`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FindRequest {
    /// The leaked value; surrounding whitespace is ignored.
    ///
    /// # Security
    /// Only its keyed HMAC is computed and compared; the value is neither stored nor logged.
    #[schema(schema_with = find_value_schema)]
    pub value: secrecy::SecretString,
}

fn find_value_schema() -> utoipa::openapi::schema::Object {
    latch_core::openapi::described(
        latch_core::openapi::not_blank(),
        "The leaked value; surrounding whitespace is ignored (not only whitespace). Only its keyed HMAC is computed and compared; the value is neither stored nor logged.",
    )
}

impl std::fmt::Debug for FindRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FindRequest { value: [redacted] }")
    }
}

#[utoipa::path(post, path = "/v1/audit/find", request_body = FindRequest, security(("bearer" = [])),
    responses((status = 200, body = [AuditEvent], description = "events that name the credential by its keyed HMAC"),
        (status = 403, body = ErrorBody, description = "`wrong_principal_kind`: not a human of the admin groups (`[admin] groups`)")))]
pub(crate) async fn audit_find(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<FindRequest>,
) -> ApiResult<Json<Vec<AuditEvent>>> {
    let r = as_human(&s, &m, &headers, async |ctx: &CallCtx, h: Human| {
        s.broker
            .find_credential(ctx, &h, body.value.expose_secret())
            .await
    })
    .await;
    Ok(Json(r?))
}
