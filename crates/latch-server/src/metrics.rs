//! The broker's Prometheus metrics: one table of every family with its type and HELP text,
//! the label sets known at start (exported as zeros, so a dashboard or an alert sees a family
//! before its first event), the HTTP latency histogram, and the live-state gauges read from the
//! store at scrape time.
//!
//! Format: the Prometheus text exposition format 0.0.4 (HELP and TYPE lines for every family),
//! rendered by `metrics-exporter-prometheus`. Histograms have explicit buckets (seconds), so they
//! are exported as histograms, not summaries.
//!
//! # Security
//! Labels carry only bounded, non-secret values: route templates (never raw paths, which may
//! carry ids), status classes, resource ids, provider, sink and channel names from the
//! configuration, Latch's error codes (a closed set). No subject, token or credential is ever a
//! label.

use std::sync::Mutex;
use std::time::Duration;

use latch_core::ports::Census;
use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic count (`_total`).
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Observations in buckets (seconds).
    Histogram,
}

/// One family: name, type, unit and HELP text.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    /// Prometheus name.
    pub name: &'static str,
    /// Type.
    pub kind: Kind,
    /// HELP text.
    pub help: &'static str,
}

const fn family(name: &'static str, kind: Kind, help: &'static str) -> Family {
    Family { name, kind, help }
}

/// HTTP request latency, by route template, method, status class and outcome.
pub const HTTP_DURATION: &str = "latch_http_request_duration_seconds";
/// Revocation latency (decision to the target's confirmation), by resource.
pub const REVOCATION_DURATION: &str = "latch_revocation_duration_seconds";
/// Provider call latency (mint, renew, revoke, probe), by resource, call and outcome.
pub const PROVIDER_DURATION: &str = "latch_provider_call_duration_seconds";

