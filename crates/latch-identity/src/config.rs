//! Issuer configuration: the `[[issuers]]` tables of `latch.toml`, and the verifier options.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use serde::Deserialize;

/// Largest accepted `leeway` (5 minutes).
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// Default `leeway` (60 seconds).
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);

/// What an issuer's tokens prove: a workload (CI job, pod, agent) or a human.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IssuerKind {
    /// Tokens map to [`latch_core::model::Workload`].
    Workload,
    /// Tokens map to [`latch_core::model::Human`].
    Human,
    /// SPIFFE JWT-SVIDs (SPIFFE JWT-SVID specification), chosen by the trust domain of their
    /// `sub` rather than by `iss`; they map to a [`latch_core::model::Workload`] with preset
    /// `spiffe`. See [`SpiffeSettings`].
    Spiffe,
}

impl IssuerKind {
    /// The configuration spelling (`workload`, `human`, `spiffe`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Workload => "workload",
            Self::Human => "human",
            Self::Spiffe => "spiffe",
        }
    }
}

impl fmt::Display for IssuerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an issuer's claims are mapped onto a principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// GitHub Actions OIDC tokens (`token.actions.githubusercontent.com`).
    GithubActions,
    /// GitLab CI `id_tokens`.
    GitlabCi,
    /// Kubernetes projected service-account tokens.
    Kubernetes,
    /// Any other workload issuer: the id comes from `subject_claim`.
    Generic,
    /// A human identity provider (`kind = "human"` only).
    Human,
    /// SPIFFE JWT-SVIDs (`kind = "spiffe"` only): the SPIFFE ID is the identity.
    Spiffe,
}

impl Preset {
    /// The longest token lifetime accepted by default, from what each platform issues:
    /// GitHub Actions tokens live 5–15 minutes (15 min); GitLab CI `id_tokens` live as long as
    /// the job's timeout, 1 h by default (2 h; raise it to your longest job timeout);
    /// Kubernetes projected tokens 10 min to 48 h (48 h; an extended token's
    /// `kubernetes.io.warnafter` counts as its expiry); human ID tokens typically 1 h (24 h);
    /// anything else 1 h.
    pub fn default_max_token_lifetime(self) -> Duration {
        Duration::from_secs(match self {
            Self::GithubActions => 15 * 60,
            Self::GitlabCi => 2 * 3600,
            Self::Kubernetes => 48 * 3600,
            Self::Human => 24 * 3600,
            Self::Generic | Self::Spiffe => 3600,
        })
    }

    /// The configuration spelling, also stored in [`latch_core::model::Workload::preset`].
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GithubActions => "github_actions",
            Self::GitlabCi => "gitlab_ci",
            Self::Kubernetes => "kubernetes",
            Self::Generic => "generic",
            Self::Human => "human",
            Self::Spiffe => "spiffe",
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A JWS signature algorithm an issuer may use (RFC 7518 §3.1). Symmetric (`HS*`) algorithms
/// and `none` are deliberately not representable. `ES512` is not offered: the JOSE library
/// Latch uses cannot verify it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum SigningAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (keys of 2048 to 8192 bits).
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256 (RFC 7518 §3.5).
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// EdDSA on Ed25519 (RFC 8037).
    EdDSA,
}

impl SigningAlgorithm {
    /// The algorithms a JWT-SVID may use that Latch verifies (SPIFFE JWT-SVID §3: RS, ES and
    /// PS families; `ES512` is not supported by the JOSE library): the default of a
    /// `kind = "spiffe"` issuer.
    pub const JWT_SVID: [Self; 8] = [
        Self::RS256,
        Self::RS384,
        Self::RS512,
        Self::PS256,
        Self::PS384,
        Self::PS512,
        Self::ES256,
        Self::ES384,
    ];

