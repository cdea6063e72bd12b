//! DPoP proof verification (RFC 9449) and server nonces.
//!
//! A DPoP proof is a JWT (`typ: dpop+jwt`) signed by the client's key, whose public half is in
//! the proof's `jwk` header. The checks follow RFC 9449 §4.3: one well-formed JWT whose header
//! and claims repeat no member name (parsed strictly, `proof`), an asymmetric `alg` (the
//! RFC 7518 names, and RFC 9864's `Ed25519`), a public `jwk` that verifies the signature
//! (verified by the `jsonwebtoken` library, not by hand), `htm` and `htu` matching the request, `iat` within the acceptance
//! window of the injected [`Clock`], `jti` not seen before (replay), `ath` equal to the hash of
//! the access token when one is presented, and, when the server requires it, a fresh server
//! `nonce` (§8). The key's RFC 7638 SHA-256 thumbprint is what a token is bound to (`cnf.jkt`).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use aws_lc_rs::hmac;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::ThumbprintHash;
use latch_core::ports::UseOnce;
use latch_core::{ApiError, Clock, ErrorCode};

mod proof;

pub use proof::DPOP_ALGORITHMS;
use proof::ProofClaims;

/// Settings of the verifier.
#[derive(Debug, Clone)]
pub struct DpopSettings {
    /// How old a proof's `iat` may be (seconds).
    pub max_age_secs: i64,
    /// How far in the future a proof's `iat` may be (clock skew, seconds).
    pub future_leeway_secs: i64,
    /// Require a server-issued nonce in every proof (RFC 9449 §8).
    pub require_nonce: bool,
    /// Length of a nonce time bucket (seconds): a nonce is valid in the bucket it was issued
    /// in and the next one, i.e. for `nonce_ttl_secs` to twice that.
    pub nonce_ttl_secs: i64,
    /// Most `jti`s remembered at once: beyond it new proofs are refused with a retryable
    /// error (never accepted unchecked).
    pub max_replay_entries: usize,
}

impl Default for DpopSettings {
    fn default() -> Self {
        Self {
            max_age_secs: 300,
            future_leeway_secs: 5,
            require_nonce: false,
            nonce_ttl_secs: 60,
            max_replay_entries: 100_000,
        }
    }
}

/// What a proof must match.
#[derive(Debug, Clone, Copy)]
pub struct ProofCheck<'a> {
    /// HTTP method of the request (`htm`), e.g. `POST`.
    pub htm: &'a str,
    /// URL of the request without query and fragment (`htu`).
    pub htu: &'a str,
    /// The access token presented with the proof: `ath` must be its SHA-256 (RFC 9449 §4.2).
    pub access_token: Option<&'a str>,
    /// The thumbprint the token is bound to: the proof's key must have it.
    pub expected_jkt: Option<&'a str>,
    /// A proof a resource server relays to introspection: exempt from the server nonce (the
    /// resource server cannot get one for its client); every other check applies.
    pub relayed: bool,
}

/// Verifies DPoP proofs, remembers their `jti`s until they are too old to be accepted anyway,
/// and issues server nonces.
///
/// Nonces are stateless: `base64url(bucket ‖ HMAC-SHA256(key, bucket))` where `bucket` is the
/// big-endian time bucket (`now / nonce_ttl_secs`); one is valid in its bucket and the next.
/// Issuing one stores nothing, so no caller can exhaust anything by asking for nonces.
///
/// The `jti` replay cache is bucketed by the proof's `iat`: whole buckets are dropped once
/// every `iat` in them is outside the acceptance window, and at `max_replay_entries` new
/// proofs are refused (`store_unavailable`, retryable) rather than accepted unchecked.
///
/// # Security
/// Alone, the replay cache and the nonce key live in this process. With several replicas
/// behind a load balancer give every replica the same nonce key
/// ([`with_nonce_key`](Self::with_nonce_key), derived from the shared master key) and a
/// shared [`UseOnce`] cache ([`with_shared_replay`](Self::with_shared_replay)): otherwise a proof
/// could be replayed once per replica inside its `iat` window, and a nonce from one replica
/// would not be accepted by another.
pub struct DpopVerifier {
    clock: Arc<dyn Clock>,
    settings: DpopSettings,
    seen: Mutex<ReplayCache>,
    nonce_key: hmac::Key,
    shared: Option<Arc<dyn UseOnce>>,
}

/// Width of a replay-cache bucket of `iat`s (seconds).
const REPLAY_BUCKET_SECS: i64 = 60;

