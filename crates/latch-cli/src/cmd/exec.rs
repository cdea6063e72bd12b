//! `latch exec`: run one command inside a task, with just-in-time credentials.
//!
//! Opens a task, asks for each `--request RESOURCE:ACTION[,ACTION…]`, runs the command with
//! the credentials in its environment (or in files it names), streams its output (the child
//! inherits stdin, stdout and stderr), forwards SIGINT, SIGTERM, SIGHUP and SIGQUIT to it,
//! and when it exits — normally, by crashing, or because it was interrupted — completes the
//! task, which revokes every credential minted in it. The exit code is the command's (128 +
//! signal number when a signal ended it).
//!
//! # Security
//! The workload identity token (`LATCH_TOKEN`) and every other identity source's secret in the
//! environment (`ACTIONS_ID_TOKEN_REQUEST_URL`/`_TOKEN`, the GitLab ID token variable, an
//! `--identity env:VAR`) are removed from the child's environment: the command gets only the
//! task's credentials, never the power to open more tasks. A token file or a SPIFFE Workload
//! API socket readable by the same user cannot be hidden this way: run the command as another
//! user (or in another container) when that matters. Since the
//! command runs as the same user, `latch exec` also makes itself non-dumpable
//! (`PR_SET_DUMPABLE` 0, Linux) before anything else, so the command cannot read the token
//! from `/proc/$PPID/environ` or `/proc/$PPID/mem` (a process with CAP_SYS_PTRACE, e.g. an
//! unrestricted root, still can). `LATCH_TOKEN` is deliberately not `remove_var`ed from our
//! own environment: `unsafe` is forbidden in this workspace, and unsetting it would not
//! scrub the kernel's copy shown in `/proc/PID/environ` anyway. `--token` on the command line
//! is readable by everyone in `/proc/PID/cmdline` whatever we do, so it draws a warning;
//! `--token-file` avoids both. Credential
//! files are created `0600` (`O_EXCL|O_NOFOLLOW`) in a fresh `0700` directory of ours inside
//! `--credential-dir`, removed with them when the command ends. The command runs in its own
//! process group; forwarded signals go to the whole group. If
//! `latch exec` itself is killed with SIGKILL nothing can run; the task's TTL (`--task-ttl`)
//! then bounds every credential.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::{Value, json};

use super::wait::{WaitStatus, groups_text};
use crate::client::{Answer, Client};

