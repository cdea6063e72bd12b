//! `latch task`: open, show (or its timeline), report a tool use, list, complete, cancel.

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{Value, json};

use super::{Conn, audit, secs};
use crate::client::{Answer, Client};
use crate::render::{print_answer, print_ids, safe_json, txt};

#[derive(Subcommand)]
pub(crate) enum TaskCmd {
    /// Open a task.
    Open {
        /// Purpose.
        #[arg(long)]
        purpose: String,
        /// Environment.
        #[arg(long)]
        environment: String,
        /// Repository (default: the workload identity's).
        #[arg(long)]
        repository: Option<String>,
        /// Branch (default: the workload identity's).
        #[arg(long)]
        branch: Option<String>,
        /// TTL, e.g. `1h`.
        #[arg(long, value_parser = crate::human::duration_arg, value_name = "DURATION")]
        ttl: Option<humantime::Duration>,
        /// Print only the new task's id (for `TASK=$(latch task open … --id-only)`).
        #[arg(long)]
        id_only: bool,
    },
    /// Show a task.
    Show {
        /// Task id.
        id: String,
        /// Print the task's whole story in order (its audit events) instead.
        #[arg(long)]
        timeline: bool,
        /// Wait (up to DURATION, default 1h) until the task is no longer open, showing one
        /// status line on stderr, then show it.
        #[arg(long, value_name = "DURATION", num_args = 0..=1, default_missing_value = "1h",
              value_parser = crate::human::duration_arg, conflicts_with = "timeline")]
        wait: Option<humantime::Duration>,
    },
    /// Report a use of a tool in a task (recorded as a `tool.used` audit event).
    Event {
        /// Task id.
        id: String,
        /// Tool name, e.g. `psql`.
        #[arg(long)]
        tool: String,
        /// What it acted on.
        #[arg(long)]
        target: Option<String>,
        /// `ok`, `error`, `denied`, …
        #[arg(long, default_value = "ok")]
        outcome: String,
        /// Lease whose credential was used.
        #[arg(long)]
        lease: Option<String>,
        /// Attribute `key=value` (repeat).
        #[arg(long = "attr")]
        attrs: Vec<String>,
    },
    /// List your tasks.
    List,
    /// Complete a task (revokes every lease).
    Complete {
        /// Task id.
        id: String,
    },
    /// Cancel a task (revokes every lease).
    Cancel {
        /// Task id.
        id: String,
    },
}

/// Runs `latch task …`.
///
/// # Errors
/// An unreachable broker, or a malformed `--attr`.
pub(crate) async fn run(cmd: TaskCmd, conn: &Conn) -> Result<ExitCode, String> {
    let c = conn.workload_client()?;
    let a = match cmd {
        TaskCmd::Open {
            purpose,
            environment,
            repository,
            branch,
            ttl,
            id_only,
        } => {
            super::checks::environment(&c, &environment).await?;
            let a = c
                .post(
                    "/v1/tasks",
                    &json!({"purpose": purpose, "environment": environment,
                        "repository": repository, "branch": branch, "ttl_secs": secs(ttl)}),
                )
                .await?;
            if id_only && !conn.json {
                return Ok(print_ids(&a, "/id"));
            }
            a
        }
        TaskCmd::Show {
            id, timeline: true, ..
        } => return timeline(&c, &id, conn.json).await,
        TaskCmd::Show { id, wait, .. } => {
            let a = c.get(&format!("/v1/tasks/{id}")).await?;
            match wait {
                Some(w) => until_ended(&c, &id, a, w.into()).await?,
                None => a,
            }
        }
        TaskCmd::Event {
            id,
            tool,
            target,
            outcome,
            lease,
            attrs,
        } => {
            let a = report_event(&c, &id, &tool, target, &outcome, lease, &attrs).await?;
            return Ok(print_answer(conn.json, &a, |b| {
                println!(
                    "recorded: seq {} {}",
                    txt(&b["seq"], "?"),
                    txt(&b["id"], "?")
                )
            }));
        }
        TaskCmd::List => c.get("/v1/tasks").await?,
        TaskCmd::Complete { id } => {
            c.post(&format!("/v1/tasks/{id}/complete"), &json!({}))
                .await?
        }
        TaskCmd::Cancel { id } => {
            c.post(&format!("/v1/tasks/{id}/cancel"), &json!({}))
                .await?
        }
    };
    Ok(print_answer(conn.json, &a, print_tasks))
}

