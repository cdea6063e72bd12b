//! Notifications to approvers through the transactional outbox (see [`crate::notify`]): the
//! rows a step-up decision writes in its own batch, and the delivery job's two steps — claim
//! the due rows, record each attempt's outcome (with its audit event).

use serde_json::json;

use super::{BROKER, Broker, CallCtx};
use crate::error::Result;
use crate::model::{AccessRequest, AuditEvent, AuditKind, Resource, Task, new_id};
use crate::notify::{
    ApprovalNotice, DeliveryError, EVENT_STEP_UP, Notification, NotificationState,
};
use crate::ports::{StoreError, Write, WriteBatch};

/// What [`Broker::record_delivery`] recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Delivered (`notification.delivered`).
    Delivered,
    /// Failed; tried again at this time (Unix seconds) (`notification.failed`, `retry`).
    Retry {
        /// When the next attempt is due.
        next_attempt_at_unix_secs: i64,
    },
    /// Failed for the last allowed time (`notification.failed`, `gave_up`).
    GaveUp,
    /// Another worker recorded this attempt first (its claim had expired); nothing written.
    Superseded,
}

impl Broker {
    /// The outbox rows for a request that has just gone to step-up: one per configured channel
    /// that serves one of its approver groups. They join the decision's batch.
    pub(super) fn step_up_notifications(
        &self,
        task: &Task,
        resource: &Resource,
        req: &AccessRequest,
    ) -> Vec<Write> {
        let groups: Vec<String> = req.step_up_groups.iter().map(|g| g.group.clone()).collect();
        let now = req.created_at_unix_secs;
        let notice = ApprovalNotice {
            request_id: req.id.clone(),
            task_id: task.id.clone(),
            workload: req.principal_id.clone(),
            resource: resource.id.clone(),
            environment: resource.environment.as_str().to_owned(),
            sensitivity: resource.sensitivity.clone(),
            actions: req.actions.clone(),
            ttl_secs: req.ttl_secs,
            purpose: task.purpose.clone(),
            justification: req.justification.clone(),
            repository: task.repository.clone(),
            branch: task.branch.clone(),
            on_behalf_of: task.on_behalf_of.clone(),
            groups: groups.clone(),
            digest: req.digest.clone(),
            expires_at_unix_secs: req.expires_at_unix_secs,
            console_url: self.request_console_url(&req.id),
        };
        self.settings
            .notify
            .routes
            .iter()
            .filter(|r| r.serves(&groups))
            .map(|r| {
                Write::InsertNotification(Notification {
                    id: new_id("ntf"),
                    channel: r.name.clone(),
                    event: EVENT_STEP_UP.into(),
                    state: NotificationState::Pending,
                    created_at_unix_secs: now,
                    next_attempt_at_unix_secs: now,
                    attempts: 0,
                    last_error: None,
                    delivered_at_unix_secs: None,
                    notice: notice.clone(),
                    version: 1,
                })
            })
            .collect()
    }

    /// Claims up to `limit` due notifications for this replica (for the delivery job). A claim
    /// lasts `notify.claim_secs`; replicas sharing a store never get the same row while it
    /// holds.
    ///
    /// # Errors
    /// `store_unavailable`.
    pub async fn due_notifications(&self, limit: u32) -> Result<Vec<Notification>> {
        let now = self.now();
        Ok(self
            .store
            .claim_due_notifications(
                now,
                &self.settings.replica_id,
                now + self.settings.notify.claim_secs.max(1),
                limit,
            )
            .await?)
    }

    /// Records one delivery attempt of `n` (as claimed) and its audit event, in one batch:
    /// delivered; or failed, retried after `min(base · 2^(attempts − 1), max)` seconds; or
    /// failed for the `max_attempts`-th time and given up.
    ///
    /// # Errors
    /// `store_unavailable` (the row stays claimed; after the claim it is attempted again).
    pub async fn record_delivery(
        &self,
        n: Notification,
        result: std::result::Result<(), DeliveryError>,
    ) -> Result<DeliveryOutcome> {
        let now = self.now();
        let s = &self.settings.notify;
        let mut next = n.clone();
        next.version += 1;
        let base = |kind, outcome| {
            AuditEvent::new(now, kind, BROKER, outcome)
                .task(&n.notice.task_id)
                .access_request(&n.notice.request_id)
        };
        let (outcome, ev) = match result {
            Ok(()) => {
                next.state = NotificationState::Delivered;
                next.delivered_at_unix_secs = Some(now);
                next.last_error = None;
                let ev = base(AuditKind::NotificationDelivered, "ok").detail(json!({
                    "notification_id": n.id, "channel": n.channel, "event": n.event,
                    "attempts": n.attempts + 1,
                }));
                (DeliveryOutcome::Delivered, ev)
            }
            Err(e) => {
                next.attempts += 1;
                next.last_error = Some(e.0.clone());
                let outcome = if next.attempts >= s.max_attempts.max(1) {
                    next.state = NotificationState::Failed;
                    DeliveryOutcome::GaveUp
                } else {
                    next.next_attempt_at_unix_secs = now + s.backoff_secs(next.attempts);
                    DeliveryOutcome::Retry {
                        next_attempt_at_unix_secs: next.next_attempt_at_unix_secs,
                    }
                };
                let word = if outcome == DeliveryOutcome::GaveUp {
                    "gave_up"
                } else {
                    "retry"
                };
                let ev = base(AuditKind::NotificationFailed, word).detail(json!({
                    "notification_id": n.id, "channel": n.channel, "event": n.event,
                    "attempts": next.attempts, "error": e.0,
                    "next_attempt_at_unix_secs": (word == "retry").then_some(next.next_attempt_at_unix_secs),
                }));
                (outcome, ev)
            }
        };
        let batch = WriteBatch::new()
            .write(Write::UpdateNotification(next))
            .audit(ev);
        match self.commit(&CallCtx::default(), batch).await {
            Ok(_) => Ok(outcome),
            Err(StoreError::Conflict(_)) => Ok(DeliveryOutcome::Superseded),
            Err(e) => Err(e.into()),
        }
    }
}
