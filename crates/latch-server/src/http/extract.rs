//! Request extractors and the shape every handler shares: [`ApiJson`] (strict JSON),
//! [`ApiJsonOrEmpty`], [`ApiForm`] and [`ApiQuery`] (whose rejections are JSON errors:
//! `415`, `413`, `400 invalid_request`), the bearer token, the DPoP binding of REST calls, and
//! `as_workload` / `as_human` (authenticate, run, commit the call's audit events).

use axum::body::Bytes;
use axum::extract::{FromRequest, Query, Request};
use axum::http::{HeaderMap, StatusCode, header};
use latch_core::broker::CallCtx;
use latch_core::json::StrictJsonError;
use latch_core::model::{Human, Workload};
use latch_core::{ApiError, ErrorCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::http::error::{ApiResult, AppError};
use crate::http::state::{AppState, ReqMeta};

/// JSON body extractor: the body must be `application/json` (or `application/*+json`), at
/// most the route's body limit, and strict JSON: duplicate member names are refused at every
/// depth ([`latch_core::json`]), so no body means one thing to Latch and another to a reader
/// that keeps the first of two members (approval digests are computed over what Latch read).
/// An integer may be spelled with a zero fraction (`2.0`): JSON Schema's `integer` admits it,
/// and it is read as `2`.
///
/// # Errors
/// Rejections are [`AppError`]s in the JSON error shape: `415 unsupported_media_type`,
/// `413 body_too_large`, `400 invalid_request` (not JSON, a duplicate member, which it names,
/// or a value that does not fit the endpoint's schema).
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(unsupported_media_type("application/json"));
        }
        let bytes = body_bytes(req, state).await?;
        strict_json(&bytes).map(Self)
    }
}

/// [`ApiJson`] for an optional body: an empty (or all-whitespace) body, of any media type, and
/// JSON `null` are `T::default()`.
///
/// # Errors
/// As [`ApiJson`] for a body that is not empty.
pub struct ApiJsonOrEmpty<T>(pub T);

impl<S, T> FromRequest<S> for ApiJsonOrEmpty<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = AppError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(req.headers());
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        if !json {
            return Err(unsupported_media_type("application/json"));
        }
        strict_json::<Option<T>>(&bytes).map(|v| Self(v.unwrap_or_default()))
    }
}

/// The raw body (within the route's body limit, rejections as [`ApiJson`]'s `413` / `400`),
/// with its headers' media type, for a handler that must check its caller before reading it
/// ([`RawJson::parse`]): the operators' routes answer a non-admin `403 not_admin` whatever the
/// body holds.
pub struct RawJson {
    json: bool,
    bytes: Bytes,
}

impl RawJson {
    /// The body read as [`ApiJson`] reads it.
    ///
    /// # Errors
    /// `unsupported_media_type` (415), `invalid_request` (400), as [`ApiJson`].
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        if !self.json {
            return Err(unsupported_media_type("application/json").0);
        }
        strict_json(&self.bytes).map_err(|e| e.0)
    }
}

impl<S: Send + Sync> FromRequest<S> for RawJson {
    type Rejection = AppError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(req.headers());
        let bytes = body_bytes(req, state).await?;
        Ok(Self { json, bytes })
    }
}

/// `application/x-www-form-urlencoded` body extractor (the OAuth endpoints, RFC 6749 §3.2,
/// RFC 7662 §2.1, RFC 7009 §2.1) whose rejections are JSON errors like [`ApiJson`]'s:
/// `415 unsupported_media_type`, `413 body_too_large`, `400 invalid_request` (a parameter
/// missing, repeated or of the wrong type).
pub struct ApiForm<T>(pub T);

impl<S, T> FromRequest<S> for ApiForm<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !has_media_type(req.headers(), |m| {
            m.eq_ignore_ascii_case("application/x-www-form-urlencoded")
        }) {
            return Err(unsupported_media_type("application/x-www-form-urlencoded"));
        }
        let bytes = body_bytes(req, state).await?;
        serde_urlencoded::from_bytes(&bytes).map(Self).map_err(|e| {
            AppError(ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "invalid form body: {}",
                    latch_core::error::without_input_values(&e.to_string())
                ),
            ))
        })
    }
}

