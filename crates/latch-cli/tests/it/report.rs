//! `GET /v1/admin/reports/controls` and `latch report controls`: a scenario (a grant, a step-up
//! approved by bob, denials, a leaked credential revoked by a scan) against a real server, the
//! report fetched in JSON, Markdown and HTML, its figures checked against what the scenario
//! did, its checkpoint against the audit chain, hostile text escaped, the window's error codes,
//! and the CLI writing the report to a file.

use std::process::Command;

use latch_core::Clock;
use latch_testkit::{TestOptions, TestServer, tool_available};
use serde_json::{Value, json};

/// A resource whose id is markup, to see it escaped in every rendering.
const HOSTILE: &str = "vault-<img src=x onerror=alert(1)>";

fn hostile_resource() -> String {
    format!(
        "\n[[resources]]\nid = \"{HOSTILE}\"\nkind = \"jwt\"\nenvironment = \"sandbox\"\n\
         sensitivity = \"secret\"\naudience = \"https://hostile.example\"\nactions = [\"read\"]\n\
         max_ttl = \"5m\"\n"
    )
}

/// `(status, content type, headers, body)` of `GET path` with `token`.
async fn fetch(
    s: &TestServer,
    token: &str,
    path: &str,
) -> (u16, String, reqwest::header::HeaderMap, String) {
    let r = s
        .http
        .get(format!("{}{path}", s.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (status, ct, headers, r.text().await.unwrap())
}

fn lease_ttl(body: &Value) -> i64 {
    let l = &body["lease"];
    l["expires_at_unix_secs"].as_i64().unwrap() - l["issued_at_unix_secs"].as_i64().unwrap()
}

/// The scenario; returns the longest TTL granted.
async fn scenario(s: &TestServer, agent: &str) -> i64 {
    let bob = s.human("bob", &["prod-approvers"]).await;
    // A grant at once, in a sandbox task.
    let sandbox = s.open_task(agent, "sandbox", 3600).await;
    let cache = s
        .request(agent, &sandbox, "ci-cache", &["read"], Some(600))
        .await;
    assert_eq!(cache.status, 201, "{}", cache.body);
    // A production deploy held for a step-up, approved by bob, claimed.
    let prod = s.open_task(agent, "production", 3600).await;
    let p = s
        .request(agent, &prod, "deploy-pipeline", &["deploy"], Some(900))
        .await;
    assert_eq!(p.status, 202, "{}", p.body);
    let rid = p.body["request"]["id"].as_str().unwrap();
    let digest = p.body["request"]["digest"].as_str().unwrap();
    let v = s
        .post(
            Some(&bob),
            &format!("/v1/approvals/{rid}/approve"),
            json!({"digest": digest, "reason": "release 42"}),
        )
        .await;
    assert_eq!(v.body["state"], "approved", "{}", v.body);
    let claim = s
        .post(
            Some(agent),
            &format!("/v1/tasks/{prod}/requests/{rid}/claim"),
            json!({}),
        )
        .await;
    assert_eq!(claim.status, 201, "{}", claim.body);
    // Two denials: hard separation, and policy (agents never get admin).
    let d = s
        .request(agent, &sandbox, "payments-db", &["read"], None)
        .await;
    assert_eq!(d.code(), Some("environment_separation"), "{}", d.body);
    let d = s
        .request(agent, &prod, "payments-db", &["admin"], None)
        .await;
    assert_eq!(d.code(), Some("policy_denied"), "{}", d.body);
    // The sandbox credential leaks into a log; the scan revokes it.
    let value = cache.body["credential"]["value"].as_str().unwrap();
    latch_testkit::register_minted(value);
    let leaked = cache.body["lease"]["id"].as_str().unwrap().to_owned();
    let scan = s
        .post(
            Some(agent),
            "/v1/scan",
            json!({"text": format!("token={value}"), "source": "ci-log"}),
        )
        .await;
    assert_eq!(scan.status, 200, "{}", scan.body);
    assert_eq!(scan.body["revoked_leases"], json!([leaked]));
    lease_ttl(&cache.body).max(lease_ttl(&claim.body))
}

fn control<'a>(r: &'a Value, id: &str) -> &'a Value {
    r["controls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no control {id}"))
}

