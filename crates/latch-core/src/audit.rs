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
    /// Two validly signed checkpoints disagree about one record.
    Equivocation,
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
    /// Of `checkpoints_verified`, those from the external file.
    pub external_verified: u64,
    /// External checkpoints signed after this export's last checkpoint, beyond its last record.
    pub newer_checkpoints: u64,
    /// The first problem, if any. `None` means the chain is intact.
    pub problem: Option<ChainProblem>,
}

impl VerifyReport {
    /// Records after the last verified checkpoint: intact as a chain, but not yet proven against
    /// a rewrite.
    pub fn unsealed(&self) -> i64 {
        match (self.last_seq, self.sealed_through) {
            (Some(last), Some(sealed)) => (last - sealed).max(0),
            (Some(last), None) => last.saturating_sub(self.first_seq.unwrap_or(1)) + 1,
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

/// Options of [`verify_export`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifyOptions {
    /// The export is partial and starts at this seq (`latch audit export --after-seq`); its first
    /// record's `prev_hash` is then taken on trust. Without it, the export must start at seq 1
    /// with the genesis hash, so deleting the oldest records is caught.
    pub from_seq: Option<i64>,
}

/// Verifies an export (see the module docs) read from `input`, and the `external` checkpoints
/// kept elsewhere, with `verifier` checking signatures. Stops at the first problem.
///
/// * The export must start at seq 1 (or at `opts.from_seq`), and seqs must be ≥ 1.
/// * Two validly signed checkpoints for one seq with different hashes are reported as
///   [`ChainProblemKind::Equivocation`], whatever their order.
/// * A checkpoint beyond the last record means records were cut off
///   ([`ChainProblemKind::Truncated`]), unless it is an external one signed after the export's
///   own last checkpoint (it is newer than the export; counted in
///   [`VerifyReport::newer_checkpoints`]).
///
/// # Errors
/// Only I/O errors reading `input`; damage is reported in [`VerifyReport::problem`].
pub fn verify_export(
    input: impl BufRead,
    verifier: &dyn CheckpointVerifier,
    external: &[AuditCheckpoint],
    opts: &VerifyOptions,
) -> std::io::Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let problem = |kind, seq, line, message: String| {
        Some(ChainProblem {
            kind,
            seq,
            line,
            message,
        })
    };
    // Every signed (seq → hash) seen, to catch equivocation in any order.
    let mut signed: BTreeMap<i64, String> = BTreeMap::new();
    let mut equivocation = |claims: &CheckpointClaims, line: u64| -> Option<ChainProblem> {
        match signed.get(&claims.seq) {
            Some(h) if *h != claims.hash => problem(
                ChainProblemKind::Equivocation,
                claims.seq,
                line,
                format!(
                    "two validly signed checkpoints disagree about seq {}: the log was rewritten \
                     after one of them was signed",
                    claims.seq
                ),
            ),
            _ => {
                signed.insert(claims.seq, claims.hash.clone());
                None
            }
        }
    };
    // External checkpoints, by seq; each is checked when its record is read.
    let mut pending: BTreeMap<i64, CheckpointClaims> = BTreeMap::new();
    for cp in external {
        match verifier.verify(cp) {
            Ok(claims) => {
                if let Some(p) = equivocation(&claims, 0) {
                    report.problem = Some(p);
                    return Ok(report);
                }
                pending.insert(claims.seq, claims);
            }
            Err(e) => {
                report.problem = problem(
                    ChainProblemKind::BadSignature,
                    cp.seq,
                    0,
                    format!("external checkpoint at seq {}: {e}", cp.seq),
                );
                return Ok(report);
            }
        }
    }
    let start = opts.from_seq.unwrap_or(1).max(1);
    let mut last: Option<(i64, String)> = None;
    let mut last_inline_iat: Option<i64> = None;
    let mut line_no = 0u64;
    for line in input.lines() {
        let line = line?;
        line_no += 1;
        if line.trim().is_empty() {
            continue;
        }
        let expected_seq = last.as_ref().map_or(start, |(s, _)| s.saturating_add(1));
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
            if let Some(p) = equivocation(&claims, line_no) {
                report.problem = Some(p);
                return Ok(report);
            }
            last_inline_iat = Some(last_inline_iat.map_or(claims.iat, |t| t.max(claims.iat)));
            let (last_seq, last_hash) = match last.as_ref() {
                Some((s, h)) => (*s, h.clone()),
                None => (start - 1, String::new()),
            };
            if claims.seq > last_seq {
                report.problem = problem(
                    ChainProblemKind::Truncated,
                    last_seq + 1,
                    line_no,
                    format!(
                        "a signed checkpoint seals seq {} but the records stop at seq {last_seq}: \
                         records were cut off",
                        claims.seq
                    ),
                );
                return Ok(report);
            }
            if claims.seq == last_seq {
                if claims.hash != last_hash {
                    let from = report
                        .sealed_through
                        .map_or(report.first_seq.unwrap_or(start), |s| s + 1);
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
        if seq < 1 || seq == i64::MAX {
            report.problem = problem(
                ChainProblemKind::Malformed,
                expected_seq,
                line_no,
                format!("line {line_no} has an impossible seq {seq}"),
            );
            return Ok(report);
        }
        match &last {
            Some((last_seq, last_hash)) => {
                if seq <= *last_seq {
                    report.problem = problem(
                        ChainProblemKind::Reordered,
                        seq,
                        line_no,
                        format!(
                            "seq {seq} follows seq {last_seq}: records reordered or duplicated"
                        ),
                    );
                    return Ok(report);
                }
                if seq > last_seq + 1 {
                    report.problem = problem(
                        ChainProblemKind::Deleted,
                        last_seq + 1,
                        line_no,
                        format!(
                            "seq {} is missing where seq {seq} follows seq {last_seq}: records \
                             deleted or moved",
                            last_seq + 1
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
                            "seq {seq} does not link to seq {last_seq}: seq {seq} was inserted or \
                             replaced, or seq {last_seq} was changed and its hash recomputed"
                        ),
                    );
                    return Ok(report);
                }
            }
            None => {
                if seq != start {
                    report.problem = problem(
                        ChainProblemKind::Deleted,
                        start,
                        line_no,
                        format!(
                            "the records start at seq {seq}, not at seq {start}: the oldest \
                             records were deleted (verify a partial export with its start seq)"
                        ),
                    );
                    return Ok(report);
                }
                if seq == 1 && prev_hash != GENESIS_HASH {
                    report.problem = problem(
                        ChainProblemKind::Inserted,
                        1,
                        line_no,
                        "seq 1 does not start the chain".into(),
                    );
                    return Ok(report);
                }
            }
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
        if let Some(claims) = pending.remove(&seq) {
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
            report.external_verified += 1;
            report.sealed_through = Some(seq);
        }
        report.records += 1;
        report.first_seq.get_or_insert(seq);
        report.last_seq = Some(seq);
        last = Some((seq, hash));
    }
    let last_seq = report.last_seq.unwrap_or(start - 1);
    for (seq, claims) in pending.range(last_seq + 1..) {
        if last_inline_iat.is_some_and(|t| claims.iat > t) {
            // Signed after this export's own last checkpoint: newer than the export.
            report.newer_checkpoints += 1;
            continue;
        }
        report.problem = problem(
            ChainProblemKind::Truncated,
            last_seq + 1,
            line_no,
            format!(
                "an external checkpoint seals seq {seq} but the records stop at seq {last_seq}: \
                 records were cut off"
            ),
        );
        return Ok(report);
    }
    Ok(report)
}

/// Characters that can rewrite or hide what a human sees, or break a line without being a
/// control character: bidi marks, overrides and isolates (U+061C, U+200E–F, U+202A–E,
/// U+2066–9), zero-width and invisible format characters (U+00AD, U+034F, U+180E, U+200B–D,
/// U+2060–64, U+206A–F, U+FEFF, U+FFF9–B), line and paragraph separators (U+2028, U+2029),
/// Hangul and Khmer fillers that render as blanks (U+115F, U+1160, U+17B4, U+17B5, U+3164,
/// U+FFA0), and tag characters (U+E0000–U+E007F).
pub fn is_deceptive(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{206F}'
        | '\u{3164}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF9}'..='\u{FFFB}' | '\u{E0000}'..='\u{E007F}')
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
    if !raw.chars().any(|c| c.is_control() || is_deceptive(c)) {
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
        serde_json::Value::String(v) if v.contains('\0') => Err(invalid(
            "`attributes` values must not contain NUL characters".into(),
        )),
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
    fn stored_bodies_escape_separators_bidi_and_c1_controls() {
        let e = crate::model::AuditEvent::new(1, "tool.used", "wl", "ok")
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

    #[test]
    fn chain_hash_is_domain_separated_and_binds_seq() {
        let a = chain_hash(GENESIS_HASH, 1, "{}");
        assert_ne!(a, chain_hash(GENESIS_HASH, 2, "{}"));
        assert_ne!(a, chain_hash(&a, 1, "{}"));
        assert_eq!(a.len(), 64);
    }
}

#[cfg(test)]
mod verify_tests {
    use super::*;

    /// Accepts any checkpoint whose `jws` is `signed` (the signature check itself is tested with
    /// real keys in the integration tests).
    struct Trusting;
    impl CheckpointVerifier for Trusting {
        fn verify(&self, cp: &AuditCheckpoint) -> Result<CheckpointClaims, String> {
            (cp.jws == "signed")
                .then(|| CheckpointClaims {
                    iss: "b".into(),
                    typ: CHECKPOINT_TYP.into(),
                    seq: cp.seq,
                    hash: cp.hash.clone(),
                    iat: cp.at_unix_secs,
                })
                .ok_or_else(|| "bad signature".into())
        }
    }

    fn chain(n: i64) -> Vec<AuditRecord> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let body = format!("{{\"id\":\"evt_{seq}\",\"kind\":\"k\"}}");
                let hash = chain_hash(&prev, seq, &body);
                let r = AuditRecord {
                    seq,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                    body,
                };
                prev = hash;
                r
            })
            .collect()
    }

    fn cp(r: &AuditRecord, at: i64) -> AuditCheckpoint {
        AuditCheckpoint {
            seq: r.seq,
            hash: r.hash.clone(),
            at_unix_secs: at,
            kid: "k".into(),
            jws: "signed".into(),
        }
    }

    fn text(records: &[AuditRecord], cps: &[AuditCheckpoint]) -> String {
        let mut out = String::new();
        for r in records {
            out.push_str(&r.export_line().unwrap());
            out.push('\n');
            for c in cps.iter().filter(|c| c.seq == r.seq) {
                out.push_str(&c.export_line().unwrap());
                out.push('\n');
            }
        }
        out
    }

    fn run(t: &str, ext: &[AuditCheckpoint], opts: VerifyOptions) -> VerifyReport {
        verify_export(t.as_bytes(), &Trusting, ext, &opts).unwrap()
    }

    #[test]
    fn intact_chain_is_sealed_to_its_end() {
        let c = chain(6);
        let r = run(&text(&c, &[cp(&c[5], 10)]), &[], VerifyOptions::default());
        assert_eq!(r.problem, None);
        assert_eq!((r.records, r.sealed_through, r.unsealed()), (6, Some(6), 0));
    }

    #[test]
    fn deleting_the_oldest_records_is_caught_unless_the_export_says_where_it_starts() {
        let c = chain(6);
        let t = text(&c[3..], &[cp(&c[5], 10)]);
        let p = run(&t, &[], VerifyOptions::default()).problem.unwrap();
        assert_eq!((p.kind, p.seq), (ChainProblemKind::Deleted, 1));
        let r = run(&t, &[], VerifyOptions { from_seq: Some(4) });
        assert_eq!(r.problem, None);
        let p = run(&t, &[], VerifyOptions { from_seq: Some(3) })
            .problem
            .unwrap();
        assert_eq!((p.kind, p.seq), (ChainProblemKind::Deleted, 3));
    }

    #[test]
    fn equivocating_checkpoints_fail_in_either_order() {
        let c = chain(4);
        let mut other = cp(&c[3], 20);
        other.hash = "e".repeat(64);
        let good = cp(&c[3], 10);
        for ext in [
            vec![good.clone(), other.clone()],
            vec![other.clone(), good.clone()],
        ] {
            let p = run(&text(&c, &[]), &ext, VerifyOptions::default())
                .problem
                .unwrap();
            assert_eq!((p.kind, p.seq), (ChainProblemKind::Equivocation, 4));
        }
        // One in the file, the other kept elsewhere: the kept one contradicts the records
        // before the file's own checkpoint is even read.
        let p = run(&text(&c, &[good]), &[other], VerifyOptions::default())
            .problem
            .unwrap();
        assert!(matches!(
            p.kind,
            ChainProblemKind::Equivocation | ChainProblemKind::Rewritten
        ));
    }

    #[test]
    fn kept_checkpoints_newer_than_the_export_are_not_truncation_but_older_ones_are() {
        let c = chain(8);
        let export = text(&c[..6], &[cp(&c[5], 100)]);
        let newer = cp(&c[7], 200);
        let r = run(&export, &[newer], VerifyOptions::default());
        assert_eq!(r.problem, None);
        assert_eq!(r.newer_checkpoints, 1);
        // Signed before the export's own last checkpoint, beyond its end: records were cut.
        let older = cp(&c[7], 50);
        let p = run(&export, &[older], VerifyOptions::default())
            .problem
            .unwrap();
        assert_eq!((p.kind, p.seq), (ChainProblemKind::Truncated, 7));
    }

    #[test]
    fn impossible_seqs_are_malformed_not_a_crash() {
        for seq in [0, -5, i64::MAX] {
            let line = format!(
                "{{\"seq\":{seq},\"prev_hash\":\"{GENESIS_HASH}\",\"hash\":\"x\",\"event\":{{}}}}"
            );
            let p = run(&line, &[], VerifyOptions::default()).problem.unwrap();
            assert_eq!(p.kind, ChainProblemKind::Malformed, "{seq}");
        }
    }
}
