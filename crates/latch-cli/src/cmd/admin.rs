//! `latch admin`: the operators' side (a human token of `[admin] groups`): open tasks and live
//! leases of every workload, revoke a lease, cancel a task, and the kill switch (`freeze`,
//! `unfreeze`, `freezes`). Every action takes a required `--reason`, recorded with the
//! operator's id in the audit trail.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::Conn;
use crate::render::{print_answer, txt};

// No doc comment: clap would take it as the `about` of `tasks` and `leases`.
#[derive(Args)]
pub(crate) struct Filters {
    /// Only this workload principal (`iss#sub`).
    #[arg(long)]
    workload: Option<String>,
    /// Only this repository (`owner/name`).
    #[arg(long)]
    repository: Option<String>,
    /// Only this resource.
    #[arg(long)]
    resource: Option<String>,
    /// Only this environment.
    #[arg(long)]
    environment: Option<String>,
    /// Paging: the `next` cursor a previous page printed.
    #[arg(long)]
    after: Option<String>,
    /// Page size (default 100, at most 500).
    #[arg(long)]
    limit: Option<u32>,
}

#[derive(Subcommand)]
pub(crate) enum AdminCmd {
    /// Open tasks of every workload.
    Tasks(Filters),
    /// Live leases of every workload.
    Leases(Filters),
    /// Revoke a lease of any workload.
    Revoke {
        /// Lease id.
        lease: String,
        /// Why (required; recorded in the audit trail).
        #[arg(long)]
        reason: String,
    },
    /// Cancel a task of any workload (every lease revoked, its requests closed).
    Cancel {
        /// Task id.
        task: String,
        /// Why (required; recorded in the audit trail).
        #[arg(long)]
        reason: String,
    },
    /// Kill switch: revoke every live credential in a scope and freeze new grants there until
    /// `unfreeze`.
    Freeze {
        /// Everything.
        #[arg(long, conflicts_with_all = ["workload", "repository", "resource", "human"], required_unless_present_any = ["workload", "repository", "resource", "human"])]
        all: bool,
        /// One workload principal (`iss#sub`).
        #[arg(long, conflicts_with_all = ["repository", "resource", "human"])]
        workload: Option<String>,
        /// One repository (`owner/name`).
        #[arg(long, conflicts_with_all = ["resource", "human"])]
        repository: Option<String>,
        /// One resource.
        #[arg(long, conflicts_with = "human")]
        resource: Option<String>,
        /// Every task acting for one human (their `on_behalf_of` id).
        #[arg(long)]
        human: Option<String>,
        /// Why (required; recorded in the audit trail).
        #[arg(long)]
        reason: String,
    },
    /// Lift a freeze: policy decides in its scope again.
    Unfreeze {
        /// Freeze id (`frz_…`).
        id: String,
        /// Why (required; recorded in the audit trail).
        #[arg(long)]
        reason: String,
    },
    /// Active freezes.
    Freezes,
}

/// Runs `latch admin …`.
///
/// # Errors
/// An unreachable broker.
pub(crate) async fn run(cmd: AdminCmd, conn: &Conn) -> Result<ExitCode, String> {
    let c = conn.client();
    let (a, print): (_, fn(&Value)) = match cmd {
        AdminCmd::Tasks(f) => (c.get(&list_path("tasks", &f)?).await?, print_task_page),
        AdminCmd::Leases(f) => (c.get(&list_path("leases", &f)?).await?, print_lease_page),
        AdminCmd::Revoke { lease, reason } => (
            c.post(
                &format!("/v1/admin/leases/{lease}/revoke"),
                &json!({"reason": reason}),
            )
            .await?,
            print_lease,
        ),
        AdminCmd::Cancel { task, reason } => (
            c.post(
                &format!("/v1/admin/tasks/{task}/cancel"),
                &json!({"reason": reason}),
            )
            .await?,
            print_task,
        ),
        AdminCmd::Freeze {
            all,
            workload,
            repository,
            resource,
            human,
            reason,
        } => {
            let scope = match (all, workload, repository, resource, human) {
                (_, Some(v), _, _, _) => json!({"kind": "workload", "value": v}),
                (_, _, Some(v), _, _) => json!({"kind": "repository", "value": v}),
                (_, _, _, Some(v), _) => json!({"kind": "resource", "value": v}),
                (_, _, _, _, Some(v)) => json!({"kind": "human", "value": v}),
                _ => json!({"kind": "all"}),
            };
            (
                c.post(
                    "/v1/admin/freezes",
                    &json!({"scope": scope, "reason": reason}),
                )
                .await?,
                print_report,
            )
        }
        AdminCmd::Unfreeze { id, reason } => (
            c.post(
                &format!("/v1/admin/freezes/{id}/lift"),
                &json!({"reason": reason}),
            )
            .await?,
            print_freeze,
        ),
        AdminCmd::Freezes => (c.get("/v1/admin/freezes").await?, print_freezes),
    };
    Ok(print_answer(conn.json, &a, print))
}

