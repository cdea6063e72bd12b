//! `[notify]` and `[[notifications]]` in `latch.toml`: who is told when a request needs
//! approval, and how hard Latch tries.
//!
//! ```toml
//! [notify]
//! max_attempts = 8        # then the notification is given up (audited, counted)
//! backoff = "5s"          # first retry delay, doubled per failure
//! backoff_max = "10m"
//! attempt_timeout = "10s" # one delivery attempt, connect included
//! poll_interval = "1s"    # how often the outbox is read
//!
//! [[notifications]]
//! name = "prod-slack"
//! kind = "slack"                       # Slack incoming webhook (Block Kit)
//! groups = ["prod-approvers"]          # approver groups it serves; "*" for all
//! url_file = "/etc/latch/slack-url"    # or url_env: the webhook URL is a secret
//!
//! [[notifications]]
//! name = "pager"
//! kind = "webhook"                     # JSON, signed per Standard Webhooks
//! groups = ["*"]
//! url = "https://hooks.example.com/latch"
//! secret_env = "LATCH_WEBHOOK_SECRET"  # or secret_file; `whsec_<base64>`
//!
//! [[notifications]]
//! name = "mail"
//! kind = "email"                       # SMTP, plain text
//! groups = ["prod-approvers"]
//! smtp_host = "mail.example.com"
//! smtp_port = 587
//! tls = "starttls"                     # "tls", "starttls" or "none" (loopback only)
//! username = "latch"
//! password_file = "/etc/latch/smtp-password"   # or password_env
//! from = "latch@example.com"
//! to = ["prod-approvers@example.com"]
//! ```
//!
//! # Security
//! Secrets (the Slack URL, the webhook signing secret, the SMTP password) come from a file or
//! an environment variable, never from `latch.toml` itself; they are read at start into
//! [`SecretString`]s whose `Debug` shows nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use latch_core::notify::{ChannelRoute, NotifySettings};
use secrecy::SecretString;
use serde::Deserialize;

/// `[notify]`: retries of every channel.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Attempts before a notification is given up (default 8, at least 1).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// First retry delay (default 5 s, at least 1 s); doubles per failed attempt.
    #[serde(default = "default_backoff", with = "humantime_serde")]
    pub backoff: Duration,
    /// Longest retry delay (default 10 min).
    #[serde(default = "default_backoff_max", with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Deadline of one delivery attempt, connect included (default 10 s).
    #[serde(default = "default_attempt_timeout", with = "humantime_serde")]
    pub attempt_timeout: Duration,
    /// How often the outbox is read for due notifications (default 1 s, at least 10 ms).
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
}

fn default_max_attempts() -> u32 {
    8
}
fn default_backoff() -> Duration {
    Duration::from_secs(5)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(600)
}
fn default_attempt_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_poll_interval() -> Duration {
    Duration::from_secs(1)
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            backoff: default_backoff(),
            backoff_max: default_backoff_max(),
            attempt_timeout: default_attempt_timeout(),
            poll_interval: default_poll_interval(),
        }
    }
}

impl NotifyConfig {
    /// The broker's notification settings for these channels.
    pub fn settings(&self, channels: &[NotificationConfig]) -> NotifySettings {
        let attempt = self.attempt_timeout.as_secs().max(1) as i64;
        NotifySettings {
            routes: channels
                .iter()
                .map(|c| ChannelRoute {
                    name: c.name.clone(),
                    groups: c.groups.clone(),
                })
                .collect(),
            max_attempts: self.max_attempts.max(1),
            backoff_base_secs: self.backoff.as_secs().max(1) as i64,
            backoff_max_secs: self.backoff_max.as_secs().max(1) as i64,
            // A claim outlives one attempt by a wide margin, so no other replica takes a row
            // over while its attempt may still succeed.
            claim_secs: (attempt * 3).max(30),
        }
    }

    /// The outbox poll interval, never below 10 ms.
    pub fn poll_interval(&self) -> Duration {
        self.poll_interval.max(Duration::from_millis(10))
    }
}

/// `tls` of an e-mail channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Implicit TLS (SMTPS, port 465).
    Tls,
    /// Plain connection upgraded with STARTTLS (required; port 587).
    Starttls,
    /// No TLS: only for a relay on loopback.
    None,
}