#[derive(Default)]
struct ReplayCache {
    buckets: BTreeMap<i64, HashSet<String>>,
    len: usize,
}

impl ReplayCache {
    /// Drops every bucket whose newest possible `iat` is below `horizon`.
    fn expire(&mut self, horizon: i64) {
        let keep_from = horizon.div_euclid(REPLAY_BUCKET_SECS);
        let kept = self.buckets.split_off(&keep_from);
        let dropped: usize = self.buckets.values().map(HashSet::len).sum();
        self.len -= dropped;
        self.buckets = kept;
    }
}

impl std::fmt::Debug for DpopVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpopVerifier")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::DpopProofInvalid, msg)
}

/// `htu` comparison (RFC 9449 §4.3 check 9): scheme and host case-insensitively, without query
/// and fragment.
fn normalize_htu(u: &str) -> String {
    let u = u.split(['?', '#']).next().unwrap_or("");
    match u.split_once("://") {
        Some((scheme, rest)) => {
            let (host, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            format!(
                "{}://{}{}",
                scheme.to_ascii_lowercase(),
                host.to_ascii_lowercase(),
                path
            )
        }
        None => u.to_owned(),
    }
}

/// The `ath` value of an access token: base64url(SHA-256(token)) (RFC 9449 §4.2).
pub fn access_token_hash(token: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    URL_SAFE_NO_PAD.encode(d.as_ref())
}

impl DpopVerifier {
    /// A verifier on `clock`.
    ///
    /// # Panics
    /// If the system random generator fails while generating the nonce key.
    #[expect(
        clippy::expect_used,
        reason = "no safe way on without a random generator (see # Panics)"
    )]
    pub fn new(clock: Arc<dyn Clock>, settings: DpopSettings) -> Self {
        let nonce_key =
            hmac::Key::generate(hmac::HMAC_SHA256, &aws_lc_rs::rand::SystemRandom::new())
                .expect("system random generator");
        Self {
            clock,
            settings,
            seen: Mutex::new(ReplayCache::default()),
            nonce_key,
            shared: None,
        }
    }

    /// Uses `key` (32 bytes from the master key, the same on every replica) for server nonces
    /// instead of a random per-process key, so any replica accepts any replica's nonce and
    /// nonces survive a restart.
    pub fn with_nonce_key(mut self, key: &[u8]) -> Self {
        self.nonce_key = hmac::Key::new(hmac::HMAC_SHA256, key);
        self
    }

    /// Checks every proof against `shared` instead of this process's cache, so a proof is
    /// accepted once across all the replicas that share it, and no per-process cap exists that
    /// one caller's flood of fresh proofs could fill.
    pub fn with_shared_replay(mut self, shared: Arc<dyn UseOnce>) -> Self {
        self.shared = Some(shared);
        self
    }

    fn bucket(&self, now: i64) -> i64 {
        now.div_euclid(self.settings.nonce_ttl_secs.max(1))
    }

    fn nonce_for(&self, bucket: i64) -> String {
        let b = bucket.to_be_bytes();
        let tag = hmac::sign(&self.nonce_key, &b);
        let mut v = Vec::with_capacity(8 + tag.as_ref().len());
        v.extend_from_slice(&b);
        v.extend_from_slice(tag.as_ref());
        URL_SAFE_NO_PAD.encode(v)
    }

    /// Whether `nonce` was issued by this verifier in the current or the previous bucket.
    /// Depends on nothing but the key and the clock.
    fn nonce_is_fresh(&self, nonce: &str) -> bool {
        let Ok(raw) = URL_SAFE_NO_PAD.decode(nonce) else {
            return false;
        };
        if raw.len() != 8 + 32 {
            return false;
        }
        let (b, tag) = raw.split_at(8);
        let bucket = i64::from_be_bytes(b.try_into().unwrap_or([0; 8]));
        let now = self.bucket(self.clock.now_unix_secs());
        (bucket == now || bucket == now - 1) && hmac::verify(&self.nonce_key, b, tag).is_ok()
    }

    /// Whether proofs must carry a server nonce.
    pub fn requires_nonce(&self) -> bool {
        self.settings.require_nonce
    }

    /// A fresh server nonce (RFC 9449 §8), valid for `nonce_ttl_secs` to twice that. Stateless.
    pub fn issue_nonce(&self) -> String {
        self.nonce_for(self.bucket(self.clock.now_unix_secs()))
    }

    /// Verifies `proof` for a request and returns the RFC 7638 SHA-256 thumbprint of its key.
    ///
    /// # Errors
    /// `dpop_proof_invalid` for any failed check (the message names which);
    /// `dpop_nonce_required` when a server nonce is required and missing or stale.
    /// `store_unavailable` (retryable) when the replay caches cannot take the proof.
    pub async fn verify(&self, proof: &str, check: ProofCheck<'_>) -> Result<String, ApiError> {
        let (jwk, claims) = proof::verify_proof(proof)?;
        let now = self.clock.now_unix_secs();
        self.check_claims(&claims, &check, now)?;
        let jkt = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|_| invalid("dpop proof `jwk` has no thumbprint"))?;
        if let Some(expected) = check.expected_jkt
            && expected != jkt
        {
            return Err(invalid(
                "dpop proof is signed by another key than the token is bound to",
            ));
        }
        self.check_nonce(&claims, &check)?;
        // Replay: last, so a proof failing another check does not burn its jti.
        // A proof is only accepted with `iat` >= now - max_age, so buckets wholly older than
        // that can go. The key includes the `iat` bucket the proof was checked in.
        let key = format!("{jkt}.{}", claims.jti);
        if let Some(shared) = &self.shared {
            // The shared cache alone decides (no per-process cap that one caller could fill).
            // A digest: fixed size, and the jti (client-chosen text) never reaches the store.
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
            let expires = claims.iat + self.settings.max_age_secs + 1;
            let first = shared
                .first_use(&hex::encode(digest.as_ref()), expires, now)
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e, "dpop: the shared replay cache is unreachable");
                    ApiError::new(
                        ErrorCode::StoreUnavailable,
                        "cannot check the dpop proof for replay right now: retry shortly",
                    )
                })?;
            if !first {
                return Err(invalid("dpop proof was already used (`jti` replay)"));
            }
            return Ok(jkt);
        }
        self.take_locally(key, claims.iat, now)?;
        Ok(jkt)
    }

    /// The claims' checks, in order: `jti` length, `htm`, `htu`, `iat` window, then `ath`
    /// when the proof comes with an access token.
    fn check_claims(
        &self,
        claims: &ProofClaims,
        check: &ProofCheck<'_>,
        now: i64,
    ) -> Result<(), ApiError> {
        if claims.jti.is_empty() || claims.jti.len() > 256 {
            return Err(invalid("dpop proof `jti` must be 1-256 characters"));
        }
        if claims.htm != check.htm {
            return Err(invalid(format!(
                "dpop proof is for method `{}`, not `{}`",
                latch_core::error::quote(&claims.htm),
                check.htm
            )));
        }
        if normalize_htu(&claims.htu) != normalize_htu(check.htu) {
            return Err(invalid(format!(
                "dpop proof `htu` {} is not this endpoint",
                latch_core::error::quote(&claims.htu)
            )));
        }
        if claims.iat > now + self.settings.future_leeway_secs
            || claims.iat < now - self.settings.max_age_secs
        {
            return Err(invalid("dpop proof `iat` is outside the acceptance window"));
        }
        if let Some(t) = check.access_token
            && claims.ath.as_deref() != Some(access_token_hash(t).as_str())
        {
            return Err(invalid("dpop proof `ath` does not match the access token"));
        }
        Ok(())
    }

    /// With `require_nonce`, a direct (not relayed) proof must carry a fresh server nonce.
    fn check_nonce(&self, claims: &ProofClaims, check: &ProofCheck<'_>) -> Result<(), ApiError> {
        if self.settings.require_nonce && !check.relayed {
            let ok = claims
                .nonce
                .as_deref()
                .is_some_and(|n| self.nonce_is_fresh(n));
            if !ok {
                return Err(ApiError::new(
                    ErrorCode::DpopNonceRequired,
                    "this server requires a fresh nonce in the dpop proof: use the `DPoP-Nonce` response header",
                ));
            }
        }
        Ok(())
    }

    /// Records proof `key` (issued at `iat`) in this process's replay cache, refusing one
    /// already there, or any proof while the cache is full. One lock: two concurrent copies of
    /// a proof cannot both pass.
    fn take_locally(&self, key: String, iat: i64, now: i64) -> Result<(), ApiError> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.expire(now - self.settings.max_age_secs);
        // The same jti with another iat lands in another bucket: look in all of them (few).
        if seen.buckets.values().any(|b| b.contains(&key)) {
            return Err(invalid("dpop proof was already used (`jti` replay)"));
        }
        if seen.len >= self.settings.max_replay_entries {
            return Err(ApiError::new(
                ErrorCode::StoreUnavailable,
                "too many dpop proofs in flight to check them for replay: retry shortly",
            ));
        }
        seen.buckets
            .entry(iat.div_euclid(REPLAY_BUCKET_SECS))
            .or_default()
            .insert(key);
        seen.len += 1;
        Ok(())
    }
}

