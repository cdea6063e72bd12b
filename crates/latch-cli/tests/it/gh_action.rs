//! The GitHub Action's shell part (`scripts/gh-action.sh`, called by `action.yml`) run as the
//! runner would run it: the job's identity from a stand-in of the Actions token service, a
//! real broker, the real `latch` binary. The wrapped command gets the credential and nothing
//! else (no OIDC request token, nothing in GITHUB_ENV), credentials are masked, and the task
//! ends with the step whether it succeeds or fails; the cleanup step cancels a task left open.

use latch_core::clock::Clock;
use latch_testkit::{TEST_AUDIENCE, TestIssuer, TestServer};
use serde_json::json;

use super::ambient::{ActionsTokenService, IDENTITY_VARS, scratch};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/gh-action.sh");

fn action(
    s: &TestServer,
    job: &ActionsTokenService,
    temp: &std::path::Path,
    mode: &str,
) -> tokio::process::Command {
    let mut c = tokio::process::Command::new("bash");
    for v in IDENTITY_VARS {
        c.env_remove(v);
    }
    c.arg(SCRIPT)
        .arg(mode)
        .current_dir(temp)
        .env("LATCH", env!("CARGO_BIN_EXE_latch"))
        .env("LATCH_CONFIG_DIR", temp.join("config"))
        .env("LATCH_K8S_TOKEN_FILE", "/nonexistent")
        .env("RUNNER_TEMP", temp)
        .env("GITHUB_ENV", temp.join("github_env"))
        .env("GITHUB_OUTPUT", temp.join("github_output"))
        .env("ACTIONS_ID_TOKEN_REQUEST_URL", &job.url)
        .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", &job.request_token)
        .env("INPUT_SERVER", &s.base)
        .env("INPUT_AUDIENCE", TEST_AUDIENCE)
        .env("INPUT_REQUESTS", "\n  ci-cache:read,write\n# a comment\n");
    c
}

/// The job's own identity (same issuer, same run), to look at its tasks.
fn job_token(s: &TestServer, run_id: &str) -> String {
    s.issuer
        .sign(&TestIssuer::github_claims(s.clock.now_unix_secs(), run_id))
}

#[tokio::test]
async fn the_action_runs_the_step_with_credentials_only_and_ends_the_task() {
    let s = TestServer::start().await;
    let job = ActionsTokenService::start(&s, "8101", json!({})).await;
    let temp = scratch();
    std::fs::write(temp.join("github_env"), "").unwrap();
    let out = action(&s, &job, &temp, "run")
        .env(
            "INPUT_RUN",
            "printf %s \"$LATCH_CREDENTIAL_CI_CACHE\" > cred\n\
             echo \"task=$LATCH_TASK_ID\"\n\
             echo \"request_token=${ACTIONS_ID_TOKEN_REQUEST_TOKEN:-absent}\"\n\
             echo \"request_url=${ACTIONS_ID_TOKEN_REQUEST_URL:-absent}\"\n\
             exit 5",
        )
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stdout}\n{stderr}");
    assert!(stdout.contains("request_token=absent"), "{stdout}");
    assert!(stdout.contains("request_url=absent"), "{stdout}");
    let cred = std::fs::read_to_string(temp.join("cred")).unwrap();
    assert!(cred.len() > 100, "the step saw its credential");
    assert!(
        stdout.contains(&format!("::add-mask::{cred}")),
        "the credential is masked in the log before the command runs"
    );
    assert_eq!(
        std::fs::read_to_string(temp.join("github_env")).unwrap(),
        ""
    );
    assert!(!temp.join("github_output").exists());
    // The step failed; the task is completed all the same, the credential revoked.
    let task = stdout
        .lines()
        .find_map(|l| l.strip_prefix("task="))
        .unwrap();
    assert_eq!(s.introspect(&cred).await["active"], false);
    let agent = job_token(&s, "8101");
    let t = s.get(Some(&agent), &format!("/v1/tasks/{task}")).await;
    assert_eq!(t.body["state"], "completed", "{}", t.body);
    assert_eq!(t.body["owner"]["run_binding"], "gh-run:8101/1");

    // The cleanup step after it: nothing left to do.
    let out = action(&s, &job, &temp, "cleanup").output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("cancelled"));
}

#[tokio::test]
async fn the_cleanup_step_cancels_a_task_a_killed_latch_left_open() {
    let s = TestServer::start().await;
    let job = ActionsTokenService::start(&s, "8102", json!({})).await;
    let temp = scratch();
    // `latch exec` SIGKILLed by the command it ran: nothing ended the task.
    let out = action(&s, &job, &temp, "run")
        .env(
            "INPUT_RUN",
            "echo \"task=$LATCH_TASK_ID\"; kill -9 $PPID; sleep 1",
        )
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let task = stdout
        .lines()
        .find_map(|l| l.strip_prefix("task="))
        .unwrap()
        .to_owned();
    let agent = job_token(&s, "8102");
    let t = s.get(Some(&agent), &format!("/v1/tasks/{task}")).await;
    assert_eq!(t.body["state"], "open", "{}", t.body);

    let out = action(&s, &job, &temp, "cleanup").output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("cancelled, credentials revoked"),
        "{stderr}"
    );
    let t = s.get(Some(&agent), &format!("/v1/tasks/{task}")).await;
    assert_eq!(t.body["state"], "cancelled", "{}", t.body);
}

#[tokio::test]
async fn the_action_refuses_a_job_without_id_token_permission() {
    let s = TestServer::start().await;
    let job = ActionsTokenService::start(&s, "8103", json!({})).await;
    let temp = scratch();
    let out = action(&s, &job, &temp, "run")
        .env_remove("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
        .env("INPUT_RUN", "true")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("id-token: write"), "{stderr}");
}