    /// The JOSE name (`RS256`, `PS256`, `ES384`, `EdDSA`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::RS384 => "RS384",
            Self::RS512 => "RS512",
            Self::PS256 => "PS256",
            Self::PS384 => "PS384",
            Self::PS512 => "PS512",
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
            Self::EdDSA => "EdDSA",
        }
    }

    /// Parses a JOSE `alg` value; `None` for anything Latch does not accept.
    pub fn from_jose(alg: &str) -> Option<Self> {
        [Self::EdDSA]
            .into_iter()
            .chain(Self::JWT_SVID)
            .find(|a| a.as_str() == alg)
    }

    pub(crate) fn to_jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as A;
        match self {
            Self::RS256 => A::RS256,
            Self::RS384 => A::RS384,
            Self::RS512 => A::RS512,
            Self::PS256 => A::PS256,
            Self::PS384 => A::PS384,
            Self::PS512 => A::PS512,
            Self::ES256 => A::ES256,
            Self::ES384 => A::ES384,
            Self::EdDSA => A::EdDSA,
        }
    }
}

impl fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an issuer's public keys (a JWK Set, RFC 7517 §5) come from.
///
/// In TOML exactly one of `discovery = true`, `url = "…"` or `file = "…"` is given.
/// [`Static`](Self::Static) is for keys known in-process (e.g. a development issuer).
///
/// # Security
/// `url`, and the issuer URL used for discovery, must be `https`; plain `http` is accepted only
/// for loopback hosts (`localhost`, `127.0.0.0/8`, `::1`). Keys come only from here, never from
/// the token header.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "JwksSourceToml")]
pub enum JwksSource {
    /// OpenID Connect Discovery 1.0 §4: `GET {issuer}/.well-known/openid-configuration`, whose
    /// `issuer` must equal the configured issuer exactly, then `GET jwks_uri`. Re-run on every
    /// refresh.
    Discovery,
    /// A fixed JWKS URL.
    Url(String),
    /// A pinned JWKS file, re-read on every refresh so key rotation needs no restart. A relative
    /// path is resolved against the process's working directory (the server resolves it against
    /// the configuration file's directory before building the verifier).
    File(PathBuf),
    /// Keys given in-process; never refreshed.
    Static(JwkSet),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JwksSourceToml {
    #[serde(default)]
    discovery: bool,
    url: Option<String>,
    file: Option<PathBuf>,
}

impl TryFrom<JwksSourceToml> for JwksSource {
    type Error = String;

