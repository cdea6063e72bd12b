//! Fetching JWK Sets (RFC 7517 §5; OpenID Connect Discovery 1.0 §4) and choosing a key.

use std::path::Path;
use std::time::Duration;

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use serde_json::Value;

use crate::config::{JwksSource, SigningAlgorithm, check_fetch_url};

/// Largest discovery document or JWKS accepted (1 MiB).
pub(crate) const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Keeps the keys usable for signature verification: asymmetric, of a supported type, and not
/// restricted to other uses. Keys that do not parse are skipped, so one exotic key does not
/// make a whole issuer unusable.
pub(crate) fn usable_keys(set: &Value) -> Result<Vec<Jwk>, String> {
    let keys = set
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| "jwks has no `keys` array".to_owned())?;
    Ok(keys
        .iter()
        .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
        .filter(is_signature_key)
        .collect())
}

pub(crate) fn usable_keys_of(set: &JwkSet) -> Vec<Jwk> {
    set.keys
        .iter()
        .filter(|k| is_signature_key(k))
        .cloned()
        .collect()
}

fn is_signature_key(k: &Jwk) -> bool {
    let type_ok = matches!(
        k.algorithm,
        AlgorithmParameters::RSA(_)
            | AlgorithmParameters::EllipticCurve(_)
            | AlgorithmParameters::OctetKeyPair(_)
    );
    let use_ok = matches!(
        k.common.public_key_use,
        None | Some(PublicKeyUse::Signature)
    );
    let ops_ok = k
        .common
        .key_operations
        .as_ref()
        .is_none_or(|ops| ops.contains(&KeyOperations::Verify));
    type_ok && use_ok && ops_ok
}

/// Whether `k` is of the type `alg` needs (RFC 7518 §3.3–3.5, RFC 8037 §3.1).
pub(crate) fn fits(k: &Jwk, alg: SigningAlgorithm) -> bool {
    use SigningAlgorithm as A;
    match (&k.algorithm, alg) {
        (
            AlgorithmParameters::RSA(_),
            A::RS256 | A::RS384 | A::RS512 | A::PS256 | A::PS384 | A::PS512,
        ) => true,
        (AlgorithmParameters::EllipticCurve(p), SigningAlgorithm::ES256) => {
            p.curve == EllipticCurve::P256
        }
        (AlgorithmParameters::EllipticCurve(p), SigningAlgorithm::ES384) => {
            p.curve == EllipticCurve::P384
        }
        (AlgorithmParameters::OctetKeyPair(p), SigningAlgorithm::EdDSA) => {
            p.curve == EllipticCurve::Ed25519
        }
        _ => false,
    }
}

/// Whether the JWK's own `alg`, if any, allows `alg`.
pub(crate) fn alg_matches(k: &Jwk, alg: SigningAlgorithm) -> bool {
    k.common
        .key_algorithm
        .is_none_or(|a| a == KeyAlgorithm::from(alg.to_jsonwebtoken()))
}

/// The outcome of looking a key up.
pub(crate) enum Selection<'a> {
    Found(&'a Jwk),
    /// No key with that kid (or, without kid, no key of the right type).
    NotFound,
    /// Without kid, several keys of the right type.
    Ambiguous,
    /// A key with that kid exists but cannot verify `alg`.
    WrongType,
}

pub(crate) fn select<'a>(
    keys: &'a [Jwk],
    alg: SigningAlgorithm,
    kid: Option<&str>,
) -> Selection<'a> {
    match kid {
        Some(kid) => {
            let mut named = keys
                .iter()
                .filter(|k| k.common.key_id.as_deref() == Some(kid))
                .peekable();
            if named.peek().is_none() {
                return Selection::NotFound;
            }
            match named.find(|k| fits(k, alg)) {
                Some(k) => Selection::Found(k),
                None => Selection::WrongType,
            }
        }
        None => {
            let mut fitting = keys.iter().filter(|k| fits(k, alg));
            match (fitting.next(), fitting.next()) {
                (Some(k), None) => Selection::Found(k),
                (None, _) => Selection::NotFound,
                (Some(_), Some(_)) => Selection::Ambiguous,
            }
        }
    }
}

/// The `use` of a SPIFFE bundle key that verifies JWT-SVIDs (SPIFFE Trust Domain and Bundle
/// §4.2.2).
const JWT_SVID_USE: &str = "jwt-svid";

/// Keeps a SPIFFE trust bundle's JWT authorities: keys whose `use` is `jwt-svid`, with a `kid`
/// (§4.2.2 requires it), asymmetric and of a supported type. X.509 authorities (`x509-svid`)
/// and keys without `use` are ignored, as are keys that do not parse.
fn jwt_svid_keys(keys: &[Value]) -> Vec<Jwk> {
    keys.iter()
        .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
        .filter(is_jwt_svid_key)
        .collect()
}

fn is_jwt_svid_key(k: &Jwk) -> bool {
    let use_ok =
        matches!(&k.common.public_key_use, Some(PublicKeyUse::Other(u)) if u == JWT_SVID_USE);
    let type_ok = matches!(
        k.algorithm,
        AlgorithmParameters::RSA(_) | AlgorithmParameters::EllipticCurve(_)
    );
    let ops_ok = k
        .common
        .key_operations
        .as_ref()
        .is_none_or(|ops| ops.contains(&KeyOperations::Verify));
    use_ok && type_ok && ops_ok && k.common.key_id.as_deref().is_some_and(|id| !id.is_empty())
}