#[tokio::test]
async fn report_cites_the_scenario_in_three_formats_against_its_checkpoint() {
    let s = TestServer::start_with(TestOptions {
        extra_config: hostile_resource(),
        ..Default::default()
    })
    .await;
    let agent = s.agent("report-1").await;
    let admin = s.human("auditor", &["latch-admins"]).await;
    let longest = scenario(&s, &agent).await;

    // JSON.
    let (status, ct, _, body) = fetch(&s, &admin, "/v1/admin/reports/controls").await;
    assert_eq!(status, 200, "{body}");
    assert!(ct.starts_with("application/json"), "{ct}");
    let r: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(r["schema_version"], "latch-controls/1");
    let f = &r["figures"];
    assert_eq!(f["step_ups"]["approvers"]["bob"], 1, "{f}");
    assert_eq!(f["step_ups"]["requested"], 1);
    assert_eq!(f["step_ups"]["approved"], 1);
    assert_eq!(f["longest_ttl"]["secs"], longest, "{f}");
    assert_eq!(f["denials"]["by_code"]["environment_separation"], 1, "{f}");
    assert_eq!(f["denials"]["by_code"]["policy_denied"], 1, "{f}");
    assert_eq!(f["grants"]["total"], 2);
    assert_eq!(f["grants"]["after_step_up"], 1);
    assert_eq!(f["leaks"]["revoked"], 1);
    assert_eq!(f["leaks"]["not_revoked"], 0);
    assert_eq!(f["leaks"]["time_to_revocation"]["count"], 1);
    assert_eq!(
        f["leaks"]["time_to_revocation"]["max_secs"], 0,
        "fake clock"
    );
    assert_eq!(f["revocations"]["by_reason"]["leaked"], 1, "{f}");
    // Statuses computed from the example configuration (development issuer on).
    assert_eq!(control(&r, "NHI4:2025")["status"], "fail");
    assert_eq!(control(&r, "ASI03")["status"], "fail");
    assert_eq!(control(&r, "NHI2:2025")["status"], "pass");
    assert_eq!(control(&r, "ASI01")["status"], "manual");
    assert!(
        control(&r, "ASI03")["evidence"]
            .to_string()
            .contains("`read` on `payments-db` (production)"),
        "the example's production read from main needs no step-up"
    );
    // The checkpoint is the chain head when the report was made, and its hash is the
    // record's: the report.generated event of this very call is under it.
    let seq = r["checkpoint"]["seq"].as_i64().expect("checkpoint seq");
    let events = s.audit(&format!("after_seq={}", seq - 1)).await;
    assert_eq!(events[0]["seq"], seq);
    assert_eq!(events[0]["kind"], "report.generated");
    assert_eq!(events[0]["actor"], "auditor");
    assert_eq!(events[0]["hash"], r["checkpoint"]["hash"]);
    assert_eq!(f["last_seq"].as_i64(), Some(seq));

    // Markdown.
    let (status, ct, _, md) = fetch(&s, &admin, "/v1/admin/reports/controls?format=markdown").await;
    assert_eq!(status, 200, "{md}");
    assert!(ct.starts_with("text/markdown"), "{ct}");
    assert!(md.starts_with("# Latch control evidence report"), "{md}");
    assert!(
        md.contains("| ASI03 | Identity and Privilege Abuse | FAIL |"),
        "{md}"
    );
    assert!(md.contains("approvals by: bob: 1"), "{md}");
    assert!(
        md.contains(&format!("longest TTL granted: {longest} s")),
        "{md}"
    );
    assert!(md.contains("- Audit checkpoint: seq "), "{md}");
    assert!(
        md.contains("vault-&lt;img src=x onerror=alert(1)&gt;"),
        "{md}"
    );
    assert!(!md.contains("<img"), "markup is escaped in Markdown");

    // HTML.
    let (status, ct, headers, html) =
        fetch(&s, &admin, "/v1/admin/reports/controls?format=html").await;
    assert_eq!(status, 200, "{html}");
    assert!(ct.starts_with("text/html"), "{ct}");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.starts_with("default-src 'none'; style-src 'sha256-"),
        "{csp}"
    );
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(
        !html.contains("<img") && !html.contains("<script"),
        "{html}"
    );
    assert!(
        html.contains("vault-&lt;img src=x onerror=alert(1)&gt;"),
        "{html}"
    );
    assert!(html.contains("approvals by: bob: 1"), "{html}");
    s.stop().await;
}

