//! Shared Signals delivery (`[[ssf.receivers]]`): one loop per stream follows the audit trail
//! from a cursor kept in the store (`ssf:<name>`), turns the revocations there into CAEP
//! events (`Broker::security_signals`), signs each as a SET with Latch's token signing key
//! (`typ` `secevent+jwt`, the key published at `/.well-known/jwks.json`) and POSTs it to the
//! receiver (RFC 8935).
//!
//! At least once: the cursor moves past a SET only once the receiver accepted it (`2xx`, RFC
//! 8935 §2.3 says `202`) or refused it for good (`400`, RFC 8935 §2.4: logged and counted,
//! never retried); anything else (no answer, `5xx`, `401`…) is retried with backoff from the
//! poll interval up to a minute. A retry sends the same `jti`, so receivers drop duplicates
//! (replicas each run the loop: a SET may arrive once per replica). The revocation itself was
//! committed before its audit record could be read here: delivery never delays or blocks it.

use std::sync::Arc;
use std::time::Duration;

use latch_core::ports::Store;
use latch_core::ssf::{SET_MEDIA_TYPE, Signal, set_jti};
use latch_core::{Broker, Clock};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::watch;

/// Audit records read per page.
const PAGE: u32 = 200;
/// Longest retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Most bytes of a receiver's error body read.
const MAX_ERROR_BODY: usize = 4096;

/// Signs a SET's claims as a compact JWS with `typ` `secevent+jwt` and a key published at
/// `/.well-known/jwks.json` (implemented in `startup` over the token signing keys).
pub trait SetSigner: Send + Sync + 'static {
    /// The compact JWS of `claims`.
    ///
    /// # Errors
    /// A secret-free message when signing fails.
    fn sign_set(&self, claims: &serde_json::Value) -> Result<String, String>;
}

/// One stream to deliver.
pub(crate) struct Stream {
    /// Stream id (the receiver's name).
    pub name: String,
    /// Where SETs go.
    pub endpoint_url: String,
    /// `aud` of its SETs.
    pub audience: String,
    /// Event types it gets.
    pub events: Vec<&'static str>,
    /// The `Authorization` header sent with each push.
    pub authorization: Option<SecretString>,
    /// Bound of one push.
    pub timeout: Duration,
}

/// What the loop runs on.
pub(crate) struct SsfDelivery {
    pub broker: Arc<Broker>,
    pub store: Arc<dyn Store>,
    pub signer: Arc<dyn SetSigner>,
    pub clock: Arc<dyn Clock>,
    /// Latch's issuer (`iss`).
    pub issuer: String,
    pub stream: Stream,
    pub poll: Duration,
}

/// The store key of a stream's cursor.
pub(crate) fn cursor_name(stream: &str) -> String {
    format!("ssf:{stream}")
}