    fn try_from(t: JwksSourceToml) -> Result<Self, Self::Error> {
        match (t.discovery, t.url, t.file) {
            (true, None, None) => Ok(Self::Discovery),
            (false, Some(url), None) => Ok(Self::Url(url)),
            (false, None, Some(file)) => Ok(Self::File(file)),
            _ => Err("`jwks` needs exactly one of `discovery = true`, `url` or `file`".to_owned()),
        }
    }
}

fn default_jwks() -> JwksSource {
    JwksSource::Discovery
}

fn default_algorithms() -> Vec<SigningAlgorithm> {
    vec![SigningAlgorithm::RS256]
}

fn default_leeway() -> Duration {
    DEFAULT_LEEWAY
}

/// One trusted token issuer (a `[[issuers]]` table).
///
/// ```toml
/// [[issuers]]
/// name = "github"
/// issuer = "https://token.actions.githubusercontent.com"
/// kind = "workload"
/// preset = "github_actions"
/// audience = "https://latch.example"
/// algorithms = ["RS256"]
/// jwks = { discovery = true }
/// leeway = "60s"
/// ```
///
/// A SPIFFE trust domain (`kind = "spiffe"`, see [`SpiffeSettings`]) is configured with
/// `trust_domain`, a list `audience`, and one of `bundle_file` or `bundle_endpoint`; `issuer`,
/// `preset`, `jwks` and the claim options do not apply.
///
/// ```toml
/// [[issuers]]
/// name = "mesh"
/// kind = "spiffe"
/// trust_domain = "example.org"
/// audience = ["https://latch.example"]
/// bundle_endpoint = "https://spire.example.org/bundle"
/// bundle_refresh = "5m"   # default: the bundle's spiffe_refresh_hint, else 5 minutes
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "IssuerToml")]
pub struct IssuerConfig {
    /// Label for logs and error messages.
    pub name: String,
    /// The exact `iss` value (RFC 7519 §4.1.1); compared byte for byte. For `kind = "spiffe"`,
    /// `spiffe://<trust domain>` (informational: JWT-SVIDs are chosen by the trust domain of
    /// their `sub`, and their `iss`, if any, is not used).
    pub issuer: String,
    /// Workload, human or spiffe.
    pub kind: IssuerKind,
    /// Claim mapping. Default: `generic` for workload issuers, `human` for human issuers.
    #[serde(default)]
    pub preset: Option<Preset>,
    /// The audience Latch expects; a token's `aud` (string or array) must contain it
    /// (RFC 7519 §4.1.3). Required, except for `kind = "spiffe"`, where it is empty and
    /// [`SpiffeSettings::audiences`] holds the accepted audiences.
    pub audience: String,
    /// Accepted signature algorithms. Default `["RS256"]`.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<SigningAlgorithm>,
    /// Where the keys come from. Default: OpenID Connect discovery.
    #[serde(default = "default_jwks")]
    pub jwks: JwksSource,
    /// Clock skew tolerated on `exp`, `nbf` and `iat` (humantime, e.g. `"60s"`). Default 60 s,
    /// at most 300 s.
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    /// Longest accepted token lifetime (humantime): `exp - iat`, or `exp - now` when the token
    /// has no `iat`. Default per preset ([`Preset::default_max_token_lifetime`]); between 1 min
    /// and 30 days.
    #[serde(default, with = "humantime_serde")]
    pub max_token_lifetime: Option<Duration>,
    /// `generic` preset only: the claim holding the stable subject. Default `sub`.
    #[serde(default)]
    pub subject_claim: Option<String>,
    /// `human` preset only: the claim holding the human's id. Default `sub`.
    #[serde(default)]
    pub id_claim: Option<String>,
    /// `human` preset only: the claim holding the approver groups (array of strings).
    /// Default `groups`.
    #[serde(default)]
    pub groups_claim: Option<String>,
    /// `kind = "spiffe"` only (and required there): the trust domain, its audiences and the
    /// bundle's refresh. The bundle's location is [`Self::jwks`] (`File` for `bundle_file`,
    /// `Url` for `bundle_endpoint`, or `Static`).
    #[serde(default)]
    pub spiffe: Option<SpiffeSettings>,
}

impl IssuerConfig {
    /// An issuer with the defaults: preset from `kind`, `["RS256"]`, 60 s leeway.
    pub fn new(
        name: impl Into<String>,
        issuer: impl Into<String>,
        kind: IssuerKind,
        audience: impl Into<String>,
        jwks: JwksSource,
    ) -> Self {
        Self {
            name: name.into(),
            issuer: issuer.into(),
            kind,
            preset: None,
            audience: audience.into(),
            algorithms: default_algorithms(),
            jwks,
            leeway: DEFAULT_LEEWAY,
            max_token_lifetime: None,
            subject_claim: None,
            id_claim: None,
            groups_claim: None,
            spiffe: None,
        }
    }

    /// A `kind = "spiffe"` issuer for `settings.trust_domain`, whose trust bundle (a JWK Set
    /// whose JWT-SVID keys have `use` `jwt-svid`) comes from `bundle` (`Url`, `File` or
    /// `Static`; `Discovery` is refused by [`crate::OidcVerifier::new`]). Algorithms default to
    /// [`SigningAlgorithm::JWT_SVID`].
    pub fn spiffe(name: impl Into<String>, settings: SpiffeSettings, bundle: JwksSource) -> Self {
        Self {
            issuer: format!("spiffe://{}", settings.trust_domain),
            kind: IssuerKind::Spiffe,
            preset: Some(Preset::Spiffe),
            audience: String::new(),
            algorithms: SigningAlgorithm::JWT_SVID.to_vec(),
            spiffe: Some(settings),
            ..Self::new(name, "", IssuerKind::Spiffe, "", bundle)
        }
    }

    /// Sets the preset.
    #[must_use]
    pub fn with_preset(mut self, preset: Preset) -> Self {
        self.preset = Some(preset);
        self
    }

    /// Sets the accepted algorithms.
    #[must_use]
    pub fn with_algorithms(mut self, algorithms: impl Into<Vec<SigningAlgorithm>>) -> Self {
        self.algorithms = algorithms.into();
        self
    }

