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

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::BufRead;

use aws_lc_rs::digest;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{ApiError, ErrorCode};

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
}

/// Checks a checkpoint's signature and returns the claims it proves.
pub trait CheckpointVerifier {
    /// Verifies `cp.jws` and returns its claims.
    ///
    /// # Errors
    /// A lowercase message: unknown key, bad signature, wrong `typ`.
    fn verify(&self, cp: &AuditCheckpoint) -> Result<CheckpointClaims, String>;
}

/// What kind of damage [`verify_export`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainProblemKind {
    /// A line is not a record or checkpoint of this format.
    Malformed,
    /// A record's contents do not match its hash.
    Edited,
    /// Records are missing (a gap in the sequence).
    Deleted,
    /// A record does not link to the one before it (inserted or replaced).
    Inserted,
    /// Sequence numbers go backwards or repeat.
    Reordered,
    /// A signed checkpoint does not match the records (the chain was rewritten and recomputed).
    Rewritten,
    /// A checkpoint seals records that are not there (the tail was cut off).
    Truncated,
    /// A checkpoint's signature does not verify.
    BadSignature,
}

/// The first problem found, naming the first bad sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainProblem {
    /// Kind of damage.
    pub kind: ChainProblemKind,
    /// First sequence number that is not as it was written.
    pub seq: i64,
    /// Line of the export file (from 1).
    pub line: u64,
    /// Lowercase explanation.
    pub message: String,
}

/// Result of [`verify_export`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Records read.
    pub records: u64,
    /// First and last sequence numbers read.
    pub first_seq: Option<i64>,
    /// Last sequence number read.
    pub last_seq: Option<i64>,
    /// Checkpoints whose signature and hash verified.
    pub checkpoints_verified: u64,
    /// Records up to this seq are sealed by a verified checkpoint.
    pub sealed_through: Option<i64>,
    /// The first problem, if any. `None` means the chain is intact.
    pub problem: Option<ChainProblem>,
}

