//! TLS on the broker's own listener (`[server.tls]`, rustls on aws-lc-rs) and mutual TLS with
//! SPIFFE X.509-SVIDs as client certificates (SPIFFE X.509-SVID specification).
//!
//! [`SvidClientVerifier`] is a `rustls` client-certificate verifier that
//! 1. checks the leaf's shape with [`latch_identity::x509_svid::check_leaf`] (one URI SAN with a
//!    SPIFFE ID, not a CA, key usage) before any chain work;
//! 2. picks the authorities of the leaf's trust domain only (a certificate chaining to another
//!    trust domain's CA cannot claim this one's IDs);
//! 3. asks `rustls`'s WebPKI verifier, built from those authorities, to verify the chain
//!    (signatures, validity, `clientAuth` when the leaf has extended key usage).
//!
//! The authorities come from the `x509-svid` entries of each `kind = "spiffe"` issuer's trust
//! bundle and are read again at its refresh interval (`bundle_refresh`, else the bundle's
//! `spiffe_refresh_hint`, else 5 minutes; [`refresh_authorities`]). A bundle that reads but
//! holds no authority removes the trust domain's (fail closed: a retired CA is not trusted on);
//! one that cannot be read keeps the last ones (none at first) and is tried again in a minute.
//!
//! The listener inserts the verified leaf as a [`PeerSvid`] in every request of the connection;
//! [`latch_core::Broker::authenticate`] takes it as the caller's identity when no bearer token
//! is presented.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use latch_core::broker::PeerSvid;
use latch_identity::x509_svid::{X509TrustSource, check_leaf, load_x509_authorities};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use serde::Deserialize;

/// `[server.tls]`: serve HTTPS, optionally asking clients for X.509-SVIDs.
///
/// ```toml
/// [server.tls]
/// cert_file = "/etc/latch/tls/server.pem"      # PEM chain, leaf first
/// key_file = "/etc/latch/tls/server-key.pem"   # PEM private key (PKCS#8, SEC1 or PKCS#1)
/// client_certificates = "optional"             # none | optional | required
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificate chain (PEM, leaf first).
    pub cert_file: PathBuf,
    /// The server's private key (PEM).
    pub key_file: PathBuf,
    /// Whether clients are asked for an X.509-SVID of a `kind = "spiffe"` issuer's trust
    /// domain: `none`, `optional` (default: a client without one authenticates with a bearer
    /// token) or `required` (the handshake fails without one).
    #[serde(default)]
    pub client_certificates: ClientCertificates,
}

/// Client certificates on the listener.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientCertificates {
    /// Not asked for.
    None,
    /// Asked for; a client may go on without one.
    #[default]
    Optional,
    /// Required: the handshake fails without a valid X.509-SVID.
    Required,
}

/// Why TLS could not be set up. Messages name the file, never key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read or parsed.
    #[error("[server.tls] {what} `{path}`: {reason}")]
    File {
        /// `cert_file` or `key_file`.
        what: &'static str,
        /// The configured path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// `client_certificates` is on but no `kind = "spiffe"` issuer is configured.
    #[error(
        "[server.tls] client_certificates = \"{0}\" (the default is \"optional\") needs at least one [[issuers]] entry with kind = \"spiffe\" (its trust bundle holds the x509 authorities); for HTTPS without client certificates set client_certificates = \"none\""
    )]
    NoTrustDomain(&'static str),
    /// rustls refused the configuration.
    #[error("[server.tls] {0}")]
    Rustls(String),
}

/// The authorities of each trust domain, shared by the verifier and the refresh job.
#[derive(Default)]
pub struct Authorities {
    by_td: RwLock<HashMap<String, Arc<dyn ClientCertVerifier>>>,
}

impl std::fmt::Debug for Authorities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tds: Vec<String> = self
            .by_td
            .read()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("Authorities")
            .field("trust_domains", &tds)
            .finish()
    }
}

