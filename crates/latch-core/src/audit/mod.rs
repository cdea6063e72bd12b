//! The tamper-evident audit trail: the hash chain, signed checkpoints, the export format and its
//! offline verification, agents' tool-use reports, and safe rendering of hostile text.
//!
//! # The chain
//! Every stored [`AuditEvent`](crate::model::AuditEvent) becomes an [`AuditRecord`]: its JSON
//! body exactly as stored, its sequence number (1, 2, 3, … with no gaps), the hash of the previous
//! record and its own hash, [`chain_hash`]`(prev_hash, seq, body)`. The store assigns `seq` and
//! computes the hash inside the transaction that records the event, so the chain has one order
//! even when many writers commit at once. An edit, deletion, insertion or reordering of stored
//! records breaks the chain at the first affected record.
//!
//! A hash chain alone does not stop someone who can rewrite the whole tail and recompute it, so
//! the broker periodically signs the chain head ([`CheckpointClaims`], a JWS made with its
//! signing key, `kid` in the header): records up to a checkpoint are sealed. Checkpoints can be
//! exported and kept elsewhere (`latch audit export --checkpoints-only`) and given back to
//! [`verify_export`], which then also detects a rewritten or truncated chain. This is the design
//! of RFC 6962-style signed tree heads, reduced to a linear log.
//!
//! # Export format (`latch-audit/1`)
//! JSON lines. An event line is `{"seq":N,"prev_hash":"<hex>","hash":"<hex>","event":{…}}`, where
//! `event` is the stored body byte for byte (the hash covers those bytes, so do not reformat an
//! export). A checkpoint line is `{"checkpoint":{"seq":N,"hash":"<hex>","at_unix_secs":T,
//! "kid":"…","jws":"…"}}` and follows the event it seals.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

mod text;
mod tool_use;
mod verify;

pub(crate) use text::check_text;
pub use text::{escape_text, is_deceptive};
pub use tool_use::ToolUseReport;
pub use verify::{ChainProblem, ChainProblemKind, VerifyOptions, VerifyReport, verify_export};

use aws_lc_rs::digest;

/// `prev_hash` of the first record: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Name of the export format.
pub const EXPORT_FORMAT: &str = "latch-audit/1";

/// `typ` claim of checkpoint JWSs.
pub const CHECKPOINT_TYP: &str = "latch-audit-checkpoint";

/// Largest serialized size of a tool-use report's `attributes` (bytes).
pub const MAX_ATTRIBUTES_BYTES: usize = 4096;
/// Deepest nesting of a tool-use report's `attributes`.
pub const MAX_ATTRIBUTES_DEPTH: usize = 4;
/// Most keys (counted at every level) in a tool-use report's `attributes`.
pub const MAX_ATTRIBUTES_KEYS: usize = 64;

/// The chain hash of record `seq` with stored `body`, following the record whose hash is
/// `prev_hash`: lowercase hex of SHA-256 over `"latch-audit-v1\n" ‖ prev_hash ‖ "\n" ‖ seq ‖ "\n"
/// ‖ body` (`seq` in decimal). Domain-separated so a record hash can never be confused with any
/// other SHA-256 Latch computes.
pub fn chain_hash(prev_hash: &str, seq: i64, body: &str) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"latch-audit-v1\n");
    ctx.update(prev_hash.as_bytes());
    ctx.update(b"\n");
    ctx.update(seq.to_string().as_bytes());
    ctx.update(b"\n");
    ctx.update(body.as_bytes());
    hex::encode(ctx.finish())
}

/// One stored audit record: the event body exactly as hashed, and its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Position in the chain, from 1, without gaps.
    pub seq: i64,
    /// Hash of record `seq - 1` ([`GENESIS_HASH`] for the first).
    pub prev_hash: String,
    /// [`chain_hash`]`(prev_hash, seq, body)`.
    pub hash: String,
    /// The event's JSON body, byte for byte as stored.
    pub body: String,
}

impl AuditRecord {
    /// The export line of this record (no trailing newline).
    ///
    /// # Errors
    /// When the stored body is not valid JSON (the store never writes such a body).
    pub fn export_line(&self) -> Result<String, serde_json::Error> {
        #[derive(Serialize)]
        struct Line<'a> {
            seq: i64,
            prev_hash: &'a str,
            hash: &'a str,
            event: &'a RawValue,
        }
        let event: Box<RawValue> = RawValue::from_string(self.body.clone())?;
        serde_json::to_string(&Line {
            seq: self.seq,
            prev_hash: &self.prev_hash,
            hash: &self.hash,
            event: &event,
        })
    }
}

/// A signed statement that the chain's record `seq` has hash `hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditCheckpoint {
    /// Sequence number of the sealed record.
    pub seq: i64,
    /// Its chain hash.
    pub hash: String,
    /// When the checkpoint was signed.
    pub at_unix_secs: i64,
    /// Key id (RFC 7638 thumbprint) of the signing key, as in the broker's JWKS.
    pub kid: String,
    /// Compact JWS (RFC 7515) over [`CheckpointClaims`].
    pub jws: String,
}

impl AuditCheckpoint {
    /// The export line of this checkpoint (no trailing newline).
    ///
    /// # Errors
    /// Never in practice (plain strings and integers).
    pub fn export_line(&self) -> Result<String, serde_json::Error> {
        #[derive(Serialize)]
        struct Line<'a> {
            checkpoint: &'a AuditCheckpoint,
        }
        serde_json::to_string(&Line { checkpoint: self })
    }
}