/// RFC 9449 §4.3, check 1: a request carries at most one `DPoP` header. With several, only the
/// first would be checked and the rest ignored, so two parties could read one request as bound
/// to two different keys.
///
/// # Errors
/// `dpop_proof_invalid` when the request carries more than one `DPoP` header.
pub(crate) fn one_proof_header(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    if headers.get_all("dpop").iter().count() > 1 {
        return Err(ApiError::new(
            latch_core::ErrorCode::DpopProofInvalid,
            "a request carries at most one `DPoP` header (RFC 9449 §4.3)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the async [`DpopVerifier::verify`] to completion (no shared cache: no I/O).
    fn verify(v: &DpopVerifier, proof: &str, check: ProofCheck<'_>) -> Result<String, ApiError> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(v.verify(proof, check))
    }
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    use jsonwebtoken::{Algorithm, EncodingKey};
    use latch_core::ManualClock;
    use latch_core::ports::StoreError;
    use serde_json::json;

    struct Key {
        pkcs8: Vec<u8>,
        x: String,
    }

    fn key() -> Key {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .unwrap()
            .as_ref()
            .to_vec();
        let kp = Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap();
        let x = URL_SAFE_NO_PAD.encode(kp.public_key().as_ref());
        Key { pkcs8, x }
    }

    fn sign(k: &Key, header: serde_json::Value, claims: serde_json::Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(header.to_string());
        let p = URL_SAFE_NO_PAD.encode(claims.to_string());
        let input = format!("{h}.{p}");
        let sig = jsonwebtoken::crypto::sign(
            input.as_bytes(),
            &EncodingKey::from_ed_der(&k.pkcs8),
            Algorithm::EdDSA,
        )
        .unwrap();
        format!("{input}.{sig}")
    }

    const NOW: i64 = 1_800_000_000;
    const HTU: &str = "https://latch.example/oauth/token";

    fn verifier(require_nonce: bool) -> DpopVerifier {
        DpopVerifier::new(
            Arc::new(ManualClock::new(NOW)),
            DpopSettings {
                require_nonce,
                ..Default::default()
            },
        )
    }

    fn check() -> ProofCheck<'static> {
        ProofCheck {
            htm: "POST",
            htu: HTU,
            access_token: None,
            expected_jkt: None,
            relayed: false,
        }
    }

    fn claims() -> serde_json::Value {
        json!({"jti": uuid::Uuid::new_v4().to_string(), "htm": "POST", "htu": HTU, "iat": NOW})
    }

    #[test]
    fn a_good_proof_yields_the_rfc7638_thumbprint_once() {
        let k = key();
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": k.x});
        let p = sign(
            &k,
            json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": jwk}),
            claims(),
        );
        let v = verifier(false);
        let jkt = verify(&v, &p, check()).unwrap();
        let canon = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, k.x);
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canon.as_bytes());
        assert_eq!(jkt, URL_SAFE_NO_PAD.encode(d.as_ref()));
        assert!(
            verify(&v, &p, check())
                .unwrap_err()
                .message
                .contains("replay")
        );
    }

    #[test]
    fn header_checks_refuse_wrong_typ_symmetric_alg_private_or_missing_jwk() {
        let k = key();
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": k.x});
        let v = verifier(false);
        for (header, want) in [
            (json!({"typ": "JWT", "alg": "EdDSA", "jwk": jwk}), "typ"),
            (
                json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": jwk}),
                "alg",
            ),
            (json!({"typ": "dpop+jwt", "alg": "none", "jwk": jwk}), "alg"),
            (json!({"typ": "dpop+jwt", "alg": "EdDSA"}), "no `jwk`"),
            (
                json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": {"kty": "OKP", "crv": "Ed25519", "x": k.x, "d": "AAAA"}}),
                "private",
            ),
            (
                json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": {"kty": "OKP", "crv": "Ed25519", "x": k.x, "p": "AAAA"}}),
                "not a public member",
            ),
            (
                json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": {"kty": "OKP", "crv": "Ed25519", "x": k.x, "x5c": ["AAAA"]}}),
                "not a public member",
            ),
            (
                json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": jwk, "jku": "https://evil.example/jwks"}),
                "`jku`",
            ),
            (
                json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": jwk, "x5u": "https://evil.example/c"}),
                "`x5u`",
            ),
            (
                json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": jwk, "x5c": ["AAAA"]}),
                "`x5c`",
            ),
        ] {
            let e = verify(&v, &sign(&k, header, claims()), check()).unwrap_err();
            assert_eq!(e.code, ErrorCode::DpopProofInvalid);
            assert!(e.message.contains(want), "{want}: {}", e.message);
        }
        // Signed by another key than the header's jwk.
        let other = key();
        let p = sign(
            &other,
            json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": jwk}),
            claims(),
        );
        assert!(
            verify(&v, &p, check())
                .unwrap_err()
                .message
                .contains("signature")
        );
    }

    #[test]
    fn claim_checks_refuse_method_url_age_and_key_mismatch() {
        let k = key();
        let h = json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": {"kty": "OKP", "crv": "Ed25519", "x": k.x}});
        let v = verifier(false);
        let mut c = claims();
        c["htm"] = json!("GET");
        assert!(
            verify(&v, &sign(&k, h.clone(), c), check())
                .unwrap_err()
                .message
                .contains("method")
        );
        let mut c = claims();
        c["htu"] = json!("https://latch.example/other");
        assert!(
            verify(&v, &sign(&k, h.clone(), c), check())
                .unwrap_err()
                .message
                .contains("htu")
        );
        for iat in [NOW - 301, NOW + 6] {
            let mut c = claims();
            c["iat"] = json!(iat);
            assert!(
                verify(&v, &sign(&k, h.clone(), c), check())
                    .unwrap_err()
                    .message
                    .contains("iat")
            );
        }
        let with_token = ProofCheck {
            access_token: Some("tok"),
            ..check()
        };
        assert!(
            verify(&v, &sign(&k, h.clone(), claims()), with_token)
                .unwrap_err()
                .message
                .contains("ath")
        );
        let mut c = claims();
        c["ath"] = json!(access_token_hash("tok"));
        assert!(verify(&v, &sign(&k, h.clone(), c), with_token).is_ok());
        let bound = ProofCheck {
            expected_jkt: Some("someone-else"),
            ..check()
        };
        assert!(
            verify(&v, &sign(&k, h, claims()), bound)
                .unwrap_err()
                .message
                .contains("another key")
        );
    }

    #[test]
    fn nonces_are_required_when_configured_and_expire() {
        let k = key();
        let h = json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": {"kty": "OKP", "crv": "Ed25519", "x": k.x}});
        let clock = Arc::new(ManualClock::new(NOW));
        let v = DpopVerifier::new(
            clock.clone(),
            DpopSettings {
                require_nonce: true,
                ..Default::default()
            },
        );
        let e = verify(&v, &sign(&k, h.clone(), claims()), check()).unwrap_err();
        assert_eq!(e.code, ErrorCode::DpopNonceRequired);
        let n = v.issue_nonce();
        let mut c = claims();
        c["nonce"] = json!(n);
        assert!(verify(&v, &sign(&k, h.clone(), c), check()).is_ok());
        // Still valid in the next bucket, not after.
        clock.advance(60);
        let mut c = claims();
        c["nonce"] = json!(n);
        c["iat"] = json!(NOW + 60);
        assert!(verify(&v, &sign(&k, h.clone(), c), check()).is_ok());
        clock.advance(60);
        let mut c = claims();
        c["nonce"] = json!(n);
        c["iat"] = json!(NOW + 120);
        let e = verify(&v, &sign(&k, h.clone(), c), check()).unwrap_err();
        assert_eq!(e.code, ErrorCode::DpopNonceRequired);
        // Forged or another verifier's nonces are refused.
        let other = DpopVerifier::new(clock.clone(), DpopSettings::default());
        for n in [other.issue_nonce(), "AAAA".into(), String::new()] {
            let mut c = claims();
            c["nonce"] = json!(n);
            c["iat"] = json!(NOW + 120);
            let e = verify(&v, &sign(&k, h.clone(), c), check()).unwrap_err();
            assert_eq!(e.code, ErrorCode::DpopNonceRequired);
        }
    }

    #[test]
    fn nonces_are_stateless_and_issuing_many_changes_nothing() {
        let v = verifier(true);
        let first = v.issue_nonce();
        for _ in 0..10_000 {
            assert_eq!(v.issue_nonce(), first, "same bucket, same nonce, no state");
        }
        assert!(v.nonce_is_fresh(&first));
        assert_eq!(v.seen.lock().unwrap().len, 0);
    }

    #[test]
    fn replicas_with_one_nonce_key_accept_each_others_nonces() {
        let shared = [9u8; 32];
        let a = verifier(true).with_nonce_key(&shared);
        let b = verifier(true).with_nonce_key(&shared);
        let stranger = verifier(true).with_nonce_key(&[8u8; 32]);
        assert!(b.nonce_is_fresh(&a.issue_nonce()));
        assert!(a.nonce_is_fresh(&b.issue_nonce()));
        assert!(!stranger.nonce_is_fresh(&a.issue_nonce()));
        assert!(
            !a.nonce_is_fresh(&verifier(true).issue_nonce()),
            "random per-process key"
        );
    }

    /// A shared cache that records keys in memory (stands in for the database).
    #[derive(Default)]
    struct MemoryShared(Mutex<HashSet<String>>, std::sync::atomic::AtomicBool);

    #[async_trait::async_trait]
    impl UseOnce for MemoryShared {
        async fn first_use(&self, key: &str, _exp: i64, _now: i64) -> Result<bool, StoreError> {
            if self.1.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(StoreError::Unavailable("down".into()));
            }
            assert_eq!(key.len(), 64, "a sha-256 digest, not the jti");
            Ok(self.0.lock().unwrap().insert(key.to_owned()))
        }

        async fn forget_expired(&self, _now: i64) -> Result<u64, StoreError> {
            Ok(0)
        }
    }

    #[test]
    fn a_proof_is_good_once_across_replicas_sharing_a_replay_cache() {
        let shared = Arc::new(MemoryShared::default());
        let a = verifier(false).with_shared_replay(shared.clone());
        let b = verifier(false).with_shared_replay(shared.clone());
        let k = key();
        let h = json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": {"kty": "OKP", "crv": "Ed25519", "x": k.x}});
        let p = sign(&k, h.clone(), claims());
        verify(&a, &p, check()).unwrap();
        assert_eq!(
            a.seen.lock().unwrap().len,
            0,
            "no per-process cache to fill"
        );
        let e = verify(&b, &p, check()).unwrap_err();
        assert!(e.message.contains("replay"), "{}", e.message);
        // Without a shared cache, the second replica would have taken it.
        assert!(verify(&verifier(false), &p, check()).is_ok());
        // The shared cache down: refused, retryable, and the proof is not burnt locally.
        shared.1.store(true, std::sync::atomic::Ordering::SeqCst);
        let p2 = sign(&k, h, claims());
        assert_eq!(
            verify(&a, &p2, check()).unwrap_err().code,
            ErrorCode::StoreUnavailable
        );
        shared.1.store(false, std::sync::atomic::Ordering::SeqCst);
        assert!(verify(&a, &p2, check()).is_ok());
    }

    #[test]
    fn replay_cache_is_bounded_drops_old_buckets_and_refuses_when_full() {
        let k = key();
        let h = json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": {"kty": "OKP", "crv": "Ed25519", "x": k.x}});
        let clock = Arc::new(ManualClock::new(NOW));
        let v = DpopVerifier::new(
            clock.clone(),
            DpopSettings {
                max_replay_entries: 3,
                ..Default::default()
            },
        );
        for _ in 0..3 {
            verify(&v, &sign(&k, h.clone(), claims()), check()).unwrap();
        }
        let e = verify(&v, &sign(&k, h.clone(), claims()), check()).unwrap_err();
        assert_eq!(e.code, ErrorCode::StoreUnavailable, "{}", e.message);
        // Once their iat is out of the window, whole buckets go and proofs pass again.
        clock.advance(300 + REPLAY_BUCKET_SECS);
        let mut c = claims();
        c["iat"] = json!(NOW + 300 + REPLAY_BUCKET_SECS);
        verify(&v, &sign(&k, h, c), check()).unwrap();
        assert_eq!(v.seen.lock().unwrap().len, 1);
    }

    #[test]
    fn htu_ignores_query_fragment_and_host_case() {
        assert_eq!(
            normalize_htu("HTTPS://Latch.Example/oauth/token?x=1#f"),
            "https://latch.example/oauth/token"
        );
        assert_ne!(
            normalize_htu("https://latch.example/oauth/token"),
            normalize_htu("https://latch.example/oauth/other")
        );
    }

    #[test]
    fn ath_is_base64url_sha256() {
        // RFC 9449 §7.1 example: the hash of the access token "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU".
        assert_eq!(
            access_token_hash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
            "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
        );
    }
}
