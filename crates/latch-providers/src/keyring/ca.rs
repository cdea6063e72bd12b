//! Generations of a certificate authority key, sealed at rest, with rotation.
//!
//! Each generation is one key blob named `<prefix>-<generation, 4+ digits>` (e.g.
//! `ssh-user-ca-0000`), sealed with [`MasterKey::seal`] under that name. Its plaintext is a
//! JSON document `{"created_at": <unix secs>, "secret": <base64>, "public": <base64>}`: the
//! private key in the format of its user (OpenSSH private key, PKCS#8) and the public part
//! (OpenSSH public key, CA certificate DER).
//!
//! The store only offers *insert if absent*, so generations are never overwritten: generation
//! `n + 1` is created by [`CaKeyring::rotate`] and becomes current; generation `n` stays
//! published (see [`CaKeyring::published`]) until every certificate it signed has expired.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use latch_core::ports::Store;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{KeyError, MasterKey};

/// Upper bound on generations read at start (a guard against a corrupt store, not a limit
/// anyone should reach: one rotation a day is ~27 years).
const MAX_GENERATIONS: u32 = 10_000;

/// One CA key generation.
pub struct CaGeneration {
    /// 0, 1, 2, …
    pub generation: u32,
    /// When it was generated (Unix seconds).
    pub created_at_unix_secs: i64,
    /// The private key (format defined by the user of the keyring).
    pub secret: Zeroizing<Vec<u8>>,
    /// The public part (format defined by the user of the keyring).
    pub public: Vec<u8>,
}

impl fmt::Debug for CaGeneration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaGeneration")
            .field("generation", &self.generation)
            .field("created_at_unix_secs", &self.created_at_unix_secs)
            .field("secret", &"[redacted]")
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct Payload {
    created_at: i64,
    secret: String,
    public: String,
}

/// A freshly generated key: (private key, public part).
pub type GeneratedCa = (Zeroizing<Vec<u8>>, Vec<u8>);

/// The generations of one CA key, oldest first; the last is current.
///
/// # Security
/// Private keys are only ever stored sealed with the master key (AES-256-GCM, AAD binds the
/// blob name), held in zeroizing buffers, and redacted from `Debug`.
#[derive(Debug)]
pub struct CaKeyring {
    prefix: String,
    generations: Vec<CaGeneration>,
}

fn blob_name(prefix: &str, generation: u32) -> String {
    format!("{prefix}-{generation:04}")
}

impl CaKeyring {
    /// Loads every generation stored under `prefix`, or generates generation 0 with `generate`
    /// when there is none (first start). Concurrent first starts agree on one key (insert if
    /// absent).
    ///
    /// # Errors
    /// [`KeyError::Store`] on store failures, [`KeyError::Decrypt`] and friends when a blob does
    /// not open with `master`, [`KeyError::Crypto`] when generation fails.
    pub async fn load_or_create(
        store: &dyn Store,
        master: &MasterKey,
        prefix: &str,
        now_unix_secs: i64,
        generate: impl Fn() -> Result<GeneratedCa, KeyError> + Send + Sync,
    ) -> Result<Self, KeyError> {
        let mut ring = Self::load(store, master, prefix).await?;
        if ring.generations.is_empty() {
            ring.insert_next(store, master, now_unix_secs, &generate)
                .await?;
            tracing::info!(ca = prefix, "generated a new certificate authority key");
        }
        Ok(ring)
    }

    async fn load(store: &dyn Store, master: &MasterKey, prefix: &str) -> Result<Self, KeyError> {
        let mut generations = Vec::new();
        for generation in 0..MAX_GENERATIONS {
            let name = blob_name(prefix, generation);
            let Some(blob) = store.key_blob(&name).await? else {
                break;
            };
            generations.push(open(master, &name, generation, &blob)?);
        }
        Ok(Self {
            prefix: prefix.to_owned(),
            generations,
        })
    }