impl VerifyReport {
    /// Records after the last verified checkpoint: intact as a chain, but not yet proven against
    /// a rewrite.
    pub fn unsealed(&self) -> i64 {
        match (self.last_seq, self.sealed_through) {
            (Some(last), Some(sealed)) => (last - sealed).max(0),
            (Some(last), None) => last - self.first_seq.unwrap_or(1) + 1,
            _ => 0,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportLine<'a> {
    seq: Option<i64>,
    prev_hash: Option<String>,
    hash: Option<String>,
    #[serde(borrow)]
    event: Option<&'a RawValue>,
    checkpoint: Option<AuditCheckpoint>,
}

/// Verifies an export (see the module docs) read from `input`, and the `external` checkpoints
/// kept elsewhere, with `verifier` checking signatures. Stops at the first problem.
///
/// An export may start anywhere (`after_seq`); its first record's `prev_hash` is then taken on
/// trust unless a checkpoint covers it.
///
/// # Errors
/// Only I/O errors reading `input`; damage is reported in [`VerifyReport::problem`].
pub fn verify_export(
    input: impl BufRead,
    verifier: &dyn CheckpointVerifier,
    external: &[AuditCheckpoint],
) -> std::io::Result<VerifyReport> {
    let mut report = VerifyReport::default();
    // External checkpoints, by seq; each is checked when its record is read.
    let mut pending: BTreeMap<i64, (CheckpointClaims, &AuditCheckpoint)> = BTreeMap::new();
    for cp in external {
        match verifier.verify(cp) {
            Ok(claims) => {
                pending.insert(claims.seq, (claims, cp));
            }
            Err(e) => {
                report.problem = Some(ChainProblem {
                    kind: ChainProblemKind::BadSignature,
                    seq: cp.seq,
                    line: 0,
                    message: format!("external checkpoint at seq {}: {e}", cp.seq),
                });
                return Ok(report);
            }
        }
    }
    let mut last: Option<(i64, String)> = None;
    // Last seq proven by a checkpoint; a mismatch blames everything after it.
    let mut line_no = 0u64;
    let problem = |kind, seq, line, message: String| {
        Some(ChainProblem {
            kind,
            seq,
            line,
            message,
        })
    };
    for line in input.lines() {
        let line = line?;
        line_no += 1;
        if line.trim().is_empty() {
            continue;
        }
        let expected_seq = last.as_ref().map_or(1, |(s, _)| s + 1);
        let parsed: ExportLine<'_> = match serde_json::from_str(&line) {
            Ok(p) => p,
            Err(e) => {
                report.problem = problem(
                    ChainProblemKind::Malformed,
                    expected_seq,
                    line_no,
                    format!("line {line_no} is not an export line: {e}"),
                );
                return Ok(report);
            }
        };
        if let Some(cp) = parsed.checkpoint {
            let claims = match verifier.verify(&cp) {
                Ok(c) => c,
                Err(e) => {
                    report.problem = problem(
                        ChainProblemKind::BadSignature,
                        cp.seq,
                        line_no,
                        format!("checkpoint at seq {}: {e}", cp.seq),
                    );
                    return Ok(report);
                }
            };
            let Some((last_seq, last_hash)) = last.as_ref() else {
                continue; // a checkpoint before any record seals nothing in this export
            };
            if claims.seq > *last_seq {
                report.problem = problem(
                    ChainProblemKind::Truncated,
                    last_seq + 1,
                    line_no,
                    format!(
                        "a signed checkpoint seals seq {} but the records stop at seq {last_seq}",
                        claims.seq
                    ),
                );
                return Ok(report);
            }
            if claims.seq == *last_seq {
                if claims.hash != *last_hash {
                    let from = report
                        .sealed_through
                        .map_or(report.first_seq.unwrap_or(1), |s| s + 1);
                    report.problem = problem(
                        ChainProblemKind::Rewritten,
                        from,
                        line_no,
                        format!(
                            "the signed checkpoint at seq {} does not match the records: records \
                             after seq {} were changed and the chain recomputed",
                            claims.seq,
                            from - 1
                        ),
                    );
                    return Ok(report);
                }
                report.checkpoints_verified += 1;
                report.sealed_through = Some(claims.seq);
            }
            // A checkpoint for an earlier seq (possible after a partial export) is ignored.
            continue;
        }
        let (Some(seq), Some(prev_hash), Some(hash), Some(event)) =
            (parsed.seq, parsed.prev_hash, parsed.hash, parsed.event)
        else {
            report.problem = problem(
                ChainProblemKind::Malformed,
                expected_seq,
                line_no,
                format!("line {line_no} lacks `seq`, `prev_hash`, `hash` or `event`"),
            );
            return Ok(report);
        };
        if let Some((last_seq, last_hash)) = &last {
            if seq <= *last_seq {
                report.problem = problem(
                    ChainProblemKind::Reordered,
                    seq,
                    line_no,
                    format!("seq {seq} follows seq {last_seq}: records reordered or duplicated"),
                );
                return Ok(report);
            }
            if seq > last_seq + 1 {
                report.problem = problem(
                    ChainProblemKind::Deleted,
                    last_seq + 1,
                    line_no,
                    format!(
                        "seq {} to {} are missing: records deleted",
                        last_seq + 1,
                        seq - 1
                    ),
                );
                return Ok(report);
            }
            if prev_hash != *last_hash {
                report.problem = problem(
                    ChainProblemKind::Inserted,
                    seq,
                    line_no,
                    format!(
                        "seq {seq} does not link to seq {last_seq}: a record was inserted or \
                         replaced"
                    ),
                );
                return Ok(report);
            }
        } else if seq == 1 && prev_hash != GENESIS_HASH {
            report.problem = problem(
                ChainProblemKind::Inserted,
                1,
                line_no,
                "seq 1 does not start the chain".into(),
            );
            return Ok(report);
        }
        if chain_hash(&prev_hash, seq, event.get()) != hash {
            report.problem = problem(
                ChainProblemKind::Edited,
                seq,
                line_no,
                format!("seq {seq} does not match its hash: the record was edited"),
            );
            return Ok(report);
        }
        if let Some((claims, _)) = pending.remove(&seq) {
            if claims.hash != hash {
                let from = report
                    .sealed_through
                    .map_or(report.first_seq.unwrap_or(seq), |s| s + 1);
                report.problem = problem(
                    ChainProblemKind::Rewritten,
                    from,
                    line_no,
                    format!(
                        "the external checkpoint at seq {seq} does not match the records: \
                         records after seq {} were changed and the chain recomputed",
                        from - 1
                    ),
                );
                return Ok(report);
            }
            report.checkpoints_verified += 1;
            report.sealed_through = Some(seq);
        }
        report.records += 1;
        report.first_seq.get_or_insert(seq);
        report.last_seq = Some(seq);
        last = Some((seq, hash));
    }
    if let Some((&seq, _)) = pending.range(report.last_seq.unwrap_or(0) + 1..).next() {
        let from = report.last_seq.map_or(1, |s| s + 1);
        report.problem = problem(
            ChainProblemKind::Truncated,
            from,
            line_no,
            format!(
                "an external checkpoint seals seq {seq} but the records stop at seq {}",
                from - 1
            ),
        );
    }
    Ok(report)
}

/// Characters that can rewrite what a human sees: bidi overrides and isolates, zero-width
/// characters and the byte-order mark.
pub(crate) fn is_deceptive(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// `s` made safe for one line of a terminal or text log: control characters (newlines included),
/// bidi controls and zero-width characters become `\u{…}` escapes, and a backslash becomes `\\`,
/// so an escaped value can never pass for a forged line or hide text.
pub fn escape_text(s: &str) -> Cow<'_, str> {
    if !s
        .chars()
        .any(|c| c == '\\' || c.is_control() || is_deceptive(c))
    {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if c.is_control() || is_deceptive(c) {
            out.push_str(&format!("\\u{{{:04x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// What an agent reports about one use of a tool (`POST /v1/tasks/{id}/events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ToolUseReport {
    /// Tool name, e.g. `psql`, `github.create_pull_request` (1–128 characters, no control,
    /// bidi or zero-width characters).
    pub tool: String,
    /// What it acted on (a resource id, host, path; ≤ 512 characters).
    #[serde(default)]
    pub target: Option<String>,
    /// `ok`, `error`, `denied`, … (`[a-z0-9_]`, 1–32 characters; default `ok`).
    #[serde(default = "default_outcome")]
    pub outcome: String,
    /// The lease whose credential was used, if any (must belong to the task).
    #[serde(default)]
    pub lease_id: Option<String>,
    /// How long the call took (milliseconds).
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// Free-form details: a JSON object of at most [`MAX_ATTRIBUTES_BYTES`] bytes serialized,
    /// [`MAX_ATTRIBUTES_KEYS`] keys and depth [`MAX_ATTRIBUTES_DEPTH`]. Values may hold any
    /// text; it is stored JSON-escaped and rendered escaped.
    ///
    /// # Security
    /// Never put credentials here: the audit log is read by many.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

fn default_outcome() -> String {
    "ok".into()
}

fn invalid(msg: String) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, msg)
}

fn check_line(field: &str, v: &str, max: usize) -> Result<(), ApiError> {
    if v.trim().is_empty() {
        return Err(invalid(format!("`{field}` must not be empty")));
    }
    if v.chars().count() > max {
        return Err(invalid(format!(
            "`{field}` is longer than {max} characters"
        )));
    }
    if v.chars().any(|c| c.is_control() || is_deceptive(c)) {
        return Err(invalid(format!(
            "`{field}` must not contain control, bidi or zero-width characters"
        )));
    }
    Ok(())
}

impl ToolUseReport {
    /// Checks the bounds documented on the fields.
    ///
    /// # Errors
    /// `invalid_request` naming the field and the bound.
    pub fn validate(&self) -> Result<(), ApiError> {
        check_line("tool", &self.tool, 128)?;
        if let Some(t) = &self.target {
            check_line("target", t, 512)?;
        }
        let o = &self.outcome;
        if o.is_empty()
            || o.len() > 32
            || !o
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(invalid(
                "`outcome` must be 1-32 characters of `a-z`, `0-9` and `_`".into(),
            ));
        }
        let size = serde_json::to_vec(&self.attributes).map_or(usize::MAX, |v| v.len());
        if size > MAX_ATTRIBUTES_BYTES {
            return Err(invalid(format!(
                "`attributes` is {size} bytes; at most {MAX_ATTRIBUTES_BYTES} are accepted"
            )));
        }
        let mut keys = 0usize;
        check_value(&self.attributes, 1, &mut keys)
    }
}

fn check_value(
    map: &serde_json::Map<String, serde_json::Value>,
    depth: usize,
    keys: &mut usize,
) -> Result<(), ApiError> {
    if depth > MAX_ATTRIBUTES_DEPTH {
        return Err(invalid(format!(
            "`attributes` is nested deeper than {MAX_ATTRIBUTES_DEPTH} levels"
        )));
    }
    for (k, v) in map {
        *keys += 1;
        if *keys > MAX_ATTRIBUTES_KEYS {
            return Err(invalid(format!(
                "`attributes` has more than {MAX_ATTRIBUTES_KEYS} keys"
            )));
        }
        check_line("attributes key", k, 128)?;
        check_nested(v, depth, keys)?;
    }
    Ok(())
}

fn check_nested(v: &serde_json::Value, depth: usize, keys: &mut usize) -> Result<(), ApiError> {
    match v {
        serde_json::Value::Object(m) => check_value(m, depth + 1, keys),
        serde_json::Value::Array(items) => {
            if depth + 1 > MAX_ATTRIBUTES_DEPTH {
                return Err(invalid(format!(
                    "`attributes` is nested deeper than {MAX_ATTRIBUTES_DEPTH} levels"
                )));
            }
            items
                .iter()
                .try_for_each(|i| check_nested(i, depth + 1, keys))
        }
        _ => Ok(()),
    }
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
    fn chain_hash_is_domain_separated_and_binds_seq() {
        let a = chain_hash(GENESIS_HASH, 1, "{}");
        assert_ne!(a, chain_hash(GENESIS_HASH, 2, "{}"));
        assert_ne!(a, chain_hash(&a, 1, "{}"));
        assert_eq!(a.len(), 64);
    }
}
