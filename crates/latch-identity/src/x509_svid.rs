//! X.509-SVIDs (SPIFFE X.509-SVID specification) presented as TLS client certificates: the
//! leaf's shape, its SPIFFE ID, and the trust domain's X.509 authorities from its bundle.
//!
//! The chain itself (signatures, validity, path to one of the trust domain's authorities) is
//! verified by `rustls`'s WebPKI verifier in the server's listener; this module decides what
//! a leaf must look like before that verifier is even asked, and which trust domain's
//! authorities it is asked with.
//!
//! # Rules (X.509-SVID §2, §4; some stricter than the specification, marked)
//! * exactly one subject alternative name, and it is a URI holding a valid SPIFFE ID with a
//!   path (§2: "exactly one URI SAN"). **Stricter:** the specification allows DNS and other SAN
//!   forms beside it; Latch refuses them, so one certificate can never stand for two names;
//! * `basicConstraints` `cA` is false or absent (§4.1: a leaf is not a CA); a CA certificate
//!   presented as a client certificate is refused;
//! * `keyUsage` is present, includes `digitalSignature` and neither `keyCertSign` nor
//!   `cRLSign` (§4.3);
//! * the SPIFFE ID's trust domain selects the authorities the chain must reach, so a
//!   certificate signed by one trust domain's CA cannot claim another's IDs.

use std::time::Duration;

use latch_core::{ApiError, ErrorCode};
use serde_json::Value;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::config::{IssuerConfig, IssuerKind, JwksSource};
use crate::spiffe_id::SpiffeId;

/// What a checked X.509-SVID leaf proves: its SPIFFE ID and when it stops being valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvidLeaf {
    /// The SPIFFE ID of its one URI SAN.
    pub spiffe_id: SpiffeId,
    /// `notAfter`, Unix seconds.
    pub not_after_unix_secs: i64,
}

fn refused(reason: &str) -> ApiError {
    ApiError::new(
        ErrorCode::SpiffeIdInvalid,
        format!("client certificate is not an x509-svid: {reason}"),
    )
}

/// Checks a leaf certificate (DER) against the rules of the module documentation.
///
/// # Errors
/// `spiffe_id_invalid` naming the rule the certificate breaks (never its content).
pub fn check_leaf(der: &[u8]) -> Result<SvidLeaf, ApiError> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|_| refused("not a der certificate"))?;
    if !rest.is_empty() {
        return Err(refused("trailing bytes after the certificate"));
    }
    let mut uri = None;
    let mut key_usage = None;
    let mut is_ca = false;
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                if uri.is_some() || san.general_names.len() != 1 {
                    return Err(refused("it must have exactly one subject alternative name"));
                }
                match &san.general_names[0] {
                    GeneralName::URI(u) => uri = Some((*u).to_owned()),
                    _ => return Err(refused("its subject alternative name must be a uri")),
                }
            }
            ParsedExtension::BasicConstraints(bc) => is_ca = bc.ca,
            ParsedExtension::KeyUsage(ku) => key_usage = Some(*ku),
            ParsedExtension::UnsupportedExtension { .. } | ParsedExtension::ParseError { .. }
                if ext.critical =>
            {
                return Err(refused(
                    "it has a critical extension latch does not understand",
                ));
            }
            _ => {}
        }
    }
    if is_ca {
        return Err(refused("it is a ca certificate"));
    }
    let ku = key_usage.ok_or_else(|| refused("it has no key usage"))?;
    if !ku.digital_signature() || ku.key_cert_sign() || ku.crl_sign() {
        return Err(refused(
            "its key usage must include digitalSignature and not keyCertSign or cRLSign",
        ));
    }
    let uri = uri.ok_or_else(|| refused("it has no uri subject alternative name"))?;
    let spiffe_id =
        SpiffeId::parse(&uri).map_err(|e| refused(&format!("its uri is not a spiffe id: {e}")))?;
    if spiffe_id.segments().is_empty() {
        return Err(refused(
            "its spiffe id names a trust domain, not a workload",
        ));
    }
    Ok(SvidLeaf {
        spiffe_id,
        not_after_unix_secs: cert.validity().not_after.timestamp(),
    })
}

/// A trust domain whose X.509-SVIDs the listener accepts: where its bundle is, and how often to
/// read it again.
#[derive(Debug, Clone)]
pub struct X509TrustSource {
    /// The trust domain name (`example.org`).
    pub trust_domain: String,
    /// Its bundle (a file or an endpoint): the same SPIFFE bundle its JWT-SVID keys come from.
    pub bundle: JwksSource,
    /// How often to read the bundle again, when configured (`bundle_refresh`); else the
    /// bundle's `spiffe_refresh_hint`, else 5 minutes (as for its JWT-SVID keys).
    pub refresh: Option<Duration>,
}

