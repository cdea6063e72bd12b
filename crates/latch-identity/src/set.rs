//! [`SecurityEventVerifier`]: verifies Security Event Tokens (RFC 8417) pushed to Latch by the
//! configured Shared Signals transmitters (RFC 8935), the receiving half of
//! [`latch_core::ssf`].
//!
//! The signature is checked as for bearer tokens (size bound, header policy — never `none` or
//! `HS*`, never a key from the header —, issuer by exact `iss`, its allowed algorithms, its
//! JWKS with the same caching and rate-limited refresh), then the SET's own rules: `typ`
//! `secevent+jwt` (RFC 8417 §2.3, SSF 1.0 §4.1.1), `aud` containing Latch's audience, `iat`
//! neither older than `max_age` nor in the future (with `leeway`), an `exp` (which SSF 1.0
//! §4.1.7 forbids, tolerated) not past, a `jti`, and an `events` object.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use latch_core::clock::Clock;
use latch_core::ssf::subject::SubjectRules;
use latch_core::ssf::{PushError, PushErrorCode, SetVerifier, VerifiedSet};
use latch_core::{ApiError, ErrorCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use crate::config::{ConfigError, IssuerConfig, IssuerKind, JwksSource, SigningAlgorithm};
use crate::{OidcVerifier, VerifierOptions};

/// Longest accepted `jti` and `txn` (characters).
const MAX_ID_LEN: usize = 256;
/// Most events in one SET (SSF 1.0 §4.2.1 asks for one).
const MAX_EVENTS: usize = 16;
/// Longest accepted `max_age` (7 days).
pub const MAX_SET_AGE: Duration = Duration::from_secs(7 * 86_400);

/// One transmitter Latch accepts SETs from (`[[ssf.transmitters]]`).
///
/// # Security
/// `authorization` is a secret: `Debug` does not show it, and it is compared in constant time.
#[derive(Debug, Clone)]
pub struct TransmitterSettings {
    /// Name, for logs and audit records (`ssf:<name>` is the actor of what its SETs cause).
    pub name: String,
    /// The exact `iss` of its SETs.
    pub issuer: String,
    /// The audience Latch expects in `aud`.
    pub audience: String,
    /// Where its signing keys are (`url` or `file`).
    pub jwks: JwksSource,
    /// Accepted signature algorithms.
    pub algorithms: Vec<SigningAlgorithm>,
    /// Oldest accepted `iat` (how long its `jti` is remembered, too).
    pub max_age: Duration,
    /// Clock skew tolerated on `iat` and `exp`.
    pub leeway: Duration,
    /// Which of its subjects name humans (formats, the issuers of `iss_sub` subjects), and
    /// which humans it may act for.
    pub subjects: SubjectRules,
    /// The `Authorization` header value its pushes must carry, if any (SSF 1.0 §6.1.1
    /// `authorization_header`).
    pub authorization: Option<SecretString>,
}

/// Verifies pushed SETs ([`SetVerifier`]) against the configured transmitters.
pub struct SecurityEventVerifier {
    keys: OidcVerifier,
    by_name: HashMap<String, TransmitterSettings>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for SecurityEventVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityEventVerifier")
            .field("transmitters", &self.by_name.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl SecurityEventVerifier {
    /// A verifier for `transmitters`; fetches nothing yet (keys are fetched on first use and
    /// cached as [`OidcVerifier`] does).
    ///
    /// # Errors
    /// [`ConfigError`] for an empty or duplicate name or issuer, an empty audience or algorithm
    /// list, JWKS by discovery (a transmitter's keys are at a `url` or in a `file`), a JWKS URL
    /// that is not https (or loopback http), a `max_age` of zero or above 7 days, or a
    /// `leeway` above 300 s.
    pub fn new(
        transmitters: Vec<TransmitterSettings>,
        clock: Arc<dyn Clock>,
        http: reqwest::Client,
    ) -> Result<Self, ConfigError> {
        let mut issuers = Vec::new();
        let mut by_name = HashMap::new();
        for t in transmitters {
            if matches!(t.jwks, JwksSource::Discovery) {
                return Err(ConfigError::BadOption {
                    option: "ssf.transmitters.jwks",
                    reason: "a transmitter's keys need `url` or `file` (no discovery)",
                });
            }
            if t.max_age.is_zero() || t.max_age > MAX_SET_AGE {
                return Err(ConfigError::BadOption {
                    option: "ssf.transmitters.max_age",
                    reason: "must be between 1 s and 7 days",
                });
            }
            if t.leeway > crate::MAX_LEEWAY {
                return Err(ConfigError::BadOption {
                    option: "ssf.transmitters.leeway",
                    reason: "must be at most 300 s",
                });
            }
            issuers.push(
                IssuerConfig::new(
                    &t.name,
                    &t.issuer,
                    IssuerKind::Human,
                    &t.audience,
                    t.jwks.clone(),
                )
                .with_algorithms(t.algorithms.clone()),
            );
            by_name.insert(t.name.clone(), t);
        }
        let keys = OidcVerifier::new(issuers, VerifierOptions::default(), clock.clone(), http)?;
        Ok(Self {
            keys,
            by_name,
            clock,
        })
    }
}

fn refused(code: PushErrorCode, description: impl Into<String>) -> PushError {
    PushError::refused(code, description)
}

/// The RFC 8935 answer to a failed signature step.
fn push_error(e: ApiError) -> PushError {
    let code = match e.code {
        ErrorCode::JwksUnavailable => return PushError::Unavailable(e),
        ErrorCode::UnknownIssuer => PushErrorCode::InvalidIssuer,
        ErrorCode::AlgNotAllowed
        | ErrorCode::HeaderKeyForbidden
        | ErrorCode::UnknownKid
        | ErrorCode::SignatureInvalid => PushErrorCode::InvalidKey,
        _ => PushErrorCode::InvalidRequest,
    };
    refused(code, e.message)
}

#[async_trait]
impl SetVerifier for SecurityEventVerifier {
    async fn verify(
        &self,
        token: &str,
        authorization: Option<&str>,
    ) -> Result<VerifiedSet, PushError> {
        let (name, typ, claims) = self.keys.verify_jws(token).await.map_err(push_error)?;
        let t = self.by_name.get(&name).ok_or_else(|| {
            refused(
                PushErrorCode::InvalidIssuer,
                "the set's issuer is not trusted",
            )
        })?;
        if let Some(expected) = &t.authorization {
            let ok = authorization.is_some_and(|got| same_authorization(got, expected));
            if !ok {
                return Err(refused(
                    PushErrorCode::AuthenticationFailed,
                    "the push lacks the authorization configured for this transmitter",
                ));
            }
        }
        check_typ(typ.as_deref())?;
        check_claims(t, &claims, self.clock.now_unix_secs())
    }
}

/// Whether the `Authorization` value `got` is the configured `expected`: the scheme (before the
/// first space) compared ignoring ASCII case (RFC 9110 §11.1: schemes are case-insensitive),
/// the credentials in constant time.
fn same_authorization(got: &str, expected: &SecretString) -> bool {
    fn split(v: &str) -> (&str, &str) {
        match v.trim().split_once(' ') {
            Some((scheme, cred)) => (scheme, cred.trim()),
            None => ("", v.trim()),
        }
    }
    let (gs, gc) = split(got);
    let (es, ec) = split(expected.expose_secret());
    let cred_ok =
        aws_lc_rs::constant_time::verify_slices_are_equal(gc.as_bytes(), ec.as_bytes()).is_ok();
    cred_ok && gs.eq_ignore_ascii_case(es)
}

/// RFC 8417 §2.3: `secevent+jwt` (RFC 7515 §4.1.9: the `application/` prefix may be given).
fn check_typ(typ: Option<&str>) -> Result<(), PushError> {
    let t = typ.unwrap_or_default();
    let t = t
        .get(..12)
        .filter(|p| p.eq_ignore_ascii_case("application/"))
        .map_or(t, |_| &t[12..]);
    if t.eq_ignore_ascii_case(latch_core::ssf::SET_TYP) {
        Ok(())
    } else {
        Err(refused(
            PushErrorCode::InvalidRequest,
            "the jws header `typ` is not `secevent+jwt` (rfc 8417 §2.3)",
        ))
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// 1 to [`MAX_ID_LEN`] printable ASCII characters, no space: what Latch keeps of a SET's ids
/// (`jti`, `txn`, event type URIs) in its audit trail and freeze reasons, where no control,
/// bidi or look-alike character may hide.
fn plain_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID_LEN && s.bytes().all(|b| b.is_ascii_graphic())
}

/// The SET's claims against transmitter `t` at `now`.
fn check_claims(
    t: &TransmitterSettings,
    claims: &Map<String, Value>,
    now: i64,
) -> Result<VerifiedSet, PushError> {
    let bad = |m: &str| refused(PushErrorCode::InvalidRequest, m);
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => *a == t.audience,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(&t.audience)),
        _ => false,
    };
    if !aud_ok {
        return Err(refused(
            PushErrorCode::InvalidAudience,
            "the set's `aud` does not name this receiver",
        ));
    }
    let leeway = secs(t.leeway);
    let max_age = secs(t.max_age);
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or_else(|| bad("the set has no integer `iat`"))?;
    if iat > now.saturating_add(leeway) {
        return Err(bad("the set's `iat` is in the future"));
    }
    if now.saturating_sub(iat) > max_age.saturating_add(leeway) {
        return Err(bad("the set's `iat` is older than this receiver accepts"));
    }
    if let Some(exp) = claims.get("exp") {
        match exp.as_i64() {
            Some(e) if e.saturating_add(leeway) >= now => {}
            _ => return Err(bad("the set has expired (`exp`)")),
        }
    }
    let id = |k: &str| -> Result<Option<String>, PushError> {
        match claims.get(k) {
            None => Ok(None),
            Some(Value::String(s)) if plain_id(s) => Ok(Some(s.clone())),
            Some(_) => Err(bad(&format!(
                "the set's `{k}` is not a string of 1 to {MAX_ID_LEN} printable ascii characters"
            ))),
        }
    };
    let jti = id("jti")?.ok_or_else(|| bad("the set has no `jti`"))?;
    let txn = id("txn")?;
    let events = match claims.get("events") {
        Some(Value::Object(m))
            if !m.is_empty()
                && m.len() <= MAX_EVENTS
                && m.iter().all(|(k, v)| plain_id(k) && v.is_object()) =>
        {
            m.clone()
        }
        _ => {
            return Err(bad(&format!(
                "the set's `events` is not an object of 1 to {MAX_EVENTS} event objects"
            )));
        }
    };
    let sub_id = match claims.get("sub_id") {
        None => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(_) => return Err(bad("the set's `sub_id` is not an object")),
    };
    Ok(VerifiedSet {
        transmitter: t.name.clone(),
        issuer: t.issuer.clone(),
        jti,
        iat,
        txn,
        sub_id,
        events,
        subjects: t.subjects.clone(),
        replay_until_unix_secs: iat.saturating_add(max_age).saturating_add(leeway),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> TransmitterSettings {
        TransmitterSettings {
            name: "idp".into(),
            issuer: "https://idp.example".into(),
            audience: "https://latch.example".into(),
            jwks: JwksSource::Url("https://idp.example/jwks".into()),
            algorithms: vec![SigningAlgorithm::ES256],
            max_age: Duration::from_secs(600),
            leeway: Duration::from_secs(60),
            subjects: SubjectRules::any_human(vec!["https://idp.example".into()]),
            authorization: None,
        }
    }

    #[test]
    fn the_authorization_scheme_is_case_insensitive_and_the_credentials_are_not() {
        let want = SecretString::from("Bearer s3cret-Value");
        assert!(same_authorization("Bearer s3cret-Value", &want));
        assert!(same_authorization("bearer s3cret-Value", &want));
        assert!(same_authorization("BEARER  s3cret-Value ", &want));
        assert!(!same_authorization("Bearer s3cret-value", &want));
        assert!(!same_authorization("Basic s3cret-Value", &want));
        assert!(!same_authorization("s3cret-Value", &want));
        assert!(!same_authorization("", &want));
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn good() -> Value {
        json!({"iss": "https://idp.example", "aud": ["x", "https://latch.example"], "iat": 1_000,
               "jti": "abc", "sub_id": {"format": "opaque", "id": "alice"},
               "events": {latch_core::ssf::SESSION_REVOKED: {}}})
    }

    fn code(r: Result<VerifiedSet, PushError>) -> Option<PushErrorCode> {
        match r {
            Err(PushError::Refused { code, .. }) => Some(code),
            _ => None,
        }
    }

    #[test]
    fn a_good_set_passes_and_is_remembered_as_long_as_it_could_be_accepted() {
        let v = check_claims(&settings(), &claims(good()), 1_100).expect("accepted");
        assert_eq!(v.jti, "abc");
        assert_eq!(v.iat, 1_000);
        assert_eq!(v.replay_until_unix_secs, 1_000 + 600 + 60);
        assert_eq!(v.transmitter, "idp");
        assert_eq!(v.events.len(), 1);
    }

    #[test]
    fn claims_that_break_the_rules_are_refused_with_their_code() {
        use PushErrorCode::*;
        let t = settings();
        let with = |k: &str, v: Value| {
            let mut c = good();
            c[k] = v;
            claims(c)
        };
        let without = |k: &str| {
            let mut c = claims(good());
            c.remove(k);
            c
        };
        let cases = [
            (with("aud", json!("https://other")), InvalidAudience),
            (without("aud"), InvalidAudience),
            (without("iat"), InvalidRequest),
            (with("iat", json!(1_100 + 61)), InvalidRequest),
            (with("iat", json!(1_100 - 661)), InvalidRequest),
            (with("exp", json!(1_000)), InvalidRequest),
            (without("jti"), InvalidRequest),
            (with("jti", json!("")), InvalidRequest),
            (with("jti", json!("a\nb")), InvalidRequest),
            (with("jti", json!("a\u{202e}b")), InvalidRequest),
            (with("events", json!({"urn:a b": {}})), InvalidRequest),
            (with("jti", json!("x".repeat(257))), InvalidRequest),
            (with("events", json!({})), InvalidRequest),
            (
                with("events", json!({"e": "not an object"})),
                InvalidRequest,
            ),
            (with("sub_id", json!("alice")), InvalidRequest),
        ];
        for (c, want) in cases {
            assert_eq!(code(check_claims(&t, &c, 1_100)), Some(want), "{c:?}");
        }
        assert!(check_claims(&t, &with("exp", json!(2_000)), 1_100).is_ok());
        assert!(check_claims(&t, &with("iat", json!(1_100 + 60)), 1_100).is_ok());
    }

    #[test]
    fn typ_must_be_secevent_jwt() {
        for ok in ["secevent+jwt", "application/secevent+jwt", "SecEvent+JWT"] {
            assert!(check_typ(Some(ok)).is_ok(), "{ok}");
        }
        for bad in [None, Some("JWT"), Some("at+jwt"), Some("application/jwt")] {
            assert!(check_typ(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn signature_failures_map_to_rfc_8935_codes() {
        let c = |e: ErrorCode| match push_error(ApiError::new(e, "m")) {
            PushError::Refused { code, .. } => Some(code),
            PushError::Unavailable(_) => None,
        };
        assert_eq!(
            c(ErrorCode::UnknownIssuer),
            Some(PushErrorCode::InvalidIssuer)
        );
        assert_eq!(
            c(ErrorCode::SignatureInvalid),
            Some(PushErrorCode::InvalidKey)
        );
        assert_eq!(c(ErrorCode::UnknownKid), Some(PushErrorCode::InvalidKey));
        assert_eq!(c(ErrorCode::AlgNotAllowed), Some(PushErrorCode::InvalidKey));
        assert_eq!(
            c(ErrorCode::TokenMalformed),
            Some(PushErrorCode::InvalidRequest)
        );
        assert_eq!(
            c(ErrorCode::JwksUnavailable),
            None,
            "503: the transmitter retries"
        );
    }

    #[test]
    fn discovery_and_out_of_bounds_ages_are_refused() {
        let clock: Arc<dyn Clock> = Arc::new(latch_core::ManualClock::new(0));
        let mut t = settings();
        t.jwks = JwksSource::Discovery;
        assert!(
            SecurityEventVerifier::new(vec![t], clock.clone(), reqwest::Client::new()).is_err()
        );
        let mut t = settings();
        t.max_age = Duration::ZERO;
        assert!(
            SecurityEventVerifier::new(vec![t], clock.clone(), reqwest::Client::new()).is_err()
        );
        assert!(
            SecurityEventVerifier::new(vec![settings()], clock, reqwest::Client::new()).is_ok()
        );
    }
}
