//! Request extractors and the shape every handler shares: [`ApiJson`] and [`ApiQuery`] (whose
//! rejections are `invalid_request` errors), the bearer token, the DPoP binding of REST calls,
//! and `as_workload` / `as_human` (authenticate, run, commit the call's audit events).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Query, Request};
use axum::http::{HeaderMap, StatusCode, header};
use latch_core::broker::CallCtx;
use latch_core::model::{Human, Workload};
use latch_core::{ApiError, ErrorCode};

use crate::http::error::{ApiResult, AppError};
use crate::http::state::{AppState, ReqMeta};

/// JSON body extractor whose rejections are [`AppError`]s with code `invalid_request`.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = AppError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(AppError(ApiError::new(
                ErrorCode::BodyTooLarge,
                "request body is too large",
            ))),
            Err(e) => Err(AppError(ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "invalid json body: {}",
                    latch_core::error::without_input_values(&e.body_text())
                ),
            ))),
        }
    }
}

/// The key binding asked for by a `DPoP` header (RFC 9449 §5) on a `POST path` REST call: the
/// minted credential is bound to the proof's key. No header: an unbound credential.
pub(crate) async fn rest_binding(
    s: &AppState,
    headers: &HeaderMap,
    path: &str,
) -> Result<latch_core::model::TokenBinding, ApiError> {
    let Some(v) = headers.get("dpop") else {
        return Ok(Default::default());
    };
    let proof = v
        .to_str()
        .map_err(|_| ApiError::new(ErrorCode::DpopProofInvalid, "dpop header is not ascii"))?;
    let htu = format!("{}{path}", s.base_url);
    let jkt = s
        .dpop
        .verify(
            proof,
            crate::http::dpop::ProofCheck {
                htm: "POST",
                htu: &htu,
                access_token: None,
                expected_jkt: None,
                relayed: false,
            },
        )
        .await?;
    Ok(latch_core::model::TokenBinding {
        jkt: Some(jkt),
        ..Default::default()
    })
}

/// Query-string extractor whose rejections are [`AppError`]s with code `invalid_request`.
pub struct ApiQuery<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(Self(v)),
            Err(e) => Err(AppError(ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "invalid query string: {}",
                    latch_core::error::without_input_values(&e.body_text())
                ),
            ))),
        }
    }
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Commits audit events still pending (e.g. the caller's authentication) and returns `r`.
/// Audit fails closed: if they cannot be recorded, the call fails. A call that already failed
/// because the store is unavailable is answered at once: trying the store again would only
/// wait out another store deadline before the same 503.
pub(crate) async fn finish<T>(s: &AppState, ctx: &CallCtx, r: Result<T, ApiError>) -> ApiResult<T> {
    let r = match r {
        Err(e) if e.code == latch_core::ErrorCode::StoreUnavailable => return Err(AppError(e)),
        other => other,
    };
    let flushed = s.broker.flush(ctx).await;
    match (r, flushed) {
        (Ok(v), Ok(())) => Ok(v),
        (Ok(_), Err(e)) => Err(AppError(e)),
        (Err(e), _) => {
            if matches!(e.code.http_status(), 401) {
                metrics::counter!("latch_auth_failures_total", "code" => e.code.as_str())
                    .increment(1);
            }
            Err(AppError(e))
        }
    }
}

/// Authenticates the caller as a workload, runs `op`, then commits the call's pending audit
/// events (audit fails closed). The shape of every workload handler.
pub(crate) async fn as_workload<T>(
    s: &AppState,
    m: &ReqMeta,
    headers: &HeaderMap,
    op: impl AsyncFnOnce(&CallCtx, Workload) -> Result<T, ApiError>,
) -> ApiResult<T> {
    let ctx = m.ctx();
    let r = match s.broker.authenticate_workload(&ctx, bearer(headers)).await {
        Ok(w) => op(&ctx, w).await,
        Err(e) => Err(e),
    };
    finish(s, &ctx, r).await
}

/// [`as_workload`] for calls made by a human (approvers, auditors).
pub(crate) async fn as_human<T>(
    s: &AppState,
    m: &ReqMeta,
    headers: &HeaderMap,
    op: impl AsyncFnOnce(&CallCtx, Human) -> Result<T, ApiError>,
) -> ApiResult<T> {
    let ctx = m.ctx();
    let r = match s.broker.authenticate_human(&ctx, bearer(headers)).await {
        Ok(h) => op(&ctx, h).await,
        Err(e) => Err(e),
    };
    finish(s, &ctx, r).await
}
