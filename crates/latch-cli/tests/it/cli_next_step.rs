//! The newcomer walkthrough's remaining gaps (issue 20): every error the CLI can receive names
//! its next step for whoever is calling, `--server` is checked, `--ttl` errors speak in
//! durations, empty lists say so, the manual page lists the environment and exit codes, and
//! completion offers no file names for values that are not paths.
//!
//! Every test runs the real binary against a [`TestServer`].

use std::process::{Command, Output};

use latch_testkit::TestServer;

use super::cli_newcomer::{cfg_dir, err, latch, out, run};

/// One line on stderr, exit 1.
fn one_line_error(o: &Output) -> String {
    let e = err(o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewing_a_revoked_lease_names_lease_list_and_a_new_request() {
    let s = TestServer::start().await;
    let cfg = cfg_dir();
    let agent = s.agent("next-lease").await;
    let task = s.open_task(&agent, "sandbox", 600).await;
    let r = s.request(&agent, &task, "ci-cache", &["read"], None).await;
    let lease = r.body["lease"]["id"].as_str().unwrap().to_owned();
    let o = run(latch(&s, &cfg), Some(&agent), &["lease", "revoke", &lease]);
    assert!(o.status.success(), "{}", err(&o));
    let o = run(latch(&s, &cfg), Some(&agent), &["lease", "renew", &lease]);
    let e = one_line_error(&o);
    assert!(e.contains("lease_not_active"), "{e}");
    assert!(
        e.contains("`latch lease list TASK`") && e.contains("latch request TASK"),
        "{e}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_digest_names_approve_without_digest_and_pending() {
    let s = TestServer::start().await;
    let cfg = cfg_dir();
    let agent = s.agent("next-digest").await;
    let bob = s.human("bob", &["prod-approvers"]).await;
    let task = s.open_task(&agent, "production", 3600).await;
    let r = s
        .request(&agent, &task, "deploy-pipeline", &["deploy"], None)
        .await;
    let req = r.body["request"]["id"].as_str().unwrap().to_owned();
    let o = run(
        latch(&s, &cfg),
        Some(&bob),
        &[
            "approve",
            &req,
            "--digest",
            &"ab".repeat(32),
            "--reason",
            "ship",
        ],
    );
    let e = one_line_error(&o);
    assert!(e.contains("approval_digest_mismatch"), "{e}");
    assert!(
        e.contains(&format!("`latch approve {req} --reason …`"))
            && e.contains("without --digest")
            && e.contains("`latch pending`"),
        "{e}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approver_commands_name_a_human_token() {
    let s = TestServer::start().await;
    let cfg = cfg_dir();
    let agent = s.agent("next-human").await;
    // No token: a human one is named, never a workload one.
    let o = run(latch(&s, &cfg), None, &["pending"]);
    let e = one_line_error(&o);
    assert!(
        e.contains("token_missing") && e.contains("--kind human") && e.contains("latch login"),
        "{e}"
    );
    assert!(!e.contains("workload"), "{e}");
    // A workload token where a human one is needed.
    let o = run(latch(&s, &cfg), Some(&agent), &["pending"]);
    let e = one_line_error(&o);
    assert!(
        e.contains("wrong_principal_kind") && e.contains("takes a human token"),
        "{e}"
    );
    // `dev token --kind human` without `--subject` names the flag.
    let o = run(latch(&s, &cfg), None, &["dev", "token", "--kind", "human"]);
    let e = one_line_error(&o);
    assert!(e.contains("--subject ID") && e.contains("--group"), "{e}");
    let o = run(latch(&s, &cfg), None, &["dev", "token", "--kind", "robot"]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_urls_are_checked_and_a_bare_loopback_address_is_http() {
    let s = TestServer::start().await;
    let cfg = cfg_dir();
    let agent = s.agent("next-server").await;
    for bad in ["http://127.0.0.1:8080/v1", "broker.example.com:8080"] {
        // As a flag, and from the environment.
        let o = run(
            latch(&s, &cfg),
            Some(&agent),
            &["task", "list", "--server", bad],
        );
        assert_eq!(o.status.code(), Some(2), "{}", err(&o));
        let first = err(&o).lines().next().unwrap().to_owned();
        assert!(
            first.contains("http://HOST:PORT") && first.contains("LATCH_SERVER"),
            "{first}"
        );
        let mut c = latch(&s, &cfg);
        c.env("LATCH_SERVER", bad);
        let o = run(c, Some(&agent), &["task", "list"]);
        assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    }
    let bare = s.base.trim_start_matches("http://").to_owned();
    let mut c = latch(&s, &cfg);
    c.env("LATCH_SERVER", &bare);
    let o = run(c, Some(&agent), &["task", "list"]);
    assert!(o.status.success(), "{bare}: {}", err(&o));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_ttl_errors_speak_of_the_flag_in_durations() {
    let s = TestServer::start().await;
    let cfg = cfg_dir();
    let agent = s.agent("next-ttl").await;
    let o = run(
        latch(&s, &cfg),
        Some(&agent),
        &[
            "task",
            "open",
            "--purpose",
            "long",
            "--environment",
            "sandbox",
            "--ttl",
            "9h",
        ],
    );
    let e = one_line_error(&o);
    assert!(
        e.contains("`--ttl` must be between 1s and 8h, got 9h"),
        "{e}"
    );
    assert!(!e.contains("seconds") && !e.contains("28800"), "{e}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_lists_say_so_in_one_line() {
    let s = TestServer::start().await;
    let cfg = cfg_dir();
    let agent = s.agent("next-empty").await;
    let bob = s.human("bob", &["prod-approvers"]).await;
    let admin = s.human("ops", &["latch-admins"]).await;
    let said = |token: &str, args: &[&str], needle: &str| {
        let o = run(latch(&s, &cfg), Some(token), args);
        assert!(o.status.success(), "{args:?}: {}", err(&o));
        let text = out(&o);
        assert_eq!(text.lines().count(), 1, "{args:?}: {text}");
        assert!(text.contains(needle), "{args:?}: {text}");
    };
    said(&agent, &["task", "list"], "latch task open");
    let task = s.open_task(&agent, "sandbox", 600).await;
    said(&agent, &["lease", "list", &task], "latch request");
    said(&bob, &["pending"], "no requests are waiting for your vote");
    said(&admin, &["admin", "freezes"], "no freezes");
    // An open task shows its expiry; an ended one when it ended, not an expiry that no longer
    // applies.
    said(&agent, &["task", "list"], "expires=");
    let o = run(latch(&s, &cfg), Some(&agent), &["task", "complete", &task]);
    assert!(o.status.success(), "{}", err(&o));
    said(&agent, &["task", "list"], "ended=");
    // `--json` stays the API's answer.
    let o = run(latch(&s, &cfg), Some(&bob), &["pending", "--json"]);
    assert_eq!(out(&o).trim(), "[]");
    s.stop().await;
}

#[test]
fn the_manual_lists_the_environment_and_the_exit_codes() {
    let bin = env!("CARGO_BIN_EXE_latch");
    let o = Command::new(bin).arg("man").output().unwrap();
    let page = out(&o);
    for needle in [
        ".SH \"ENVIRONMENT\"",
        ".SH \"EXIT STATUS\"",
        "LATCH_SERVER",
        "LATCH_TOKEN",
        "LATCH_LOG",
        "NO_COLOR",
        "LATCH_CONFIG_DIR",
        "Access pending approval",
    ] {
        assert!(page.contains(needle), "{needle}");
    }
    let dir = std::env::temp_dir().join(format!("latch-man-{}", uuid::Uuid::new_v4().simple()));
    let o = Command::new(bin)
        .args(["man", "--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let root = std::fs::read_to_string(dir.join("latch.1")).unwrap();
    assert!(root.contains(".SH \"EXIT STATUS\""));
    assert!(dir.join("latch-task.1").exists());
}

#[test]
fn bash_completion_offers_no_files_for_values_that_are_not_paths() {
    let o = Command::new(env!("CARGO_BIN_EXE_latch"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    let script = out(&o);
    let after = |flag: &str| -> Vec<String> {
        let lines: Vec<&str> = script.lines().collect();
        lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.trim() == format!("{flag})"))
            .map(|(i, _)| lines[i + 1].trim().to_owned())
            .collect()
    };
    for flag in [
        "--environment",
        "--purpose",
        "--server",
        "--reason",
        "--ttl",
    ] {
        let seen = after(flag);
        assert!(!seen.is_empty(), "{flag}");
        for l in seen {
            assert!(!l.contains("compgen -f"), "{flag}: {l}");
        }
    }
    assert!(
        after("--kind").iter().any(|l| l.contains("workload human")),
        "{:?}",
        after("--kind")
    );
    // Paths keep file completion.
    assert!(after("--config").iter().any(|l| l.contains("compgen -f")));
}
