//! Pre-signature parsing of a compact JWS (RFC 7515 §7.1): shape, header policy, unverified
//! `iss`. Nothing read here is trusted except to choose which checks to run next.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latch_core::error::quote;
use latch_core::{ApiError, ErrorCode};
use serde_json::{Map, Value};

use crate::config::SigningAlgorithm;

/// Header parameters that carry key material or a key location (RFC 7515 §4.1.2–4.1.6).
const FORBIDDEN_HEADER_KEYS: [&str; 4] = ["jwk", "jku", "x5c", "x5u"];

/// A token that passed the shape and header checks; its signature is not yet verified.
#[derive(Debug)]
pub(crate) struct Unverified {
    pub alg: SigningAlgorithm,
    pub kid: Option<String>,
    /// The header's `typ` (RFC 7515 §4.1.9), if any.
    pub typ: Option<String>,
    /// The payload, parsed with duplicate members rejected.
    pub claims: Map<String, Value>,
}

fn malformed(msg: &str) -> ApiError {
    ApiError::new(ErrorCode::TokenMalformed, msg)
}

fn decode_object(segment: &str, what: &str) -> Result<Map<String, Value>, ApiError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| malformed(&format!("token {what} is not base64url")))?;
    // Unique member names at every depth (RFC 7515 §5.2, RFC 7519 §4): a nested duplicate
    // (two `uid`s in `kubernetes.io.serviceaccount`) must not let two parsers see two principals.
    match latch_core::json::parse(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(malformed(&format!("token {what} is not a json object"))),
        Err(latch_core::json::StrictJsonError::DuplicateMember(name)) => Err(malformed(&format!(
            "token {what} repeats the member name {}",
            quote(&name)
        ))),
        Err(_) => Err(malformed(&format!("token {what} is not json"))),
    }
}

/// Steps 1 and 2 of verification: size, shape, header policy.
///
/// # Errors
/// `token_too_large`, `token_malformed`, `alg_not_allowed`, `header_key_forbidden`.
pub(crate) fn parse(token: &str, max_bytes: usize) -> Result<Unverified, ApiError> {
    if token.len() > max_bytes {
        return Err(ApiError::new(
            ErrorCode::TokenTooLarge,
            format!("token is larger than {max_bytes} bytes"),
        ));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("token is not a compact jws of three segments"));
    };
    if h.is_empty() || p.is_empty() {
        return Err(malformed("token has an empty segment"));
    }
    let header = decode_object(h, "header")?;
    let claims = decode_object(p, "payload")?;
    if URL_SAFE_NO_PAD.decode(s).is_err() {
        return Err(malformed("token signature is not base64url"));
    }

    let alg = match header.get("alg") {
        Some(Value::String(a)) => a,
        Some(_) => return Err(malformed("token header `alg` is not a string")),
        None => return Err(malformed("token header has no `alg`")),
    };
    if alg.eq_ignore_ascii_case("none") {
        return Err(ApiError::new(
            ErrorCode::AlgNotAllowed,
            "unsigned tokens (`alg` `none`) are not accepted",
        ));
    }
    if alg.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("hs")) {
        return Err(ApiError::new(
            ErrorCode::AlgNotAllowed,
            format!("symmetric algorithm {} is not accepted", quote(alg)),
        ));
    }
    let Some(alg) = SigningAlgorithm::from_jose(alg) else {
        return Err(ApiError::new(
            ErrorCode::AlgNotAllowed,
            format!("algorithm {} is not accepted", quote(alg)),
        ));
    };
    if let Some(k) = FORBIDDEN_HEADER_KEYS
        .iter()
        .find(|k| header.contains_key(**k))
    {
        return Err(ApiError::new(
            ErrorCode::HeaderKeyForbidden,
            format!("token header carries `{k}`; keys are taken only from the issuer's jwks"),
        ));
    }
    if header.contains_key("crit") {
        return Err(malformed(
            "token header lists critical extensions, none of which are supported",
        ));
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(malformed("token header `kid` is not a string")),
    };
    let typ = match header.get("typ") {
        None => None,
        Some(Value::String(t)) => Some(t.clone()),
        Some(_) => return Err(malformed("token header `typ` is not a string")),
    };
    Ok(Unverified {
        alg,
        kid,
        typ,
        claims,
    })
}
