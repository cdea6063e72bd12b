//! `latch bench` end to end against `latch serve` of the example configuration, as
//! BENCHMARKS.md runs it: grants, introspection and the empty-handler baseline (issue 19) come
//! out as one JSON document, each with calls and no error. A measurement, not a timing test:
//! nothing here asserts a rate.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read examples") {
        let p = e.expect("entry").path();
        let dest = to.join(p.file_name().expect("name"));
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).expect("copy");
        }
    }
}

#[test]
fn bench_reports_grants_introspection_and_the_empty_handler_baseline() {
    let bin = env!("CARGO_BIN_EXE_latch");
    let dir = std::env::temp_dir().join(format!("latch-bench-it-{}", std::process::id()));
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples"),
        &dir.join("examples"),
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let mut serve = Command::new(bin)
        .args(["serve", "--config", "examples/latch.toml", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("latch serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "latch serve did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = Command::new(bin)
        .args([
            "bench",
            "--server",
            &base,
            "--concurrency",
            "2",
            "--duration",
            "1s",
        ])
        .args(["--warmup", "0s", "--introspect", "--baseline", "--json"])
        .output()
        .expect("latch bench");
    let _ = serve.kill();
    let _ = serve.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let levels = doc["levels"].as_array().expect("levels");
    for mode in ["grant", "introspect", "empty_handler"] {
        let l = levels
            .iter()
            .find(|l| l["mode"] == mode)
            .unwrap_or_else(|| panic!("no {mode} level in {doc}"));
        assert!(l["requests"].as_u64().unwrap_or(0) > 0, "{l}");
        assert_eq!(l["errors"], 0, "{l}");
    }
    let summary = doc["summary"].as_str().unwrap_or_default();
    assert!(summary.contains("introspection at"), "{summary}");
}
