//! Waiting for approvers: the one status line `latch exec --wait-approval`, `latch request
//! --wait` and `latch claim --wait` show while a step-up request is pending, and the polling
//! loop behind the latter two.

use std::time::Duration;

use serde_json::{Value, json};

use crate::client::{Answer, Client};

/// Claims `rid` in `task` every two seconds while `a` (its last answer) says `pending`, showing
/// one status line, until it is granted or denied, or `wait` has passed. Answers the last
/// answer (still `pending` when the time ran out).
///
/// # Errors
/// An unreachable broker.
pub(crate) async fn until_decided(
    c: &Client,
    task: &str,
    resource: &str,
    mut a: Answer,
    wait: Duration,
) -> Result<Answer, String> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut status = WaitStatus::new(resource);
    while a.body.get("status").and_then(Value::as_str) == Some("pending")
        && tokio::time::Instant::now() < deadline
    {
        status.show(&a.body, deadline);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rid = a.body["request"]["id"].as_str().unwrap_or("").to_owned();
        a = c
            .post(
                &format!("/v1/tasks/{task}/requests/{rid}/claim"),
                &json!({}),
            )
            .await?;
    }
    status.finish();
    Ok(a)
}

/// What `latch exec` shows while a request waits for approvers: the console URL and the
/// request once, then one status line. On a terminal the line is rewritten in place (carriage
/// return); otherwise a line is printed only when what it says changes.
pub(crate) struct WaitStatus<'a> {
    resource: &'a str,
    tty: bool,
    /// The request id the header was printed for.
    announced: Option<String>,
    /// The last status line written.
    last: String,
    /// Whether the terminal's cursor sits at the end of a status line.
    open_line: bool,
}

impl<'a> WaitStatus<'a> {
    pub(crate) fn new(resource: &'a str) -> Self {
        use std::io::IsTerminal;
        Self {
            resource,
            tty: std::io::stderr().is_terminal(),
            announced: None,
            last: String::new(),
            open_line: false,
        }
    }

    pub(crate) fn show(&mut self, body: &Value, deadline: tokio::time::Instant) {
        use std::io::Write;
        let req = &body["request"];
        let rid = req["id"].as_str().unwrap_or("");
        if self.announced.as_deref() != Some(rid) {
            self.finish();
            // Everything the server sent is escaped before it reaches the terminal.
            let shown = crate::render::txt(&req["id"], "");
            eprintln!(
                "latch: access to {} needs approval by {} (request {shown}, digest {})",
                self.resource,
                groups_text(&req["decision"]["groups"]),
                crate::render::txt(&req["digest"], "")
            );
            let or = if body["console_url"].is_string() {
                eprintln!(
                    "latch: approve it at {}",
                    crate::render::txt(&body["console_url"], "")
                );
                "or an approver"
            } else {
                "an approver"
            };
            eprintln!(
                "latch: {or} runs `latch approve {shown} --reason \"…\"` (it shows the request \
                 and asks to confirm)"
            );
            self.announced = Some(rid.to_owned());
        }
        let approvals = req["approvers"].as_array().map_or(0, Vec::len);
        let line = format!(
            "latch: waiting for approval of {} ({approvals} approval(s) so far)",
            self.resource
        );
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let mut err = std::io::stderr().lock();
        if self.tty {
            // `\x1b[K` clears what a longer earlier line left behind.
            let _ = write!(err, "\r{line}, {}s left\x1b[K", left.as_secs());
            let _ = err.flush();
            self.open_line = true;
        } else if line != self.last {
            let _ = writeln!(err, "{line}");
        }
        self.last = line;
    }

    /// Ends the status line on a terminal, so what follows starts on a line of its own.
    pub(crate) fn finish(&mut self) {
        if self.open_line {
            eprintln!();
            self.open_line = false;
        }
    }
}

/// `[{"group":"g","quorum":2}]` as `2 of g`.
pub(crate) fn groups_text(groups: &Value) -> String {
    let Some(gs) = groups.as_array() else {
        return crate::render::txt(groups, "");
    };
    gs.iter()
        .map(|g| {
            format!(
                "{} of {}",
                g["quorum"].as_u64().unwrap_or(1),
                latch_core::audit::escape_text(g["group"].as_str().unwrap_or("?"))
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}