/// Every family the broker exports.
pub const FAMILIES: &[Family] = &[
    family(
        "latch_http_requests_total",
        Kind::Counter,
        "HTTP requests answered, by status code.",
    ),
    family(
        HTTP_DURATION,
        Kind::Histogram,
        "HTTP request latency in seconds, by route template, method, status class (2xx, 4xx, 5xx) and outcome (ok, or the Latch error code answered, or error).",
    ),
    family(
        "latch_http_connections",
        Kind::Gauge,
        "HTTP connections open now.",
    ),
    family(
        "latch_http_connections_refused_total",
        Kind::Counter,
        "Connections refused at accept, by reason (per_address, total).",
    ),
    family(
        "latch_tls_handshakes_failed_total",
        Kind::Counter,
        "TLS handshakes on the listener that failed or timed out ([server.tls]).",
    ),
    family(
        "latch_tls_client_certificates_refused_total",
        Kind::Counter,
        "Client certificates refused on the listener, by reason (not_an_svid, unknown_trust_domain, chain).",
    ),
    family(
        "latch_http_idle_closed_total",
        Kind::Counter,
        "Idle keep-alive connections closed by the broker.",
    ),
    family(
        "latch_http_body_refused_total",
        Kind::Counter,
        "Request bodies refused, by reason (encoding, too_large, timeout).",
    ),
    family(
        "latch_http_request_timeouts_total",
        Kind::Counter,
        "Requests that exceeded the request deadline.",
    ),
    family(
        "latch_auth_failures_total",
        Kind::Counter,
        "Failed authentications, by error code.",
    ),
    family(
        "latch_auth_rate_limited_total",
        Kind::Counter,
        "Requests refused because their source failed authentication too often.",
    ),
    family("latch_tasks_opened_total", Kind::Counter, "Tasks opened."),
    family(
        "latch_store_commits_total",
        Kind::Counter,
        "Write transactions committed by the store's group-commit writer (file SQLite, PostgreSQL).",
    ),
    family(
        "latch_store_batches_total",
        Kind::Counter,
        "Batches (a grant, a renewal, a task change, with their audit events) those transactions carried; batches per commit is the mean group size.",
    ),
    family(
        "latch_access_decisions_total",
        Kind::Counter,
        "Access decisions, by decision (allow, deny, step_up) and resource.",
    ),
    family(
        "latch_gateway_calls_total",
        Kind::Counter,
        "MCP gateway tool calls, by upstream and decision (allow, deny, step_up, refused).",
    ),
    family(
        "latch_renewals_total",
        Kind::Counter,
        "Lease renewals granted.",
    ),
    family(
        "latch_leases_reaped_total",
        Kind::Counter,
        "Leases revoked by the reaper (expired, interrupted mints, retried revocations).",
    ),
    family(
        "latch_revocation_failures_total",
        Kind::Counter,
        "Revocation attempts that failed and will be retried.",
    ),
    family(
        PROVIDER_DURATION,
        Kind::Histogram,
        "Latency of calls to credential targets in seconds, by resource, call (mint, renew, revoke, probe) and outcome (ok, error, unreachable).",
    ),
    family(
        "latch_target_up",
        Kind::Gauge,
        "1 while a credential target answers, 0 while it is down, by resource and provider.",
    ),
    family(
        "latch_target_consecutive_failures",
        Kind::Gauge,
        "Consecutive unanswered calls to a target, by resource and provider.",
    ),
    family(
        REVOCATION_DURATION,
        Kind::Histogram,
        "Revocation latency in seconds, from the revocation decision (revoke call, task end, expiry, leak) to the target's confirmation (0 for credentials with no state at a target), by resource.",
    ),
    family(
        "latch_revoke_failed_leases",
        Kind::Gauge,
        "Leases whose revocation failed revoke_alert_after times and is still retried (alert on this).",
    ),
    family(
        "latch_retrying_revocations",
        Kind::Gauge,
        "Revocations that failed at least once and wait for a retry with backoff.",
    ),
    family(
        "latch_retrying_notifications",
        Kind::Gauge,
        "Approver notifications whose delivery failed at least once and wait for a retry.",
    ),
    family(
        "latch_audit_sink_backlog",
        Kind::Gauge,
        "Audit records not yet delivered to a sink, by sink (as of its last delivery attempt).",
    ),
    family(
        "latch_audit_sink_consecutive_failures",
        Kind::Gauge,
        "Consecutive failed deliveries to an audit sink (0 once one succeeds), by sink.",
    ),
    family(
        "latch_open_tasks",
        Kind::Gauge,
        "Tasks open now (read from the store at scrape time).",
    ),
    family(
        "latch_live_leases",
        Kind::Gauge,
        "Leases issuing or active now: credentials that may work at their target.",
    ),
    family(
        "latch_revoking_leases",
        Kind::Gauge,
        "Leases whose revocation is committed but not yet confirmed by their target (the retry backlog).",
    ),
    family(
        "latch_pending_approvals",
        Kind::Gauge,
        "Access requests waiting for a human's step-up approval.",
    ),
    family(
        "latch_pending_notifications",
        Kind::Gauge,
        "Approver notifications not yet delivered (the retry backlog).",
    ),
    family(
        "latch_census_errors_total",
        Kind::Counter,
        "Scrapes whose live-state gauges could not be read from the store.",
    ),
    family(
        "latch_notifications_delivered_total",
        Kind::Counter,
        "Approver notifications delivered, by channel and kind.",
    ),
    family(
        "latch_notifications_retried_total",
        Kind::Counter,
        "Approver notification attempts that failed and will be retried, by channel and kind.",
    ),
    family(
        "latch_notifications_failed_total",
        Kind::Counter,
        "Approver notifications given up on, by channel and kind.",
    ),
    family(
        "latch_audit_sink_failures_total",
        Kind::Counter,
        "Failed deliveries to an audit sink, by sink.",
    ),
    family(
        "latch_ssf_sets_delivered_total",
        Kind::Counter,
        "Security Event Tokens pushed to a Shared Signals receiver and accepted, by receiver.",
    ),
    family(
        "latch_ssf_delivery_failures_total",
        Kind::Counter,
        "Failed pushes to a Shared Signals receiver, by receiver and kind (retry: tried again with backoff; refused: the receiver answered 400, the SET is dropped).",
    ),
    family(
        "latch_ssf_sets_received_total",
        Kind::Counter,
        "Security Event Tokens pushed to Latch, by outcome (acted, ignored, or the RFC 8935 error code they were refused with, or unavailable).",
    ),
    family(
        "latch_audit_chain_alarms_total",
        Kind::Counter,
        "Audit chain verifications that found a break.",
    ),
    family(
        "latch_change_feed_interruptions_total",
        Kind::Counter,
        "Interruptions of the store's change feed (caches fall back to the store).",
    ),
    family(
        "latch_cache_answering",
        Kind::Gauge,
        "1 while introspection may answer from the in-memory cache, 0 while it reads the store.",
    ),
    family(
        "latch_introspection_index_entries",
        Kind::Gauge,
        "Credentials in the in-memory introspection index (about 130 bytes of memory each).",
    ),
    family(
        "latch_pg_notification_queue_usage",
        Kind::Gauge,
        "PostgreSQL's LISTEN/NOTIFY queue usage (0 to 1).",
    ),
    family(
        "latch_policy_reload_refused_total",
        Kind::Counter,
        "Policy reloads refused (the policy set did not validate).",
    ),
    family(
        "latch_scan_findings_total",
        Kind::Counter,
        "Secrets found by the leak scanner.",
    ),
];

