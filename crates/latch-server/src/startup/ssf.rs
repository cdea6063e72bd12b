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

/// What `[ssf]` starts: the HTTP state (when anything is configured) and the streams.
pub(super) struct Ssf {
    pub state: Option<Arc<SsfState>>,
    streams: Vec<Stream>,
}

/// Reads `[ssf]`: the transmitters' verifier and the receivers' secrets.
///
/// # Errors
/// [`StartError`] for a secret that cannot be read or a transmitter the verifier refuses.
pub(super) fn build_ssf(
    config: &Config,
    base_url: &str,
    clock: Arc<dyn Clock>,
) -> Result<Ssf, StartError> {
    let c = &config.ssf;
    if c.receivers.is_empty() && c.transmitters.is_empty() {
        return Ok(Ssf {
            state: None,
            streams: Vec::new(),
        });
    }
    let verifier: Option<Arc<dyn SetVerifier>> = if c.transmitters.is_empty() {
        None
    } else {
        let settings = c.transmitter_settings(&config.base_dir).map_err(StartError)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| StartError(format!("http client: {e}")))?;
        Some(Arc::new(
            SecurityEventVerifier::new(settings, clock, http)
                .map_err(|e| StartError(format!("ssf transmitters: {e}")))?,
        ))
    };
    let mut streams = Vec::new();
    for r in &c.receivers {
        streams.push(Stream {
            name: r.name.clone(),
            endpoint_url: r.endpoint_url.clone(),
            audience: r.audience.clone(),
            events: r.events_delivered(),
            authorization: r.authorization(&config.base_dir).map_err(StartError)?,
            timeout: r.timeout,
        });
    }
    let state = SsfState::new(c, base_url, verifier);
    tracing::info!(
        receivers = c.receivers.len(),
        transmitters = c.transmitters.len(),
        "shared signals configured"
    );
    Ok(Ssf {
        state: Some(Arc::new(state)),
        streams,
    })
}

/// Signs SETs with the token signing keys.
struct KeysSigner(Arc<SigningKeys>);

impl SetSigner for KeysSigner {
    fn sign_set(&self, claims: &serde_json::Value) -> Result<String, String> {
        self.0.sign(SET_TYP, claims).map_err(|e| e.to_string())
    }
}

/// What the delivery jobs run on.
pub(super) struct DeliveryParts {
    pub broker: Arc<Broker>,
    pub store: Arc<dyn Store>,
    pub keys: Arc<SigningKeys>,
    pub clock: Arc<dyn Clock>,
    pub poll: Duration,
}

/// Starts one delivery job per stream, each cursor first placed (a new stream starts at the
/// end of the audit trail).
///
/// # Errors
/// [`StartError`] when the store cannot place a cursor.
pub(super) async fn spawn_deliveries(
    ssf: Ssf,
    p: DeliveryParts,
    rx: &watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, StartError> {
    let Some(state) = ssf.state else {
        return Ok(Vec::new());
    };
    let signer: Arc<dyn SetSigner> = Arc::new(KeysSigner(p.keys));
    let mut tasks = Vec::new();
    for stream in ssf.streams {
        start_cursor(p.store.as_ref(), &stream.name)
            .await
            .map_err(|e| StartError(format!("ssf receiver `{}`: {e}", stream.name)))?;
        tasks.push(tokio::spawn(run(
            SsfDelivery {
                broker: p.broker.clone(),
                store: p.store.clone(),
                signer: signer.clone(),
                clock: p.clock.clone(),
                issuer: state.issuer.clone(),
                stream,
                poll: p.poll,
            },
            rx.clone(),
        )));
    }
    Ok(tasks)
}
