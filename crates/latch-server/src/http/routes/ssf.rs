//! OpenID Shared Signals: the transmitter metadata (`GET /.well-known/ssf-configuration`), the
//! stream configuration and status endpoints (`/v1/ssf/stream`, `/v1/ssf/status`, for
//! operators), and the push endpoint where configured transmitters deliver SETs
//! (`POST /v1/ssf/events`, RFC 8935).
//!
//! Streams are the `[[ssf.receivers]]` of `latch.toml`: creating, replacing, changing or
//! deleting one over HTTP answers `403 ssf_streams_read_only` (SSF 1.0 §8.1.1.1).

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use latch_core::broker::CallCtx;
use latch_core::model::Human;
use latch_core::ssf::{PushError, PushErrorCode, SET_MEDIA_TYPE};
use latch_core::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::error::{ApiResult, AppError, ErrorBody};
use crate::http::extract::{as_human, parse_query};
use crate::http::state::{AppState, ReqMeta};
use crate::ssf::{SsfState, StreamConfiguration, StreamStatus, TransmitterMetadata};

const NOT_ADMIN: &str = "`not_admin`: a human outside the admin groups (`[admin] groups`); `wrong_principal_kind`: a workload token";
const NOT_TRANSMITTING: &str = "`not_found`: no `[[ssf.receivers]]` are configured (Latch transmits no shared signals), or no stream has this `stream_id`";

/// `?stream_id=…`.
#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// A stream id (a receiver's configured name); without it, every stream.
    pub stream_id: Option<String>,
}

/// One stream, or every stream when no `stream_id` was given (SSF 1.0 §8.1.1.2).
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum StreamAnswer {
    /// The stream `stream_id` names.
    One(StreamConfiguration),
    /// Every configured stream.
    All(Vec<StreamConfiguration>),
}

fn not_found(what: &str) -> AppError {
    AppError(ApiError::new(ErrorCode::NotFound, what))
}

/// The transmitting state, or `404`.
fn transmitting(s: &AppState) -> Result<&SsfState, ApiError> {
    s.ssf
        .as_deref()
        .filter(|x| x.transmitting())
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "latch transmits no shared signals"))
}

fn no_store<T: IntoResponse>(body: T) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], body).into_response()
}

#[utoipa::path(get, path = "/.well-known/ssf-configuration",
    responses((status = 200, body = TransmitterMetadata, description = "the transmitter configuration metadata (OpenID Shared Signals Framework 1.0 §7.1): issuer, `jwks_uri`, push delivery, the stream configuration and status endpoints"),
              (status = 404, body = ErrorBody, description = "`not_found`: no `[[ssf.receivers]]` are configured")))]
pub(crate) async fn configuration(
    State(s): State<AppState>,
) -> ApiResult<Json<TransmitterMetadata>> {
    Ok(Json(transmitting(&s)?.metadata()))
}

#[utoipa::path(get, operation_id = "ssf_stream", path = "/v1/ssf/stream", params(StreamQuery), security(("bearer" = [])),
    responses((status = 200, body = StreamAnswer, description = "the stream `stream_id` names, or every configured stream (SSF 1.0 §8.1.1.2); never the receiver's authorization header"),
              (status = 403, body = ErrorBody, description = NOT_ADMIN),
              (status = 404, body = ErrorBody, description = NOT_TRANSMITTING)))]
pub(crate) async fn stream(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let r = as_human(&s, &m, &headers, async |_ctx: &CallCtx, h: Human| {
        s.broker.require_operator(&h)?;
        let q: StreamQuery = parse_query(q.as_deref())?;
        let ssf = transmitting(&s)?;
        Ok(match q.stream_id {
            None => StreamAnswer::All(ssf.streams.clone()),
            Some(id) => StreamAnswer::One(
                ssf.streams
                    .iter()
                    .find(|c| c.stream_id == id)
                    .cloned()
                    .ok_or_else(|| {
                        ApiError::new(ErrorCode::NotFound, "no stream with this `stream_id`")
                    })?,
            ),
        })
    })
    .await?;
    Ok(no_store(Json(r)))
}

