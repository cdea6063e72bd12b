//! The `ssh` credential provider: OpenSSH user certificates signed by the broker's SSH CA, and
//! the KRL (key revocation list) that makes revocation reach `sshd`.
//!
//! # Resource settings
//! ```toml
//! [[resources]]
//! id = "build-hosts"
//! kind = "ssh"
//! actions = ["read"]      # any actions; they are recorded in the key id's audit trail
//! # …
//! [resources.settings]
//! principals = ["deploy"]                 # allowed principals (never empty)
//! backdate_secs = 60                      # valid_after = issue time - 60 s (clock skew; default 60, max 600)
//! force_command = "/usr/local/bin/agent-shell"   # optional critical option
//! source_address = "10.0.0.0/8"           # optional critical option (CIDR list)
//! extensions = ["permit-pty"]             # optional; default none
//! ```
//!
//! # Request parameters
//! `{"public_key": "ssh-ed25519 AAAA… comment", "principals": ["deploy"]}`. `principals` is
//! optional (default: every configured principal) and must be a non-empty subset of the
//! configured ones. Ed25519, ECDSA P-256/384/521, their FIDO (`sk-`) variants and RSA ≥ 2048
//! bits are accepted; DSA is refused.
//!
//! # Certificates
//! A user certificate ([PROTOCOL.certkeys]) with a random serial, a key id
//! `latch task=<task id> lease=<lease id> resource=<resource id>` chosen by the broker (never
//! by the requester), `valid_after` = issue time − `backdate_secs`, `valid_before` = lease end.
//! The CA key is Ed25519, generated on first start and sealed at rest with the master key
//! ([`CaKeyring`], blob names `ssh-user-ca-NNNN`).
//!
//! # Revocation
//! Revoking a lease puts its key id in the KRL served by the broker ([`SshProvider::krl`]):
//! every certificate of the lease (renewals included) is revoked for every CA generation. sshd
//! reads the KRL from the file named by `RevokedKeys`; operators fetch it periodically
//! (`curl -o /etc/ssh/latch.krl https://latch/v1/ssh/krl`), at least every
//! [`SshProvider::krl_refresh_secs`] (the shortest `max_ttl` of the CA's resources, at most a
//! minute): a host that does refuses a revoked certificate at most that long after the
//! revocation. Entries leave the KRL once the lease's end has passed, when the certificate has
//! expired anyway.
//!
//! # KRL format
//! Written here from [PROTOCOL.krl] (it is data formatting, no cryptography; no Rust crate
//! writes KRLs): header (`SSHKRL\n\0`, format version 1, KRL version, generation date, flags,
//! reserved, comment), then one `KRL_SECTION_CERTIFICATES` per published CA key holding a
//! `KRL_SECTION_CERT_KEY_ID` list. The KRL is unsigned (sshd does not check KRL signatures).
//!
//! [PROTOCOL.certkeys]: https://cvsweb.openbsd.org/src/usr.bin/ssh/PROTOCOL.certkeys
//! [PROTOCOL.krl]: https://cvsweb.openbsd.org/src/usr.bin/ssh/PROTOCOL.krl

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use latch_core::Clock;
use latch_core::model::{DeliveredCredential, Lease, Resource};
use latch_core::ports::{CredentialProvider, MintRequest, Minted, ProviderError, Store};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;
use ssh_key::certificate::{Builder, CertType};
use ssh_key::rand_core::OsRng;
use ssh_key::{Algorithm, PrivateKey, PublicKey};
use zeroize::Zeroizing;

use crate::keyring::{CaKeyring, GeneratedCa, KeyError, MasterKey};
use crate::util;

/// Provider kind as named in resource configuration.
pub const KIND: &str = latch_core::model::ProviderKind::Ssh.as_str();

/// Key blob prefix of the SSH user CA generations.
pub const CA_BLOB_PREFIX: &str = "ssh-user-ca";

/// Largest accepted back-dating, seconds.
const MAX_BACKDATE_SECS: u64 = util::MAX_BACKDATE_SECS;