    /// Sets the longest accepted token lifetime.
    #[must_use]
    pub fn with_max_token_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_token_lifetime = Some(lifetime);
        self
    }

    /// The longest accepted token lifetime: configured, or the preset's default.
    pub fn effective_max_token_lifetime(&self) -> Duration {
        self.max_token_lifetime
            .unwrap_or_else(|| self.effective_preset().default_max_token_lifetime())
    }

    /// Sets the leeway.
    #[must_use]
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The effective preset (explicit, or derived from `kind`).
    pub fn effective_preset(&self) -> Preset {
        self.preset.unwrap_or(match self.kind {
            IssuerKind::Workload => Preset::Generic,
            IssuerKind::Human => Preset::Human,
            IssuerKind::Spiffe => Preset::Spiffe,
        })
    }
}

/// A SPIFFE trust domain's JWT-SVID settings (a `kind = "spiffe"` issuer).
///
/// # Security
/// Only keys of the trust bundle whose `use` is `jwt-svid` verify JWT-SVIDs (SPIFFE Trust
/// Domain and Bundle §4.2.2); X.509 authorities and keys without `use` are ignored. A
/// `bundle_endpoint` is fetched with the `https_web` profile (§5.2.1: Web PKI server
/// authentication); plain `http` is accepted only on loopback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeSettings {
    /// The trust domain name (`example.org`), as in SPIFFE IDs: lowercase `a-z0-9.-_`.
    pub trust_domain: String,
    /// A JWT-SVID's `aud` must contain one of these (SPIFFE JWT-SVID §3.2). At least one.
    pub audiences: Vec<String>,
    /// How long a fetched bundle is used before it is fetched again. `None`: the bundle's
    /// `spiffe_refresh_hint` (seconds, kept within 30 s to 1 day), else 5 minutes.
    pub refresh: Option<Duration>,
}

impl SpiffeSettings {
    /// Settings for `trust_domain` accepting `audiences`, refreshed on the bundle's hint.
    pub fn new(trust_domain: impl Into<String>, audiences: Vec<String>) -> Self {
        Self {
            trust_domain: trust_domain.into(),
            audiences,
            refresh: None,
        }
    }
}

/// `audience = "…"` or `audience = ["…", …]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// The `[[issuers]]` table as written; [`IssuerConfig`] after the kind-specific checks.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IssuerToml {
    name: String,
    #[serde(default)]
    issuer: Option<String>,
    kind: IssuerKind,
    #[serde(default)]
    preset: Option<Preset>,
    audience: OneOrMany,
    #[serde(default)]
    algorithms: Option<Vec<SigningAlgorithm>>,
    #[serde(default)]
    jwks: Option<JwksSource>,
    #[serde(default = "default_leeway", with = "humantime_serde")]
    leeway: Duration,
    #[serde(default, with = "humantime_serde")]
    max_token_lifetime: Option<Duration>,
    #[serde(default)]
    subject_claim: Option<String>,
    #[serde(default)]
    id_claim: Option<String>,
    #[serde(default)]
    groups_claim: Option<String>,
    #[serde(default)]
    trust_domain: Option<String>,
    #[serde(default)]
    bundle_file: Option<PathBuf>,
    #[serde(default)]
    bundle_endpoint: Option<String>,
    #[serde(default, with = "humantime_serde")]
    bundle_refresh: Option<Duration>,
}

impl TryFrom<IssuerToml> for IssuerConfig {
    type Error = String;

