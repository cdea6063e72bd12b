//! `[ssf]`: OpenID Shared Signals. `[[ssf.receivers]]` are the streams Latch pushes its
//! revocations to (CAEP `session-revoked`, `credential-change`; RFC 8935 push delivery);
//! `[[ssf.transmitters]]` are the identity providers whose Security Event Tokens Latch accepts
//! at `POST /v1/ssf/events`.
//!
//! ```toml
//! [ssf]
//! poll_interval = "1s"          # how often new revocations are looked for
//!
//! [[ssf.receivers]]
//! name = "siem"                 # the stream id; letters, digits, `-`, `_`
//! endpoint_url = "https://siem.example.com/ssf/events"
//! audience = "https://siem.example.com"
//! events_requested = ["https://schemas.openid.net/secevent/caep/event-type/session-revoked"]
//! authorization_header_env = "LATCH_SSF_SIEM_AUTHORIZATION"   # or _file; e.g. "Bearer …"
//!
//! [[ssf.transmitters]]
//! name = "corp-idp"
//! issuer = "https://idp.example.com"
//! audience = "https://latch.example.com"        # the `aud` Latch expects
//! jwks = { url = "https://idp.example.com/ssf/jwks.json" }   # or { file = "…" }
//! algorithms = ["RS256", "ES256"]
//! max_age = "1h"                                # oldest accepted `iat`
//! authorization_header_file = "idp-push.secret" # what its pushes must carry (optional)
//! subject_formats = ["iss_sub", "email"]        # which subjects name humans (default: all four)
//! humans = ".*@example\\.com"                  # whom it may act for (required with 2+ transmitters)
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use latch_core::ssf::subject::{HUMAN_FORMATS, SubjectRules};
use latch_identity::{JwksSource, SigningAlgorithm, TransmitterSettings};
use secrecy::SecretString;
use serde::Deserialize;

use super::read_secret;

/// `[ssf]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsfConfig {
    /// How often each receiver's delivery looks for new revocations (default 1 s; a failing
    /// receiver is retried with backoff up to a minute).
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Streams Latch pushes to.
    #[serde(default)]
    pub receivers: Vec<SsfReceiverConfig>,
    /// Transmitters Latch accepts SETs from.
    #[serde(default)]
    pub transmitters: Vec<SsfTransmitterConfig>,
}

impl Default for SsfConfig {
    fn default() -> Self {
        Self {
            poll_interval: default_poll(),
            receivers: Vec::new(),
            transmitters: Vec::new(),
        }
    }
}

fn default_poll() -> Duration {
    Duration::from_secs(1)
}

/// One `[[ssf.receivers]]` stream.
///
/// # Security
/// The authorization header is a secret, read from a file or an environment variable at start;
/// it is never logged, shown in the stream configuration, or written to the audit trail.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsfReceiverConfig {
    /// The stream id (`stream_id`): letters, digits, `-` or `_`. Its delivery cursor is kept
    /// in the store under `ssf:<name>`.
    pub name: String,
    /// Where SETs are POSTed (https, or http to a loopback host).
    pub endpoint_url: String,
    /// The `aud` of every SET on this stream.
    pub audience: String,
    /// Event type URIs the receiver wants (default: `session-revoked` and `credential-change`);
    /// those Latch does not send are ignored (SSF 1.0 §8.1.1).
    #[serde(default = "default_events")]
    pub events_requested: Vec<String>,
    /// Free text shown in the stream configuration.
    #[serde(default)]
    pub description: Option<String>,
    /// Environment variable holding the `Authorization` header value sent with every push.
    #[serde(default)]
    pub authorization_header_env: Option<String>,
    /// File holding the `Authorization` header value (relative to the configuration file).
    #[serde(default)]
    pub authorization_header_file: Option<PathBuf>,
    /// Bound of one push, connection included (default 5 s, at most 60 s).
    #[serde(default = "default_push_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_events() -> Vec<String> {
    latch_core::ssf::EVENTS_SUPPORTED
        .iter()
        .map(|e| (*e).to_owned())
        .collect()
}

fn default_push_timeout() -> Duration {
    Duration::from_secs(5)
}

