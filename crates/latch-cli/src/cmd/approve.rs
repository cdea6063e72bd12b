//! `latch pending`, `latch approve` and `latch deny`: the approver's side (human token).

use std::process::ExitCode;

use clap::Args;
use serde_json::{Value, json};

use super::Conn;
use crate::render::{print_answer, txt};

// No doc comment: clap would take it as the `about` of `approve` and `deny`.
#[derive(Args)]
pub(crate) struct Vote {
    /// Request id.
    request: String,
    /// Digest of the request, as shown by `latch pending`.
    #[arg(long)]
    digest: String,
    /// Why you approve or deny (required; recorded in the audit trail with your verdict).
    #[arg(long)]
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

/// One pending approval: request, what it asks, its task, and who must approve. Every value
/// is escaped ([`txt`]): repository, branch and purpose are the workload's to choose.
fn print_pending(p: &Value) {
    let r = &p["request"];
    let t = &p["task"];
    println!(
        "request {}  task {}",
        txt(&r["id"], "?"),
        txt(&t["id"], "?")
    );
    println!(
        "  {} on {} for {}s — {}",
        txt(&r["actions"], "[]"),
        txt(&r["resource_id"], "?"),
        txt(&r["ttl_secs"], "?"),
        txt(&r["justification"], "")
    );
    println!(
        "  task: {} (env {}, repo {}, branch {}, for {})",
        txt(&t["purpose"], ""),
        txt(&t["environment"], "?"),
        txt(&t["repository"], "-"),
        txt(&t["branch"], "-"),
        txt(&t["on_behalf_of"], "-")
    );
    println!(
        "  needs: {}  digest: {}",
        txt(&r["decision"]["groups"], "[]"),
        txt(&r["digest"], "")
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
            txt(&b["id"], "?"),
            txt(&b["state"], "?")
        );
    }))
}