    fn try_from(t: IssuerToml) -> Result<Self, Self::Error> {
        let name = t.name.clone();
        if t.kind == IssuerKind::Spiffe {
            return spiffe_from_toml(name, t_rest(t));
        }
        let only_spiffe = [
            ("trust_domain", t.trust_domain.is_some()),
            ("bundle_file", t.bundle_file.is_some()),
            ("bundle_endpoint", t.bundle_endpoint.is_some()),
            ("bundle_refresh", t.bundle_refresh.is_some()),
        ];
        if let Some((field, _)) = only_spiffe.iter().find(|(_, set)| *set) {
            return Err(format!(
                "issuer `{name}`: `{field}` applies only to `kind = \"spiffe\"`"
            ));
        }
        let OneOrMany::One(audience) = t.audience else {
            return Err(format!(
                "issuer `{name}`: `audience` is one string (a list is for `kind = \"spiffe\"`)"
            ));
        };
        let Some(issuer) = t.issuer else {
            return Err(format!("issuer `{name}`: `issuer` is required"));
        };
        Ok(Self {
            name,
            issuer,
            kind: t.kind,
            preset: t.preset,
            audience,
            algorithms: t.algorithms.unwrap_or_else(default_algorithms),
            jwks: t.jwks.unwrap_or_else(default_jwks),
            leeway: t.leeway,
            max_token_lifetime: t.max_token_lifetime,
            subject_claim: t.subject_claim,
            id_claim: t.id_claim,
            groups_claim: t.groups_claim,
            spiffe: None,
        })
    }
}

/// The fields a `kind = "spiffe"` table may carry, and whether it carried the others.
struct SpiffeToml {
    trust_domain: Option<String>,
    audience: OneOrMany,
    algorithms: Option<Vec<SigningAlgorithm>>,
    leeway: Duration,
    max_token_lifetime: Option<Duration>,
    bundle_file: Option<PathBuf>,
    bundle_endpoint: Option<String>,
    bundle_refresh: Option<Duration>,
    /// The first OIDC-only field given, if any.
    foreign: Option<&'static str>,
}

fn t_rest(t: IssuerToml) -> SpiffeToml {
    let foreign = [
        ("issuer", t.issuer.is_some()),
        ("preset", t.preset.is_some_and(|p| p != Preset::Spiffe)),
        ("jwks", t.jwks.is_some()),
        ("subject_claim", t.subject_claim.is_some()),
        ("id_claim", t.id_claim.is_some()),
        ("groups_claim", t.groups_claim.is_some()),
    ]
    .into_iter()
    .find_map(|(f, set)| set.then_some(f));
    SpiffeToml {
        trust_domain: t.trust_domain,
        audience: t.audience,
        algorithms: t.algorithms,
        leeway: t.leeway,
        max_token_lifetime: t.max_token_lifetime,
        bundle_file: t.bundle_file,
        bundle_endpoint: t.bundle_endpoint,
        bundle_refresh: t.bundle_refresh,
        foreign,
    }
}

fn spiffe_from_toml(name: String, t: SpiffeToml) -> Result<IssuerConfig, String> {
    if let Some(field) = t.foreign {
        return Err(format!(
            "issuer `{name}`: `{field}` does not apply to `kind = \"spiffe\"` (JWT-SVIDs are \
             chosen by trust domain and verified with its bundle)"
        ));
    }
    let Some(trust_domain) = t.trust_domain else {
        return Err(format!("issuer `{name}`: `trust_domain` is required"));
    };
    let audiences = match t.audience {
        OneOrMany::One(a) => vec![a],
        OneOrMany::Many(a) => a,
    };
    let bundle = match (t.bundle_file, t.bundle_endpoint) {
        (Some(f), None) => JwksSource::File(f),
        (None, Some(u)) => JwksSource::Url(u),
        _ => {
            return Err(format!(
                "issuer `{name}`: give exactly one of `bundle_file` and `bundle_endpoint`"
            ));
        }
    };
    let mut settings = SpiffeSettings::new(trust_domain, audiences);
    settings.refresh = t.bundle_refresh;
    let mut cfg = IssuerConfig::spiffe(name, settings, bundle).with_leeway(t.leeway);
    if let Some(a) = t.algorithms {
        cfg.algorithms = a;
    }
    cfg.max_token_lifetime = t.max_token_lifetime;
    Ok(cfg)
}

