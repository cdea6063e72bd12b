//! `latch scan`: finds leaked secrets in files, directories or stdin, and has the broker revoke
//! Latch credentials it finds.
//!
//! Scanning is local ([`latch_scan::Scanner`]): third-party secrets never leave the machine.
//! Only values that look like Latch credentials (checksum-valid `ltc…_` values, and JWTs whose
//! `kid` is one of the broker's keys) are sent, one by one with their location, to
//! `POST /v1/scan`, where the broker matches them by
//! keyed HMAC, revokes live ones and records `leak.detected` audit events. `--offline` skips
//! that step.
//!
//! Symlinks, FIFOs and process substitutions named on the command line are read; inside
//! directories, symlinks and special files are skipped and reported.
//!
//! Exit codes: 0 no finding; 7 at least one finding (CI fails the job); 1 error, or an input
//! skipped (not scanned) without findings elsewhere.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use latch_scan::{Finding, Scanner, redact};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::client::Client;

/// Exit code when a scan found at least one secret.
pub const EXIT_FINDINGS: u8 = 7;

/// `latch scan` arguments.
#[derive(Args)]
pub struct ScanArgs {
    /// Files or directories to scan (recursively; `.git` is skipped). None or `-`: stdin.
    pub paths: Vec<PathBuf>,
    /// Write the input back with every finding replaced by `[redacted:<kind>]`: files in place,
    /// stdin to stdout (the report then goes to stderr).
    #[arg(long)]
    pub redact: bool,
    /// Do not contact the broker (Latch credentials are reported but not checked or revoked).
    #[arg(long)]
    pub offline: bool,
}

/// One reported finding (no secret).
struct Report {
    path: String,
    finding: Finding,
    response: Option<Value>,
}

