//! The audit trail's moving parts outside the domain: signed checkpoints (with the broker's JWT
//! signing key), exports, checkpoint verification from a JWKS, and the sinks that stream events
//! to a file, stdout or a webhook.
//!
//! The store is the record of truth. Sinks follow it from a cursor kept in the store (delivery is
//! at least once: after a crash, the last batch may be sent again; consumers deduplicate by
//! `seq`). A failing sink is retried with backoff and never blocks the broker.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use latch_core::Clock;
use latch_core::audit::{AuditCheckpoint, CHECKPOINT_TYP, CheckpointClaims, CheckpointVerifier};
use latch_core::ports::{Store, StoreError};
use latch_providers::keyring::SigningKeys;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Mutex, watch};

use crate::config::AuditSinkConfig;

/// Records per page when exporting or delivering to a sink.
const PAGE: u32 = 500;

/// Signs checkpoints of the audit chain and writes exports.
pub struct Checkpointer {
    store: Arc<dyn Store>,
    keys: Arc<SigningKeys>,
    issuer: String,
    clock: Arc<dyn Clock>,
    /// Serialises signing so two callers do not sign the same head twice.
    lock: Mutex<()>,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl Checkpointer {
    /// A checkpointer signing with `keys` as `issuer` (the broker's public URL).
    pub fn new(
        store: Arc<dyn Store>,
        keys: Arc<SigningKeys>,
        issuer: String,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            keys,
            issuer,
            clock,
            lock: Mutex::new(()),
        }
    }

    /// Signs the current chain head unless it is already sealed; returns the checkpoint at the
    /// head (`None` for an empty log).
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read or written; signing failures are reported
    /// as [`StoreError::Unavailable`] too (nothing is stored).
    pub async fn checkpoint(&self) -> Result<Option<AuditCheckpoint>, StoreError> {
        let _g = self.lock.lock().await;
        let Some((seq, hash)) = self.store.audit_head().await? else {
            return Ok(None);
        };
        if let Some(cp) = self.store.checkpoints(seq - 1, 1).await?.pop()
            && cp.seq == seq
        {
            return Ok(Some(cp));
        }
        let iat = self.clock.now_unix_secs();
        let claims = CheckpointClaims {
            iss: self.issuer.clone(),
            typ: CHECKPOINT_TYP.to_owned(),
            seq,
            hash: hash.clone(),
            iat,
        };
        let jws = self
            .keys
            .sign(CHECKPOINT_TYP, &claims)
            .map_err(|_| StoreError::Unavailable("signing the audit checkpoint failed".into()))?;
        let cp = AuditCheckpoint {
            seq,
            hash,
            at_unix_secs: iat,
            kid: self.keys.current_kid().to_owned(),
            jws,
        };
        self.store.put_checkpoint(&cp).await?;
        Ok(Some(cp))
    }

    /// The export (module docs of `latch_core::audit`) of records after `after_seq`, with each
    /// checkpoint after the record it seals; signs the head first so the whole export is sealed.
    /// With `checkpoints_only`, only the checkpoint lines.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn export(
        &self,
        after_seq: i64,
        checkpoints_only: bool,
    ) -> Result<String, StoreError> {
        let head = self.checkpoint().await?;
        let end = head.as_ref().map_or(0, |c| c.seq);
        let mut out = String::new();
        let mut cps = Vec::new();
        let mut after = after_seq;
        loop {
            let page = self.store.checkpoints(after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            cps.extend(page.into_iter().filter(|c| c.seq <= end));
        }
        if checkpoints_only {
            for cp in &cps {
                push_line(&mut out, cp.export_line())?;
            }
            return Ok(out);
        }
        let mut cps = cps.into_iter().peekable();
        let mut after = after_seq;
        while after < end {
            let page = self.store.audit_records(after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for r in page.iter().filter(|r| r.seq <= end) {
                push_line(&mut out, r.export_line())?;
                while let Some(cp) = cps.next_if(|c| c.seq <= r.seq) {
                    if cp.seq == r.seq {
                        push_line(&mut out, cp.export_line())?;
                    }
                }
            }
        }
        Ok(out)
    }
}

fn push_line(out: &mut String, line: Result<String, serde_json::Error>) -> Result<(), StoreError> {
    let line =
        line.map_err(|_| StoreError::Unavailable("a stored audit record is not JSON".into()))?;
    out.push_str(&line);
    out.push('\n');
    Ok(())
}

/// Verifies checkpoint signatures with the keys of a JWKS (RFC 7517), as served at
/// `/.well-known/jwks.json`. Only EdDSA and ES256 are accepted.
pub struct JwksCheckpointVerifier {
    keys: HashMap<String, (Algorithm, DecodingKey)>,
}

impl JwksCheckpointVerifier {
    /// Reads the keys of `jwks` (a JWK Set document).
    ///
    /// # Errors
    /// A lowercase message when the document is not a JWK Set or holds no usable key.
    pub fn from_jwks(jwks: &serde_json::Value) -> Result<Self, String> {
        let set: JwkSet =
            serde_json::from_value(jwks.clone()).map_err(|e| format!("not a JWK Set: {e}"))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            let alg = match &jwk.algorithm {
                jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
                jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                _ => continue,
            };
            if let Ok(k) = DecodingKey::from_jwk(jwk) {
                keys.insert(kid, (alg, k));
            }
        }
        if keys.is_empty() {
            return Err("the JWK Set holds no EdDSA or ES256 key with a `kid`".into());
        }
        Ok(Self { keys })
    }
}

