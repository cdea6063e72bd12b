//! The `latch` binary: policy validate/test, and the client commands against a real server.

use std::process::Command;

use latch_testkit::TestServer;

fn latch() -> Command {
    Command::new(env!("CARGO_BIN_EXE_latch"))
}

fn examples() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn policy_validate_and_test_on_the_examples() {
    let cfg = examples().join("latch.toml");
    let out = latch()
        .args(["policy", "validate", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("deploy-needs-approval"));
    let out = latch()
        .args(["policy", "test"])
        .arg(examples().join("policy-tests.toml"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("29 passed, 0 failed"), "{stdout}");
}

#[test]
fn policy_validate_names_the_position_and_policy_test_fails_on_mismatch() {
    let dir = std::env::temp_dir().join(format!("latch-cli-{}", uuid::Uuid::new_v4().simple()));
    let cfg = latch_server::examples::write_example(&dir, "127.0.0.1:0").unwrap();
    std::fs::write(
        dir.join("cases.toml"),
        "[[case]]\nname = \"wrong on purpose\"\nenvironment = \"sandbox\"\nresource = \"ci-cache\"\nactions = [\"read\"]\nexpect = \"deny\"\n\
         principal = { branch = \"main\", untrusted_source = false }\n",
    )
    .unwrap();
    let out = latch()
        .args(["policy", "test"])
        .arg(dir.join("cases.toml"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    std::fs::write(
        dir.join("policies/50-bad.cedar"),
        "forbid (principal, action, resource)\nwhen { context.nope };\n",
    )
    .unwrap();
    let out = latch()
        .args(["policy", "validate", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("50-bad.cedar:2:"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_commands_drive_a_task_with_json_output() {
    let s = TestServer::start().await;
    let agent = s.agent("cli").await;
    let bob = s.human("bob", &["prod-approvers"]).await;
    let run = |token: &str, args: &[&str]| {
        let out = latch()
            .args(args)
            .env("LATCH_SERVER", &s.base)
            .env("LATCH_TOKEN", token)
            .arg("--json")
            .output()
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (out.status.code(), v)
    };
    let (code, task) = tokio::task::block_in_place(|| {
        run(
            &agent,
            &[
                "task",
                "open",
                "--purpose",
                "cli",
                "--environment",
                "production",
                "--ttl",
                "1h",
            ],
        )
    });
    assert_eq!(code, Some(0), "{task}");
    let id = task["id"].as_str().unwrap().to_owned();
    let (code, r) = tokio::task::block_in_place(|| {
        run(
            &agent,
            &[
                "request",
                &id,
                "--resource",
                "deploy-pipeline",
                "--action",
                "deploy",
                "--ttl",
                "10m",
            ],
        )
    });
    assert_eq!(code, Some(4), "pending exits 4: {r}");
    let rid = r["request"]["id"].as_str().unwrap().to_owned();
    let digest = r["request"]["digest"].as_str().unwrap().to_owned();
    let (code, p) = tokio::task::block_in_place(|| run(&bob, &["pending"]));
    assert_eq!(code, Some(0));
    assert_eq!(p[0]["request"]["id"], rid.as_str());
    let (code, _) = tokio::task::block_in_place(|| {
        run(
            &bob,
            &["approve", &rid, "--digest", &digest, "--reason", "ok"],
        )
    });
    assert_eq!(code, Some(0));
    let (code, g) = tokio::task::block_in_place(|| run(&agent, &["claim", &id, &rid]));
    assert_eq!(code, Some(0), "{g}");
    let lease = g["lease"]["id"].as_str().unwrap().to_owned();
    let (code, _) =
        tokio::task::block_in_place(|| run(&agent, &["lease", "renew", &lease, "--ttl", "5m"]));
    assert_eq!(code, Some(0));
    let (code, d) = tokio::task::block_in_place(|| {
        run(
            &agent,
            &[
                "request",
                &id,
                "--resource",
                "payments-db",
                "--action",
                "admin",
            ],
        )
    });
    assert_eq!(code, Some(3), "denied exits 3: {d}");
    let (code, l) = tokio::task::block_in_place(|| run(&agent, &["lease", "list", &id]));
    assert_eq!(code, Some(0));
    assert_eq!(l.as_array().unwrap().len(), 1);
    let (code, t) = tokio::task::block_in_place(|| run(&agent, &["task", "complete", &id]));
    assert_eq!((code, t["state"].as_str()), (Some(0), Some("completed")));
    let (code, _) = tokio::task::block_in_place(|| run("garbage", &["task", "list"]));
    assert_eq!(code, Some(1));
    s.stop().await;
}

/// `latch audit tail | head -1`: the reader closes the pipe after one line; the CLI exits
/// quietly (0 or 141, as a SIGPIPE death), never with a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_output_pipe_ends_the_cli_quietly() {
    use std::io::Read;
    let s = TestServer::start().await;
    let admin = s.human("auditor", &["latch-admins"]).await;
    let agent = s.agent("pipe").await;
    for _ in 0..20 {
        s.open_task(&agent, "sandbox", 600).await;
    }
    for args in [
        &["audit", "tail", "--last", "1000"][..],
        &["audit", "export"],
    ] {
        let (status, stderr) = tokio::task::block_in_place(|| {
            let mut child = latch()
                .args(args)
                .env("LATCH_SERVER", &s.base)
                .env("LATCH_TOKEN", &admin)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut out = child.stdout.take().unwrap();
            let mut first = [0u8; 16];
            out.read_exact(&mut first).unwrap();
            drop(out); // what `head -c 16` does
            let status = child.wait().unwrap();
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            (status, err)
        });
        assert!(
            matches!(status.code(), Some(0 | 141)),
            "{status:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!stderr.contains("error"), "{args:?}: {stderr}");
    }
    s.stop().await;
}

/// Plain output with nothing copied from JSON: `--id-only` captures the task, request and
/// lease ids; a pending request prints the exact next commands (and no console page: this
/// server does not serve one);
/// `latch approve` without `--digest` shows the request as `latch pending` does and votes with
/// its digest (`--yes` without a terminal, a typed `y` on one), and refuses without either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_output_ids_next_steps_and_approve_without_a_digest() {
    let s = TestServer::start().await;
    let agent = s.agent("plain").await;
    let bob = s.human("bob", &["prod-approvers"]).await;
    let run = |token: &str, args: &[&str]| {
        let out = latch()
            .args(args)
            .env("LATCH_SERVER", &s.base)
            .env("LATCH_TOKEN", token)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let open = [
        "task",
        "open",
        "--purpose",
        "deploy",
        "--environment",
        "production",
        "--id-only",
    ];
    let (code, task, err) = tokio::task::block_in_place(|| run(&agent, &open));
    assert_eq!(code, Some(0), "{err}");
    let task = task.trim().to_owned();
    assert!(task.starts_with("task_") && !task.contains(' '), "{task}");
    let ask = [
        "request",
        &task,
        "--resource",
        "deploy-pipeline",
        "--action",
        "deploy",
    ];
    let (code, out, _) = tokio::task::block_in_place(|| run(&agent, &ask));
    assert_eq!(code, Some(4), "{out}");
    let rid = out
        .lines()
        .find_map(|l| l.strip_prefix("request:  "))
        .unwrap()
        .trim()
        .to_owned();
    // This server does not serve the console: no link to a page that does not exist (with
    // the console, `console_links.rs` sees the line).
    assert!(!out.contains("console:"), "{out}");
    assert!(
        out.contains(&format!("latch approve {rid} --reason")),
        "{out}"
    );
    assert!(out.contains(&format!("latch claim {task} {rid}")), "{out}");
    let (code, rid2, _) =
        tokio::task::block_in_place(|| run(&agent, &[&ask[..], &["--id-only"]].concat()));
    assert_eq!(code, Some(4));
    let rid2 = rid2.trim().to_owned();
    assert!(rid2.starts_with("req_") && rid2 != rid, "{rid2}");

    // No digest, no terminal, no --yes: refused, naming both ways out; nothing voted.
    let (code, _, err) =
        tokio::task::block_in_place(|| run(&bob, &["approve", &rid, "--reason", "release window"]));
    assert_eq!(code, Some(1));
    assert!(err.contains("--digest") && err.contains("--yes"), "{err}");
    // --yes: the request is shown as `latch pending` shows it, then approved by that digest.
    let (_, pending, _) = tokio::task::block_in_place(|| run(&bob, &["pending"]));
    let (code, out, err) = tokio::task::block_in_place(|| {
        run(
            &bob,
            &["approve", &rid, "--reason", "release window", "--yes"],
        )
    });
    assert_eq!(code, Some(0), "{out}{err}");
    let shown: String = out.lines().take(4).map(|l| format!("{l}\n")).collect();
    assert!(pending.contains(&shown), "{shown} not in {pending}");
    assert!(
        out.contains(&format!("request {rid} is now approved")),
        "{out}"
    );
    // An unknown request says where to look.
    let (code, _, err) =
        tokio::task::block_in_place(|| run(&bob, &["deny", "req_nope", "--reason", "x", "--yes"]));
    assert_eq!(code, Some(1));
    assert!(err.contains("latch pending"), "{err}");

    // On a terminal (a pseudo-terminal from util-linux `script`), a typed `y` confirms.
    if latch_testkit::tool_available("script", &["--version"]) {
        let cmd = format!(
            "{} deny {rid2} --reason 'not now'",
            env!("CARGO_BIN_EXE_latch")
        );
        let out = tokio::task::block_in_place(|| {
            use std::io::Write;
            let mut child = Command::new("script")
                .args(["-qec", &cmd, "/dev/null"])
                .env("LATCH_SERVER", &s.base)
                .env("LATCH_TOKEN", &bob)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            std::thread::sleep(std::time::Duration::from_secs(2));
            child.stdin.take().unwrap().write_all(b"y\n").unwrap();
            child.wait_with_output().unwrap()
        });
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Deny this request? [y/N]"), "{text}");
        assert!(
            text.contains(&format!("request {rid2} is now denied")),
            "{text}"
        );
    }

    let (code, out, _) = tokio::task::block_in_place(|| run(&agent, &["claim", &task, &rid]));
    assert_eq!(code, Some(0), "{out}");
    let (code, lease, _) =
        tokio::task::block_in_place(|| run(&agent, &["lease", "list", &task, "--id-only"]));
    assert_eq!(code, Some(0));
    assert!(
        lease.trim().starts_with("lease_") && lease.trim().lines().count() == 1,
        "{lease}"
    );
    s.stop().await;
}

/// A configuration file that does not parse is reported with its line and column and the
/// source line with a caret under the column, over several lines (not `\u{000a}` escapes).
#[test]
fn a_toml_error_prints_readably_over_several_lines() {
    let dir = std::env::temp_dir().join(format!("latch-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[server]\nlisten = \"127.0.0.1:0\"\nbad = = 3\n").unwrap();
    for args in [
        &["serve", "--config"][..],
        &["policy", "validate", "--config"],
    ] {
        let out = latch().args(args).arg(&bad).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("\\u{"), "{err}");
        let lines: Vec<&str> = err.lines().collect();
        assert!(lines.len() >= 4, "{err}");
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains("line 3, column 7"),
            "{err}"
        );
        assert!(lines.contains(&"3 | bad = = 3"), "{err}");
        assert!(lines.contains(&"  |       ^"), "{err}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
