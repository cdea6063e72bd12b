//! Helpers shared by the providers: settings parsing, operator secrets, random passwords, names.

use std::path::PathBuf;

use latch_core::credential_format::{self, CredentialKind};
use latch_core::model::Resource;
use latch_core::ports::ProviderError;
use secrecy::SecretString;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

/// Parses a resource's `settings` table into `T`.
///
/// # Errors
/// A permanent [`ProviderError`] naming the resource and the serde message (settings are not
/// secret: secrets are referenced by file or environment variable name).
pub(crate) fn settings<T: DeserializeOwned>(resource: &Resource) -> Result<T, ProviderError> {
    let value = if resource.settings.is_null() {
        serde_json::Value::Object(Default::default())
    } else {
        resource.settings.clone()
    };
    serde_json::from_value(value).map_err(|e| {
        ProviderError::permanent(format!(
            "resource {} has invalid `{}` settings: {}",
            resource.id,
            resource.kind,
            latch_core::error::without_input_values(&e.to_string())
        ))
    })
}

/// A secret the operator supplies by reference: a file (first line, trimmed) or an environment
/// variable. Neither the value nor the file content ever appears in errors or logs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SecretRef {
    /// File holding the secret.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the secret.
    #[serde(default)]
    pub password_env: Option<String>,
}

impl SecretRef {
    /// Checks that at most one source is named.
    pub(crate) fn check(&self, resource: &Resource) -> Result<(), ProviderError> {
        if self.password_file.is_some() && self.password_env.is_some() {
            return Err(ProviderError::permanent(format!(
                "resource {}: set `password_file` or `password_env`, not both",
                resource.id
            )));
        }
        Ok(())
    }

    /// Reads the secret now (so an operator can rotate it without a restart); `None` when no
    /// source is configured.
    ///
    /// # Errors
    /// A permanent [`ProviderError`] naming the file or variable (never its content).
    pub(crate) fn read(&self) -> Result<Option<SecretString>, ProviderError> {
        if let Some(path) = &self.password_file {
            let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                ProviderError::permanent(format!(
                    "cannot read password file {}: {}",
                    path.display(),
                    e.kind()
                ))
            })?);
            let first = text.lines().next().unwrap_or("").trim();
            return Ok(Some(SecretString::from(first.to_owned())));
        }
        if let Some(var) = &self.password_env {
            let value = Zeroizing::new(std::env::var(var).map_err(|_| {
                ProviderError::permanent(format!(
                    "password environment variable {var} is not set or not valid unicode"
                ))
            })?);
            return Ok(Some(SecretString::from(value.trim().to_owned())));
        }
        Ok(None)
    }
}

/// A fresh password in Latch's scannable format (`ltcpg_…`, `ltcrd_…`: prefix, ~256 random bits
/// in base62, CRC-32 checksum; see [`latch_core::credential_format`]). 55 characters from
/// `[A-Za-z0-9_]`, safe in SQL literals and Redis ACL rules.
///
/// # Errors
/// A retryable [`ProviderError`] if the system random generator fails.
pub(crate) fn random_password(kind: CredentialKind) -> Result<Zeroizing<String>, ProviderError> {
    credential_format::generate(kind)
        .map_err(|()| ProviderError::retryable("random number generation failed"))
}

/// The distinguishing part of a Latch id such as `lease_019a…`: the text after the last `_`,
/// keeping only lowercase ASCII letters and digits, and at most its last `max` characters (for
/// UUIDv7 ids the tail holds the random bits, the head the timestamp).
pub(crate) fn id_tail(id: &str, max: usize) -> String {
    let core = id.rsplit('_').next().unwrap_or(id);
    let clean: Vec<char> = core
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let start = clean.len().saturating_sub(max);
    clean[start..].iter().collect()
}

/// `unix_secs` as an RFC 3339 UTC timestamp (`2026-11-29T16:00:00Z`).
///
/// # Errors
/// A permanent [`ProviderError`] if the time is out of range.
pub(crate) fn rfc3339(unix_secs: i64) -> Result<String, ProviderError> {
    time::OffsetDateTime::from_unix_timestamp(unix_secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .ok_or_else(|| ProviderError::permanent("timestamp out of range"))
}

/// Default back-dating of certificate validity starts, seconds (clock skew between the broker
/// and the verifiers).
pub(crate) fn default_backdate_secs() -> u64 {
    60
}

/// Largest accepted back-dating, seconds.
pub(crate) const MAX_BACKDATE_SECS: u64 = 600;

/// Refuses request `params` for a provider that takes none (anything but absent, `null` or
/// `{}`), so a typo or a parameter meant for another kind is not silently ignored.
pub(crate) fn no_params(kind: &str, params: &serde_json::Value) -> Result<(), ProviderError> {
    match params {
        serde_json::Value::Null => Ok(()),
        serde_json::Value::Object(m) if m.is_empty() => Ok(()),
        serde_json::Value::Object(m) => {
            let names: Vec<&str> = m.keys().map(String::as_str).collect();
            Err(ProviderError::invalid_request(format!(
                "{kind} resources take no params (got {})",
                names.join(", ")
            )))
        }
        _ => Err(ProviderError::invalid_request(format!(
            "{kind} resources take no params"
        ))),
    }
}

/// Validity window check shared by the providers.
pub(crate) fn check_window(issued: i64, expires: i64) -> Result<(), ProviderError> {
    if expires <= issued {
        return Err(ProviderError::permanent(
            "credential validity window is empty",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_tail_keeps_the_random_end() {
        assert_eq!(id_tail("lease_0190ABCdef", 6), "abcdef");
        assert_eq!(id_tail("task_12", 32), "12");
        assert_eq!(id_tail("weird-id!", 4), "rdid");
    }

    #[test]
    fn passwords_are_long_and_distinct() {
        let a = random_password(CredentialKind::Postgres).unwrap();
        let b = random_password(CredentialKind::Postgres).unwrap();
        assert_eq!(a.len(), credential_format::TOTAL_LEN);
        assert_ne!(*a, *b);
        assert!(a.starts_with("ltcpg_"));
        assert_eq!(credential_format::parse(&a), Some(CredentialKind::Postgres));
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0).unwrap(), "1970-01-01T00:00:00Z");
    }
}