/// Latency buckets in seconds: 0.5 ms to 10 s.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Revocation latency buckets in seconds: 10 ms to 30 min (retries back off up to
/// `revoke_backoff_max`).
const REVOCATION_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0,
];

/// `builder` with this module's histogram buckets.
///
/// # Errors
/// Never with these constant buckets; the exporter's error otherwise.
pub fn with_buckets(
    builder: PrometheusBuilder,
) -> Result<PrometheusBuilder, metrics_exporter_prometheus::BuildError> {
    builder
        .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(PROVIDER_DURATION.into()), BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full(REVOCATION_DURATION.into()),
            REVOCATION_BUCKETS,
        )
}

/// Describes every family (HELP text) and exports each unlabelled counter and gauge, and the
/// label sets known from the configuration, as zero (histograms with empty buckets). Idempotent.
///
/// `resources` are `(resource id, provider name)` pairs from the configuration.
pub fn describe_and_zero(resources: &[(String, String)]) {
    for f in FAMILIES {
        match f.kind {
            Kind::Counter => describe_counter!(f.name, f.help),
            Kind::Gauge => describe_gauge!(f.name, f.help),
            Kind::Histogram => describe_histogram!(f.name, Unit::Seconds, f.help),
        }
    }
    for f in FAMILIES {
        match (f.kind, f.name) {
            // Labelled families: zeros for the label sets known now, below.
            (
                _,
                "latch_http_requests_total"
                | "latch_http_connections_refused_total"
                | "latch_http_body_refused_total"
                | "latch_tls_client_certificates_refused_total"
                | "latch_auth_failures_total"
                | "latch_access_decisions_total"
                | "latch_gateway_calls_total"
                | "latch_notifications_delivered_total"
                | "latch_notifications_retried_total"
                | "latch_notifications_failed_total"
                | "latch_audit_sink_failures_total"
                | "latch_ssf_sets_delivered_total"
                | "latch_ssf_delivery_failures_total"
                | "latch_ssf_sets_received_total"
                | "latch_target_up"
                | "latch_target_consecutive_failures"
                | "latch_audit_sink_backlog"
                | "latch_audit_sink_consecutive_failures",
            )
            | (Kind::Histogram, _) => {}
            (Kind::Counter, name) => metrics::counter!(name).increment(0),
            (Kind::Gauge, name) => metrics::gauge!(name).increment(0.0),
        }
    }
    for reason in ["per_address", "total"] {
        metrics::counter!("latch_http_connections_refused_total", "reason" => reason).increment(0);
    }
    for reason in ["not_an_svid", "unknown_trust_domain", "chain"] {
        metrics::counter!("latch_tls_client_certificates_refused_total", "reason" => reason)
            .increment(0);
    }
    for reason in ["encoding", "too_large", "timeout"] {
        metrics::counter!("latch_http_body_refused_total", "reason" => reason).increment(0);
    }
    for (resource, _) in resources {
        for decision in ["allow", "deny", "step_up"] {
            decision_counter(decision, resource).increment(0);
        }
        // Registered, not observed: exported with empty buckets.
        let _ = metrics::histogram!(REVOCATION_DURATION, "resource" => resource.clone());
        let _ = metrics::histogram!(PROVIDER_DURATION, "resource" => resource.clone(),
            "call" => "mint", "outcome" => "ok");
    }
    zero_http();
}

