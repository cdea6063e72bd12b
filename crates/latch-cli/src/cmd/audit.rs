//! `latch audit tail|export|verify|find` and the timeline renderer of `latch task show --timeline`.

use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use clap::Subcommand;
use latch_core::audit::{AuditCheckpoint, VerifyOptions, VerifyReport, escape_text, verify_export};
use latch_server::audit::JwksCheckpointVerifier;
use serde_json::{Value, json};

use crate::client::Client;

/// Exit code of `latch audit verify` when the chain is damaged.
pub const EXIT_TAMPERED: u8 = 6;

/// Audit subcommands.
#[derive(Subcommand)]
pub enum AuditCmd {
    /// Print audit events (admin token), oldest first.
    Tail {
        /// Only this task.
        #[arg(long)]
        task: Option<String>,
        /// Only this lease.
        #[arg(long)]
        lease: Option<String>,
        /// Only this actor (agent principal id, human id, `latch`).
        #[arg(long)]
        actor: Option<String>,
        /// Only kinds with this prefix, e.g. `credential.`.
        #[arg(long)]
        kind: Option<String>,
        /// Only events at or after this time: a duration back from now (`1h`, `15m`), an
        /// RFC 3339 time (`2026-12-04T08:00:00Z`) or Unix seconds.
        #[arg(long, value_parser = crate::human::when_arg, value_name = "WHEN")]
        since: Option<i64>,
        /// Only events before this time (same forms as `--since`).
        #[arg(long, value_parser = crate::human::when_arg, value_name = "WHEN")]
        until: Option<i64>,
        /// Start from the last N records of the log (before filtering).
        #[arg(long, short = 'n', default_value_t = 50)]
        last: u32,
        /// Keep printing new events as they arrive.
        #[arg(long, short)]
        follow: bool,
    },
    /// Write the chain (records and signed checkpoints) as JSON lines (admin token).
    Export {
        /// Output file (default: stdout).
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Only records after this sequence number.
        #[arg(long)]
        after_seq: Option<i64>,
        /// Only the signed checkpoints, to keep somewhere else.
        #[arg(long)]
        checkpoints_only: bool,
    },
    /// Verify the chain: from an exported file (offline) or from the server (admin token).
    /// Exit code 6 names the first bad sequence number.
    Verify {
        /// Exported file (default: export from the server now).
        #[arg(long, short)]
        file: Option<PathBuf>,
        /// JWK Set with the broker's public keys: a file or URL (default:
        /// `<server>/.well-known/jwks.json`).
        #[arg(long)]
        jwks: Option<String>,
        /// Checkpoints kept elsewhere (`latch audit export --checkpoints-only`), also checked.
        #[arg(long)]
        checkpoints: Option<PathBuf>,
        /// The file is a partial export starting at this seq (`export --after-seq N` starts at
        /// N+1); without it the records must start at seq 1.
        #[arg(long)]
        from_seq: Option<i64>,
        /// Accept records after the last signed checkpoint (e.g. a sink's stream, which carries
        /// no checkpoints); by default they fail verification.
        #[arg(long)]
        allow_unsealed: bool,
    },
    /// Find the events that name a credential, given its value (admin token). Only the value's
    /// keyed HMAC is compared; the log never holds the value.
    Find {
        /// File holding the value (`-` for stdin); surrounding whitespace is ignored.
        #[arg(long)]
        value_file: PathBuf,
    },
}

/// One event as one terminal line; every agent-supplied part is escaped.
pub fn render_event(e: &Value) -> String {
    let at = e["at_unix_secs"].as_i64().unwrap_or(0).max(0) as u64;
    let when = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(at));
    let s = |k: &str| e[k].as_str().unwrap_or("-").to_owned();
    let mut line = format!(
        "{:>6}  {when}  {:<28} {:<10} actor={}",
        e["seq"],
        s("kind"),
        s("outcome"),
        s("actor")
    );
    for (k, label) in [
        ("task_id", "task"),
        ("access_request_id", "request"),
        ("lease_id", "lease"),
    ] {
        if let Some(v) = e[k].as_str() {
            line.push_str(&format!(" {label}={v}"));
        }
    }
    if !e["detail"].is_null() {
        let mut pairs = Vec::new();
        logfmt(&e["detail"], "", &mut pairs);
        if !pairs.is_empty() {
            line.push_str("  ");
            line.push_str(&pairs.join(" "));
        }
    }
    escape_text(&line).into_owned()
}

