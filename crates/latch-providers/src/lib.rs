//! Credential providers and the broker's encrypted key store.
//!
//! * [`keyring`]: the master key ([`keyring::MasterKey`]), AES-256-GCM sealing of key blobs kept
//!   in the [`Store`](latch_core::ports::Store), the derived credential-HMAC key, and the
//!   broker's token signing keys ([`keyring::SigningKeys`]) with their JWK Set (RFC 7517).
//! * [`jwt`] (feature `jwt`, on by default): [`jwt::JwtProvider`], a
//!   [`CredentialProvider`](latch_core::ports::CredentialProvider) that mints signed JWT access
//!   tokens (RFC 7519, RFC 9068 profile).
//! * [`postgres`]: [`postgres::PostgresProvider`], a PostgreSQL login role per lease.
//! * [`redis_acl`]: [`redis_acl::RedisProvider`], a Redis ACL user per lease.
//! * [`ssh`]: [`ssh::SshProvider`], OpenSSH user certificates and their KRL.
//! * [`x509`]: [`x509::X509Provider`], X.509 client certificates and their CRL.
//! * [`keyring::CaKeyring`]: CA key generations sealed at rest, with rotation.
//!
//! # Security
//! No cryptographic primitive is implemented here: AEAD, HKDF, hashing, random numbers and
//! signatures all come from `aws-lc-rs` (through `jsonwebtoken`'s `aws_lc_rs` backend for JWS,
//! `rcgen`'s `aws_lc_rs` backend for X.509), SSH signatures from `ssh-key`, SCRAM verifiers from
//! `postgres-protocol`. The KRL is plain data formatting (PROTOCOL.krl).
//! Secret material is held in zeroizing buffers and never appears in `Debug` output, logs or
//! error messages.

pub mod keyring;
pub mod postgres;
pub mod redis_acl;
#[cfg(test)]
mod settings_reference_tests;
pub mod ssh;
mod util;
pub mod x509;

#[cfg(feature = "jwt")]
pub mod jwt;