/// The HTTP families at zero before the first request: the common statuses, the failed
/// authentications of every code that answers `401`, and the latency of `GET /metrics` (the
/// first scrape is answered before its own latency is recorded).
fn zero_http() {
    for status in [
        200, 201, 202, 204, 400, 401, 403, 404, 409, 422, 429, 500, 503,
    ] {
        metrics::counter!("latch_http_requests_total", "status" => status.to_string()).increment(0);
    }
    use latch_core::ErrorCode::{
        AlgNotAllowed, AudienceMismatch, ClaimsInvalid, ClientAuthFailed, DpopProofInvalid,
        HeaderKeyForbidden, InsufficientUserAuthentication, JwksUnavailable, SignatureInvalid,
        SpiffeIdInvalid, TokenExpired, TokenLifetimeTooLong, TokenMalformed, TokenMissing,
        TokenNotYetValid, TokenTooLarge, UnknownIssuer, UnknownKid,
    };
    for code in [
        TokenMissing,
        TokenTooLarge,
        TokenMalformed,
        AlgNotAllowed,
        HeaderKeyForbidden,
        UnknownIssuer,
        SpiffeIdInvalid,
        UnknownKid,
        SignatureInvalid,
        AudienceMismatch,
        TokenExpired,
        TokenNotYetValid,
        TokenLifetimeTooLong,
        ClaimsInvalid,
        JwksUnavailable,
        ClientAuthFailed,
        DpopProofInvalid,
        InsufficientUserAuthentication,
    ] {
        metrics::counter!("latch_auth_failures_total", "code" => code.as_str()).increment(0);
    }
    let _ = metrics::histogram!(HTTP_DURATION, "route" => "/metrics", "method" => "GET",
        "status_class" => "2xx", "outcome" => "ok");
}

/// Exports the per-sink gauges of the configured audit sinks (`sinks`: their names), the
/// per-channel notification counters (`channels`: `(name, kind)`), the per-upstream gateway
/// counters (`upstreams`: names) and the Shared Signals counters (`receivers`: names) as zero.
pub fn zero_sinks_and_channels(
    sinks: &[String],
    channels: &[(String, String)],
    upstreams: &[String],
    receivers: &[String],
) {
    for upstream in upstreams {
        for decision in ["allow", "deny", "step_up", "refused"] {
            metrics::counter!("latch_gateway_calls_total", "upstream" => upstream.clone(),
                "decision" => decision)
            .increment(0);
        }
    }
    for receiver in receivers {
        metrics::counter!("latch_ssf_sets_delivered_total", "receiver" => receiver.clone())
            .increment(0);
        for kind in ["retry", "refused"] {
            metrics::counter!("latch_ssf_delivery_failures_total", "receiver" => receiver.clone(),
                "kind" => kind)
            .increment(0);
        }
    }
    for outcome in ["acted", "ignored"] {
        metrics::counter!("latch_ssf_sets_received_total", "outcome" => outcome).increment(0);
    }
    for sink in sinks {
        audit_sink(sink, 0, 0);
        metrics::counter!("latch_audit_sink_failures_total", "sink" => sink.clone()).increment(0);
    }
    for (channel, kind) in channels {
        for family in [
            "latch_notifications_delivered_total",
            "latch_notifications_retried_total",
            "latch_notifications_failed_total",
        ] {
            metrics::counter!(family, "channel" => channel.clone(), "kind" => kind.clone())
                .increment(0);
        }
    }
}

/// Sets an audit sink's gauges: records not yet delivered and consecutive failures.
pub fn audit_sink(sink: &str, backlog: i64, consecutive_failures: u32) {
    #[expect(
        clippy::cast_precision_loss,
        reason = "gauges are f64; counts stay far below 2^52"
    )]
    let backlog = backlog.max(0) as f64;
    metrics::gauge!("latch_audit_sink_backlog", "sink" => sink.to_owned()).set(backlog);
    metrics::gauge!("latch_audit_sink_consecutive_failures", "sink" => sink.to_owned())
        .set(f64::from(consecutive_failures));
}

fn decision_counter(decision: &'static str, resource: &str) -> metrics::Counter {
    metrics::counter!(
        "latch_access_decisions_total",
        "decision" => decision,
        "resource" => resource.to_owned()
    )
}

/// Counts one access decision (`allow`, `deny`, `step_up`) on `resource` (a configured id).
pub fn access_decision(decision: &'static str, resource: &str) {
    decision_counter(decision, resource).increment(1);
}

/// The status class label of `status`: `1xx` … `5xx`.
fn status_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