/// Streams cannot be changed over HTTP: an operator gets `403 ssf_streams_read_only`.
async fn read_only(s: &AppState, m: &ReqMeta, headers: &HeaderMap) -> ApiResult<StatusCode> {
    as_human(s, m, headers, async |_ctx: &CallCtx, h: Human| {
        s.broker.require_operator(&h)?;
        Err::<StatusCode, _>(ApiError::new(
            ErrorCode::SsfStreamsReadOnly,
            "streams are configured in latch.toml (`[[ssf.receivers]]`); they cannot be created, changed or deleted over http",
        ))
    })
    .await
}

const READ_ONLY: &str = "`ssf_streams_read_only`: streams are the `[[ssf.receivers]]` of latch.toml (SSF 1.0 §8.1.1.1); `not_admin`: not an operator";

#[utoipa::path(post, operation_id = "ssf_stream_create", path = "/v1/ssf/stream", security(("bearer" = [])),
    responses((status = 403, body = ErrorBody, description = READ_ONLY)))]
pub(crate) async fn create_stream(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    read_only(&s, &m, &headers).await
}

#[utoipa::path(put, operation_id = "ssf_stream_replace", path = "/v1/ssf/stream", security(("bearer" = [])),
    responses((status = 403, body = ErrorBody, description = READ_ONLY)))]
pub(crate) async fn replace_stream(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    read_only(&s, &m, &headers).await
}

#[utoipa::path(patch, operation_id = "ssf_stream_update", path = "/v1/ssf/stream", security(("bearer" = [])),
    responses((status = 403, body = ErrorBody, description = READ_ONLY)))]
pub(crate) async fn update_stream(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    read_only(&s, &m, &headers).await
}

#[utoipa::path(delete, operation_id = "ssf_stream_delete", path = "/v1/ssf/stream", security(("bearer" = [])),
    responses((status = 403, body = ErrorBody, description = READ_ONLY)))]
pub(crate) async fn delete_stream(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    read_only(&s, &m, &headers).await
}

/// `?stream_id=…` (required).
#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StatusQuery {
    /// The stream id.
    pub stream_id: String,
}

#[utoipa::path(get, operation_id = "ssf_status", path = "/v1/ssf/status", params(StatusQuery), security(("bearer" = [])),
    responses((status = 200, body = StreamStatus, description = "the stream's status (SSF 1.0 §8.1.2.1): configured streams are always `enabled`"),
              (status = 403, body = ErrorBody, description = NOT_ADMIN),
              (status = 404, body = ErrorBody, description = NOT_TRANSMITTING)))]
pub(crate) async fn status(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let r = as_human(&s, &m, &headers, async |_ctx: &CallCtx, h: Human| {
        s.broker.require_operator(&h)?;
        let q: StatusQuery = parse_query(q.as_deref())?;
        let ssf = transmitting(&s)?;
        if !ssf.streams.iter().any(|c| c.stream_id == q.stream_id) {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                "no stream with this `stream_id`",
            ));
        }
        Ok(StreamStatus {
            stream_id: q.stream_id,
            status: "enabled".to_owned(),
        })
    })
    .await?;
    Ok(no_store(Json(r)))
}

/// An RFC 8935 §2.4 error body: `{"err": …, "description": …}`.
#[derive(Debug, Serialize)]
struct PushErrorBody<'a> {
    err: &'static str,
    description: &'a str,
}

fn refused(code: PushErrorCode, description: &str) -> Response {
    metrics::counter!("latch_ssf_sets_received_total", "outcome" => code.as_str()).increment(1);
    tracing::info!(err = code.as_str(), %description, "shared signals: a pushed set was refused");
    (
        StatusCode::BAD_REQUEST,
        Json(PushErrorBody {
            err: code.as_str(),
            description,
        }),
    )
        .into_response()
}