/// An event's detail as logfmt `key=value` pairs, never JSON: nested objects as dotted keys
/// (`auth.method=bearer`), lists of words as `a,b`, other list items as `key.N.…`, strings
/// with spaces, `=` or quotes (and empty ones) quoted; `null`s left out.
fn logfmt(v: &Value, key: &str, out: &mut Vec<String>) {
    let sub = |k: &str| {
        if key.is_empty() {
            k.to_owned()
        } else {
            format!("{key}.{k}")
        }
    };
    let word = |s: &str| {
        if s.is_empty() || s.contains([' ', '=', '"', ',']) {
            Value::String(s.to_owned()).to_string()
        } else {
            s.to_owned()
        }
    };
    match v {
        Value::Null => {}
        Value::Object(m) => m.iter().for_each(|(k, x)| logfmt(x, &sub(k), out)),
        Value::Array(items) if items.is_empty() => {}
        Value::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => {
            let parts: Vec<String> = items
                .iter()
                .map(|i| i.as_str().map_or_else(|| i.to_string(), word))
                .collect();
            out.push(format!("{key}={}", parts.join(",")));
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .for_each(|(n, x)| logfmt(x, &sub(&n.to_string()), out)),
        Value::String(s) => out.push(format!("{key}={}", word(s))),
        other => out.push(format!("{key}={other}")),
    }
}

fn print_events(events: &Value, json_out: bool) -> Option<i64> {
    let mut last = None;
    for e in events.as_array().into_iter().flatten() {
        if json_out {
            // One object per line: serde_json escapes control characters in strings, `safe_json`
            // bidi and invisible ones.
            println!("{}", crate::render::safe_json(&e.to_string()));
        } else {
            println!("{}", render_event(e));
        }
        last = e["seq"].as_i64().or(last);
    }
    let _ = std::io::stdout().flush();
    last
}

fn read_source(src: &str) -> Result<String, String> {
    std::fs::read_to_string(src).map_err(|e| format!("cannot read `{src}`: {e}"))
}

async fn load_jwks(c: &Client, jwks: Option<&str>) -> Result<Value, String> {
    let text = match jwks {
        Some(s) if s.starts_with("http://") || s.starts_with("https://") => reqwest::get(s)
            .await
            .map_err(|e| format!("cannot fetch `{s}`: {e}"))?
            .text()
            .await
            .map_err(|e| e.to_string())?,
        Some(path) => read_source(path)?,
        None => {
            let a = c.get("/.well-known/jwks.json").await?;
            if !a.ok() {
                return Err(format!(
                    "cannot fetch the broker's JWKS: {}",
                    a.error_line()
                ));
            }
            return Ok(a.body);
        }
    };
    serde_json::from_str(&text).map_err(|e| format!("the JWKS is not JSON: {e}"))
}

/// Runs an audit subcommand.
///
/// # Errors
/// Transport and file errors; API errors are printed and give exit code 1.
pub async fn run(cmd: AuditCmd, c: &Client, json_out: bool) -> Result<ExitCode, String> {
    match cmd {
        AuditCmd::Tail {
            task,
            lease,
            actor,
            kind,
            since,
            until,
            last,
            follow,
        } => {
            let filter = TailFilter::new(task, lease, actor, kind, since, until);
            tail(c, &filter, last, follow, json_out).await
        }
        AuditCmd::Export {
            out,
            after_seq,
            checkpoints_only,
        } => export_to(c, out, after_seq, checkpoints_only).await,
        AuditCmd::Verify {
            file,
            jwks,
            checkpoints,
            from_seq,
            allow_unsealed,
        } => {
            let Some(text) = export_text(c, file.as_deref()).await? else {
                return Ok(ExitCode::from(1));
            };
            let jwks = load_jwks(c, jwks.as_deref()).await?;
            let external = external_checkpoints(checkpoints.as_deref())?;
            verify(&text, &jwks, &external, from_seq, allow_unsealed, json_out)
        }
        AuditCmd::Find { value_file } => find(c, &value_file, json_out).await,
    }
}

/// The query parameters of `latch audit tail` (task, lease, actor, kind prefix, time range).
struct TailFilter {
    params: Vec<(String, String)>,
}

impl TailFilter {
    fn new(
        task: Option<String>,
        lease: Option<String>,
        actor: Option<String>,
        kind: Option<String>,
        since: Option<i64>,
        until: Option<i64>,
    ) -> Self {
        let mut params: Vec<(String, String)> = Vec::new();
        for (k, v) in [
            ("task_id", task),
            ("lease_id", lease),
            ("actor", actor),
            ("kind", kind),
        ] {
            if let Some(v) = v {
                params.push((k.into(), v));
            }
        }
        for (k, v) in [("since_unix_secs", since), ("until_unix_secs", until)] {
            if let Some(v) = v {
                params.push((k.into(), v.to_string()));
            }
        }
        Self { params }
    }

    /// `/v1/audit?<filters>&<extra>`.
    fn query(&self, extra: &str) -> String {
        let mut parts: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect();
        parts.push(extra.to_owned());
        format!("/v1/audit?{}", parts.join("&"))
    }
}

/// `GET path` answering a JSON array; an API error is printed (`error: …`) and answered as
/// `None` (the command then exits 1).
async fn get_events(c: &Client, path: &str) -> Result<Option<Value>, String> {
    let a = c.get(path).await?;
    if !a.ok() {
        eprintln!("error: {}", a.error_line());
        return Ok(None);
    }
    Ok(Some(a.body))
}

/// `latch audit tail`: the last `last` events (matching the filters), then with `follow` new
/// ones every 500 ms.
async fn tail(
    c: &Client,
    filter: &TailFilter,
    last: u32,
    follow: bool,
    json_out: bool,
) -> Result<ExitCode, String> {
    let Some(events) = last_events(c, filter, last).await? else {
        return Ok(ExitCode::from(1));
    };
    let mut cursor = print_events(&Value::Array(events), json_out);
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = cursor.map_or_else(|| format!("last={last}"), |s| format!("after_seq={s}"));
        let Some(page) = get_events(c, &filter.query(&format!("{after}&limit=1000"))).await? else {
            return Ok(ExitCode::from(1));
        };
        if let Some(s) = print_events(&page, json_out) {
            cursor = Some(s);
        }
    }
}

