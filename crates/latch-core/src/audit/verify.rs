//! Offline verification of an export: the chain, inline and external checkpoints.

use std::collections::BTreeMap;
use std::io::BufRead;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{AuditCheckpoint, CheckpointClaims, CheckpointVerifier, GENESIS_HASH, chain_hash};

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
    /// Records before this seq were deleted by audit retention, as an `audit.pruned` record in
    /// the chain says, and the first record kept is sealed by a signed checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruned_before: Option<i64>,
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
    let mut walk = Walk::new(verifier, opts);
    let outcome = match walk.add_external(external) {
        Ok(()) => walk.read(input)?,
        Err(p) => Err(p),
    };
    if let Err(p) = outcome {
        // An unsealed start is the first bad seq whatever came after it (a sealed one may
        // still be vouched for by an `audit.pruned` record further on, so the later problem
        // is the one to report).
        let unsealed_start = walk.pruned.as_ref().is_some_and(|s| !s.sealed);
        walk.report.problem = Some(match walk.start_problem() {
            Some(start) if unsealed_start => start,
            _ => p,
        });
    }
    Ok(walk.report)
}

/// A problem found by [`verify_export`]: reading stops there.
type Found = Result<(), ChainProblem>;

fn problem(kind: ChainProblemKind, seq: i64, line: u64, message: String) -> ChainProblem {
    ChainProblem {
        kind,
        seq,
        line,
        message,
    }
}

/// An export whose oldest records were pruned: where it starts, and what has vouched for the
/// cut so far.
struct PrunedStart {
    /// The first record's seq and hash.
    seq: i64,
    hash: String,
    /// A verified checkpoint sealed that record.
    sealed: bool,
    /// A verified checkpoint of that record says the stored chain starts there
    /// ([`CheckpointClaims::chain_start`], signed only by audit retention).
    signed_start: bool,
    /// An `audit.pruned` record names that record as where the chain was cut.
    recorded: bool,
}

/// The fields of an `audit.pruned` record that vouch for a cut.
#[derive(Deserialize)]
struct PrunedEvent {
    kind: String,
    #[serde(default)]
    detail: Option<PrunedDetail>,
}

#[derive(Deserialize)]
struct PrunedDetail {
    before_seq: i64,
    anchor_hash: String,
    /// The signed cut ([`crate::audit::CutSigner`]).
    #[serde(default)]
    cut: Option<AuditCheckpoint>,
}

/// One verification in progress: the report so far and what later lines are checked against.
struct Walk<'a> {
    verifier: &'a dyn CheckpointVerifier,
    report: VerifyReport,
    /// Every signed (seq → hash) seen, to catch equivocation in any order.
    signed: BTreeMap<i64, String>,
    /// External checkpoints, by seq; each is checked when its record is read.
    pending: BTreeMap<i64, CheckpointClaims>,
    /// The seq the export must start at.
    start: i64,
    /// The export says where it starts (`VerifyOptions::from_seq`).
    partial: bool,
    /// Set when a whole export starts after seq 1: the cut must be vouched for.
    pruned: Option<PrunedStart>,
    /// Seq and hash of the last record read.
    last: Option<(i64, String)>,
    /// Newest signing time of the export's own checkpoints.
    last_inline_iat: Option<i64>,
    /// Lines read so far.
    line_no: u64,
}

impl<'a> Walk<'a> {
    fn new(verifier: &'a dyn CheckpointVerifier, opts: &VerifyOptions) -> Self {
        Self {
            verifier,
            report: VerifyReport::default(),
            signed: BTreeMap::new(),
            pending: BTreeMap::new(),
            start: opts.from_seq.unwrap_or(1).max(1),
            partial: opts.from_seq.is_some(),
            pruned: None,
            last: None,
            last_inline_iat: None,
            line_no: 0,
        }
    }

    /// Two validly signed checkpoints for one seq must agree.
    fn equivocation(&mut self, claims: &CheckpointClaims, line: u64) -> Found {
        match self.signed.get(&claims.seq) {
            Some(h) if *h != claims.hash => Err(problem(
                ChainProblemKind::Equivocation,
                claims.seq,
                line,
                format!(
                    "two validly signed checkpoints disagree about seq {}: the log was rewritten \
                     after one of them was signed",
                    claims.seq
                ),
            )),
            _ => {
                self.signed.insert(claims.seq, claims.hash.clone());
                Ok(())
            }
        }
    }

