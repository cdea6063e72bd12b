//! OpenTelemetry traces: Latch's `tracing` spans exported over OTLP/HTTP (protobuf) when
//! `[telemetry]` (or the `OTEL_*` environment) names a collector.
//!
//! The exporter is `opentelemetry-otlp`'s HTTP exporter with its blocking reqwest client,
//! driven by the SDK's batch span processor on a thread of its own (so a slow collector never
//! holds a request). [`start`] builds it and plugs [`tracing_opentelemetry`]'s layer into the
//! slot the logging set-up (`logging::init`) left in the process's subscriber;
//! [`Telemetry::shutdown`] flushes what is buffered.
//!
//! # Security
//! Only spans are exported, never log events ([`SpansOnly`]), and only Latch's own spans
//! (the targets the logging set-up calls Latch's): a library's span could carry a raw URL or a
//! header. Latch's spans carry ids (`latch.task_id`, `latch.request_id`, `latch.lease_id`),
//! route templates, methods, configured resource ids (`latch.resource`) and status codes: never a token, credential, secret or `Authorization` header (checked by the
//! `otel` integration test on the raw payload).

use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::span;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::{LookupSpan, Registry};
use tracing_subscriber::reload;

use crate::config::TelemetrySettings;

/// The layer in the process's subscriber slot: OpenTelemetry spans of Latch's targets.
pub type SpanLayer = SpansOnly<
    tracing_opentelemetry::OpenTelemetryLayer<Registry, opentelemetry_sdk::trace::Tracer>,
>;

/// The handle of the trace exporter's slot in a subscriber.
pub type SpanSlot = reload::Handle<Option<SpanLayer>, Registry>;

static GLOBAL_SLOT: OnceLock<SpanSlot> = OnceLock::new();

/// An empty slot for [`SpanLayer`], to place beneath a subscriber's filters, and its handle.
pub fn empty_slot() -> (reload::Layer<Option<SpanLayer>, Registry>, SpanSlot) {
    reload::Layer::new(None)
}

/// Remembers the slot of the process's global subscriber (the first one given).
pub fn keep_global_slot(slot: SpanSlot) {
    let _ = GLOBAL_SLOT.set(slot);
}

/// A layer that passes `L` the life of the spans whose target `keep` accepts (new, record,
/// enter, exit, close) and nothing else: no events, no other span.
pub struct SpansOnly<L> {
    inner: L,
    keep: fn(&str) -> bool,
}

impl<L> std::fmt::Debug for SpansOnly<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpansOnly")
    }
}

impl<L> SpansOnly<L> {
    fn kept<S: tracing::Subscriber + for<'a> LookupSpan<'a>>(
        &self,
        id: &span::Id,
        ctx: &Context<'_, S>,
    ) -> bool {
        ctx.metadata(id).is_some_and(|m| (self.keep)(m.target()))
    }
}

impl<S, L> Layer<S> for SpansOnly<L>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    L: Layer<S>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.inner.on_register_dispatch(subscriber);
    }
    fn on_layer(&mut self, subscriber: &mut S) {
        self.inner.on_layer(subscriber);
    }
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        if (self.keep)(attrs.metadata().target()) {
            self.inner.on_new_span(attrs, id, ctx);
        }
    }
    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        if self.kept(id, &ctx) {
            self.inner.on_record(id, values, ctx);
        }
    }
    fn on_follows_from(&self, id: &span::Id, follows: &span::Id, ctx: Context<'_, S>) {
        if self.kept(id, &ctx) {
            self.inner.on_follows_from(id, follows, ctx);
        }
    }
    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        if self.kept(id, &ctx) {
            self.inner.on_enter(id, ctx);
        }
    }
    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        if self.kept(id, &ctx) {
            self.inner.on_exit(id, ctx);
        }
    }
    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        if self.kept(&id, &ctx) {
            self.inner.on_close(id, ctx);
        }
    }
    fn on_id_change(&self, old: &span::Id, new: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_id_change(old, new, ctx);
    }
    // Events (log lines) are not exported: `on_event` is the default no-op.
    // No `downcast_raw`: the subscriber's reload slot does not forward it anyway, so the
    // exported spans have no incoming trace context (a caller's `traceparent` is not followed).
}

/// The running exporter; [`shutdown`](Self::shutdown) flushes it.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

/// Builds the OTLP/HTTP exporter for `settings` and installs its layer, exporting the spans
/// whose target `keep` accepts, in the process's subscriber. `Ok(None)` when the process has
/// no slot for it (its subscriber was not set up by the logging set-up's `init`, e.g. an
/// embedder's or a test's): nothing is exported.
///
/// # Errors
/// The exporter could not be built (an invalid URL, no HTTP client).
pub fn start(
    settings: &TelemetrySettings,
    keep: fn(&str) -> bool,
) -> Result<Option<Telemetry>, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(settings.traces_url.clone())
        .with_timeout(settings.export_timeout)
        .build()
        .map_err(|e| format!("OTLP exporter: {e}"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sampling_ratio,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name(settings.service_name.clone())
                .build(),
        )
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_tracer(provider.tracer("latch"));
    let installed = GLOBAL_SLOT
        .get()
        .is_some_and(|h| h.reload(Some(SpansOnly { inner: layer, keep })).is_ok());
    if installed {
        tracing::info!(endpoint = %settings.traces_url, service = %settings.service_name,
            ratio = settings.sampling_ratio, "exporting traces over OTLP/HTTP");
        Ok(Some(Telemetry { provider }))
    } else {
        let _ = provider.shutdown();
        Ok(None)
    }
}

impl Telemetry {
    /// Exports the spans still buffered and stops the exporter (bounded by its export
    /// timeout). Runs on a blocking thread: the exporter's client is synchronous.
    pub async fn shutdown(self) {
        if let Some(h) = GLOBAL_SLOT.get() {
            let _ = h.reload(None);
        }
        let provider = self.provider;
        let r = tokio::task::spawn_blocking(move || {
            let flushed = provider.force_flush();
            provider.shutdown().and(flushed)
        })
        .await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "traces not all exported at shutdown"),
            Err(e) => tracing::warn!(error = %e, "trace exporter shutdown failed"),
        }
    }
}
