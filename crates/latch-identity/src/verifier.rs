//! [`OidcVerifier`]: the [`IdentityVerifier`] for OIDC / JWT bearer tokens.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{DecodingKey, Validation};
use latch_core::clock::Clock;
use latch_core::error::quote;
use latch_core::model::Principal;
use latch_core::ports::IdentityVerifier;
use latch_core::{ApiError, ErrorCode};

use crate::claims::{self, MapContext};
use crate::config::{
    ConfigError, IssuerConfig, IssuerKind, JwksSource, MAX_LEEWAY, Preset, SigningAlgorithm,
    VerifierOptions, check_fetch_url,
};
use crate::jose;
use crate::jwks::{self, Selection};
use crate::spiffe::{self, SpiffeRuntime};
use crate::spiffe_id::SpiffeId;

/// Verifies compact-JWS bearer tokens (RFC 7515, RFC 7519) from the configured issuers and maps
/// them onto a [`Principal`] with the issuer's preset.
///
/// Checks, in order: size bound (before any parsing); three base64url segments whose header and
/// payload are JSON objects; header `alg` (never `none` or `HS*`, and in the issuer's allow-list);
/// no key material in the header (`jwk`, `jku`, `x5c`, `x5u`, RFC 7515 §4.1.2–4.1.6); issuer
/// chosen by exact `iss`; key by `kid` from the issuer's JWKS; signature; `exp` / `nbf` / `iat`
/// against the injected clock with the issuer's leeway; `aud`; preset claims.
///
/// JWK Sets are fetched on first use and cached (see [`VerifierOptions`]); construction never
/// touches the network.
///
/// # Security
/// * Nothing from the token is trusted before the signature verifies, except `iss`, `alg` and
///   `kid`, which only select the issuer's own configuration and keys.
/// * Error messages never contain the token.
/// * JWKS refreshes triggered by unknown `kid`s are rate-limited per issuer, so a stream of
///   forged tokens cannot make Latch hammer an issuer.
pub struct OidcVerifier {
    issuers: Vec<IssuerRuntime>,
    by_iss: HashMap<String, usize>,
    /// `kind = "spiffe"` issuers by trust domain.
    by_td: HashMap<String, usize>,
    options: VerifierOptions,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    /// Successful workload verifications by SHA-256 of the token, each valid until
    /// min(`exp`, first verification + [`CACHE_SECS`]). Saves the signature check and JSON work
    /// when an agent reuses its token for many calls; a JWT cannot be revoked by its issuer
    /// before `exp` anyway, and key removal from the JWKS takes effect within `CACHE_SECS`.
    cache: std::sync::Mutex<HashMap<[u8; 32], (Principal, i64)>>,
}

/// Longest time a verification result is reused (seconds).
const CACHE_SECS: i64 = 60;
/// Entries before the cache is emptied (bounds memory under token churn).
const CACHE_MAX: usize = 50_000;

