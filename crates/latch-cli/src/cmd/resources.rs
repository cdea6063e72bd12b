//! `latch resources`: what may be requested, one line per resource (or `--json`).

use std::process::ExitCode;

use latch_core::audit::escape_text;
use serde_json::Value;

use crate::cmd::Conn;
use crate::human::short_duration;

/// Lists the broker's resources: id, environment (`*` marks production), kind, sensitivity,
/// actions and TTL bounds.
///
/// # Errors
/// The broker cannot be reached, or refuses the token (the message names the next step:
/// `LATCH_TOKEN`, `--token` or `latch login`).
pub(crate) async fn run(conn: &Conn) -> Result<ExitCode, String> {
    let a = conn
        .client()
        .get("/v1/resources")
        .await
        .map_err(|e| escape_text(&e).into_owned())?;
    if !a.ok() && conn.json {
        crate::render::print_json(&a.body);
        return Ok(crate::render::exit_code(&a));
    }
    if !a.ok() {
        return Err(a.error_line());
    }
    if conn.json {
        println!("{}", a.body);
        return Ok(ExitCode::SUCCESS);
    }
    let rows = a.body.as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        println!("no resources are configured");
        return Ok(ExitCode::SUCCESS);
    }
    let t = |r: &Value, k: &str| escape_text(r[k].as_str().unwrap_or("")).into_owned();
    let lines: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            let env = t(r, "environment")
                + if r["production"].as_bool() == Some(true) {
                    "*"
                } else {
                    ""
                };
            let actions: Vec<String> = r["actions"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(|s| escape_text(s).into_owned())
                        .collect()
                })
                .unwrap_or_default();
            let ttl = format!(
                "{} (max {})",
                short_duration(r["default_ttl_secs"].as_i64().unwrap_or(0)),
                short_duration(r["max_ttl_secs"].as_i64().unwrap_or(0))
            );
            [
                t(r, "id"),
                env,
                t(r, "kind"),
                t(r, "sensitivity"),
                actions.join(","),
                ttl,
            ]
        })
        .collect();
    let head = [
        "RESOURCE",
        "ENVIRONMENT",
        "KIND",
        "SENSITIVITY",
        "ACTIONS",
        "TTL",
    ];
    let mut width = head.map(str::len);
    for l in &lines {
        for (w, c) in width.iter_mut().zip(l) {
            *w = (*w).max(c.chars().count());
        }
    }
    let print = |cells: [&str; 6]| {
        let mut line = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i < 5 {
                line.push_str(&format!("{c:<w$}  ", w = width[i]));
            } else {
                line.push_str(c);
            }
        }
        println!("{}", line.trim_end());
    };
    print(head);
    for l in &lines {
        print([&l[0], &l[1], &l[2], &l[3], &l[4], &l[5]]);
    }
    println!("(* production: requests usually need approval; policy decides each one)");
    Ok(ExitCode::SUCCESS)
}
