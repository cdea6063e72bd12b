//! The attributes Latch's use-case spans carry (`latch.grant`, `latch.claim`, `latch.renew`,
//! `latch.revoke`; exported as OpenTelemetry spans when the server's `[telemetry]` is on).
//!
//! Each use case opens its span with `latch.request_id` (the broker's HTTP request id) and
//! empty `latch.task_id`, `latch.lease_id` and `latch.resource`, and fills them here once the
//! values are known from the store or the configuration.
//!
//! # Security
//! Only ids read back from the store and configured resource ids are recorded, never a value as
//! the caller sent it (a caller may put a token where an id belongs), never a credential.

use crate::model::Lease;

/// Records the task id on the current span.
pub fn record_task(task_id: &str) {
    tracing::Span::current().record("latch.task_id", task_id);
}

/// Records a configured resource id on the current span.
pub fn record_resource(resource_id: &str) {
    tracing::Span::current().record("latch.resource", resource_id);
}

/// Records a lease's id, task and resource on the current span.
pub fn record_lease(lease: &Lease) {
    let span = tracing::Span::current();
    span.record("latch.lease_id", lease.id.as_str());
    span.record("latch.task_id", lease.task_id.as_str());
    span.record("latch.resource", lease.resource_id.as_str());
}
