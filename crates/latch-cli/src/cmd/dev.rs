//! `latch dev`: development helpers (a token from the server's development issuer).

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
        #[arg(long, default_value = "workload")]
        kind: String,
        /// Human id (human tokens).
        #[arg(long)]
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
        /// CI run id.
        #[arg(long)]
        run_id: Option<String>,
        /// Token lifetime, e.g. `10m`.
        #[arg(long)]
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
        ttl,
    } = cmd;
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
