//! The `x509` credential provider: client certificates signed by the broker's X.509 CA, and the
//! CRL that revokes them.
//!
//! # Resource settings
//! ```toml
//! [[resources]]
//! id = "internal-api-mtls"
//! kind = "x509"
//! # …
//! [resources.settings]
//! trust_domain = "acme.example"      # URI SAN spiffe://acme.example/task/<task id>
//! backdate_secs = 60                  # notBefore = issue time - 60 s (clock skew), max 600
//! ```
//!
//! # Request parameters
//! Either `{"public_key_pem": "-----BEGIN PUBLIC KEY-----…"}` (a SubjectPublicKeyInfo) or
//! `{"csr_pem": "-----BEGIN CERTIFICATE REQUEST-----…"}` (PKCS#10, its signature is verified).
//! Only the key is taken from a CSR: subject, names and extensions are the broker's. Keys must be
//! RSA of at least 2048 bits, ECDSA P-256 / P-384 or Ed25519; anything else, and malformed or
//! missing params, is a [`ProviderError::invalid_request`].
//!
//! # Certificates (RFC 5280)
//! `basicConstraints` CA:FALSE, `keyUsage` digitalSignature, `extendedKeyUsage` clientAuth,
//! subject CN = task id, one URI SAN `spiffe://<trust domain>/task/<task id>`, authority key
//! identifier, validity = the lease (`notBefore` back-dated by `backdate_secs`), a serial derived from the lease id and renewal count
//! ([`serial_for`]), so a lease whose delivery was interrupted can still be listed in the CRL. The CA key is ECDSA
//! P-256, generated on first start and sealed at rest ([`CaKeyring`], `x509-client-ca-NNNN`);
//! its self-signed certificate is valid for 10 years.
//!
//! # Revocation
//! [`X509Provider::crl_pem`]: one CRL (RFC 5280 §5) per published CA generation listing the
//! serials of every lease whose revocation was requested and whose end has not passed. It is
//! signed afresh for every request (`thisUpdate` = now) and valid for
//! [`X509Provider::crl_validity_secs`]: the shortest `max_ttl` among the CA's resources, at
//! most [`MAX_CRL_VALIDITY_SECS`]. Relying parties refresh it from `GET /v1/x509/crl`.
//!
//! Why: a relying party that honours `nextUpdate` keeps using the CRL it fetched until then, so
//! a certificate revoked just after that fetch is still accepted for up to `nextUpdate −
//! thisUpdate` (or until its own `notAfter`, whichever comes first). A CRL that outlives the
//! certificates it is meant to cut short protects nothing; one no longer than the shortest
//! `max_ttl` bounds the exposure after a revocation by that window for every resource.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use latch_core::Clock;
use latch_core::model::{DeliveredCredential, Lease, Resource};
use latch_core::ports::{CredentialProvider, MintRequest, Minted, ProviderError, Store};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams,
    CertificateSigningRequestParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, RevokedCertParams,
    SanType, SerialNumber, SubjectPublicKeyInfo,
};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::keyring::{CaKeyring, GeneratedCa, KeyError, MasterKey};
use crate::util;

/// Provider kind as named in resource configuration.
pub const KIND: &str = latch_core::model::ProviderKind::X509.as_str();

/// Key blob prefix of the X.509 client CA generations.
pub const CA_BLOB_PREFIX: &str = "x509-client-ca";

/// The longest a served CRL is valid (`nextUpdate − thisUpdate`), seconds: one hour, when no
/// resource's `max_ttl` is shorter (see [`X509Provider::crl_validity_secs`]).
pub const MAX_CRL_VALIDITY_SECS: i64 = 3600;

/// How long a CRL served for `resources` is valid (`nextUpdate − thisUpdate`, seconds): the
/// shortest `max_ttl_secs` among the `x509` ones, capped at [`MAX_CRL_VALIDITY_SECS`] and at
/// least 1. With it, no certificate of any of these resources can live longer than one CRL
/// validity window, so a relying party that refreshes at `nextUpdate` learns of every
/// revocation while the certificate could still be valid for the longest-lived resource.
pub fn crl_validity_secs<'a>(resources: impl IntoIterator<Item = &'a Resource>) -> i64 {
    resources
        .into_iter()
        .filter(|r| r.kind == KIND)
        .map(|r| r.max_ttl_secs)
        .min()
        .unwrap_or(MAX_CRL_VALIDITY_SECS)
        .clamp(1, MAX_CRL_VALIDITY_SECS)
}

