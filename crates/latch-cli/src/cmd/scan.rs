//! `latch scan`: finds leaked secrets in files, directories or stdin, and has the broker revoke
//! Latch credentials it finds.
//!
//! Scanning is local ([`latch_scan::Scanner`]): third-party secrets never leave the machine.
//! Only values that look like Latch credentials (checksum-valid `ltc…_` values, and JWTs that
//! carry the broker's issuer, `typ: at+jwt` and a `kid` of its keys, see
//! [`latch_scan::is_latch_jwt`]) are sent, one by one with their location, to
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

/// What the broker's access tokens carry: its issuer URL and the `kid`s of its JWKS, read
/// before scanning so that only its own JWTs are sent to it ([`latch_scan::is_latch_jwt`]).
struct BrokerKeys {
    issuer: String,
    kids: Vec<String>,
}

impl BrokerKeys {
    /// Reads the issuer (RFC 8414 metadata) and the key ids (JWKS) of the broker behind `c`.
    async fn fetch(c: &Client) -> Result<Self, String> {
        let meta = c.get("/.well-known/oauth-authorization-server").await?;
        if !meta.ok() {
            return Err(format!(
                "cannot read the broker's metadata: {}",
                meta.error_line()
            ));
        }
        let issuer = meta.body["issuer"].as_str().unwrap_or_default().to_owned();
        let a = c.get("/.well-known/jwks.json").await?;
        if !a.ok() {
            return Err(format!("cannot read the broker's keys: {}", a.error_line()));
        }
        Ok(Self {
            issuer,
            kids: latch_scan::jwks_kids(&a.body),
        })
    }

    /// Whether `f` may be sent to the broker: one of its credentials, as far as the scanner
    /// can tell ([`Finding::is_ours`]).
    fn owns(&self, f: &Finding) -> bool {
        f.is_ours(&self.issuer, &self.kids)
    }
}

/// The inputs of a scan: `None` for stdin (no path, or `-`), then every file under the paths
/// given; what cannot be read is added to `skipped`.
fn collect_inputs(
    paths: &[PathBuf],
    skipped: &mut Vec<String>,
) -> Result<Vec<Option<PathBuf>>, String> {
    let stdin_mode = paths.is_empty() || paths.iter().any(|p| p.as_os_str() == "-");
    let mut inputs: Vec<Option<PathBuf>> = Vec::new();
    if stdin_mode {
        inputs.push(None);
    }
    for p in paths.iter().filter(|p| p.as_os_str() != "-") {
        let mut files = Vec::new();
        files_under(p, true, &mut files, skipped)?;
        inputs.extend(files.into_iter().map(Some));
    }
    Ok(inputs)
}

/// Reads one input (stdin when `None`): its label in reports and its bytes (wiped on drop).
fn read_input(input: Option<&Path>) -> Result<(String, Zeroizing<Vec<u8>>), String> {
    Ok(match input {
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
    })
}

/// `--redact`: writes a file back with its findings masked (a named FIFO or device is only
/// reported); for stdin, answers the masked text to write to stdout.
fn redact_input(
    input: Option<&Path>,
    data: &[u8],
    findings: &[Finding],
) -> Result<Option<Vec<u8>>, String> {
    match input {
        None => return Ok(Some(redact(data, findings))),
        Some(p) if !findings.is_empty() && !std::fs::metadata(p).is_ok_and(|m| m.is_file()) => {
            eprintln!(
                "latch scan: {}: not a regular file, not redacted",
                p.display()
            );
        }
        Some(p) if !findings.is_empty() => {
            std::fs::write(p, redact(data, findings))
                .map_err(|e| format!("{}: {e}", p.display()))?;
        }
        Some(_) => {}
    }
    Ok(None)
}

/// The report: pretty JSON (`--json`), or one line per finding and a count.
fn report_text(reports: &[Report], json_out: bool) -> String {
    if json_out {
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
    }
}

/// Exit code 7 on any finding; else 1 when an input named on the command line was skipped.
fn exit_code(reports: &[Report], skipped: &[String]) -> ExitCode {
    if !reports.is_empty() {
        ExitCode::from(EXIT_FINDINGS)
    } else if skipped
        .iter()
        .any(|s| !s.ends_with("(inside a directory; not followed)"))
    {
        eprintln!("latch scan: input(s) named on the command line were skipped, not scanned");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
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
    let mut skipped = Vec::new();
    let inputs = collect_inputs(&args.paths, &mut skipped)?;
    // Only the broker's own JWTs (its issuer, `typ: at+jwt`, one of its key ids) are sent to
    // it: other JWTs (a CI's OIDC token, a third party's session) never leave the machine.
    let keys = match &client {
        Some(c) => Some(BrokerKeys::fetch(c).await?),
        None => None,
    };
    let scanner = Scanner::new();
    let mut reports = Vec::new();
    let mut redacted_stdin = None;
    for input in inputs {
        let (label, data) = read_input(input.as_deref())?;
        let findings = scanner.scan(&data);
        for f in &findings {
            let mut response = None;
            if let (Some(c), Some(keys)) = (&client, &keys)
                && keys.owns(f)
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
        if args.redact
            && let Some(out) = redact_input(input.as_deref(), &data, &findings)?
        {
            redacted_stdin = Some(out);
        }
    }
    let report_text = report_text(&reports, json_out);
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
    Ok(exit_code(&reports, &skipped))
}
