//! The certificate authorities' public side: `/v1/ssh/ca.pub`, `/v1/ssh/krl`,
//! `/v1/x509/ca.pem`, `/v1/x509/crl`, served from the [`CaPublisher`](latch_core::ports::CaPublisher) ports in [`AppState`].

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::response::Response;
use latch_core::model::ProviderKind;
use latch_core::{ApiError, ErrorCode};

use crate::http::error::{AppError, ErrorBody};
use crate::http::state::AppState;

fn provider_unavailable(e: latch_core::ports::ProviderError) -> AppError {
    AppError(ApiError::new(
        if e.retryable {
            ErrorCode::StoreUnavailable
        } else {
            ErrorCode::ProviderFailed
        },
        e.message,
    ))
}

fn no_provider(kind: ProviderKind) -> AppError {
    AppError(ApiError::new(
        ErrorCode::NotFound,
        format!("no {kind} provider is configured"),
    ))
}

#[utoipa::path(get, path = "/v1/ssh/ca.pub", responses((status = 200, content_type = "text/plain",
    description = "OpenSSH public keys of the user CA for sshd's `TrustedUserCAKeys` (current first, rotated-out keys while their certificates may be valid)"),
    (status = 404, body = ErrorBody, description = "`not_found`: no ssh provider is configured")))]
pub(crate) async fn ssh_ca(State(s): State<AppState>) -> Result<Response, AppError> {
    let p = s
        .ssh_ca
        .as_ref()
        .ok_or_else(|| no_provider(ProviderKind::Ssh))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        p.ca_public(),
    )
        .into_response())
}

#[utoipa::path(get, path = "/v1/ssh/krl", responses((status = 200, content_type = "application/octet-stream",
    description = "OpenSSH KRL (PROTOCOL.krl) of revoked certificates for sshd's `RevokedKeys`"),
    (status = 404, body = ErrorBody, description = "`not_found`: no ssh provider is configured"),
    (status = 502, body = ErrorBody, description = "`provider_failed`"),
    (status = 503, body = ErrorBody, description = "`store_unavailable`: the revocation list could not be read now")))]
pub(crate) async fn ssh_krl(State(s): State<AppState>) -> Result<Response, AppError> {
    let p = s
        .ssh_ca
        .as_ref()
        .ok_or_else(|| no_provider(ProviderKind::Ssh))?;
    let krl = p.revocation_list().await.map_err(provider_unavailable)?;
    // Never served from an HTTP cache: hosts refresh it on their own schedule (at most the
    // provider's refresh interval), and a cached copy would add its age to the exposure.
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        krl,
    )
        .into_response())
}

#[utoipa::path(get, path = "/v1/x509/ca.pem", responses((status = 200, content_type = "application/x-pem-file",
    description = "PEM certificates of the client CA (current first, rotated-out ones while their certificates may be valid)"),
    (status = 404, body = ErrorBody, description = "`not_found`: no x509 provider is configured")))]
pub(crate) async fn x509_ca(State(s): State<AppState>) -> Result<Response, AppError> {
    let p = s
        .x509_ca
        .as_ref()
        .ok_or_else(|| no_provider(ProviderKind::X509))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-pem-file"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        p.ca_public(),
    )
        .into_response())
}

#[utoipa::path(get, path = "/v1/x509/crl", responses((status = 200, content_type = "application/x-pem-file",
    description = "PEM CRLs (RFC 5280), one per published CA, of revoked client certificates"),
    (status = 404, body = ErrorBody, description = "`not_found`: no x509 provider is configured"),
    (status = 502, body = ErrorBody, description = "`provider_failed`"),
    (status = 503, body = ErrorBody, description = "`store_unavailable`: the revocation list could not be read now")))]
pub(crate) async fn x509_crl(State(s): State<AppState>) -> Result<Response, AppError> {
    let p = s
        .x509_ca
        .as_ref()
        .ok_or_else(|| no_provider(ProviderKind::X509))?;
    let crl = p.revocation_list().await.map_err(provider_unavailable)?;
    // Signed per request; never served from an HTTP cache, so what a relying party holds is
    // at most one CRL validity window (the shortest `max_ttl` of the CA's resources) old.
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-pem-file"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        crl,
    )
        .into_response())
}
