//! `latch exec` against a real server: credentials in the environment or in files, output
//! streamed, exit code and signals propagated, and the task completed (every credential
//! revoked) however the command ends.

use std::process::Stdio;

use latch_testkit::TestServer;

fn latch(s: &TestServer, token: &str) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_latch"));
    c.env("LATCH_SERVER", &s.base).env("LATCH_TOKEN", token);
    c
}

fn scratch() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("latch-exec-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test]
async fn exec_runs_the_command_with_credentials_and_revokes_on_exit() {
    let s = TestServer::start().await;
    let agent = s.agent("800").await;
    let dir = scratch();
    let out = latch(&s, &agent)
        .current_dir(&dir)
        .args([
            "exec",
            "--task-purpose",
            "warm the cache",
            "--environment",
            "sandbox",
            "--request",
            "ci-cache:read,write",
            "--",
            "sh",
            "-c",
            "printf %s \"$LATCH_CREDENTIAL_CI_CACHE\" > token; echo \"task=$LATCH_TASK_ID\"; \
             echo \"lease=$LATCH_LEASE_ID_CI_CACHE\"; echo \"identity=${LATCH_TOKEN:-absent}\"; exit 7",
        ])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{stdout}\n{stderr}");
    assert!(stdout.contains("identity=absent"), "{stdout}");
    let task = stdout
        .lines()
        .find_map(|l| l.strip_prefix("task="))
        .unwrap()
        .to_owned();
    let token = std::fs::read_to_string(dir.join("token")).unwrap();
    assert!(token.len() > 100, "the command saw its credential");
    // After the command: the task is completed and the credential revoked.
    let i = s.introspect(&token).await;
    assert_eq!(i["active"], false);
    let t = s.get(Some(&agent), &format!("/v1/tasks/{task}")).await;
    assert_eq!(t.body["state"], "completed");
    let leases = s
        .get(Some(&agent), &format!("/v1/tasks/{task}/leases"))
        .await;
    assert_eq!(leases.body[0]["state"], "revoked");
    assert_eq!(leases.body[0]["revoke_reason"], "task_completed");
    assert!(stderr.contains("credentials revoked"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
    s.stop().await;
}

#[tokio::test]
async fn exec_credential_files_are_private_and_removed() {
    let s = TestServer::start().await;
    let agent = s.agent("801").await;
    let dir = scratch();
    let creds = dir.join("creds");
    let out = latch(&s, &agent)
        .current_dir(&dir)
        .args(["exec", "--task-purpose", "files", "--request", "ci-cache:read"])
        .arg("--credential-dir")
        .arg(&creds)
        .args([
            "--",
            "sh",
            "-c",
            "stat -c %a \"$LATCH_CREDENTIAL_FILE_CI_CACHE\"; cp \"$LATCH_CREDENTIAL_FILE_CI_CACHE\" copy; \
             echo \"env=${LATCH_CREDENTIAL_CI_CACHE:-absent}\"; \
             echo \"dir=$(stat -c %a \"$(dirname \"$LATCH_CREDENTIAL_FILE_CI_CACHE\")\")\"; \
             echo \"path=$LATCH_CREDENTIAL_FILE_CI_CACHE\"",
        ])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("600\n"), "{stdout}");
    assert!(stdout.contains("env=absent"));
    assert!(stdout.contains("dir=700\n"), "{stdout}");
    // The file was in a fresh subdirectory of ours, removed with it; the given directory
    // itself is left alone (not chmod-ed) and empty.
    let path = stdout
        .lines()
        .find_map(|l| l.strip_prefix("path="))
        .unwrap();
    let sub = std::path::Path::new(path).parent().unwrap();
    assert_eq!(sub.parent().unwrap(), creds.as_path(), "{path}");
    assert!(!sub.exists(), "private directory removed");
    assert_eq!(std::fs::read_dir(&creds).unwrap().count(), 0);
    assert!(!creds.join("ci-cache").exists(), "credential file removed");
    let token = std::fs::read_to_string(dir.join("copy")).unwrap();
    assert_eq!(s.introspect(&token).await["active"], false);
    let _ = std::fs::remove_dir_all(&dir);
    s.stop().await;
}

#[tokio::test]
async fn exec_denied_runs_nothing_and_exits_3() {
    let s = TestServer::start().await;
    let agent = s.agent("802").await;
    let dir = scratch();
    let out = latch(&s, &agent)
        .current_dir(&dir)
        .args([
            "exec",
            "--task-purpose",
            "try prod from sandbox",
            "--request",
            "ci-cache:read",
            "--request",
            "payments-db:read",
            "--",
            "touch",
            "ran",
        ])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("payments-db denied"), "{stderr}");
    assert!(!dir.join("ran").exists());
    // The task was cancelled, revoking the credential already granted for ci-cache.
    let tasks = s.get(Some(&agent), "/v1/tasks").await;
    let t = &tasks.body[0];
    assert_eq!(t["state"], "cancelled", "{t}");
    let leases = s
        .get(
            Some(&agent),
            &format!("/v1/tasks/{}/leases", t["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(leases.body[0]["state"], "revoked");
    let _ = std::fs::remove_dir_all(&dir);
    s.stop().await;
}

#[tokio::test]
async fn exec_forwards_a_signal_and_revokes_when_interrupted() {
    let s = TestServer::start().await;
    let agent = s.agent("803").await;
    let dir = scratch();
    let child = latch(&s, &agent)
        .current_dir(&dir)
        .args([
            "exec",
            "--task-purpose",
            "long job",
            "--request",
            "ci-cache:read",
            "--",
            "sh",
            "-c",
            "trap 'echo got-term; exit 42' TERM; printf %s \"$LATCH_CREDENTIAL_CI_CACHE\" > token.tmp; \
             mv token.tmp token; while true; do sleep 0.1; done",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait (bounded) for the command to be running with its credential.
    let tok_path = dir.join("token");
    for _ in 0..200 {
        if tok_path.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let token = std::fs::read_to_string(&tok_path).expect("command started");
    assert_eq!(s.introspect(&token).await["active"], true);
    let pid = child.id().unwrap().to_string();
    let k = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(k.success());
    let out = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("latch exec ends after the signal")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("got-term"),
        "the command got the signal: {stdout}"
    );
    assert_eq!(out.status.code(), Some(42));
    assert_eq!(s.introspect(&token).await["active"], false);
    let _ = std::fs::remove_dir_all(&dir);
    s.stop().await;
}

#[tokio::test]
async fn exec_revokes_when_the_command_crashes() {
    let s = TestServer::start().await;
    let agent = s.agent("804").await;
    let dir = scratch();
    let out = latch(&s, &agent)
        .current_dir(&dir)
        .args([
            "exec",
            "--task-purpose",
            "crash",
            "--request",
            "ci-cache:read",
            "--",
            "sh",
            "-c",
            "printf %s \"$LATCH_CREDENTIAL_CI_CACHE\" > token; kill -SEGV $$",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(128 + 11),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = std::fs::read_to_string(dir.join("token")).unwrap();
    assert_eq!(s.introspect(&token).await["active"], false);
    let _ = std::fs::remove_dir_all(&dir);
    s.stop().await;
}

#[tokio::test]
async fn exec_waits_for_a_step_up_approval_when_asked() {
    let s = TestServer::start().await;
    let agent = s.agent("805").await;
    let dir = scratch();
    let child = latch(&s, &agent)
        .current_dir(&dir)
        .args([
            "exec",
            "--task-purpose",
            "deploy",
            "--environment",
            "production",
            "--request",
            "deploy-pipeline:deploy",
            "--ttl",
            "10m",
            "--wait-approval",
            "60s",
            "--",
            "sh",
            "-c",
            "test -n \"$LATCH_CREDENTIAL_DEPLOY_PIPELINE\" && echo deployed",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Approve as soon as the request shows up for the approver (bounded wait).
    let bob = s.human("bob", &["prod-approvers"]).await;
    let mut approved = false;
    for _ in 0..200 {
        let p = s.get(Some(&bob), "/v1/approvals/pending").await;
        if let Some(r) = p.body.as_array().and_then(|a| a.first()) {
            let rid = r["request"]["id"].as_str().unwrap();
            let a = s
                .post(
                    Some(&bob),
                    &format!("/v1/approvals/{rid}/approve"),
                    serde_json::json!({"digest": r["request"]["digest"], "reason": "ok"}),
                )
                .await;
            assert_eq!(a.status, 200, "{}", a.body);
            approved = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(approved, "the request reached the approver");
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("latch exec finishes after the approval")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("deployed"));
    assert!(stderr.contains("waiting for approval"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
    s.stop().await;
}

/// The command runs as our uid, but cannot read `latch exec`'s environment (the identity
/// token) through `/proc/$PPID/environ`. As root, `latch exec` and the command run without
/// capabilities (CAP_SYS_PTRACE overrides non-dumpability, and a capability-less process may
/// never inspect a more capable one anyway), as an ordinary user's would.
#[tokio::test]
async fn exec_child_cannot_read_the_identity_token_from_the_parent() {
    use std::os::unix::fs::MetadataExt;
    let s = TestServer::start().await;
    let agent = s.agent("806").await;
    let bin = env!("CARGO_BIN_EXE_latch");
    let mut c = if std::fs::metadata("/proc/self").unwrap().uid() == 0 {
        let mut c = tokio::process::Command::new("setpriv");
        c.args(["--inh-caps=-all", "--bounding-set=-all", bin]);
        c
    } else {
        tokio::process::Command::new(bin)
    };
    let out = c
        .env("LATCH_SERVER", &s.base)
        .env("LATCH_TOKEN", &agent)
        .args([
            "exec",
            "--task-purpose",
            "peek",
            "--request",
            "ci-cache:read",
            "--",
            "sh",
            "-c",
            "grep -c CapEff:.0000000000000000 /proc/self/status; cat /proc/$PPID/environ; echo; \
             cat /proc/$PPID/cmdline; echo",
        ])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(!stdout.contains(&agent), "token leaked: {stdout}");
    assert!(!stdout.contains("LATCH_TOKEN"), "{stdout}");
    assert!(
        stdout.starts_with("1\n"),
        "the command ran without capabilities: {stdout}"
    );
    assert!(stderr.contains("Permission denied"), "{stderr}");
    assert!(!stderr.contains("WARNING: --token"), "{stderr}");

    // `--token-file` works (trimmed); `--token` on the command line draws a warning.
    let dir = scratch();
    let f = dir.join("token");
    std::fs::write(&f, format!("  {agent}\n")).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_latch"))
        .env("LATCH_SERVER", &s.base)
        .env_remove("LATCH_TOKEN")
        .args(["exec", "--token-file"])
        .arg(&f)
        .args([
            "--task-purpose",
            "p",
            "--request",
            "ci-cache:read",
            "--",
            "true",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_latch"))
        .env("LATCH_SERVER", &s.base)
        .env_remove("LATCH_TOKEN")
        .args(["exec", "--token", &agent])
        .args([
            "--task-purpose",
            "p",
            "--request",
            "ci-cache:read",
            "--",
            "true",
        ])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("WARNING: --token on the command line"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    s.stop().await;
}

/// A symlink planted in `--credential-dir` where a credential file would have gone is not
/// followed: the credential goes into a fresh private subdirectory, and the link's target is
/// untouched.
#[tokio::test]
async fn exec_credential_dir_does_not_follow_a_planted_symlink() {
    let s = TestServer::start().await;
    let agent = s.agent("807").await;
    let dir = scratch();
    let creds = dir.join("creds");
    std::fs::create_dir_all(&creds).unwrap();
    let victim = dir.join("victim");
    std::fs::write(&victim, "original").unwrap();
    std::os::unix::fs::symlink(&victim, creds.join("ci-cache")).unwrap();
    let out = latch(&s, &agent)
        .current_dir(&dir)
        .args(["exec", "--task-purpose", "files", "--request", "ci-cache:read"])
        .arg("--credential-dir")
        .arg(&creds)
        .args([
            "--",
            "sh",
            "-c",
            "test ! -L \"$LATCH_CREDENTIAL_FILE_CI_CACHE\" && wc -c < \"$LATCH_CREDENTIAL_FILE_CI_CACHE\"",
        ])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.trim().parse::<usize>().unwrap() > 100, "{stdout}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "original");
    assert!(creds.join("ci-cache").is_symlink(), "left alone");
    // Only the planted link remains: the private subdirectory is gone.
    assert_eq!(std::fs::read_dir(&creds).unwrap().count(), 1);
    let _ = std::fs::remove_dir_all(&dir);
    s.stop().await;
}