/// The outcome of an answer that is not an `ApiError` but refuses (an access denial's
/// `AccessResponse`), set as a response extension for the HTTP latency's `outcome` label: one of
/// Latch's error codes.
#[derive(Debug, Clone, Copy)]
pub struct Outcome(pub &'static str);

/// The outcome label of an answer: `ok` below 400, else the Latch error code it carries
/// (`code`, one of the closed set of [`latch_core::ErrorCode`]s), else `error`.
fn outcome(status: u16, code: Option<&'static str>) -> &'static str {
    match (status, code) {
        (..400, _) => "ok",
        (_, Some(c)) => c,
        (_, None) => "error",
    }
}

/// Records one answered HTTP request: its status, and its latency under its route template
/// (`route` is axum's matched path, e.g. `/v1/tasks/{id}`; `None` for unmatched paths) and
/// outcome (`code`: the error code of an error answer).
pub fn http_request(
    route: Option<&str>,
    method: &str,
    status: u16,
    code: Option<&'static str>,
    elapsed: Duration,
) {
    metrics::counter!("latch_http_requests_total", "status" => status.to_string()).increment(1);
    metrics::histogram!(
        HTTP_DURATION,
        "route" => route.unwrap_or("unmatched").to_owned(),
        "method" => method.to_owned(),
        "status_class" => status_class(status),
        "outcome" => outcome(status, code)
    )
    .record(elapsed.as_secs_f64());
}

/// How long the live-state gauges are reused before the store is counted again: `/metrics`
/// is public, and a scrape flood must not become a flood of `COUNT` queries.
pub const CENSUS_MAX_AGE: Duration = Duration::from_secs(5);

/// One server's gate on store counts for the live-state gauges: at most one read per
/// [`CENSUS_MAX_AGE`] of its clock's monotonic time.
#[derive(Debug, Default)]
pub struct CensusGate(Mutex<Option<Duration>>);

impl CensusGate {
    /// Whether the gauges are due for a fresh read at monotonic time `now`; marks them read
    /// when they are.
    pub fn due(&self, now: Duration) -> bool {
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| now.saturating_sub(t) < CENSUS_MAX_AGE) {
            return false;
        }
        *last = Some(now);
        true
    }
}

/// Sets the live-state gauges from `census` (or counts a failed read).
pub fn record_census(census: Result<Census, latch_core::ports::StoreError>) {
    match census {
        Ok(c) => {
            #[expect(
                clippy::cast_precision_loss,
                reason = "gauges are f64; counts stay far below 2^52"
            )]
            let f = |n: i64| n as f64;
            metrics::gauge!("latch_open_tasks").set(f(c.open_tasks));
            metrics::gauge!("latch_live_leases").set(f(c.live_leases));
            metrics::gauge!("latch_revoking_leases").set(f(c.revoking_leases));
            metrics::gauge!("latch_pending_approvals").set(f(c.pending_requests));
            metrics::gauge!("latch_pending_notifications").set(f(c.pending_notifications));
            metrics::gauge!("latch_revoke_failed_leases").set(f(c.revoke_failed_leases));
            metrics::gauge!("latch_retrying_revocations").set(f(c.retrying_revocations));
            metrics::gauge!("latch_retrying_notifications").set(f(c.retrying_notifications));
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics: live-state gauges not refreshed");
            metrics::counter!("latch_census_errors_total").increment(1);
        }
    }
}

/// One family of the exposition: its name, its `# HELP`/`# TYPE` lines, and its sample lines in
/// runs of one label set each (the label set without `le` as the run's key).
type ExpoFamily = (String, Vec<String>, Vec<(String, Vec<String>)>);

