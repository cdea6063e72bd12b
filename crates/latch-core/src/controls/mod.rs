//! The control evidence report (`latch report controls`, `GET /v1/admin/reports/controls`):
//! each control of four public catalogues mapped to a **computed** status and the evidence it
//! was computed from.
//!
//! # Catalogues
//! * OWASP Top 10 for Agentic Applications 2026 (`ASI01`–`ASI10`);
//! * OWASP Non-Human Identities Top 10 2025 (`NHI1:2025`–`NHI10:2025`);
//! * CSA MAESTRO, its seven layers (`L1`–`L7`);
//! * NIST AI RMF 1.0 (NIST AI 100-1), the GOVERN, MAP, MEASURE and MANAGE subcategories Latch
//!   holds evidence for.
//!
//! Titles are the catalogues' own; the one-line summaries are paraphrased.
//!
//! # How a status is computed
//! [`compute`] is a pure function of [`ControlInputs`]: the live configuration that matters
//! ([`ControlConfig`]), the configured resources, what the loaded Cedar policies answer to probe
//! requests ([`PolicyFacts`], see [`probe`]), and figures folded from the audit records of the
//! chosen window ([`AuditFigures`]). Each control carries the one-line rule that computed its
//! status and evidence lines citing those figures. `manual` marks what a credential broker
//! cannot observe (the model's own inputs, for instance), with the reason. Nothing is a fixed
//! `pass`: with the development issuer on, or a production resource that policy lets through
//! without a step-up, the controls that depend on it fail.
//!
//! # Verifying a report
//! The report names the audit checkpoint it was computed against (`seq`, chain hash, signing
//! key id): an auditor exports the trail (`latch audit export`), verifies it against the
//! broker's keys (`latch audit verify`), and recounts the figures from the records of the window
//! up to that `seq`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
#[cfg(feature = "openapi")]
use utoipa::ToSchema;

mod asi;
mod checks;
mod config;
mod figures;
mod maestro;
mod nhi;
mod nist;
mod probe;

pub use config::{
    ControlConfig, IssuerFact, PolicyFacts, ProbeResult, ResourceFact, SinkFact, StepUpFact,
    UpstreamFact,
};
pub use figures::{
    AuditFigures, DenialFigures, FigureFold, GrantFigures, LeakFigures, MAX_EVENTS,
    RevocationFigures, Spread, StepUpFigures, TaskFigures, ToolFigures, TtlFigure,
};
pub use probe::{PROBE_PRESETS, probe};

/// `schema_version` of the JSON form. A new field keeps it; a renamed or removed one changes
/// it.
pub const SCHEMA_VERSION: &str = "latch-controls/1";

/// A control's computed status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The rule's conditions hold.
    Pass,
    /// Some hold, some do not (the evidence says which).
    Partial,
    /// A condition the rule names is broken.
    Fail,
    /// The control concerns something this deployment does not use.
    NotApplicable,
    /// Latch cannot observe it; someone must assess it (the reason is given).
    Manual,
}

impl Status {
    /// The JSON spelling (`pass`, `partial`, `fail`, `not_applicable`, `manual`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Partial => "partial",
            Self::Fail => "fail",
            Self::NotApplicable => "not_applicable",
            Self::Manual => "manual",
        }
    }
}

/// The catalogue a control belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub enum Framework {
    /// OWASP Top 10 for Agentic Applications 2026 (`owasp_agentic_2026`).
    #[serde(rename = "owasp_agentic_2026")]
    OwaspAgentic2026,
    /// OWASP Non-Human Identities Top 10 2025 (`owasp_nhi_2025`).
    #[serde(rename = "owasp_nhi_2025")]
    OwaspNhi2025,
    /// CSA MAESTRO (agentic AI threat modelling), its seven layers (`csa_maestro`).
    #[serde(rename = "csa_maestro")]
    CsaMaestro,
    /// NIST AI Risk Management Framework 1.0, NIST AI 100-1 (`nist_ai_rmf_1_0`).
    #[serde(rename = "nist_ai_rmf_1_0")]
    NistAiRmf1,
}