/// Collects the inputs under `p`. A path given on the command line (`top`) is followed if it is
/// a symlink and read if it is a FIFO or character device (`<(cmd)`, `/dev/stdin`); inside
/// directories only regular files and directories are read. Anything else is added to
/// `skipped` (reported, and the scan exits 1 unless it found secrets).
fn files_under(
    p: &Path,
    top: bool,
    out: &mut Vec<PathBuf>,
    skipped: &mut Vec<String>,
) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let meta = if top {
        std::fs::metadata(p)
    } else {
        std::fs::symlink_metadata(p)
    }
    .map_err(|e| format!("{}: {e}", p.display()))?;
    let ft = meta.file_type();
    if ft.is_dir() {
        if !top && p.file_name().is_some_and(|n| n == ".git") {
            return Ok(());
        }
        let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
            .map_err(|e| format!("{}: {e}", p.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for e in entries {
            files_under(&e, false, out, skipped)?;
        }
    } else if ft.is_file() || (top && (ft.is_fifo() || ft.is_char_device())) {
        out.push(p.to_path_buf());
    } else {
        let what = if ft.is_symlink() {
            "symlink (pass its target to scan it)"
        } else if ft.is_fifo() {
            "FIFO"
        } else if ft.is_socket() {
            "socket"
        } else {
            "not a regular file"
        };
        // Named on the command line: not scanning it fails the run. Met while walking a
        // directory (a repository's symlinks): reported, but the run can still pass.
        let mark = if top {
            ""
        } else {
            " (inside a directory; not followed)"
        };
        skipped.push(format!("{}: skipped: {what}{mark}", p.display()));
    }
    Ok(())
}

/// Asks the broker about one Latch-looking value; returns its answer for that finding.
async fn check(c: &Client, value: &[u8], location: &str) -> Result<Option<Value>, String> {
    let text = Zeroizing::new(String::from_utf8_lossy(value).into_owned());
    let a = c
        .post("/v1/scan", &json!({"text": *text, "source": location}))
        .await?;
    if !a.ok() {
        return Err(format!("broker refused the scan: {}", a.error_line()));
    }
    Ok(a.body["findings"]
        .as_array()
        .and_then(|f| f.first())
        .cloned())
}

fn describe(r: &Report) -> String {
    let f = &r.finding;
    let kind = r
        .response
        .as_ref()
        .and_then(|v| v["kind"].as_str())
        .unwrap_or(&f.kind);
    let status = match &r.response {
        None if f.family == latch_scan::Family::Latch => " (not checked: offline)".to_owned(),
        None => String::new(),
        Some(v) => {
            let resp = &v["response"];
            let revoked: Vec<&str> = resp["revoked_leases"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if !revoked.is_empty() {
                format!(" -> revoked {}", revoked.join(", "))
            } else if resp["matched"].as_bool() == Some(true) {
                format!(
                    " -> lease {} already inactive",
                    resp["lease_id"].as_str().unwrap_or("?")
                )
            } else {
                " -> not issued by this broker".to_owned()
            }
        }
    };
    format!(
        "{}:{}:{}: {kind} [{}]{status}",
        r.path, f.line, f.column, f.rule
    )
}

/// Runs `latch scan`.
///
/// # Errors
/// Unreadable inputs, an unreachable or refusing broker (in online mode).
pub async fn run(
    args: ScanArgs,
    server: &str,
    token: Option<String>,
    json_out: bool,
) -> Result<ExitCode, String> {
    let client = match (&token, args.offline) {
        (Some(_), false) => Some(Client::new(server, token.clone())),
        (None, false) => {
            eprintln!("latch scan: no --token/LATCH_TOKEN, scanning offline (nothing revoked)");
            None
        }
        (_, true) => None,
    };
    let stdin_mode = args.paths.is_empty() || args.paths.iter().any(|p| p.as_os_str() == "-");
    let mut inputs: Vec<Option<PathBuf>> = Vec::new();
    if stdin_mode {
        inputs.push(None);
    }
    let mut skipped = Vec::new();
    for p in args.paths.iter().filter(|p| p.as_os_str() != "-") {
        let mut files = Vec::new();
        files_under(p, true, &mut files, &mut skipped)?;
        inputs.extend(files.into_iter().map(Some));
    }
    // Only JWTs signed with one of the broker's keys are sent to it: other JWTs (a CI's OIDC
    // token, a third party's session) never leave the machine.
    let mut kids: Vec<String> = Vec::new();
    if let Some(c) = &client {
        let a = c.get("/.well-known/jwks.json").await?;
        if !a.ok() {
            return Err(format!("cannot read the broker's keys: {}", a.error_line()));
        }
        kids = a.body["keys"]
            .as_array()
            .map(|k| {
                k.iter()
                    .filter_map(|k| k["kid"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
    }
    let ours = |f: &Finding| match (&f.family, &f.jwt) {
        (latch_scan::Family::Latch, _) => true,
        (latch_scan::Family::Jwt, Some(info)) => {
            info.kid.as_ref().is_some_and(|k| kids.contains(k))
        }
        _ => false,
    };
    let scanner = Scanner::new();
    let mut reports = Vec::new();
    let mut redacted_stdin = None;
    for input in inputs {
        let (label, data) = match &input {
            None => {
                let mut buf = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut buf)
                    .map_err(|e| format!("stdin: {e}"))?;
                ("<stdin>".to_owned(), Zeroizing::new(buf))
            }
            Some(p) => (
                p.display().to_string(),
                Zeroizing::new(std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?),
            ),
        };
        let findings = scanner.scan(&data);
        for f in &findings {
            let mut response = None;
            if let Some(c) = &client
                && ours(f)
            {
                let loc = format!("{label}:{}:{}", f.line, f.column);
                response = check(c, f.secret(&data), &loc).await?;
            }
            reports.push(Report {
                path: label.clone(),
                finding: f.clone(),
                response,
            });
        }
        if args.redact {
            match &input {
                None => redacted_stdin = Some(redact(&data, &findings)),
                Some(p)
                    if !findings.is_empty() && !std::fs::metadata(p).is_ok_and(|m| m.is_file()) =>
                {
                    eprintln!(
                        "latch scan: {}: not a regular file, not redacted",
                        p.display()
                    );
                }
                Some(p) if !findings.is_empty() => {
                    std::fs::write(p, redact(&data, &findings))
                        .map_err(|e| format!("{}: {e}", p.display()))?;
                }
                Some(_) => {}
            }
        }
    }
    let report_text = if json_out {
        let arr: Vec<Value> = reports
            .iter()
            .map(|r| {
                json!({"path": r.path, "line": r.finding.line, "column": r.finding.column,
                       "kind": r.response.as_ref().and_then(|v| v["kind"].as_str()).unwrap_or(&r.finding.kind),
                       "rule": r.finding.rule,
                       "response": r.response.as_ref().map(|v| v["response"].clone())})
            })
            .collect();
        format!(
            "{}\n",
            serde_json::to_string_pretty(&arr).unwrap_or_default()
        )
    } else {
        let mut s: String = reports.iter().map(|r| describe(r) + "\n").collect();
        s.push_str(&format!("{} finding(s)\n", reports.len()));
        s
    };
    if let Some(out) = redacted_stdin {
        std::io::stdout()
            .write_all(&out)
            .map_err(|e| format!("stdout: {e}"))?;
        eprint!("{report_text}");
    } else {
        print!("{report_text}");
    }
    for s in &skipped {
        eprintln!("latch scan: {s}");
    }
    Ok(if !reports.is_empty() {
        ExitCode::from(EXIT_FINDINGS)
    } else if skipped
        .iter()
        .any(|s| !s.ends_with("(inside a directory; not followed)"))
    {
        eprintln!("latch scan: input(s) named on the command line were skipped, not scanned");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
