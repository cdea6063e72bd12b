//! The master key and sealing of key blobs.

use std::fmt;
use std::io::{Read, Write};
use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use aws_lc_rs::hkdf;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use super::KeyError;

/// Length of the master key in bytes.
const MASTER_KEY_LEN: usize = 32;
/// Longest master key file read, in bytes.
const MAX_KEY_FILE_LEN: usize = 4096;
/// Format version of sealed blobs.
const BLOB_VERSION: u8 = 1;
/// AES-GCM tag length in bytes.
const TAG_LEN: usize = 16;
/// HKDF info for the key-blob sealing key.
const SEAL_INFO: &str = "latch key blob seal v1";
/// HKDF info for the credential HMAC key.
const HMAC_INFO: &str = "latch credential hmac v1";
/// HKDF info of the DPoP server-nonce key.
const DPOP_NONCE_INFO: &str = "latch dpop nonce v1";
/// HKDF info of the approval console's login-state key.
const CONSOLE_LOGIN_INFO: &str = "latch console login v1";

/// The broker's 256-bit master key, from which the key-blob sealing key and the credential HMAC
/// key are derived (HKDF-SHA256, RFC 5869).
///
/// Text form: standard base64 (RFC 4648 §4, padded) of exactly 32 bytes; surrounding whitespace
/// is ignored. Generate one with `openssl rand -base64 32` or [`MasterKey::generate_to_file`].
///
/// # Security
/// The key bytes are zeroized on drop, `Debug` prints no key material, and the type is not
/// `Clone` so no stray copies exist. Losing the master key makes every sealed blob (and therefore
/// the token signing keys) unrecoverable; leaking it discloses them.
pub struct MasterKey {
    bytes: Zeroizing<[u8; MASTER_KEY_LEN]>,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    /// Parses a base64 master key (32 bytes once decoded).
    ///
    /// # Errors
    /// [`KeyError::InvalidMasterKey`] when the text is not base64 or not 32 bytes long. The error
    /// never echoes the input.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let decoded = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .map_err(|_| KeyError::InvalidMasterKey("not valid base64".to_owned()))?,
        );
        if decoded.len() != MASTER_KEY_LEN {
            return Err(KeyError::InvalidMasterKey(format!(
                "decodes to {} bytes, expected {MASTER_KEY_LEN}",
                decoded.len()
            )));
        }
        let mut bytes = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        bytes.copy_from_slice(&decoded);
        Ok(Self { bytes })
    }

    /// Reads a base64 master key from a file.
    ///
    /// # Errors
    /// * [`KeyError::Io`] when the file cannot be opened or read.
    /// * [`KeyError::InsecurePermissions`] (unix) when the file grants any permission to its
    ///   group or to others (mode `& 0o077 != 0`); `chmod 600` (or `400`) fixes it.
    /// * [`KeyError::InvalidMasterKey`] when the content is not a base64 32-byte key.
    ///
    /// # Security
    /// Permissions are checked on the opened file handle (no check-then-open race). The file
    /// content is zeroized after parsing.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| io_error(path, &e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = file
                .metadata()
                .map_err(|e| io_error(path, &e))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(KeyError::InsecurePermissions {
                    path: path.to_owned(),
                    mode: mode & 0o7777,
                });
            }
        }
        // Sized up front so the buffer never reallocates (which would leave an unzeroized copy);
        // a key is 44 characters, anything longer than the limit fails to parse.
        let mut text = Zeroizing::new(String::with_capacity(MAX_KEY_FILE_LEN + 1));
        file.take(MAX_KEY_FILE_LEN as u64)
            .read_to_string(&mut text)
            .map_err(|e| io_error(path, &e))?;
        Self::from_base64(&text)
    }

    /// Reads a base64 master key from the environment variable `var`.
    ///
    /// # Errors
    /// [`KeyError::EnvMissing`] when the variable is unset or not Unicode;
    /// [`KeyError::InvalidMasterKey`] when its value is not a base64 32-byte key.
    pub fn from_env(var: &str) -> Result<Self, KeyError> {
        let value =
            Zeroizing::new(std::env::var(var).map_err(|_| KeyError::EnvMissing(var.to_owned()))?);
        Self::from_base64(&value)
    }

    /// Generates a new random master key and writes it, base64 and newline-terminated, to a
    /// **new** file at `path` created with mode `0600` (unix). Used for the embedded development
    /// default ("built-in keys"); production deployments should provision the key themselves.
    ///
    /// # Errors
    /// [`KeyError::Io`] when the file exists already (kind
    /// [`AlreadyExists`](std::io::ErrorKind::AlreadyExists); it is never overwritten) or cannot
    /// be written (a partially written file is removed); [`KeyError::Crypto`] when the system
    /// random generator fails.
    ///
    /// # Security
    /// The file is created with `O_EXCL` and mode `0600` in one step, so it is never readable by
    /// others, not even briefly. Its parent directory must already exist.
    pub fn generate_to_file(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref();
        let key = Self::generate()?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(|e| io_error(path, &e))?;
        // Sized up front so the buffer never reallocates (which would leave an unzeroized copy).
        let mut text = Zeroizing::new(String::with_capacity(64));
        STANDARD.encode_string(&key.bytes[..], &mut text);
        text.push('\n');
        let written = file
            .write_all(text.as_bytes())
            .and_then(|()| file.sync_all());
        if let Err(e) = written {
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(io_error(path, &e));
        }
        Ok(key)
    }

    /// Reads the master key from `path`, or, when the file does not exist, generates one there
    /// with [`generate_to_file`](Self::generate_to_file). If another process creates the file
    /// concurrently, its key is read instead.
    ///
    /// # Errors
    /// As [`from_file`](Self::from_file) and [`generate_to_file`](Self::generate_to_file).
    pub fn from_file_or_generate(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref();
        match Self::from_file(path) {
            Err(KeyError::Io {
                kind: std::io::ErrorKind::NotFound,
                ..
            }) => {}
            other => return other,
        }
        match Self::generate_to_file(path) {
            Err(KeyError::Io {
                kind: std::io::ErrorKind::AlreadyExists,
                ..
            }) => Self::from_file(path),
            other => {
                if other.is_ok() {
                    tracing::warn!(
                        path = %path.display(),
                        "generated a new master key file (development default); back it up"
                    );
                }
                other
            }
        }
    }

    /// A fresh random key from the system generator.
    fn generate() -> Result<Self, KeyError> {
        let mut bytes = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        aws_lc_rs::rand::fill(&mut bytes[..])
            .map_err(|_| KeyError::Crypto("random number generation failed"))?;
        Ok(Self { bytes })
    }

    /// HKDF-SHA256 (RFC 5869) of the master key with an empty salt and the given `info`,
    /// 32 bytes of output.
    #[expect(
        clippy::expect_used,
        reason = "HKDF-SHA256 yields up to 255 * 32 bytes; 32 is always within it"
    )]
    fn derive(&self, info: &str) -> Zeroizing<[u8; 32]> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(&self.bytes[..]);
        let info = [info.as_bytes()];
        let mut out = Zeroizing::new([0u8; 32]);
        prk.expand(&info, hkdf::HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut out[..]))
            .expect("HKDF-SHA256 can always produce 32 bytes");
        out
    }

    #[expect(
        clippy::expect_used,
        reason = "AES-256-GCM takes exactly the 32-byte key derive() returns"
    )]
    fn sealing_key(&self) -> RandomizedNonceKey {
        let key = self.derive(SEAL_INFO);
        RandomizedNonceKey::new(&AES_256_GCM, &key[..]).expect("AES-256-GCM accepts a 32-byte key")
    }

    /// The 32-byte key for keyed HMACs (HMAC-SHA256) of delivered credentials, derived with
    /// HKDF-SHA256 and info `"latch credential hmac v1"`. Deterministic for a given master key,
    /// so every replica computes the same credential digests.
    ///
    /// # Security
    /// Independent of the sealing key (distinct HKDF info). Keep the returned buffer short-lived;
    /// it is zeroized on drop.
    pub fn hmac_key(&self) -> Zeroizing<Vec<u8>> {
        let key = self.derive(HMAC_INFO);
        Zeroizing::new(key.to_vec())
    }

    /// The 32-byte HMAC-SHA256 key of DPoP server nonces (RFC 9449 §8), derived with
    /// HKDF-SHA256 and info `"latch dpop nonce v1"`: every replica issues and accepts the same
    /// nonces, and they stay valid across a restart.
    ///
    /// # Security
    /// Independent of the sealing and credential-HMAC keys (distinct HKDF info). Zeroized on drop.
    pub fn dpop_nonce_key(&self) -> Zeroizing<Vec<u8>> {
        let key = self.derive(DPOP_NONCE_INFO);
        Zeroizing::new(key.to_vec())
    }

    /// The 32-byte AES-256-GCM key that seals the approval console's login state (the
    /// `state`, `nonce` and PKCE verifier of a sign-in in progress, kept in a short-lived
    /// cookie), derived with HKDF-SHA256 and info `"latch console login v1"`: every replica
    /// opens what another sealed.
    ///
    /// # Security
    /// Independent of the sealing, credential-HMAC and DPoP keys (distinct HKDF info). Zeroized
    /// on drop.
    pub fn console_login_key(&self) -> Zeroizing<Vec<u8>> {
        let key = self.derive(CONSOLE_LOGIN_INFO);
        Zeroizing::new(key.to_vec())
    }

    /// Encrypts `plaintext` as a blob to be stored under `name`, with AES-256-GCM, a fresh random
    /// 96-bit nonce, and `[version] || name` as additional authenticated data. Output length is
    /// `plaintext.len() + 29` bytes (see the [module docs](super) for the layout).
    ///
    /// # Panics
    /// Only if the system random generator or AES-GCM implementation fails internally, which
    /// leaves no safe way to continue.
    ///
    /// # Security
    /// The blob can only be opened with the same master key **and** the same `name`. Random
    /// nonces are safe for far more seals than a key store performs (NIST SP 800-38D: 2³²).
    #[expect(
        clippy::expect_used,
        reason = "only a broken system random generator or AES-GCM fails here (see # Panics)"
    )]
    pub fn seal(&self, name: &str, plaintext: &[u8]) -> Vec<u8> {
        let key = self.sealing_key();
        let mut in_out = Zeroizing::new(plaintext.to_vec());
        let nonce = key
            .seal_in_place_append_tag(Aad::from(aad(name)), &mut *in_out)
            .expect("AES-256-GCM sealing with a random nonce failed");
        let mut blob = Vec::with_capacity(1 + NONCE_LEN + in_out.len());
        blob.push(BLOB_VERSION);
        blob.extend_from_slice(nonce.as_ref());
        blob.extend_from_slice(&in_out);
        blob
    }

    /// Decrypts and authenticates a blob produced by [`seal`](Self::seal) for the same `name`.
    ///
    /// # Errors
    /// * [`KeyError::Malformed`] when the blob is shorter than a version, nonce and tag.
    /// * [`KeyError::UnsupportedVersion`] when the version byte is not 1.
    /// * [`KeyError::Decrypt`] when authentication fails: wrong master key, wrong `name`, or a
    ///   modified blob. Nothing of the plaintext is returned in that case.
    pub fn open(&self, name: &str, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        if blob.len() < 1 + NONCE_LEN + TAG_LEN {
            return Err(KeyError::Malformed {
                name: name.to_owned(),
                len: blob.len(),
            });
        }
        if blob[0] != BLOB_VERSION {
            return Err(KeyError::UnsupportedVersion {
                name: name.to_owned(),
                version: blob[0],
            });
        }
        let nonce = Nonce::try_assume_unique_for_key(&blob[1..=NONCE_LEN]).map_err(|_| {
            KeyError::Malformed {
                name: name.to_owned(),
                len: blob.len(),
            }
        })?;
        let mut in_out = Zeroizing::new(blob[1 + NONCE_LEN..].to_vec());
        let plain_len = self
            .sealing_key()
            .open_in_place(nonce, Aad::from(aad(name)), &mut in_out)
            .map_err(|_| KeyError::Decrypt {
                name: name.to_owned(),
            })?
            .len();
        in_out.truncate(plain_len);
        Ok(in_out)
    }
}