/// Answers what the HTTP layer refused on the push endpoint (`413` a body over the limit,
/// `408` a body not received in time, `415` a content coding) in the RFC 8935 §2.4 form,
/// `{"err": "invalid_request", "description": …}`, keeping the status: a transmitter reads one
/// error form from this endpoint.
pub(crate) async fn push_error_form(r: Response) -> Response {
    let status = r.status();
    if !matches!(
        status,
        StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::REQUEST_TIMEOUT
            | StatusCode::UNSUPPORTED_MEDIA_TYPE
    ) {
        return r;
    }
    let (mut parts, _body) = r.into_parts();
    // The error travels as an extension that `request_meta` renders; taken here, this form is
    // what the transmitter gets.
    let message = parts.extensions.remove::<ApiError>().map_or_else(
        || {
            status
                .canonical_reason()
                .unwrap_or("refused")
                .to_ascii_lowercase()
        },
        |e| latch_core::error::redact_credentials(&e.message).into_owned(),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    // `Json` sets its own type, but the parts' headers are applied after it and would win.
    parts.headers.remove(header::CONTENT_TYPE);
    let body = Json(PushErrorBody {
        err: PushErrorCode::InvalidRequest.as_str(),
        description: &message,
    });
    (parts, body).into_response()
}

/// `POST /v1/ssf/events`: a configured transmitter pushes one SET (RFC 8935 §2): the body is
/// the compact JWS, `Content-Type: application/secevent+jwt`. `202` once accepted (what it
/// causes is committed); `400` with `{"err", "description"}` (RFC 8935 §2.4) when refused, the
/// codes `invalid_request` (not a SET, wrong `typ`, `iat` out of bounds, a `jti` already
/// received), `invalid_key`, `invalid_issuer`, `invalid_audience`, `authentication_failed`;
/// `503` `jwks_unavailable` or `store_unavailable` when the transmitter's keys or the store
/// are unavailable (the transmitter retries); `413` (and `408`, `415`) in the RFC 8935 form
/// ([`push_error_form`]); `404` when no transmitter is configured.
pub(crate) async fn receive(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(verifier) = s.ssf.as_ref().and_then(|x| x.verifier.clone()) else {
        return not_found("latch accepts no shared signals (no `[[ssf.transmitters]]`)")
            .into_response();
    };
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim());
    if !media.is_some_and(|v| v.eq_ignore_ascii_case(SET_MEDIA_TYPE)) {
        return refused(
            PushErrorCode::InvalidRequest,
            "the body must be a set (`content-type: application/secevent+jwt`, rfc 8935 §2)",
        );
    }
    let Ok(token) = std::str::from_utf8(&body) else {
        return refused(
            PushErrorCode::InvalidRequest,
            "the body is not a compact jws",
        );
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let outcome = match verifier.verify(token.trim(), authorization).await {
        Ok(set) => s.broker.receive_security_event(&m.ctx(), set).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(r) => {
            let outcome = if r.acted { "acted" } else { "ignored" };
            metrics::counter!("latch_ssf_sets_received_total", "outcome" => outcome).increment(1);
            tracing::info!(jti = %r.jti, acted = r.acted, freeze_id = ?r.freeze_id,
                tasks_ended = r.tasks_ended.len(), tasks_not_ended = r.tasks_not_ended,
                "shared signals: set accepted");
            StatusCode::ACCEPTED.into_response()
        }
        Err(PushError::Refused { code, description }) => refused(code, &description),
        Err(PushError::Unavailable(e)) => {
            metrics::counter!("latch_ssf_sets_received_total", "outcome" => "unavailable")
                .increment(1);
            // `jwks_unavailable` or `store_unavailable`, as it happened, always `503` (the
            // transmitter retries: the SET was not wrong, RFC 8935 §2.3).
            let mut r = AppError(e).into_response();
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
            r
        }
    }
}