/// Whether the request's `Content-Type` is `application/json` or `application/*+json`.
fn is_json(headers: &HeaderMap) -> bool {
    has_media_type(headers, |m| {
        m.eq_ignore_ascii_case("application/json")
            || m.get(..12)
                .is_some_and(|p| p.eq_ignore_ascii_case("application/"))
                && m.to_ascii_lowercase().ends_with("+json")
    })
}

/// Whether the request's `Content-Type` (its media type, parameters ignored) passes `ok`.
fn has_media_type(headers: &HeaderMap, ok: impl Fn(&str) -> bool) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim())
        .is_some_and(ok)
}

fn unsupported_media_type(expected: &str) -> AppError {
    AppError(ApiError::new(
        ErrorCode::UnsupportedMediaType,
        format!("the request body must be `{expected}` (content-type header)"),
    ))
}

/// The body, within the route's [`DefaultBodyLimit`](axum::extract::DefaultBodyLimit).
async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, AppError> {
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError(ApiError::new(
                ErrorCode::BodyTooLarge,
                "request body is too large",
            ))
        } else {
            AppError(ApiError::new(
                ErrorCode::InvalidRequest,
                "the request body could not be read",
            ))
        }
    })
}

/// `bytes` as strict JSON ([`latch_core::json::parse`]), integers spelled `2.0` read as `2`,
/// then as a `T`.
fn strict_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    let invalid = |m: String| AppError(ApiError::new(ErrorCode::InvalidRequest, m));
    let mut v = latch_core::json::parse(bytes).map_err(|e| match e {
        StrictJsonError::DuplicateMember(name) => duplicate_member(&name),
        StrictJsonError::Invalid(m) => invalid(format!(
            "invalid json body: {}",
            latch_core::error::without_input_values(&m)
        )),
    })?;
    whole_floats_to_integers(&mut v);
    serde_json::from_value(v).map_err(|e| {
        invalid(format!(
            "invalid json body: {}",
            latch_core::error::without_input_values(&e.to_string())
        ))
    })
}

/// The `400 invalid_request` of a JSON body that repeats member `name` in one object.
pub(crate) fn duplicate_member(name: &str) -> AppError {
    AppError(ApiError::new(
        ErrorCode::InvalidRequest,
        format!(
            "invalid json body: member name {} appears twice in one object",
            latch_core::error::quote(name)
        ),
    ))
}

/// Largest magnitude below which every integer is exactly an `f64`.
const EXACT_F64_INTEGERS: f64 = 9_007_199_254_740_992.0;

/// Rewrites every number with a zero fraction within ±2^53 (`2.0`, `-0.0`) as that integer:
/// JSON (RFC 8259 §6) and JSON Schema's `integer` do not tell `2.0` from `2`, so neither does
/// Latch.
fn whole_floats_to_integers(v: &mut Value) {
    match v {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64())
                && f.fract() == 0.0
                && f.abs() <= EXACT_F64_INTEGERS
            {
                #[expect(
                    clippy::cast_possible_truncation,
                    reason = "a whole number within ±2^53 is exactly an i64"
                )]
                let i = f as i64;
                *v = Value::from(i);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_floats_to_integers),
        Value::Object(m) => m.values_mut().for_each(whole_floats_to_integers),
        _ => {}
    }
}

/// The key binding asked for by a `DPoP` header (RFC 9449 §5) on a `POST path` REST call: the
/// minted credential is bound to the proof's key. No header: an unbound credential.
pub(crate) async fn rest_binding(
    s: &AppState,
    headers: &HeaderMap,
    path: &str,
) -> Result<latch_core::model::TokenBinding, ApiError> {
    crate::http::dpop::one_proof_header(headers)?;
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

/// The query string `raw` read as a `T`, as [`ApiQuery`] reads it (for handlers that check
/// their caller first).
///
/// # Errors
/// `invalid_request` (400).
pub(crate) fn parse_query<T: DeserializeOwned>(raw: Option<&str>) -> Result<T, ApiError> {
    serde_urlencoded::from_str(raw.unwrap_or_default()).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "invalid query string: {}",
                latch_core::error::without_input_values(&e.to_string())
            ),
        )
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
