//! `latch dev`: development helpers (a token from the server's development issuer).
//!
//! A workload's tasks belong to its run (the token's `run_id`), so a token minted with a new
//! run id cannot see the tasks of the one before. `latch dev token` therefore keeps one run id
//! per shell: the first workload token minted from a shell (the parent process, told apart
//! from a later process with the same pid by its start time) gets a fresh `shell-…` id, stored
//! in `<config dir>/dev-runs.json`; later ones from the same shell reuse it, so renewing
//! `LATCH_TOKEN` keeps the tasks. `--run-id RUN` uses RUN instead (nothing stored);
//! `--new-run` starts a fresh run for this shell.

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::json;

use super::{Conn, secs};
use crate::client::Client;
use crate::render::print_answer;

#[derive(Subcommand)]
pub(crate) enum DevCmd {
    /// Mint a development token (the server's `[dev_issuer]` must be enabled).
    Token {
        /// `workload` or `human`.
        #[arg(long, default_value = "workload", value_parser = ["workload", "human"])]
        kind: String,
        /// Human id (human tokens; required with `--kind human`).
        #[arg(long, value_name = "ID", value_hint = clap::ValueHint::Other)]
        subject: Option<String>,
        /// Approver group (human tokens; repeat).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// `owner/name` (workload tokens).
        #[arg(long)]
        repository: Option<String>,
        /// Git ref (workload tokens), e.g. `refs/heads/main`.
        #[arg(long = "ref")]
        git_ref: Option<String>,
        /// GitHub environment the job is bound to.
        #[arg(long)]
        environment: Option<String>,
        /// Triggering event (`push`, `pull_request`).
        #[arg(long)]
        event_name: Option<String>,
        /// Human the workload acts for.
        #[arg(long)]
        actor: Option<String>,
        /// CI run id (workload tokens). Default: the run id kept for this shell, so a new token
        /// still sees the tasks opened with the last one.
        #[arg(long, conflicts_with = "new_run")]
        run_id: Option<String>,
        /// Start a new run for this shell (a fresh run id, kept for the next tokens): tasks of
        /// the earlier run are no longer visible with the new token.
        #[arg(long)]
        new_run: bool,
        /// Token lifetime, e.g. `10m`.
        #[arg(long, value_parser = crate::human::duration_arg, value_name = "DURATION")]
        ttl: Option<humantime::Duration>,
    },
}

/// Runs `latch dev token`: `POST /v1/dev/tokens` (no bearer token), printing the token.
///
/// # Errors
/// An unreachable broker.
pub(crate) async fn run(cmd: DevCmd, conn: &Conn) -> Result<ExitCode, String> {
    let DevCmd::Token {
        kind,
        subject,
        groups,
        repository,
        git_ref,
        environment,
        event_name,
        actor,
        run_id,
        new_run,
        ttl,
    } = cmd;
    if let Some(t) = secs(ttl).filter(|t| !(1..=3600).contains(t)) {
        return Err(format!(
            "--ttl {} is out of bounds: development tokens live 1s to 1h; pass --ttl 1h or less",
            crate::human::short_duration(t)
        ));
    }
    if kind == "human" && subject.as_deref().is_none_or(|s| s.trim().is_empty()) {
        return Err(
            "`latch dev token --kind human` needs --subject ID (the human's id), and --group \
             GROUP for each approver group"
                .to_owned(),
        );
    }
    let run_id = match (kind.as_str(), run_id) {
        ("workload", None) => Some(shell_run::run_id(new_run)?),
        (_, r) => r,
    };
    let c = Client::new(&conn.server, None);
    let a = c
        .post(
            "/v1/dev/tokens",
            &json!({"kind": kind, "subject": subject, "groups": groups, "repository": repository,
                "git_ref": git_ref, "environment": environment, "event_name": event_name, "actor": actor,
                "run_id": run_id, "ttl_secs": secs(ttl)}),
        )
        .await?;
    Ok(print_answer(conn.json, &a, |b| {
        println!("{}", b["token"].as_str().unwrap_or(""))
    }))
}

/// The run id kept per shell (see the module documentation).
mod shell_run {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    /// The parent process as a key: `PID:START` (its start time in clock ticks since boot, so
    /// a reused pid is another key), or `PID` where `/proc` is not there.
    fn parent_key() -> String {
        let ppid = nix::unistd::getppid().as_raw();
        match start_time(ppid) {
            Some(t) => format!("{ppid}:{t}"),
            None => ppid.to_string(),
        }
    }

    /// Field 22 of `/proc/PID/stat` (after the parenthesised command name, which may hold
    /// spaces).
    fn start_time(pid: i32) -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = &stat[stat.rfind(')')? + 2..];
        rest.split(' ').nth(19)?.parse().ok()
    }

    /// Whether the process a key names still runs (keys of ended shells are dropped).
    fn alive(key: &str) -> bool {
        let (pid, start) = key.split_once(':').unwrap_or((key, ""));
        match pid.parse::<i32>() {
            Ok(p) => start_time(p).map_or(start.is_empty(), |t| t.to_string() == start),
            Err(_) => false,
        }
    }

    fn path() -> Result<PathBuf, String> {
        Ok(crate::credentials::dir()?.join("dev-runs.json"))
    }

    /// The run id for tokens minted from this shell: the kept one, or (first time, or
    /// `fresh`) a new `shell-…` id, stored.
    ///
    /// # Errors
    /// The config directory cannot be found or written.
    pub(super) fn run_id(fresh: bool) -> Result<String, String> {
        let p = path()?;
        let mut runs: BTreeMap<String, String> = std::fs::read_to_string(&p)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let key = parent_key();
        if let (false, Some(r)) = (fresh, runs.get(&key)) {
            return Ok(r.clone());
        }
        let id = format!("shell-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        runs.retain(|k, _| alive(k));
        runs.insert(key, id.clone());
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)
                .map_err(|e| format!("cannot create {}: {e}; set LATCH_CONFIG_DIR", d.display()))?;
        }
        let text = serde_json::to_string_pretty(&runs).map_err(|e| e.to_string())?;
        std::fs::write(&p, text).map_err(|e| {
            format!(
                "cannot keep the run id in {}: {e}; pass --run-id RUN or set LATCH_CONFIG_DIR",
                p.display()
            )
        })?;
        eprintln!(
            "latch: run {id} started for this shell; later tokens from it reuse it (--new-run \
             starts another, --run-id picks one)"
        );
        Ok(id)
    }
}
