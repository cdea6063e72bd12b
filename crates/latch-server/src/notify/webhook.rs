//! Generic webhooks, signed per the Standard Webhooks specification
//! (<https://www.standardwebhooks.com/>, `spec/standard-webhooks.md`):
//!
//! - `webhook-id`: the notification id (`ntf_…`), the same on every retry: receivers
//!   deduplicate on it;
//! - `webhook-timestamp`: Unix seconds of this attempt;
//! - `webhook-signature`: `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, where
//!   `key` is the base64-decoded part of the `whsec_…` secret.
//!
//! The body is `{"type": "request.step_up", "timestamp": "<RFC 3339>", "data": {…}}` with
//! the [`ApprovalNotice`] as `data`. The book (docs/src/approvals.md) shows how a receiver
//! verifies it.
//!
//! # Security
//! HMAC comes from the `hmac` and `sha2` crates. The key is held in a `SecretBox` (zeroized on
//! drop, absent from `Debug`).

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use latch_core::Clock;
use latch_core::notify::{ApprovalNotice, DeliveryError, Notification, NotificationChannel};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::Sha256;

use super::send;

/// The prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// A signed-webhook channel.
pub struct WebhookChannel {
    name: String,
    url: String,
    key: SecretBox<Vec<u8>>,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
}

impl std::fmt::Debug for WebhookChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookChannel")
            .field("name", &self.name)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Decodes a `whsec_<base64>` secret into its key (at least 24 bytes, as the specification
/// recommends 24 to 64).
///
/// # Errors
/// A message that never repeats the secret.
pub fn signing_key(secret: &SecretString) -> Result<SecretBox<Vec<u8>>, String> {
    let s = secret.expose_secret();
    let b64 = s
        .strip_prefix(SECRET_PREFIX)
        .ok_or("a webhook secret must look like `whsec_<base64>`")?;
    let key = STANDARD
        .decode(b64)
        .map_err(|_| "the webhook secret after `whsec_` is not base64")?;
    if key.len() < 24 {
        return Err("the webhook secret must hold at least 24 bytes (32 recommended)".into());
    }
    Ok(SecretBox::new(Box::new(key)))
}

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length; the error case cannot happen.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The JSON body for one notification sent at `now` (Unix seconds).
pub fn body(event: &str, notice: &ApprovalNotice, now: i64) -> Vec<u8> {
    let ts = time::OffsetDateTime::from_unix_timestamp(now)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    serde_json::to_vec(&serde_json::json!({"type": event, "timestamp": ts, "data": notice}))
        .unwrap_or_default()
}

impl WebhookChannel {
    /// A channel named `name` posting to `url`, signing with `key`.
    pub fn new(
        name: String,
        url: String,
        key: SecretBox<Vec<u8>>,
        clock: Arc<dyn Clock>,
        http: reqwest::Client,
    ) -> Self {
        Self {
            name,
            url,
            key,
            clock,
            http,
        }
    }
}

#[async_trait]
impl NotificationChannel for WebhookChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &str {
        "webhook"
    }

    async fn deliver(&self, n: &Notification) -> Result<(), DeliveryError> {
        let now = self.clock.now_unix_secs();
        let body = body(&n.event, &n.notice, now);
        let sig = signature(self.key.expose_secret(), &n.id, now, &body);
        send(
            self.http
                .post(&self.url)
                .header("content-type", "application/json")
                .header("webhook-id", &n.id)
                .header("webhook-timestamp", now.to_string())
                .header("webhook-signature", sig)
                .body(body),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference libraries' tests.
    #[test]
    fn signature_matches_the_reference_example() {
        let key = signing_key(&SecretString::from(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned(),
        ))
        .unwrap();
        let sig = signature(
            key.expose_secret(),
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_are_checked_without_being_repeated() {
        let e = signing_key(&SecretString::from("plain-secret".to_owned())).unwrap_err();
        assert!(!e.contains("plain-secret"));
        assert!(signing_key(&SecretString::from("whsec_c2hvcnQ=".to_owned())).is_err());
    }
}