impl Authorities {
    /// Replaces the authorities of `trust_domain` with `ders` (DER certificates).
    ///
    /// # Errors
    /// A certificate rustls cannot use as a trust anchor, or none at all.
    pub fn set(&self, trust_domain: &str, ders: Vec<Vec<u8>>) -> Result<usize, String> {
        let mut roots = rustls::RootCertStore::empty();
        for der in ders {
            roots
                .add(CertificateDer::from(der))
                .map_err(|e| format!("x509 authority refused: {e}"))?;
        }
        let n = roots.len();
        if n == 0 {
            return Err("the bundle has no x509-svid authorities".to_owned());
        }
        let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| format!("x509 authorities: {e}"))?;
        self.by_td
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(trust_domain.to_owned(), v);
        Ok(n)
    }

    /// Forgets `trust_domain`'s authorities: its X.509-SVIDs are refused from now on.
    pub fn clear(&self, trust_domain: &str) {
        self.by_td
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(trust_domain);
    }

    fn get(&self, trust_domain: &str) -> Option<Arc<dyn ClientCertVerifier>> {
        self.by_td
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(trust_domain)
            .cloned()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The client-certificate verifier of the module documentation.
#[derive(Debug)]
pub struct SvidClientVerifier {
    authorities: Arc<Authorities>,
    mandatory: bool,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for SvidClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    /// No hints: the trust domains a broker accepts are not advertised.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let leaf = check_leaf(end_entity.as_ref()).map_err(|e| {
            tracing::warn!(reason = %e.message, "client certificate refused");
            metrics::counter!("latch_tls_client_certificates_refused_total", "reason" => "not_an_svid")
                .increment(1);
            rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
        })?;
        let td = leaf.spiffe_id.trust_domain();
        let Some(v) = self.authorities.get(td) else {
            tracing::warn!(
                trust_domain = td,
                "client certificate of an unknown trust domain"
            );
            metrics::counter!("latch_tls_client_certificates_refused_total", "reason" => "unknown_trust_domain")
                .increment(1);
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ));
        };
        v.verify_client_cert(end_entity, intermediates, now)
            .inspect_err(|e| {
                tracing::warn!(trust_domain = td, error = %e, "client certificate chain refused");
                metrics::counter!("latch_tls_client_certificates_refused_total", "reason" => "chain")
                    .increment(1);
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The listener's TLS: the acceptor, and the authorities its refresh job keeps current.
pub struct ListenerTls {
    /// Accepts connections.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// Per trust domain; empty when client certificates are off.
    pub authorities: Arc<Authorities>,
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        what,
        path: path.display().to_string(),
        reason: e.kind().to_string(),
    })
}

