//! Helpers shared by the providers: settings parsing, operator secrets, random passwords, names.

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latch_core::model::Resource;
use latch_core::ports::ProviderError;
use secrecy::SecretString;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

/// Bytes of OS randomness in a generated password (256 bits).
const PASSWORD_BYTES: usize = 32;

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
            "resource {} has invalid `{}` settings: {e}",
            resource.id, resource.kind
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

/// A fresh password: 32 bytes from the OS random generator (through aws-lc-rs), base64url
/// without padding (43 characters from `[A-Za-z0-9_-]`, safe in SQL literals and Redis ACL rules).
///
/// # Errors
/// A retryable [`ProviderError`] if the system random generator fails.
pub(crate) fn random_password() -> Result<Zeroizing<String>, ProviderError> {
    let mut bytes = Zeroizing::new([0u8; PASSWORD_BYTES]);
    aws_lc_rs::rand::fill(&mut bytes[..])
        .map_err(|_| ProviderError::retryable("random number generation failed"))?;
    let mut out = Zeroizing::new(String::with_capacity(64));
    URL_SAFE_NO_PAD.encode_string(&bytes[..], &mut out);
    Ok(out)
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
        let a = random_password().unwrap();
        let b = random_password().unwrap();
        assert_eq!(a.len(), 43);
        assert_ne!(*a, *b);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0).unwrap(), "1970-01-01T00:00:00Z");
    }
}