/// One `[[notifications]]` channel. Which fields apply depends on `kind`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationConfig {
    /// Name (letters, digits, `-`, `_`), unique: the outbox rows' `channel`.
    pub name: String,
    /// `slack`, `webhook` or `email`.
    pub kind: String,
    /// Approver groups this channel tells (`*`: every group). Required.
    pub groups: Vec<String>,
    /// `webhook`: the receiver's http(s) URL (not secret: the body is signed).
    pub url: Option<String>,
    /// `slack`: file holding the incoming-webhook URL (a secret).
    pub url_file: Option<PathBuf>,
    /// `slack`: environment variable holding the incoming-webhook URL.
    pub url_env: Option<String>,
    /// `webhook`: file holding the signing secret (`whsec_<base64>`, Standard Webhooks).
    pub secret_file: Option<PathBuf>,
    /// `webhook`: environment variable holding the signing secret.
    pub secret_env: Option<String>,
    /// `email`: SMTP server host.
    pub smtp_host: Option<String>,
    /// `email`: SMTP port (default 465 for `tls`, 587 for `starttls`, 25 for `none`).
    pub smtp_port: Option<u16>,
    /// `email`: how the connection is protected (default `starttls`).
    pub tls: Option<SmtpTls>,
    /// `email`: SMTP user name, if the server requires authentication.
    pub username: Option<String>,
    /// `email`: file holding the SMTP password.
    pub password_file: Option<PathBuf>,
    /// `email`: environment variable holding the SMTP password.
    pub password_env: Option<String>,
    /// `email`: sender address.
    pub from: Option<String>,
    /// `email`: recipients.
    #[serde(default)]
    pub to: Vec<String>,
}

impl NotificationConfig {
    /// Checks the fields `kind` needs (and that no secret sits in the file itself).
    ///
    /// # Errors
    /// A message naming the channel and the field.
    pub fn validate(&self) -> Result<(), String> {
        let n = &self.name;
        if n.is_empty()
            || !n
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "notification channel name `{n}` must be letters, digits, `-` or `_`"
            ));
        }
        if self.groups.is_empty() || self.groups.iter().any(String::is_empty) {
            return Err(format!(
                "notification channel `{n}`: `groups` must name at least one group (\"*\" for all)"
            ));
        }
        let one_of = |a: bool, b: bool, what: &str| match (a, b) {
            (true, false) | (false, true) => Ok(()),
            _ => Err(format!(
                "notification channel `{n}`: set exactly one of `{what}_file` and `{what}_env`"
            )),
        };
        match self.kind.as_str() {
            "slack" => {
                if self.url.is_some() {
                    return Err(format!(
                        "notification channel `{n}`: a Slack webhook URL is a secret: use `url_file` or `url_env`, not `url`"
                    ));
                }
                one_of(self.url_file.is_some(), self.url_env.is_some(), "url")
            }
            "webhook" => {
                let url = self.url.as_deref().unwrap_or("");
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(format!(
                        "notification channel `{n}`: `url` must be an http(s) URL"
                    ));
                }
                one_of(
                    self.secret_file.is_some(),
                    self.secret_env.is_some(),
                    "secret",
                )
            }
            "email" => {
                if self.smtp_host.as_deref().is_none_or(str::is_empty)
                    || self.from.is_none()
                    || self.to.is_empty()
                {
                    return Err(format!(
                        "notification channel `{n}`: e-mail needs `smtp_host`, `from` and `to`"
                    ));
                }
                if self.username.is_some() {
                    one_of(
                        self.password_file.is_some(),
                        self.password_env.is_some(),
                        "password",
                    )?;
                }
                Ok(())
            }
            other => Err(format!(
                "notification channel `{n}`: unknown kind `{other}` (slack, webhook, email)"
            )),
        }
    }
}

/// Reads a secret from a file (relative to `base_dir`; surrounding whitespace trimmed) or an
/// environment variable.
///
/// # Errors
/// A message naming the file or variable, never its content.
pub fn read_secret(
    base_dir: &Path,
    file: Option<&Path>,
    env: Option<&str>,
) -> Result<SecretString, String> {
    let raw = match (file, env) {
        (Some(f), _) => {
            let p = if f.is_absolute() {
                f.to_path_buf()
            } else {
                base_dir.join(f)
            };
            std::fs::read_to_string(&p)
                .map_err(|e| format!("cannot read `{}`: {e}", p.display()))?
        }
        (None, Some(v)) => std::env::var(v)
            .map_err(|_| format!("environment variable `{v}` is not set (or not UTF-8)"))?,
        (None, None) => return Err("no secret source".into()),
    };
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err("the secret is empty".into());
    }
    Ok(SecretString::from(trimmed.to_owned()))
}