    /// Re-reads the generations from the store (to pick up a rotation made by another replica).
    ///
    /// # Errors
    /// As [`load_or_create`](Self::load_or_create).
    pub async fn reload(&mut self, store: &dyn Store, master: &MasterKey) -> Result<(), KeyError> {
        let fresh = Self::load(store, master, &self.prefix).await?;
        if !fresh.generations.is_empty() {
            *self = fresh;
        }
        Ok(())
    }

    /// Generates a new generation and makes it current. Older generations stay stored and
    /// published (see [`published`](Self::published)). If another instance rotated at the same
    /// moment, its key wins and is used.
    ///
    /// # Errors
    /// As [`load_or_create`](Self::load_or_create).
    pub async fn rotate(
        &mut self,
        store: &dyn Store,
        master: &MasterKey,
        now_unix_secs: i64,
        generate: impl Fn() -> Result<GeneratedCa, KeyError> + Send + Sync,
    ) -> Result<(), KeyError> {
        self.reload(store, master).await?;
        self.insert_next(store, master, now_unix_secs, &generate)
            .await?;
        tracing::info!(
            ca = %self.prefix,
            generation = self.current().generation,
            "rotated certificate authority key"
        );
        Ok(())
    }

    async fn insert_next(
        &mut self,
        store: &dyn Store,
        master: &MasterKey,
        now_unix_secs: i64,
        generate: &(dyn Fn() -> Result<GeneratedCa, KeyError> + Send + Sync),
    ) -> Result<(), KeyError> {
        let generation = self.generations.last().map_or(0, |g| g.generation + 1);
        let name = blob_name(&self.prefix, generation);
        let (secret, public) = generate()?;
        let payload = Zeroizing::new(
            serde_json::to_vec(&Payload {
                created_at: now_unix_secs,
                secret: STANDARD.encode(&secret[..]),
                public: STANDARD.encode(&public),
            })
            .map_err(|_| KeyError::Crypto("encoding a ca key failed"))?,
        );
        let sealed = master.seal(&name, &payload);
        let stored = store.put_key_blob_if_absent(&name, &sealed).await?;
        self.generations
            .push(open(master, &name, generation, &stored)?);
        Ok(())
    }

    /// The current (newest) generation, which signs new certificates.
    ///
    /// # Panics
    /// Never: a keyring always holds at least one generation.
    #[expect(
        clippy::expect_used,
        reason = "every constructor loads or creates generation 0 before returning a keyring"
    )]
    pub fn current(&self) -> &CaGeneration {
        self.generations
            .last()
            .expect("a ca keyring has at least one generation")
    }

    /// Every generation, oldest first.
    pub fn generations(&self) -> &[CaGeneration] {
        &self.generations
    }

    /// The generations whose public keys must still be published at `now`: the current one, and
    /// every older one whose successor was created less than `retain_secs` ago (with
    /// `retain_secs` the longest life a certificate can have, its keys may still have valid
    /// certificates out there). Newest first.
    pub fn published(&self, now_unix_secs: i64, retain_secs: i64) -> Vec<&CaGeneration> {
        let mut out = Vec::new();
        for (i, g) in self.generations.iter().enumerate().rev() {
            let keep = match self.generations.get(i + 1) {
                None => true,
                Some(next) => now_unix_secs < next.created_at_unix_secs.saturating_add(retain_secs),
            };
            if keep {
                out.push(g);
            }
        }
        out
    }
}

fn open(
    master: &MasterKey,
    name: &str,
    generation: u32,
    blob: &[u8],
) -> Result<CaGeneration, KeyError> {
    let plain = master.open(name, blob)?;
    let malformed = || KeyError::Malformed {
        name: name.to_owned(),
        len: blob.len(),
    };
    let parsed: Payload = serde_json::from_slice(&plain).map_err(|_| malformed())?;
    // The base64 text of the private key is zeroized too.
    let secret_b64 = Zeroizing::new(parsed.secret);
    let secret = Zeroizing::new(STANDARD.decode(&*secret_b64).map_err(|_| malformed())?);
    let public = STANDARD.decode(&parsed.public).map_err(|_| malformed())?;
    let created_at = parsed.created_at;
    Ok(CaGeneration {
        generation,
        created_at_unix_secs: created_at,
        secret,
        public,
    })
}