impl SsfReceiverConfig {
    /// The events this stream delivers: those requested that Latch sends (SSF 1.0 §8.1.1
    /// `events_delivered`), in the order Latch lists them.
    pub fn events_delivered(&self) -> Vec<&'static str> {
        latch_core::ssf::EVENTS_SUPPORTED
            .iter()
            .copied()
            .filter(|e| self.events_requested.iter().any(|r| r == e))
            .collect()
    }

    /// The `Authorization` header value, when one is configured.
    ///
    /// # Errors
    /// A message naming the file or variable that cannot be read (never its content).
    pub fn authorization(&self, base_dir: &Path) -> Result<Option<SecretString>, String> {
        secret(
            base_dir,
            self.authorization_header_file.as_deref(),
            self.authorization_header_env.as_deref(),
        )
        .map_err(|e| format!("ssf receiver `{}`: authorization header: {e}", self.name))
    }
}

/// One `[[ssf.transmitters]]` identity provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsfTransmitterConfig {
    /// Name: letters, digits, `-` or `_` (`ssf:<name>` is the actor of what its SETs do).
    pub name: String,
    /// The exact `iss` of its SETs.
    pub issuer: String,
    /// The `aud` Latch expects in its SETs.
    pub audience: String,
    /// Its signing keys: `{ url = "…" }` (https, or http to a loopback host) or
    /// `{ file = "…" }` (relative to the configuration file, re-read on refresh).
    pub jwks: JwksSource,
    /// Accepted signature algorithms (default `RS256`, `ES256`).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<SigningAlgorithm>,
    /// Oldest accepted `iat` (default 1 h, at most 7 days); a `jti` is remembered this long.
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_age: Duration,
    /// Clock skew tolerated on `iat` (default 60 s, at most 300 s).
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    /// Issuers whose `iss_sub` subjects name the humans tasks act for (default: `issuer`).
    #[serde(default)]
    pub subject_issuers: Vec<String>,
    /// Subject identifier formats read as humans (default: `iss_sub`, `email`, `opaque`,
    /// `account`); `complex` and `aliases` subjects are read for these.
    #[serde(default)]
    pub subject_formats: Vec<String>,
    /// A regular expression the human id must match in full (ASCII case ignored) for this
    /// transmitter to act for them, e.g. `".*@corp\\.example"`. Required when more than one
    /// transmitter is configured: every transmitter can sign any subject, so each says whose
    /// sessions it speaks for. Default (one transmitter): any human.
    #[serde(default)]
    pub humans: Option<String>,
    /// Environment variable holding the `Authorization` header its pushes must carry.
    #[serde(default)]
    pub authorization_header_env: Option<String>,
    /// File holding the `Authorization` header its pushes must carry.
    #[serde(default)]
    pub authorization_header_file: Option<PathBuf>,
}

impl SsfTransmitterConfig {
    /// The rules of its subjects: `subject_issuers` (default: its issuer), `subject_formats`
    /// (default: every human format), `humans` compiled.
    ///
    /// # Errors
    /// An unknown format, or a `humans` pattern that does not compile (named with the
    /// transmitter).
    pub fn subject_rules(&self) -> Result<SubjectRules, String> {
        let issuers = if self.subject_issuers.is_empty() {
            vec![self.issuer.clone()]
        } else {
            self.subject_issuers.clone()
        };
        let mut rules = SubjectRules::any_human(issuers);
        if !self.subject_formats.is_empty() {
            if let Some(bad) = self
                .subject_formats
                .iter()
                .find(|f| !HUMAN_FORMATS.contains(&f.as_str()))
            {
                return Err(format!(
                    "ssf transmitter `{}`: `subject_formats` has `{bad}`; the formats that name humans are {}",
                    self.name,
                    HUMAN_FORMATS.join(", ")
                ));
            }
            rules.formats.clone_from(&self.subject_formats);
        }
        if let Some(p) = &self.humans {
            rules.humans = Some(SubjectRules::humans_pattern(p).map_err(|e| {
                format!(
                    "ssf transmitter `{}`: `humans` is not a valid regular expression: {e}",
                    self.name
                )
            })?);
        }
        Ok(rules)
    }
}