/// What a bundle read yields for the listener: its X.509 authorities (DER) and when to read it
/// again.
#[derive(Debug, Clone)]
pub struct X509Authorities {
    /// The `x5c[0]` of every `x509-svid` entry; empty when the bundle has none (the trust
    /// domain's X.509-SVIDs are then refused).
    pub ders: Vec<Vec<u8>>,
    /// The configured refresh, else the bundle's hint (30 s to 1 day), else 5 minutes.
    pub next_read: Duration,
}

/// The trust domains of the `kind = "spiffe"` issuers, for the listener's client certificates.
pub fn x509_trust_sources(issuers: &[IssuerConfig]) -> Vec<X509TrustSource> {
    issuers
        .iter()
        .filter(|i| i.kind == IssuerKind::Spiffe)
        .filter_map(|i| {
            let s = i.spiffe.as_ref()?;
            Some(X509TrustSource {
                trust_domain: s.trust_domain.clone(),
                bundle: i.jwks.clone(),
                refresh: s.refresh,
            })
        })
        .collect()
}

/// Reads the X.509 authorities (DER certificates) of a SPIFFE bundle: the `x5c` first entry of
/// every key with `"use": "x509-svid"` (SPIFFE Trust Domain and Bundle §4.2.1).
///
/// # Errors
/// A lowercase, secret-free reason: unreadable source, not a JWK set, a bad `x5c`.
pub async fn load_x509_authorities(
    source: &X509TrustSource,
    http: &reqwest::Client,
    timeout: Duration,
) -> Result<X509Authorities, String> {
    let doc = crate::jwks::bundle_document(&source.bundle, http, timeout).await?;
    let ders = x509_authorities(&doc)?;
    let (_, hint) = crate::jwks::bundle_keys(&doc)?;
    let next_read = source.refresh.unwrap_or_else(|| {
        Duration::from_secs(
            u64::try_from(hint.unwrap_or(crate::spiffe::DEFAULT_REFRESH_SECS)).unwrap_or(300),
        )
    });
    Ok(X509Authorities { ders, next_read })
}

fn x509_authorities(doc: &Value) -> Result<Vec<Vec<u8>>, String> {
    use base64::Engine;
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| "trust bundle is not a jwk set".to_owned())?;
    let mut out = Vec::new();
    for k in keys {
        if k.get("use").and_then(Value::as_str) != Some("x509-svid") {
            continue;
        }
        let der = k
            .get("x5c")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .ok_or_else(|| "an x509-svid entry has no `x5c`".to_owned())?;
        let der = base64::engine::general_purpose::STANDARD
            .decode(der)
            .map_err(|_| "an x509-svid entry's `x5c` is not base64".to_owned())?;
        out.push(der);
    }
    Ok(out)
}

/// A SPIFFE bundle entry for an X.509 authority (SPIFFE Trust Domain and Bundle §4.2.1):
/// `{"use": "x509-svid", "kty": "EC", "crv": "P-256", "x", "y", "x5c": [<DER, base64>]}`.
/// `None` for a certificate that does not parse or whose key is not an uncompressed P-256
/// point (the only kind Latch's X.509 CA has).
pub fn bundle_entry(der: &[u8]) -> Option<Value> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let spki = cert.public_key();
    let point = spki.subject_public_key.data.as_ref();
    let p256 = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .is_some_and(|oid| oid.to_id_string() == "1.2.840.10045.3.1.7");
    if !p256 || point.len() != 65 || point[0] != 4 {
        return None;
    }
    Some(serde_json::json!({
        "use": "x509-svid", "kty": "EC", "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..]),
        "x5c": [STANDARD.encode(der)],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_entries_other_than_x509_svid_are_skipped() {
        let doc = serde_json::json!({"keys": [
            {"use": "jwt-svid", "kty": "EC"},
            {"use": "x509-svid", "x5c": ["AAEC"]},
        ]});
        assert_eq!(x509_authorities(&doc).unwrap(), vec![vec![0u8, 1, 2]]);
        let bad = serde_json::json!({"keys": [{"use": "x509-svid"}]});
        assert!(x509_authorities(&bad).is_err());
    }

    #[test]
    fn garbage_is_not_a_leaf() {
        let e = check_leaf(b"not a certificate").unwrap_err();
        assert_eq!(e.code, ErrorCode::SpiffeIdInvalid);
    }
}
