//! Logging for every process that runs Latch code (`latch serve`, `latch demo`, `latch mcp`,
//! the test kit): one `tracing` subscriber whose filter is the operator's (`LATCH_LOG`, an
//! [`EnvFilter`]) **and** a fixed cap on every other library that no `LATCH_LOG` can lift.
//!
//! # Security
//! Libraries below Latch log what passes through them at `debug` and `trace`: rmcp logs every
//! MCP message (a `request_access` answer carries the credential), tokio-postgres every
//! statement and its parameters (a minted role's SCRAM verifier), h2 and hyper frames and
//! headers, sqlx statements, reqwest connections, axum rejected bodies. Latch's own events
//! never carry a secret (checked by the `log_secrets` integration test at `trace`); every other
//! target is held at [`THIRD_PARTY_MAX`] (`info`) whatever `LATCH_LOG` says, so even
//! `LATCH_LOG=trace` prints no payload. The cap is default deny: a library added later is
//! capped too, without anyone having to name it. `log` records (tokio-postgres, reqwest, sqlx)
//! reach the same filter through `tracing-log`, under their own targets.

use tracing::Metadata;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{EnvFilter, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::{SubscriberInitExt, TryInitError};

use crate::telemetry::SpanSlot;

/// The environment variable holding the operator's filter, in [`EnvFilter`] syntax
/// (`info`, `debug`, `latch_core=trace,info`, …).
pub const ENV_VAR: &str = "LATCH_LOG";

/// Crates (the first `::` segment of a target) whose events pass at any level the operator
/// asks for: Latch's own. `latch` is the binary and the access log's `latch::http` target.
pub const LATCH_CRATES: &[&str] = &[
    "latch",
    "latch_cli",
    "latch_core",
    "latch_identity",
    "latch_providers",
    "latch_scan",
    "latch_server",
    "latch_store",
    "latch_testkit",
];

/// The most verbose level at which any other target is written, whatever `LATCH_LOG` says.
pub const THIRD_PARTY_MAX: LevelFilter = LevelFilter::INFO;

/// Libraries in the build known to log request or response bodies, MCP messages, SQL
/// statements or parameters, or header values below `info`. The cap covers every non-Latch
/// target; these are named for the documentation and the tests that pin the cap.
pub const PAYLOAD_TARGETS: &[&str] = &[
    "rmcp",
    "hyper",
    "hyper_util",
    "h2",
    "reqwest",
    "tokio_postgres",
    "postgres_protocol",
    "sqlx",
    "sqlx_core",
    "sqlx_postgres",
    "sqlx_sqlite",
    "redis",
    "axum",
    "axum_core",
    "tower",
    "tower_http",
    "rustls",
    "tungstenite",
    "quinn",
    "quinn_proto",
];

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line (`latch serve`), without the current span repeated.
    Json,
    /// Human-readable text (`latch demo`, `latch mcp` on stderr).
    Text,
}

/// Whether `target` is one of [`LATCH_CRATES`] (compared on its first `::` segment, so
/// `latch_core::broker` is and `latchkey::x` is not).
pub fn is_latch_target(target: &str) -> bool {
    let root = target.split("::").next().unwrap_or(target);
    LATCH_CRATES.contains(&root)
}

/// The fixed part of the filter: Latch's targets at any level, every other one at
/// [`THIRD_PARTY_MAX`] or less verbose.
///
/// # Security
/// This is what keeps third-party payload logging off; it is combined with (never replaced
/// by) the operator's filter.
pub fn third_party_cap(meta: &Metadata<'_>) -> bool {
    is_latch_target(meta.target()) || *meta.level() <= THIRD_PARTY_MAX
}

/// The operator's filter from [`ENV_VAR`], or `default` when it is unset or invalid.
pub fn env_filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_env(ENV_VAR).unwrap_or_else(|_| EnvFilter::new(default))
}

/// A dispatcher writing `format` lines to `writer`, for events that pass both `filter` and
/// [`third_party_cap`].
///
/// Both are global filters, layered in front of the one output layer, so an event must pass
/// each (nothing can bypass the cap). Not per-layer filters (`Layer::with_filter`): with
/// those, a probe that asks whether a disabled event is enabled without emitting it (sqlx's
/// `enabled!` before each query log) leaves a per-thread mark behind that drops the next
/// event of a callsite cached as always enabled (tracing-subscriber 0.3): `latch is serving`
/// went missing on a PostgreSQL store.
pub fn dispatch<W>(format: Format, filter: EnvFilter, writer: W) -> tracing::Dispatch
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    dispatch_with_slot(format, filter, writer).0
}

/// [`dispatch`], with an empty slot for the trace exporter's layer ([`crate::telemetry`])
/// beneath the filters: spans reach it only when they pass the operator's filter and the cap.
fn dispatch_with_slot<W>(
    format: Format,
    filter: EnvFilter,
    writer: W,
) -> (tracing::Dispatch, SpanSlot)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let (slot, handle) = crate::telemetry::empty_slot();
    let output = match format {
        Format::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(false)
            // Spans are for traces ([`crate::telemetry`]); a line does not repeat them.
            .with_span_list(false)
            .with_writer(writer)
            .boxed(),
        Format::Text => tracing_subscriber::fmt::layer().with_writer(writer).boxed(),
    };
    let d = tracing::Dispatch::new(
        tracing_subscriber::registry()
            .with(slot)
            .with(filter)
            .with(filter_fn(third_party_cap))
            .with(output),
    );
    (d, handle)
}

