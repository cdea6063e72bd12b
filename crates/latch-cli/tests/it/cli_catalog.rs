//! `latch resources` (what may be requested) and `latch serve --listen`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use latch_testkit::TestServer;
use serde_json::Value;

fn latch() -> Command {
    Command::new(env!("CARGO_BIN_EXE_latch"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_lists_what_may_be_requested() {
    let s = TestServer::start().await;
    let agent = s.agent("catalog-1").await;
    let run = |json: bool, token: Option<&str>| {
        let mut c = latch();
        c.arg("resources").env("LATCH_SERVER", &s.base);
        c.env_remove("LATCH_TOKEN");
        if let Some(t) = token {
            c.env("LATCH_TOKEN", t);
        }
        if json {
            c.arg("--json");
        }
        // No stored sign-in is read from the developer's home.
        c.env("HOME", std::env::temp_dir().join("latch-no-home"));
        c.output().unwrap()
    };
    let out = tokio::task::block_in_place(|| run(true, Some(&agent)));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert!(ids.contains(&"ci-cache"), "{v}");
    let cache = v
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "ci-cache")
        .unwrap();
    for k in [
        "kind",
        "environment",
        "production",
        "sensitivity",
        "actions",
        "max_ttl_secs",
        "default_ttl_secs",
    ] {
        assert!(cache.get(k).is_some(), "{k} missing: {cache}");
    }
    assert!(
        cache.get("settings").is_none(),
        "provider settings stay private: {cache}"
    );

    let out = tokio::task::block_in_place(|| run(false, Some(&agent)));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.starts_with("RESOURCE"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("ci-cache ")), "{text}");
    assert!(!text.contains('{'), "plain output has no JSON: {text}");

    let out = tokio::task::block_in_place(|| run(false, None));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("token_missing") && err.contains("LATCH_TOKEN"),
        "{err}"
    );
}

#[test]
fn serve_listens_where_told() {
    let dir = std::env::temp_dir().join(format!("latch-listen-{}", uuid::Uuid::new_v4().simple()));
    let cfg = latch_server::examples::write_example(&dir, "127.0.0.1:1").unwrap();
    let mut child = latch()
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let addr = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            let v: Value = serde_json::from_str(&l).ok()?;
            (v["fields"]["message"] == "latch is serving")
                .then(|| v["fields"]["addr"].as_str().map(str::to_owned))?
        });
    child.kill().ok();
    child.wait().ok();
    let addr = addr.expect("a `latch is serving` line with the address");
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    assert_ne!(addr, "127.0.0.1:1", "--listen replaces [server] listen");
    std::fs::remove_dir_all(&dir).ok();
}
