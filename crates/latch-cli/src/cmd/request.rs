//! `latch request` (ask for access in a task) and `latch claim` (collect the credential of an
//! approved request).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use serde_json::{Value, json};

use super::wait::until_decided;
use super::{Conn, secs};
use crate::render::{print_access, print_answer, print_ids};

// No doc comments on the argument structs: clap would take them as the command's `about`.
#[derive(Args)]
pub(crate) struct RequestArgs {
    /// Task id.
    task: String,
    /// Resource id.
    #[arg(long)]
    resource: String,
    /// Action (repeat for several).
    #[arg(long = "action", required = true)]
    actions: Vec<String>,
    /// TTL, e.g. `10m`.
    #[arg(long, value_parser = crate::human::duration_arg, value_name = "DURATION")]
    ttl: Option<humantime::Duration>,
    /// Why (shown to approvers).
    #[arg(long, default_value = "")]
    justification: String,
    /// Provider parameter `KEY=VALUE` (repeatable). VALUE is taken as JSON when it parses as
    /// an array, object, number, boolean or null (`principals='["deploy"]'`), else as a string.
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// Public key file: OpenSSH format sets `params.public_key` (ssh), PEM sets
    /// `params.public_key_pem` (x509).
    #[arg(long, value_name = "FILE")]
    public_key: Option<PathBuf>,
    /// Certificate request (PEM) file: sets `params.csr_pem` (x509).
    #[arg(long, value_name = "FILE")]
    csr: Option<PathBuf>,
    /// Print only the request's id (for `REQ=$(latch request … --id-only)`); the exit code
    /// still says granted (0), denied (3) or pending (4). A granted credential is not printed.
    #[arg(long)]
    id_only: bool,
    /// Wait for approvers when the request needs them (up to DURATION, default 10m), showing
    /// one status line on stderr, then collect the credential; exit 4 if still pending.
    #[arg(long, value_name = "DURATION", num_args = 0..=1, default_missing_value = "10m",
          value_parser = crate::human::duration_arg)]
    wait: Option<humantime::Duration>,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub(crate) struct ClaimArgs {
    /// Task id.
    task: String,
    /// Request id.
    request: String,
    /// Wait for approvers when the request needs them (up to DURATION, default 10m), showing
    /// one status line on stderr, until it is granted or denied; exit 4 if still pending.
    #[arg(long, value_name = "DURATION", num_args = 0..=1, default_missing_value = "10m",
          value_parser = crate::human::duration_arg)]
    wait: Option<humantime::Duration>,
    #[command(flatten)]
    conn: Conn,
}

/// Runs `latch request`: `POST /v1/tasks/{task}/requests`.
///
/// # Errors
/// Malformed or repeated parameters, an unreadable key or CSR file, an unreachable broker.
pub(crate) async fn run(args: RequestArgs) -> Result<ExitCode, String> {
    let params = request_params(
        &args.params,
        args.public_key.as_deref(),
        args.csr.as_deref(),
    )?;
    let mut body = json!({"resource": args.resource, "actions": args.actions,
        "ttl_secs": secs(args.ttl), "justification": args.justification});
    if !params.is_empty() {
        body["params"] = Value::Object(params);
    }
    let c = args.conn.workload_client()?;
    let a = c
        .post(&format!("/v1/tasks/{}/requests", args.task), &body)
        .await?;
    let mut a = match args.wait {
        Some(w) => until_decided(&c, &args.task, &args.resource, a, w.into()).await?,
        None => a,
    };
    crate::cmd::checks::clamp_notice(secs(args.ttl), &mut a.body, crate::human::now_unix(), false);
    if args.id_only && !args.conn.json {
        return Ok(print_ids(&a, "/request/id"));
    }
    Ok(print_answer(args.conn.json, &a, print_access))
}

/// Runs `latch claim`: `POST /v1/tasks/{task}/requests/{request}/claim`.
///
/// # Errors
/// An unreachable broker.
pub(crate) async fn claim(args: ClaimArgs) -> Result<ExitCode, String> {
    let c = args.conn.workload_client()?;
    let a = c
        .post(
            &format!("/v1/tasks/{}/requests/{}/claim", args.task, args.request),
            &json!({}),
        )
        .await?;
    let a = match args.wait {
        Some(w) => {
            let what = a.body["request"]["resource_id"]
                .as_str()
                .unwrap_or("access")
                .to_owned();
            until_decided(&c, &args.task, &what, a, w.into()).await?
        }
        None => a,
    };
    Ok(print_answer(args.conn.json, &a, print_access))
}

/// The `params` of `latch request` from `--param`, `--public-key` and `--csr`.
fn request_params(
    pairs: &[String],
    public_key: Option<&Path>,
    csr: Option<&Path>,
) -> Result<serde_json::Map<String, Value>, String> {
    let mut out = serde_json::Map::new();
    let mut set = |k: &str, v: Value| {
        if out.insert(k.to_owned(), v).is_some() {
            return Err(format!("parameter {k:?} given twice"));
        }
        Ok(())
    };
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| format!("--param {p:?}: expected KEY=VALUE"))?;
        let v = match serde_json::from_str::<Value>(v) {
            Ok(j) if !j.is_string() => j,
            _ => Value::String(v.to_owned()),
        };
        set(k, v)?;
    }
    let read = |f: &Path| {
        std::fs::read_to_string(f).map_err(|e| format!("cannot read {}: {e}", f.display()))
    };
    if let Some(f) = public_key {
        let key = read(f)?;
        let name = if key.trim_start().starts_with("-----BEGIN") {
            "public_key_pem"
        } else {
            "public_key"
        };
        set(name, Value::String(key.trim().to_owned()))?;
    }
    if let Some(f) = csr {
        set("csr_pem", Value::String(read(f)?))?;
    }
    Ok(out)
}