/// The signed payload of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointClaims {
    /// The broker (its public URL).
    pub iss: String,
    /// Always [`CHECKPOINT_TYP`].
    pub typ: String,
    /// Sealed record.
    pub seq: i64,
    /// Its chain hash.
    pub hash: String,
    /// Signing time (`at_unix_secs`).
    pub iat: i64,
    /// Signed by audit retention as it deleted the records before `seq`: the stored chain
    /// starts at this record. Absent (false) on the periodic checkpoints; only the broker's
    /// retention pass signs it, so a verifier takes a chain that starts after seq 1 only on it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub chain_start: bool,
}

/// Signs audit retention's cut: a checkpoint of record `seq` (hash `hash`) whose claims say the
/// stored chain starts there ([`CheckpointClaims::chain_start`]). Implemented by the broker's
/// checkpointer with its signing key.
pub trait CutSigner: Send + Sync {
    /// The signed cut.
    ///
    /// # Errors
    /// A lowercase message when signing fails (nothing is pruned then).
    fn sign_cut(&self, seq: i64, hash: &str) -> Result<AuditCheckpoint, String>;

    /// Verifies a stored checkpoint with the broker's own published keys, so retention decides
    /// on signed claims (`iat`, `seq`, `hash`), not on the store's columns. `None` when its key
    /// is no longer published (retention does not use it).
    ///
    /// # Errors
    /// A lowercase message when a published key does not verify it.
    fn verify_own(&self, cp: &AuditCheckpoint) -> Result<Option<CheckpointClaims>, String>;
}

/// Checks a checkpoint's signature and returns the claims it proves.
pub trait CheckpointVerifier {
    /// Verifies `cp.jws` and returns its claims.
    ///
    /// # Errors
    /// A lowercase message: unknown key, bad signature, wrong `typ`.
    fn verify(&self, cp: &AuditCheckpoint) -> Result<CheckpointClaims, String>;
}

/// The stored body of an audit event: its JSON, with every control, line-separator, bidi or
/// invisible character (see [`is_deceptive`]) written as a `\uXXXX` escape, so the stored and
/// exported bytes hold nothing a terminal or a line-oriented tool could misread. The result is
/// the same JSON value.
///
/// # Errors
/// When the event does not serialize (it always does).
pub fn encode_event(e: &crate::model::AuditEvent) -> Result<String, serde_json::Error> {
    let raw = serde_json::to_string(e)?;
    // ASCII without DEL holds none of them (serde_json already escapes U+0000–U+001F): two
    // word-at-a-time scans, where the per-character test below cost ≈ 10 instructions a
    // character on every grant's records.
    if (raw.is_ascii() && !raw.as_bytes().contains(&0x7f))
        || !raw.chars().any(|c| c.is_control() || is_deceptive(c))
    {
        return Ok(raw);
    }
    let mut out = String::with_capacity(raw.len() + 16);
    for c in raw.chars() {
        if c.is_control() || is_deceptive(c) {
            let mut buf = [0u16; 2];
            for unit in c.encode_utf16(&mut buf) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_text_neutralises_line_breaks_and_bidi() {
        assert_eq!(escape_text("plain text"), "plain text");
        assert_eq!(
            escape_text("a\nkind=forged\r\u{202E}x\\"),
            "a\\u{000a}kind=forged\\u{000d}\\u{202e}x\\\\"
        );
    }

    #[test]
    fn stored_bodies_escape_separators_bidi_and_c1_controls() {
        let e = crate::model::AuditEvent::new(1, crate::model::AuditKind::ToolUsed, "wl", "ok")
            .detail(serde_json::json!({"v": "a\u{2028}b\u{202e}c\u{85}d\u{e0041}\ne"}));
        let body = encode_event(&e).unwrap();
        assert!(body.is_ascii() || !body.chars().any(|c| c.is_control() || is_deceptive(c)));
        assert!(
            body.contains("\\u2028") && body.contains("\\udb40\\udc41"),
            "{body}"
        );
        let back: crate::model::AuditEvent = serde_json::from_str(&body).unwrap();
        assert_eq!(back, e, "same JSON value");
    }

    /// The ASCII fast path does not let DEL (the one ASCII control serde_json leaves raw) or
    /// any other control through.
    #[test]
    fn stored_bodies_escape_del_and_ascii_controls() {
        let e = crate::model::AuditEvent::new(1, crate::model::AuditKind::ToolUsed, "wl", "ok")
            .detail(serde_json::json!({"v": "a\u{7f}b\u{1b}[31mc\td"}));
        let body = encode_event(&e).unwrap();
        assert!(!body.bytes().any(|b| b < 0x20 || b == 0x7f), "{body}");
        assert!(body.contains("\\u007f"), "{body}");
        let back: crate::model::AuditEvent = serde_json::from_str(&body).unwrap();
        assert_eq!(back, e, "same JSON value");
    }

    #[test]
    fn chain_hash_is_domain_separated_and_binds_seq() {
        let a = chain_hash(GENESIS_HASH, 1, "{}");
        assert_ne!(a, chain_hash(GENESIS_HASH, 2, "{}"));
        assert_ne!(a, chain_hash(&a, 1, "{}"));
        assert_eq!(a.len(), 64);
    }
}
