//! The notification job: delivers the outbox. Every `[notify] poll_interval` it claims the due
//! notifications ([`Broker::due_notifications`]), hands each to its channel in a task of its
//! own under `[notify] attempt_timeout`, and records the outcome
//! ([`Broker::record_delivery`]: delivered, retried with exponential backoff, or given up after
//! `max_attempts`, each audited).
//!
//! Delivery is at least once: a notification whose outcome could not be recorded is attempted
//! again (its `webhook-id` / `Message-ID` stays the same, so receivers deduplicate). A
//! notification this process is still delivering is not started twice (the in-flight set);
//! across replicas the store's claims split the rows.
//!
//! Metrics, labelled with the channel's `name` and `kind`: `latch_notifications_delivered_total`,
//! `latch_notifications_retried_total` (failed attempts that will be retried) and
//! `latch_notifications_failed_total` (given up).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use latch_core::Broker;
use latch_core::broker::DeliveryOutcome;
use latch_core::notify::{DeliveryError, Notification, NotificationChannel};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Notifications claimed per pass.
const BATCH: u32 = 100;

/// What the job runs on.
pub(crate) struct NotifyJob {
    /// The broker (outbox claims and outcomes).
    pub broker: Arc<Broker>,
    /// Configured channels, by name.
    pub channels: Vec<Arc<dyn NotificationChannel>>,
    /// How often the outbox is read.
    pub poll: Duration,
    /// Deadline of one delivery attempt.
    pub attempt_timeout: Duration,
}

/// Delivers due notifications until `stop` turns true.
pub(crate) async fn run(job: NotifyJob, mut stop: watch::Receiver<bool>) {
    let channels: Arc<HashMap<String, Arc<dyn NotificationChannel>>> = Arc::new(
        job.channels
            .iter()
            .map(|c| (c.name().to_owned(), c.clone()))
            .collect(),
    );
    let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut deliveries = JoinSet::new();
    loop {
        while deliveries.try_join_next().is_some() {}
        match job.broker.due_notifications(BATCH).await {
            Ok(due) => {
                for n in due {
                    if !in_flight
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(n.id.clone())
                    {
                        continue;
                    }
                    let (broker, channels, in_flight) =
                        (job.broker.clone(), channels.clone(), in_flight.clone());
                    let timeout = job.attempt_timeout;
                    deliveries.spawn(async move {
                        let id = n.id.clone();
                        attempt(&broker, &channels, n, timeout).await;
                        in_flight
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&id);
                    });
                }
            }
            Err(e) => {
                tracing::warn!(code = %e.code, error = %e.message, "reading the notification outbox failed")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(job.poll) => {}
            r = stop.changed() => if r.is_err() || *stop.borrow() { break },
        }
    }
    deliveries.abort_all();
}

/// One delivery attempt and its recorded outcome.
async fn attempt(
    broker: &Broker,
    channels: &HashMap<String, Arc<dyn NotificationChannel>>,
    n: Notification,
    timeout: Duration,
) {
    let (name, kind) = match channels.get(&n.channel) {
        Some(c) => (c.name().to_owned(), c.kind().to_owned()),
        None => (n.channel.clone(), "unknown".to_owned()),
    };
    let result = match channels.get(&n.channel) {
        Some(c) => match tokio::time::timeout(timeout, c.deliver(&n)).await {
            Ok(r) => r,
            Err(_) => Err(DeliveryError(format!(
                "no answer within {} ms",
                timeout.as_millis()
            ))),
        },
        None => Err(DeliveryError(
            "the channel is no longer configured".to_owned(),
        )),
    };
    let failure = result.as_ref().err().map(|e| e.0.clone());
    let labels = [("channel", name.clone()), ("kind", kind)];
    match broker.record_delivery(n.clone(), result).await {
        Ok(DeliveryOutcome::Delivered) => {
            metrics::counter!("latch_notifications_delivered_total", &labels).increment(1);
            tracing::info!(notification_id = %n.id, channel = %name, request_id = %n.notice.request_id, "notification delivered");
        }
        Ok(DeliveryOutcome::Retry {
            next_attempt_at_unix_secs,
        }) => {
            metrics::counter!("latch_notifications_retried_total", &labels).increment(1);
            tracing::warn!(notification_id = %n.id, channel = %name, error = failure.as_deref().unwrap_or(""),
                next_attempt_at_unix_secs, "notification delivery failed; will retry");
        }
        Ok(DeliveryOutcome::GaveUp) => {
            metrics::counter!("latch_notifications_failed_total", &labels).increment(1);
            tracing::error!(notification_id = %n.id, channel = %name, error = failure.as_deref().unwrap_or(""),
                attempts = n.attempts + 1, "notification delivery failed; giving up");
        }
        Ok(DeliveryOutcome::Superseded) => {}
        Err(e) => {
            tracing::warn!(notification_id = %n.id, code = %e.code, error = %e.message, "recording a notification attempt failed; it will be attempted again");
        }
    }
}