#[tokio::test]
async fn report_window_and_caller_are_checked_with_stable_codes() {
    let s = TestServer::start().await;
    let admin = s.human("auditor", &["latch-admins"]).await;
    let bob = s.human("bob", &["prod-approvers"]).await;
    let agent = s.agent("report-2").await;
    let path = "/v1/admin/reports/controls";
    let r = s.get(Some(&bob), path).await;
    assert_eq!((r.status, r.code()), (403, Some("not_admin")), "{}", r.body);
    let r = s.get(Some(&agent), path).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = s.get(None, path).await;
    assert_eq!(r.status, 401);
    for (q, status, code) in [
        (
            "from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
            422,
            "invalid_window",
        ),
        (
            "from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
            422,
            "invalid_window",
        ),
        ("from=yesterday", 400, "invalid_request"),
        ("format=pdf", 400, "invalid_request"),
        ("nope=1", 400, "invalid_request"),
    ] {
        let r = s.get(Some(&admin), &format!("{path}?{q}")).await;
        assert_eq!(
            (r.status, r.code()),
            (status, Some(code)),
            "{q}: {}",
            r.body
        );
    }
    // A window with an offset and fractions, ending in the future (clamped to now).
    let now = s.clock.now_unix_secs();
    let from = latch_core::controls::iso8601(now - 3600).replace('Z', ".5+00:00");
    let r = s
        .get(
            Some(&admin),
            &format!(
                "{path}?from={}&to=9999-12-31T23:59:59Z",
                from.replace('+', "%2B")
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["window"]["from_unix_secs"], now - 3600);
    assert_eq!(r.body["window"]["to_unix_secs"], now + 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latch_report_controls_writes_each_format() {
    let s = TestServer::start().await;
    let agent = s.agent("report-3").await;
    let admin = s.human("auditor", &["latch-admins"]).await;
    let t = s.open_task(&agent, "sandbox", 600).await;
    let g = s
        .request(&agent, &t, "ci-cache", &["read"], Some(300))
        .await;
    assert_eq!(g.status, 201);
    latch_testkit::register_minted(g.body["credential"]["value"].as_str().unwrap());
    let json_file = s.dir.join("controls.json");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_latch"))
            .args(["report", "controls"])
            .args(args)
            .env("LATCH_SERVER", &s.base)
            .env("LATCH_TOKEN", &admin)
            .output()
            .unwrap()
    };
    let out = tokio::task::block_in_place(|| {
        run(&[
            "--format",
            "json",
            "--since",
            "1d",
            "--output",
            json_file.to_str().unwrap(),
        ])
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&std::fs::read(&json_file).unwrap()).unwrap();
    assert_eq!(r["schema_version"], "latch-controls/1");
    assert_eq!(r["figures"]["grants"]["by_resource"]["ci-cache"], 1);
    let out = tokio::task::block_in_place(|| run(&[]));
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(md.starts_with("# Latch control evidence report"), "{md}");
    let out = tokio::task::block_in_place(|| {
        run(&[
            "--format",
            "html",
            "--from",
            "2026-01-02T00:00:00Z",
            "--to",
            "2026-01-01T00:00:00Z",
        ])
    });
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid_window"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The JSON form as another reader sees it: every control has a known status, a rule and
    // evidence, and the summary adds up.
    if tool_available("python3", &["--version"]) {
        let check = r#"
import json, sys
r = json.load(open(sys.argv[1]))
ok = {"pass", "partial", "fail", "not_applicable", "manual"}
cs = r["controls"]
assert len(cs) == r["summary"]["total"] == 36, len(cs)
assert all(c["status"] in ok and c["rule"] and c["evidence"] for c in cs)
assert sum(r["summary"][k] for k in ok) == len(cs)
fw = {c["framework"] for c in cs}
assert fw == {"owasp_agentic_2026", "owasp_nhi_2025", "csa_maestro", "nist_ai_rmf_1_0"}, fw
assert [c["id"] for c in cs if c["framework"] == "owasp_agentic_2026"] == ["ASI%02d" % i for i in range(1, 11)]
assert r["checkpoint"]["seq"] >= r["figures"]["last_seq"]
print("ok")
"#;
        let out = tokio::process::Command::new("python3")
            .args(["-c", check])
            .arg(&json_file)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    s.stop().await;
}