    /// Verifies the checkpoints kept elsewhere; each is matched when its record is read.
    fn add_external(&mut self, external: &[AuditCheckpoint]) -> Found {
        for cp in external {
            let claims = self.verifier.verify(cp).map_err(|e| {
                problem(
                    ChainProblemKind::BadSignature,
                    cp.seq,
                    0,
                    format!("external checkpoint at seq {}: {e}", cp.seq),
                )
            })?;
            self.equivocation(&claims, 0)?;
            self.pending.insert(claims.seq, claims);
        }
        Ok(())
    }

    /// Reads every line of the export, then checks what the external checkpoints say about
    /// its end.
    fn read(&mut self, input: impl BufRead) -> std::io::Result<Found> {
        for line in input.lines() {
            let line = line?;
            self.line_no += 1;
            if line.trim().is_empty() {
                continue;
            }
            if let Err(p) = self.line(&line) {
                return Ok(Err(p));
            }
        }
        Ok(self.finish())
    }

    /// One non-blank line: a checkpoint or a record.
    fn line(&mut self, line: &str) -> Found {
        let line_no = self.line_no;
        let expected_seq = self
            .last
            .as_ref()
            .map_or(self.start, |(s, _)| s.saturating_add(1));
        let parsed: ExportLine<'_> = serde_json::from_str(line).map_err(|e| {
            problem(
                ChainProblemKind::Malformed,
                expected_seq,
                line_no,
                format!("line {line_no} is not an export line: {e}"),
            )
        })?;
        if let Some(cp) = parsed.checkpoint {
            return self.checkpoint(&cp);
        }
        let (Some(seq), Some(prev_hash), Some(hash), Some(event)) =
            (parsed.seq, parsed.prev_hash, parsed.hash, parsed.event)
        else {
            return Err(problem(
                ChainProblemKind::Malformed,
                expected_seq,
                line_no,
                format!("line {line_no} lacks `seq`, `prev_hash`, `hash` or `event`"),
            ));
        };
        if seq < 1 || seq == i64::MAX {
            return Err(problem(
                ChainProblemKind::Malformed,
                expected_seq,
                line_no,
                format!("line {line_no} has an impossible seq {seq}"),
            ));
        }
        if self.last.is_none() && !self.partial && seq > 1 {
            // Audit retention keeps the chain from a signed checkpoint on; checked in `finish`.
            self.start = seq;
            self.pruned = Some(PrunedStart {
                seq,
                hash: hash.clone(),
                sealed: false,
                signed_start: false,
                recorded: false,
            });
        }
        self.link(seq, &prev_hash)?;
        if chain_hash(&prev_hash, seq, event.get()) != hash {
            return Err(problem(
                ChainProblemKind::Edited,
                seq,
                line_no,
                format!("seq {seq} does not match its hash: the record was edited"),
            ));
        }
        self.seal_external(seq, &hash)?;
        self.vouch_for_cut(event.get())?;
        self.report.records += 1;
        self.report.first_seq.get_or_insert(seq);
        self.report.last_seq = Some(seq);
        self.last = Some((seq, hash));
        Ok(())
    }

    /// An inline checkpoint: signed, consistent with every other, and sealing the record it
    /// follows (one for an earlier seq, possible after a partial export, is ignored).
    fn checkpoint(&mut self, cp: &AuditCheckpoint) -> Found {
        let line_no = self.line_no;
        let claims = self.verifier.verify(cp).map_err(|e| {
            problem(
                ChainProblemKind::BadSignature,
                cp.seq,
                line_no,
                format!("checkpoint at seq {}: {e}", cp.seq),
            )
        })?;
        self.equivocation(&claims, line_no)?;
        self.last_inline_iat = Some(
            self.last_inline_iat
                .map_or(claims.iat, |t| t.max(claims.iat)),
        );
        let (last_seq, last_hash) = match self.last.as_ref() {
            Some((s, h)) => (*s, h.clone()),
            None => (self.start - 1, String::new()),
        };
        if claims.seq > last_seq {
            return Err(problem(
                ChainProblemKind::Truncated,
                last_seq + 1,
                line_no,
                format!(
                    "a signed checkpoint seals seq {} but the records stop at seq {last_seq}: \
                     records were cut off",
                    claims.seq
                ),
            ));
        }
        if claims.seq == last_seq {
            if claims.hash != last_hash {
                let from = self
                    .report
                    .sealed_through
                    .map_or(self.report.first_seq.unwrap_or(self.start), |s| s + 1);
                return Err(problem(
                    ChainProblemKind::Rewritten,
                    from,
                    line_no,
                    format!(
                        "the signed checkpoint at seq {} does not match the records: records \
                         after seq {} were changed and the chain recomputed",
                        claims.seq,
                        from - 1
                    ),
                ));
            }
            self.report.checkpoints_verified += 1;
            self.report.sealed_through = Some(claims.seq);
            self.sealed(&claims);
        }
        Ok(())
    }

    /// A verified checkpoint (`claims`, whose hash matched its record) sealed a record.
    fn sealed(&mut self, claims: &CheckpointClaims) {
        if let Some(p) = self.pruned.as_mut().filter(|p| p.seq == claims.seq) {
            p.sealed = true;
            p.signed_start |= claims.chain_start && claims.hash == p.hash;
        }
    }

    /// Notes an `audit.pruned` record that names the export's first record as the cut, and
    /// verifies the signed cut it carries (a bad signature is reported, not ignored).
    fn vouch_for_cut(&mut self, event: &str) -> Found {
        let Some((seq, hash)) = (self.pruned.as_ref())
            .filter(|p| !(p.recorded && p.signed_start) && event.contains("\"audit.pruned\""))
            .map(|p| (p.seq, p.hash.clone()))
        else {
            return Ok(());
        };
        let Ok(PrunedEvent {
            kind,
            detail: Some(d),
        }) = serde_json::from_str::<PrunedEvent>(event)
        else {
            return Ok(());
        };
        if kind != crate::model::AuditKind::AuditPruned.as_str()
            || d.before_seq != seq
            || d.anchor_hash != hash
        {
            return Ok(());
        }
        if let Some(p) = self.pruned.as_mut() {
            p.recorded = true;
        }
        let signed = match &d.cut {
            Some(cut) => {
                let claims = self.verifier.verify(cut).map_err(|e| {
                    problem(
                        ChainProblemKind::BadSignature,
                        cut.seq,
                        self.line_no,
                        format!("the signed cut in an `audit.pruned` record: {e}"),
                    )
                })?;
                self.equivocation(&claims, self.line_no)?;
                Some(claims)
            }
            None => None,
        };
        if let Some(p) = self.pruned.as_mut()
            && signed.is_some_and(|c| c.chain_start && c.seq == p.seq && c.hash == p.hash)
        {
            p.signed_start = true;
            p.sealed = true;
        }
        Ok(())
    }

    /// Record `seq` must follow the last one and link to its hash; the first must start the
    /// export (and seq 1 the chain).
    fn link(&self, seq: i64, prev_hash: &str) -> Found {
        let line_no = self.line_no;
        let Some((last_seq, last_hash)) = &self.last else {
            return self.first_link(seq, prev_hash);
        };
        if seq <= *last_seq {
            return Err(problem(
                ChainProblemKind::Reordered,
                seq,
                line_no,
                format!("seq {seq} follows seq {last_seq}: records reordered or duplicated"),
            ));
        }
        if seq > last_seq + 1 {
            return Err(problem(
                ChainProblemKind::Deleted,
                last_seq + 1,
                line_no,
                format!(
                    "seq {} is missing where seq {seq} follows seq {last_seq}: records \
                     deleted or moved",
                    last_seq + 1
                ),
            ));
        }
        if prev_hash != last_hash {
            return Err(problem(
                ChainProblemKind::Inserted,
                seq,
                line_no,
                format!(
                    "seq {seq} does not link to seq {last_seq}: seq {seq} was inserted or \
                     replaced, or seq {last_seq} was changed and its hash recomputed"
                ),
            ));
        }
        Ok(())
    }

    /// The first record read must be at the start seq; seq 1 must link to the genesis hash.
    fn first_link(&self, seq: i64, prev_hash: &str) -> Found {
        let (start, line_no) = (self.start, self.line_no);
        if seq != start {
            return Err(problem(
                ChainProblemKind::Deleted,
                start,
                line_no,
                format!(
                    "the records start at seq {seq}, not at seq {start}: the oldest \
                     records were deleted (verify a partial export with its start seq)"
                ),
            ));
        }
        if seq == 1 && prev_hash != GENESIS_HASH {
            return Err(problem(
                ChainProblemKind::Inserted,
                1,
                line_no,
                "seq 1 does not start the chain".into(),
            ));
        }
        Ok(())
    }

    /// An external checkpoint for record `seq` must match its hash; it then seals it.
    fn seal_external(&mut self, seq: i64, hash: &str) -> Found {
        let Some(claims) = self.pending.remove(&seq) else {
            return Ok(());
        };
        if claims.hash != hash {
            let from = self
                .report
                .sealed_through
                .map_or(self.report.first_seq.unwrap_or(seq), |s| s + 1);
            return Err(problem(
                ChainProblemKind::Rewritten,
                from,
                self.line_no,
                format!(
                    "the external checkpoint at seq {seq} does not match the records: \
                     records after seq {} were changed and the chain recomputed",
                    from - 1
                ),
            ));
        }
        self.report.checkpoints_verified += 1;
        self.report.external_verified += 1;
        self.report.sealed_through = Some(seq);
        self.sealed(&claims);
        Ok(())
    }

    /// A whole export that starts after seq 1 without both vouchers for the cut: the oldest
    /// records were deleted.
    fn start_problem(&self) -> Option<ChainProblem> {
        let p = self
            .pruned
            .as_ref()
            .filter(|p| !(p.signed_start && p.recorded))?;
        let why = if !p.recorded {
            "no `audit.pruned` record says the chain was cut there"
        } else {
            "no cut signed by audit retention seals that record"
        };
        Some(problem(
            ChainProblemKind::Deleted,
            1,
            self.line_no,
            format!(
                "the records start at seq {}, not at seq 1, and {why}: the oldest records were \
                 deleted (verify a partial export with its start seq)",
                p.seq
            ),
        ))
    }

    /// External checkpoints beyond the last record mean records were cut off, unless they
    /// were signed after the export's own last checkpoint (newer than the export).
    fn finish(&mut self) -> Found {
        if let Some(p) = self.start_problem() {
            return Err(p);
        }
        self.report.pruned_before = self.pruned.as_ref().map(|p| p.seq);
        let last_seq = self.report.last_seq.unwrap_or(self.start - 1);
        for (seq, claims) in self.pending.range(last_seq + 1..) {
            if self.last_inline_iat.is_some_and(|t| claims.iat > t) {
                self.report.newer_checkpoints += 1;
                continue;
            }
            return Err(problem(
                ChainProblemKind::Truncated,
                last_seq + 1,
                self.line_no,
                format!(
                    "an external checkpoint seals seq {seq} but the records stop at seq \
                     {last_seq}: records were cut off"
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod verify_tests {
    use super::*;
    use crate::audit::{AuditRecord, CHECKPOINT_TYP};

    /// Accepts any checkpoint whose `jws` is `signed` (the signature check itself is tested with
    /// real keys in the integration tests).
    struct Trusting;
    impl CheckpointVerifier for Trusting {
        fn verify(&self, cp: &AuditCheckpoint) -> Result<CheckpointClaims, String> {
            (cp.jws == "signed" || cp.jws == "signed-start")
                .then(|| CheckpointClaims {
                    iss: "b".into(),
                    typ: CHECKPOINT_TYP.into(),
                    seq: cp.seq,
                    hash: cp.hash.clone(),
                    iat: cp.at_unix_secs,
                    chain_start: cp.jws == "signed-start",
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

    /// `n` records whose bodies are `body(seq, previous hashes)`.
    fn chain_of(n: i64, body: impl Fn(i64, &[AuditRecord]) -> String) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for seq in 1..=n {
            let prev = out
                .last()
                .map_or(GENESIS_HASH.to_owned(), |r| r.hash.clone());
            let body = body(seq, &out);
            let hash = chain_hash(&prev, seq, &body);
            out.push(AuditRecord {
                seq,
                prev_hash: prev,
                hash,
                body,
            });
        }
        out
    }

    /// A checkpoint of `r` signed as `jws` ("signed", "signed-start" for a cut, else forged).
    fn signed(r: &AuditRecord, jws: &str) -> AuditCheckpoint {
        AuditCheckpoint {
            jws: jws.into(),
            ..cp(r, 10)
        }
    }

    /// Eight records; record 7 is an `audit.pruned` naming `before` (with the anchor's hash)
    /// and carrying `cut` (a checkpoint of record 4 signed as `jws`), when given.
    fn pruned_chain(before: i64, cut: Option<&str>) -> Vec<AuditRecord> {
        chain_of(8, |seq, rs| {
            if seq != 7 {
                return format!("{{\"kind\":\"k\",\"n\":{seq}}}");
            }
            let cut = cut.map_or(String::new(), |jws| {
                format!(
                    ",\"cut\":{}",
                    serde_json::to_string(&signed(&rs[3], jws)).unwrap()
                )
            });
            format!(
                "{{\"kind\":\"audit.pruned\",\"detail\":{{\"before_seq\":{before},\
                 \"anchor_hash\":\"{}\"{cut}}}}}",
                rs[3].hash
            )
        })
    }

    #[test]
    fn a_pruned_start_verifies_only_on_a_cut_signed_by_retention_and_recorded_in_the_chain() {
        let ok = |r: VerifyReport| {
            assert_eq!(r.problem, None);
            assert_eq!(
                (r.pruned_before, r.first_seq, r.records),
                (Some(4), Some(4), 5)
            );
        };
        let deleted = |r: VerifyReport, why: &str| {
            let p = r.problem.expect("a problem");
            assert_eq!(
                (p.kind, p.seq),
                (ChainProblemKind::Deleted, 1),
                "{}",
                p.message
            );
            assert!(p.message.contains(why), "{}", p.message);
        };
        let opts = VerifyOptions::default;
        // Records 1–3 pruned, record 4 kept; record 7 carries the signed cut.
        let c = pruned_chain(4, Some("signed-start"));
        ok(run(&text(&c[3..], &[]), &[], opts()));
        // The cut as a checkpoint line (the store keeps it as one), or kept elsewhere.
        let bare = pruned_chain(4, None);
        ok(run(
            &text(&bare[3..], &[signed(&bare[3], "signed-start")]),
            &[],
            opts(),
        ));
        ok(run(
            &text(&bare[3..], &[]),
            &[signed(&bare[3], "signed-start")],
            opts(),
        ));
        // A periodic checkpoint of the first record is no cut: anyone who can append a record
        // (or holds a sink's stream) could otherwise drop the records before any checkpoint.
        deleted(
            run(&text(&bare[3..], &[cp(&bare[3], 10)]), &[], opts()),
            "signed by audit",
        );
        let c = pruned_chain(4, Some("signed"));
        deleted(run(&text(&c[3..], &[]), &[], opts()), "signed by audit");
        // A forged cut: the start is not vouched for (and the signature is bad).
        let c = pruned_chain(4, Some("forged"));
        deleted(run(&text(&c[3..], &[]), &[], opts()), "signed by audit");
        // A signed cut but no record of it in the chain.
        let c = chain(8);
        deleted(
            run(
                &text(&c[3..], &[signed(&c[3], "signed-start")]),
                &[],
                opts(),
            ),
            "audit.pruned",
        );
        // One more record gone (the cut's own), or a record naming another cut.
        let c = pruned_chain(4, Some("signed-start"));
        deleted(run(&text(&c[4..], &[]), &[], opts()), "audit.pruned");
        let c = pruned_chain(3, Some("signed-start"));
        deleted(run(&text(&c[3..], &[]), &[], opts()), "audit.pruned");
        // A start no checkpoint seals is the first bad seq, whatever follows.
        let mut c = pruned_chain(4, None);
        c[5].body = "{\"kind\":\"edited\"}".into();
        deleted(run(&text(&c[3..], &[]), &[], opts()), "audit.pruned");
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