/// The exporter's text with its families in name order, and within a family its label sets in
/// order (a histogram's buckets, `_sum` and `_count` stay together and in their own order): the
/// exporter walks hash maps, so two scrapes of the same state would otherwise differ, and a
/// reader (or a diff) could not find a family where it was last time.
pub fn sorted_exposition(text: &str) -> String {
    let mut families: Vec<ExpoFamily> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let header = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "));
        let name = match header {
            Some(rest) => rest.split(' ').next().unwrap_or(""),
            None => line.split(['{', ' ']).next().unwrap_or(""),
        };
        let belongs = families.last().is_some_and(|(f, _, runs)| {
            if header.is_some() {
                f == name && runs.is_empty()
            } else {
                name.starts_with(f.as_str())
            }
        });
        if !belongs {
            families.push((name.to_owned(), Vec::new(), Vec::new()));
        }
        let Some((_, head, runs)) = families.last_mut() else {
            continue;
        };
        if header.is_some() {
            head.push(line.to_owned());
            continue;
        }
        let key = label_set(line);
        match runs.last_mut() {
            Some((k, lines)) if *k == key => lines.push(line.to_owned()),
            _ => runs.push((key, vec![line.to_owned()])),
        }
    }
    families.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::with_capacity(text.len());
    for (_, head, mut runs) in families {
        runs.sort_by(|a, b| a.0.cmp(&b.0));
        for line in head.iter().chain(runs.iter().flat_map(|(_, l)| l)) {
            out.push_str(line);
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

/// A sample line's labels without `le` (a histogram bucket's bound), as its sort key.
fn label_set(line: &str) -> String {
    let (Some(open), Some(close)) = (line.find('{'), line.rfind('}')) else {
        return String::new();
    };
    line.get(open + 1..close)
        .unwrap_or("")
        .split(',')
        .filter(|kv| !kv.starts_with("le="))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_come_out_in_name_order_with_buckets_kept_in_order() {
        let raw = "# TYPE latch_b gauge\nlatch_b{r=\"z\"} 1\nlatch_b{r=\"a\"} 2\n\n\
                   # HELP latch_a_seconds h.\n# TYPE latch_a_seconds histogram\n\
                   latch_a_seconds_bucket{r=\"y\",le=\"2.5\"} 0\n\
                   latch_a_seconds_bucket{r=\"y\",le=\"10\"} 0\n\
                   latch_a_seconds_bucket{r=\"y\",le=\"+Inf\"} 0\n\
                   latch_a_seconds_sum{r=\"y\"} 0\nlatch_a_seconds_count{r=\"y\"} 0\n\
                   latch_a_seconds_bucket{r=\"x\",le=\"2.5\"} 1\n\
                   latch_a_seconds_bucket{r=\"x\",le=\"10\"} 1\n\
                   latch_a_seconds_bucket{r=\"x\",le=\"+Inf\"} 1\n\
                   latch_a_seconds_sum{r=\"x\"} 1\nlatch_a_seconds_count{r=\"x\"} 1\n\n";
        let want = "# HELP latch_a_seconds h.\n# TYPE latch_a_seconds histogram\n\
                    latch_a_seconds_bucket{r=\"x\",le=\"2.5\"} 1\n\
                    latch_a_seconds_bucket{r=\"x\",le=\"10\"} 1\n\
                    latch_a_seconds_bucket{r=\"x\",le=\"+Inf\"} 1\n\
                    latch_a_seconds_sum{r=\"x\"} 1\nlatch_a_seconds_count{r=\"x\"} 1\n\
                    latch_a_seconds_bucket{r=\"y\",le=\"2.5\"} 0\n\
                    latch_a_seconds_bucket{r=\"y\",le=\"10\"} 0\n\
                    latch_a_seconds_bucket{r=\"y\",le=\"+Inf\"} 0\n\
                    latch_a_seconds_sum{r=\"y\"} 0\nlatch_a_seconds_count{r=\"y\"} 0\n\n\
                    # TYPE latch_b gauge\nlatch_b{r=\"a\"} 2\nlatch_b{r=\"z\"} 1\n\n";
        assert_eq!(sorted_exposition(raw), want);
        assert_eq!(sorted_exposition(want), want);
    }

    #[test]
    fn every_family_is_named_once_with_help() {
        let mut names: Vec<_> = FAMILIES.iter().map(|f| f.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "a family is listed twice");
        for f in FAMILIES {
            assert!(f.name.starts_with("latch_"), "{}", f.name);
            assert_eq!(
                f.kind == Kind::Counter,
                f.name.ends_with("_total"),
                "{}: counters and only counters end in _total",
                f.name
            );
            assert!(f.help.ends_with('.'), "{}", f.name);
        }
    }

    #[test]
    fn the_census_is_read_at_most_once_per_max_age() {
        let g = CensusGate::default();
        assert!(g.due(Duration::from_secs(100)));
        assert!(!g.due(Duration::from_secs(104)));
        assert!(g.due(Duration::from_secs(105)));
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class(201), "2xx");
        assert_eq!(status_class(404), "4xx");
        assert_eq!(status_class(503), "5xx");
    }

    #[test]
    fn outcomes() {
        assert_eq!(outcome(201, None), "ok");
        assert_eq!(outcome(404, Some("task_not_found")), "task_not_found");
        assert_eq!(outcome(405, None), "error");
    }
}
