//! The CLI a newcomer enjoys (issue 20): readable times, durations everywhere, checked
//! environments, reported TTL cuts, colours only when wanted, completions and man pages, one
//! run per shell for development tokens, `--wait`, and errors that name the next step.
//!
//! Every test runs the real binary against a [`TestServer`].

use std::process::{Command, Output};

use latch_testkit::TestServer;
use serde_json::{Value, json};

/// The binary, with a private config directory and no token from the developer's environment.
pub(crate) fn latch(s: &TestServer, cfg: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_latch"));
    c.env("LATCH_SERVER", &s.base)
        .env("LATCH_CONFIG_DIR", cfg)
        .env("HOME", cfg)
        .env_remove("LATCH_TOKEN")
        .env_remove("NO_COLOR");
    c
}

/// A fresh private config directory (also HOME) for one test.
pub(crate) fn cfg_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("latch-newcomer-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `c` with `args`, as `token` when given (blocking, inside a multi-thread runtime).
pub(crate) fn run(mut c: Command, token: Option<&str>, args: &[&str]) -> Output {
    if let Some(t) = token {
        c.env("LATCH_TOKEN", t);
    }
    tokio::task::block_in_place(|| c.args(args).output().unwrap())
}

/// Its stdout.
pub(crate) fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Its stderr.
pub(crate) fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_read_as_local_iso_8601_in_plain_output_and_unix_seconds_in_json() {
    let s = TestServer::start().await;
    let cfg = cfg_dir();
    let agent = s.agent("newcomer-times").await;
    let o = run(
        latch(&s, &cfg),
        Some(&agent),
        &[
            "task",
            "open",
            "--purpose",
            "t",
            "--environment",
            "sandbox",
            "--ttl",
            "15m",
        ],
    );
    let text = out(&o);
    assert!(o.status.success(), "{}", err(&o));
    let expires = text.split("expires=").nth(1).unwrap();
    assert!(
        expires.as_bytes()[4] == b'-' && expires.contains('T'),
        "{text}"
    );
    assert!(
        expires.contains("(in ") || expires.contains(" ago)"),
        "{text}"
    );
    assert!(!text.contains('{') && !text.contains('['), "{text}");
    let o = run(latch(&s, &cfg), Some(&agent), &["task", "list", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v[0]["expires_at_unix_secs"].is_i64(), "{v}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durations_environments_and_ttl_cuts() {
    let s = TestServer::start().await;
    let cfg = cfg_dir();
    let agent = s.agent("newcomer-durations").await;
    let admin = s.human("auditor", &["latch-admins"]).await;
    // Durations: `90s`, `15m`, `1h`; a bare number says how to write one.
    for ttl in ["90s", "15m", "1h"] {
        let o = run(
            latch(&s, &cfg),
            Some(&agent),
            &[
                "task",
                "open",
                "--purpose",
                "d",
                "--environment",
                "sandbox",
                "--ttl",
                ttl,
                "--id-only",
            ],
        );
        assert!(o.status.success(), "{ttl}: {}", err(&o));
    }
    let o = run(
        latch(&s, &cfg),
        Some(&agent),
        &[
            "task",
            "open",
            "--purpose",
            "d",
            "--environment",
            "sandbox",
            "--ttl",
            "15",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("`15m`"), "{}", err(&o));
    // `audit tail --since 1h` takes a duration (and an RFC 3339 time).
    for since in ["1h", "2026-01-01T00:00:00Z"] {
        let o = run(
            latch(&s, &cfg),
            Some(&admin),
            &["audit", "tail", "--since", since],
        );
        assert!(o.status.success(), "--since {since}: {}", err(&o));
    }
    // An environment no resource is configured in is refused, naming the configured ones.
    let o = run(
        latch(&s, &cfg),
        Some(&agent),
        &["task", "open", "--purpose", "p", "--environment", "prod"],
    );
    assert_eq!(o.status.code(), Some(1));
    let e = err(&o);
    assert!(
        e.contains("`prod`") && e.contains("production") && e.contains("latch resources"),
        "{e}"
    );
    // A TTL beyond the resource's maximum is cut, and said so (stderr, and in --json).
    let task = s.open_task(&agent, "sandbox", 7200).await;
    let o = run(
        latch(&s, &cfg),
        Some(&agent),
        &[
            "request",
            &task,
            "--resource",
            "ci-cache",
            "--action",
            "read",
            "--ttl",
            "2h",
        ],
    );
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        err(&o).contains("notice: --ttl 2h was cut to"),
        "{}",
        err(&o)
    );
    let o = run(
        latch(&s, &cfg),
        Some(&agent),
        &[
            "request",
            &task,
            "--resource",
            "ci-cache",
            "--action",
            "read",
            "--ttl",
            "2h",
            "--json",
        ],
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ttl_clamped"]["requested_secs"], 7200, "{v}");
    assert!(v["notice"].as_str().unwrap().contains("--ttl"), "{v}");
    // Plain output carries no JSON fragments; `lease revoke` prints a sentence.
    let o = run(
        latch(&s, &cfg),
        Some(&agent),
        &[
            "request",
            &task,
            "--resource",
            "ci-cache",
            "--action",
            "read",
        ],
    );
    let text = out(&o);
    assert!(
        !text.contains("[]") && !text.contains("[\""),
        "no JSON lists: {text}"
    );
    let lease = text
        .lines()
        .find_map(|l| l.strip_prefix("lease:    "))
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    let o = run(latch(&s, &cfg), Some(&agent), &["lease", "revoke", &lease]);
    assert!(
        out(&o).starts_with(&format!("lease {lease} is now revoked")),
        "{}",
        out(&o)
    );
    // `exec --json` is refused, as one JSON document.
    let o = run(
        latch(&s, &cfg),
        Some(&agent),
        &[
            "exec",
            "--json",
            "--task-purpose",
            "x",
            "--request",
            "ci-cache:read",
            "--",
            "true",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("drop --json"),
        "{v}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colours_completions_and_man_pages() {
    let s = TestServer::start().await;
    let cfg = cfg_dir();
    let agent = s.agent("newcomer-colour").await;
    let task = s.open_task(&agent, "production", 3600).await;
    let ask = [
        "request",
        task.as_str(),
        "--resource",
        "deploy-pipeline",
        "--action",
        "deploy",
    ];
    let o = run(
        latch(&s, &cfg),
        Some(&agent),
        &[&ask[..], &["--color", "always"]].concat(),
    );
    assert!(
        out(&o).contains("\x1b["),
        "--color always colours: {}",
        out(&o)
    );
    let o = run(
        latch(&s, &cfg),
        Some(&agent),
        &[&ask[..], &["--color=never"]].concat(),
    );
    assert!(!out(&o).contains('\x1b'), "{}", out(&o));
    let mut c = latch(&s, &cfg);
    c.env("NO_COLOR", "1");
    let o = run(c, Some(&agent), &ask);
    assert!(!out(&o).contains('\x1b') && !err(&o).contains('\x1b'));

    for shell in ["bash", "zsh", "fish"] {
        let o = run(latch(&s, &cfg), None, &["completions", shell]);
        assert!(o.status.success() && out(&o).contains("latch"), "{shell}");
    }
    let script = cfg.join("latch.bash");
    let o = run(latch(&s, &cfg), None, &["completions", "bash"]);
    std::fs::write(&script, &o.stdout).unwrap();
    if latch_testkit::tool_available("bash", &["--version"]) {
        let check = Command::new("bash")
            .arg("-n")
            .arg(&script)
            .output()
            .unwrap();
        assert!(check.status.success(), "{}", err(&check));
    }
    let o = run(latch(&s, &cfg), None, &["man"]);
    assert!(out(&o).contains(".TH latch 1"), "{}", out(&o));
    let pages = cfg.join("man");
    let o = run(
        latch(&s, &cfg),
        None,
        &["man", "--dir", pages.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", err(&o));
    assert!(pages.join("latch-task.1").exists());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_tokens_keep_the_run_of_their_shell_and_its_tasks() {
    let s = TestServer::start().await;
    let cfg = cfg_dir();
    let token = |extra: &[&str]| {
        let o = run(
            latch(&s, &cfg),
            None,
            &[
                &[
                    "dev",
                    "token",
                    "--kind",
                    "workload",
                    "--repository",
                    "acme/payments-api",
                    "--ref",
                    "refs/heads/main",
                ][..],
                extra,
            ]
            .concat(),
        );
        assert!(o.status.success(), "{}", err(&o));
        out(&o).trim().to_owned()
    };
    let first = token(&[]);
    let o = run(
        latch(&s, &cfg),
        Some(&first),
        &[
            "task",
            "open",
            "--purpose",
            "kept",
            "--environment",
            "sandbox",
            "--id-only",
        ],
    );
    let task = out(&o).trim().to_owned();
    // A second token from the same parent process: same run, the task is still there.
    let second = token(&[]);
    assert_ne!(first, second);
    let o = run(latch(&s, &cfg), Some(&second), &["task", "show", &task]);
    assert!(o.status.success(), "{}", err(&o));
    let o = run(latch(&s, &cfg), Some(&second), &["task", "list", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    // `--new-run` starts another run: the task belongs to the old one.
    let third = token(&["--new-run"]);
    let o = run(latch(&s, &cfg), Some(&third), &["task", "show", &task]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("--run-id"), "{}", err(&o));
    // `--run-id` picks one explicitly.
    let fourth = token(&["--run-id", "picked"]);
    let o = run(latch(&s, &cfg), Some(&fourth), &["task", "list", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v, json!([]));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_wait_returns_once_approved() {
    let s = TestServer::start().await;
    let cfg = cfg_dir();
    let agent = s.agent("newcomer-wait").await;
    let bob = s.human("bob", &["prod-approvers"]).await;
    let task = s.open_task(&agent, "production", 3600).await;
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_latch"))
        .env("LATCH_SERVER", &s.base)
        .env("LATCH_CONFIG_DIR", &cfg)
        .env("LATCH_TOKEN", &agent)
        .args([
            "request",
            &task,
            "--resource",
            "deploy-pipeline",
            "--action",
            "deploy",
            "--wait",
            "60s",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pending = loop {
        let p = s.get(Some(&bob), "/v1/approvals/pending").await;
        if let Some(first) = p.body.as_array().and_then(|a| a.first()) {
            break first.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let r = s
        .post(
            Some(&bob),
            &format!(
                "/v1/approvals/{}/approve",
                pending["request"]["id"].as_str().unwrap()
            ),
            json!({"digest": pending["request"]["digest"], "reason": "release"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let o = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(out(&o).contains("credential"), "{}", out(&o));
    let waiting = err(&o)
        .lines()
        .filter(|l| l.contains("waiting for approval"))
        .count();
    assert_eq!(waiting, 1, "one status line: {}", err(&o));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_reported_error_names_its_next_step() {
    let s = TestServer::start().await;
    let cfg = cfg_dir();
    let agent = s.agent("newcomer-errors").await;
    let task = s.open_task(&agent, "sandbox", 600).await;
    let mut seen = Vec::new();
    // Unreachable broker: --server / LATCH_SERVER.
    let mut c = latch(&s, &cfg);
    c.env("LATCH_SERVER", "http://127.0.0.1:1");
    let o = run(c, Some(&agent), &["task", "list"]);
    let e = err(&o);
    seen.push(e.clone());
    assert!(
        e.contains("cannot reach") && e.contains("--server") && e.contains("LATCH_SERVER"),
        "{e}"
    );
    // No token: LATCH_TOKEN=$(latch dev token …) or latch login.
    let o = run(latch(&s, &cfg), None, &["resources"]);
    let e = err(&o);
    seen.push(e.clone());
    assert!(
        e.contains("export LATCH_TOKEN=$(latch dev token") && e.contains("latch login"),
        "{e}"
    );
    // Unknown resource: latch resources.
    let o = run(
        latch(&s, &cfg),
        Some(&agent),
        &[
            "request",
            &task,
            "--resource",
            "build-hostz",
            "--action",
            "read",
        ],
    );
    assert!(err(&o).contains("`latch resources`"), "{}", err(&o));
    seen.push(err(&o));
    // A dev token TTL out of bounds speaks of the flag.
    let o = run(latch(&s, &cfg), None, &["dev", "token", "--ttl", "2h"]);
    let e = err(&o);
    seen.push(e.clone());
    assert!(e.contains("--ttl") && !e.contains("ttl_secs"), "{e}");
    // Every one of them is one line.
    for e in &seen {
        assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    }
    s.stop().await;
}
