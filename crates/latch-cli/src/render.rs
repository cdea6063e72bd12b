//! Printing API answers for people (or as JSON with `--json`), and the exit code an answer
//! maps to.

use std::process::ExitCode;

use serde_json::Value;

use crate::client::Answer;

/// Prints `a` and answers its exit code.
///
/// With `json`, the raw body (pretty JSON); else `human` renders a success or an access
/// answer (a body with a `status`), and other errors print `error: <code> (<status>): …` to
/// stderr. Exit codes: 3 for `"status": "denied"`, 4 for `"pending"`, 0 for another 2xx, else 1.
pub(crate) fn print_answer(json: bool, a: &Answer, human: impl FnOnce(&Value)) -> ExitCode {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&a.body).unwrap_or_default()
        );
    } else if a.ok() {
        human(&a.body);
    } else if a.body.get("status").is_none() {
        eprintln!("error: {}", a.error_line());
    } else {
        human(&a.body);
    }
    match (a.status, a.body.get("status").and_then(Value::as_str)) {
        (_, Some("denied")) => ExitCode::from(3),
        (_, Some("pending")) => ExitCode::from(4),
        (s, _) if (200..300).contains(&s) => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    }
}

/// Prints an access answer (request, claim, renewal): status, request, decision and reasons,
/// the approvers needed, the lease, and the credential (shown once).
pub(crate) fn print_access(b: &Value) {
    let d = &b["request"]["decision"];
    println!("status:   {}", b["status"].as_str().unwrap_or("?"));
    println!("request:  {}", b["request"]["id"].as_str().unwrap_or("?"));
    println!(
        "decision: {} (policies: {})",
        d["decision"].as_str().unwrap_or("?"),
        d["policy_ids"]
    );
    if let Some(rs) = d["reasons"].as_array() {
        for r in rs {
            println!("reason:   {}", r.as_str().unwrap_or(""));
        }
    }
    if let Some(g) = d["groups"].as_array() {
        println!("approval needed from: {}", Value::Array(g.clone()));
        println!(
            "digest:   {}",
            b["request"]["digest"].as_str().unwrap_or("")
        );
    }
    if !b["lease"].is_null() {
        println!(
            "lease:    {} (expires {})",
            b["lease"]["id"].as_str().unwrap_or("?"),
            b["lease"]["expires_at_unix_secs"]
        );
    }
    if let Some(v) = b["credential"]["value"].as_str() {
        println!(
            "credential ({}), shown once:\n{v}",
            b["credential"]["kind"].as_str().unwrap_or("?")
        );
    }
}

/// Prints `b` as pretty JSON.
pub(crate) fn print_json(b: &Value) {
    println!("{}", serde_json::to_string_pretty(b).unwrap_or_default());
}