/// `latch task show --wait`: polls the task every two seconds while it is open, with one
/// status line on stderr (rewritten in place on a terminal), until it ends or `wait` passes.
async fn until_ended(
    c: &Client,
    id: &str,
    mut a: Answer,
    wait: std::time::Duration,
) -> Result<Answer, String> {
    use std::io::{IsTerminal, Write};
    let deadline = tokio::time::Instant::now() + wait;
    let tty = std::io::stderr().is_terminal();
    let mut shown = false;
    while a.ok() && a.body["state"] == "open" && tokio::time::Instant::now() < deadline {
        let line = format!(
            "latch: task {} is open, expires {}; waiting for it to end",
            txt(&a.body["id"], "?"),
            crate::human::when(&a.body["expires_at_unix_secs"], "?")
        );
        if tty {
            eprint!("\r{line}\x1b[K");
            let _ = std::io::stderr().flush();
        } else if !shown {
            eprintln!("{line}");
        }
        shown = true;
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        a = c.get(&format!("/v1/tasks/{id}")).await?;
    }
    if tty && shown {
        eprintln!();
    }
    Ok(a)
}

/// `latch task show --timeline`: the task's audit events in order, one line each (or as JSON).
async fn timeline(c: &Client, id: &str, json: bool) -> Result<ExitCode, String> {
    let events = match audit::task_timeline(c, id).await? {
        Ok(v) => v,
        Err(line) => {
            eprintln!("error: {line}");
            return Ok(ExitCode::from(1));
        }
    };
    for e in &events {
        if json {
            println!("{}", safe_json(&e.to_string()));
        } else {
            println!("{}", audit::render_event(e));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `latch task event`: `POST /v1/tasks/{id}/events` with the `--attr key=value` pairs.
async fn report_event(
    c: &Client,
    id: &str,
    tool: &str,
    target: Option<String>,
    outcome: &str,
    lease: Option<String>,
    attrs: &[String],
) -> Result<Answer, String> {
    let mut map = serde_json::Map::new();
    for kv in attrs {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("`--attr {kv}` is not key=value"))?;
        map.insert(k.to_owned(), Value::String(v.to_owned()));
    }
    c.post(
        &format!("/v1/tasks/{id}/events"),
        &json!({"tool": tool, "target": target,
            "outcome": outcome, "lease_id": lease, "attributes": map}),
    )
    .await
}

/// One line per task (a list, or the one task answered).
fn print_tasks(b: &Value) {
    let when = |v: &Value| crate::human::when(v, "?");
    let one = |t: &Value| {
        println!(
            "{}  {:<9} env={:<11} repo={} branch={} {}  {}",
            txt(&t["id"], "?"),
            txt(&t["state"], "?"),
            txt(&t["environment"], "?"),
            txt(&t["repository"], "-"),
            txt(&t["branch"], "-"),
            // An ended task shows when it ended, not an expiry that no longer applies.
            match t["ended_at_unix_secs"].is_i64() {
                true => format!("ended={}", when(&t["ended_at_unix_secs"])),
                false => format!("expires={}", when(&t["expires_at_unix_secs"])),
            },
            txt(&t["purpose"], "")
        )
    };
    match b.as_array() {
        Some(v) if v.is_empty() => println!(
            "no tasks for this token's run (`latch task open --purpose … --environment ENV` \
             opens one)"
        ),
        Some(v) => v.iter().for_each(one),
        None => one(b),
    }
}