impl CheckpointVerifier for JwksCheckpointVerifier {
    fn verify(&self, cp: &AuditCheckpoint) -> Result<CheckpointClaims, String> {
        let header =
            jsonwebtoken::decode_header(&cp.jws).map_err(|_| "the JWS is malformed".to_owned())?;
        let kid = header.kid.unwrap_or_default();
        let (alg, key) = self
            .keys
            .get(&kid)
            .ok_or_else(|| format!("signed with unknown key `{kid}`"))?;
        if header.alg != *alg {
            return Err(format!("`alg` {:?} does not match key `{kid}`", header.alg));
        }
        let mut v = Validation::new(*alg);
        v.required_spec_claims.clear();
        v.validate_exp = false;
        v.validate_nbf = false;
        v.validate_aud = false;
        let data = jsonwebtoken::decode::<CheckpointClaims>(&cp.jws, key, &v)
            .map_err(|_| "the signature does not verify".to_owned())?;
        let claims = data.claims;
        if claims.typ != CHECKPOINT_TYP {
            return Err(format!("`typ` is not `{CHECKPOINT_TYP}`"));
        }
        if claims.seq != cp.seq || claims.hash != cp.hash {
            return Err("the signed seq or hash differs from the checkpoint line".into());
        }
        Ok(claims)
    }
}

/// Runs the periodic checkpointer until `stop` turns true.
pub async fn run_checkpoints(
    cp: Arc<Checkpointer>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {
                if let Err(e) = cp.checkpoint().await {
                    tracing::warn!(error = %e, "audit checkpoint failed; retrying next interval");
                }
            }
            r = stop.changed() => if r.is_err() || *stop.borrow() { break },
        }
    }
}

/// Follows the store from the sink's cursor and delivers every record to `sink`, until `stop`.
pub async fn run_sink(
    store: Arc<dyn Store>,
    sink: AuditSinkConfig,
    base_dir: PathBuf,
    poll: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let name = sink.name().to_owned();
    let http = reqwest::Client::new();
    let mut backoff = poll;
    loop {
        let delay = match deliver_once(store.as_ref(), &sink, &base_dir, &http).await {
            Ok(true) => Duration::ZERO, // more may be waiting
            Ok(false) => {
                backoff = poll;
                poll
            }
            Err(e) => {
                metrics::counter!("latch_audit_sink_failures_total", "sink" => name.clone())
                    .increment(1);
                tracing::warn!(sink = %name, error = %e, "audit sink delivery failed; will retry");
                backoff = (backoff * 2).min(Duration::from_secs(60));
                backoff
            }
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            r = stop.changed() => if r.is_err() || *stop.borrow() { break },
        }
    }
}

/// Delivers one page; `Ok(true)` when a full page went out (call again at once).
async fn deliver_once(
    store: &dyn Store,
    sink: &AuditSinkConfig,
    base_dir: &std::path::Path,
    http: &reqwest::Client,
) -> Result<bool, String> {
    let name = sink.name();
    let cursor = store.sink_cursor(name).await.map_err(|e| e.to_string())?;
    let page = store
        .audit_records(cursor, PAGE)
        .await
        .map_err(|e| e.to_string())?;
    let Some(last) = page.last().map(|r| r.seq) else {
        return Ok(false);
    };
    let mut body = String::new();
    for r in &page {
        body.push_str(&r.export_line().map_err(|_| "a stored record is not JSON")?);
        body.push('\n');
    }
    match sink {
        AuditSinkConfig::File { path, .. } => {
            let path = if path.is_absolute() {
                path.clone()
            } else {
                base_dir.join(path)
            };
            let mut opts = tokio::fs::OpenOptions::new();
            opts.create(true).append(true);
            #[cfg(unix)]
            opts.mode(0o600);
            let mut f = opts
                .open(&path)
                .await
                .map_err(|e| format!("cannot open `{}`: {e}", path.display()))?;
            f.write_all(body.as_bytes())
                .await
                .map_err(|e| format!("cannot write `{}`: {e}", path.display()))?;
            f.sync_data()
                .await
                .map_err(|e| format!("cannot sync `{}`: {e}", path.display()))?;
        }
        AuditSinkConfig::Stdout { .. } => {
            let mut out = tokio::io::stdout();
            out.write_all(body.as_bytes())
                .await
                .map_err(|e| format!("cannot write stdout: {e}"))?;
            out.flush()
                .await
                .map_err(|e| format!("cannot flush stdout: {e}"))?;
        }
        AuditSinkConfig::Webhook { url, timeout, .. } => {
            let resp = http
                .post(url)
                .timeout(*timeout)
                .header("content-type", "application/x-ndjson")
                .body(body)
                .send()
                .await
                .map_err(|e| format!("webhook unreachable: {}", e.without_url()))?;
            if !resp.status().is_success() {
                return Err(format!("webhook answered {}", resp.status()));
            }
        }
    }
    store
        .set_sink_cursor(name, last)
        .await
        .map_err(|e| e.to_string())?;
    Ok(page.len() == PAGE as usize)
}
