//! `latch lease`: list a task's leases, renew one (fresh policy evaluation), revoke one.

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{Value, json};

use super::{Conn, secs};
use crate::render::{print_access, print_answer, print_ids, txt};

#[derive(Subcommand)]
pub(crate) enum LeaseCmd {
    /// Leases of a task.
    List {
        /// Task id.
        task: String,
        /// Print only the lease ids, one per line (for `LEASE=$(latch lease list … --id-only)`).
        #[arg(long)]
        id_only: bool,
    },
    /// Renew (fresh policy evaluation).
    Renew {
        /// Lease id.
        id: String,
        /// TTL, e.g. `10m`.
        #[arg(long, value_parser = crate::human::duration_arg, value_name = "DURATION")]
        ttl: Option<humantime::Duration>,
    },
    /// Revoke a lease of yours now.
    ///
    /// Its credential stops working at once (introspection answers inactive), and the
    /// target-side account, token or certificate is revoked, retried until it succeeds.
    Revoke {
        /// Lease id.
        id: String,
    },
}

/// Runs `latch lease …`.
///
/// # Errors
/// An unreachable broker.
pub(crate) async fn run(cmd: LeaseCmd, conn: &Conn) -> Result<ExitCode, String> {
    let c = conn.workload_client()?;
    let a = match cmd {
        LeaseCmd::List { task, id_only } => {
            let a = c.get(&format!("/v1/tasks/{task}/leases")).await?;
            if id_only && !conn.json {
                return Ok(print_ids(&a, "/id"));
            }
            a
        }
        LeaseCmd::Renew { id, ttl } => {
            let mut a = c
                .post(
                    &format!("/v1/leases/{id}/renew"),
                    &json!({"ttl_secs": secs(ttl)}),
                )
                .await?;
            if a.ok() {
                super::checks::clamp_notice(secs(ttl), &mut a.body, crate::human::now_unix(), true);
            }
            a
        }
        LeaseCmd::Revoke { id } => {
            c.post(&format!("/v1/leases/{id}/revoke"), &json!({}))
                .await?
        }
    };
    Ok(print_answer(conn.json, &a, |b| match b.as_array() {
        Some(v) if v.is_empty() => println!(
            "no leases in this task (a granted request creates one: `latch request TASK \
             --resource R --action A`)"
        ),
        Some(v) => v.iter().for_each(print_lease),
        None if b.get("credential").is_some() => print_access(b),
        None => println!(
            "lease {} is now {}",
            txt(&b["id"], "?"),
            crate::human::status_word(&txt(&b["state"], "?"))
        ),
    }))
}

/// One line per lease.
fn print_lease(l: &Value) {
    println!(
        "{}  {:<13} {} {} expires={} renewals={}",
        txt(&l["id"], "?"),
        txt(&l["state"], "?"),
        txt(&l["resource_id"], "?"),
        crate::human::list(&l["actions"], "-"),
        crate::human::when(&l["expires_at_unix_secs"], "?"),
        txt(&l["renewals"], "?")
    );
}
