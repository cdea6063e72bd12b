//! Workload and human identity verification for Latch.
//!
//! [`OidcVerifier`] implements [`latch_core::ports::IdentityVerifier`]: it verifies a bearer
//! token (a compact JWS, RFC 7515, carrying JWT claims, RFC 7519) from one of the configured
//! [`IssuerConfig`]s and maps its claims onto a [`latch_core::model::Principal`] with the
//! issuer's [`Preset`] (GitHub Actions, GitLab CI, Kubernetes, generic, or human). SPIFFE
//! JWT-SVIDs (`kind = "spiffe"`, [`SpiffeSettings`]) are verified against their trust domain's
//! bundle and mapped from their SPIFFE ID ([`spiffe_id::SpiffeId`]).
//!
//! Issuer keys come from a JWK Set (RFC 7517 §5) found by OpenID Connect Discovery 1.0, a fixed
//! URL, a pinned file, or given in-process ([`JwksSource`]); they are fetched on first use,
//! cached, and refreshed (rate-limited) when a token names an unknown `kid`.
//!
//! [`SecurityEventVerifier`] verifies the Security Event Tokens (RFC 8417) that configured
//! Shared Signals transmitters push to Latch, with the same key handling.
//!
//! # Security
//! * Only the RS, PS and ES families (`ES256`, `ES384`) and `EdDSA` are accepted, and only
//!   those in the issuer's allow-list; `none` and `HS*` never are, whatever the configuration
//!   says.
//! * Keys are never taken from the token header (`jwk`, `jku`, `x5c`, `x5u` are rejected,
//!   RFC 7515 §4.1.2–4.1.6).
//! * All time checks use the injected [`latch_core::Clock`].
//! * Error messages never contain the token.

mod claims;
mod config;
mod jose;
mod jwks;
mod set;
mod spiffe;
pub mod spiffe_id;
mod verifier;
pub mod x509_svid;

pub use config::{
    ConfigError, DEFAULT_LEEWAY, IssuerConfig, IssuerKind, JwksSource, MAX_LEEWAY, Preset,
    SigningAlgorithm, SpiffeSettings, VerifierOptions,
};
pub use set::{MAX_SET_AGE, SecurityEventVerifier, TransmitterSettings};
pub use verifier::OidcVerifier;

/// Re-exported so callers can build [`JwksSource::Static`] without naming `jsonwebtoken`.
pub use jsonwebtoken::jwk::JwkSet;