/// Builds the listener's TLS from `[server.tls]`; `trust` are the spiffe trust domains.
///
/// # Errors
/// [`TlsError`] for unreadable or unparsable files, client certificates without a trust
/// domain, or a configuration rustls refuses.
pub fn listener_tls(cfg: &TlsConfig, trust: &[X509TrustSource]) -> Result<ListenerTls, TlsError> {
    let certs = CertificateDer::pem_slice_iter(&read_file("cert_file", &cfg.cert_file)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::File {
            what: "cert_file",
            path: cfg.cert_file.display().to_string(),
            reason: format!("not a pem certificate chain ({e})"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::File {
            what: "cert_file",
            path: cfg.cert_file.display().to_string(),
            reason: "no certificate in it".to_owned(),
        });
    }
    let key =
        PrivateKeyDer::from_pem_slice(&read_file("key_file", &cfg.key_file)?).map_err(|_| {
            TlsError::File {
                what: "key_file",
                path: cfg.key_file.display().to_string(),
                reason: "not a pem private key".to_owned(),
            }
        })?;
    let authorities = Arc::new(Authorities::default());
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match cfg.client_certificates {
        ClientCertificates::None => builder.with_no_client_auth(),
        mode => {
            if trust.is_empty() {
                return Err(TlsError::NoTrustDomain(
                    if mode == ClientCertificates::Required {
                        "required"
                    } else {
                        "optional"
                    },
                ));
            }
            builder.with_client_cert_verifier(Arc::new(SvidClientVerifier {
                authorities: authorities.clone(),
                mandatory: mode == ClientCertificates::Required,
                provider: provider(),
            }))
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Rustls(format!("certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ListenerTls {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        authorities,
    })
}

/// The listener's TLS acceptor from `[server.tls]`: with client certificates on, the trust
/// domains' authorities are loaded before it serves and refreshed in the background.
///
/// # Errors
/// As [`listener_tls`].
pub async fn start(
    cfg: &TlsConfig,
    trust: &[X509TrustSource],
    http: &reqwest::Client,
) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let tls = listener_tls(cfg, trust)?;
    if cfg.client_certificates != ClientCertificates::None {
        let first = load_authorities(&tls.authorities, trust, http).await;
        tokio::spawn(refresh_authorities(
            tls.authorities.clone(),
            trust.to_vec(),
            http.clone(),
            first,
        ));
    }
    Ok(tls.acceptor)
}

/// Loads every trust domain's X.509 authorities once (at start: the listener opens with them);
/// answers when to read each again.
pub async fn load_authorities(
    authorities: &Authorities,
    trust: &[X509TrustSource],
    http: &reqwest::Client,
) -> Vec<Duration> {
    let mut next = Vec::with_capacity(trust.len());
    for t in trust {
        next.push(load_one(authorities, t, http).await);
    }
    next
}

/// Reads one trust domain's bundle and installs its authorities; answers when to read it
/// again. A bundle that reads but holds no `x509-svid` authority removes the trust domain's
/// authorities (a retired CA stops being trusted: fail closed); one that cannot be read keeps
/// the last ones and is read again after a minute.
async fn load_one(
    authorities: &Authorities,
    t: &X509TrustSource,
    http: &reqwest::Client,
) -> Duration {
    match load_x509_authorities(t, http, Duration::from_secs(10)).await {
        Ok(a) if a.ders.is_empty() => {
            authorities.clear(&t.trust_domain);
            tracing::warn!(trust_domain = %t.trust_domain,
                "the bundle has no x509-svid authorities; this trust domain's x509-svids are refused");
            a.next_read
        }
        Ok(a) => {
            match authorities.set(&t.trust_domain, a.ders) {
                Ok(n) => tracing::debug!(trust_domain = %t.trust_domain, authorities = n,
                    "x509 authorities loaded"),
                Err(e) => {
                    // Unusable authorities are not trusted either.
                    authorities.clear(&t.trust_domain);
                    tracing::warn!(trust_domain = %t.trust_domain, error = %e,
                        "x509 authorities refused; this trust domain's x509-svids are refused");
                }
            }
            a.next_read
        }
        Err(e) => {
            tracing::warn!(trust_domain = %t.trust_domain, error = %e,
                "trust bundle not read; the last x509 authorities (or none) stay in force");
            Duration::from_secs(60).min(t.refresh.unwrap_or(Duration::from_secs(60)))
        }
    }
}

/// Reads each trust domain's bundle again when its refresh interval says, until the process
/// ends.
pub async fn refresh_authorities(
    authorities: Arc<Authorities>,
    trust: Vec<X509TrustSource>,
    http: reqwest::Client,
    first: Vec<Duration>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for (t, mut wait) in trust.into_iter().zip(first) {
        let (authorities, http) = (authorities.clone(), http.clone());
        tasks.spawn(async move {
            loop {
                tokio::time::sleep(wait).await;
                wait = load_one(&authorities, &t, &http).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// The connection's client certificate as a [`PeerSvid`], when it presented one (the verifier
/// has already refused every certificate that is not a valid X.509-SVID).
pub fn peer_svid(conn: &rustls::ServerConnection) -> Option<PeerSvid> {
    let leaf = conn.peer_certificates()?.first()?;
    let checked = check_leaf(leaf.as_ref()).ok()?;
    Some(PeerSvid {
        spiffe_id: checked.spiffe_id.to_string(),
        not_after_unix_secs: checked.not_after_unix_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn ca_der() -> Vec<u8> {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    fn write_bundle(path: &Path, ders: &[Vec<u8>], hint: i64) {
        let keys: Vec<serde_json::Value> = ders
            .iter()
            .map(|d| {
                serde_json::json!({"use": "x509-svid", "kty": "EC",
                    "x5c": [base64::engine::general_purpose::STANDARD.encode(d)]})
            })
            .collect();
        let doc = serde_json::json!({"keys": keys, "spiffe_refresh_hint": hint});
        std::fs::write(path, doc.to_string()).unwrap();
    }

    /// A bundle that drops its last X.509 authority stops the trust domain's SVIDs at the next
    /// read (fail closed); one that cannot be read keeps the last authorities; the next read
    /// follows the bundle's hint when no refresh is configured.
    #[tokio::test]
    async fn authorities_follow_the_bundle_and_fail_closed() {
        let dir = std::env::temp_dir().join(format!("latch-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bundle.json");
        let t = X509TrustSource {
            trust_domain: "example.org".into(),
            bundle: latch_identity::JwksSource::File(file.clone()),
            refresh: None,
        };
        let http = reqwest::Client::new();
        let a = Authorities::default();
        write_bundle(&file, &[ca_der()], 45);
        assert_eq!(load_one(&a, &t, &http).await, Duration::from_secs(45));
        assert!(a.get("example.org").is_some());

        std::fs::remove_file(&file).unwrap();
        assert_eq!(load_one(&a, &t, &http).await, Duration::from_secs(60));
        assert!(
            a.get("example.org").is_some(),
            "an unreadable bundle keeps the last ones"
        );

        write_bundle(&file, &[], 45);
        load_one(&a, &t, &http).await;
        assert!(a.get("example.org").is_none(), "no authority left: refused");

        std::fs::write(
            &file,
            r#"{"keys": [{"use": "x509-svid", "x5c": ["AAAA"]}]}"#,
        )
        .unwrap();
        write_bundle(&file, &[ca_der()], 45);
        load_one(&a, &t, &http).await;
        assert!(a.get("example.org").is_some());
        std::fs::write(
            &file,
            r#"{"keys": [{"use": "x509-svid", "kty": "EC", "x5c": ["AAAA"]}]}"#,
        )
        .unwrap();
        load_one(&a, &t, &http).await;
        assert!(
            a.get("example.org").is_none(),
            "unusable authorities: refused"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
