//! `latch report controls`: the control evidence report (admin token), fetched from
//! `GET /v1/admin/reports/controls` as Markdown (default), HTML or JSON, to stdout or a file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand, ValueEnum};

use super::Conn;
use super::audit::urlencode;
use crate::render::safe_json;

#[derive(Subcommand)]
pub(crate) enum ReportCmd {
    /// The control evidence report: OWASP Top 10 for Agentic Applications (ASI01–ASI10), OWASP
    /// Non-Human Identities Top 10 (NHI1–NHI10:2025), CSA MAESTRO layers and NIST AI RMF
    /// subcategories, each with a status computed from the live configuration, the loaded
    /// policies and the audit trail of the window, the rule that computed it, and its evidence;
    /// it cites the signed audit checkpoint it was computed against (admin token).
    Controls(ControlsArgs),
}

/// Output formats.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    /// Markdown (GitHub tables).
    Markdown,
    /// One HTML page, no script or external asset.
    Html,
    /// JSON (`schema_version` `latch-controls/1`).
    Json,
}

impl Format {
    fn as_str(self) -> &'static str {
        match self {
            Self::Markdown => "markdown",
            Self::Html => "html",
            Self::Json => "json",
        }
    }
}

// No doc comment: clap would take it as the `about` of `controls`.
#[derive(Args)]
pub(crate) struct ControlsArgs {
    /// Start of the window, RFC 3339 (`2026-01-01T00:00:00Z`). Default: 30 days before `--to`.
    #[arg(long, conflicts_with = "since")]
    from: Option<String>,
    /// Start of the window as a time before now (`7d`, `12h`, `90m`).
    #[arg(long)]
    since: Option<humantime::Duration>,
    /// End of the window (excluded), RFC 3339. Default: now.
    #[arg(long)]
    to: Option<String>,
    /// Output format (`--json` means `--format json`).
    #[arg(long, value_enum, default_value = "markdown")]
    format: Format,
    /// Write the report to this file (created or replaced) instead of stdout.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

/// Runs a report subcommand.
///
/// # Errors
/// Transport and file errors; an API error is printed and gives exit code 1.
pub(crate) async fn run(cmd: ReportCmd, conn: &Conn) -> Result<ExitCode, String> {
    let ReportCmd::Controls(a) = cmd;
    let format = if conn.json { Format::Json } else { a.format };
    let from = match (&a.from, a.since) {
        (Some(f), _) => Some(f.clone()),
        (None, Some(d)) => {
            let start = SystemTime::now()
                .checked_sub(Duration::from(d))
                .ok_or("`--since` reaches before 1970")?;
            Some(humantime::format_rfc3339_seconds(start).to_string())
        }
        (None, None) => None,
    };
    let mut path = format!("/v1/admin/reports/controls?format={}", format.as_str());
    for (k, v) in [("from", from.as_deref()), ("to", a.to.as_deref())] {
        if let Some(v) = v {
            path.push_str(&format!("&{k}={}", urlencode(v)));
        }
    }
    let (status, body) = conn.client().get_text(&path).await?;
    if !(200..300).contains(&status) {
        let line = serde_json::from_str::<serde_json::Value>(&body)
            .map(|b| crate::client::Answer { status, body: b }.error_line())
            .unwrap_or_else(|_| format!("http {status}"));
        eprintln!("error: {line}");
        return Ok(ExitCode::from(1));
    }
    match &a.output {
        Some(file) => {
            std::fs::write(file, body.as_bytes())
                .map_err(|e| format!("cannot write `{}`: {e}", file.display()))?;
            eprintln!("wrote {} ({} bytes)", file.display(), body.len());
        }
        // The server escapes every value; escape again anything a terminal could misread.
        None => println!("{}", safe_json(body.trim_end())),
    }
    Ok(ExitCode::SUCCESS)
}