impl fmt::Debug for OidcVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcVerifier")
            .field(
                "issuers",
                &self
                    .issuers
                    .iter()
                    .map(|i| i.cfg.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

struct IssuerRuntime {
    cfg: IssuerConfig,
    preset: Preset,
    leeway_secs: i64,
    /// Longest accepted `exp - iat` (or `exp - now`), seconds.
    max_lifetime_secs: i64,
    subject_claim: String,
    id_claim: String,
    groups_claim: String,
    /// `kind = "spiffe"` only.
    spiffe: Option<SpiffeRuntime>,
    state: Mutex<KeyState>,
    /// Serialises fetches for this issuer.
    refresh: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct KeyState {
    keys: Option<Arc<[Jwk]>>,
    loaded_at: i64,
    /// How long the loaded keys are used (seconds); `None`: `jwks_cache_ttl`. Set for SPIFFE
    /// bundles (configured refresh, else the bundle's hint, else 5 minutes).
    ttl: Option<i64>,
    last_attempt: Option<i64>,
}

impl IssuerRuntime {
    fn state(&self) -> MutexGuard<'_, KeyState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    fn is_static(&self) -> bool {
        matches!(self.cfg.jwks, JwksSource::Static(_))
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

impl OidcVerifier {
    /// Builds a verifier. Does not fetch anything.
    ///
    /// `http` is used for discovery and JWKS requests (configure proxies and trust roots on it);
    /// each request additionally gets [`VerifierOptions::jwks_fetch_timeout`]. `clock` is used
    /// for every time check and for the refresh rate limit.
    ///
    /// # Errors
    /// [`ConfigError`] for an empty or duplicate name or issuer, an empty audience or algorithm
    /// list, a preset that does not fit the kind, an option that does not apply to the preset,
    /// a leeway above 300 s, a JWKS or discovery URL that is not https (or loopback http), an
    /// out-of-range verifier option, or wrong `kind = "spiffe"` settings (`BadSpiffe`; two
    /// issuers for one trust domain are `DuplicateIssuer`).
    pub fn new(
        issuers: Vec<IssuerConfig>,
        options: VerifierOptions,
        clock: Arc<dyn Clock>,
        http: reqwest::Client,
    ) -> Result<Self, ConfigError> {
        if options.max_token_bytes == 0 {
            return Err(ConfigError::BadOption {
                option: "max_token_bytes",
                reason: "must be positive",
            });
        }
        if options.jwks_fetch_timeout.is_zero() {
            return Err(ConfigError::BadOption {
                option: "jwks_fetch_timeout",
                reason: "must be positive",
            });
        }
        let mut names = HashSet::new();
        let mut by_iss = HashMap::new();
        let mut by_td = HashMap::new();
        let mut runtimes = Vec::with_capacity(issuers.len());
        for cfg in issuers {
            let rt = check_issuer(cfg)?;
            let name = rt.cfg.name.clone();
            if !names.insert(name.clone()) {
                return Err(ConfigError::DuplicateName { name });
            }
            let (index, key) = match &rt.spiffe {
                Some(s) => (&mut by_td, s.trust_domain.clone()),
                None => (&mut by_iss, rt.cfg.issuer.clone()),
            };
            if index.insert(key, runtimes.len()).is_some() {
                return Err(ConfigError::DuplicateIssuer {
                    name,
                    issuer: rt.cfg.issuer.clone(),
                });
            }
            runtimes.push(rt);
        }
        Ok(Self {
            issuers: runtimes,
            by_iss,
            by_td,
            options,
            clock,
            http,
            cache: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The configured issuers, in configuration order.
    pub fn issuers(&self) -> impl Iterator<Item = &IssuerConfig> {
        self.issuers.iter().map(|i| &i.cfg)
    }

    /// Finds the key for `alg` / `kid`, loading or refreshing the issuer's JWKS as allowed.
    async fn resolve_key(
        &self,
        iss: &IssuerRuntime,
        alg: SigningAlgorithm,
        kid: Option<&str>,
    ) -> Result<Jwk, ApiError> {
        let ttl = secs(self.options.jwks_cache_ttl);
        let min_interval = secs(self.options.jwks_refresh_min_interval);
        let unknown_kid = || match kid {
            Some(k) => ApiError::new(
                ErrorCode::UnknownKid,
                format!(
                    "key {} is not in the jwks of issuer `{}`",
                    quote(k),
                    iss.cfg.name
                ),
            ),
            None => ApiError::new(
                ErrorCode::UnknownKid,
                format!(
                    "token has no `kid` and issuer `{}` has no single {alg} key",
                    iss.cfg.name
                ),
            ),
        };
        let decide = |sel: Selection| -> Option<Result<Jwk, ApiError>> {
            match sel {
                Selection::Found(k) => Some(Ok(k.clone())),
                Selection::NotFound => None,
                Selection::Ambiguous => Some(Err(unknown_kid())),
                Selection::WrongType => Some(Err(ApiError::new(
                    ErrorCode::SignatureInvalid,
                    format!("the issuer's key for this token cannot verify {alg}"),
                ))),
            }
        };
        let fresh = |st: &KeyState, now: i64| {
            iss.is_static() || now.saturating_sub(st.loaded_at) < st.ttl.unwrap_or(ttl)
        };

        // Fast path: cached and fresh.
        {
            let now = self.clock.now_unix_secs();
            let st = iss.state();
            if let Some(keys) = st.keys.clone()
                && fresh(&st, now)
            {
                drop(st);
                if let Some(r) = decide(jwks::select(&keys, alg, kid)) {
                    return r;
                }
            }
        }

        let _guard = iss.refresh.lock().await;
        let now = self.clock.now_unix_secs();
        let may_fetch = |st: &KeyState| {
            st.last_attempt
                .is_none_or(|t| now.saturating_sub(t) >= min_interval)
        };

        // Load (first use, or cache expired).
        let (mut keys, loaded_now) = {
            let st = iss.state();
            let needs_load = st.keys.is_none() || !fresh(&st, now);
            (st.keys.clone(), needs_load && may_fetch(&st))
        };
        let mut fetched = false;
        if loaded_now {
            match self.fetch(iss, now).await {
                Ok(k) => {
                    keys = Some(k);
                    fetched = true;
                }
                Err(e) if keys.is_none() => return Err(e),
                Err(e) => {
                    tracing::warn!(issuer = %iss.cfg.name, error = %e.message, "jwks refresh failed; using cached keys")
                }
            }
        }
        let Some(current) = keys else {
            return Err(ApiError::new(
                ErrorCode::JwksUnavailable,
                format!(
                    "jwks of issuer `{}` is unavailable (a recent fetch failed)",
                    iss.cfg.name
                ),
            ));
        };
        if let Some(r) = decide(jwks::select(&current, alg, kid)) {
            return r;
        }

        // Unknown kid: one rate-limited refresh.
        if fetched || iss.is_static() || !may_fetch(&iss.state()) {
            return Err(unknown_kid());
        }
        let refreshed = self.fetch(iss, now).await?;
        decide(jwks::select(&refreshed, alg, kid)).unwrap_or_else(|| Err(unknown_kid()))
    }

    /// Fetches the JWKS and records the attempt; on success replaces the cached keys.
    async fn fetch(&self, iss: &IssuerRuntime, now: i64) -> Result<Arc<[Jwk]>, ApiError> {
        iss.state().last_attempt = Some(now);
        tracing::debug!(issuer = %iss.cfg.name, "fetching jwks");
        let timeout = self.options.jwks_fetch_timeout;
        let loaded = match &iss.spiffe {
            Some(s) => jwks::load_bundle(&iss.cfg.jwks, &self.http, timeout)
                .await
                .map(|l| {
                    let ttl = s
                        .refresh
                        .or(l.refresh_hint)
                        .unwrap_or(spiffe::DEFAULT_REFRESH_SECS);
                    (l.keys, Some(ttl))
                }),
            None => jwks::load(&iss.cfg.jwks, &iss.cfg.issuer, &self.http, timeout)
                .await
                .map(|k| (k, None)),
        };
        match loaded {
            Ok((keys, ttl)) => {
                let keys: Arc<[Jwk]> = keys.into();
                tracing::info!(issuer = %iss.cfg.name, keys = keys.len(), "jwks loaded");
                let mut st = iss.state();
                st.keys = Some(keys.clone());
                st.loaded_at = now;
                st.ttl = ttl;
                Ok(keys)
            }
            Err(reason) => {
                tracing::warn!(issuer = %iss.cfg.name, %reason, "jwks fetch failed");
                Err(ApiError::new(
                    ErrorCode::JwksUnavailable,
                    // The reason (which names URLs and paths) goes to the log only.
                    format!("jwks of issuer `{}` is unavailable", iss.cfg.name),
                ))
            }
        }
    }

    async fn verify_token(&self, token: &str) -> Result<Principal, ApiError> {
        self.verify_parts(token, None).await.map(|(p, _)| p)
    }

    /// Verifies an OpenID Connect ID token (OpenID Connect Core 1.0 §3.1.3.7) from the human
    /// issuer named `issuer_name`, issued to `client_id`: every check of [`Self::verify`]
    /// (signature with the issuer's keys, `exp`/`nbf`/`iat` with its leeway and lifetime bound,
    /// `iss`), with `aud` containing `client_id` instead of the issuer's configured audience,
    /// `azp` (when present) equal to `client_id`, and `nonce` equal to `nonce` (constant time).
    /// Returns the human and the token's `name` claim, if any.
    ///
    /// # Errors
    /// As [`Self::verify`]; `unknown_issuer` when the token's `iss` is not that issuer's, or it
    /// is not a human issuer; `claims_invalid` for a missing or different `nonce` or `azp`.
    pub async fn verify_id_token(
        &self,
        token: &str,
        issuer_name: &str,
        client_id: &str,
        nonce: &str,
    ) -> Result<(latch_core::model::Human, Option<String>), ApiError> {
        let (principal, claims) = self.verify_parts(token, Some(client_id)).await?;
        let expected = self
            .issuers
            .iter()
            .find(|i| i.cfg.name == issuer_name && i.cfg.kind == IssuerKind::Human)
            .map(|i| i.cfg.issuer.as_str());
        let Principal::Human(human) = principal else {
            return Err(ApiError::new(
                ErrorCode::UnknownIssuer,
                "the id token is not from a human issuer",
            ));
        };
        if expected != Some(human.issuer.as_str()) {
            return Err(ApiError::new(
                ErrorCode::UnknownIssuer,
                format!("the id token is not from issuer `{issuer_name}`"),
            ));
        }
        let got = claims.get("nonce").and_then(serde_json::Value::as_str);
        let nonce_ok = got.is_some_and(|g| {
            aws_lc_rs::constant_time::verify_slices_are_equal(g.as_bytes(), nonce.as_bytes())
                .is_ok()
        });
        if !nonce_ok {
            return Err(ApiError::new(
                ErrorCode::ClaimsInvalid,
                "the id token's `nonce` is missing or not this sign-in's",
            ));
        }
        if let Some(azp) = claims.get("azp")
            && azp.as_str() != Some(client_id)
        {
            return Err(ApiError::new(
                ErrorCode::ClaimsInvalid,
                "the id token's `azp` is not this client",
            ));
        }
        let name = claims
            .get("name")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        Ok((human, name))
    }

    /// Verifies `token` (with `audience` instead of its issuer's configured one, when given);
    /// returns the principal and the verified claims.
    async fn verify_parts(
        &self,
        token: &str,
        audience: Option<&str>,
    ) -> Result<(Principal, serde_json::Map<String, serde_json::Value>), ApiError> {
        let (iss, svid, unverified) = self.verify_signature(token).await?;

        // 6: claims.
        let claims = &unverified.claims;
        let configured = match &iss.spiffe {
            Some(s) => s.audiences.clone(),
            None => vec![iss.cfg.audience.clone()],
        };
        let exp = claims::check_validity(
            claims,
            &claims::Validity {
                now: self.clock.now_unix_secs(),
                leeway: iss.leeway_secs,
                audiences: &audience.map_or(configured, |a| vec![a.to_owned()]),
                max_lifetime: iss.max_lifetime_secs,
                preset: iss.preset,
            },
        )?;

        // 7: principal.
        if let Some(id) = svid {
            let w = spiffe::workload(&id, exp)?;
            return Ok((Principal::Workload(Box::new(w)), unverified.claims));
        }
        let ctx = MapContext {
            issuer: &iss.cfg.issuer,
            preset: iss.preset,
            subject_claim: &iss.subject_claim,
            id_claim: &iss.id_claim,
            groups_claim: &iss.groups_claim,
            exp,
        };
        let principal = claims::map_principal(claims, &ctx)?;
        Ok((principal, unverified.claims))
    }

    /// Steps 1–5 of verification: size, shape and header policy, the issuer (by `iss`, or a
    /// JWT-SVID's trust domain), its allowed algorithms, the key and the signature. Returns
    /// the issuer, the SPIFFE ID of a JWT-SVID, and the parsed token; nothing in its claims is
    /// checked yet.
    async fn verify_signature(
        &self,
        token: &str,
    ) -> Result<(&IssuerRuntime, Option<SpiffeId>, jose::Unverified), ApiError> {
        // 1–2: size, shape, header policy.
        let unverified = jose::parse(token, self.options.max_token_bytes)?;

        // 3: issuer, chosen by exact `iss` (JWT-SVIDs: by the trust domain of `sub`).
        let (iss, svid) = self.choose_issuer(&unverified.claims)?;
        if svid.is_some() {
            spiffe::check_typ(unverified.typ.as_deref())?;
        }
        let alg = unverified.alg;
        if !iss.cfg.algorithms.contains(&alg) {
            return Err(ApiError::new(
                ErrorCode::AlgNotAllowed,
                format!(
                    "algorithm `{alg}` is not allowed for issuer `{}`",
                    iss.cfg.name
                ),
            ));
        }

        // 4: key.
        let jwk = self
            .resolve_key(iss, alg, unverified.kid.as_deref())
            .await?;
        if !jwks::alg_matches(&jwk, alg) {
            return Err(ApiError::new(
                ErrorCode::SignatureInvalid,
                format!("the issuer's key for this token is not for `{alg}`"),
            ));
        }

        // 5: signature. Time, audience and issuer are checked below with the injected clock.
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| {
            ApiError::new(
                ErrorCode::SignatureInvalid,
                format!("a key of issuer `{}` is unusable", iss.cfg.name),
            )
        })?;
        let mut validation = Validation::new(alg.to_jsonwebtoken());
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims = HashSet::new();
        validation.leeway = 0;
        jsonwebtoken::decode::<serde::de::IgnoredAny>(token, &key, &validation)
            .map_err(map_jwt_error)?;
        Ok((iss, svid, unverified))
    }

    /// Verifies the signature of a compact JWS from one of the configured issuers (steps 1–5
    /// of [`Self::verify`]: size, shape, header policy, issuer by exact `iss`, its algorithms,
    /// its key, the signature) and returns the issuer's configured name, the header's `typ`
    /// and the claims, none of them checked: for tokens that are not bearer tokens (Security
    /// Event Tokens, `crate::set`), whose claims follow other rules.
    ///
    /// # Errors
    /// As the signature steps of [`Self::verify`].
    pub(crate) async fn verify_jws(
        &self,
        token: &str,
    ) -> Result<
        (
            String,
            Option<String>,
            serde_json::Map<String, serde_json::Value>,
        ),
        ApiError,
    > {
        let (iss, _, unverified) = self.verify_signature(token).await?;
        Ok((iss.cfg.name.clone(), unverified.typ, unverified.claims))
    }
}

impl OidcVerifier {
    /// The issuer whose keys verify this token: the one whose `iss` it names; else, for a
    /// JWT-SVID (`sub` a SPIFFE ID, with `kind = "spiffe"` issuers configured), the one of its
    /// trust domain, with the parsed SPIFFE ID. The claims are not verified yet: they only choose
    /// which configuration and keys to verify with.
    ///
    /// # Errors
    /// `claims_invalid` for a missing or non-string `iss` (not a JWT-SVID);
    /// `spiffe_id_invalid` for a `sub` that looks like a SPIFFE ID but is not one;
    /// `unknown_issuer` for an untrusted issuer or trust domain.
    fn choose_issuer(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(&IssuerRuntime, Option<SpiffeId>), ApiError> {
        let iss_value = claims.get("iss");
        if let Some(serde_json::Value::String(s)) = iss_value
            && let Some(rt) = self.by_iss.get(s).and_then(|i| self.issuers.get(*i))
        {
            return Ok((rt, None));
        }
        if !self.by_td.is_empty()
            && let Some(id) = spiffe::subject(claims)
        {
            let id = id?;
            let rt = self
                .by_td
                .get(id.trust_domain())
                .and_then(|i| self.issuers.get(*i))
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::UnknownIssuer,
                        format!("trust domain {} is not trusted", quote(id.trust_domain())),
                    )
                })?;
            return Ok((rt, Some(id)));
        }
        match iss_value {
            Some(serde_json::Value::String(s)) => Err(ApiError::new(
                ErrorCode::UnknownIssuer,
                format!("issuer {} is not trusted", quote(s)),
            )),
            Some(_) => Err(ApiError::new(
                ErrorCode::ClaimsInvalid,
                "claim `iss` is not a string",
            )),
            None => Err(ApiError::new(
                ErrorCode::ClaimsInvalid,
                "claim `iss` is missing",
            )),
        }
    }
}

fn map_jwt_error(e: jsonwebtoken::errors::Error) -> ApiError {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidToken | K::Base64(_) | K::Json(_) | K::Utf8(_) => {
            ApiError::new(ErrorCode::TokenMalformed, "token is not a well-formed jws")
        }
        K::InvalidAlgorithm | K::InvalidAlgorithmName | K::UnsupportedAlgorithm => ApiError::new(
            ErrorCode::AlgNotAllowed,
            "token algorithm does not fit the issuer's key",
        ),
        _ => ApiError::new(
            ErrorCode::SignatureInvalid,
            "token signature does not verify",
        ),
    }
}

fn check_issuer(cfg: IssuerConfig) -> Result<IssuerRuntime, ConfigError> {
    if cfg.name.trim().is_empty() {
        return Err(ConfigError::EmptyName);
    }
    let name = cfg.name.clone();
    let empty = |field| ConfigError::EmptyField {
        name: name.clone(),
        field,
    };
    let spiffe = if cfg.kind == IssuerKind::Spiffe {
        Some(spiffe::check_settings(&cfg)?)
    } else {
        if cfg.spiffe.is_some() {
            return Err(ConfigError::BadSpiffe {
                name,
                reason: "spiffe settings need `kind = \"spiffe\"`".to_owned(),
            });
        }
        None
    };
    if cfg.issuer.is_empty() {
        return Err(empty("issuer"));
    }
    if cfg.audience.is_empty() && spiffe.is_none() {
        return Err(empty("audience"));
    }
    if cfg.algorithms.is_empty() {
        return Err(empty("algorithms"));
    }
    let preset = cfg.effective_preset();
    if (cfg.kind == IssuerKind::Human) != (preset == Preset::Human)
        || (cfg.kind == IssuerKind::Spiffe) != (preset == Preset::Spiffe)
    {
        return Err(ConfigError::PresetKindMismatch {
            name,
            kind: cfg.kind,
            preset,
        });
    }
    let not_applicable = |option| ConfigError::OptionNotApplicable {
        name: name.clone(),
        option,
        preset,
    };
    if cfg.subject_claim.is_some() && preset != Preset::Generic {
        return Err(not_applicable("subject_claim"));
    }
    if cfg.id_claim.is_some() && preset != Preset::Human {
        return Err(not_applicable("id_claim"));
    }
    if cfg.groups_claim.is_some() && preset != Preset::Human {
        return Err(not_applicable("groups_claim"));
    }
    for (field, value) in [
        ("subject_claim", &cfg.subject_claim),
        ("id_claim", &cfg.id_claim),
        ("groups_claim", &cfg.groups_claim),
    ] {
        if value.as_deref().is_some_and(str::is_empty) {
            return Err(empty(field));
        }
    }
    if cfg.leeway > MAX_LEEWAY {
        return Err(ConfigError::LeewayTooLarge { name });
    }
    let lifetime = cfg.effective_max_token_lifetime();
    if lifetime < Duration::from_secs(60) || lifetime > Duration::from_secs(30 * 86_400) {
        return Err(ConfigError::TokenLifetimeOutOfRange { name });
    }
    match &cfg.jwks {
        // Checked with the rest of the SPIFFE settings.
        _ if spiffe.is_some() => {}
        JwksSource::Discovery => {
            check_fetch_url(&jwks::discovery_url(&cfg.issuer)).map_err(|reason| {
                ConfigError::BadUrl {
                    name: name.clone(),
                    reason: format!("discovery: {reason}"),
                }
            })?;
        }
        JwksSource::Url(url) => {
            check_fetch_url(url).map_err(|reason| ConfigError::BadUrl {
                name: name.clone(),
                reason,
            })?;
        }
        JwksSource::File(path) if path.as_os_str().is_empty() => return Err(empty("jwks.file")),
        JwksSource::File(_) | JwksSource::Static(_) => {}
    }
    Ok(IssuerRuntime {
        preset,
        leeway_secs: secs(cfg.leeway),
        max_lifetime_secs: secs(lifetime),
        subject_claim: cfg
            .subject_claim
            .clone()
            .unwrap_or_else(|| "sub".to_owned()),
        id_claim: cfg.id_claim.clone().unwrap_or_else(|| "sub".to_owned()),
        groups_claim: cfg
            .groups_claim
            .clone()
            .unwrap_or_else(|| "groups".to_owned()),
        spiffe,
        state: Mutex::new(KeyState::default()),
        refresh: tokio::sync::Mutex::new(()),
        cfg,
    })
}

#[async_trait]
impl IdentityVerifier for OidcVerifier {
    /// The workload of a listener-verified X.509-SVID: the same principal a JWT-SVID with that
    /// SPIFFE ID would prove (preset `spiffe`), valid until the certificate's `notAfter`.
    fn x509_svid_principal(
        &self,
        spiffe_id: &str,
        not_after_unix_secs: i64,
    ) -> Result<Principal, ApiError> {
        let id = SpiffeId::parse(spiffe_id).map_err(|e| {
            ApiError::new(
                ErrorCode::SpiffeIdInvalid,
                format!("client certificate spiffe id: {e}"),
            )
        })?;
        if !self.by_td.contains_key(id.trust_domain()) {
            return Err(ApiError::new(
                ErrorCode::UnknownIssuer,
                "no spiffe trust domain is configured for this client certificate",
            ));
        }
        let w = spiffe::workload(&id, not_after_unix_secs)?;
        Ok(Principal::Workload(Box::new(w)))
    }

    /// A digest lookup in the cache of verified workload tokens (kept `CACHE_SECS`, 60 s).
    fn recently_verified(&self, token: &str) -> bool {
        if token.len() > self.options.max_token_bytes {
            return false;
        }
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        let now = self.clock.now_unix_secs();
        let mut k = [0u8; 32];
        k.copy_from_slice(d.as_ref());
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(&k).is_some_and(|(_, until)| now < *until)
    }

    /// Verifies `token` and maps it onto a principal.
    ///
    /// # Errors
    /// An [`ApiError`] with `token_too_large`, `token_malformed`, `alg_not_allowed`,
    /// `header_key_forbidden`, `unknown_issuer`, `spiffe_id_invalid`, `unknown_kid`,
    /// `jwks_unavailable`,
    /// `signature_invalid`, `token_expired`, `token_not_yet_valid`, `token_lifetime_too_long`,
    /// `audience_mismatch` or `claims_invalid`. The message never contains the token.
    async fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let now = self.clock.now_unix_secs();
        let key: Option<[u8; 32]> = (token.len() <= self.options.max_token_bytes).then(|| {
            let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
            let mut k = [0u8; 32];
            k.copy_from_slice(d.as_ref());
            k
        });
        if let Some(k) = &key {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((p, until)) = cache.get(k)
                && now < *until
            {
                return Ok(p.clone());
            }
        }
        let result = self.verify_token(token).await;
        if let (Ok(p @ Principal::Workload(w)), Some(k)) = (&result, key) {
            let until = w.token_expires_at_unix_secs.min(now + CACHE_SECS);
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            cache.insert(k, (p.clone(), until));
        }
        if let Err(e) = &result {
            tracing::debug!(code = %e.code, message = %e.message, "token rejected");
        }
        result
    }
}
