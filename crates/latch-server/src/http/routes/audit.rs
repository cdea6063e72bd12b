//! Reading the audit trail (admin groups only): `/v1/audit`, `/v1/audit/export`,
//! `/v1/audit/checkpoints`, `/v1/audit/find`.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::response::Response;
use axum::{Extension, Json};
use latch_core::broker::CallCtx;
use latch_core::model::{AuditEvent, AuditFilter, AuditKind, Human};
use latch_core::{ApiError, ErrorCode};
use secrecy::ExposeSecret;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::{ApiJson, ApiQuery, as_human};
use crate::http::state::{AppState, ReqMeta};

/// Audit query. Every filter is optional; results are in `seq` order.
#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
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
    pub last: Option<u32>,
    /// Page size (default 100, at most 1000).
    pub limit: Option<u32>,
}

fn require_admin(s: &AppState, h: &Human) -> Result<(), ApiError> {
    if h.groups.iter().any(|g| s.admin_groups.contains(g)) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::WrongPrincipalKind,
            "reading the audit log needs an admin group",
        ))
    }
}

#[utoipa::path(get, path = "/v1/audit", params(AuditQuery), security(("bearer" = [])),
    responses((status = 200, body = [AuditEvent]), (status = 403, body = ErrorBody)))]
pub(crate) async fn audit(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<Vec<AuditEvent>>> {
    let r = as_human(&s, &m, &headers, async |_ctx: &CallCtx, h: Human| {
        require_admin(&s, &h)?;
        let after_seq = match (q.after_seq, q.last) {
            (Some(a), _) => Some(a),
            (None, Some(n)) => {
                let head = s.broker.store().audit_head().await?.map_or(0, |h| h.0);
                Some((head - i64::from(n)).max(0))
            }
            (None, None) => None,
        };
        let f = AuditFilter {
            task_id: q.task_id,
            lease_id: q.lease_id,
            kind_prefix: q.kind,
            actor: q.actor,
            since_unix_secs: q.since_unix_secs,
            until_unix_secs: q.until_unix_secs,
            credential_hmac: None,
            after_seq,
            limit: Some(q.limit.unwrap_or(100).min(1000)),
        };
        Ok(s.broker.store().audit_events(&f).await?)
    })
    .await;
    Ok(Json(r?))
}

/// Export query.
#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
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
        (status = 403, body = ErrorBody)))]
pub(crate) async fn audit_export(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> ApiResult<Response> {
    let r = as_human(&s, &m, &headers, async |ctx: &CallCtx, h: Human| {
        require_admin(&s, &h)?;
        let ev = AuditEvent::new(
            s.broker.clock().now_unix_secs(),
            AuditKind::AuditExported,
            &h.id,
            "ok",
        )
        .detail(serde_json::json!({
            "after_seq": q.after_seq, "checkpoints_only": q.checkpoints_only,
        }));
        s.broker.record_event(ctx, ev).await?;
        Ok(s.checkpointer
            .export(q.after_seq.unwrap_or(0).max(0), q.checkpoints_only)
            .await?)
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
        (status = 204, description = "the log is empty"), (status = 403, body = ErrorBody)))]
pub(crate) async fn audit_checkpoint(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let r = as_human(&s, &m, &headers, async |_ctx: &CallCtx, h: Human| {
        require_admin(&s, &h)?;
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
    #[schema(value_type = String)]
    pub value: secrecy::SecretString,
}

impl std::fmt::Debug for FindRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FindRequest { value: [redacted] }")
    }
}

#[utoipa::path(post, path = "/v1/audit/find", request_body = FindRequest, security(("bearer" = [])),
    responses((status = 200, body = [AuditEvent], description = "events that name the credential by its keyed HMAC"),
        (status = 403, body = ErrorBody)))]
pub(crate) async fn audit_find(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<FindRequest>,
) -> ApiResult<Json<Vec<AuditEvent>>> {
    let r = as_human(&s, &m, &headers, async |ctx: &CallCtx, h: Human| {
        require_admin(&s, &h)?;
        let value = body.value.expose_secret().trim();
        if value.is_empty() {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "`value` must not be empty",
            ));
        }
        let hmac = s.broker.credential_hmac(value);
        let f = AuditFilter {
            credential_hmac: Some(hmac),
            limit: Some(1000),
            ..AuditFilter::default()
        };
        let mut found = s.broker.store().audit_events(&f).await?;
        // The lease's later events (renewals, revocation) belong to the story too.
        let leases: std::collections::BTreeSet<String> =
            found.iter().filter_map(|e| e.lease_id.clone()).collect();
        for l in leases {
            let more = s
                .broker
                .store()
                .audit_events(&AuditFilter {
                    lease_id: Some(l),
                    limit: Some(1000),
                    ..AuditFilter::default()
                })
                .await?;
            found.extend(more);
        }
        found.sort_by_key(|e| e.seq);
        found.dedup_by_key(|e| e.seq);
        let ev = AuditEvent::new(
            s.broker.clock().now_unix_secs(),
            AuditKind::AuditSearched,
            &h.id,
            "ok",
        )
        .detail(serde_json::json!({ "matches": found.len() }));
        s.broker.record_event(ctx, ev).await?;
        Ok(found)
    })
    .await;
    Ok(Json(r?))
}