/// Validity of a CA certificate, seconds (10 years).
const CA_VALIDITY_SECS: i64 = 10 * 365 * 24 * 3600;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct X509Settings {
    #[serde(default = "default_td")]
    trust_domain: String,
    /// `notBefore` = issue time − this many seconds (clock skew; default 60, at most 600).
    #[serde(default = "util::default_backdate_secs")]
    backdate_secs: u64,
}

fn default_td() -> String {
    "latch".to_owned()
}

impl X509Settings {
    fn load(resource: &Resource) -> Result<Self, ProviderError> {
        let s: X509Settings = util::settings(resource)?;
        let ok = !s.trust_domain.is_empty()
            && s.trust_domain.len() <= 255
            && s.trust_domain
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-'));
        if !ok {
            return Err(ProviderError::permanent(format!(
                "resource {}: `trust_domain` must be lowercase letters, digits, dots and dashes",
                resource.id
            )));
        }
        if s.backdate_secs > util::MAX_BACKDATE_SECS {
            return Err(ProviderError::permanent(format!(
                "resource {}: `backdate_secs` must be at most {}",
                resource.id,
                util::MAX_BACKDATE_SECS
            )));
        }
        Ok(s)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct X509Params {
    #[serde(default)]
    public_key_pem: Option<String>,
    #[serde(default)]
    csr_pem: Option<String>,
}

/// The serial number of certificate `index` of `lease_id` (0 when issued, `n` after the n-th
/// renewal): the first 16 bytes of SHA-256(`"latch x509 serial v1\0" || lease_id || "\0" ||
/// index (decimal)`), made positive and non-zero-led (RFC 5280 §4.1.2.2: positive, ≤ 20 octets).
pub fn serial_for(lease_id: &str, index: u32) -> Vec<u8> {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(b"latch x509 serial v1\0");
    ctx.update(lease_id.as_bytes());
    ctx.update(b"\0");
    ctx.update(index.to_string().as_bytes());
    let d = ctx.finish();
    let mut s = d.as_ref()[..16].to_vec();
    s[0] = (s[0] & 0x7f) | 0x40;
    s
}

fn time_at(unix: i64) -> Result<OffsetDateTime, ProviderError> {
    OffsetDateTime::from_unix_timestamp(unix)
        .map_err(|_| ProviderError::permanent("timestamp out of range"))
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn generate_ca(now: i64, generation_hint: u32) -> Result<GeneratedCa, KeyError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|_| KeyError::Crypto("x509 ca key generation failed"))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Latch");
    dn.push(
        DnType::CommonName,
        format!("Latch client CA {generation_hint} ({now})"),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = OffsetDateTime::from_unix_timestamp(now - 3600)
        .map_err(|_| KeyError::Crypto("time out of range"))?;
    params.not_after = OffsetDateTime::from_unix_timestamp(now + CA_VALIDITY_SECS)
        .map_err(|_| KeyError::Crypto("time out of range"))?;
    let mut serial = [0u8; 16];
    aws_lc_rs::rand::fill(&mut serial).map_err(|_| KeyError::Crypto("rng failed"))?;
    serial[0] = (serial[0] & 0x7f) | 0x40;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.key_identifier_method = KeyIdMethod::Sha256;
    let cert = params
        .self_signed(&key)
        .map_err(|_| KeyError::Crypto("self-signing the x509 ca failed"))?;
    Ok((Zeroizing::new(key.serialize_der()), cert.der().to_vec()))
}

struct CaState {
    ring: CaKeyring,
    keys: Vec<KeyPair>,
}

fn parse_ring(ring: CaKeyring) -> Result<CaState, KeyError> {
    let keys = ring
        .generations()
        .iter()
        .map(|g| {
            KeyPair::try_from(&g.secret[..]).map_err(|_| KeyError::InvalidSigningKey {
                name: format!("{CA_BLOB_PREFIX}-{:04}", g.generation),
                alg: "ES256",
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CaState { ring, keys })
}

/// Mints X.509 client certificates (kind `"x509"`), serves the CA certificates and CRLs.
pub struct X509Provider {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    ca: RwLock<Arc<CaState>>,
    resources: HashMap<String, Resource>,
    retain_secs: i64,
    /// `nextUpdate − thisUpdate` of the served CRLs ([`crl_validity_secs`]).
    crl_validity_secs: i64,
}

impl std::fmt::Debug for X509Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X509Provider")
            .field("resources", &self.resources.keys())
            .field("ca_private_keys", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl X509Provider {
    /// Loads the X.509 CA from `store` (generating and sealing it on first start) and serves
    /// the `x509` resources among `resources`.
    ///
    /// # Errors
    /// [`KeyError`] when the store fails or the sealed CA does not open with `master`.
    pub async fn load_or_create(
        store: Arc<dyn Store>,
        master: &MasterKey,
        clock: Arc<dyn Clock>,
        resources: &[Resource],
    ) -> Result<Self, KeyError> {
        let now = clock.now_unix_secs();
        let ring = CaKeyring::load_or_create(store.as_ref(), master, CA_BLOB_PREFIX, now, || {
            generate_ca(now, 0)
        })
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
            .unwrap_or(0);
        let crl_validity_secs = crl_validity_secs(resources.values());
        Ok(Self {
            store,
            clock,
            ca: RwLock::new(Arc::new(parse_ring(ring)?)),
            resources,
            retain_secs,
            crl_validity_secs,
        })
    }

    /// How long each served CRL is valid (`nextUpdate − thisUpdate`, seconds): the shortest
    /// `max_ttl` among this CA's resources, at most [`MAX_CRL_VALIDITY_SECS`]. It is also the
    /// longest a relying party that caches the CRL for its whole validity can go on accepting
    /// a revoked certificate.
    pub fn crl_validity_secs(&self) -> i64 {
        self.crl_validity_secs
    }

    fn state(&self) -> Arc<CaState> {
        self.ca.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Generates a new CA key and certificate and issues with them from now on; previous CA
    /// certificates stay published (and get CRLs) until what they signed has expired.
    ///
    /// # Errors
    /// [`KeyError`] on store or key failures (the current CA stays in use).
    pub async fn rotate(&self, master: &MasterKey) -> Result<(), KeyError> {
        let now = self.clock.now_unix_secs();
        let mut ring =
            CaKeyring::load_or_create(self.store.as_ref(), master, CA_BLOB_PREFIX, now, || {
                generate_ca(now, 0)
            })
            .await?;
        let next = ring.current().generation + 1;
        ring.rotate(self.store.as_ref(), master, now, || generate_ca(now, next))
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
        let ring =
            CaKeyring::load_or_create(self.store.as_ref(), master, CA_BLOB_PREFIX, now, || {
                generate_ca(now, 0)
            })
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

    /// The published CA certificates (PEM, current first) for relying parties' trust stores.
    pub fn ca_pem(&self) -> String {
        let st = self.state();
        st.ring
            .published(self.clock.now_unix_secs(), self.retain_secs)
            .iter()
            .map(|g| pem("CERTIFICATE", &g.public))
            .collect()
    }

    /// One CRL per published CA (PEM, concatenated), listing every revoked, unexpired lease's
    /// certificate serial, signed now and valid for [`crl_validity_secs`](Self::crl_validity_secs).
    ///
    /// # Errors
    /// Retryable when the store cannot be read; permanent if signing fails.
    pub async fn crl_pem(&self) -> Result<String, ProviderError> {
        let now = self.clock.now_unix_secs();
        let mut revoked = Vec::new();
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
                let at = l.revoked_at_unix_secs.unwrap_or(now).min(now);
                // Every certificate the lease had: the first and one per renewal (plus one, in
                // case a renewal was signed but not recorded).
                for index in 0..=l.renewals.saturating_add(1) {
                    revoked.push(RevokedCertParams {
                        serial_number: SerialNumber::from_slice(&serial_for(&l.id, index)),
                        revocation_time: time_at(at)?,
                        reason_code: None,
                        invalidity_date: None,
                    });
                }
            }
        }
        let st = self.state();
        let mut out = String::new();
        let crl_err = |_| ProviderError::permanent("signing the crl failed");
        for (g, key) in st.ring.generations().iter().zip(&st.keys).rev() {
            let published = st.ring.published(now, self.retain_secs);
            if !published.iter().any(|p| p.generation == g.generation) {
                continue;
            }
            let issuer =
                Issuer::from_ca_cert_der(&g.public.clone().into(), key).map_err(crl_err)?;
            let params = CertificateRevocationListParams {
                this_update: time_at(now)?,
                next_update: time_at(now + self.crl_validity_secs)?,
                crl_number: SerialNumber::from(now.max(1) as u64),
                issuing_distribution_point: None,
                revoked_certs: revoked.clone(),
                key_identifier_method: KeyIdMethod::Sha256,
            };
            let crl = params.signed_by(&issuer).map_err(crl_err)?;
            out.push_str(&crl.pem().map_err(crl_err)?);
        }
        Ok(out)
    }
}

/// PEM certificates of the client CA and its CRLs (PEM).
#[async_trait]
impl latch_core::ports::CaPublisher for X509Provider {
    fn ca_public(&self) -> String {
        self.ca_pem()
    }

    async fn revocation_list(&self) -> Result<Vec<u8>, ProviderError> {
        self.crl_pem().await.map(String::into_bytes)
    }
}

#[async_trait]
impl CredentialProvider for X509Provider {
    fn kind(&self) -> &str {
        KIND
    }

    /// `true`: the certificate lives outside the broker until it expires; recording the lease
    /// first means an interrupted delivery still ends up in the CRL.
    fn has_external_state(&self) -> bool {
        true
    }

    /// Requires a valid `trust_domain`.
    fn check_resource(&self, resource: &Resource) -> Result<(), ProviderError> {
        X509Settings::load(resource).map(|_| ())
    }

    /// Issues a client certificate for the agent's key (see the [module docs](self)).
    ///
    /// # Errors
    /// Permanent: neither or both of `public_key_pem` / `csr_pem`, an unparsable key, a CSR
    /// whose signature does not verify, an empty validity window.
    async fn mint(&self, req: &MintRequest<'_>) -> Result<Minted, ProviderError> {
        self.issue(req, 0)
    }

    /// Issues a new certificate for the same key (kept on the access request) with the new
    /// validity and the next serial of the lease, which the CRL lists too once the lease is
    /// revoked.
    ///
    /// # Errors
    /// As [`mint`](Self::mint).
    async fn renew(&self, lease: &Lease, req: &MintRequest<'_>) -> Result<Minted, ProviderError> {
        self.issue(req, lease.renewals.saturating_add(1))
    }

    /// Nothing to undo at a target: the lease's serials are in the CRL from now on.
    async fn revoke(&self, lease: &Lease) -> Result<(), ProviderError> {
        tracing::info!(lease_id = %lease.id, "x509 certificate listed in the crl");
        Ok(())
    }
}

/// Smallest RSA modulus accepted for leaf keys, bits (NIST SP 800-131A), as for SSH.
const MIN_RSA_BITS: usize = 2048;

/// Accepts only RSA ≥ 2048 bits, ECDSA P-256 / P-384 and Ed25519 leaf keys.
fn check_key_strength(key: &impl rcgen::PublicKeyData) -> Result<(), ProviderError> {
    let alg = key.algorithm();
    if alg == &rcgen::PKCS_ECDSA_P256_SHA256
        || alg == &rcgen::PKCS_ECDSA_P384_SHA384
        || alg == &rcgen::PKCS_ED25519
    {
        return Ok(());
    }
    if alg == &rcgen::PKCS_RSA_SHA256
        || alg == &rcgen::PKCS_RSA_SHA384
        || alg == &rcgen::PKCS_RSA_SHA512
    {
        let bits = rsa_modulus_bits(key.der_bytes())
            .ok_or_else(|| ProviderError::invalid_request("the rsa public key is malformed"))?;
        if bits < MIN_RSA_BITS {
            return Err(ProviderError::invalid_request(format!(
                "rsa keys need at least {MIN_RSA_BITS} bits (got {bits})"
            )));
        }
        return Ok(());
    }
    Err(ProviderError::invalid_request(
        "only rsa (at least 2048 bits), ecdsa p-256 / p-384 and ed25519 keys are accepted",
    ))
}

/// The bit length of the modulus of a DER `RSAPublicKey` (`SEQUENCE { INTEGER n, INTEGER e }`).
fn rsa_modulus_bits(der: &[u8]) -> Option<usize> {
    /// One DER TLV: (tag, contents, rest).
    fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, b) = b.split_first()?;
        let (&first, mut b) = b.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || b.len() < n {
                return None;
            }
            let (l, rest) = b.split_at(n);
            b = rest;
            l.iter().fold(0usize, |acc, &x| (acc << 8) | usize::from(x))
        };
        if b.len() < len {
            return None;
        }
        let (v, rest) = b.split_at(len);
        Some((tag, v, rest))
    }
    let (0x30, seq, _) = tlv(der)? else {
        return None;
    };
    let (0x02, n, _) = tlv(seq)? else {
        return None;
    };
    let n: &[u8] = &n[n.iter().position(|&x| x != 0)?..];
    Some(n.len() * 8 - n[0].leading_zeros() as usize)
}

impl X509Provider {
    fn issue(&self, req: &MintRequest<'_>, index: u32) -> Result<Minted, ProviderError> {
        util::check_window(req.issued_at_unix_secs, req.expires_at_unix_secs)?;
        let s = X509Settings::load(req.resource)?;
        let params: X509Params = serde_json::from_value(req.params.clone()).map_err(|e| {
            ProviderError::invalid_request(format!(
                "x509 requests need params {{\"public_key_pem\": …}} or {{\"csr_pem\": …}}: {}",
                latch_core::error::without_input_values(&e.to_string())
            ))
        })?;
        let mut leaf = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, req.task.id.clone());
        leaf.distinguished_name = dn;
        leaf.is_ca = IsCa::ExplicitNoCa;
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let uri = format!("spiffe://{}/task/{}", s.trust_domain, req.task.id);
        leaf.subject_alt_names =
            vec![SanType::URI(uri.clone().try_into().map_err(|_| {
                ProviderError::permanent("the spiffe id is not a valid uri")
            })?)];
        let not_before = (req.issued_at_unix_secs - s.backdate_secs as i64).max(0);
        leaf.not_before = time_at(not_before)?;
        leaf.not_after = time_at(req.expires_at_unix_secs)?;
        let serial = serial_for(req.lease_id, index);
        leaf.serial_number = Some(SerialNumber::from_slice(&serial));
        leaf.use_authority_key_identifier_extension = true;
        leaf.key_identifier_method = KeyIdMethod::Sha256;
        let st = self.state();
        let (g, key) = st
            .ring
            .generations()
            .iter()
            .zip(&st.keys)
            .next_back()
            .ok_or_else(|| ProviderError::permanent("no x509 ca key"))?;
        let issuer = Issuer::from_ca_cert_der(&g.public.clone().into(), key)
            .map_err(|_| ProviderError::permanent("the stored x509 ca certificate is invalid"))?;
        let sign_err = |_| ProviderError::permanent("signing the certificate failed");
        let cert = match (params.public_key_pem, params.csr_pem) {
            (Some(pk), None) => {
                let spki = SubjectPublicKeyInfo::from_pem(&pk).map_err(|_| {
                    ProviderError::invalid_request("`public_key_pem` is not a supported public key")
                })?;
                check_key_strength(&spki)?;
                leaf.signed_by(&spki, &issuer).map_err(sign_err)?
            }
            (None, Some(csr)) => {
                let csr = CertificateSigningRequestParams::from_pem(&csr).map_err(|_| {
                    ProviderError::invalid_request(
                        "`csr_pem` is not a valid certificate request (or its signature is wrong)",
                    )
                })?;
                check_key_strength(&csr.public_key)?;
                leaf.signed_by(&csr.public_key, &issuer).map_err(sign_err)?
            }
            _ => {
                return Err(ProviderError::invalid_request(
                    "give exactly one of `public_key_pem` and `csr_pem`",
                ));
            }
        };
        let serial_hex: String = serial.iter().map(|b| format!("{b:02x}")).collect();
        tracing::info!(lease_id = req.lease_id, serial = %serial_hex, "issued x509 client certificate");
        Ok(Minted {
            credential: DeliveredCredential {
                kind: "x509_certificate".to_owned(),
                secret: SecretString::from(cert.pem()),
                metadata: json!({
                    "serial": serial_hex,
                    "uri_san": uri,
                    "not_before_unix_secs": not_before,
                    "not_after_unix_secs": req.expires_at_unix_secs,
                    "ca_generation": g.generation,
                }),
            },
            revocation_handle: serial_hex,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_positive_stable_and_distinct() {
        let a = serial_for("lease_a", 0);
        assert_eq!(a, serial_for("lease_a", 0));
        assert_ne!(a, serial_for("lease_b", 0));
        assert_ne!(a, serial_for("lease_a", 1));
        assert_eq!(a.len(), 16);
        assert!(a[0] & 0x80 == 0 && a[0] != 0);
    }

    #[test]
    fn weak_and_unsupported_leaf_keys_are_invalid_requests() {
        for (bits, ok) in [(512, false), (1024, false), (2048, true)] {
            let out = std::process::Command::new("openssl")
                .args(["genpkey", "-algorithm", "RSA", "-pkeyopt"])
                .arg(format!("rsa_keygen_bits:{bits}"))
                .output();
            let Ok(out) = out else { return };
            let out = std::process::Command::new("openssl")
                .args(["pkey", "-pubout"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .and_then(|mut c| {
                    use std::io::Write;
                    c.stdin.take().unwrap().write_all(&out.stdout)?;
                    c.wait_with_output()
                })
                .unwrap();
            let spki =
                SubjectPublicKeyInfo::from_pem(&String::from_utf8(out.stdout).unwrap()).unwrap();
            let r = check_key_strength(&spki);
            assert_eq!(r.is_ok(), ok, "{bits} bits: {r:?}");
            if let Err(e) = r {
                assert!(e.invalid_request && !e.retryable, "{e:?}");
                assert!(e.message.contains(&format!("got {bits}")), "{}", e.message);
            }
        }
        let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let spki = SubjectPublicKeyInfo::from_pem(&p256.public_key_pem()).unwrap();
        assert!(check_key_strength(&spki).is_ok());
        let p521 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P521_SHA512);
        if let Ok(k) = p521 {
            let spki = SubjectPublicKeyInfo::from_pem(&k.public_key_pem()).unwrap();
            assert!(check_key_strength(&spki).unwrap_err().invalid_request);
        }
    }

    #[test]
    fn rsa_modulus_bits_reads_der() {
        // SEQUENCE { INTEGER 0x00 0xC1 (9 bits of leading zero stripped → 8), INTEGER 3 }
        assert_eq!(
            rsa_modulus_bits(&[0x30, 0x07, 0x02, 0x02, 0x00, 0xc1, 0x02, 0x01, 0x03]),
            Some(8)
        );
        assert_eq!(
            rsa_modulus_bits(&[0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x03]),
            Some(1)
        );
        assert_eq!(rsa_modulus_bits(&[0x30, 0x05, 0x02, 0x09]), None);
        assert_eq!(rsa_modulus_bits(&[]), None);
    }

    #[test]
    fn pem_wraps_at_64() {
        let p = pem("X", &[0u8; 100]);
        assert!(p.starts_with("-----BEGIN X-----\n"));
        assert!(p.lines().all(|l| l.len() <= 64));
    }
}