/// Without filters, the last `last` records of the log; with filters, the last `last`
/// matching records anywhere in the log (paged from the start). `None`: an API error, printed.
async fn last_events(
    c: &Client,
    filter: &TailFilter,
    last: u32,
) -> Result<Option<Vec<Value>>, String> {
    if filter.params.is_empty() {
        let page = get_events(c, &filter.query(&format!("last={last}&limit=1000"))).await?;
        return Ok(page.map(|b| b.as_array().cloned().unwrap_or_default()));
    }
    // The log's head now: every read is itself audited, so a filter that matches the reads
    // (`--since 1h`, `--actor` of the reader) would otherwise never reach the end.
    let Some(head) = get_events(c, "/v1/audit?last=1&limit=1").await? else {
        return Ok(None);
    };
    let head = head
        .as_array()
        .and_then(|v| v.last())
        .and_then(|e| e["seq"].as_i64())
        .unwrap_or(i64::MAX);
    let mut kept: std::collections::VecDeque<Value> = Default::default();
    let mut after = 0i64;
    while after < head {
        let Some(body) =
            get_events(c, &filter.query(&format!("after_seq={after}&limit=1000"))).await?
        else {
            return Ok(None);
        };
        let page = body.as_array().cloned().unwrap_or_default();
        let Some(s) = page.last().and_then(|e| e["seq"].as_i64()) else {
            break;
        };
        after = s;
        for e in page
            .into_iter()
            .filter(|e| e["seq"].as_i64().is_some_and(|q| q <= head))
        {
            kept.push_back(e);
            if kept.len() > last as usize {
                kept.pop_front();
            }
        }
    }
    Ok(Some(kept.into_iter().collect()))
}