impl Framework {
    /// The catalogue's name as published.
    pub fn title(self) -> &'static str {
        match self {
            Self::OwaspAgentic2026 => "OWASP Top 10 for Agentic Applications 2026",
            Self::OwaspNhi2025 => "OWASP Non-Human Identities Top 10 2025",
            Self::CsaMaestro => "CSA MAESTRO layers",
            Self::NistAiRmf1 => "NIST AI RMF 1.0",
        }
    }

    /// Every catalogue, in report order.
    pub const ALL: [Framework; 4] = [
        Self::OwaspAgentic2026,
        Self::OwaspNhi2025,
        Self::CsaMaestro,
        Self::NistAiRmf1,
    ];
}

/// One control: what it is, its computed status, the rule that computed it, and the evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Control {
    /// Catalogue.
    pub framework: Framework,
    /// Its id there (`ASI03`, `NHI7:2025`, `L5`, `MANAGE 2.4`).
    pub id: String,
    /// Its title there.
    pub title: String,
    /// What it asks, paraphrased in one line.
    pub summary: String,
    /// Computed status.
    pub status: Status,
    /// The rule that computed `status`, in one line.
    pub rule: String,
    /// Why the status is what it is, citing figures of the audit trail and facts of the
    /// configuration.
    pub evidence: Vec<String>,
}

/// The window of audit records a report covers: `from` inclusive, `to` exclusive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ReportWindow {
    /// Start, ISO 8601 UTC (`2026-01-01T00:00:00Z`).
    pub from: String,
    /// End (exclusive), ISO 8601 UTC.
    pub to: String,
    /// Start, Unix seconds.
    pub from_unix_secs: i64,
    /// End, Unix seconds.
    pub to_unix_secs: i64,
}

impl ReportWindow {
    /// The window `[from, to)` in Unix seconds.
    pub fn new(from_unix_secs: i64, to_unix_secs: i64) -> Self {
        Self {
            from: iso8601(from_unix_secs),
            to: iso8601(to_unix_secs),
            from_unix_secs,
            to_unix_secs,
        }
    }
}

/// The signed audit checkpoint a report was computed against: every record it counted has a
/// `seq` at most this one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CheckpointRef {
    /// Sequence number of the sealed record.
    pub seq: i64,
    /// Its chain hash (lowercase hex SHA-256).
    pub hash: String,
    /// Key id of the signing key, as in the broker's JWKS.
    pub kid: String,
    /// When it was signed, ISO 8601 UTC.
    pub signed_at: String,
}

impl From<&crate::audit::AuditCheckpoint> for CheckpointRef {
    fn from(cp: &crate::audit::AuditCheckpoint) -> Self {
        Self {
            seq: cp.seq,
            hash: cp.hash.clone(),
            kid: cp.kid.clone(),
            signed_at: iso8601(cp.at_unix_secs),
        }
    }
}

/// Counts of controls per status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Summary {
    /// Controls in the report.
    pub total: u32,
    /// `pass`.
    pub pass: u32,
    /// `partial`.
    pub partial: u32,
    /// `fail`.
    pub fail: u32,
    /// `not_applicable`.
    pub not_applicable: u32,
    /// `manual`.
    pub manual: u32,
}

/// Everything a report is computed from.
#[derive(Debug, Clone, Default)]
pub struct ControlInputs {
    /// When the report is computed (Unix seconds).
    pub generated_at_unix_secs: i64,
    /// The broker's public URL.
    pub broker: String,
    /// `[from, to)` in Unix seconds.
    pub window: (i64, i64),
    /// The checkpoint the audit figures stop at (`None` for an empty trail).
    pub checkpoint: Option<CheckpointRef>,
    /// The live configuration that matters.
    pub config: ControlConfig,
    /// The configured resources.
    pub resources: Vec<ResourceFact>,
    /// The loaded policies, and their answers to the probes.
    pub policy: PolicyFacts,
    /// Figures from the audit records of the window.
    pub figures: AuditFigures,
}

/// The report: every control with its status and evidence, and what it was computed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ControlReport {
    /// [`SCHEMA_VERSION`].
    pub schema_version: String,
    /// When the report was computed, ISO 8601 UTC.
    pub generated_at: String,
    /// The broker's public URL.
    pub broker: String,
    /// The window of audit records covered.
    pub window: ReportWindow,
    /// The signed checkpoint the figures stop at (`null` for an empty trail).
    pub checkpoint: Option<CheckpointRef>,
    /// Counts per status.
    pub summary: Summary,
    /// Every control, catalogue by catalogue.
    pub controls: Vec<Control>,
    /// The figures the evidence cites.
    pub figures: AuditFigures,
    /// The configuration facts the rules read.
    pub configuration: ControlConfig,
    /// The configured resources.
    pub resources: Vec<ResourceFact>,
    /// The loaded policies and their answers to the probes.
    pub policy: PolicyFacts,
    /// Limits of this report (a capped read, probes' reach).
    pub notes: Vec<String>,
}