/// A stream seen for the first time starts at the current end of the audit trail: it hears of
/// revocations from when it was configured, not the whole history. Called before the server
/// answers, so nothing it does is missed.
///
/// # Errors
/// The store's, as a message.
pub(crate) async fn start_cursor(store: &dyn Store, stream: &str) -> Result<(), String> {
    let name = cursor_name(stream);
    if store.sink_cursor(&name).await.map_err(|e| e.to_string())? == 0
        && let Some((head, _)) = store.audit_head().await.map_err(|e| e.to_string())?
    {
        store
            .set_sink_cursor(&name, head)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Delivers until `stop`.
pub(crate) async fn run(job: SsfDelivery, mut stop: watch::Receiver<bool>) {
    let http = reqwest::Client::builder()
        .connect_timeout(job.stream.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default();
    let name = job.stream.name.clone();
    let mut backoff = job.poll;
    loop {
        let delay = match job.deliver_once(&http).await {
            Ok(true) => Duration::ZERO,
            Ok(false) => {
                backoff = job.poll;
                job.poll
            }
            Err(e) => {
                metrics::counter!("latch_ssf_delivery_failures_total", "receiver" => name.clone(), "kind" => "retry")
                    .increment(1);
                tracing::warn!(receiver = %name, error = %e, "shared signals delivery failed; will retry");
                backoff = (backoff * 2).min(MAX_BACKOFF);
                backoff
            }
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            r = stop.changed() => if r.is_err() || *stop.borrow() { break },
        }
    }
}

/// The answer to one push.
enum Pushed {
    Accepted,
    /// `400`: the receiver will never take this SET (its `err` code).
    Refused(String),
}

impl SsfDelivery {
    /// Delivers one page; `Ok(true)` when a full page was read (call again at once).
    async fn deliver_once(&self, http: &reqwest::Client) -> Result<bool, String> {
        let name = cursor_name(&self.stream.name);
        let cursor = self
            .store
            .sink_cursor(&name)
            .await
            .map_err(|e| e.to_string())?;
        let page = self
            .broker
            .security_signals(cursor, PAGE)
            .await
            .map_err(|e| e.message)?;
        let Some(last) = page.last_seq else {
            return Ok(false);
        };
        for s in page
            .signals
            .iter()
            .filter(|s| self.stream.events.contains(&s.event_type))
        {
            self.deliver(http, s).await?;
            self.store
                .set_sink_cursor(&name, s.seq)
                .await
                .map_err(|e| e.to_string())?;
        }
        self.store
            .set_sink_cursor(&name, last)
            .await
            .map_err(|e| e.to_string())?;
        Ok(last - cursor >= i64::from(PAGE))
    }

    /// Signs and pushes one SET; `Err` when it is to be retried.
    async fn deliver(&self, http: &reqwest::Client, s: &Signal) -> Result<(), String> {
        let jti = set_jti(&s.event_id, &self.stream.name);
        let claims = s.claims(
            &self.issuer,
            &self.stream.audience,
            &jti,
            self.clock.now_unix_secs(),
        );
        let token = self
            .signer
            .sign_set(&claims)
            .map_err(|e| format!("cannot sign the set: {e}"))?;
        let receiver = self.stream.name.clone();
        match self.push(http, token).await? {
            Pushed::Accepted => {
                metrics::counter!("latch_ssf_sets_delivered_total", "receiver" => receiver)
                    .increment(1);
                tracing::debug!(receiver = %self.stream.name, %jti, seq = s.seq, "shared signals: set delivered");
            }
            Pushed::Refused(err) => {
                metrics::counter!("latch_ssf_delivery_failures_total", "receiver" => receiver, "kind" => "refused")
                    .increment(1);
                tracing::warn!(receiver = %self.stream.name, %jti, seq = s.seq, err = %err,
                    "shared signals: the receiver refused a set (400); it is not sent again");
            }
        }
        Ok(())
    }

    async fn push(&self, http: &reqwest::Client, token: String) -> Result<Pushed, String> {
        let mut req = http
            .post(&self.stream.endpoint_url)
            .timeout(self.stream.timeout)
            .header(reqwest::header::CONTENT_TYPE, SET_MEDIA_TYPE)
            .header(reqwest::header::ACCEPT, "application/json")
            .body(token);
        if let Some(a) = &self.stream.authorization {
            let mut v = reqwest::header::HeaderValue::from_str(a.expose_secret())
                .map_err(|_| "the configured authorization header is not a valid header value")?;
            v.set_sensitive(true);
            req = req.header(reqwest::header::AUTHORIZATION, v);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("receiver unreachable: {}", e.without_url()))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(Pushed::Accepted);
        }
        if status != reqwest::StatusCode::BAD_REQUEST {
            return Err(format!("receiver answered {status}"));
        }
        let body = resp.bytes().await.unwrap_or_default();
        let err =
            serde_json::from_slice::<serde_json::Value>(&body[..body.len().min(MAX_ERROR_BODY)])
                .ok()
                .and_then(|v| v.get("err").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_else(|| "(no err code)".to_owned());
        Ok(Pushed::Refused(latch_core::error::quote(&err)))
    }
}
