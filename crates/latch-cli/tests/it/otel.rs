//! OpenTelemetry traces over OTLP/HTTP: a `latch serve` process configured with
//! `[telemetry] otlp_endpoint` exports its spans to a local receiver, which decodes them with
//! `opentelemetry-proto` (the OpenTelemetry project's generated protobuf types: independent of
//! the exporter's encoding path only in that it is the reference schema, not Latch code). The
//! HTTP request span and the grant, renewal and revocation spans carry the task id and the
//! request id; no credential, bearer token or `Authorization` header is in the raw payload; the
//! spans buffered at `SIGTERM` are flushed before the process exits.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Raw OTLP/HTTP request bodies received.
type Received = Arc<Mutex<Vec<Vec<u8>>>>;

/// A minimal OTLP/HTTP trace receiver on a free loopback port: stores each `POST /v1/traces`
/// body and answers an empty `ExportTraceServiceResponse` (OTLP/HTTP: `200`, protobuf).
async fn receiver() -> (String, Received) {
    let got: Received = Arc::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let g = g.clone();
            async move {
                g.lock().unwrap().push(body.to_vec());
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (format!("http://{addr}"), got)
}

/// One decoded span: name, string attributes, and how many events (log lines) it carries.
#[derive(Debug)]
struct Span {
    name: String,
    attrs: HashMap<String, String>,
    events: usize,
}

fn text(kv: &KeyValue) -> Option<String> {
    match kv.value.as_ref()?.value.as_ref()? {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

/// Every span in `bodies`, and every `service.name` seen.
fn decode(bodies: &[Vec<u8>]) -> (Vec<Span>, Vec<String>) {
    let mut spans = Vec::new();
    let mut services = Vec::new();
    for b in bodies {
        let req = ExportTraceServiceRequest::decode(b.as_slice()).expect("OTLP protobuf");
        for rs in req.resource_spans {
            if let Some(r) = &rs.resource {
                services.extend(
                    r.attributes
                        .iter()
                        .filter(|kv| kv.key == "service.name")
                        .filter_map(text),
                );
            }
            for ss in rs.scope_spans {
                for s in ss.spans {
                    let attrs = s
                        .attributes
                        .iter()
                        .filter_map(|kv| Some((kv.key.clone(), text(kv)?)))
                        .collect();
                    spans.push(Span {
                        name: s.name,
                        attrs,
                        events: s.events.len(),
                    });
                }
            }
        }
    }
    (spans, services)
}

/// Sends `req`; its JSON body and the broker's request id (`x-request-id`).
async fn call(req: reqwest::RequestBuilder) -> (Value, String) {
    let r = req.send().await.unwrap();
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    (r.json().await.unwrap(), rid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_receiver_with_ids_and_without_secrets() {
    let (endpoint, got) = receiver().await;
    let dir = std::env::temp_dir().join(format!("latch-otel-{}", uuid::Uuid::new_v4().simple()));
    let config = latch_server::examples::write_example(&dir, "127.0.0.1:0").unwrap();
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str(&format!(
        "\n[telemetry]\notlp_endpoint = \"{endpoint}\"\nservice_name = \"latch-otel-test\"\n"
    ));
    std::fs::write(&config, toml).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_latch"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("LATCH_LOG", "info")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_SDK_DISABLED")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_TRACES_SAMPLER_ARG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn latch serve");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("server printed its address");
        if line.contains("latch is serving") {
            let v: Value = serde_json::from_str(&line).unwrap();
            break v["fields"]["base_url"].as_str().unwrap().to_owned();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let http = reqwest::Client::new();
    let (tok, _) = call(
        http.post(format!("{base}/v1/dev/tokens"))
            .json(&json!({"kind": "workload", "run_id": "91", "git_ref": "refs/heads/main"})),
    )
    .await;
    let tok = tok["token"].as_str().unwrap().to_owned();
    let (task, _) = call(
        http.post(format!("{base}/v1/tasks"))
            .bearer_auth(&tok)
            .json(&json!({"purpose": "traced", "environment": "sandbox"})),
    )
    .await;
    let task_id = task["id"].as_str().unwrap().to_owned();
    let (grant, grant_rid) = call(
        http.post(format!("{base}/v1/tasks/{task_id}/requests"))
            .bearer_auth(&tok)
            .json(&json!({"resource": "ci-cache", "actions": ["read"]})),
    )
    .await;
    let secret = grant["credential"]["value"]
        .as_str()
        .unwrap_or_else(|| panic!("{grant}"))
        .to_owned();
    let lease = grant["lease"]["id"].as_str().unwrap().to_owned();
    let (renewed, renew_rid) = call(
        http.post(format!("{base}/v1/leases/{lease}/renew"))
            .bearer_auth(&tok)
            .json(&json!({})),
    )
    .await;
    let renewed_secret = renewed["credential"]["value"].as_str().map(str::to_owned);
    let (_, revoke_rid) = call(
        http.post(format!("{base}/v1/leases/{lease}/revoke"))
            .bearer_auth(&tok),
    )
    .await;

    // SIGTERM: a graceful shutdown flushes the spans still in the batch processor.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("latch serve stops after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");

    let bodies = got.lock().unwrap().clone();
    assert!(!bodies.is_empty(), "no OTLP export arrived");
    let (spans, services) = decode(&bodies);
    assert!(
        services.iter().any(|s| s == "latch-otel-test"),
        "{services:?}"
    );
    let find = |name: &str, rid: &str| {
        spans
            .iter()
            .find(|s| {
                s.name == name && s.attrs.get("latch.request_id").map(String::as_str) == Some(rid)
            })
            .unwrap_or_else(|| panic!("no span {name} of request {rid}: {spans:#?}"))
    };
    let http_span = find("POST /v1/tasks/{id}/requests", &grant_rid);
    assert_eq!(http_span.attrs["latch.task_id"], task_id, "{http_span:?}");
    assert_eq!(http_span.attrs["http.route"], "/v1/tasks/{id}/requests");
    assert_eq!(http_span.attrs["http.response.status_code"], "201");
    for (name, rid) in [
        ("latch.grant", &grant_rid),
        ("latch.renew", &renew_rid),
        ("latch.revoke", &revoke_rid),
    ] {
        let s = find(name, rid);
        assert_eq!(s.attrs["latch.task_id"], task_id, "{s:?}");
        assert_eq!(s.attrs["latch.resource"], "ci-cache", "{s:?}");
    }
    assert_eq!(
        find("latch.renew", &renew_rid).attrs["latch.lease_id"],
        lease
    );
    // Log lines stay in the log: no span carries events.
    assert!(spans.iter().all(|s| s.events == 0), "{spans:#?}");

    // Never a secret: not the credential, not the bearer token, no Authorization header.
    let raw: Vec<u8> = bodies.concat();
    let contains = |needle: &str| raw.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(!contains(&secret), "the minted credential was exported");
    if let Some(s) = renewed_secret {
        assert!(!contains(&s), "the renewed credential was exported");
    }
    assert!(!contains(&tok), "the bearer token was exported");
    assert!(
        !contains("uthorization"),
        "an Authorization header was exported"
    );
    let _ = std::fs::remove_dir_all(dir);
}