/// `latch audit export`: the export, written to `out` or stdout.
async fn export_to(
    c: &Client,
    out: Option<PathBuf>,
    after_seq: Option<i64>,
    checkpoints_only: bool,
) -> Result<ExitCode, String> {
    let (status, text) = export(c, after_seq, checkpoints_only).await?;
    if !(200..300).contains(&status) {
        eprintln!("error: http {status}: {text}");
        return Ok(ExitCode::from(1));
    }
    match out {
        Some(p) => {
            std::fs::write(&p, text).map_err(|e| format!("cannot write `{}`: {e}", p.display()))?
        }
        None => {
            let mut o = std::io::stdout().lock();
            o.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The export to verify: `file`, or a full export from the server now (`None` when the server
/// refused it; the error is printed).
async fn export_text(c: &Client, file: Option<&Path>) -> Result<Option<String>, String> {
    match file {
        Some(p) => std::fs::read_to_string(p)
            .map(Some)
            .map_err(|e| format!("cannot read `{}`: {e}", p.display())),
        None => {
            let (status, text) = export(c, None, false).await?;
            if !(200..300).contains(&status) {
                eprintln!("error: http {status}: {text}");
                return Ok(None);
            }
            Ok(Some(text))
        }
    }
}

/// The checkpoints of `--checkpoints` (none without it; an error if the file holds none).
fn external_checkpoints(checkpoints: Option<&Path>) -> Result<Vec<AuditCheckpoint>, String> {
    match checkpoints {
        Some(p) => {
            let cps = read_checkpoints(p)?;
            if cps.is_empty() {
                return Err(format!("`{}` holds no checkpoint", p.display()));
            }
            Ok(cps)
        }
        None => Ok(Vec::new()),
    }
}

/// `latch audit verify` once its inputs are read: verifies the chain and its signed
/// checkpoints, prints the verdict (or the JSON report), exit code 0 or 6.
fn verify(
    text: &str,
    jwks: &Value,
    external: &[AuditCheckpoint],
    from_seq: Option<i64>,
    allow_unsealed: bool,
    json_out: bool,
) -> Result<ExitCode, String> {
    let verifier = JwksCheckpointVerifier::from_jwks(jwks)?;
    let opts = VerifyOptions { from_seq };
    let report = verify_export(BufReader::new(text.as_bytes()), &verifier, external, &opts)
        .map_err(|e| e.to_string())?;
    let refusal = refusal(&report, allow_unsealed);
    if json_out {
        println!("{}", json!(report));
    }
    if let Some(why) = refusal {
        if !json_out {
            println!("NOT VERIFIED: {why}");
        }
        return Ok(ExitCode::from(EXIT_TAMPERED));
    }
    match &report.problem {
        None => {
            if !json_out {
                print_verified(&report);
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(p) => {
            if !json_out {
                println!(
                    "TAMPERED: first bad seq {} ({:?}, line {}): {}",
                    p.seq, p.kind, p.line, p.message
                );
            }
            Ok(ExitCode::from(EXIT_TAMPERED))
        }
    }
}

/// Why an intact chain still does not count as verified: it holds no record, or its last
/// records are sealed by no checkpoint (unless `--allow-unsealed`).
fn refusal(report: &VerifyReport, allow_unsealed: bool) -> Option<String> {
    if report.problem.is_some() {
        None
    } else if report.records == 0 {
        Some("nothing to verify: the input holds no record".to_owned())
    } else if report.unsealed() > 0 && !allow_unsealed {
        Some(format!(
            "the last {} records are not sealed by any signed checkpoint (a broker \
             export always ends with one); pass --allow-unsealed for a sink's stream",
            report.unsealed()
        ))
    } else {
        None
    }
}

/// The `ok: …` line of a verified chain and its notes.
fn print_verified(report: &VerifyReport) {
    let range = match (report.first_seq, report.last_seq) {
        (Some(a), Some(b)) => format!("seq {a}..{b}"),
        _ => "empty".into(),
    };
    println!(
        "ok: {} records ({range}), {} signed checkpoints verified ({} from --checkpoints), sealed through seq {}",
        report.records,
        report.checkpoints_verified,
        report.external_verified,
        report.sealed_through.map_or("-".into(), |s| s.to_string())
    );
    if let Some(seq) = report.pruned_before {
        println!(
            "note: records before seq {seq} were pruned by audit retention, as the chain \
             records; a signed checkpoint seals seq {seq}"
        );
    }
    if report.newer_checkpoints > 0 {
        println!(
            "note: {} kept checkpoints are newer than this export (signed after it)",
            report.newer_checkpoints
        );
    }
    if report.unsealed() > 0 {
        println!(
            "note: the last {} records are chained but no checkpoint seals them yet",
            report.unsealed()
        );
    }
}

/// `latch audit find`: the events naming the credential in `value_file` (`-`: stdin); exit
/// code 1 when none does.
async fn find(c: &Client, value_file: &Path, json_out: bool) -> Result<ExitCode, String> {
    let mut value = String::new();
    if value_file.as_os_str() == "-" {
        std::io::stdin()
            .read_to_string(&mut value)
            .map_err(|e| format!("cannot read stdin: {e}"))?;
    } else {
        value = std::fs::read_to_string(value_file)
            .map_err(|e| format!("cannot read `{}`: {e}", value_file.display()))?;
    }
    let value = zeroize::Zeroizing::new(value);
    let a = c
        .post("/v1/audit/find", &json!({"value": value.trim()}))
        .await?;
    if !a.ok() {
        eprintln!("error: {}", a.error_line());
        return Ok(ExitCode::from(1));
    }
    let n = a.body.as_array().map_or(0, Vec::len);
    print_events(&a.body, json_out);
    if !json_out {
        eprintln!("{n} events name this credential");
    }
    Ok(if n == 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn read_checkpoints(p: &Path) -> Result<Vec<AuditCheckpoint>, String> {
    let text =
        std::fs::read_to_string(p).map_err(|e| format!("cannot read `{}`: {e}", p.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .map_err(|e| format!("{}:{}: not JSON: {e}", p.display(), i + 1))?;
        if let Some(cp) = v.get("checkpoint") {
            out.push(
                serde_json::from_value(cp.clone())
                    .map_err(|e| format!("{}:{}: not a checkpoint: {e}", p.display(), i + 1))?,
            );
        }
    }
    Ok(out)
}

async fn export(
    c: &Client,
    after_seq: Option<i64>,
    checkpoints_only: bool,
) -> Result<(u16, String), String> {
    let mut path = format!("/v1/audit/export?checkpoints_only={checkpoints_only}");
    if let Some(a) = after_seq {
        path.push_str(&format!("&after_seq={a}"));
    }
    c.get_text(&path).await
}

/// `s` percent-encoded for a query string (unreserved characters kept).
pub(crate) fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Every event of a task, in order, paging through the server's 1000-event pages.
///
/// # Errors
/// Transport errors; an API error is returned as its one-line description.
pub async fn task_timeline(c: &Client, task: &str) -> Result<Result<Vec<Value>, String>, String> {
    let mut all = Vec::new();
    let mut after = 0i64;
    loop {
        let a = c
            .get(&format!(
                "/v1/tasks/{task}/events?after_seq={after}&limit=1000"
            ))
            .await?;
        if !a.ok() {
            return Ok(Err(a.error_line()));
        }
        let page = a.body.as_array().cloned().unwrap_or_default();
        let n = page.len();
        if let Some(s) = page.last().and_then(|e| e["seq"].as_i64()) {
            after = s;
        }
        all.extend(page);
        if n < 1000 {
            return Ok(Ok(all));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_read_as_key_value_pairs() {
        let mut out = Vec::new();
        logfmt(
            &json!({"resource": "db", "actions": ["read", "write"], "policy_ids": [],
                "why": "fix it", "auth": {"method": "bearer"}, "code": null,
                "groups": [{"group": "g", "quorum": 1}], "ttl_secs": 600}),
            "",
            &mut out,
        );
        let line = out.join(" ");
        assert!(!line.contains('{') && !line.contains('['), "{line}");
        for part in [
            "resource=db",
            "actions=read,write",
            "why=\"fix it\"",
            "auth.method=bearer",
            "groups.0.group=g",
            "ttl_secs=600",
        ] {
            assert!(line.contains(part), "{part} in {line}");
        }
    }
}
