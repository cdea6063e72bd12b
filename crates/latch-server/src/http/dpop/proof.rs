//! The DPoP proof as a JWS (RFC 7515 compact serialization): its header, key, signature and
//! claims, parsed strictly.
//!
//! The header and the claims are parsed with [`latch_core::json`] (duplicate member names
//! refused at any depth, RFC 7515 §5.2), so the proof means one thing to Latch and to any other
//! party that reads it. The `alg` names are those of RFC 7518 §3.1 (`ES256`, `ES384`, `RS256`,
//! `PS256`, `EdDSA`) and the fully-specified `Ed25519` of RFC 9864 §2.2, which names the same
//! signature as `EdDSA` over an Ed25519 key. The signature is verified by the `jsonwebtoken`
//! library ([`jsonwebtoken::crypto::verify`]), never by hand.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use latch_core::json::StrictJsonError;
use latch_core::{ApiError, ErrorCode};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Algorithms accepted in DPoP proofs (asymmetric only; RFC 9449 §4.3 check 5), by the name a
/// proof's `alg` carries: the RFC 7518 names and RFC 9864's fully-specified `Ed25519`.
pub const DPOP_ALGORITHMS: &[&str] = &["Ed25519", "EdDSA", "ES256", "ES384", "RS256", "PS256"];

/// Longest accepted proof (bytes), so a hostile header is not parsed.
const MAX_PROOF_BYTES: usize = 8 * 1024;

/// Header members a proof must not carry: key locations and certificate chains (the key is the
/// `jwk` and nothing else), and `crit`/`b64` (no JWS extension is understood here, so a proof
/// that needs one is refused, RFC 7515 §4.1.11, RFC 7797 §6). Other members are ignored.
const REFUSED_HEADER_MEMBERS: &[&str] = &["jku", "x5c", "x5u", "crit", "b64"];

/// The claims a proof must carry (RFC 9449 §4.2); `ath` and `nonce` when the request needs them.
#[derive(Debug, Deserialize)]
pub(super) struct ProofClaims {
    pub(super) jti: String,
    pub(super) htm: String,
    pub(super) htu: String,
    pub(super) iat: i64,
    #[serde(default)]
    pub(super) ath: Option<String>,
    #[serde(default)]
    pub(super) nonce: Option<String>,
}

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::DpopProofInvalid, msg)
}

/// What a strict parse refused, in words that name the part (`header` or `claims`) and, for a
/// repeated member, its name (quoted, at most 64 characters).
fn strict_error(part: &str, e: &StrictJsonError) -> ApiError {
    match e {
        StrictJsonError::DuplicateMember(name) => invalid(format!(
            "dpop proof {part}: member {} appears twice",
            latch_core::error::quote(name)
        )),
        StrictJsonError::Invalid(_) => match part {
            "claims" => invalid("dpop proof claims are missing or malformed (jti, htm, htu, iat)"),
            _ => invalid(format!("dpop proof {part} is not a json object")),
        },
    }
}

/// The `jsonwebtoken` algorithm of an accepted `alg` name, with the key type (and curve) it
/// needs; `None` for any other name.
fn algorithm(alg: &str) -> Option<(Algorithm, &'static str, Option<&'static str>)> {
    Some(match alg {
        // RFC 9864 §2.2: `Ed25519` is EdDSA with an Ed25519 key; `EdDSA` alone could also be
        // Ed448, which no supported library verifies here, so both need the Ed25519 curve.
        "Ed25519" | "EdDSA" => (Algorithm::EdDSA, "OKP", Some("Ed25519")),
        "ES256" => (Algorithm::ES256, "EC", Some("P-256")),
        "ES384" => (Algorithm::ES384, "EC", Some("P-384")),
        "RS256" => (Algorithm::RS256, "RSA", None),
        "PS256" => (Algorithm::PS256, "RSA", None),
        _ => return None,
    })
}

