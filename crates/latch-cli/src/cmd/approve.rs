//! `latch pending`, `latch approve` and `latch deny`: the approver's side (human token).

use std::process::ExitCode;

use clap::Args;
use serde_json::{Value, json};

use super::Conn;
use crate::render::print_answer;

// No doc comment: clap would take it as the `about` of `approve` and `deny`.
#[derive(Args)]
pub(crate) struct Vote {
    /// Request id.
    request: String,
    /// Digest of the request, as shown by `latch pending`.
    #[arg(long)]
    digest: String,
    /// Reason.
    #[arg(long, default_value = "")]
    reason: String,
    #[command(flatten)]
    conn: Conn,
}

/// Runs `latch pending`: the requests the caller may vote on, four lines each.
///
/// # Errors
/// An unreachable broker.
pub(crate) async fn pending(conn: &Conn) -> Result<ExitCode, String> {
    let a = conn.client().get("/v1/approvals/pending").await?;
    Ok(print_answer(conn.json, &a, |b| {
        for p in b.as_array().cloned().unwrap_or_default() {
            print_pending(&p);
        }
    }))
}

/// One pending approval: request, what it asks, its task, and who must approve.
fn print_pending(p: &Value) {
    let r = &p["request"];
    let t = &p["task"];
    println!(
        "request {}  task {}",
        r["id"].as_str().unwrap_or("?"),
        t["id"].as_str().unwrap_or("?")
    );
    println!(
        "  {} on {} for {}s — {}",
        r["actions"],
        r["resource_id"].as_str().unwrap_or("?"),
        r["ttl_secs"],
        r["justification"].as_str().unwrap_or("")
    );
    println!(
        "  task: {} (env {}, repo {}, branch {}, for {})",
        t["purpose"].as_str().unwrap_or(""),
        t["environment"].as_str().unwrap_or("?"),
        t["repository"].as_str().unwrap_or("-"),
        t["branch"].as_str().unwrap_or("-"),
        t["on_behalf_of"].as_str().unwrap_or("-")
    );
    println!(
        "  needs: {}  digest: {}",
        r["decision"]["groups"],
        r["digest"].as_str().unwrap_or("")
    );
}

/// Runs `latch approve` or `latch deny` (`verb`): `POST /v1/approvals/{request}/{verb}`.
///
/// # Errors
/// An unreachable broker.
pub(crate) async fn vote(v: Vote, verb: &str) -> Result<ExitCode, String> {
    let a = v
        .conn
        .client()
        .post(
            &format!("/v1/approvals/{}/{verb}", v.request),
            &json!({"digest": v.digest, "reason": v.reason}),
        )
        .await?;
    Ok(print_answer(v.conn.json, &a, |b| {
        println!(
            "request {} is now {}",
            b["id"].as_str().unwrap_or("?"),
            b["state"].as_str().unwrap_or("?")
        );
    }))
}