/// Shortest and longest honoured `spiffe_refresh_hint` (seconds).
const HINT_BOUNDS: (i64, i64) = (30, 86_400);

/// A SPIFFE trust bundle's JWT authorities and its `spiffe_refresh_hint` (seconds, within
/// 30 s to 1 day), if it gives a positive integer one (SPIFFE Trust Domain and Bundle §4.1.2).
pub(crate) fn bundle_keys(doc: &Value) -> Result<(Vec<Jwk>, Option<i64>), String> {
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| "trust bundle has no `keys` array".to_owned())?;
    let hint = doc
        .get("spiffe_refresh_hint")
        .and_then(Value::as_i64)
        .filter(|h| *h > 0)
        .map(|h| h.clamp(HINT_BOUNDS.0, HINT_BOUNDS.1));
    Ok((jwt_svid_keys(keys), hint))
}

/// What a key source yields: the keys, and how long to use them when the source says
/// (a SPIFFE bundle's refresh hint, seconds).
pub(crate) struct Loaded {
    pub keys: Vec<Jwk>,
    pub refresh_hint: Option<i64>,
}

/// Loads a SPIFFE trust bundle from `source` (`File`, `Url` or `Static`; never discovery).
/// Errors are lowercase and secret-free.
pub(crate) async fn load_bundle(
    source: &JwksSource,
    http: &reqwest::Client,
    timeout: Duration,
) -> Result<Loaded, String> {
    let doc = bundle_document(source, http, timeout).await?;
    let (keys, refresh_hint) = bundle_keys(&doc)?;
    Ok(Loaded { keys, refresh_hint })
}

/// Reads a SPIFFE trust bundle document (a JWK set with SPIFFE members) from `source`.
/// Errors are lowercase and secret-free.
pub(crate) async fn bundle_document(
    source: &JwksSource,
    http: &reqwest::Client,
    timeout: Duration,
) -> Result<Value, String> {
    match source {
        JwksSource::Static(set) => {
            serde_json::to_value(set).map_err(|_| "trust bundle is not a jwk set".to_owned())
        }
        JwksSource::File(path) => read_file(path).await,
        JwksSource::Url(url) => get_json(http, url, timeout).await,
        JwksSource::Discovery => Err("a trust bundle is not found by discovery".to_owned()),
    }
}

/// Loads the current keys from `source`. Errors are lowercase and secret-free.
pub(crate) async fn load(
    source: &JwksSource,
    issuer: &str,
    http: &reqwest::Client,
    timeout: Duration,
) -> Result<Vec<Jwk>, String> {
    match source {
        JwksSource::Static(set) => Ok(usable_keys_of(set)),
        JwksSource::File(path) => usable_keys(&read_file(path).await?),
        JwksSource::Url(url) => usable_keys(&get_json(http, url, timeout).await?),
        JwksSource::Discovery => {
            let url = discovery_url(issuer);
            let doc = get_json(http, &url, timeout).await?;
            // OpenID Connect Discovery 1.0 §4.3: the document's issuer must be ours, exactly.
            if doc.get("issuer").and_then(Value::as_str) != Some(issuer) {
                return Err("discovery document names a different issuer".to_owned());
            }
            let jwks_uri = doc
                .get("jwks_uri")
                .and_then(Value::as_str)
                .ok_or_else(|| "discovery document has no `jwks_uri`".to_owned())?;
            check_fetch_url(jwks_uri)?;
            usable_keys(&get_json(http, jwks_uri, timeout).await?)
        }
    }
}

/// `{issuer}/.well-known/openid-configuration` (OpenID Connect Discovery 1.0 §4.1).
pub(crate) fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

async fn read_file(path: &Path) -> Result<Value, String> {
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| format!("cannot read jwks file `{}`: {}", path.display(), e.kind()))?;
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(format!(
            "jwks file `{}` is larger than {MAX_DOCUMENT_BYTES} bytes",
            path.display()
        ));
    }
    latch_core::json::parse(&bytes)
        .map_err(|e| format!("jwks file `{}` is not valid json ({e})", path.display()))
}

async fn get_json(http: &reqwest::Client, url: &str, timeout: Duration) -> Result<Value, String> {
    let shown = latch_core::error::quote(url);
    let mut resp = http
        .get(url)
        .timeout(timeout)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("cannot fetch {shown}: {}", describe(&e)))?;
    if !resp.status().is_success() {
        return Err(format!(
            "fetching {shown} returned http {}",
            resp.status().as_u16()
        ));
    }
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
    {
        return Err(format!("{shown} is larger than {MAX_DOCUMENT_BYTES} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("cannot read {shown}: {}", describe(&e)))?
    {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("{shown} is larger than {MAX_DOCUMENT_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    // Unique member names at every depth: a key set that means two things to two parsers is
    // refused.
    latch_core::json::parse(&body).map_err(|e| format!("{shown} is not valid json ({e})"))
}

fn describe(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_redirect() {
        "too many redirects"
    } else {
        "request failed"
    }
}