/// Arguments of `latch exec`.
#[derive(Args)]
pub struct ExecArgs {
    /// Why the command needs access (the task's purpose, shown to approvers).
    #[arg(long)]
    task_purpose: String,
    /// Environment of the task (`sandbox`, `staging`, `production`, …).
    #[arg(long, default_value = "sandbox")]
    environment: String,
    /// `RESOURCE:ACTION[,ACTION…]` to obtain before running the command (repeat).
    #[arg(long = "request", value_name = "RESOURCE:ACTIONS", required = true)]
    requests: Vec<String>,
    /// Credential TTL, e.g. `10m` (default: each resource's default).
    #[arg(long, value_parser = crate::human::duration_arg, value_name = "DURATION")]
    ttl: Option<humantime::Duration>,
    /// Task TTL, e.g. `1h`: the hard end of every credential, even if `latch` is killed.
    #[arg(long, value_parser = crate::human::duration_arg, value_name = "DURATION")]
    task_ttl: Option<humantime::Duration>,
    /// Write each credential to `DIR/latch-RANDOM/RESOURCE` (a fresh 0700 directory, files
    /// 0600) instead of the environment; the command gets `LATCH_CREDENTIAL_FILE_<RESOURCE>`.
    /// The directory is removed afterwards.
    #[arg(long, value_name = "DIR")]
    credential_dir: Option<PathBuf>,
    /// Read the workload token from FILE (trimmed) instead of `--token`/`LATCH_TOKEN`; unlike
    /// `--token`, it is not visible in the process list.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// How long to wait for a step-up approval before giving up (`0s`: do not wait).
    #[arg(long, default_value = "0s", value_parser = crate::human::duration_arg)]
    wait_approval: humantime::Duration,
    /// The command and its arguments (after `--`).
    #[arg(trailing_var_arg = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// `ci-cache` → `CI_CACHE`: the suffix of the environment variable names.
pub fn env_suffix(resource: &str) -> String {
    resource
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn parse_request(r: &str) -> Result<(String, Vec<String>), String> {
    let (res, acts) = r
        .split_once(':')
        .ok_or_else(|| format!("`--request {r}`: expected RESOURCE:ACTION[,ACTION…]"))?;
    let actions: Vec<String> = acts
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    if res.is_empty() || actions.is_empty() {
        return Err(format!(
            "`--request {r}`: expected RESOURCE:ACTION[,ACTION…]"
        ));
    }
    Ok((res.to_owned(), actions))
}

enum Obtained {
    Granted(Value),
    Refused(ExitCode, String),
}

async fn obtain(
    c: &Client,
    task: &str,
    resource: &str,
    actions: &[String],
    ttl: Option<i64>,
    justification: &str,
    wait: Duration,
) -> Result<Obtained, String> {
    let a = c
        .post(
            &format!("/v1/tasks/{task}/requests"),
            &json!({"resource": resource, "actions": actions, "ttl_secs": ttl,
                    "justification": justification}),
        )
        .await?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut a: Answer = a;
    let mut status = WaitStatus::new(resource);
    loop {
        let state = a.body.get("status").and_then(Value::as_str);
        if state != Some("pending") {
            status.finish();
        }
        match state {
            Some("granted") => return Ok(Obtained::Granted(a.body)),
            Some("denied") => {
                let d = &a.body["request"]["decision"];
                let reasons: Vec<&str> = d["reasons"]
                    .as_array()
                    .map(|v| v.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                return Ok(Obtained::Refused(
                    ExitCode::from(3),
                    format!(
                        "access to {resource} denied (policies {}): {}",
                        crate::human::list(&d["policy_ids"], "none"),
                        reasons.join("; ")
                    ),
                ));
            }
            Some("pending") => {
                let rid = a.body["request"]["id"].as_str().unwrap_or("").to_owned();
                if tokio::time::Instant::now() >= deadline {
                    status.finish();
                    return Ok(Obtained::Refused(
                        ExitCode::from(4),
                        format!(
                            "access to {resource} needs approval from {} (request {}); not \
                             waiting longer: run again with `--wait-approval 10m`, and an \
                             approver approves it meanwhile (the console link or `latch approve`, \
                             printed while it waits)",
                            groups_text(&a.body["request"]["decision"]["groups"]),
                            crate::render::txt(&a.body["request"]["id"], "")
                        ),
                    ));
                }
                status.show(&a.body, deadline);
                tokio::time::sleep(Duration::from_secs(2)).await;
                a = c
                    .post(
                        &format!("/v1/tasks/{task}/requests/{rid}/claim"),
                        &json!({}),
                    )
                    .await?;
            }
            _ => return Err(format!("access to {resource}: {}", a.error_line())),
        }
    }
}

#[cfg(unix)]
fn forwardable_signals() -> Result<Vec<(i32, tokio::signal::unix::Signal)>, String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut v = Vec::new();
    for k in [
        SignalKind::interrupt(),
        SignalKind::terminate(),
        SignalKind::hangup(),
        SignalKind::quit(),
    ] {
        v.push((
            k.as_raw_value(),
            signal(k).map_err(|e| format!("cannot handle signals: {e}"))?,
        ));
    }
    Ok(v)
}

/// Waits for the first of the signals; returns its number.
#[cfg(unix)]
async fn next_signal(sigs: &mut [(i32, tokio::signal::unix::Signal)]) -> i32 {
    let futs = sigs.iter_mut().map(|(n, s)| {
        let n = *n;
        Box::pin(async move {
            s.recv().await;
            n
        })
    });
    futures_select_all(futs).await
}

#[cfg(unix)]
async fn futures_select_all<F: std::future::Future<Output = i32> + Unpin>(
    futs: impl Iterator<Item = F>,
) -> i32 {
    let mut futs: Vec<F> = futs.collect();
    std::future::poll_fn(move |cx| {
        for f in futs.iter_mut() {
            if let std::task::Poll::Ready(n) = std::pin::Pin::new(f).poll(cx) {
                return std::task::Poll::Ready(n);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// One attempt at ending a task.
enum Attempt {
    Done,
    /// Worth retrying (transport failure, 5xx, 429), with the reason.
    Retry(String),
    /// Final refusal (e.g. the task is already ended), with the reason.
    Fail(String),
}

/// Runs `attempt` until it is done or fails for good, backing off from `first` (doubling,
/// at most 5 s apart) for at most `budget`. Returns the final error, if any.
async fn with_backoff<F, Fut>(
    first: Duration,
    budget: Duration,
    mut attempt: F,
) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Attempt>,
{
    let deadline = tokio::time::Instant::now() + budget;
    let mut wait = first;
    loop {
        match attempt().await {
            Attempt::Done => return Ok(()),
            Attempt::Fail(e) => return Err(e),
            Attempt::Retry(e) => {
                let now = tokio::time::Instant::now();
                if now + wait > deadline {
                    return Err(e);
                }
                eprintln!(
                    "latch: {}; retrying in {} ms",
                    latch_core::audit::escape_text(&e),
                    wait.as_millis()
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Completes or cancels the task, retrying transient failures for about 30 s: every
/// credential of the task is revoked only once this succeeds.
async fn end_task(c: &Client, task: &str, how: &str) -> bool {
    let r = with_backoff(
        Duration::from_millis(250),
        Duration::from_secs(30),
        || async {
            match c.post(&format!("/v1/tasks/{task}/{how}"), &json!({})).await {
                Ok(a) if a.ok() => Attempt::Done,
                Ok(a) if a.status >= 500 || a.status == 429 => {
                    Attempt::Retry(format!("could not {how} task {task}: {}", a.error_line()))
                }
                Ok(a) => Attempt::Fail(a.error_line()),
                Err(e) => Attempt::Retry(format!("could not {how} task {task}: {e}")),
            }
        },
    )
    .await;
    match r {
        Ok(()) => true,
        Err(e) => {
            eprintln!(
                "latch: WARNING: could not {how} task {task}: {}; its credentials expire with it",
                latch_core::audit::escape_text(&e)
            );
            false
        }
    }
}

/// Runs `latch exec`.
///
/// # Errors
/// Transport failures before the task exists, and invalid arguments.
pub async fn run(args: ExecArgs, conn: &super::Conn) -> Result<ExitCode, String> {
    if conn.json {
        return Err(
            "`latch exec` passes the command's own output through and has no JSON of \
                    its own: drop --json (the command finds LATCH_TASK_ID and \
                    LATCH_LEASE_ID_<RESOURCE> in its environment)"
                .to_owned(),
        );
    }
    // First of all: the command runs as our uid and could otherwise read our environment
    // (`/proc/$PPID/environ`, where `LATCH_TOKEN` stays whatever we do to `environ`) and
    // memory. A non-dumpable process's `/proc` files are off-limits to other processes
    // without CAP_SYS_PTRACE.
    #[cfg(target_os = "linux")]
    nix::sys::prctl::set_dumpable(false)
        .map_err(|e| format!("cannot protect the identity token (PR_SET_DUMPABLE): {e}"))?;
    let c = workload_client(&args, conn)?;
    let hidden = hidden_env(conn);
    let wanted: Vec<(String, Vec<String>)> = args
        .requests
        .iter()
        .map(|r| parse_request(r))
        .collect::<Result<_, _>>()?;
    #[cfg(unix)]
    let mut sigs = forwardable_signals()?;
    let task = open_task(&c, &args).await?;
    eprintln!("latch: task {task} opened");

    // Obtain every credential; an interruption meanwhile cancels the task.
    let obtain_all = obtain_all(&c, &task, &wanted, &args);
    #[cfg(unix)]
    let outcome = tokio::select! {
        r = obtain_all => r,
        n = next_signal(&mut sigs) => {
            end_task(&c, &task, "cancel").await;
            eprintln!("latch: interrupted (signal {n}); task {task} cancelled");
            return Ok(ExitCode::from((128 + n) as u8));
        }
    };
    #[cfg(not(unix))]
    let outcome = obtain_all.await;
    let grants = match outcome {
        Ok(Ok(g)) => g,
        Ok(Err((code, msg))) => {
            end_task(&c, &task, "cancel").await;
            eprintln!("latch: {msg}; task {task} cancelled");
            return Ok(code);
        }
        Err(e) => {
            end_task(&c, &task, "cancel").await;
            return Err(format!("{e}; task {task} cancelled"));
        }
    };

    // Hand the credentials over: a fresh private directory of ours inside
    // `--credential-dir` (removed at the end), or the environment.
    let cred_dir = match &args.credential_dir {
        Some(dir) => match create_private_dir(dir) {
            Ok(d) => Some(d),
            Err(e) => {
                end_task(&c, &task, "cancel").await;
                return Err(format!("{e}; task {task} cancelled"));
            }
        },
        None => None,
    };
    let env = match hand_over(&task, &grants, cred_dir.as_deref()) {
        Ok(env) => env,
        Err(e) => {
            remove_dir(cred_dir.as_deref());
            end_task(&c, &task, "cancel").await;
            return Err(e);
        }
    };
    let mut child = match spawn(&args.command, &env, &hidden) {
        Ok(ch) => ch,
        Err(e) => {
            remove_dir(cred_dir.as_deref());
            end_task(&c, &task, "complete").await;
            eprintln!(
                "latch: cannot run `{}`: {e}; task {task} completed",
                args.command.first().map_or("", String::as_str)
            );
            return Ok(ExitCode::from(127));
        }
    };
    drop(env);

    #[cfg(unix)]
    let status = wait_forwarding(&mut child, &mut sigs).await;
    #[cfg(not(unix))]
    let status = child.wait().await;
    remove_dir(cred_dir.as_deref());
    let revoked = end_task(&c, &task, "complete").await;
    let code = command_exit_code(status);
    if revoked {
        eprintln!("latch: command exited ({code}); task {task} completed, credentials revoked");
    }
    Ok(ExitCode::from(if revoked || code != 0 { code } else { 1 }))
}

/// The client presenting the workload identity: `--token-file` (trimmed, not empty), else
/// `--token` (with a warning: it is visible in the process list), else the ambient identity
/// (`--identity`, or the first found: see [`crate::identity`]).
fn workload_client(args: &ExecArgs, conn: &super::Conn) -> Result<Client, String> {
    if let Some(f) = &args.token_file {
        let t = std::fs::read_to_string(f)
            .map_err(|e| format!("cannot read --token-file {}: {e}", f.display()))?;
        let t = t.trim().to_owned();
        if t.is_empty() {
            return Err(format!("--token-file {} is empty", f.display()));
        }
        return Ok(Client::new(&conn.server, Some(t)));
    }
    if let Some(t) = &conn.token {
        eprintln!(
            "latch: WARNING: --token on the command line is visible to every process \
             (ps, /proc/PID/cmdline), including the command; use LATCH_TOKEN or --token-file"
        );
        return Ok(Client::new(&conn.server, Some(t.clone())));
    }
    let settings = conn.identity_settings();
    let src = settings
        .source()?
        .ok_or_else(|| crate::identity::NOT_FOUND.to_owned())?;
    Ok(Client::with_ambient(
        &conn.server,
        crate::identity::Ambient::new(src, &settings.audience),
    ))
}

/// Variables the command must not inherit: every identity source's secrets (`LATCH_TOKEN`,
/// the GitHub Actions token service's URL and request token, the GitLab ID token variable (the
/// configured one and the default `LATCH_ID_TOKEN`),
/// an `--identity env:VAR`), so it cannot obtain identity tokens and open tasks itself.
fn hidden_env(conn: &super::Conn) -> Vec<String> {
    let mut v: Vec<String> = [
        crate::identity::TOKEN_ENV,
        crate::identity::GITHUB_URL_ENV,
        crate::identity::GITHUB_TOKEN_ENV,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    v.push(conn.gitlab_token_var.clone());
    // The default GitLab variable too, when another one is configured.
    v.push("LATCH_ID_TOKEN".to_owned());
    if let Ok(Some(src)) = conn.identity_settings().source() {
        v.extend(src.secret_env());
    }
    v
}

/// Opens the task the command runs in; answers its id.
async fn open_task(c: &Client, args: &ExecArgs) -> Result<String, String> {
    super::checks::environment(c, &args.environment).await?;
    let a = c
        .post(
            "/v1/tasks",
            &json!({"purpose": args.task_purpose, "environment": args.environment,
                    "ttl_secs": args.task_ttl.map(|d| std::time::Duration::from(d).as_secs() as i64)}),
        )
        .await?;
    if !a.ok() {
        return Err(format!("cannot open a task: {}", a.error_line()));
    }
    Ok(a.body["id"].as_str().unwrap_or_default().to_owned())
}

/// Every grant asked for by `--request`, in order: `Ok(Err(..))` at the first refusal (its
/// exit code and message).
async fn obtain_all(
    c: &Client,
    task: &str,
    wanted: &[(String, Vec<String>)],
    args: &ExecArgs,
) -> Result<Result<Vec<(String, Value)>, (ExitCode, String)>, String> {
    let ttl = args
        .ttl
        .map(|d| std::time::Duration::from(d).as_secs() as i64);
    let mut got = Vec::new();
    for (res, acts) in wanted {
        match obtain(
            c,
            task,
            res,
            acts,
            ttl,
            &args.task_purpose,
            args.wait_approval.into(),
        )
        .await?
        {
            Obtained::Granted(b) => got.push((res.clone(), b)),
            Obtained::Refused(code, msg) => return Ok(Err((code, msg))),
        }
    }
    Ok(Ok(got))
}

/// The command's environment: `LATCH_TASK_ID`, and per grant `LATCH_LEASE_ID_<RESOURCE>` and
/// either `LATCH_CREDENTIAL_<RESOURCE>` or, with `cred_dir`, the path of a `0600` file
/// holding it in `LATCH_CREDENTIAL_FILE_<RESOURCE>`. Prints one line per grant.
fn hand_over(
    task: &str,
    grants: &[(String, Value)],
    cred_dir: Option<&std::path::Path>,
) -> Result<BTreeMap<String, String>, String> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("LATCH_TASK_ID".into(), task.to_owned());
    for (res, b) in grants {
        let sfx = env_suffix(res);
        let value = b["credential"]["value"].as_str().unwrap_or_default();
        env.insert(
            format!("LATCH_LEASE_ID_{sfx}"),
            b["lease"]["id"].as_str().unwrap_or_default().to_owned(),
        );
        match cred_dir {
            Some(dir) => {
                let path = dir.join(res);
                write_private_file(&path, value)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                env.insert(
                    format!("LATCH_CREDENTIAL_FILE_{sfx}"),
                    path.display().to_string(),
                );
            }
            None => {
                env.insert(format!("LATCH_CREDENTIAL_{sfx}"), value.to_owned());
            }
        }
        eprintln!(
            "latch: {res} granted (lease {}, expires {})",
            crate::render::txt(&b["lease"]["id"], "?"),
            crate::human::when(&b["lease"]["expires_at_unix_secs"], "?")
        );
    }
    Ok(env)
}

/// Removes the credential directory, if any (best effort).
fn remove_dir(dir: Option<&std::path::Path>) {
    if let Some(d) = dir {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Starts the command with `env` and without the `hidden` variables (identity sources),
/// inheriting stdio.
fn spawn(
    command: &[String],
    env: &BTreeMap<String, String>,
    hidden: &[String],
) -> std::io::Result<tokio::process::Child> {
    let Some((program, rest)) = command.split_first() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no command",
        ));
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(rest);
    for h in hidden {
        cmd.env_remove(h);
    }
    cmd.envs(env)
        .stdin(std::process::Stdio::inherit())
        .stdout(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::inherit());
    // Its own process group, so forwarded signals reach everything it started. (No
    // PR_SET_PDEATHSIG: it needs `pre_exec`, i.e. `unsafe`, which this workspace forbids; if
    // `latch exec` is SIGKILLed the task TTL bounds the credentials.)
    #[cfg(unix)]
    cmd.process_group(0);
    cmd.spawn()
}

/// Waits for the command, forwarding the signals we receive meanwhile to its process group.
#[cfg(unix)]
async fn wait_forwarding(
    child: &mut tokio::process::Child,
    sigs: &mut [(i32, tokio::signal::unix::Signal)],
) -> std::io::Result<std::process::ExitStatus> {
    loop {
        tokio::select! {
            st = child.wait() => return st,
            n = next_signal(sigs) => {
                if let Some(pid) = child.id() {
                    forward(pid, n);
                }
            }
        }
    }
}

/// The command's exit code: its own, 128 + the signal that ended it, or 1.
fn command_exit_code(status: std::io::Result<std::process::ExitStatus>) -> u8 {
    match status {
        Ok(st) => {
            #[cfg(unix)]
            {
                use std::os::unix::process::ExitStatusExt;
                match (st.code(), st.signal()) {
                    (Some(c), _) => c as u8,
                    (None, Some(sig)) => (128 + sig) as u8,
                    _ => 1,
                }
            }
            #[cfg(not(unix))]
            {
                st.code().unwrap_or(1) as u8
            }
        }
        Err(e) => {
            eprintln!("latch: waiting for the command failed: {e}");
            1
        }
    }
}

#[cfg(unix)]
/// Forwards `sig` to the command's process group (its pgid is its pid).
fn forward(pid: u32, sig: i32) {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;
    if let (Ok(s), Ok(p)) = (Signal::try_from(sig), i32::try_from(pid)) {
        let _ = killpg(Pid::from_raw(p), s);
    }
}

/// Creates `dir` if needed (leaving its mode alone) and, inside it, a fresh directory of ours,
/// mode 0700, with an unpredictable name (mkdtemp-style: it must not exist yet).
fn create_private_dir(dir: &std::path::Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut b = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    for _ in 0..8 {
        let d = dir.join(format!("latch-{}", uuid::Uuid::new_v4().simple()));
        match b.create(&d) {
            Ok(()) => return Ok(d),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot create {}: {e}", d.display())),
        }
    }
    Err(format!(
        "cannot create a private directory in {}",
        dir.display()
    ))
}

/// Writes a new file, mode 0600: never an existing file, never through a symlink.
fn write_private_file(path: &std::path::Path, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600).custom_flags(nix::libc::O_NOFOLLOW);
    }
    let mut f = o.open(path)?;
    f.write_all(value.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ending_a_task_retries_transient_failures_with_backoff_then_gives_up() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let ms = Duration::from_millis;
        // Succeeds on the third attempt.
        let n = AtomicU32::new(0);
        let r = with_backoff(ms(1), ms(500), || async {
            if n.fetch_add(1, Ordering::SeqCst) < 2 {
                Attempt::Retry("down".into())
            } else {
                Attempt::Done
            }
        })
        .await;
        assert!(r.is_ok());
        assert_eq!(n.load(Ordering::SeqCst), 3);
        // A final refusal is not retried.
        let n = AtomicU32::new(0);
        let r = with_backoff(ms(1), ms(500), || async {
            n.fetch_add(1, Ordering::SeqCst);
            Attempt::Fail("task_not_open".into())
        })
        .await;
        assert_eq!(r.unwrap_err(), "task_not_open");
        assert_eq!(n.load(Ordering::SeqCst), 1);
        // Retries stop once the budget is spent: 7 attempts (1+2+4+8+16+32 ms < 100 ms < +64).
        let n = AtomicU32::new(0);
        let start = std::time::Instant::now();
        let r = with_backoff(ms(1), ms(100), || async {
            n.fetch_add(1, Ordering::SeqCst);
            Attempt::Retry("down".into())
        })
        .await;
        assert_eq!(r.unwrap_err(), "down");
        // (Fewer on a loaded machine, where sleeps overshoot.)
        assert!((4..=7).contains(&n.load(Ordering::SeqCst)));
        assert!(start.elapsed() < ms(2000));
    }

    #[test]
    fn request_syntax() {
        assert_eq!(
            parse_request("ci-cache:read,write").unwrap(),
            ("ci-cache".into(), vec!["read".into(), "write".into()])
        );
        assert!(parse_request("ci-cache").is_err());
        assert!(parse_request("ci-cache:").is_err());
        assert_eq!(env_suffix("ci-cache.v2"), "CI_CACHE_V2");
    }
}
