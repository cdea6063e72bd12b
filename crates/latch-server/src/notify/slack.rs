//! Slack incoming webhooks: one Block Kit message per notification, with what is asked and a
//! button to the request's console page.
//!
//! # Security
//! Everything an agent or an identity provider wrote (purpose, justification, repository,
//! branch, resource names) goes into `plain_text` objects, which Slack never parses as mrkdwn
//! (no `*bold*`, no `<!channel>`, no `<url|label>` links); `&`, `<` and `>` are entity-escaped
//! as Slack asks for all text, and control, bidi and zero-width characters are made visible.
//! Only Latch's own labels are mrkdwn. The webhook URL is the channel's secret: it is held in a
//! `SecretString` and never logged.

use async_trait::async_trait;
use latch_core::notify::{ApprovalNotice, DeliveryError, Notification, NotificationChannel};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::{human_secs, line, send, source_of};

/// Longest value shown in one field (Slack's limit for a field's text is 2,000).
const FIELD_MAX: usize = 300;

/// A Slack incoming-webhook channel.
pub struct SlackChannel {
    name: String,
    url: SecretString,
    http: reqwest::Client,
}

impl std::fmt::Debug for SlackChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackChannel")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SlackChannel {
    /// A channel named `name` posting to the incoming-webhook `url`.
    pub fn new(name: String, url: SecretString, http: reqwest::Client) -> Self {
        Self { name, url, http }
    }
}

/// Text Slack shows literally: escaped for one line ([`line`]), then `&`, `<`, `>` as entities.
fn plain(s: &str, max: usize) -> String {
    line(s, max)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn field(label: &str, value: &str) -> Value {
    json!({"type": "plain_text", "text": format!("{label}: {}", plain(value, FIELD_MAX)), "emoji": false})
}

/// The Block Kit message for one notice: a header, the facts as plain-text fields, the
/// justification, and a button (and link) to the console page (or the `latch approve` command
/// when the console is not served).
pub fn message(n: &ApprovalNotice) -> Value {
    let fields = vec![
        field("Resource", &n.resource),
        field("Environment", &n.environment),
        field("Actions", &n.actions.join(", ")),
        field("TTL", &human_secs(n.ttl_secs)),
        field("Repository / branch", &source_of(n)),
        field("Approver groups", &n.groups.join(", ")),
        field("Workload", &n.workload),
        field(
            "On behalf of",
            n.on_behalf_of.as_deref().unwrap_or("(nobody named)"),
        ),
    ];
    let summary = format!(
        "Access request {} needs approval: {} on {} ({})",
        n.request_id,
        n.actions.join(", "),
        n.resource,
        n.environment
    );
    json!({
        "text": plain(&summary, 500),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "Access request waiting for approval", "emoji": false}},
            {"type": "section", "text": {"type": "plain_text", "text": format!("Task purpose: {}", plain(&n.purpose, 1000)), "emoji": false}},
            {"type": "section", "fields": fields},
            {"type": "section", "text": {"type": "plain_text", "text": format!("Justification: {}", plain(&n.justification, 1000)), "emoji": false}},
            next_step(n),
            {"type": "context", "elements": [{"type": "plain_text", "emoji": false,
                "text": plain(&format!("Request {} · task {} · digest {}", n.request_id, n.task_id, n.digest), 300)}]},
        ],
    })
}

/// The button to the console page when the broker serves the console; otherwise the
/// `latch approve` command an approver runs.
fn next_step(n: &ApprovalNotice) -> Value {
    match &n.console_url {
        Some(url) => json!({"type": "actions", "elements": [{
            "type": "button", "action_id": "open_console",
            "text": {"type": "plain_text", "text": "Review in the Latch console", "emoji": false},
            "url": url, "style": "primary",
        }]}),
        None => json!({"type": "section", "text": {"type": "plain_text", "emoji": false,
            "text": plain(&format!("Review and approve with: latch approve {}", n.request_id), 300)}}),
    }
}

#[async_trait]
impl NotificationChannel for SlackChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &str {
        "slack"
    }

    async fn deliver(&self, n: &Notification) -> Result<(), DeliveryError> {
        send(
            self.http
                .post(self.url.expose_secret())
                .json(&message(&n.notice)),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice() -> ApprovalNotice {
        ApprovalNotice {
            request_id: "req_1".into(),
            task_id: "task_1".into(),
            workload: "iss#sub".into(),
            resource: "orders-db".into(),
            environment: "production".into(),
            sensitivity: "secret".into(),
            actions: vec!["read".into()],
            ttl_secs: 900,
            purpose: "fix *bold* <!channel> <https://evil|click>".into(),
            justification: "x\u{202e}y\nz".into(),
            repository: Some("acme/app".into()),
            branch: Some("main".into()),
            on_behalf_of: None,
            groups: vec!["prod-approvers".into()],
            digest: "ab".into(),
            expires_at_unix_secs: 0,
            console_url: Some("https://latch.example/console/requests/req_1".into()),
        }
    }

    #[test]
    fn agent_text_cannot_format_mention_or_link() {
        let m = message(&notice()).to_string();
        assert!(!m.contains("<!channel>"), "{m}");
        assert!(!m.contains("<https://evil"), "{m}");
        assert!(m.contains("&lt;!channel&gt;"), "{m}");
        assert!(!m.contains('\u{202e}'));
        assert!(m.contains("\\\\u{202e}"), "{m}");
        assert!(!m.contains("\"mrkdwn\""), "{m}");
        assert!(m.contains("https://latch.example/console/requests/req_1"));
    }
}
