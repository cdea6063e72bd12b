//! The broker's keys: the master key, sealed key blobs, the credential-HMAC key and the token
//! signing keys.
//!
//! # Key hierarchy
//! ```text
//! MasterKey (32 random bytes, base64 in a 0600 file or an environment variable)
//!  ├─ HKDF-SHA256(info = "latch key blob seal v1")   → AES-256-GCM key sealing key blobs
//!  └─ HKDF-SHA256(info = "latch credential hmac v1") → HMAC key for credential digests
//! ```
//! Key blobs (e.g. the PKCS#8 of a token signing key) are sealed with [`MasterKey::seal`] and
//! stored with [`Store::put_key_blob_if_absent`](latch_core::ports::Store::put_key_blob_if_absent);
//! only ciphertext ever reaches the store.
//!
//! # Sealed blob format (version 1)
//! ```text
//! [0x01][12-byte random nonce][AES-256-GCM ciphertext][16-byte tag]
//! ```
//! The additional authenticated data is the version byte followed by the UTF-8 key name, so a
//! blob stored under one name cannot be substituted for another name's blob.

mod ca;
mod master;
mod signing;

pub use ca::{CaGeneration, CaKeyring, GeneratedCa};
pub use master::MasterKey;
pub use signing::{PublishedKey, SigningAlg, SigningKeys, UnknownSigningAlg};

use std::path::PathBuf;

/// A key-handling failure.
///
/// # Security
/// No variant carries key material, plaintext, or the content of a key file or environment
/// variable; messages name only paths, variable names, key names and lengths.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The master key text is not valid base64 or does not decode to 32 bytes.
    #[error("invalid master key: {0}")]
    InvalidMasterKey(String),
    /// The environment variable holding the master key is unset or not valid Unicode.
    #[error("master key environment variable {0} is not set or not valid unicode")]
    EnvMissing(String),
    /// Reading or writing a key file failed.
    #[error("key file {}: {message}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error kind (e.g. [`std::io::ErrorKind::AlreadyExists`]).
        kind: std::io::ErrorKind,
        /// The OS error text.
        message: String,
    },
    /// The master key file can be read or written by its group or by others (unix only).
    #[error(
        "master key file {} is accessible by group or others (mode {mode:04o}); restrict it with `chmod 600`",
        path.display()
    )]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A sealed blob failed authentication: wrong master key, a blob stored under another name,
    /// or tampered / corrupted data.
    #[error(
        "key blob {name} could not be opened (wrong master key, wrong key name, or tampered data)"
    )]
    Decrypt {
        /// The key name the blob was opened as.
        name: String,
    },
    /// A sealed blob is too short to be valid.
    #[error("key blob {name} is malformed ({len} bytes)")]
    Malformed {
        /// The key name.
        name: String,
        /// The blob length in bytes.
        len: usize,
    },
    /// A sealed blob has a format version this build does not know.
    #[error("key blob {name} has unsupported format version {version}")]
    UnsupportedVersion {
        /// The key name.
        name: String,
        /// The version byte found.
        version: u8,
    },
    /// A decrypted signing key is not a valid key for its algorithm.
    #[error("key blob {name} does not hold a valid {alg} signing key")]
    InvalidSigningKey {
        /// The key name.
        name: String,
        /// The expected algorithm (`EdDSA`, `ES256`).
        alg: &'static str,
    },
    /// A public key has the wrong length or encoding for its algorithm.
    #[error("invalid public key: {0}")]
    InvalidPublicKey(&'static str),
    /// The store failed.
    #[error("key store: {0}")]
    Store(String),
    /// The cryptographic library reported an internal failure (key generation, signing).
    #[error("cryptographic operation failed: {0}")]
    Crypto(&'static str),
}

impl From<latch_core::ports::StoreError> for KeyError {
    fn from(e: latch_core::ports::StoreError) -> Self {
        KeyError::Store(e.to_string())
    }
}
