//! `/metrics` read by an independent parser (Python's `prometheus_client`, the Prometheus
//! project's own client library): every family has HELP and TYPE, the families a dashboard or
//! an alert needs exist from start, latency histograms have buckets and are labelled by route
//! template (never a raw path) and outcome, decisions are counted by configured resource, a
//! revocation's latency is observed, and the live-state, retry and backlog gauges follow the
//! store.

use std::process::Stdio;

use latch_testkit::{TestOptions, TestServer, tool_available};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// Reads the exposition text on stdin; prints `{family: {type, help, samples: [[name,
/// labels, value]]}}`. The parser names a counter family without its `_total`.
const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    out[f.name] = {"type": f.type, "help": f.documentation,
                   "samples": [[s.name, s.labels, s.value] for s in f.samples]}
print(json.dumps(out))
"#;

async fn scrape(s: &TestServer) -> (String, Value) {
    let r = s
        .http
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    // tokio's process: a blocking wait would starve the in-process server's runtime.
    let mut child = tokio::process::Command::new("python3")
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    (text, serde_json::from_slice(&out.stdout).unwrap())
}

/// The value of the sample `name` whose labels include `labels`.
fn sample(families: &Value, family: &str, name: &str, labels: &Value) -> Option<f64> {
    families[family]["samples"]
        .as_array()?
        .iter()
        .find(|s| {
            s[0] == name
                && labels
                    .as_object()
                    .unwrap()
                    .iter()
                    .all(|(k, v)| &s[1][k] == v)
        })
        .and_then(|s| s[2].as_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_described_present_from_start_and_follow_live_state() {
    if !tool_available("python3", &["-c", "import prometheus_client"]) {
        return;
    }
    let s = TestServer::start_with(TestOptions {
        extra_config:
            "\n[[audit.sinks]]\nkind = \"file\"\nname = \"metrics-file\"\npath = \"audit.jsonl\"\n"
                .into(),
        ..TestOptions::default()
    })
    .await;
    let (text, f) = scrape(&s).await;
    // Every family has TYPE and HELP (an undescribed one parses as `unknown` with no help).
    for (name, fam) in f.as_object().unwrap() {
        assert_ne!(fam["type"], "unknown", "{name} has no TYPE:\n{text}");
        assert_ne!(fam["help"], "", "{name} has no HELP:\n{text}");
    }
    let missing: Vec<&str> = latch_server::metrics::FAMILIES
        .iter()
        .map(|fam| fam.name.trim_end_matches("_total"))
        .filter(|n| f.get(*n).is_none())
        .collect();
    // Every family of the table is there at the first scrape, except those labelled by
    // something this configuration has none of (gateway upstreams, notification channels,
    // Shared Signals receivers) and the target health gauges (set by the target job as it
    // watches each target).
    let unconfigured = [
        "latch_gateway_calls",
        "latch_notifications_delivered",
        "latch_notifications_retried",
        "latch_notifications_failed",
        "latch_ssf_sets_delivered",
        "latch_ssf_delivery_failures",
        "latch_target_up",
        "latch_target_consecutive_failures",
    ];
    let missing: Vec<_> = missing
        .into_iter()
        .filter(|n| !unconfigured.contains(n))
        .collect();
    assert!(missing.is_empty(), "missing at start: {missing:?}\n{text}");
    // Present from start, before any event.
    let zero = json!({});
    for (family, name, kind) in [
        ("latch_open_tasks", "latch_open_tasks", "gauge"),
        ("latch_live_leases", "latch_live_leases", "gauge"),
        ("latch_revoking_leases", "latch_revoking_leases", "gauge"),
        (
            "latch_pending_approvals",
            "latch_pending_approvals",
            "gauge",
        ),
        (
            "latch_pending_notifications",
            "latch_pending_notifications",
            "gauge",
        ),
        ("latch_tasks_opened", "latch_tasks_opened_total", "counter"),
        ("latch_renewals", "latch_renewals_total", "counter"),
        (
            "latch_leases_reaped",
            "latch_leases_reaped_total",
            "counter",
        ),
        (
            "latch_revocation_failures",
            "latch_revocation_failures_total",
            "counter",
        ),
        (
            "latch_census_errors",
            "latch_census_errors_total",
            "counter",
        ),
        (
            "latch_revoke_failed_leases",
            "latch_revoke_failed_leases",
            "gauge",
        ),
        (
            "latch_retrying_revocations",
            "latch_retrying_revocations",
            "gauge",
        ),
        (
            "latch_retrying_notifications",
            "latch_retrying_notifications",
            "gauge",
        ),
    ] {
        assert_eq!(f[family]["type"], kind, "{family}:\n{text}");
        assert!(
            sample(&f, family, name, &zero).is_some(),
            "{name} missing at start:\n{text}"
        );
    }
    assert_eq!(
        sample(&f, "latch_open_tasks", "latch_open_tasks", &zero),
        Some(0.0)
    );
    assert_eq!(
        sample(&f, "latch_live_leases", "latch_live_leases", &zero),
        Some(0.0)
    );
    for decision in ["allow", "deny", "step_up"] {
        assert!(
            sample(
                &f,
                "latch_access_decisions",
                "latch_access_decisions_total",
                &json!({"decision": decision, "resource": "deploy-pipeline"})
            )
            .is_some(),
            "decisions on deploy-pipeline ({decision}) missing at start:\n{text}"
        );
    }

    // Per sink: backlog and consecutive failures, zero before the first delivery.
    for family in [
        "latch_audit_sink_backlog",
        "latch_audit_sink_consecutive_failures",
    ] {
        assert_eq!(f[family]["type"], "gauge", "{family}:\n{text}");
        assert!(
            sample(&f, family, family, &json!({"sink": "metrics-file"})).is_some(),
            "{family} of the configured sink missing at start:\n{text}"
        );
    }
    // The revocation latency histogram of every configured resource, empty.
    let revocation = "latch_revocation_duration_seconds";
    assert_eq!(f[revocation]["type"], "histogram", "{text}");
    assert!(
        sample(
            &f,
            revocation,
            "latch_revocation_duration_seconds_count",
            &json!({"resource": "deploy-pipeline"})
        )
        .is_some(),
        "{text}"
    );

    // A grant in sandbox, a step-up in production.
    let agent = s.agent("metrics-1").await;
    let sandbox = s.open_task(&agent, "sandbox", 1800).await;
    let g = s
        .request(&agent, &sandbox, "ci-cache", &["read"], None)
        .await;
    assert_eq!(g.status, 201, "{}", g.body);
    let prod = s.open_task(&agent, "production", 3600).await;
    let p = s
        .request(&agent, &prod, "deploy-pipeline", &["deploy"], Some(600))
        .await;
    assert_eq!(p.status, 202, "{}", p.body);
    // A refusal, and a revocation (the sandbox credential has no state at a target: revoked as
    // it is decided, latency 0).
    let missing = s
        .http
        .get(format!(
            "{}/v1/tasks/task_00000000000000000000000000000000",
            s.base
        ))
        .bearer_auth(&agent)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let denied = s
        .request(&agent, &sandbox, "deploy-pipeline", &["deploy"], None)
        .await;
    assert_eq!(denied.status, 403, "{}", denied.body);
    let lease = g.body["lease"]["id"].as_str().unwrap();
    let revoked = s
        .http
        .post(format!("{}/v1/leases/{lease}/revoke", s.base))
        .bearer_auth(&agent)
        .send()
        .await
        .unwrap();
    assert!(revoked.status().is_success(), "{}", revoked.status());
    // The gauges are counted at most every 5 s (of the server's clock).
    s.clock.advance(6);
    let (text, f) = scrape(&s).await;
    assert_eq!(
        sample(&f, "latch_open_tasks", "latch_open_tasks", &zero),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&f, "latch_live_leases", "latch_live_leases", &zero),
        Some(0.0),
        "the one live lease was revoked: {text}"
    );
    assert_eq!(
        sample(
            &f,
            "latch_introspection_index_entries",
            "latch_introspection_index_entries",
            &zero
        ),
        Some(0.0),
        "a revoked credential leaves the introspection index: {text}"
    );
    assert!(
        sample(
            &f,
            revocation,
            "latch_revocation_duration_seconds_count",
            &json!({"resource": "ci-cache"})
        )
        .is_some_and(|v| v >= 1.0),
        "{text}"
    );
    assert!(
        sample(
            &f,
            revocation,
            "latch_revocation_duration_seconds_bucket",
            &json!({"resource": "ci-cache", "le": "0.01"})
        )
        .is_some_and(|v| v >= 1.0),
        "revoked as decided: {text}"
    );
    assert_eq!(
        sample(
            &f,
            "latch_pending_approvals",
            "latch_pending_approvals",
            &zero
        ),
        Some(1.0),
        "{text}"
    );
    let allowed = json!({"decision": "allow", "resource": "ci-cache"});
    assert!(
        sample(
            &f,
            "latch_access_decisions",
            "latch_access_decisions_total",
            &allowed
        )
        .is_some_and(|v| v >= 1.0),
        "{text}"
    );
    // Latency histograms: buckets (not a summary), labelled by route template.
    let h = &f["latch_http_request_duration_seconds"];
    assert_eq!(h["type"], "histogram", "{text}");
    let route = json!({"route": "/v1/tasks/{id}/requests", "method": "POST",
        "status_class": "2xx", "outcome": "ok"});
    assert!(
        sample(
            &f,
            "latch_http_request_duration_seconds",
            "latch_http_request_duration_seconds_count",
            &route
        )
        .is_some_and(|v| v >= 2.0),
        "{text}"
    );
    assert!(
        h["samples"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s[0] == "latch_http_request_duration_seconds_bucket" && s[1]["le"] == "0.005"),
        "{text}"
    );
    // An error answer's outcome is its Latch error code.
    assert!(
        sample(
            &f,
            "latch_http_request_duration_seconds",
            "latch_http_request_duration_seconds_count",
            &json!({"route": "/v1/tasks/{id}", "method": "GET", "status_class": "4xx",
                "outcome": "task_not_found"})
        )
        .is_some_and(|v| v >= 1.0),
        "{text}"
    );
    // A denial's outcome is its deny code (the body is an access response, not an error).
    assert!(
        sample(
            &f,
            "latch_http_request_duration_seconds",
            "latch_http_request_duration_seconds_count",
            &json!({"route": "/v1/tasks/{id}/requests", "status_class": "4xx",
                "outcome": "environment_separation"})
        )
        .is_some_and(|v| v >= 1.0),
        "{text}"
    );
    // No raw path (and so no task or request id) ever becomes a label.
    assert!(
        !text.contains(&sandbox) && !text.contains("route=\"/v1/tasks/task_"),
        "{text}"
    );
    let mint = json!({"resource": "ci-cache", "call": "mint", "outcome": "ok"});
    assert_eq!(
        f["latch_provider_call_duration_seconds"]["type"], "histogram",
        "{text}"
    );
    assert!(
        sample(
            &f,
            "latch_provider_call_duration_seconds",
            "latch_provider_call_duration_seconds_count",
            &mint
        )
        .is_some_and(|v| v >= 1.0),
        "{text}"
    );
    s.stop().await;
}

/// Two scrapes of the same state read the same, families in name order (the exporter walks
/// hash maps; the broker sorts its text).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_families_come_out_in_name_order() {
    let s = TestServer::start().await;
    let agent = s.agent("metrics-order").await;
    s.open_task(&agent, "sandbox", 600).await;
    let text = s.metrics_text().await;
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert!(names.len() > 10, "{text}");
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "families in name order");
    let order = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        order(&text),
        order(&s.metrics_text().await),
        "two scrapes, one order"
    );
    s.stop().await;
}