/// `/v1/admin/{what}?…` with the filters given, query-encoded.
fn list_path(what: &str, f: &Filters) -> Result<String, String> {
    let mut url = reqwest::Url::parse("http://latch.invalid/").map_err(|e| e.to_string())?;
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in [
            ("workload", &f.workload),
            ("repository", &f.repository),
            ("resource", &f.resource),
            ("environment", &f.environment),
            ("after", &f.after),
        ] {
            if let Some(v) = v {
                q.append_pair(k, v);
            }
        }
        if let Some(n) = f.limit {
            q.append_pair("limit", &n.to_string());
        }
    }
    Ok(match url.query() {
        Some(q) if !q.is_empty() => format!("/v1/admin/{what}?{q}"),
        _ => format!("/v1/admin/{what}"),
    })
}

fn print_next(b: &Value) {
    if let Some(n) = b["next"].as_str() {
        println!("more: --after {}", txt(&Value::String(n.to_owned()), ""));
    }
}

fn print_task(t: &Value) {
    println!(
        "{}  {:<9} {} env={} repo={} branch={} expires={}  {}",
        txt(&t["id"], "?"),
        txt(&t["state"], "?"),
        txt(&t["owner"]["id"], "?"),
        txt(&t["environment"], "?"),
        txt(&t["repository"], "-"),
        txt(&t["branch"], "-"),
        crate::human::when(&t["expires_at_unix_secs"], "?"),
        txt(&t["purpose"], "")
    );
}

fn print_task_page(b: &Value) {
    if crate::human::is_empty_list(&b["items"]) {
        println!("no open tasks match (agents open them with `latch task open`)");
    }
    b["items"]
        .as_array()
        .into_iter()
        .flatten()
        .for_each(print_task);
    print_next(b);
}

fn print_lease(l: &Value) {
    println!(
        "{}  {:<13} {} {} task={} expires={}",
        txt(&l["id"], "?"),
        txt(&l["state"], "?"),
        txt(&l["resource_id"], "?"),
        crate::human::list(&l["actions"], "-"),
        txt(&l["task_id"], "?"),
        crate::human::when(&l["expires_at_unix_secs"], "?")
    );
}

fn print_lease_page(b: &Value) {
    if crate::human::is_empty_list(&b["items"]) {
        println!("no live leases match (a granted request creates one)");
    }
    for item in b["items"].as_array().into_iter().flatten() {
        print_lease(&item["lease"]);
        println!(
            "    {} env={} repo={} branch={}",
            txt(&item["principal_id"], "?"),
            txt(&item["environment"], "?"),
            txt(&item["repository"], "-"),
            txt(&item["branch"], "-")
        );
    }
    print_next(b);
}

fn print_freeze(f: &Value) {
    let scope = match f["scope"]["value"].as_str() {
        Some(v) => format!(
            "{}:{}",
            txt(&f["scope"]["kind"], "?"),
            txt(&Value::String(v.into()), "")
        ),
        None => txt(&f["scope"]["kind"], "?"),
    };
    println!(
        "{}  {:<7} {} by {}: {}",
        txt(&f["id"], "?"),
        txt(&f["state"], "?"),
        scope,
        txt(&f["engaged_by"], "?"),
        txt(&f["reason"], "")
    );
}

fn print_freezes(b: &Value) {
    match b.as_array() {
        Some(v) if v.is_empty() => {
            println!("no freezes in force (`latch admin freeze` engages one)");
        }
        Some(v) => v.iter().for_each(print_freeze),
        None => print_freeze(b),
    }
}

fn print_report(b: &Value) {
    print_freeze(&b["freeze"]);
    println!(
        "revoked {} live credential(s); {} revocation(s) still pending at their target (retried)",
        txt(&b["leases_revoked"], "0"),
        txt(&b["revocations_pending"], "0")
    );
}
