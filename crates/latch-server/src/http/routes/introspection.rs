//! OAuth token introspection (RFC 7662) and revocation (RFC 7009) for resource servers:
//! `/v1/oauth/introspect`, `/v1/oauth/revoke`, with client authentication.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::response::Response;
use axum::{Extension, Json};
use latch_core::broker::Introspection;
use latch_core::model::Workload;
use latch_core::{ApiError, ErrorCode};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::http::error::{AppError, OAuthClientError};
use crate::http::extract::{ApiForm, bearer, finish};
use crate::http::state::{AppState, ReqMeta};

/// `application/x-www-form-urlencoded` body of RFC 7662 / RFC 7009 calls.
#[derive(Deserialize, ToSchema)]
pub struct TokenForm {
    /// The token.
    pub token: String,
    /// Ignored hint.
    #[serde(default)]
    pub token_type_hint: Option<String>,
    /// Latch extension for resource servers: the `DPoP` proof that came with the token. When
    /// given, the token is active only if the proof verifies against the token's `cnf.jkt`,
    /// `ath`, `htm` and `htu` (both required with a proof), and its `jti` was not used
    /// before. Required for every DPoP-bound token (`cnf.jkt`): without it such a token is
    /// inactive. Relayed proofs need no server nonce.
    #[serde(default)]
    pub dpop_proof: Option<String>,
    /// Method of the request the resource server received (with `dpop_proof`).
    #[serde(default)]
    pub htm: Option<String>,
    /// URL of the request the resource server received (with `dpop_proof`).
    #[serde(default)]
    pub htu: Option<String>,
}

impl std::fmt::Debug for TokenForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenForm")
            .field("token", &"<redacted>")
            .field("token_type_hint", &self.token_type_hint)
            .finish()
    }
}

/// Undoes the `application/x-www-form-urlencoded` encoding (`+` is a space, `%XX` a byte) that
/// RFC 6749 §2.3.1 applies to a client id or secret before HTTP Basic; `None` when the bytes
/// are not UTF-8.
fn form_decode(s: &str) -> Option<String> {
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(std::borrow::Cow::into_owned)
}

/// The client id and secret of an HTTP Basic `Authorization` header (RFC 7617), as sent.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine;
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (id, secret) = raw.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

/// The configured introspection client the request authenticates as (HTTP Basic), if any.
///
/// RFC 6749 §2.3.1: the client form-urlencodes its id and secret before HTTP Basic, so they are
/// decoded first (what oauth4webapi and other OAuth clients send). Clients that put them in
/// Basic as they are (`curl -u`, RFC 7617 alone) are understood too: a secret that holds `+` or
/// `%` is tried both ways. Either way the caller must know the secret; the comparison of
/// digests is constant-time.
fn client_auth(s: &AppState, headers: &HeaderMap) -> Option<String> {
    let (raw_id, raw_secret) = basic_credentials(headers)?;
    let mut candidates = Vec::with_capacity(2);
    if let (Some(id), Some(secret)) = (form_decode(&raw_id), form_decode(&raw_secret)) {
        candidates.push((id, secret));
    }
    if !candidates
        .iter()
        .any(|(id, secret)| *id == raw_id && *secret == raw_secret)
    {
        candidates.push((raw_id, raw_secret));
    }
    let mut ok = None;
    for (id, secret) in &candidates {
        let got = hex::encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            secret.as_bytes(),
        ));
        for c in s.introspection_clients.iter() {
            let same = aws_lc_rs::constant_time::verify_slices_are_equal(
                got.as_bytes(),
                c.secret_sha256.to_ascii_lowercase().as_bytes(),
            )
            .is_ok();
            if c.id == *id && same {
                ok = Some(c.id.clone());
            }
        }
    }
    ok
}

/// Whether the caller presents HTTP Basic client credentials (right or wrong).
fn presents_basic(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
}

/// The `401` of failed client authentication, counted (and audited, aggregated) against the
/// caller's source like every failed authentication.
async fn client_auth_failed(s: &AppState, m: &ReqMeta) -> Response {
    let e = ApiError::new(ErrorCode::ClientAuthFailed, "client authentication failed");
    if let Err(store) = s.broker.record_auth_failure(&m.ctx(), &e).await {
        return AppError(store).into_response();
    }
    metrics::counter!("latch_auth_failures_total", "code" => e.code.as_str()).increment(1);
    let mut r = AppError(e).into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"latch\""),
    );
    r
}

#[utoipa::path(post, path = "/v1/oauth/introspect", request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    security(("basic" = [])), responses((status = 200, body = Introspection),
              (status = 400, body = OAuthClientError, description = "`invalid_request`: the form is malformed (a parameter given twice, `dpop_proof` without `htm`/`htu`)"),
              (status = 401, body = OAuthClientError, description = "`invalid_client` (`latch_code` `client_auth_failed`): client authentication failed; `WWW-Authenticate: Basic realm=\"latch\"`"),
              (status = 408, body = OAuthClientError, description = "`temporarily_unavailable` (`latch_code` `request_timeout`)"),
              (status = 413, body = OAuthClientError, description = "`invalid_request` (`latch_code` `body_too_large`)"),
              (status = 415, body = OAuthClientError, description = "`invalid_request` (`latch_code` `unsupported_media_type`): the body is not `application/x-www-form-urlencoded`"),
              (status = 429, body = OAuthClientError, description = "`temporarily_unavailable` (`latch_code` `rate_limited`): too many failed authentications from this source; see `Retry-After`"),
              (status = 500, body = OAuthClientError, description = "`temporarily_unavailable` (`latch_code` `internal`)"),
              (status = 503, body = OAuthClientError, description = "`temporarily_unavailable` (`latch_code` `store_unavailable`)")))]
