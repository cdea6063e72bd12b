//! Who callers are: the OIDC verifier over the configured issuers, the development issuer
//! and its sealed key, and the spiffe trust domains for the listener's client certificates.

use std::sync::Arc;
use std::time::Duration;

use latch_core::Clock;
use latch_core::ports::{IdentityVerifier, Store};
use latch_identity::{IssuerConfig, IssuerKind, JwksSource, Preset, SigningAlgorithm};
use latch_providers::keyring::MasterKey;

use super::StartError;
use crate::config::Config;
use crate::dev::{DEV_HUMAN_ISSUER, DEV_WORKLOAD_ISSUER, DevIssuer};

/// Who callers are: the token verifier over every configured issuer (plus the development
/// issuer's, when enabled).
pub(super) struct Identity {
    pub(super) verifier: Arc<dyn IdentityVerifier>,
    /// The same verifier, as itself (the console verifies ID tokens with it).
    pub(super) oidc: Arc<latch_identity::OidcVerifier>,
    pub(super) dev: Option<Arc<DevIssuer>>,
    pub(super) workload_issuers: Vec<String>,
    /// The spiffe trust domains, for client certificates on the listener.
    pub(super) x509_trust: Vec<latch_identity::x509_svid::X509TrustSource>,
    /// The client the verifier fetches keys with (bundles for the listener too).
    pub(super) http: reqwest::Client,
}

/// The development issuer's signing key: opened from the store, or generated and sealed there.
async fn dev_issuer_key(store: &dyn Store, master: &MasterKey) -> Result<Vec<u8>, StartError> {
    let sealed_name = "dev-issuer-ed25519";
    let blob = match store
        .key_blob(sealed_name)
        .await
        .map_err(|e| StartError(e.to_string()))?
    {
        Some(blob) => blob,
        None => {
            let fresh = DevIssuer::generate_pkcs8().map_err(StartError)?;
            let blob = master.seal(sealed_name, &fresh);
            store
                .put_key_blob_if_absent(sealed_name, &blob)
                .await
                .map_err(|e| StartError(e.to_string()))?
        }
    };
    Ok(master
        .open(sealed_name, &blob)
        .map_err(|e| StartError(format!("dev issuer key: {e}")))?
        .to_vec())
}

/// The development issuer and the two issuers (workload, human) it adds.
async fn build_dev_issuer(
    config: &Config,
    store: &dyn Store,
    master: &MasterKey,
) -> Result<(Arc<DevIssuer>, [IssuerConfig; 2]), StartError> {
    tracing::warn!(
        "the development issuer is enabled: anyone who can reach /v1/dev/tokens can mint identities"
    );
    let pkcs8 = dev_issuer_key(store, master).await?;
    let dev = Arc::new(
        DevIssuer::from_pkcs8(&pkcs8, config.dev_issuer.audience.clone()).map_err(StartError)?,
    );
    let issuer = |name: &str, iss: &str, kind, preset| {
        IssuerConfig::new(
            name,
            iss,
            kind,
            dev.audience(),
            JwksSource::Static(dev.jwks().clone()),
        )
        .with_preset(preset)
        .with_algorithms(vec![SigningAlgorithm::EdDSA])
        // Development tokens live up to an hour (`latch dev token --ttl`).
        .with_max_token_lifetime(Duration::from_secs(crate::dev::MAX_TOKEN_TTL_SECS as u64))
    };
    let issuers = [
        issuer(
            "dev-workload",
            DEV_WORKLOAD_ISSUER,
            IssuerKind::Workload,
            Preset::GithubActions,
        ),
        issuer(
            "dev-human",
            DEV_HUMAN_ISSUER,
            IssuerKind::Human,
            Preset::Human,
        ),
    ];
    Ok((dev, issuers))
}

/// The OIDC verifier over the configured issuers (JWKS files resolved against the config
/// directory) and, when enabled, the development issuer.
pub(super) async fn build_identity(
    config: &Config,
    store: &dyn Store,
    master: &MasterKey,
    clock: Arc<dyn Clock>,
) -> Result<Identity, StartError> {
    let mut issuers = config.issuers.clone();
    for i in &mut issuers {
        if let JwksSource::File(p) = &i.jwks {
            i.jwks = JwksSource::File(config.path(p));
        }
    }
    let dev = if config.dev_issuer.enabled {
        let (dev, extra) = build_dev_issuer(config, store, master).await?;
        issuers.extend(extra);
        Some(dev)
    } else {
        None
    };
    // Issuer discovery and JWKS fetches: each request is further bounded by the issuer's
    // `jwks_fetch_timeout`; a JWKS host that accepts and never answers fails that fetch only.
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| StartError(format!("http client: {e}")))?;
    let workload_issuers: Vec<String> = issuers
        .iter()
        .filter(|i| i.kind == IssuerKind::Workload)
        .map(|i| i.issuer.clone())
        .collect();
    let x509_trust = latch_identity::x509_svid::x509_trust_sources(&issuers);
    let verifier = Arc::new(
        latch_identity::OidcVerifier::new(
            issuers,
            latch_identity::VerifierOptions::default(),
            clock,
            http.clone(),
        )
        .map_err(|e| StartError(format!("issuers: {e}")))?,
    );
    Ok(Identity {
        verifier: verifier.clone(),
        oidc: verifier,
        dev,
        workload_issuers,
        x509_trust,
        http,
    })
}

/// The listener's TLS acceptor when `[server.tls]` is set: its certificate, and the spiffe
/// trust domains' X.509 authorities for client certificates (loaded now, then refreshed).
pub(super) async fn listener_tls(
    config: &Config,
    identity: &Identity,
) -> Result<Option<tokio_rustls::TlsAcceptor>, StartError> {
    let Some(t) = &config.server.tls else {
        return Ok(None);
    };
    crate::tls::start(&config.resolve_tls(t), &identity.x509_trust, &identity.http)
        .await
        .map(Some)
        .map_err(|e| StartError(e.to_string()))
}
