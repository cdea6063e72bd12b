//! OpenID Shared Signals as the HTTP layer serves it: the transmitter metadata (SSF 1.0 §7.1),
//! the stream configurations built from `[[ssf.receivers]]` (§8.1.1), and the verifier of the
//! SETs transmitters push to Latch. The delivery itself is the `ssf` job.

use std::sync::Arc;

use latch_core::ssf::{EVENTS_SUPPORTED, PUSH_DELIVERY, SPEC_VERSION, SetVerifier};
use serde::Serialize;
use utoipa::ToSchema;

use crate::config::SsfConfig;

/// Path of the stream configuration endpoint.
pub const CONFIGURATION_PATH: &str = "/v1/ssf/stream";
/// Path of the stream status endpoint.
pub const STATUS_PATH: &str = "/v1/ssf/status";
/// Path where transmitters push SETs to Latch (RFC 8935).
pub const EVENTS_PATH: &str = "/v1/ssf/events";

/// What the Shared Signals routes serve.
pub struct SsfState {
    /// Latch's issuer (its public URL): the `iss` of the SETs it signs.
    pub issuer: String,
    /// The configured streams, in configuration order.
    pub streams: Vec<StreamConfiguration>,
    /// Verifies pushed SETs, when transmitters are configured.
    pub verifier: Option<Arc<dyn SetVerifier>>,
}

impl std::fmt::Debug for SsfState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsfState")
            .field("issuer", &self.issuer)
            .field("streams", &self.streams.len())
            .field("receiving", &self.verifier.is_some())
            .finish()
    }
}

/// A stream's configuration (SSF 1.0 §8.1.1), as `GET /v1/ssf/stream` shows it. Never
/// carries the receiver's authorization header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct StreamConfiguration {
    /// The stream id (the receiver's configured name).
    pub stream_id: String,
    /// Latch's issuer, the `iss` of every SET on the stream.
    pub iss: String,
    /// The `aud` of every SET on the stream.
    pub aud: String,
    /// How SETs are delivered.
    pub delivery: Delivery,
    /// Event types Latch can send.
    pub events_supported: Vec<String>,
    /// Event types the receiver asked for (`events_requested` in `latch.toml`).
    pub events_requested: Vec<String>,
    /// Event types sent on this stream: those requested that Latch sends.
    pub events_delivered: Vec<String>,
    /// The configured description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A stream's delivery method (SSF 1.0 §6.1.1: push, RFC 8935).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Delivery {
    /// `urn:ietf:rfc:8935`.
    pub method: String,
    /// Where SETs are POSTed.
    pub endpoint_url: String,
}

/// The transmitter configuration metadata (SSF 1.0 §7.1) at `/.well-known/ssf-configuration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct TransmitterMetadata {
    /// `1_0`: the final SSF 1.0.
    pub spec_version: String,
    /// Latch's issuer: the `iss` of its SETs.
    pub issuer: String,
    /// The JWK Set of the keys that sign its SETs (`/.well-known/jwks.json`).
    pub jwks_uri: String,
    /// `["urn:ietf:rfc:8935"]`: push delivery only.
    pub delivery_methods_supported: Vec<String>,
    /// The stream configuration endpoint (read-only: streams are configured in `latch.toml`).
    pub configuration_endpoint: String,
    /// The stream status endpoint.
    pub status_endpoint: String,
    /// How to authenticate to those endpoints: an operator's bearer token (RFC 6750).
    pub authorization_schemes: Vec<AuthorizationScheme>,
}

/// One authorization scheme (SSF 1.0 §7.1.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct AuthorizationScheme {
    /// The specification's URN.
    pub spec_urn: String,
}

/// A stream's status (SSF 1.0 §8.1.2.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct StreamStatus {
    /// The stream id.
    pub stream_id: String,
    /// `enabled`: configured streams always transmit (pausing one is not supported).
    pub status: String,
}

impl SsfState {
    /// The state for `config`, with `issuer` (Latch's public URL) and the verifier of pushed
    /// SETs when transmitters are configured.
    pub fn new(config: &SsfConfig, issuer: &str, verifier: Option<Arc<dyn SetVerifier>>) -> Self {
        let issuer = issuer.trim_end_matches('/').to_owned();
        let owned = |v: &[&str]| v.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>();
        let streams = config
            .receivers
            .iter()
            .map(|r| StreamConfiguration {
                stream_id: r.name.clone(),
                iss: issuer.clone(),
                aud: r.audience.clone(),
                delivery: Delivery {
                    method: PUSH_DELIVERY.to_owned(),
                    endpoint_url: r.endpoint_url.clone(),
                },
                events_supported: owned(&EVENTS_SUPPORTED),
                events_requested: r.events_requested.clone(),
                events_delivered: owned(&r.events_delivered()),
                description: r.description.clone(),
            })
            .collect();
        Self {
            issuer,
            streams,
            verifier,
        }
    }

    /// Whether Latch transmits (at least one receiver is configured).
    pub fn transmitting(&self) -> bool {
        !self.streams.is_empty()
    }

    /// The transmitter metadata.
    pub fn metadata(&self) -> TransmitterMetadata {
        let b = &self.issuer;
        TransmitterMetadata {
            spec_version: SPEC_VERSION.to_owned(),
            issuer: b.clone(),
            jwks_uri: format!("{b}/.well-known/jwks.json"),
            delivery_methods_supported: vec![PUSH_DELIVERY.to_owned()],
            configuration_endpoint: format!("{b}{CONFIGURATION_PATH}"),
            status_endpoint: format!("{b}{STATUS_PATH}"),
            authorization_schemes: vec![AuthorizationScheme {
                spec_urn: "urn:ietf:rfc:6750".to_owned(),
            }],
        }
    }
}