/// Installs [`dispatch`] as the process's global subscriber, with `log` records forwarded to
/// it.
///
/// # Errors
/// A global subscriber (or `log` logger) is already installed.
pub fn init<W>(format: Format, filter: EnvFilter, writer: W) -> Result<(), TryInitError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let (d, slot) = dispatch_with_slot(format, filter, writer);
    d.try_init()?;
    crate::telemetry::keep_global_slot(slot);
    Ok(())
}

/// A request path for the access log, each segment shaped like a credential
/// ([`latch_core::error::looks_like_credential`]) replaced by `[credential]`: a caller that
/// puts a token where an id belongs (`/v1/leases/eyJ…/renew`) does not get it logged.
pub fn path_for_log(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if latch_core::error::looks_like_credential(seg) {
                "[credential]"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn written(filter: &str, emit: impl FnOnce()) -> String {
        let buf = Buf::default();
        let out = buf.clone();
        let d = dispatch(Format::Json, EnvFilter::new(filter), move || out.clone());
        tracing::dispatcher::with_default(&d, emit);
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn latch_log_trace_cannot_lift_the_cap_on_third_party_targets() {
        let out = written("trace,rmcp=trace,tokio_postgres=trace", || {
            tracing::debug!(target: "rmcp::service", "rmcp-debug-line");
            tracing::trace!(target: "rmcp::transport::streamable_http_server::tower", "rmcp-trace-line");
            tracing::debug!(target: "tokio_postgres::query", "pg-debug-line");
            tracing::trace!(target: "h2::codec::framed_write", "h2-trace-line");
            tracing::debug!(target: "latchkey", "lookalike-debug-line");
            tracing::info!(target: "rmcp::service", "rmcp-info-line");
            tracing::warn!(target: "hyper_util::client", "hyper-warn-line");
            tracing::trace!(target: "latch_core::broker", "core-trace-line");
            tracing::debug!(target: "latch::http", "access-debug-line");
        });
        for hidden in [
            "rmcp-debug-line",
            "rmcp-trace-line",
            "pg-debug-line",
            "h2-trace-line",
            "lookalike-debug-line",
        ] {
            assert!(!out.contains(hidden), "{hidden} written: {out}");
        }
        for shown in [
            "rmcp-info-line",
            "hyper-warn-line",
            "core-trace-line",
            "access-debug-line",
        ] {
            assert!(out.contains(shown), "{shown} missing: {out}");
        }
    }

    /// The metadata of a `log` record `sqlx::query` at debug, as `tracing-log` hands it to
    /// the dispatcher when sqlx asks `log_enabled!` before logging a query.
    struct Probe;
    static PROBE: Probe = Probe;
    static PROBE_META: Metadata<'static> = Metadata::new(
        "log probe",
        "sqlx::query",
        tracing::Level::DEBUG,
        None,
        None,
        None,
        tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(&PROBE)),
        tracing::metadata::Kind::EVENT,
    );
    impl tracing::callsite::Callsite for Probe {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &Metadata<'_> {
            &PROBE_META
        }
    }

    #[test]
    fn a_probe_for_a_capped_event_does_not_swallow_the_next_line() {
        // sqlx asks `log_enabled!` (through tracing-log: `Dispatch::enabled`) and then logs
        // through a callsite that is never enabled; the question must leave nothing behind
        // that drops Latch's next line on the thread (it did with per-layer filters).
        let buf = Buf::default();
        let out = buf.clone();
        let d = dispatch(Format::Json, EnvFilter::new("info"), move || out.clone());
        tracing::dispatcher::with_default(&d, || {
            for _ in 0..3 {
                let _ = d.enabled(&PROBE_META);
                tracing::warn!(target: "latch_server::startup", "line-after-probe");
            }
        });
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out.matches("line-after-probe").count(), 3, "{out}");
    }

    #[test]
    fn credential_shaped_path_segments_are_not_logged() {
        assert_eq!(
            path_for_log("/v1/leases/eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln/renew"),
            "/v1/leases/[credential]/renew"
        );
        assert_eq!(
            path_for_log("/v1/leases/lease_0190/renew"),
            "/v1/leases/lease_0190/renew"
        );
        assert_eq!(path_for_log("/"), "/");
    }

    #[test]
    fn every_named_payload_target_is_capped_and_the_operator_filter_still_applies() {
        for t in PAYLOAD_TARGETS {
            assert!(!is_latch_target(t), "{t}");
        }
        assert!(is_latch_target("latch"));
        assert!(is_latch_target("latch_server::http::mcp"));
        assert!(!is_latch_target("latch_extra::x"));
        // The operator's filter still narrows Latch's own events.
        let out = written("warn", || {
            tracing::info!(target: "latch_core::broker", "core-info-line");
            tracing::warn!(target: "latch_core::broker", "core-warn-line");
        });
        assert!(!out.contains("core-info-line"), "{out}");
        assert!(out.contains("core-warn-line"), "{out}");
    }
}
