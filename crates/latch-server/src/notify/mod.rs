//! The channels that tell approvers a request waits: [`slack`] (incoming webhook, Block Kit),
//! [`webhook`] (JSON signed per Standard Webhooks) and [`email`] (SMTP, plain text). Each
//! implements [`latch_core::notify::NotificationChannel`]; `startup.rs` builds them from
//! `[[notifications]]` and the `notify` job delivers the outbox through them.
//!
//! # Security
//! A message carries what a [`latch_core::notify::ApprovalNotice`] holds (ids, names, the
//! request's facts, the console URL): never a credential or token. A channel's secrets live in
//! `SecretString`s, and a failure is described without its URL (a Slack URL is its secret).

use latch_core::notify::DeliveryError;

pub mod email;
pub mod slack;
pub mod webhook;

/// The HTTP client the web channels share: no redirects (a signed message goes where it was
/// configured to, nowhere else), every attempt bounded by `timeout`.
///
/// # Errors
/// A message when the TLS stack cannot be set up.
pub fn http_client(timeout: std::time::Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout)
        .timeout(timeout)
        .build()
        .map_err(|_| "cannot build the notification HTTP client".to_owned())
}

/// Sends `req` and maps the outcome: a 2xx answer is delivered; anything else is a
/// [`DeliveryError`] that names the status or the kind of failure, never the URL.
pub(crate) async fn send(req: reqwest::RequestBuilder) -> Result<(), DeliveryError> {
    match req.send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(DeliveryError(format!(
            "the receiver answered HTTP {}",
            r.status().as_u16()
        ))),
        Err(e) => Err(DeliveryError(describe(&e).to_owned())),
    }
}

fn describe(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "the receiver did not answer in time"
    } else if e.is_connect() {
        "could not connect to the receiver"
    } else {
        "the request to the receiver failed"
    }
}

/// A value for one line a human reads: control, bidi and zero-width characters made visible
/// ([`latch_core::audit::escape_text`]) and cut to `max` characters.
pub(crate) fn line(s: &str, max: usize) -> String {
    let escaped = latch_core::audit::escape_text(s);
    if escaped.chars().count() <= max {
        return escaped.into_owned();
    }
    let mut cut: String = escaped.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// `repository @ branch`, or what of it is known.
pub(crate) fn source_of(n: &latch_core::notify::ApprovalNotice) -> String {
    match (&n.repository, &n.branch) {
        (Some(r), Some(b)) => format!("{r} @ {b}"),
        (Some(r), None) => r.clone(),
        (None, Some(b)) => format!("(unknown repository) @ {b}"),
        (None, None) => "(unknown)".into(),
    }
}

/// A duration in seconds as people say it (`90s`, `15m`, `2h 30m`).
pub(crate) fn human_secs(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 if s % 60 == 0 => format!("{}m", s / 60),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        _ if s % 3600 == 0 => format!("{}h", s / 3600),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_escaped_and_bounded() {
        assert_eq!(line("main\u{202e}gnp.exe", 100), "main\\u{202e}gnp.exe");
        assert_eq!(line("a\nb", 100), "a\\u{000a}b");
        assert_eq!(line("abcdef", 4), "abc…");
        assert_eq!(human_secs(900), "15m");
        assert_eq!(human_secs(5400), "1h 30m");
    }
}
