//! The certificate authorities' public side: `/v1/ssh/ca.pub`, `/v1/ssh/krl`,
//! `/v1/x509/ca.pem`, `/v1/x509/crl`, `/v1/spiffe/bundle`, served from the [`CaPublisher`](latch_core::ports::CaPublisher) ports in [`AppState`].

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

/// The SPIFFE bundle (SPIFFE Trust Domain and Bundle §4) of the SVIDs Latch mints: its X.509
/// CA (`use: "x509-svid"`, from the `x509` provider) and its JWT-SVID keys (`use: "jwt-svid"`,
/// ES256, from `jwt` resources with `format = "jwt_svid"`). A service that verifies SVIDs
/// trusts Latch's trust domains by loading this bundle (e.g. as a SPIRE federated bundle).
#[utoipa::path(get, path = "/v1/spiffe/bundle", responses((status = 200, content_type = "application/json",
    description = "SPIFFE bundle: a JWK set with `x509-svid` and `jwt-svid` entries, `spiffe_refresh_hint` (seconds)")))]
pub(crate) async fn spiffe_bundle(State(s): State<AppState>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        (s.spiffe_bundle)().to_string(),
    )
        .into_response()
}

/// Builds the bundle served at `GET /v1/spiffe/bundle` from the X.509 CA's published PEM
/// certificates and the JWT-SVID keys' JWK set.
pub fn build_spiffe_bundle(
    x509_ca_pem: Option<&str>,
    jwt_svid_jwks: Option<&serde_json::Value>,
) -> serde_json::Value {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut keys = Vec::new();
    if let Some(pem) = x509_ca_pem {
        for der in CertificateDer::pem_slice_iter(pem.as_bytes()).flatten() {
            keys.extend(latch_identity::x509_svid::bundle_entry(der.as_ref()));
        }
    }
    if let Some(set) = jwt_svid_jwks
        .and_then(|j| j.get("keys"))
        .and_then(serde_json::Value::as_array)
    {
        for k in set {
            let mut k = k.clone();
            k["use"] = serde_json::json!("jwt-svid");
            keys.push(k);
        }
    }
    serde_json::json!({"keys": keys, "spiffe_refresh_hint": 300})
}