/// Computes the report from `inputs`. Pure: the same inputs give the same report.
pub fn compute(inputs: &ControlInputs) -> ControlReport {
    let facts = checks::Facts::new(inputs);
    let mut controls = asi::controls(&facts);
    controls.extend(nhi::controls(&facts));
    let mut maestro = maestro::controls(&facts);
    // L6, Security and Compliance, spans every other layer: it is computed last, from them.
    let so_far: Vec<&Control> = controls.iter().chain(maestro.iter()).collect();
    let l6 = maestro::security_and_compliance(&so_far);
    let at = maestro
        .iter()
        .position(|c| c.id == "L7")
        .unwrap_or(maestro.len());
    maestro.insert(at, l6);
    controls.extend(maestro);
    controls.extend(nist::controls(&facts));
    if inputs.figures.truncated {
        // Figures from part of the window cannot prove a pass: what was not read may hold the
        // leak, the failed revocation or the unapproved production grant that fails it.
        for c in controls.iter_mut().filter(|c| c.status == Status::Pass) {
            c.status = Status::Partial;
            c.evidence.push(format!(
                "incomplete: the audit read stopped at its cap of {MAX_EVENTS} records, so this pass is not proven for the whole window; narrow the window"
            ));
        }
    }
    let mut summary = Summary::default();
    for c in &controls {
        summary.total += 1;
        match c.status {
            Status::Pass => summary.pass += 1,
            Status::Partial => summary.partial += 1,
            Status::Fail => summary.fail += 1,
            Status::NotApplicable => summary.not_applicable += 1,
            Status::Manual => summary.manual += 1,
        }
    }
    ControlReport {
        schema_version: SCHEMA_VERSION.to_owned(),
        generated_at: iso8601(inputs.generated_at_unix_secs),
        broker: inputs.broker.clone(),
        window: ReportWindow::new(inputs.window.0, inputs.window.1),
        checkpoint: inputs.checkpoint.clone(),
        summary,
        controls,
        figures: inputs.figures.clone(),
        configuration: inputs.config.clone(),
        resources: inputs.resources.clone(),
        policy: inputs.policy.clone(),
        notes: notes(inputs),
    }
}

/// What the reader must know about the reach of this report.
fn notes(inputs: &ControlInputs) -> Vec<String> {
    let mut out = vec![format!(
        "policy probes: each production or `secret` resource and action was decided by the loaded policies for a trusted main-branch principal of each preset ({}) in a task of the resource's environment, without approval; a policy that permits only a narrower principal may not be caught by a probe, and grants actually made without step-up are counted from the audit trail",
        PROBE_PRESETS.join(", ")
    )];
    if inputs.figures.truncated {
        out.push(format!(
            "the audit read stopped at its cap of {} records (last seq read: {}); figures cover the window only up to there: narrow the window for complete figures",
            MAX_EVENTS,
            inputs
                .figures
                .last_seq
                .map_or_else(|| "none".to_owned(), |s| s.to_string())
        ));
    }
    if inputs.checkpoint.is_none() {
        out.push("the audit trail is empty: no checkpoint to cite".into());
    }
    out
}

/// `secs` as ISO 8601 UTC with seconds (`2026-01-01T00:00:00Z`); out-of-range values are
/// clamped to the years 0000–9999.
pub fn iso8601(secs: i64) -> String {
    use time::format_description::well_known::Rfc3339;
    // 0000-01-01 and 9999-12-31T23:59:59: the range RFC 3339 can write.
    let secs = secs.clamp(-62_167_219_200, 253_402_300_799);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| secs.to_string())
}

/// Counts as `a: 2, b: 1` (largest first, then by name), at most `max` items and `…` after.
pub(crate) fn counts_line(m: &BTreeMap<String, u64>, max: usize) -> String {
    if m.is_empty() {
        return "none".into();
    }
    let mut v: Vec<(&String, &u64)> = m.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mut parts: Vec<String> = v
        .iter()
        .take(max)
        .map(|(k, n)| format!("{k}: {n}"))
        .collect();
    if v.len() > max {
        parts.push(format!("… ({} more)", v.len() - max));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests;
