//! The audit trail's moving parts outside the domain: signed checkpoints (with the broker's JWT
//! signing key), exports, and checkpoint verification from a JWKS. The jobs that sign
//! periodically and stream events to sinks are in [`crate::jobs`].

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use latch_core::Clock;
use latch_core::audit::{
    AuditCheckpoint, CHECKPOINT_TYP, CheckpointClaims, CheckpointVerifier, CutSigner,
};
use latch_core::ports::{Store, StoreError};
use latch_providers::keyring::SigningKeys;
use tokio::sync::Mutex;

/// Records per page when exporting.
const PAGE: u32 = 500;
/// Reads of one export before giving up while audit retention keeps cutting its records.
const EXPORT_ATTEMPTS: u32 = 5;

/// Signs checkpoints of the audit chain and writes exports.
pub struct Checkpointer {
    store: Arc<dyn Store>,
    keys: Arc<SigningKeys>,
    issuer: String,
    clock: Arc<dyn Clock>,
    /// Serialises signing, and holds the highest `(seq, hash)` this process signed: a log that
    /// later ends below it, or changed it, is refused a new signature.
    lock: Mutex<Option<(i64, String)>>,
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
            lock: Mutex::new(None),
        }
    }

    /// Signs the current chain head unless it is already sealed; returns the checkpoint at the
    /// head (`None` for an empty log).
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read or written; signing failures are reported
    /// as [`StoreError::Unavailable`] too (nothing is stored).
    pub async fn checkpoint(&self) -> Result<Option<AuditCheckpoint>, StoreError> {
        let mut high = self.lock.lock().await;
        let Some((seq, hash)) = self.store.audit_head().await? else {
            return Ok(None);
        };
        // Never sign over evidence of tampering: a checkpoint above the head (records cut off),
        // a head below what this process already signed, or a stored checkpoint that no longer
        // matches its record. The verifier reports the damage; signing would launder it.
        let refuse = |why: String| {
            metrics::counter!("latch_audit_chain_alarms_total").increment(1);
            tracing::error!(reason = %why, "audit chain alarm: refusing to sign a checkpoint");
            Err(StoreError::Unavailable(format!("audit chain alarm: {why}")))
        };
        if let Some(above) = self.store.checkpoints(seq, 1).await?.pop() {
            return refuse(format!(
                "a signed checkpoint seals seq {} but the log ends at seq {seq}",
                above.seq
            ));
        }
        if let Some((hseq, hhash)) = high.as_ref() {
            if *hseq > seq {
                return refuse(format!(
                    "seq {hseq} was signed by this broker but the log ends at seq {seq}"
                ));
            }
            let rec = self.store.audit_records(hseq - 1, 1).await?;
            // Audit retention may have pruned it since (possible only when this replica has
            // not signed for longer than the retention): then the stored chain starts at a cut
            // this broker's key signed.
            let pruned = match rec.first() {
                Some(r) if r.seq > *hseq => self.starts_at_a_signed_cut(*hseq).await?,
                _ => false,
            };
            if !pruned
                && rec
                    .first()
                    .is_none_or(|r| r.seq != *hseq || r.hash != *hhash)
            {
                return refuse(format!("seq {hseq} changed after this broker signed it"));
            }
        }
        let last_cp = self.store.last_checkpoint().await?;
        if let Some(cp) = &last_cp {
            let rec = self.store.audit_records(cp.seq - 1, 1).await?;
            if rec
                .first()
                .is_none_or(|r| r.seq != cp.seq || r.hash != cp.hash)
            {
                return refuse(format!(
                    "the record at seq {} no longer matches its signed checkpoint",
                    cp.seq
                ));
            }
            if cp.seq == seq {
                *high = Some((seq, hash));
                return Ok(last_cp);
            }
        }
        let iat = self.clock.now_unix_secs();
        let claims = CheckpointClaims {
            iss: self.issuer.clone(),
            typ: CHECKPOINT_TYP.to_owned(),
            seq,
            hash: hash.clone(),
            iat,
            chain_start: false,
        };
        let jws = self
            .keys
            .sign(CHECKPOINT_TYP, &claims)
            .map_err(|_| StoreError::Unavailable("signing the audit checkpoint failed".into()))?;
        let cp = AuditCheckpoint {
            seq,
            hash: hash.clone(),
            at_unix_secs: iat,
            kid: self.keys.current_kid().to_owned(),
            jws,
        };
        self.store.put_checkpoint(&cp).await?;
        *high = Some((seq, hash));
        Ok(Some(cp))
    }

    /// Whether the stored chain starts after `seq` at a record whose stored checkpoint is a cut
    /// signed by this broker's keys (audit retention's, [`CutSigner`]).
    async fn starts_at_a_signed_cut(&self, seq: i64) -> Result<bool, StoreError> {
        let first = self.store.audit_records(0, 1).await?;
        let Some(first) = first.first().filter(|f| f.seq > seq) else {
            return Ok(false);
        };
        let Some(cp) = (self.store.checkpoints(first.seq - 1, 1).await?)
            .pop()
            .filter(|cp| cp.seq == first.seq && cp.hash == first.hash)
        else {
            return Ok(false);
        };
        let ours = (self.verify_own(&cp)).is_ok_and(|c| c.is_some_and(|c| c.chain_start));
        Ok(ours)
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
        // Seal the head first; if the chain raises an alarm, export it unsigned as it is: the
        // verifier then reports the damage.
        if let Err(e) = self.checkpoint().await {
            tracing::warn!(error = %e, "exporting the audit log without a new checkpoint");
        }
        // Audit retention may cut the oldest records while they are read: read again then.
        for _ in 0..EXPORT_ATTEMPTS {
            if let Some(out) = self.export_once(after_seq, checkpoints_only).await? {
                return Ok(out);
            }
        }
        Err(StoreError::Unavailable(
            "audit retention cut the records while they were exported; try again".into(),
        ))
    }

    /// One read of [`export`](Self::export); `None` when records went missing between two
    /// pages (audit retention cut them meanwhile).
    async fn export_once(
        &self,
        after_seq: i64,
        checkpoints_only: bool,
    ) -> Result<Option<String>, StoreError> {
        let first = (self.store.audit_records(after_seq, 1).await?.first()).map(|r| r.seq);
        // Read after the first record: the cut that made it the first committed together with
        // its `audit.pruned` record, so that record is at or below this head.
        let end = self.store.audit_head().await?.map_or(0, |h| h.0);
        let mut out = String::new();
        let mut cps = Vec::new();
        // After audit retention the records start later: checkpoints of pruned records seal
        // nothing in the export (the cut at the first record kept vouches for it).
        let start = match first {
            Some(f) if !checkpoints_only => after_seq.max(f - 1),
            _ => after_seq,
        };
        let mut after = start;
        loop {
            let page = self.store.checkpoints(after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            cps.extend(page);
        }
        if checkpoints_only {
            for cp in &cps {
                push_line(&mut out, cp.export_line())?;
            }
            return Ok(Some(out));
        }
        let mut cps = cps.into_iter().peekable();
        let mut after = start;
        while after < end {
            let page = self.store.audit_records(after, PAGE).await?;
            let Some(last) = page.last() else { break };
            // A gap while the oldest record moved: retention cut them meanwhile. A gap that
            // stays is damage, exported as it is for the verifier to report.
            if page.first().is_some_and(|r| r.seq != after + 1)
                && (self.store.audit_records(after_seq, 1).await?.first()).map(|r| r.seq) != first
            {
                return Ok(None);
            }
            after = last.seq;
            for r in page.iter().filter(|r| r.seq <= end) {
                push_line(&mut out, r.export_line())?;
                while let Some(cp) = cps.next_if(|c| c.seq <= r.seq) {
                    push_line(&mut out, cp.export_line())?;
                }
            }
        }
        // Checkpoints beyond the last record are evidence that records were cut off.
        for cp in cps {
            push_line(&mut out, cp.export_line())?;
        }
        Ok(Some(out))
    }
}

impl CutSigner for Checkpointer {
    fn sign_cut(&self, seq: i64, hash: &str) -> Result<AuditCheckpoint, String> {
        let iat = self.clock.now_unix_secs();
        let claims = CheckpointClaims {
            iss: self.issuer.clone(),
            typ: CHECKPOINT_TYP.to_owned(),
            seq,
            hash: hash.to_owned(),
            iat,
            chain_start: true,
        };
        let jws = (self.keys)
            .sign(CHECKPOINT_TYP, &claims)
            .map_err(|_| "signing the audit cut failed".to_owned())?;
        Ok(AuditCheckpoint {
            seq,
            hash: hash.to_owned(),
            at_unix_secs: iat,
            kid: self.keys.current_kid().to_owned(),
            jws,
        })
    }

    fn verify_own(&self, cp: &AuditCheckpoint) -> Result<Option<CheckpointClaims>, String> {
        let v = JwksCheckpointVerifier::from_jwks(&self.keys.jwks())?;
        let kid = jsonwebtoken::decode_header(&cp.jws)
            .ok()
            .and_then(|h| h.kid)
            .unwrap_or_default();
        if !v.keys.contains_key(&kid) {
            return Ok(None);
        }
        v.verify(cp).map(Some)
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
