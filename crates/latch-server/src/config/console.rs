//! `[console]`: the approval console served under `/console/`, and how humans sign in to it.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::ConfigError;

/// `[console]`.
///
/// ```toml
/// [console]
/// enabled = true
/// issuer = "corp-sso"                 # a [[issuers]] entry with kind = "human"
/// client_id = "latch-console"
/// client_secret_file = "/etc/latch/console-client-secret"   # or client_secret_env
/// session_ttl = "8h"
/// authority_max_age = "10m"
/// ```
///
/// # Security
/// The client secret is never written in the TOML: only the file or environment variable that
/// holds it. Its value is read at start and kept in a [`SecretString`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Serve the console (default false).
    #[serde(default)]
    pub enabled: bool,
    /// The name of the `[[issuers]]` entry (kind `human`) humans sign in with, by the
    /// authorization code flow with PKCE. Without it, only the development sign-in is offered
    /// (and only while `[dev_issuer] enabled`).
    pub issuer: Option<String>,
    /// The OAuth client id Latch has at that provider.
    pub client_id: Option<String>,
    /// File holding the client secret (a confidential client; client_secret_basic).
    pub client_secret_file: Option<PathBuf>,
    /// Environment variable holding the client secret.
    pub client_secret_env: Option<String>,
    /// Scopes asked for (default `openid profile email groups`; `openid` is always sent).
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// How long a console session lasts (default 8 h, 5 min to 7 days).
    #[serde(default = "default_session_ttl", with = "humantime_serde")]
    pub session_ttl: Duration,
    /// How long a sign-in's groups are trusted for a vote or an operator action (default
    /// 10 min, 1 min to `session_ttl`). Past it, pages stay readable but the action is not
    /// taken: the browser is sent through sign-in again (silent while the provider's own
    /// session lives), which reads the groups afresh, and back to the page it came from.
    #[serde(default = "default_authority_max_age", with = "humantime_serde")]
    pub authority_max_age: Duration,
    /// How long a sign-in may take at the provider (default 10 min, 1 min to 1 h).
    #[serde(default = "default_login_ttl", with = "humantime_serde")]
    pub login_ttl: Duration,
}

fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email", "groups"]
        .map(str::to_owned)
        .to_vec()
}
fn default_session_ttl() -> Duration {
    Duration::from_secs(8 * 3600)
}
fn default_authority_max_age() -> Duration {
    Duration::from_secs(600)
}
fn default_login_ttl() -> Duration {
    Duration::from_secs(600)
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            issuer: None,
            client_id: None,
            client_secret_file: None,
            client_secret_env: None,
            scopes: default_scopes(),
            session_ttl: default_session_ttl(),
            authority_max_age: default_authority_max_age(),
            login_ttl: default_login_ttl(),
        }
    }
}

impl ConsoleConfig {
    /// Checks the section against the issuers it names.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the field: an issuer that is missing or not `kind = "human"`, a
    /// client id or secret source missing (or both secret sources given), a TTL out of bounds
    /// (`authority_max_age` above `session_ttl` included),
    /// or an enabled console with neither a provider nor the development issuer.
    pub fn validate(
        &self,
        issuers: &[latch_identity::IssuerConfig],
        dev_enabled: bool,
    ) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        let err = |m: &str| Err(ConfigError(format!("[console]: {m}")));
        if !(Duration::from_secs(300)..=Duration::from_secs(7 * 86_400)).contains(&self.session_ttl)
        {
            return err("`session_ttl` must be 5m to 7d");
        }
        if !(Duration::from_secs(60)..=self.session_ttl).contains(&self.authority_max_age) {
            return err("`authority_max_age` must be 1m to `session_ttl`");
        }
        if !(Duration::from_secs(60)..=Duration::from_secs(3600)).contains(&self.login_ttl) {
            return err("`login_ttl` must be 1m to 1h");
        }
        let Some(name) = &self.issuer else {
            if dev_enabled {
                return Ok(());
            }
            return err(
                "`issuer` (a human [[issuers]] entry) is required unless [dev_issuer] is enabled",
            );
        };
        let Some(issuer) = issuers.iter().find(|i| &i.name == name) else {
            return err(&format!("`issuer` names no [[issuers]] entry `{name}`"));
        };
        if issuer.kind != latch_identity::IssuerKind::Human {
            return err(&format!("issuer `{name}` is not `kind = \"human\"`"));
        }
        if issuer.algorithms.is_empty() {
            return err(&format!("issuer `{name}` accepts no algorithm"));
        }
        if self.client_id.as_deref().is_none_or(str::is_empty) {
            return err("`client_id` is required with `issuer`");
        }
        match (&self.client_secret_file, &self.client_secret_env) {
            (Some(_), Some(_)) => err("give one of `client_secret_file` and `client_secret_env`"),
            (None, None) => {
                err("`client_secret_file` or `client_secret_env` is required with `issuer`")
            }
            _ => Ok(()),
        }
    }

    /// Reads the client secret from its file (trimmed) or environment variable.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file or variable (never the value) when it cannot be read
    /// or is empty.
    pub fn client_secret(
        &self,
        resolve: impl Fn(&PathBuf) -> PathBuf,
    ) -> Result<SecretString, ConfigError> {
        let value = if let Some(f) = &self.client_secret_file {
            let path = resolve(f);
            std::fs::read_to_string(&path)
                .map_err(|e| {
                    ConfigError(format!(
                        "[console]: `client_secret_file` {}: {e}",
                        path.display()
                    ))
                })?
                .trim()
                .to_owned()
        } else if let Some(var) = &self.client_secret_env {
            std::env::var(var).map_err(|_| {
                ConfigError(format!(
                    "[console]: environment variable `{var}` (client_secret_env) is not set"
                ))
            })?
        } else {
            return Err(ConfigError("[console]: no client secret configured".into()));
        };
        if value.is_empty() {
            return Err(ConfigError("[console]: the client secret is empty".into()));
        }
        Ok(SecretString::from(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_max_age_is_bounded_by_the_session() {
        let mut c = ConsoleConfig {
            enabled: true,
            ..ConsoleConfig::default()
        };
        assert_eq!(c.authority_max_age, Duration::from_secs(600));
        assert!(c.validate(&[], true).is_ok());
        c.authority_max_age = c.session_ttl + Duration::from_secs(1);
        let e = c.validate(&[], true).unwrap_err().to_string();
        assert!(e.contains("authority_max_age"), "{e}");
        c.authority_max_age = Duration::from_secs(30);
        assert!(c.validate(&[], true).is_err());
    }
}
