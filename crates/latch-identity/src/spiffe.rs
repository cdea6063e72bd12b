//! SPIFFE JWT-SVIDs (SPIFFE JWT-SVID specification) as workload identity: the issuer settings
//! checks, the routing of a token to its trust domain, the header and claim rules the
//! specification adds to JWT's, and the principal.
//!
//! What the verifier shares with OIDC issuers: size and header policy (`none`, `HS*` and
//! header keys refused), signature verification with `jsonwebtoken`, `exp`/`nbf`/`iat` with the
//! injected clock, the rate-limited refresh on an unknown `kid`. What differs: the trust domain
//! of `sub` (a SPIFFE ID) selects the issuer, `typ` must be `JWT` or `JOSE` when present
//! (§2.2), `aud` must hold one of the configured audiences (§3.2), and keys come from the trust
//! bundle's `jwt-svid` entries, refreshed on its `spiffe_refresh_hint`.

use std::time::Duration;

use latch_core::model::{Workload, WorkloadClaims};
use latch_core::{ApiError, ErrorCode};
use serde_json::{Map, Value};

use crate::config::{
    ConfigError, IssuerConfig, JwksSource, Preset, SigningAlgorithm, check_fetch_url,
};
use crate::spiffe_id::{SpiffeId, parse_trust_domain};

/// Bundle refresh when neither the configuration nor the bundle says (seconds).
pub(crate) const DEFAULT_REFRESH_SECS: i64 = 300;

/// A `kind = "spiffe"` issuer's checked settings.
#[derive(Debug)]
pub(crate) struct SpiffeRuntime {
    pub trust_domain: String,
    pub audiences: Vec<String>,
    /// Configured bundle refresh (seconds); `None`: the bundle's hint, else the default.
    pub refresh: Option<i64>,
}

/// Checks a `kind = "spiffe"` issuer's settings.
///
/// # Errors
/// [`ConfigError::BadSpiffe`] for missing settings, a trust domain that is not a SPIFFE trust
/// domain name, no or an empty audience, an algorithm outside [`SigningAlgorithm::JWT_SVID`],
/// a refresh outside 10 s to 1 day, a discovery bundle source; [`ConfigError::BadUrl`] for a
/// `bundle_endpoint` that is not https (or loopback http).
pub(crate) fn check_settings(cfg: &IssuerConfig) -> Result<SpiffeRuntime, ConfigError> {
    let bad = |reason: &str| ConfigError::BadSpiffe {
        name: cfg.name.clone(),
        reason: reason.to_owned(),
    };
    let s = cfg
        .spiffe
        .as_ref()
        .ok_or_else(|| bad("`trust_domain`, `audience` and a bundle source are required"))?;
    parse_trust_domain(&s.trust_domain)
        .map_err(|e| bad(&format!("`trust_domain` is not a spiffe trust domain: {e}")))?;
    if s.audiences.is_empty() || s.audiences.iter().any(String::is_empty) {
        return Err(bad("`audience` must list at least one non-empty audience"));
    }
    if let Some(a) = cfg
        .algorithms
        .iter()
        .find(|a| !SigningAlgorithm::JWT_SVID.contains(a))
    {
        return Err(bad(&format!(
            "algorithm `{a}` is not a JWT-SVID algorithm (RS*, PS*, ES256, ES384)"
        )));
    }
    let refresh = match s.refresh {
        None => None,
        Some(d) if (Duration::from_secs(10)..=Duration::from_secs(86_400)).contains(&d) => {
            Some(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        }
        Some(_) => return Err(bad("`bundle_refresh` must be between 10s and 1d")),
    };
    match &cfg.jwks {
        JwksSource::Discovery => return Err(bad("the trust bundle needs a file or an endpoint")),
        JwksSource::Url(url) => {
            check_fetch_url(url).map_err(|reason| ConfigError::BadUrl {
                name: cfg.name.clone(),
                reason: format!("bundle_endpoint: {reason}"),
            })?;
        }
        JwksSource::File(p) if p.as_os_str().is_empty() => {
            return Err(bad("`bundle_file` must not be empty"));
        }
        JwksSource::File(_) | JwksSource::Static(_) => {}
    }
    Ok(SpiffeRuntime {
        trust_domain: s.trust_domain.clone(),
        audiences: s.audiences.clone(),
        refresh,
    })
}

/// The SPIFFE ID in `sub`, when the token looks like a JWT-SVID (`sub` starts with `spiffe:`,
/// in any case); `None` otherwise.
///
/// # Errors
/// `spiffe_id_invalid` when `sub` looks like a SPIFFE ID but breaks the SPIFFE-ID rules
/// (uppercase scheme or trust domain, `.`/`..` or empty segments, port, user info, query,
/// fragment, more than 2048 bytes). The message names the rule, never the value.
pub(crate) fn subject(claims: &Map<String, Value>) -> Option<Result<SpiffeId, ApiError>> {
    let Some(Value::String(sub)) = claims.get("sub") else {
        return None;
    };
    if !sub
        .get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("spiffe:"))
    {
        return None;
    }
    Some(SpiffeId::parse(sub).map_err(|e| {
        ApiError::new(
            ErrorCode::SpiffeIdInvalid,
            format!("claim `sub` is not a valid spiffe id: {e}"),
        )
    }))
}

/// JWT-SVID §2.2: `typ`, when present, is `JWT` or `JOSE`.
///
/// # Errors
/// `token_malformed` for any other `typ`.
pub(crate) fn check_typ(typ: Option<&str>) -> Result<(), ApiError> {
    match typ {
        None | Some("JWT" | "JOSE") => Ok(()),
        Some(_) => Err(ApiError::new(
            ErrorCode::TokenMalformed,
            "a JWT-SVID's header `typ` must be `JWT` or `JOSE`",
        )),
    }
}

/// The workload a verified JWT-SVID proves: id and subject are the SPIFFE ID, issuer the trust
/// domain's own ID (`spiffe://<trust domain>`), preset `spiffe`, and the claims `spiffe_id`,
/// `trust_domain` and `spiffe_path` (segments in order). No run binding: SPIFFE IDs name
/// workloads, not runs.
///
/// # Errors
/// `spiffe_id_invalid` for the trust domain's own ID (no path): it names no workload.
pub(crate) fn workload(id: &SpiffeId, exp: i64) -> Result<Workload, ApiError> {
    if id.segments().is_empty() {
        return Err(ApiError::new(
            ErrorCode::SpiffeIdInvalid,
            "claim `sub` is a trust domain's own spiffe id, which names no workload",
        ));
    }
    let spiffe_id = id.to_string();
    Ok(Workload {
        id: spiffe_id.clone(),
        issuer: format!("spiffe://{}", id.trust_domain()),
        subject: spiffe_id.clone(),
        preset: Preset::Spiffe.as_str().to_owned(),
        run_binding: None,
        on_behalf_of: None,
        claims: WorkloadClaims {
            spiffe_id: Some(spiffe_id),
            trust_domain: Some(id.trust_domain().to_owned()),
            spiffe_path: id.segments().to_vec(),
            ..WorkloadClaims::default()
        },
        token_expires_at_unix_secs: exp,
    })
}