/// `KRL_MAGIC` of PROTOCOL.krl: `"SSHKRL\n\0"`.
const KRL_MAGIC: u64 = 0x5353_484b_524c_0a00;
/// `KRL_FORMAT_VERSION`.
const KRL_FORMAT_VERSION: u32 = 1;
/// `KRL_SECTION_CERTIFICATES`.
const KRL_SECTION_CERTIFICATES: u8 = 1;
/// `KRL_SECTION_CERT_KEY_ID`.
const KRL_SECTION_CERT_KEY_ID: u8 = 0x23;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SshSettings {
    principals: Vec<String>,
    #[serde(default = "util::default_backdate_secs")]
    backdate_secs: u64,
    #[serde(default)]
    force_command: Option<String>,
    #[serde(default)]
    source_address: Option<String>,
    #[serde(default)]
    extensions: Vec<String>,
}

/// Known certificate extensions (PROTOCOL.certkeys §Extensions).
const KNOWN_EXTENSIONS: &[&str] = &[
    "no-touch-required",
    "permit-X11-forwarding",
    "permit-agent-forwarding",
    "permit-port-forwarding",
    "permit-pty",
    "permit-user-rc",
];

fn valid_principal(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 64
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

impl SshSettings {
    fn load(resource: &Resource) -> Result<Self, ProviderError> {
        let s: SshSettings = util::settings(resource)?;
        let bad = |m: String| ProviderError::permanent(format!("resource {}: {m}", resource.id));
        if s.principals.is_empty() {
            return Err(bad("`principals` must not be empty".into()));
        }
        if let Some(p) = s.principals.iter().find(|p| !valid_principal(p)) {
            return Err(bad(format!("principal {p:?} is not a valid user name")));
        }
        if s.backdate_secs > MAX_BACKDATE_SECS {
            return Err(bad(format!(
                "`backdate_secs` must be at most {MAX_BACKDATE_SECS}"
            )));
        }
        if let Some(e) = s
            .extensions
            .iter()
            .find(|e| !KNOWN_EXTENSIONS.contains(&e.as_str()))
        {
            return Err(bad(format!("unknown certificate extension {e:?}")));
        }
        if let Some(c) = &s.force_command
            && (c.trim().is_empty() || c.chars().any(char::is_control))
        {
            return Err(bad("`force_command` must be a non-empty single line".into()));
        }
        if let Some(a) = &s.source_address
            && (a.is_empty()
                || !a
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || matches!(b, b'.' | b':' | b'/' | b',')))
        {
            return Err(bad(
                "`source_address` must be a comma-separated list of addresses or CIDRs".into(),
            ));
        }
        Ok(s)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SshParams {
    public_key: String,
    #[serde(default)]
    principals: Option<Vec<String>>,
}

/// Smallest RSA modulus accepted, bits (NIST SP 800-131A).
const MIN_RSA_BITS: usize = 2048;

/// Refuses DSA (removed from OpenSSH) and RSA keys under 2048 bits.
fn check_key_strength(key: &PublicKey) -> Result<(), ProviderError> {
    match key.algorithm() {
        Algorithm::Dsa => Err(ProviderError::invalid_request("dsa keys are not accepted")),
        Algorithm::Rsa { .. } => {
            let bits = key
                .key_data()
                .rsa()
                .and_then(|k| k.n.as_positive_bytes())
                .map_or(0, |n| n.len() * 8);
            if bits < MIN_RSA_BITS {
                return Err(ProviderError::invalid_request(format!(
                    "rsa keys need at least {MIN_RSA_BITS} bits"
                )));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The key id of every certificate of a lease (what the KRL lists).
pub fn key_id(task_id: &str, lease_id: &str, resource_id: &str) -> String {
    format!("latch task={task_id} lease={lease_id} resource={resource_id}")
}

/// Parsed CA generations.
struct CaState {
    ring: CaKeyring,
    keys: Vec<PrivateKey>,
}

/// Mints OpenSSH user certificates (kind `"ssh"`), serves the CA public keys and the KRL.
pub struct SshProvider {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    ca: RwLock<Arc<CaState>>,
    resources: HashMap<String, Resource>,
    /// Longest life of a certificate (the largest `max_lifetime_secs` of the resources, plus
    /// back-dating): how long a rotated-out CA key stays published.
    retain_secs: i64,
    /// The interval at which hosts must fetch the KRL ([`krl_refresh_secs`]).
    krl_refresh_secs: i64,
}

/// The longest interval at which hosts should fetch the KRL, seconds (one minute), when no
/// resource's `max_ttl` is shorter (see [`krl_refresh_secs`]).
pub const MAX_KRL_REFRESH_SECS: i64 = 60;

/// The interval at which hosts must fetch the KRL for `resources` (seconds): the shortest
/// `max_ttl_secs` among the `ssh` ones, capped at [`MAX_KRL_REFRESH_SECS`] and at least 1.
/// A KRL carries no expiry of its own; a host that fetches it this often refuses a revoked
/// certificate at most this long after the revocation (never longer than any certificate of
/// these resources can live).
pub fn krl_refresh_secs<'a>(resources: impl IntoIterator<Item = &'a Resource>) -> i64 {
    resources
        .into_iter()
        .filter(|r| r.kind == KIND)
        .map(|r| r.max_ttl_secs)
        .min()
        .unwrap_or(MAX_KRL_REFRESH_SECS)
        .clamp(1, MAX_KRL_REFRESH_SECS)
}

impl std::fmt::Debug for SshProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshProvider")
            .field("resources", &self.resources.keys())
            .field("ca_private_keys", &"[redacted]")
            .finish_non_exhaustive()
    }
}

fn generate_ca() -> Result<GeneratedCa, KeyError> {
    let key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519)
        .map_err(|_| KeyError::Crypto("ssh ca key generation failed"))?;
    let secret = key
        .to_bytes()
        .map_err(|_| KeyError::Crypto("encoding the ssh ca key failed"))?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|_| KeyError::Crypto("encoding the ssh ca public key failed"))?;
    Ok((Zeroizing::new(secret.to_vec()), public.into_bytes()))
}

fn parse_ring(ring: CaKeyring) -> Result<CaState, KeyError> {
    let keys = ring
        .generations()
        .iter()
        .map(|g| {
            PrivateKey::from_bytes(&g.secret).map_err(|_| KeyError::InvalidSigningKey {
                name: format!("{CA_BLOB_PREFIX}-{:04}", g.generation),
                alg: "ssh-ed25519",
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CaState { ring, keys })
}

impl SshProvider {
    /// Loads the SSH CA from `store` (generating and sealing it on first start) and serves the
    /// `ssh` resources among `resources`.
    ///
    /// # Errors
    /// [`KeyError`] when the store fails or the sealed CA does not open with `master`.
    pub async fn load_or_create(
        store: Arc<dyn Store>,
        master: &MasterKey,
        clock: Arc<dyn Clock>,
        resources: &[Resource],
    ) -> Result<Self, KeyError> {
        let ring = CaKeyring::load_or_create(
            store.as_ref(),
            master,
            CA_BLOB_PREFIX,
            clock.now_unix_secs(),
            generate_ca,
        )
        .await?;
        let resources: HashMap<String, Resource> = resources
            .iter()
            .filter(|r| r.kind == KIND)
            .map(|r| (r.id.clone(), r.clone()))
            .collect();
        let retain_secs = resources
            .values()
            .map(|r| r.max_lifetime_secs)
            .max()
            .unwrap_or(0)
            + MAX_BACKDATE_SECS as i64;
        let krl_refresh_secs = krl_refresh_secs(resources.values());
        Ok(Self {
            store,
            clock,
            ca: RwLock::new(Arc::new(parse_ring(ring)?)),
            resources,
            retain_secs,
            krl_refresh_secs,
        })
    }

    /// How often hosts must fetch the KRL (seconds): the shortest `max_ttl` among this CA's
    /// resources, at most [`MAX_KRL_REFRESH_SECS`]. Also the longest a host that fetches it
    /// this often goes on accepting a revoked certificate.
    pub fn krl_refresh_secs(&self) -> i64 {
        self.krl_refresh_secs
    }

    fn state(&self) -> Arc<CaState> {
        self.ca.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Generates a new CA key and signs with it from now on; the previous keys stay in
    /// [`ca_public_keys`](Self::ca_public_keys) until certificates they signed have expired.
    ///
    /// # Errors
    /// [`KeyError`] on store or key failures (the current CA stays in use).
    pub async fn rotate(&self, master: &MasterKey) -> Result<(), KeyError> {
        let now = self.clock.now_unix_secs();
        let mut ring = CaKeyring::load_or_create(
            self.store.as_ref(),
            master,
            CA_BLOB_PREFIX,
            now,
            generate_ca,
        )
        .await?;
        ring.rotate(self.store.as_ref(), master, now, generate_ca)
            .await?;
        let state = parse_ring(ring)?;
        *self.ca.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(state);
        Ok(())
    }

    /// Re-reads the CA generations from the store (picks up a rotation made by another
    /// replica), then rotates if the current key is at least `max_age_secs` old. Returns
    /// whether this call rotated.
    ///
    /// # Errors
    /// [`KeyError`] on store or key failures (the current CA stays in use).
    pub async fn rotate_if_due(
        &self,
        master: &MasterKey,
        max_age_secs: i64,
    ) -> Result<bool, KeyError> {
        let now = self.clock.now_unix_secs();
        let ring = CaKeyring::load_or_create(
            self.store.as_ref(),
            master,
            CA_BLOB_PREFIX,
            now,
            generate_ca,
        )
        .await?;
        let due = now.saturating_sub(ring.current().created_at_unix_secs) >= max_age_secs;
        let state = parse_ring(ring)?;
        *self.ca.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(state);
        if due {
            self.rotate(master).await?;
        }
        Ok(due)
    }

    /// The generation number of the current CA key (0 on first start, +1 per rotation).
    pub fn current_generation(&self) -> u32 {
        self.state().ring.current().generation
    }

    /// The CA public keys sshd should trust (`TrustedUserCAKeys`), one OpenSSH public key per
    /// line, current first, including rotated-out keys whose certificates may still be valid.
    pub fn ca_public_keys(&self) -> String {
        let st = self.state();
        let now = self.clock.now_unix_secs();
        let mut out = String::new();
        for g in st.ring.published(now, self.retain_secs) {
            out.push_str(String::from_utf8_lossy(&g.public).trim());
            out.push('\n');
        }
        out
    }

    /// The current KRL (binary, PROTOCOL.krl) revoking every certificate of every lease whose
    /// revocation was requested and that has not yet expired, under every published CA key.
    ///
    /// # Errors
    /// A retryable [`ProviderError`] when the store cannot be read.
    pub async fn krl(&self) -> Result<Vec<u8>, ProviderError> {
        let now = self.clock.now_unix_secs();
        let mut key_ids = BTreeSet::new();
        let mut after = String::new();
        loop {
            let page = self
                .store
                .revoked_unexpired_leases(now, &after, 500)
                .await
                .map_err(|e| ProviderError::retryable(e.to_string()))?;
            let Some(last) = page.last() else { break };
            after = last.id.clone();
            for l in page.iter().filter(|l| l.provider == KIND) {
                key_ids.insert(key_id(&l.task_id, &l.id, &l.resource_id));
            }
        }
        let st = self.state();
        let mut ca_blobs = Vec::new();
        for g in st.ring.published(now, self.retain_secs) {
            ca_blobs.push(public_key_blob(&g.public)?);
        }
        Ok(encode_krl(now, &ca_blobs, &key_ids))
    }
}

/// The wire encoding of an OpenSSH public key (`<alg> <base64 blob> [comment]`).
fn public_key_blob(openssh: &[u8]) -> Result<Vec<u8>, ProviderError> {
    let text = String::from_utf8_lossy(openssh);
    text.split_whitespace()
        .nth(1)
        .and_then(|b| STANDARD.decode(b).ok())
        .ok_or_else(|| ProviderError::permanent("stored ssh ca public key is malformed"))
}

fn put_string(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
}

/// Encodes a KRL (PROTOCOL.krl) revoking `key_ids` under each CA in `ca_blobs`.
pub fn encode_krl(now_unix_secs: i64, ca_blobs: &[Vec<u8>], key_ids: &BTreeSet<String>) -> Vec<u8> {
    let now = now_unix_secs.max(0) as u64;
    let mut out = Vec::new();
    out.extend_from_slice(&KRL_MAGIC.to_be_bytes());
    out.extend_from_slice(&KRL_FORMAT_VERSION.to_be_bytes());
    // krl_version: the generation time is monotonic enough for consumers comparing versions.
    out.extend_from_slice(&now.to_be_bytes());
    out.extend_from_slice(&now.to_be_bytes()); // generated_date
    out.extend_from_slice(&0u64.to_be_bytes()); // flags
    put_string(&mut out, b""); // reserved
    put_string(&mut out, b"latch"); // comment
    if key_ids.is_empty() {
        return out;
    }
    let mut ids = Vec::new();
    for id in key_ids {
        put_string(&mut ids, id.as_bytes());
    }
    for ca in ca_blobs {
        let mut section = Vec::new();
        put_string(&mut section, ca); // ca_key
        put_string(&mut section, b""); // reserved
        section.push(KRL_SECTION_CERT_KEY_ID);
        put_string(&mut section, &ids);
        out.push(KRL_SECTION_CERTIFICATES);
        put_string(&mut out, &section);
    }
    out
}

/// OpenSSH public keys of the user CA and its KRL (binary, PROTOCOL.krl).
#[async_trait]
impl latch_core::ports::CaPublisher for SshProvider {
    fn ca_public(&self) -> String {
        self.ca_public_keys()
    }

    async fn revocation_list(&self) -> Result<Vec<u8>, ProviderError> {
        self.krl().await
    }
}

#[async_trait]
impl CredentialProvider for SshProvider {
    fn kind(&self) -> &str {
        KIND
    }

    /// `true`: a certificate lives outside the broker until it expires. The lease is recorded
    /// (`issuing`) before signing, so even a certificate whose delivery was interrupted has a
    /// lease whose revocation lists its key id in the KRL.
    fn has_external_state(&self) -> bool {
        true
    }

    /// Requires a non-empty list of valid principals, back-dating ≤ 600 s, known extensions and
    /// well-formed critical options.
    fn check_resource(&self, resource: &Resource) -> Result<(), ProviderError> {
        SshSettings::load(resource).map(|_| ())
    }

    /// Signs the agent's public key (see the [module docs](self)).
    ///
    /// # Errors
    /// Permanent: missing or malformed `public_key`, principals outside the allowed set, an
    /// empty principal list, an empty validity window.
    async fn mint(&self, req: &MintRequest<'_>) -> Result<Minted, ProviderError> {
        util::check_window(req.issued_at_unix_secs, req.expires_at_unix_secs)?;
        let s = SshSettings::load(req.resource)?;
        let params: SshParams = serde_json::from_value(req.params.clone()).map_err(|e| {
            ProviderError::invalid_request(format!(
                "ssh requests need params {{\"public_key\": \"ssh-ed25519 AAAA…\", \"principals\": […]}}: {}",
                latch_core::error::without_input_values(&e.to_string())
            ))
        })?;
        let public = PublicKey::from_openssh(params.public_key.trim()).map_err(|_| {
            ProviderError::invalid_request("`public_key` is not an openssh public key")
        })?;
        check_key_strength(&public)?;
        let principals = match params.principals {
            None => s.principals.clone(),
            Some(p) => {
                if let Some(bad) = p.iter().find(|x| !s.principals.contains(x)) {
                    return Err(ProviderError::invalid_request(format!(
                        "principal {bad:?} is not allowed for resource {}",
                        req.resource.id
                    )));
                }
                p
            }
        };
        if principals.is_empty() {
            return Err(ProviderError::invalid_request(
                "refusing a certificate with an empty principal list (it would be valid for every user)",
            ));
        }
        let valid_after = (req.issued_at_unix_secs - s.backdate_secs as i64).max(0) as u64;
        let valid_before = req.expires_at_unix_secs.max(0) as u64;
        let kid = key_id(&req.task.id, req.lease_id, &req.resource.id);
        let mut serial = [0u8; 8];
        aws_lc_rs::rand::fill(&mut serial)
            .map_err(|_| ProviderError::retryable("random number generation failed"))?;
        let serial = u64::from_be_bytes(serial);
        let st = self.state();
        let ca = st
            .keys
            .last()
            .ok_or_else(|| ProviderError::permanent("no ssh ca key"))?;
        let cert_err = |_| ProviderError::permanent("building the ssh certificate failed");
        let mut b = Builder::new_with_random_nonce(
            &mut OsRng,
            public.key_data().clone(),
            valid_after,
            valid_before,
        )
        .map_err(cert_err)?;
        b.serial(serial)
            .map_err(cert_err)?
            .key_id(kid.clone())
            .map_err(cert_err)?
            .cert_type(CertType::User)
            .map_err(cert_err)?
            .comment(kid.clone())
            .map_err(cert_err)?;
        for p in &principals {
            b.valid_principal(p.clone()).map_err(cert_err)?;
        }
        if let Some(c) = &s.force_command {
            b.critical_option("force-command", c.clone())
                .map_err(cert_err)?;
        }
        if let Some(a) = &s.source_address {
            b.critical_option("source-address", a.clone())
                .map_err(cert_err)?;
        }
        for e in &s.extensions {
            b.extension(e.clone(), "").map_err(cert_err)?;
        }
        let cert = b
            .sign(ca)
            .map_err(|_| ProviderError::permanent("signing the ssh certificate failed"))?;
        let text = cert
            .to_openssh()
            .map_err(|_| ProviderError::permanent("encoding the ssh certificate failed"))?;
        tracing::info!(lease_id = req.lease_id, serial, key_id = %kid, "signed ssh user certificate");
        Ok(Minted {
            credential: DeliveredCredential {
                kind: "ssh_certificate".to_owned(),
                secret: SecretString::from(text),
                metadata: json!({
                    // A string: u64 serials exceed JSON's exact integer range (2^53).
                    "serial": serial.to_string(),
                    "key_id": kid,
                    "principals": principals,
                    "valid_after_unix_secs": valid_after,
                    "valid_before_unix_secs": valid_before,
                    "ca_generation": st.ring.current().generation,
                }),
            },
            revocation_handle: kid,
        })
    }

    /// Re-signs the request's public key (kept on the access request) with the new validity
    /// window. The key id, and so the KRL entry, stays the lease's: revoking the lease revokes
    /// every certificate it ever had.
    ///
    /// # Errors
    /// As [`mint`](Self::mint).
    async fn renew(&self, _lease: &Lease, req: &MintRequest<'_>) -> Result<Minted, ProviderError> {
        self.mint(req).await
    }

    /// Nothing to undo at a target: once the lease is `revoking`/`revoked`, its key id is in
    /// the KRL served by [`krl`](SshProvider::krl).
    async fn revoke(&self, lease: &Lease) -> Result<(), ProviderError> {
        tracing::info!(lease_id = %lease.id, "ssh certificate listed in the krl");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn krl_header_and_sections() {
        let empty = encode_krl(5, &[vec![1, 2]], &BTreeSet::new());
        assert_eq!(&empty[..8], b"SSHKRL\n\0");
        assert_eq!(&empty[8..12], &1u32.to_be_bytes());
        assert_eq!(empty.len(), 8 + 4 + 8 + 8 + 8 + 4 + 4 + 5);
        let ids: BTreeSet<String> = ["a".to_owned()].into();
        let krl = encode_krl(5, &[vec![9]], &ids);
        let tail = &krl[empty.len()..];
        // section type, section length, ca_key "9", reserved "", key-id subsection
        assert_eq!(tail[0], KRL_SECTION_CERTIFICATES);
        assert_eq!(
            &tail[5..],
            &[
                0, 0, 0, 1, 9, 0, 0, 0, 0, 0x23, 0, 0, 0, 5, 0, 0, 0, 1, b'a'
            ]
        );
    }

    #[test]
    fn principals_are_plain_user_names() {
        assert!(valid_principal("deploy"));
        assert!(!valid_principal(""));
        assert!(!valid_principal("a,b"));
        assert!(!valid_principal("a b"));
    }
}
