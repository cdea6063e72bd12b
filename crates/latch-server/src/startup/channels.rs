//! The approver-notification channels of `[[notifications]]` (Slack, signed webhook, e-mail):
//! part of the wiring, so the one place naming concrete types stays `startup`.

use std::sync::Arc;
use std::time::Duration;

use latch_core::Clock;
use latch_core::notify::NotificationChannel;

use super::StartError;
use crate::config::{Config, SmtpTls, read_secret};
use crate::notify::email::{EmailChannel, SmtpSettings};
use crate::notify::slack::SlackChannel;
use crate::notify::webhook::{WebhookChannel, signing_key};

/// The approver-notification channels of `[[notifications]]`, their secrets read from files
/// or the environment.
pub(super) fn build_channels(
    config: &Config,
    clock: &Arc<dyn Clock>,
) -> Result<Vec<Arc<dyn NotificationChannel>>, StartError> {
    let timeout = config
        .notify
        .attempt_timeout
        .max(Duration::from_millis(100));
    let http = crate::notify::http_client(timeout).map_err(StartError)?;
    let mut out: Vec<Arc<dyn NotificationChannel>> = Vec::new();
    for c in &config.notifications {
        let fail = |e: String| StartError(format!("notification channel `{}`: {e}", c.name));
        let secret = |file: &Option<std::path::PathBuf>, env: &Option<String>| {
            read_secret(&config.base_dir, file.as_deref(), env.as_deref()).map_err(fail)
        };
        let ch: Arc<dyn NotificationChannel> = match c.kind.as_str() {
            "slack" => Arc::new(SlackChannel::new(
                c.name.clone(),
                secret(&c.url_file, &c.url_env)?,
                http.clone(),
            )),
            "webhook" => Arc::new(WebhookChannel::new(
                c.name.clone(),
                c.url.clone().unwrap_or_default(),
                signing_key(&secret(&c.secret_file, &c.secret_env)?).map_err(fail)?,
                clock.clone(),
                http.clone(),
            )),
            _ => {
                let credentials = match &c.username {
                    Some(u) => Some((u.clone(), secret(&c.password_file, &c.password_env)?)),
                    None => None,
                };
                Arc::new(
                    EmailChannel::new(
                        c.name.clone(),
                        SmtpSettings {
                            host: c.smtp_host.clone().unwrap_or_default(),
                            port: c.smtp_port,
                            tls: c.tls.unwrap_or(SmtpTls::Starttls),
                            credentials,
                            from: c.from.clone().unwrap_or_default(),
                            to: c.to.clone(),
                            timeout,
                        },
                    )
                    .map_err(StartError)?,
                )
            }
        };
        out.push(ch);
    }
    Ok(out)
}