/// The proof's JOSE header checks: `typ`, `alg`, none of [`REFUSED_HEADER_MEMBERS`], and a `jwk` that is a public key of the type `alg` needs with
/// nothing private or unknown. Returns the algorithm and the key (its public members only).
fn check_header(header: &Map<String, Value>) -> Result<(Algorithm, Jwk), ApiError> {
    if header.get("typ").and_then(Value::as_str) != Some("dpop+jwt") {
        return Err(invalid("dpop proof `typ` must be `dpop+jwt`"));
    }
    let alg_name = header.get("alg").and_then(Value::as_str).unwrap_or("");
    let Some((alg, kty, crv)) = algorithm(alg_name) else {
        return Err(invalid(format!(
            "dpop proof `alg` {} is not one of {DPOP_ALGORITHMS:?}",
            latch_core::error::quote(alg_name)
        )));
    };
    if let Some(h) = REFUSED_HEADER_MEMBERS
        .iter()
        .find(|h| header.contains_key(**h))
    {
        return Err(invalid(format!("dpop proof header must not carry `{h}`")));
    }
    let jwk = header
        .get("jwk")
        .ok_or_else(|| invalid("dpop proof has no `jwk` header"))?
        .as_object()
        .ok_or_else(|| invalid("dpop proof `jwk` is not a json object"))?;
    // The `jwk` must be a public key: a private one in the header is refused outright.
    if jwk.contains_key("d") {
        return Err(invalid("dpop proof `jwk` contains a private key"));
    }
    let public: &[&str] = match jwk.get("kty").and_then(Value::as_str) {
        Some("OKP") => &["kty", "crv", "x"],
        Some("EC") => &["kty", "crv", "x", "y"],
        Some("RSA") => &["kty", "n", "e"],
        _ => return Err(invalid("dpop proof `jwk` has no supported `kty`")),
    };
    // Only the public members of its key type (and nothing private or unknown).
    // `ext` is what WebCrypto's JWK export adds (RFC 7517 leaves room for such members).
    const META: &[&str] = &["alg", "kid", "use", "key_ops", "ext"];
    if let Some(k) = jwk
        .keys()
        .find(|k| !public.contains(&k.as_str()) && !META.contains(&k.as_str()))
    {
        return Err(invalid(format!(
            "dpop proof `jwk` member {} is not a public member of its key type",
            latch_core::error::quote(k)
        )));
    }
    if jwk.get("kty").and_then(Value::as_str) != Some(kty)
        || crv.is_some_and(|c| jwk.get("crv").and_then(Value::as_str) != Some(c))
    {
        return Err(invalid(format!(
            "dpop proof `jwk` is not a key for `alg` {alg_name}"
        )));
    }
    // The key from its public members alone (what RFC 7638 hashes and what verifies).
    let only_public: Map<String, Value> = jwk
        .iter()
        .filter(|(k, _)| public.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let key: Jwk = serde_json::from_value(Value::Object(only_public))
        .map_err(|_| invalid("dpop proof `jwk` is not usable"))?;
    Ok((alg, key))
}

/// Decodes one base64url part of the compact serialization (no padding, RFC 7515 §2).
fn part(b64: &str, what: &str) -> Result<Vec<u8>, ApiError> {
    URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|_| invalid(format!("dpop proof {what} is not base64url")))
}