/// Additional authenticated data of a blob: the format version, then the key name.
fn aad(name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(1 + name.len());
    aad.push(BLOB_VERSION);
    aad.extend_from_slice(name.as_bytes());
    aad
}

fn io_error(path: &Path, e: &std::io::Error) -> KeyError {
    KeyError::Io {
        path: path.to_owned(),
        kind: e.kind(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_differ_and_are_deterministic() {
        let k = MasterKey::from_base64(&STANDARD.encode([7u8; 32])).unwrap();
        assert_eq!(k.hmac_key().len(), 32);
        assert_eq!(*k.hmac_key(), *k.hmac_key());
        assert_ne!(&k.hmac_key()[..], &k.derive(SEAL_INFO)[..]);
        assert_ne!(&k.hmac_key()[..], &[7u8; 32][..]);
        assert_ne!(&k.dpop_nonce_key()[..], &k.hmac_key()[..]);
        assert_eq!(*k.dpop_nonce_key(), *k.dpop_nonce_key());
        assert_ne!(&k.console_login_key()[..], &k.hmac_key()[..]);
        assert_ne!(&k.console_login_key()[..], &k.dpop_nonce_key()[..]);
    }

    #[test]
    fn invalid_base64_does_not_echo_input() {
        let err = MasterKey::from_base64("s3cr3t-not-base64!").unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"));
        let err = MasterKey::from_base64(&STANDARD.encode([1u8; 16])).unwrap_err();
        assert!(err.to_string().contains("16 bytes"));
    }
}
