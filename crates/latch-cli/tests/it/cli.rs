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
    assert!(stdout.contains("11 passed, 0 failed"), "{stdout}");
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