/// Parses `proof` (a compact JWS), checks its header, verifies its signature with the header's
/// key and returns that key (public members only) and the claims.
///
/// # Errors
/// `dpop_proof_invalid` naming the failed check: size, shape, a repeated member name in the
/// header or the claims (at any depth), `typ`, `alg`, the `jwk`, the signature, the claims.
pub(super) fn verify_proof(proof: &str) -> Result<(Jwk, ProofClaims), ApiError> {
    if proof.len() > MAX_PROOF_BYTES {
        return Err(invalid("dpop proof is too large"));
    }
    let mut parts = proof.split('.');
    let (Some(h64), Some(c64), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("dpop proof is not a well-formed jwt"));
    };
    let header =
        latch_core::json::parse(&part(h64, "header")?).map_err(|e| strict_error("header", &e))?;
    let header = header
        .as_object()
        .ok_or_else(|| invalid("dpop proof header is not a json object"))?;
    let (alg, jwk) = check_header(header)?;
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| invalid("dpop proof `jwk` is not usable"))?;
    let signing_input = &proof[..h64.len() + 1 + c64.len()];
    match jsonwebtoken::crypto::verify(sig, signing_input.as_bytes(), &key, alg) {
        Ok(true) => {}
        Ok(false) | Err(_) => return Err(invalid("dpop proof signature does not verify")),
    }
    let claims: ProofClaims = latch_core::json::from_slice(&part(c64, "claims")?)
        .map_err(|e| strict_error("claims", &e))?;
    Ok((jwk, claims))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
    };
    use jsonwebtoken::EncodingKey;
    use jsonwebtoken::jwk::ThumbprintHash;
    use serde_json::json;

    /// A client key: its signing key and its public `jwk`.
    struct Key {
        encoding: EncodingKey,
        alg: Algorithm,
        jwk: Value,
    }

    fn ed25519() -> Key {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let kp = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        Key {
            encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
            alg: Algorithm::EdDSA,
            jwk: json!({"kty": "OKP", "crv": "Ed25519",
                "x": URL_SAFE_NO_PAD.encode(kp.public_key().as_ref())}),
        }
    }

    fn p256() -> Key {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let kp =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let point = kp.public_key().as_ref();
        Key {
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            alg: Algorithm::ES256,
            jwk: json!({"kty": "EC", "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..])}),
        }
    }

    /// Signs header and claims given as text (so they can repeat a member name).
    fn sign(k: &Key, header: &str, claims: &str) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &k.encoding, k.alg).unwrap();
        format!("{input}.{sig}")
    }

    fn header(alg: &str, jwk: &Value) -> String {
        json!({"typ": "dpop+jwt", "alg": alg, "jwk": jwk}).to_string()
    }

    fn claims() -> String {
        json!({"jti": uuid::Uuid::new_v4().to_string(), "htm": "POST",
            "htu": "https://latch.example/oauth/token", "iat": 1_800_000_000})
        .to_string()
    }

    fn refused(proof: &str) -> String {
        let e = verify_proof(proof).unwrap_err();
        assert_eq!(e.code, ErrorCode::DpopProofInvalid);
        e.message
    }

    /// RFC 9864 §2.2 names Ed25519 signatures `Ed25519` (oauth4webapi sends that name): the
    /// same key and signature as `EdDSA`, so the same thumbprint; only with an Ed25519 key.
    #[test]
    fn the_fully_specified_ed25519_name_is_accepted_like_eddsa() {
        let k = ed25519();
        let (full, c) = verify_proof(&sign(&k, &header("Ed25519", &k.jwk), &claims())).unwrap();
        let (legacy, _) = verify_proof(&sign(&k, &header("EdDSA", &k.jwk), &claims())).unwrap();
        assert_eq!(c.htm, "POST");
        assert_eq!(
            full.thumbprint(ThumbprintHash::SHA256),
            legacy.thumbprint(ThumbprintHash::SHA256)
        );
        assert!(DPOP_ALGORITHMS.contains(&"Ed25519"));
        // The name fixes the curve: an Ed448 or an EC key under `Ed25519` is refused.
        let x = k.jwk["x"].clone();
        for bad in [
            json!({"kty": "OKP", "crv": "Ed448", "x": x}),
            json!({"kty": "EC", "crv": "P-256", "x": x, "y": x}),
        ] {
            let m = refused(&sign(&k, &header("Ed25519", &bad), &claims()));
            assert!(m.contains("not a key for"), "{m}");
        }
        // A `jwk` member `alg` that jsonwebtoken does not know changes nothing.
        let mut with_alg = k.jwk.clone();
        with_alg["alg"] = json!("Ed25519");
        assert!(verify_proof(&sign(&k, &header("Ed25519", &with_alg), &claims())).is_ok());
        // A key exported by WebCrypto carries `ext` and `key_ops`: still a public key.
        let mut exported = k.jwk.clone();
        exported["ext"] = json!(true);
        exported["key_ops"] = json!(["verify"]);
        assert!(verify_proof(&sign(&k, &header("Ed25519", &exported), &claims())).is_ok());
    }

    #[test]
    fn an_es256_proof_verifies_and_only_under_its_curve() {
        let k = p256();
        assert!(verify_proof(&sign(&k, &header("ES256", &k.jwk), &claims())).is_ok());
        let m = refused(&sign(&k, &header("ES384", &k.jwk), &claims()));
        assert!(m.contains("not a key for"), "{m}");
        // Signed by another P-256 key than the header's.
        let other = p256();
        let m = refused(&sign(&other, &header("ES256", &k.jwk), &claims()));
        assert!(m.contains("signature"), "{m}");
    }

    /// A proof that repeats a member name means two things to two parsers: refused, in the
    /// header, inside its `jwk`, and in the claims (validly signed all the same).
    #[test]
    fn a_proof_repeating_a_member_name_is_refused_at_any_depth() {
        let k = ed25519();
        let x = k.jwk["x"].as_str().unwrap().to_owned();
        let jwk = format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{x}"}}"#);
        let good_header = format!(r#"{{"typ":"dpop+jwt","alg":"EdDSA","jwk":{jwk}}}"#);
        let c = |extra: &str| {
            format!(
                r#"{{"jti":"{}","htm":"POST","htu":"https://latch.example/oauth/token","iat":1800000000{extra}}}"#,
                uuid::Uuid::new_v4()
            )
        };
        // The well-formed twin passes, so each refusal below is the duplicate's.
        assert!(verify_proof(&sign(&k, &good_header, &c(""))).is_ok());
        for (header, claims, want) in [
            (
                format!(r#"{{"typ":"dpop+jwt","alg":"EdDSA","alg":"EdDSA","jwk":{jwk}}}"#),
                c(""),
                "header: member `alg` appears twice",
            ),
            (
                format!(
                    r#"{{"typ":"dpop+jwt","alg":"EdDSA","jwk":{{"kty":"OKP","crv":"Ed25519","x":"{x}","x":"{x}"}}}}"#
                ),
                c(""),
                "header: member `x` appears twice",
            ),
            (
                good_header.clone(),
                c(r#","htu":"https://elsewhere.example/oauth/token""#),
                "claims: member `htu` appears twice",
            ),
            (
                good_header.clone(),
                c(r#","ext":{"a":1,"a":2}"#),
                "claims: member `a` appears twice",
            ),
        ] {
            let m = refused(&sign(&k, &header, &claims));
            assert!(m.contains(want), "{want}: {m}");
        }
    }

    #[test]
    fn a_proof_needing_a_jws_extension_or_naming_a_remote_key_is_refused() {
        let k = ed25519();
        for (member, value) in [
            ("crit", json!(["b64"])),
            ("b64", json!(false)),
            ("jku", json!("https://evil.example/jwks")),
            ("x5u", json!("https://evil.example/c")),
            ("x5c", json!(["AAAA"])),
        ] {
            let mut h = json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": k.jwk});
            h[member] = value;
            let m = refused(&sign(&k, &h.to_string(), &claims()));
            assert!(m.contains(&format!("`{member}`")), "{m}");
        }
        // Members that change nothing (a `kid`) are ignored.
        let h = json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": k.jwk, "kid": "k1"});
        assert!(verify_proof(&sign(&k, &h.to_string(), &claims())).is_ok());
    }

    #[test]
    fn a_proof_that_is_not_a_compact_jws_is_refused() {
        let k = ed25519();
        let good = sign(&k, &header("EdDSA", &k.jwk), &claims());
        for bad in [
            String::new(),
            "a.b".into(),
            format!("{good}.extra"),
            good.replacen('.', "=.", 1),
            format!("{}.{}", "x".repeat(MAX_PROOF_BYTES), good),
        ] {
            refused(&bad);
        }
        // Claims that are not the DPoP claims.
        let m = refused(&sign(&k, &header("EdDSA", &k.jwk), r#"{"jti":"1"}"#));
        assert!(m.contains("claims are missing"), "{m}");
        let m = refused(&sign(&k, &header("EdDSA", &k.jwk), "[1]"));
        assert!(m.contains("claims"), "{m}");
    }
}
