//! Notifications to approvers: the rows of the transactional outbox ([`Notification`]), what
//! they say ([`ApprovalNotice`]), the channel port ([`NotificationChannel`]) and the routing and
//! retry settings ([`NotifySettings`]).
//!
//! When a request goes to step-up, the broker writes one [`Notification`] per channel that
//! serves one of the request's approver groups, in the same [`crate::ports::WriteBatch`] as the
//! decision: the request never waits on delivery, and a decision is never recorded without its
//! notifications (nor the reverse). A background job claims due rows, hands each to its channel,
//! and records the outcome (see `Broker::due_notifications`, `Broker::record_delivery`).
//! Delivery is at least once: a receiver deduplicates by [`Notification::id`].
//!
//! # Security
//! A notice carries ids, names, the request's non-secret facts and the console URL; never a
//! credential, a token or a secret. A channel's own secrets (webhook URLs, signing keys, SMTP
//! passwords) stay in the channel and are never stored in a row.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// The event a notification tells of.
pub const EVENT_STEP_UP: &str = "request.step_up";

/// State of one outbox row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationState {
    /// Not yet delivered; attempted when `next_attempt_at_unix_secs` has come.
    Pending,
    /// The channel confirmed delivery.
    Delivered,
    /// Given up after the configured number of attempts (audited, counted).
    Failed,
}

impl NotificationState {
    /// Stable string form (stored in the `state` column).
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationState::Pending => "pending",
            NotificationState::Delivered => "delivered",
            NotificationState::Failed => "failed",
        }
    }
}

/// What a step-up notification says: what is asked, by whom, and where to decide. Every text
/// field is as the agent or the identity provider wrote it; channels escape it for their
/// medium.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalNotice {
    /// The access request (`req_…`).
    pub request_id: String,
    /// Its task (`task_…`).
    pub task_id: String,
    /// The workload principal that asked (`iss#sub`).
    pub workload: String,
    /// Resource id.
    pub resource: String,
    /// The resource's environment.
    pub environment: String,
    /// The resource's sensitivity.
    pub sensitivity: String,
    /// Actions asked for, sorted.
    pub actions: Vec<String>,
    /// TTL asked for (seconds).
    pub ttl_secs: i64,
    /// The task's purpose (free text).
    pub purpose: String,
    /// The agent's justification (free text).
    pub justification: String,
    /// Repository the task is on, if known.
    pub repository: Option<String>,
    /// Branch the task is on, if known.
    pub branch: Option<String>,
    /// The human the agent acts for, if known.
    pub on_behalf_of: Option<String>,
    /// Approver groups asked (all of the request's step-up groups).
    pub groups: Vec<String>,
    /// The request digest approvals bind to (SHA-256 hex).
    pub digest: String,
    /// When the request stops waiting (Unix seconds).
    pub expires_at_unix_secs: i64,
    /// The request's page in the approval console; `None` when the broker does not serve the
    /// console (the notice then names the `latch approve` command instead). Rows written
    /// before it was optional hold a string and still decode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_url: Option<String>,
}

/// One outbox row: a message for one channel, with its delivery state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// `ntf_<uuid>`: stable across retries, the idempotency key receivers deduplicate on
    /// (Standard Webhooks `webhook-id`, e-mail `Message-ID`).
    pub id: String,
    /// Name of the configured channel that delivers it.
    pub channel: String,
    /// The event ([`EVENT_STEP_UP`]).
    pub event: String,
    /// Delivery state.
    pub state: NotificationState,
    /// When it was written (Unix seconds).
    pub created_at_unix_secs: i64,
    /// When it is (next) due (Unix seconds).
    pub next_attempt_at_unix_secs: i64,
    /// Attempts that failed so far.
    pub attempts: u32,
    /// The last failure, in words (no URL, no secret).
    pub last_error: Option<String>,
    /// When the channel confirmed delivery (Unix seconds).
    pub delivered_at_unix_secs: Option<i64>,
    /// What it says.
    pub notice: ApprovalNotice,
    /// Optimistic-concurrency version (compare-and-set).
    pub version: i64,
}

/// A failed delivery attempt, in words fit for logs and the audit trail: never a URL (Slack's
/// carry their secret), a header or a body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DeliveryError(pub String);

/// A way to tell approvers (Slack, a signed webhook, e-mail). Implemented in `latch-server`;
/// named only by `startup.rs`.
#[async_trait]
pub trait NotificationChannel: Send + Sync + 'static {
    /// The configured name (`[[notifications]] name`), the `channel` of its rows.
    fn name(&self) -> &str;
    /// The kind (`slack`, `webhook`, `email`): the `channel` label of the metrics.
    fn kind(&self) -> &str;
    /// Delivers one notification. Must be idempotent for the receiver: the same
    /// [`Notification::id`] may be delivered more than once.
    ///
    /// # Errors
    /// [`DeliveryError`] when the receiver did not confirm; the attempt is retried.
    async fn deliver(&self, n: &Notification) -> Result<(), DeliveryError>;
}

/// Which approver groups one channel serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRoute {
    /// The channel's name.
    pub name: String,
    /// Groups it tells; `*` serves every group.
    pub groups: Vec<String>,
}

impl ChannelRoute {
    /// Whether this channel tells one of `groups`.
    pub fn serves(&self, groups: &[String]) -> bool {
        self.groups
            .iter()
            .any(|g| g == "*" || groups.iter().any(|x| x == g))
    }
}

/// Routing and retry settings (`[[notifications]]`, `[notify]` in `latch.toml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifySettings {
    /// Configured channels and the groups each serves.
    pub routes: Vec<ChannelRoute>,
    /// Attempts before a notification is given up (`failed`, audited, counted).
    pub max_attempts: u32,
    /// First retry delay (seconds); doubles per failed attempt.
    pub backoff_base_secs: i64,
    /// Longest retry delay (seconds).
    pub backoff_max_secs: i64,
    /// How long a replica's claim on a due notification lasts (seconds); longer than one
    /// delivery attempt, so another replica takes it over only if this one died.
    pub claim_secs: i64,
}

impl Default for NotifySettings {
    fn default() -> Self {
        Self {
            routes: Vec::new(),
            max_attempts: 8,
            backoff_base_secs: 5,
            backoff_max_secs: 600,
            claim_secs: 60,
        }
    }
}

impl NotifySettings {
    /// Delay before the attempt that follows `failed_attempts` failures (≥ 1):
    /// `min(base · 2^(failed_attempts − 1), max)` seconds.
    pub fn backoff_secs(&self, failed_attempts: u32) -> i64 {
        let exp = failed_attempts.saturating_sub(1).min(30);
        self.backoff_base_secs
            .max(1)
            .saturating_mul(1_i64 << exp)
            .min(self.backoff_max_secs.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let s = NotifySettings {
            backoff_base_secs: 2,
            backoff_max_secs: 30,
            ..NotifySettings::default()
        };
        let d: Vec<i64> = (1..=6).map(|n| s.backoff_secs(n)).collect();
        assert_eq!(d, vec![2, 4, 8, 16, 30, 30]);
        assert_eq!(s.backoff_secs(500), 30);
    }

    #[test]
    fn routes_serve_their_groups_or_all() {
        let r = ChannelRoute {
            name: "a".into(),
            groups: vec!["prod-approvers".into()],
        };
        assert!(r.serves(&["x".into(), "prod-approvers".into()]));
        assert!(!r.serves(&["x".into()]));
        let all = ChannelRoute {
            name: "b".into(),
            groups: vec!["*".into()],
        };
        assert!(all.serves(&["anything".into()]));
    }
}