pub(crate) async fn introspect(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    ApiForm(form): ApiForm<TokenForm>,
) -> Response {
    if let Err(e) = s.broker.check_auth_limit(&m.ctx()) {
        return AppError(e).into_response();
    }
    if client_auth(&s, &headers).is_none() {
        return client_auth_failed(&s, &m).await;
    }
    // A relayed proof is only meaningful with the request it was made for.
    if form.dpop_proof.is_some() && (form.htm.is_none() || form.htu.is_none()) {
        return AppError(ApiError::new(
            ErrorCode::InvalidRequest,
            "`dpop_proof` needs `htm` and `htu` of the request it came with",
        ))
        .into_response();
    }
    let mut i = s.broker.introspect(&form.token).await;
    if i.active {
        let jkt = i
            .cnf
            .as_ref()
            .and_then(|c| c.get("jkt"))
            .and_then(|j| j.as_str())
            .map(str::to_owned);
        let verified = match (&form.dpop_proof, &jkt) {
            (Some(proof), Some(jkt)) => s
                .dpop
                .verify(
                    proof,
                    crate::http::dpop::ProofCheck {
                        htm: form.htm.as_deref().unwrap_or(""),
                        htu: form.htu.as_deref().unwrap_or(""),
                        access_token: Some(&form.token),
                        expected_jkt: Some(jkt),
                        relayed: true,
                    },
                )
                .await
                .map_err(|e| tracing::info!(code = %e.code, error = %e.message, "introspection: dpop proof refused"))
                .is_ok(),
            // A bound token is only active for a holder that proves its key.
            (None, Some(_)) => false,
            // A proof for an unbound token proves nothing; a resource that requires binding
            // never accepts an unbound token.
            (Some(_), None) | (None, None) => !i.requires_dpop,
        };
        if !verified {
            i = Introspection::default();
        }
    }
    ([(header::CACHE_CONTROL, "no-store")], Json(i)).into_response()
}

#[utoipa::path(post, path = "/v1/oauth/revoke", request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    security(("basic" = []), ("bearer" = [])), responses((status = 200, description = "revoked, or unknown (RFC 7009 §2.2)"),
              (status = 400, body = OAuthClientError, description = "`invalid_request`: the form is malformed (a parameter given twice, `dpop_proof` without `htm`/`htu`)"),
              (status = 401, body = OAuthClientError, description = "`invalid_client` (`latch_code` `client_auth_failed`): client authentication failed; `WWW-Authenticate: Basic realm=\"latch\"`"),
              (status = 408, body = OAuthClientError, description = "`temporarily_unavailable` (`latch_code` `request_timeout`)"),
              (status = 413, body = OAuthClientError, description = "`invalid_request` (`latch_code` `body_too_large`)"),
              (status = 415, body = OAuthClientError, description = "`invalid_request` (`latch_code` `unsupported_media_type`): the body is not `application/x-www-form-urlencoded`"),
              (status = 429, body = OAuthClientError, description = "`temporarily_unavailable` (`latch_code` `rate_limited`): too many failed authentications from this source; see `Retry-After`"),
              (status = 500, body = OAuthClientError, description = "`temporarily_unavailable` (`latch_code` `internal`)"),
              (status = 503, body = OAuthClientError, description = "`temporarily_unavailable` (`latch_code` `store_unavailable`)")))]
pub(crate) async fn oauth_revoke(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    ApiForm(form): ApiForm<TokenForm>,
) -> Response {
    let ctx = m.ctx();
    let owner: Option<Workload>;
    if let Err(e) = s.broker.check_auth_limit(&ctx) {
        return AppError(e).into_response();
    }
    let actor = if presents_basic(&headers) {
        let Some(c) = client_auth(&s, &headers) else {
            return client_auth_failed(&s, &m).await;
        };
        owner = None;
        format!("client:{c}")
    } else {
        match s.broker.authenticate_workload(&ctx, bearer(&headers)).await {
            Ok(w) => {
                let id = w.id.clone();
                owner = Some(w);
                id
            }
            Err(e) if e.code == ErrorCode::RateLimited => return AppError(e).into_response(),
            // Already recorded by the broker.
            Err(_) => {
                let mut r = AppError(ApiError::new(
                    ErrorCode::ClientAuthFailed,
                    "client authentication failed",
                ))
                .into_response();
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"latch\""),
                );
                return r;
            }
        }
    };
    let r = s
        .broker
        .revoke_by_value(&ctx, &form.token, &actor, owner.as_ref())
        .await;
    match finish(&s, &ctx, r).await {
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => e.into_response(),
    }
}
