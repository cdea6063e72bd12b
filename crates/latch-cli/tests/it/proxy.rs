//! `latch proxy`: the upstream sees the task's credential, the agent's process never does;
//! every call is a `tool.used` event without secrets; allow rules refuse other methods and
//! paths; the proxy stops serving when the task ends.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use latch_testkit::{TestOptions, TestServer};
use serde_json::json;

/// An upstream API that records the `Authorization` header of each request.
async fn upstream() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap| {
        let s2 = s2.clone();
        async move {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            s2.lock().unwrap().push(auth);
            axum::Json(json!({"orders": [1, 2, 3]}))
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_injects_the_credential_the_agent_never_holds_and_stops_with_the_task() {
    // The broker's rules for the resource; the proxy's --allow flag narrows them further.
    let s = TestServer::start_with(TestOptions {
        extra_config: "\n[[proxy.rules]]\nresource = \"ci-cache\"\n\
                       allow = [\"GET:/v1/orders*\", \"DELETE:/v1/orders/*\"]\n"
            .into(),
        ..Default::default()
    })
    .await;
    let harness = s.agent("proxy-1").await;
    let rules = s.get(Some(&harness), "/v1/proxy/rules/ci-cache").await;
    assert_eq!(rules.status, 200, "{}", rules.body);
    assert_eq!(rules.body["restricted"], true);
    let open = s.get(Some(&harness), "/v1/proxy/rules/payments-db").await;
    assert_eq!(open.body["restricted"], false, "{}", open.body);
    let unknown = s.get(Some(&harness), "/v1/proxy/rules/nope").await;
    assert_eq!(unknown.code(), Some("unknown_resource"));
    let task = s.open_task(&harness, "sandbox", 1800).await;
    let (up, seen) = upstream().await;
    let port = free_port();
    let mut proxy = Command::new(env!("CARGO_BIN_EXE_latch"))
        .args([
            "proxy",
            "--task",
            &task,
            "--resource",
            "ci-cache",
            "--upstream",
            &up,
        ])
        .args(["--listen", &format!("127.0.0.1:{port}"), "--poll", "200ms"])
        .args(["--allow", "GET:/v1/*"])
        .env("LATCH_SERVER", &s.base)
        .env("LATCH_TOKEN", &harness)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..100 {
        if http.get(format!("{base}/v1/orders")).send().await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "proxy did not start");

    // The agent: a separate process with no Latch variables, calling the proxy with curl.
    let agent = tokio::task::block_in_place(|| {
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "env; curl -s -H 'Authorization: Bearer agent-made-up' {base}/v1/orders/12345; echo; \
                 curl -s -o /dev/null -w '%{{http_code}} ' {base}/v1/admin; \
                 curl -s -o /dev/null -w '%{{http_code}}' -X DELETE {base}/v1/orders/1"
            ))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .env("AGENT_API", &base)
            .output()
            .unwrap()
    });
    let agent_out = String::from_utf8_lossy(&agent.stdout).into_owned();
    assert!(agent_out.contains("\"orders\":[1,2,3]"), "{agent_out}");
    assert!(
        agent_out.ends_with("403 403"),
        "/v1/admin refused by the broker's rules, DELETE by the proxy's flag: {agent_out}"
    );

    // The upstream saw the task's credential (a live Latch access token), not the agent's.
    let auth = seen.lock().unwrap().clone();
    let got: Vec<&String> = auth.iter().filter(|a| a.starts_with("Bearer ey")).collect();
    assert!(!got.is_empty(), "{auth:?}");
    let credential = got.last().unwrap().trim_start_matches("Bearer ").to_owned();
    latch_testkit::register_minted(&credential);
    let i = s.introspect(&credential).await;
    assert_eq!(i["active"], true);
    assert_eq!(i["task_id"], task.as_str());
    assert!(!auth.iter().any(|a| a.contains("agent-made-up")));
    assert!(
        !agent_out.contains(&credential),
        "the agent's environment and output never held it"
    );

    // Each call is a tool-use event, with a path template and no secret.
    let ev = s.audit(&format!("task_id={task}&kind=tool.")).await;
    let ok = ev
        .iter()
        .find(|e| e["detail"]["attributes"]["path"] == "/v1/orders/{id}" && e["outcome"] == "ok")
        .unwrap_or_else(|| panic!("{ev:?}"));
    assert_eq!(ok["detail"]["attributes"]["status"], 200);
    assert_eq!(ok["detail"]["attributes"]["method"], "GET");
    assert!(
        ok["detail"]["attributes"]["response_bytes"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(ev.iter().any(|e| e["outcome"] == "denied"));

    // The task ends: the proxy stops serving and exits.
    let r = s
        .post(
            Some(&harness),
            &format!("/v1/tasks/{task}/complete"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut exited = None;
    for _ in 0..50 {
        if let Some(st) = proxy.try_wait().unwrap() {
            exited = Some(st);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if exited.is_none() {
        let _ = proxy.kill();
    }
    let out = proxy.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    latch_testkit::record_output(stdout.clone());
    latch_testkit::record_output(String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(
        exited.is_some_and(|s| s.success()),
        "proxy exits when the task ends: {stdout}"
    );
    assert!(http.get(format!("{base}/v1/orders")).send().await.is_err());
    s.stop().await;
}

/// An upstream that records the path of each request.
async fn path_upstream() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let s2 = s2.clone();
        async move {
            s2.lock().unwrap().push(uri.path().to_owned());
            axum::Json(json!({"ok": true}))
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

/// Sends `GET <raw path>` as written (no client-side dot resolution); returns the status.
async fn raw_get(port: u16, raw: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    c.write_all(
        format!("GET {raw} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    c.read_to_end(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf);
    head.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_refuses_dot_segment_paths_that_escape_the_rules() {
    let s = TestServer::start_with(TestOptions {
        extra_config: "\n[[proxy.rules]]\nresource = \"ci-cache\"\nallow = [\"GET:/v1/orders*\"]\n"
            .into(),
        ..Default::default()
    })
    .await;
    let harness = s.agent("proxy-dots").await;
    let task = s.open_task(&harness, "sandbox", 1800).await;
    let (up, seen) = path_upstream().await;
    let port = free_port();
    let mut proxy = Command::new(env!("CARGO_BIN_EXE_latch"))
        .args([
            "proxy",
            "--task",
            &task,
            "--resource",
            "ci-cache",
            "--upstream",
            &up,
        ])
        .args(["--listen", &format!("127.0.0.1:{port}"), "--poll", "200ms"])
        .env("LATCH_SERVER", &s.base)
        .env("LATCH_TOKEN", &harness)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut ready = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "proxy did not start");
    assert_eq!(raw_get(port, "/v1/orders/1").await, 200);
    for bad in [
        "/v1/orders/%2E%2E/%2e%2e/secret",
        "/v1/orders/../admin",
        "/v1/orders/%2e%2e/admin",
        "/v1/orders%2f..%2fadmin",
        "/v1/orders/../../../etc",
    ] {
        assert_eq!(raw_get(port, bad).await, 403, "{bad}");
    }
    // A dot path that stays inside the rules is forwarded normalised.
    assert_eq!(raw_get(port, "/v1/orders/x/../2").await, 200);
    let paths = seen.lock().unwrap().clone();
    assert_eq!(
        paths,
        ["/v1/orders/1", "/v1/orders/2"],
        "upstream saw only allowed paths"
    );
    let _ = proxy.kill();
    let _ = proxy.wait();
    s.stop().await;
}

/// Starts `latch proxy` for `task` and waits until it listens; returns it and its port.
async fn spawn_proxy(
    s: &TestServer,
    harness: &str,
    task: &str,
    up: &str,
) -> (std::process::Child, u16) {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_latch"))
        .args([
            "proxy",
            "--task",
            task,
            "--resource",
            "ci-cache",
            "--upstream",
            up,
        ])
        .args(["--listen", &format!("127.0.0.1:{port}"), "--poll", "100ms"])
        .env("LATCH_SERVER", &s.base)
        .env("LATCH_TOKEN", harness)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return (child, port);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("proxy did not start");
}

/// Waits for the proxy to exit; kills it and fails otherwise. Returns its stdout.
async fn exits(mut child: std::process::Child, why: &str) -> String {
    let mut exited = false;
    for _ in 0..50 {
        if child.try_wait().unwrap().is_some() {
            exited = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(exited, "proxy keeps serving after {why}: {stdout}");
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_fails_closed_on_revoked_lease_expired_token_or_unreachable_broker() {
    let s = TestServer::start().await;
    let (up, _seen) = upstream().await;

    // The lease whose credential the proxy injects is revoked: the proxy stops.
    let harness = s.agent("proxy-lease").await;
    let task = s.open_task(&harness, "sandbox", 1800).await;
    let (proxy, port) = spawn_proxy(&s, &harness, &task, &up).await;
    let leases = s
        .get(Some(&harness), &format!("/v1/tasks/{task}/leases"))
        .await;
    let lease = leases.body[0]["id"].as_str().unwrap().to_owned();
    let r = s
        .post(
            Some(&harness),
            &format!("/v1/leases/{lease}/revoke"),
            json!({}),
        )
        .await;
    assert!(r.status < 300, "{}", r.body);
    let out = exits(proxy, "its lease was revoked").await;
    assert!(out.contains("no longer active"), "{out}");
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    );

    // The harness's workload token expires while the task is still open: the proxy stops.
    let short = s
        .dev_token(json!({"kind": "workload", "repository": "acme/payments-api",
            "git_ref": "refs/heads/main", "actor": "alice", "run_id": "proxy-exp", "ttl_secs": 120}))
        .await;
    let task = s.open_task(&short, "sandbox", 1800).await;
    let (proxy, _) = spawn_proxy(&s, &short, &task, &up).await;
    s.clock.advance(600);
    let out = exits(proxy, "its workload token expired").await;
    assert!(out.contains("workload token refused"), "{out}");

    // The broker becomes unreachable: after a few failed checks the proxy stops.
    let harness = s.agent("proxy-down").await;
    let task = s.open_task(&harness, "sandbox", 1800).await;
    let (proxy, _) = spawn_proxy(&s, &harness, &task, &up).await;
    s.stop().await;
    let out = exits(proxy, "the broker became unreachable").await;
    assert!(out.contains("cannot confirm task"), "{out}");
}

#[test]
fn proxy_refuses_a_non_loopback_listen_address() {
    let out = Command::new(env!("CARGO_BIN_EXE_latch"))
        .args([
            "proxy",
            "--task",
            "t",
            "--resource",
            "ci-cache",
            "--upstream",
            "http://up.example",
        ])
        .args(["--listen", "0.0.0.0:0"])
        .env("LATCH_SERVER", "http://127.0.0.1:9")
        .env("LATCH_TOKEN", "x")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr.contains("--allow-remote"), "{stderr}");
}