fn default_max_token_bytes() -> usize {
    16 * 1024
}
fn default_refresh_min_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_cache_ttl() -> Duration {
    Duration::from_secs(3600)
}
fn default_fetch_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Settings shared by all issuers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifierOptions {
    /// Tokens longer than this many bytes are rejected before any parsing. Default 16384.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// An unknown `kid` triggers a JWKS refresh at most once per this interval per issuer
    /// (measured with the injected clock); failed fetches are retried no sooner either.
    /// Default 30 s.
    #[serde(default = "default_refresh_min_interval", with = "humantime_serde")]
    pub jwks_refresh_min_interval: Duration,
    /// A fetched JWKS is re-fetched on the first use after this long. If that fetch fails, the
    /// previous keys stay in use. Default 1 h.
    #[serde(default = "default_cache_ttl", with = "humantime_serde")]
    pub jwks_cache_ttl: Duration,
    /// Timeout for each discovery or JWKS HTTP request. Default 10 s.
    #[serde(default = "default_fetch_timeout", with = "humantime_serde")]
    pub jwks_fetch_timeout: Duration,
}

impl Default for VerifierOptions {
    fn default() -> Self {
        Self {
            max_token_bytes: default_max_token_bytes(),
            jwks_refresh_min_interval: default_refresh_min_interval(),
            jwks_cache_ttl: default_cache_ttl(),
            jwks_fetch_timeout: default_fetch_timeout(),
        }
    }
}

/// A configuration the verifier refuses to start with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An issuer has an empty `name`.
    #[error("an issuer has an empty `name`")]
    EmptyName,
    /// Two issuers share a name.
    #[error("issuer `{name}`: the name is used by another issuer")]
    DuplicateName {
        /// The issuer's name.
        name: String,
    },
    /// Two issuers share an `issuer` value.
    #[error("issuer `{name}`: `issuer` `{issuer}` is configured twice")]
    DuplicateIssuer {
        /// The issuer's name.
        name: String,
        /// The duplicated `iss` value.
        issuer: String,
    },
    /// A required field is empty.
    #[error("issuer `{name}`: `{field}` must not be empty")]
    EmptyField {
        /// The issuer's name.
        name: String,
        /// The field.
        field: &'static str,
    },
    /// `kind` and `preset` do not fit together.
    #[error("issuer `{name}`: preset `{preset}` cannot be used with kind `{kind}`")]
    PresetKindMismatch {
        /// The issuer's name.
        name: String,
        /// The kind.
        kind: IssuerKind,
        /// The preset.
        preset: Preset,
    },
    /// An option was given for a preset that does not use it.
    #[error("issuer `{name}`: `{option}` does not apply to preset `{preset}`")]
    OptionNotApplicable {
        /// The issuer's name.
        name: String,
        /// The option.
        option: &'static str,
        /// The preset.
        preset: Preset,
    },
    /// `leeway` is above [`MAX_LEEWAY`].
    #[error("issuer `{name}`: `leeway` must be at most 300s")]
    LeewayTooLarge {
        /// The issuer's name.
        name: String,
    },
    /// `max_token_lifetime` is below 1 minute or above 30 days.
    #[error("issuer `{name}`: `max_token_lifetime` must be between 1m and 30d")]
    TokenLifetimeOutOfRange {
        /// The issuer's name.
        name: String,
    },
    /// A URL does not parse or is not allowed.
    #[error("issuer `{name}`: {reason}")]
    BadUrl {
        /// The issuer's name.
        name: String,
        /// What is wrong (lowercase).
        reason: String,
    },
    /// A `kind = "spiffe"` issuer's settings are missing or wrong (trust domain, audiences,
    /// bundle source, algorithms, refresh).
    #[error("issuer `{name}`: {reason}")]
    BadSpiffe {
        /// The issuer's name.
        name: String,
        /// What is wrong (lowercase).
        reason: String,
    },
    /// A verifier option is out of range.
    #[error("verifier option `{option}` {reason}")]
    BadOption {
        /// The option.
        option: &'static str,
        /// What is wrong (lowercase).
        reason: &'static str,
    },
}

/// Checks that `url` is absolute and `https` (or `http` to a loopback host).
pub(crate) fn check_fetch_url(url: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| format!("{} is not a valid url: {e}", latch_core::error::quote(url)))?;
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if is_loopback(&parsed) => Ok(parsed),
        _ => Err(format!(
            "{} must use https (http is allowed only for loopback hosts)",
            latch_core::error::quote(url)
        )),
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}
