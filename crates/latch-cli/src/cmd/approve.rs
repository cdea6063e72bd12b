//! `latch pending`, `latch approve` and `latch deny`: the approver's side (human token).

use std::process::ExitCode;

use clap::Args;
use serde_json::{Value, json};

use latch_core::audit::escape_text;

use super::Conn;
use crate::render::{print_answer, txt};

// No doc comment: clap would take it as the `about` of `approve` and `deny`.
#[derive(Args)]
pub(crate) struct Vote {
    /// Request id.
    request: String,
    /// Digest of the request, as shown by `latch pending`. Without it, the request is fetched
    /// and shown as `latch pending` shows it, and on a terminal you confirm it; the vote then
    /// carries the digest of what was shown.
    #[arg(long)]
    digest: Option<String>,
    /// Without `--digest` and without a terminal: vote on the request as fetched and printed,
    /// without asking (the broker still refuses the vote if the request changed since).
    #[arg(long, short = 'y')]
    yes: bool,
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
        let list = b.as_array().cloned().unwrap_or_default();
        if list.is_empty() {
            println!(
                "no requests are waiting for your vote (a request that needs approval from one \
                 of your groups appears here)"
            );
        }
        for p in list {
            print_pending(&p);
        }
    }))
}

/// One pending approval: request, what it asks, its task, and who must approve. Every value
/// is escaped ([`txt`]): repository, branch and purpose are the workload's to choose.
fn print_pending(p: &Value) {
    print!("{}", pending_text(p));
}

/// [`print_pending`]'s four lines.
fn pending_text(p: &Value) -> String {
    let r = &p["request"];
    let t = &p["task"];
    format!(
        "request {}  task {}\n  {} on {} for {}{}\n  task: {} (env {}, repo {}, branch {}, \
         for {})\n  needs: {}  digest: {}\n",
        txt(&r["id"], "?"),
        txt(&t["id"], "?"),
        crate::human::list(&r["actions"], "-"),
        txt(&r["resource_id"], "?"),
        crate::human::short_duration(r["ttl_secs"].as_i64().unwrap_or(0)),
        match txt(&r["justification"], "") {
            j if j.is_empty() => String::new(),
            j => format!(" — {j}"),
        },
        txt(&t["purpose"], ""),
        txt(&t["environment"], "?"),
        txt(&t["repository"], "-"),
        txt(&t["branch"], "-"),
        txt(&t["on_behalf_of"], "-"),
        crate::cmd::wait::groups_text(&r["decision"]["groups"]),
        txt(&r["digest"], "")
    )
}

/// Why `v.request` is not in the caller's pending list, in the broker's own words when it has
/// them: the vote is sent with a digest no request has, and the broker checks the request's
/// state (`request_not_found`, `409 task_ended`, `409 request_expired`, `409
/// request_not_pending`) before the digest, so the answer names the state and nothing can be
/// recorded. A request still pending for other approvers answers a digest mismatch: then the
/// generic sentence.
async fn not_votable(v: &Vote, verb: &str) -> String {
    let generic = format!(
        "request {} is not among the requests you may vote on (see `latch pending`): it does \
         not exist, is not pending, or needs other approvers",
        escape_text(&v.request)
    );
    let probe = json!({"digest": "0".repeat(64), "reason": "state check"});
    let path = format!("/v1/approvals/{}/{verb}", v.request);
    match v.conn.client().post(&path, &probe).await {
        Ok(a) if !a.ok() && a.code() != Some("approval_digest_mismatch") => {
            format!("{} (see `latch pending`)", a.error_line())
        }
        _ => generic,
    }
}

/// Without `--digest`: fetches the request from the caller's pending list, shows it as
/// `latch pending` does (on stderr with `--json`), and on a terminal asks to confirm `verb`.
/// Answers the digest of what was shown, or `None` when the human declined.
///
/// # Errors
/// No terminal and no `--yes`; an unreachable broker; a request not in the caller's pending
/// list; an unreadable answer.
///
/// # Security
/// The digest voted with is the one of the request printed, never one typed or fetched later;
/// the broker refuses the vote if the request is no longer exactly that.
async fn shown_digest(v: &Vote, verb: &str) -> Result<Option<String>, String> {
    use std::io::{BufRead, IsTerminal, Write};
    let tty = std::io::stdin().is_terminal();
    if !tty && !v.yes {
        return Err(format!(
            "`latch {verb}` without --digest needs a terminal to confirm on; pass --digest (as \
             `latch pending` shows it) or --yes to {verb} the request as fetched and printed"
        ));
    }
    let a = v.conn.client().get("/v1/approvals/pending").await?;
    if !a.ok() {
        return Err(a.error_line());
    }
    let Some(p) = a
        .body
        .as_array()
        .and_then(|l| l.iter().find(|p| p["request"]["id"] == v.request.as_str()))
    else {
        return Err(not_votable(v, verb).await);
    };
    let Some(digest) = p["request"]["digest"].as_str() else {
        return Err("the broker's pending list carries no digest".to_owned());
    };
    let shown = pending_text(p);
    if v.conn.json {
        eprint!("{shown}");
    } else {
        print!("{shown}");
    }
    if v.yes {
        return Ok(Some(digest.to_owned()));
    }
    eprint!("{} this request? [y/N] ", capitalised(verb));
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the answer: {e}"))?;
    let yes = matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes");
    Ok(yes.then(|| digest.to_owned()))
}

fn capitalised(verb: &str) -> String {
    let mut c = verb.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// Runs `latch approve` or `latch deny` (`verb`): `POST /v1/approvals/{request}/{verb}` with
/// `--digest`, or with the digest of the request shown and confirmed ([`shown_digest`]).
///
/// # Errors
/// An unreachable broker; without `--digest`, what [`shown_digest`] refuses.
pub(crate) async fn vote(v: Vote, verb: &str) -> Result<ExitCode, String> {
    let digest = match &v.digest {
        Some(d) => d.clone(),
        None => match shown_digest(&v, verb).await? {
            Some(d) => d,
            None => {
                eprintln!("Nothing done.");
                return Ok(ExitCode::from(1));
            }
        },
    };
    let a = v
        .conn
        .client()
        .post(
            &format!("/v1/approvals/{}/{verb}", v.request),
            &json!({"digest": digest, "reason": v.reason}),
        )
        .await?;
    if !v.conn.json && a.code() == Some("approval_digest_mismatch") {
        // The next step names this request and this verb, not the placeholders.
        let line = a.error_line().replace(
            "`latch approve REQ --reason …` (or `latch deny`)",
            &format!("`latch {verb} {} --reason …`", escape_text(&v.request)),
        );
        eprintln!("{} {line}", crate::human::error_prefix());
        return Ok(crate::render::exit_code(&a));
    }
    Ok(print_answer(v.conn.json, &a, |b| {
        println!(
            "request {} is now {}",
            txt(&b["id"], "?"),
            txt(&b["state"], "?")
        );
    }))
}
