//! The demo's last steps: a leaked credential revoked by a scan, then the control evidence
//! report over everything the demo did. With `LATCH_DEMO_REPORT_DIR` set, the report is also
//! written there in its three formats (`controls-example.md`, `.html`, `.json`): how the
//! example under `docs/reports/` is made.

use serde_json::json;

use super::{Script, short, token};
use crate::client::Client;

/// Where `latch demo` writes the report's three renderings, when set.
pub(super) const REPORT_DIR_VAR: &str = "LATCH_DEMO_REPORT_DIR";

/// An agent pastes a live credential into its log; the scan revokes it at once.
pub(super) async fn leak_step(s: &mut Script, agent: &Client) -> Result<(), String> {
    s.step("An agent pastes its credential into a log; the leak scan revokes it at once");
    let a = agent
        .post(
            "/v1/tasks",
            &json!({"purpose": "rebuild the cache", "environment": "sandbox", "ttl_secs": 900}),
        )
        .await?;
    let task = short(&a.body["id"]);
    let a = agent
        .post(
            &format!("/v1/tasks/{task}/requests"),
            &json!({"resource": "ci-cache", "actions": ["read"], "justification": "warm the cache"}),
        )
        .await?;
    let value = short(&a.body["credential"]["value"]);
    let lease = short(&a.body["lease"]["id"]);
    let a = agent
        .post(
            "/v1/scan",
            &json!({"text": format!("debug: cache token={value}\n"), "source": "agent-log"}),
        )
        .await?;
    let revoked = a.body["revoked_leases"]
        .as_array()
        .is_some_and(|v| v.iter().any(|x| x.as_str() == Some(lease.as_str())));
    s.check(
        a.ok() && revoked,
        &format!("the scan found the credential and revoked lease {lease}"),
    );
    let a = agent
        .post(&format!("/v1/tasks/{task}/complete"), &json!({}))
        .await?;
    s.check(a.ok(), "the task is completed");
    Ok(())
}

/// The control evidence report over the demo's trail, as an auditor fetches it.
pub(super) async fn report_step(s: &mut Script, anon: &Client) -> Result<(), String> {
    s.step(
        "The control evidence report: each OWASP, MAESTRO and NIST control with a computed status",
    );
    let auditor = anon.with_token(
        &token(
            anon,
            json!({"kind": "human", "subject": "carol", "groups": ["latch-admins"]}),
        )
        .await?,
    );
    let a = auditor
        .get("/v1/admin/reports/controls?format=json")
        .await?;
    let r = &a.body;
    let sum = &r["summary"];
    s.say(format!(
        "{} controls: {} pass, {} partial, {} fail, {} not applicable, {} manual",
        sum["total"],
        sum["pass"],
        sum["partial"],
        sum["fail"],
        sum["not_applicable"],
        sum["manual"]
    ));
    let failed: Vec<String> = r["controls"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["status"] == "fail")
        .map(|c| short(&c["id"]))
        .collect();
    s.say(format!(
        "failed (the demo runs the development issuer and built-in keys): {}",
        failed.join(", ")
    ));
    s.say(format!(
        "computed against audit checkpoint seq {}",
        r["checkpoint"]["seq"]
    ));
    s.check(
        a.ok() && failed.iter().any(|id| id == "NHI4:2025") && r["checkpoint"]["seq"].is_i64(),
        "the development issuer fails the identity controls; the report cites its checkpoint",
    );
    if let Ok(dir) = std::env::var(REPORT_DIR_VAR) {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        for (format, ext) in [("markdown", "md"), ("html", "html"), ("json", "json")] {
            let (status, body) = auditor
                .get_text(&format!("/v1/admin/reports/controls?format={format}"))
                .await?;
            if status != 200 {
                return Err(format!("report as {format}: http {status}"));
            }
            let file = dir.join(format!("controls-example.{ext}"));
            std::fs::write(&file, format!("{}\n", body.trim_end())).map_err(|e| e.to_string())?;
            s.say(format!("wrote {}", file.display()));
        }
    }
    Ok(())
}