fn default_algorithms() -> Vec<SigningAlgorithm> {
    vec![SigningAlgorithm::RS256, SigningAlgorithm::ES256]
}

fn default_max_age() -> Duration {
    Duration::from_secs(3600)
}

fn default_leeway() -> Duration {
    Duration::from_secs(60)
}

fn secret(
    base_dir: &Path,
    file: Option<&Path>,
    env: Option<&str>,
) -> Result<Option<SecretString>, String> {
    match (file, env) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err("give `authorization_header_file` or `_env`, not both".into()),
        (f, e) => read_secret(base_dir, f, e).map(Some),
    }
}

fn check_name(what: &str, n: &str) -> Result<(), String> {
    if n.is_empty()
        || n.len() > 64
        || !n
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "{what} name `{n}` must be 1 to 64 letters, digits, `-` or `_`"
        ));
    }
    Ok(())
}

/// https, or http to a loopback host.
fn check_push_url(name: &str, url: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "ssf receiver `{name}`: `endpoint_url` must be https (http only to a loopback host)"
        )
    };
    let u = url::Url::parse(url).map_err(|_| bad())?;
    let loopback = match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match u.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(bad()),
    }
}

impl SsfConfig {
    /// Checks names, URLs and bounds (secrets and keys are read at start).
    ///
    /// # Errors
    /// A message naming the receiver or transmitter and what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.poll_interval < Duration::from_millis(10) {
            return Err("`ssf.poll_interval` must be at least 10ms".into());
        }
        let mut names = std::collections::HashSet::new();
        for r in &self.receivers {
            check_name("ssf receiver", &r.name)?;
            if !names.insert(&r.name) {
                return Err(format!("duplicate ssf receiver name `{}`", r.name));
            }
            check_push_url(&r.name, &r.endpoint_url)?;
            if r.audience.is_empty() {
                return Err(format!("ssf receiver `{}`: `audience` is empty", r.name));
            }
            if r.events_delivered().is_empty() {
                return Err(format!(
                    "ssf receiver `{}`: `events_requested` names none of the events latch sends ({})",
                    r.name,
                    latch_core::ssf::EVENTS_SUPPORTED.join(", ")
                ));
            }
            if r.timeout.is_zero() || r.timeout > Duration::from_secs(60) {
                return Err(format!(
                    "ssf receiver `{}`: `timeout` must be between 1ms and 60s",
                    r.name
                ));
            }
            if r.authorization_header_env.is_some() && r.authorization_header_file.is_some() {
                return Err(format!(
                    "ssf receiver `{}`: give `authorization_header_file` or `_env`, not both",
                    r.name
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for t in &self.transmitters {
            check_name("ssf transmitter", &t.name)?;
            if !names.insert(&t.name) {
                return Err(format!("duplicate ssf transmitter name `{}`", t.name));
            }
            if t.issuer.is_empty() || t.audience.is_empty() {
                return Err(format!(
                    "ssf transmitter `{}`: `issuer` and `audience` must not be empty",
                    t.name
                ));
            }
            if matches!(t.jwks, JwksSource::Discovery) {
                return Err(format!(
                    "ssf transmitter `{}`: `jwks` needs `url` or `file`",
                    t.name
                ));
            }
            t.subject_rules()?;
            if self.transmitters.len() > 1 && t.humans.is_none() {
                return Err(format!(
                    "ssf transmitter `{}`: with more than one transmitter each must say whose sessions it speaks for: set `humans` (a regular expression over human ids, e.g. \".*@corp\\\\.example\")",
                    t.name
                ));
            }
        }
        Ok(())
    }

    /// The transmitters as the verifier takes them: JWKS files resolved against `base_dir`,
    /// authorization secrets read.
    ///
    /// # Errors
    /// A secret that cannot be read (named, never shown).
    pub fn transmitter_settings(
        &self,
        base_dir: &Path,
    ) -> Result<Vec<TransmitterSettings>, String> {
        self.transmitters
            .iter()
            .map(|t| {
                let jwks = match &t.jwks {
                    JwksSource::File(p) if p.is_relative() => JwksSource::File(base_dir.join(p)),
                    other => other.clone(),
                };
                let authorization = secret(
                    base_dir,
                    t.authorization_header_file.as_deref(),
                    t.authorization_header_env.as_deref(),
                )
                .map_err(|e| format!("ssf transmitter `{}`: authorization header: {e}", t.name))?;
                Ok(TransmitterSettings {
                    name: t.name.clone(),
                    issuer: t.issuer.clone(),
                    audience: t.audience.clone(),
                    jwks,
                    algorithms: t.algorithms.clone(),
                    max_age: t.max_age,
                    leeway: t.leeway,
                    subjects: t.subject_rules()?,
                    authorization,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<SsfConfig, String> {
        let c: SsfConfig = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn defaults_and_a_full_example_parse() {
        let c = parse(
            r#"
            [[receivers]]
            name = "siem"
            endpoint_url = "https://siem.example/ssf"
            audience = "https://siem.example"
            [[transmitters]]
            name = "idp"
            issuer = "https://idp.example"
            audience = "https://latch.example"
            jwks = { file = "idp.jwks" }
            "#,
        )
        .expect("parses");
        assert_eq!(c.poll_interval, Duration::from_secs(1));
        assert_eq!(
            c.receivers[0].events_delivered(),
            latch_core::ssf::EVENTS_SUPPORTED
        );
        let t = c
            .transmitter_settings(Path::new("/etc/latch"))
            .expect("settings");
        assert_eq!(
            t[0].subjects.issuers,
            vec!["https://idp.example".to_owned()]
        );
        assert_eq!(t[0].subjects.formats.len(), HUMAN_FORMATS.len());
        assert!(t[0].subjects.humans.is_none());
        assert_eq!(t[0].jwks, JwksSource::File("/etc/latch/idp.jwks".into()));
        assert_eq!(t[0].max_age, Duration::from_secs(3600));
        assert!(t[0].authorization.is_none());
    }

    fn transmitter(name: &str, extra: &str) -> String {
        format!(
            "[[transmitters]]\nname = \"{name}\"\nissuer = \"https://{name}\"\naudience = \"a\"\njwks = {{ url = \"https://{name}/j\" }}\n{extra}"
        )
    }

    #[test]
    fn bad_receivers_and_transmitters_are_refused() {
        let receiver = |extra: &str| {
            format!(
                "[[receivers]]\nname = \"siem\"\nendpoint_url = \"https://s.example\"\naudience = \"a\"\n{extra}"
            )
        };
        for bad in [
            receiver("events_requested = [\"urn:other\"]"),
            receiver("timeout = \"0s\""),
            "[[receivers]]\nname = \"s s\"\nendpoint_url = \"https://s\"\naudience = \"a\"".into(),
            "[[receivers]]\nname = \"s\"\nendpoint_url = \"http://s.example\"\naudience = \"a\"".into(),
            format!("{}\n{}", receiver(""), receiver("")),
            "[[transmitters]]\nname = \"i\"\nissuer = \"https://i\"\naudience = \"a\"\njwks = { discovery = true }".into(),
            "[[transmitters]]\nname = \"i\"\nissuer = \"\"\naudience = \"a\"\njwks = { url = \"https://i/j\" }".into(),
            transmitter("i", "subject_formats = [\"phone_number\"]"),
            transmitter("i", "humans = \"(\""),
            format!("{}\n{}", transmitter("a", ""), transmitter("b", "humans = \".*@b\"")),
        ] {
            assert!(parse(&bad).is_err(), "{bad}");
        }
        assert!(
            parse("[[receivers]]\nname = \"s\"\nendpoint_url = \"http://127.0.0.1:9/x\"\naudience = \"a\"")
                .is_ok()
        );
        let two = parse(&format!(
            "{}\n{}",
            transmitter(
                "a",
                "humans = \".*@a\\\\.example\"\nsubject_formats = [\"email\"]"
            ),
            transmitter("b", "humans = \".*@b\\\\.example\"")
        ))
        .expect("two transmitters, each with its humans");
        let rules = two.transmitters[0].subject_rules().unwrap();
        assert_eq!(rules.formats, vec!["email".to_owned()]);
        assert!(rules.may_act_for("x@a.example") && !rules.may_act_for("x@b.example"));
    }
}
