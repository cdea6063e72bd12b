//! The HTTP layer's shared state ([`AppState`]) and per-request metadata ([`ReqMeta`]).
//!
//! `AppState` holds ports (`Arc<dyn …>`) and HTTP-side settings, never a concrete store or
//! credential provider: `startup.rs` chooses those.

use std::sync::Arc;

use latch_core::Broker;
use latch_core::broker::CallCtx;
use latch_core::ports::CaPublisher;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::{IntrospectionClient, ProxyConfig, ScanConfig};
use crate::dev::DevIssuer;

/// Shared state of the HTTP layer.
#[derive(Clone)]
pub struct AppState {
    /// The broker.
    pub broker: Arc<Broker>,
    /// Development issuer, when enabled.
    pub dev: Option<Arc<DevIssuer>>,
    /// Published signing keys (RFC 7517 JWK Set).
    pub jwks: Arc<dyn Fn() -> serde_json::Value + Send + Sync>,
    /// The SPIFFE bundle of what Latch mints as SVIDs (`GET /v1/spiffe/bundle`).
    pub spiffe_bundle: Arc<dyn Fn() -> serde_json::Value + Send + Sync>,
    /// Prometheus exposition.
    pub metrics: PrometheusHandle,
    /// Bounds the store counts behind the live-state gauges of `/metrics`.
    pub census: Arc<crate::metrics::CensusGate>,
    /// RFC 7662 clients.
    pub introspection_clients: Arc<Vec<IntrospectionClient>>,
    /// Public base URL (the `iss` of minted tokens; DPoP `htu`s are checked against it).
    pub base_url: String,
    /// DPoP proof verifier (RFC 9449).
    pub dpop: Arc<crate::http::dpop::DpopVerifier>,
    /// Issuer URLs of the workload issuers (authorization servers of the MCP resource).
    pub workload_issuers: Arc<Vec<String>>,
    /// Cancelled at shutdown: ends open MCP streams so a graceful shutdown does not wait on them.
    pub mcp_cancel: tokio_util::sync::CancellationToken,
    /// Audit checkpoints and exports.
    pub checkpointer: Arc<crate::audit::Checkpointer>,
    /// The SSH user CA (OpenSSH public keys and KRL for `/v1/ssh/*`), when configured.
    pub ssh_ca: Option<Arc<dyn CaPublisher>>,
    /// The X.509 client CA (PEM certificates and CRLs for `/v1/x509/*`), when configured.
    pub x509_ca: Option<Arc<dyn CaPublisher>>,
    /// Leak scanning (`POST /v1/scan`).
    pub scan: Arc<ScanSettings>,
    /// `latch proxy` rules (`GET /v1/proxy/rules/{resource}`).
    pub proxy: Arc<ProxyConfig>,
    /// `[targets] ready_requires_targets`: `/readyz` answers 503 while a target is down.
    pub ready_requires_targets: bool,
    /// `[login]`: what `GET /v1/login/config` publishes, when terminal sign-in is configured.
    pub login: Option<Arc<crate::config::LoginSettings>>,
    /// The approval console (`/console/`), when `[console] enabled`.
    pub console: Option<Arc<crate::console::ConsoleState>>,
    /// OpenID Shared Signals (`[ssf]`): metadata, streams, the verifier of pushed SETs.
    pub ssf: Option<Arc<crate::ssf::SsfState>>,
}

/// Request id and source address, set by middleware for every request.
#[derive(Debug, Clone)]
pub struct ReqMeta {
    /// `x-request-id` (taken from the caller if well-formed, else generated).
    pub request_id: String,
    /// Peer address.
    pub source_ip: Option<String>,
    /// The connection's client certificate, when the listener verified it as an X.509-SVID.
    pub peer_svid: Option<latch_core::broker::PeerSvid>,
    /// The protected resource the request came through: `{base}/mcp` for `/mcp` and the REST
    /// calls its tools make in-process, else `None` (see `CallCtx::resource`).
    pub resource: Option<String>,
}

impl ReqMeta {
    pub(crate) fn ctx(&self) -> CallCtx {
        CallCtx::new(Some(self.request_id.clone()), self.source_ip.clone())
            .with_peer_svid(self.peer_svid.clone())
            .with_resource(self.resource.clone())
    }
}

/// Scan settings held by the HTTP layer.
#[derive(Debug, Clone)]
pub struct ScanSettings {
    /// From `[scan]`.
    pub config: ScanConfig,
    /// This broker's issuer URL (the `iss` of its access tokens).
    pub issuer: String,
}
