//! Printing API answers for people (or as JSON with `--json`), and the exit code an answer
//! maps to.

use std::process::ExitCode;

use latch_core::audit::{escape_text, is_deceptive};
use serde_json::Value;

use crate::client::Answer;

/// A value of an answer as one safe terminal word: a string escaped with [`escape_text`]
/// (control, bidi and zero-width characters made visible), `null` or absent as `default`, any
/// other value as its JSON, escaped the same way.
///
/// # Security
/// Every human-facing print of server text goes through this (or [`safe_json`]): claim
/// values such as a branch name are the workload's to choose, and reach an approver's terminal.
pub(crate) fn txt(v: &Value, default: &str) -> String {
    match v {
        Value::Null => default.to_owned(),
        Value::String(s) => escape_text(s).into_owned(),
        other => escape_text(&other.to_string()).into_owned(),
    }
}

/// JSON text whose bidi, zero-width and other invisible characters (and any control character
/// other than the layout's own line breaks) are written as `\uXXXX` escapes: the same JSON
/// value, nothing a terminal could misread. (`serde_json` already escapes control characters
/// inside strings; it leaves U+202E and U+200B as they are.)
pub(crate) fn safe_json(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        if (c.is_control() && c != '\n') || is_deceptive(c) {
            let mut buf = [0u16; 2];
            for unit in c.encode_utf16(&mut buf) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Prints `a` and answers its exit code.
///
/// With `json`, the raw body (pretty JSON); else `human` renders a success or an access
/// answer (a body with a `status`), and other errors print `error: <code> (<status>): …` to
/// stderr. Exit codes: 3 for `"status": "denied"`, 4 for `"pending"`, 0 for another 2xx, else 1.
pub(crate) fn print_answer(json: bool, a: &Answer, human: impl FnOnce(&Value)) -> ExitCode {
    if json {
        print_json(&a.body);
    } else if a.ok() {
        human(&a.body);
    } else if a.body.get("status").is_none() {
        eprintln!("{} {}", crate::human::error_prefix(), a.error_line());
    } else {
        human(&a.body);
    }
    exit_code(a)
}

/// The exit code of an answer: 3 for `"status": "denied"`, 4 for `"pending"`, 0 for another
/// 2xx, else 1.
pub(crate) fn exit_code(a: &Answer) -> ExitCode {
    match (a.status, a.body.get("status").and_then(Value::as_str)) {
        (_, Some("denied")) => ExitCode::from(3),
        (_, Some("pending")) => ExitCode::from(4),
        (s, _) if (200..300).contains(&s) => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    }
}

/// `--id-only`: prints the id at JSON `pointer` of the answer (of each element, for a list),
/// one per line and nothing else, so a shell can capture it (`REQ=$(latch request … --id-only)`);
/// an error without such an id goes to stderr. Answers [`exit_code`].
pub(crate) fn print_ids(a: &Answer, pointer: &str) -> ExitCode {
    let ids: Vec<&Value> = match a.body.as_array() {
        Some(v) if a.ok() => v.iter().filter_map(|x| x.pointer(pointer)).collect(),
        _ => a.body.pointer(pointer).into_iter().collect(),
    };
    if ids.is_empty() && !a.ok() {
        eprintln!("{} {}", crate::human::error_prefix(), a.error_line());
    }
    for id in ids {
        println!("{}", txt(id, ""));
    }
    exit_code(a)
}

/// Prints an access answer (request, claim, renewal): status, request, decision and reasons,
/// the approvers needed, the lease, and the credential (shown once).
pub(crate) fn print_access(b: &Value) {
    let d = &b["request"]["decision"];
    println!(
        "status:   {}",
        crate::human::status_word(&txt(&b["status"], "?"))
    );
    println!("request:  {}", txt(&b["request"]["id"], "?"));
    println!(
        "decision: {} (policies: {})",
        txt(&d["decision"], "?"),
        crate::human::list(&d["policy_ids"], "none")
    );
    if let Some(code) = d["code"].as_str() {
        println!("code:     {}", escape_text(code));
    }
    if let Some(rs) = d["reasons"].as_array() {
        for r in rs {
            println!("reason:   {}", txt(r, ""));
        }
    }
    if let Some(g) = d["groups"].as_array() {
        println!(
            "approval needed from: {}",
            crate::cmd::wait::groups_text(&Value::Array(g.clone()))
        );
        println!("digest:   {}", txt(&b["request"]["digest"], ""));
    }
    if b["status"] == "pending" {
        print_next_steps(b);
    }
    if !b["lease"].is_null() {
        println!(
            "lease:    {} (expires {})",
            txt(&b["lease"]["id"], "?"),
            crate::human::when(&b["lease"]["expires_at_unix_secs"], "?")
        );
    }
    if let Some(v) = b["credential"]["value"].as_str() {
        // The credential is printed as minted (a PEM certificate spans lines); it comes from
        // the broker's provider, not from a workload's claims.
        println!(
            "credential ({}), shown once:\n{v}",
            txt(&b["credential"]["kind"], "?")
        );
    }
}

/// Prints `b` as pretty JSON ([`safe_json`]: the same value, with invisible and bidi
/// characters escaped).
pub(crate) fn print_json(b: &Value) {
    println!(
        "{}",
        safe_json(&serde_json::to_string_pretty(b).unwrap_or_default())
    );
}

/// For a pending answer: where the approver looks at the request, and the exact commands that
/// come next (the approver's, then the agent's claim), so nobody copies ids out of JSON.
pub(crate) fn print_next_steps(b: &Value) {
    let rid = txt(&b["request"]["id"], "?");
    if b["console_url"].is_string() {
        println!("console:  {}", txt(&b["console_url"], ""));
    }
    println!(
        "next:     an approver runs `latch approve {rid} --reason \"…\"` (it shows the request and \
         asks to confirm)"
    );
    if let Some(task) = b["request"]["task_id"].as_str() {
        println!(
            "          then `latch claim {} {rid}` collects the credential",
            escape_text(task)
        );
    }
}

/// Prints a multi-line error (a configuration file's parse error, with its source line and a
/// caret under the column) as `error: ` and its lines, each line escaped on its own
/// ([`escape_text`]) so the layout survives and no line can carry a terminal control.
pub(crate) fn print_error_lines(msg: &str) {
    let mut lines = msg.trim_end_matches('\n').split('\n');
    eprintln!("error: {}", escape_text(lines.next().unwrap_or("")));
    for line in lines {
        eprintln!("{}", escape_text(line));
    }
}

/// Loads the configuration at `path`; on an error, prints it ([`print_error_lines`]) and answers
/// exit code 1.
pub(crate) fn load_config(path: &std::path::Path) -> Result<latch_server::Config, ExitCode> {
    latch_server::Config::load(path).map_err(|e| {
        print_error_lines(&e.to_string());
        ExitCode::from(1)
    })
}
