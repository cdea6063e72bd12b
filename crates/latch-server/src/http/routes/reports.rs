//! Reports for operators (humans in `[admin] groups`): `GET /v1/admin/reports/controls`, the
//! control evidence report (OWASP agentic and non-human-identity lists, CSA MAESTRO, NIST AI
//! RMF), as JSON, Markdown or HTML.
//!
//! The call is recorded (`report.generated`) before anything is read; the chain head is then
//! signed, and the report is computed against that checkpoint, which it cites.

use axum::Extension;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use latch_core::broker::{CallCtx, WindowAsk};
use latch_core::controls::ControlReport;
use latch_core::model::Human;
use latch_core::{ApiError, ErrorCode};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::{as_human, parse_query};
use crate::http::state::{AppState, ReqMeta};
use crate::report::ReportFormat;

/// The window and format of a report.
#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    /// Start of the window (RFC 3339 date-time, inclusive; default: 30 days before `to`).
    #[param(value_type = Option<String>, format = DateTime)]
    pub from: Option<String>,
    /// End of the window (RFC 3339 date-time, exclusive; default and latest: now). At most 366
    /// days after `from`.
    #[param(value_type = Option<String>, format = DateTime)]
    pub to: Option<String>,
    /// `json` (default), `markdown` or `html`.
    #[param(inline)]
    pub format: Option<ReportFormat>,
}

/// An RFC 3339 date-time as Unix seconds (fractions dropped; a leap second reads as the
/// second before it).
///
/// # Errors
/// `invalid_request` naming `field`.
fn rfc3339(field: &str, v: Option<&str>) -> Result<Option<i64>, ApiError> {
    use time::format_description::well_known::Rfc3339;
    let Some(v) = v else { return Ok(None) };
    time::OffsetDateTime::parse(v, &Rfc3339)
        .map(|t| Some(t.unix_timestamp()))
        .map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!("`{field}` must be an RFC 3339 date-time, such as `2026-01-31T00:00:00Z`"),
            )
        })
}

const NOT_ADMIN: &str = "`not_admin`: a human outside the admin groups (`[admin] groups`); `wrong_principal_kind`: a workload token";

#[utoipa::path(get, operation_id = "admin_controls_report", path = "/v1/admin/reports/controls",
    params(ReportQuery), security(("bearer" = [])),
    responses((status = 200, description = "the control evidence report over the window, computed against the signed audit checkpoint it cites (`report.generated` is recorded first)",
                 content((ControlReport = "application/json"), (String = "text/markdown"), (String = "text/html"))),
              (status = 403, body = ErrorBody, description = NOT_ADMIN),
              (status = 422, body = ErrorBody, description = "`invalid_window`: `from` is not before `to` (`to` is at most now), or they are more than 366 days apart")))]
pub(crate) async fn controls(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let r = as_human(&s, &m, &headers, async |ctx: &CallCtx, h: Human| {
        s.broker.require_operator(&h)?;
        let q: ReportQuery = parse_query(q.as_deref())?;
        let format = q.format.unwrap_or_default();
        let ask = WindowAsk {
            from_unix_secs: rfc3339("from", q.from.as_deref())?,
            to_unix_secs: rfc3339("to", q.to.as_deref())?,
        };
        let window = s
            .broker
            .record_controls_report(ctx, &h, ask, format.as_str())
            .await?;
        let checkpoint = s.checkpointer.checkpoint().await?;
        let report = s
            .broker
            .controls_report(&h, window, checkpoint.as_ref())
            .await?;
        let body = format
            .render(&report)
            .map_err(|_| ApiError::new(ErrorCode::Internal, "the report could not be rendered"))?;
        Ok((format, body))
    })
    .await;
    let (format, body) = r?;
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if format == ReportFormat::Html
        && let Ok(v) = HeaderValue::from_str(&crate::report::html::csp())
    {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    Ok(resp)
}
