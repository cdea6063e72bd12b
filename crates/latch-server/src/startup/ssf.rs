//! OpenID Shared Signals wiring: the verifier of pushed SETs (`[[ssf.transmitters]]`), the
//! state the HTTP routes serve, and one delivery job per `[[ssf.receivers]]` stream, signing
//! with the token signing keys.

use std::sync::Arc;
use std::time::Duration;

use latch_core::ports::Store;
use latch_core::ssf::{SET_TYP, SetVerifier};
use latch_core::{Broker, Clock};
use latch_identity::SecurityEventVerifier;
use latch_providers::keyring::SigningKeys;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::StartError;
use crate::config::Config;
use crate::jobs::ssf::{SetSigner, SsfDelivery, Stream, run, start_cursor};
use crate::ssf::SsfState;

/// What `[ssf]` starts: the HTTP state (when anything is configured) and the deliveries.
pub(super) struct Ssf {
    pub state: Option<Arc<SsfState>>,
    streams: Vec<Stream>,
    signer: Arc<dyn SetSigner>,
    clock: Arc<dyn Clock>,
    poll: Duration,
}

/// Reads `[ssf]` (the transmitters' verifier, the receivers' secrets) and places the cursor of
/// every stream seen for the first time at the end of the audit trail, before Latch serves, so
/// a new stream hears of every revocation from its first start on.
///
/// # Errors
/// [`StartError`] for a secret that cannot be read, a transmitter the verifier refuses, or a
/// store that cannot place a cursor.
/// Warns when a transmitter may act for any human while humans come from more than one human
/// issuer: that identity provider can then end the sessions of humans another one signs in.
fn warn_unbounded_transmitters(config: &Config) {
    let human_issuers = (config.issuers.iter())
        .filter(|i| i.kind == latch_identity::IssuerKind::Human)
        .count();
    if human_issuers < 2 {
        return;
    }
    for t in config
        .ssf
        .transmitters
        .iter()
        .filter(|t| t.humans.is_none())
    {
        tracing::warn!(transmitter = %t.name, human_issuers,
            "ssf transmitter may act for any human while humans sign in through several issuers: set its `humans` pattern to the humans it manages");
    }
}

pub(super) async fn build_ssf(
    config: &Config,
    base_url: &str,
    clock: &Arc<dyn Clock>,
    store: &Arc<dyn Store>,
    keys: Arc<SigningKeys>,
) -> Result<Ssf, StartError> {
    let c = &config.ssf;
    let mut ssf = Ssf {
        state: None,
        streams: Vec::new(),
        signer: Arc::new(KeysSigner(keys)),
        clock: clock.clone(),
        poll: c.poll_interval,
    };
    if c.receivers.is_empty() && c.transmitters.is_empty() {
        return Ok(ssf);
    }
    let verifier: Option<Arc<dyn SetVerifier>> = if c.transmitters.is_empty() {
        None
    } else {
        let settings = c
            .transmitter_settings(&config.base_dir)
            .map_err(StartError)?;
        warn_unbounded_transmitters(config);
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| StartError(format!("http client: {e}")))?;
        Some(Arc::new(
            SecurityEventVerifier::new(settings, clock.clone(), http)
                .map_err(|e| StartError(format!("ssf transmitters: {e}")))?,
        ))
    };
    for r in &c.receivers {
        start_cursor(store.as_ref(), &r.name)
            .await
            .map_err(|e| StartError(format!("ssf receiver `{}`: {e}", r.name)))?;
        ssf.streams.push(Stream {
            name: r.name.clone(),
            endpoint_url: r.endpoint_url.clone(),
            audience: r.audience.clone(),
            events: r.events_delivered(),
            authorization: r.authorization(&config.base_dir).map_err(StartError)?,
            timeout: r.timeout,
        });
    }
    ssf.state = Some(Arc::new(SsfState::new(c, base_url, verifier)));
    tracing::info!(
        receivers = c.receivers.len(),
        transmitters = c.transmitters.len(),
        "shared signals configured"
    );
    Ok(ssf)
}

/// Signs SETs with the token signing keys.
struct KeysSigner(Arc<SigningKeys>);

impl SetSigner for KeysSigner {
    fn sign_set(&self, claims: &serde_json::Value) -> Result<String, String> {
        self.0.sign(SET_TYP, claims).map_err(|e| e.to_string())
    }
}

/// Starts one delivery job per stream.
pub(super) fn spawn_deliveries(
    ssf: Ssf,
    broker: &Arc<Broker>,
    store: &Arc<dyn Store>,
    rx: &watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let Some(state) = ssf.state else {
        return Vec::new();
    };
    ssf.streams
        .into_iter()
        .map(|stream| {
            tokio::spawn(run(
                SsfDelivery {
                    broker: broker.clone(),
                    store: store.clone(),
                    signer: ssf.signer.clone(),
                    clock: ssf.clock.clone(),
                    issuer: state.issuer.clone(),
                    stream,
                    poll: ssf.poll,
                },
                rx.clone(),
            ))
        })
        .collect()
}
