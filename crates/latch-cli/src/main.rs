//! `latch`: the Latch broker and its command-line client.
//!
//! Exit codes: 0 success; 1 error; 2 usage; 3 access denied; 4 access pending approval;
//! 5 policy tests failed; 6 audit chain damaged (`latch audit verify`); 7 secrets found
//! (`latch scan`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

mod audit_cmd;
mod bench;
mod client;
mod demo;
mod exec;
mod proxy_cmd;
mod scan_cmd;

use client::{Answer, Client};

#[derive(Parser)]
#[command(
    name = "latch",
    version,
    about = "Just-in-time access broker for AI agents and workloads"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct Conn {
    /// Broker URL.
    #[arg(
        long,
        env = "LATCH_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    server: String,
    /// Bearer token (workload token for agent commands, human token for approvals).
    #[arg(long, env = "LATCH_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Print the raw JSON answer (for scripts).
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the broker.
    Serve {
        /// Configuration file.
        #[arg(long, short, env = "LATCH_CONFIG", default_value = "latch.toml")]
        config: PathBuf,
    },
    /// Start a broker on the embedded default and drive a scripted agent through the main flow.
    Demo,
    /// Tasks: open, show, list, complete, cancel.
    Task {
        #[command(subcommand)]
        cmd: TaskCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Ask for access in a task.
    Request {
        /// Task id.
        task: String,
        /// Resource id.
        #[arg(long)]
        resource: String,
        /// Action (repeat for several).
        #[arg(long = "action", required = true)]
        actions: Vec<String>,
        /// TTL, e.g. `10m`.
        #[arg(long)]
        ttl: Option<humantime::Duration>,
        /// Why (shown to approvers).
        #[arg(long, default_value = "")]
        justification: String,
        /// Provider parameter `KEY=VALUE` (repeatable). VALUE is taken as JSON when it parses as
        /// an array, object, number, boolean or null (`principals='["deploy"]'`), else as a string.
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// Public key file: OpenSSH format sets `params.public_key` (ssh), PEM sets
        /// `params.public_key_pem` (x509).
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
        /// Certificate request (PEM) file: sets `params.csr_pem` (x509).
        #[arg(long, value_name = "FILE")]
        csr: Option<PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Claim the credential of an approved request (delivered once).
    Claim {
        /// Task id.
        task: String,
        /// Request id.
        request: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Pending requests you may approve (human token).
    Pending {
        #[command(flatten)]
        conn: Conn,
    },
    /// Approve a pending request (human token).
    Approve(Vote),
    /// Deny a pending request (human token).
    Deny(Vote),
    /// Leases: list, renew, revoke.
    Lease {
        #[command(subcommand)]
        cmd: LeaseCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Audit trail: tail, export, verify, find (admin token; `verify --file` works offline).
    Audit {
        #[command(subcommand)]
        cmd: audit_cmd::AuditCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Policies: validate, test.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
    /// Run a command inside a task with just-in-time credentials; revokes them when it ends.
    Exec {
        #[command(flatten)]
        args: exec::ExecArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// MCP server over stdio, acting as the workload whose token it is started with
    /// (`LATCH_TOKEN`). The broker also serves MCP over streamable HTTP at `/mcp`.
    Mcp {
        #[command(flatten)]
        conn: Conn,
    },
    /// Find leaked secrets in files, directories or stdin; revoke Latch credentials found
    /// (exit 7 on any finding).
    Scan {
        #[command(flatten)]
        args: scan_cmd::ScanArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Local HTTP proxy for a task: injects the task's credential into requests to one
    /// upstream, records each call, stops when the task ends (workload token).
    Proxy {
        #[command(flatten)]
        args: proxy_cmd::ProxyArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Load-test a running broker on loopback: grants/s and latency per concurrency level.
    Bench(bench::BenchArgs),
    /// Development helpers.
    Dev {
        #[command(subcommand)]
        cmd: DevCmd,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Args)]
struct Vote {
    /// Request id.
    request: String,
    /// Digest of the request, as shown by `latch pending`.
    #[arg(long)]
    digest: String,
    /// Reason.
    #[arg(long, default_value = "")]
    reason: String,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Subcommand)]
enum TaskCmd {
    /// Open a task.
    Open {
        /// Purpose.
        #[arg(long)]
        purpose: String,
        /// Environment.
        #[arg(long)]
        environment: String,
        /// Repository (default: the workload identity's).
        #[arg(long)]
        repository: Option<String>,
        /// Branch (default: the workload identity's).
        #[arg(long)]
        branch: Option<String>,
        /// TTL, e.g. `1h`.
        #[arg(long)]
        ttl: Option<humantime::Duration>,
    },
    /// Show a task.
    Show {
        /// Task id.
        id: String,
        /// Print the task's whole story in order (its audit events) instead.
        #[arg(long)]
        timeline: bool,
    },
    /// Report a use of a tool in a task (recorded as a `tool.used` audit event).
    Event {
        /// Task id.
        id: String,
        /// Tool name, e.g. `psql`.
        #[arg(long)]
        tool: String,
        /// What it acted on.
        #[arg(long)]
        target: Option<String>,
        /// `ok`, `error`, `denied`, …
        #[arg(long, default_value = "ok")]
        outcome: String,
        /// Lease whose credential was used.
        #[arg(long)]
        lease: Option<String>,
        /// Attribute `key=value` (repeat).
        #[arg(long = "attr")]
        attrs: Vec<String>,
    },
    /// List your tasks.
    List,
    /// Complete a task (revokes every lease).
    Complete {
        /// Task id.
        id: String,
    },
    /// Cancel a task (revokes every lease).
    Cancel {
        /// Task id.
        id: String,
    },
}

#[derive(Subcommand)]
enum LeaseCmd {
    /// Leases of a task.
    List {
        /// Task id.
        task: String,
    },
    /// Renew (fresh policy evaluation).
    Renew {
        /// Lease id.
        id: String,
        /// TTL, e.g. `10m`.
        #[arg(long)]
        ttl: Option<humantime::Duration>,
    },
    /// Revoke.
    Revoke {
        /// Lease id.
        id: String,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Validate the schema and policies of a configuration (file, line and column on error).
    Validate {
        /// Configuration file.
        #[arg(long, short, env = "LATCH_CONFIG", default_value = "latch.toml")]
        config: PathBuf,
    },
    /// Run a file of example requests against the policies and compare with expected decisions.
    Test {
        /// TOML file of `[[case]]`s.
        file: PathBuf,
        /// Configuration file.
        #[arg(long, short, env = "LATCH_CONFIG", default_value = "latch.toml")]
        config: PathBuf,
        /// Print the raw JSON results.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DevCmd {
    /// Mint a development token (the server's `[dev_issuer]` must be enabled).
    Token {
        /// `workload` or `human`.
        #[arg(long, default_value = "workload")]
        kind: String,
        /// Human id (human tokens).
        #[arg(long)]
        subject: Option<String>,
        /// Approver group (human tokens; repeat).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// `owner/name` (workload tokens).
        #[arg(long)]
        repository: Option<String>,
        /// Git ref (workload tokens), e.g. `refs/heads/main`.
        #[arg(long = "ref")]
        git_ref: Option<String>,
        /// GitHub environment the job is bound to.
        #[arg(long)]
        environment: Option<String>,
        /// Triggering event (`push`, `pull_request`).
        #[arg(long)]
        event_name: Option<String>,
        /// Human the workload acts for.
        #[arg(long)]
        actor: Option<String>,
        /// CI run id.
        #[arg(long)]
        run_id: Option<String>,
        /// Token lifetime, e.g. `10m`.
        #[arg(long)]
        ttl: Option<humantime::Duration>,
    },
}

/// The `params` of `latch request` from `--param`, `--public-key` and `--csr`.
fn request_params(
    pairs: &[String],
    public_key: Option<&std::path::Path>,
    csr: Option<&std::path::Path>,
) -> Result<serde_json::Map<String, Value>, String> {
    let mut out = serde_json::Map::new();
    let mut set = |k: &str, v: Value| {
        if out.insert(k.to_owned(), v).is_some() {
            return Err(format!("parameter {k:?} given twice"));
        }
        Ok(())
    };
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| format!("--param {p:?}: expected KEY=VALUE"))?;
        let v = match serde_json::from_str::<Value>(v) {
            Ok(j) if !j.is_string() => j,
            _ => Value::String(v.to_owned()),
        };
        set(k, v)?;
    }
    let read = |f: &std::path::Path| {
        std::fs::read_to_string(f).map_err(|e| format!("cannot read {}: {e}", f.display()))
    };
    if let Some(f) = public_key {
        let key = read(f)?;
        let name = if key.trim_start().starts_with("-----BEGIN") {
            "public_key_pem"
        } else {
            "public_key"
        };
        set(name, Value::String(key.trim().to_owned()))?;
    }
    if let Some(f) = csr {
        set("csr_pem", Value::String(read(f)?))?;
    }
    Ok(out)
}

fn secs(d: Option<humantime::Duration>) -> Option<i64> {
    d.map(|d| std::time::Duration::from(d).as_secs() as i64)
}

fn print_answer(conn: &Conn, a: &Answer, human: impl FnOnce(&Value)) -> ExitCode {
    if conn.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&a.body).unwrap_or_default()
        );
    } else if a.ok() {
        human(&a.body);
    } else if a.body.get("status").is_none() {
        eprintln!("error: {}", a.error_line());
    } else {
        human(&a.body);
    }
    match (a.status, a.body.get("status").and_then(Value::as_str)) {
        (_, Some("denied")) => ExitCode::from(3),
        (_, Some("pending")) => ExitCode::from(4),
        (s, _) if (200..300).contains(&s) => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    }
}

fn print_access(b: &Value) {
    let d = &b["request"]["decision"];
    println!("status:   {}", b["status"].as_str().unwrap_or("?"));
    println!("request:  {}", b["request"]["id"].as_str().unwrap_or("?"));
    println!(
        "decision: {} (policies: {})",
        d["decision"].as_str().unwrap_or("?"),
        d["policy_ids"]
    );
    if let Some(rs) = d["reasons"].as_array() {
        for r in rs {
            println!("reason:   {}", r.as_str().unwrap_or(""));
        }
    }
    if let Some(g) = d["groups"].as_array() {
        println!("approval needed from: {}", Value::Array(g.clone()));
        println!(
            "digest:   {}",
            b["request"]["digest"].as_str().unwrap_or("")
        );
    }
    if !b["lease"].is_null() {
        println!(
            "lease:    {} (expires {})",
            b["lease"]["id"].as_str().unwrap_or("?"),
            b["lease"]["expires_at_unix_secs"]
        );
    }
    if let Some(v) = b["credential"]["value"].as_str() {
        println!(
            "credential ({}), shown once:\n{v}",
            b["credential"]["kind"].as_str().unwrap_or("?")
        );
    }
}

fn print_json(b: &Value) {
    println!("{}", serde_json::to_string_pretty(b).unwrap_or_default());
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber_env();
    if json {
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_current_span(false)
            .try_init();
    } else {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    }
}

fn tracing_subscriber_env() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_env("LATCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}

/// `latch mcp`: checks the token once (fails fast on a bad one), then serves MCP on stdio.
/// Nothing but the protocol is written to stdout.
async fn mcp_stdio(conn: Conn) -> Result<ExitCode, String> {
    use latch_server::mcp::{Dispatch, HttpDispatch, LatchMcp};
    use rmcp::ServiceExt;
    let token = conn
        .token
        .ok_or("`latch mcp` needs the workload token it acts as (--token or LATCH_TOKEN)")?;
    let dispatch = std::sync::Arc::new(HttpDispatch::new(&conn.server));
    let (status, body) = dispatch
        .call(&token, latch_server::mcp::Method::GET, "/v1/tasks", None)
        .await?;
    if status != 200 {
        return Err(format!(
            "the broker refused the token ({status}): {}",
            body["error"]["message"].as_str().unwrap_or("")
        ));
    }
    let server = LatchMcp::with_token(dispatch, secrecy::SecretString::from(token));
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| format!("mcp: {e}"))?;
    running.waiting().await.map_err(|e| format!("mcp: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.cmd {
        Cmd::Serve { config } => {
            init_tracing(true);
            let cfg = latch_server::Config::load(&config).map_err(|e| e.to_string())?;
            let server = latch_server::start(cfg, Default::default())
                .await
                .map_err(|e| e.to_string())?;
            let stop = async {
                let ctrl_c = tokio::signal::ctrl_c();
                #[cfg(unix)]
                {
                    let mut term =
                        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                            .map_err(|e| e.to_string())?;
                    tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
                }
                #[cfg(not(unix))]
                {
                    let _ = ctrl_c.await;
                }
                Ok::<(), String>(())
            };
            stop.await?;
            tracing::info!("shutting down");
            server.shutdown().await;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Demo => {
            // Keep the broker's own logs quiet so the account of the steps is readable.
            if std::env::var_os("LATCH_LOG").is_none() {
                let _ = tracing_subscriber::fmt()
                    .with_env_filter(tracing_subscriber::EnvFilter::new("error"))
                    .with_writer(std::io::stderr)
                    .try_init();
            } else {
                init_tracing(false);
            }
            Ok(ExitCode::from(demo::run().await as u8))
        }
        Cmd::Scan { args, conn } => {
            scan_cmd::run(args, &conn.server, conn.token.clone(), conn.json).await
        }
        Cmd::Proxy { args, conn } => {
            proxy_cmd::run(args, &conn.server, conn.token.clone()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Task { cmd, conn } => {
            let c = Client::new(&conn.server, conn.token.clone());
            let a = match cmd {
                TaskCmd::Open { purpose, environment, repository, branch, ttl } => {
                    c.post("/v1/tasks", &json!({"purpose": purpose, "environment": environment, "repository": repository,
                        "branch": branch, "ttl_secs": secs(ttl)})).await?
                }
                TaskCmd::Show { id, timeline: true } => {
                    let events = match audit_cmd::task_timeline(&c, &id).await? {
                        Ok(v) => v,
                        Err(line) => {
                            eprintln!("error: {line}");
                            return Ok(ExitCode::from(1));
                        }
                    };
                    for e in &events {
                        if conn.json {
                            println!("{e}");
                        } else {
                            println!("{}", audit_cmd::render_event(e));
                        }
                    }
                    return Ok(ExitCode::SUCCESS);
                }
                TaskCmd::Show { id, timeline: false } => c.get(&format!("/v1/tasks/{id}")).await?,
                TaskCmd::Event { id, tool, target, outcome, lease, attrs } => {
                    let mut map = serde_json::Map::new();
                    for kv in attrs {
                        let (k, v) = kv.split_once('=').ok_or_else(|| format!("`--attr {kv}` is not key=value"))?;
                        map.insert(k.to_owned(), Value::String(v.to_owned()));
                    }
                    let a = c.post(&format!("/v1/tasks/{id}/events"), &json!({"tool": tool, "target": target,
                        "outcome": outcome, "lease_id": lease, "attributes": map})).await?;
                    return Ok(print_answer(&conn, &a, |b| println!("recorded: seq {} {}", b["seq"], b["id"].as_str().unwrap_or("?"))));
                }
                TaskCmd::List => c.get("/v1/tasks").await?,
                TaskCmd::Complete { id } => c.post(&format!("/v1/tasks/{id}/complete"), &json!({})).await?,
                TaskCmd::Cancel { id } => c.post(&format!("/v1/tasks/{id}/cancel"), &json!({})).await?,
            };
            Ok(print_answer(&conn, &a, |b| {
                let one = |t: &Value| {
                    println!(
                        "{}  {:<9} env={:<11} repo={} branch={} expires={}  {}",
                        t["id"].as_str().unwrap_or("?"),
                        t["state"].as_str().unwrap_or("?"),
                        t["environment"].as_str().unwrap_or("?"),
                        t["repository"].as_str().unwrap_or("-"),
                        t["branch"].as_str().unwrap_or("-"),
                        t["expires_at_unix_secs"],
                        t["purpose"].as_str().unwrap_or("")
                    )
                };
                match b.as_array() {
                    Some(v) => v.iter().for_each(one),
                    None => one(b),
                }
            }))
        }
        Cmd::Audit { cmd, conn } => {
            let c = Client::new(&conn.server, conn.token.clone());
            audit_cmd::run(cmd, &c, conn.json).await
        }
        Cmd::Request {
            task,
            resource,
            actions,
            ttl,
            justification,
            params,
            public_key,
            csr,
            conn,
        } => {
            let params = request_params(&params, public_key.as_deref(), csr.as_deref())?;
            let mut body = json!({"resource": resource, "actions": actions,
                "ttl_secs": secs(ttl), "justification": justification});
            if !params.is_empty() {
                body["params"] = Value::Object(params);
            }
            let c = Client::new(&conn.server, conn.token.clone());
            let a = c.post(&format!("/v1/tasks/{task}/requests"), &body).await?;
            Ok(print_answer(&conn, &a, print_access))
        }
        Cmd::Claim {
            task,
            request,
            conn,
        } => {
            let c = Client::new(&conn.server, conn.token.clone());
            let a = c
                .post(
                    &format!("/v1/tasks/{task}/requests/{request}/claim"),
                    &json!({}),
                )
                .await?;
            Ok(print_answer(&conn, &a, print_access))
        }
        Cmd::Pending { conn } => {
            let c = Client::new(&conn.server, conn.token.clone());
            let a = c.get("/v1/approvals/pending").await?;
            Ok(print_answer(&conn, &a, |b| {
                for p in b.as_array().cloned().unwrap_or_default() {
                    let r = &p["request"];
                    let t = &p["task"];
                    println!(
                        "request {}  task {}",
                        r["id"].as_str().unwrap_or("?"),
                        t["id"].as_str().unwrap_or("?")
                    );
                    println!(
                        "  {} on {} for {}s — {}",
                        r["actions"],
                        r["resource_id"].as_str().unwrap_or("?"),
                        r["ttl_secs"],
                        r["justification"].as_str().unwrap_or("")
                    );
                    println!(
                        "  task: {} (env {}, repo {}, branch {}, for {})",
                        t["purpose"].as_str().unwrap_or(""),
                        t["environment"].as_str().unwrap_or("?"),
                        t["repository"].as_str().unwrap_or("-"),
                        t["branch"].as_str().unwrap_or("-"),
                        t["on_behalf_of"].as_str().unwrap_or("-")
                    );
                    println!(
                        "  needs: {}  digest: {}",
                        r["decision"]["groups"],
                        r["digest"].as_str().unwrap_or("")
                    );
                }
            }))
        }
        Cmd::Approve(v) => vote(v, "approve").await,
        Cmd::Deny(v) => vote(v, "deny").await,
        Cmd::Lease { cmd, conn } => {
            let c = Client::new(&conn.server, conn.token.clone());
            let a = match cmd {
                LeaseCmd::List { task } => c.get(&format!("/v1/tasks/{task}/leases")).await?,
                LeaseCmd::Renew { id, ttl } => {
                    c.post(
                        &format!("/v1/leases/{id}/renew"),
                        &json!({"ttl_secs": secs(ttl)}),
                    )
                    .await?
                }
                LeaseCmd::Revoke { id } => {
                    c.post(&format!("/v1/leases/{id}/revoke"), &json!({}))
                        .await?
                }
            };
            Ok(print_answer(&conn, &a, |b| match b.as_array() {
                Some(v) => {
                    for l in v {
                        println!(
                            "{}  {:<13} {} {} expires={} renewals={}",
                            l["id"].as_str().unwrap_or("?"),
                            l["state"].as_str().unwrap_or("?"),
                            l["resource_id"].as_str().unwrap_or("?"),
                            l["actions"],
                            l["expires_at_unix_secs"],
                            l["renewals"]
                        );
                    }
                }
                None if b.get("credential").is_some() => print_access(b),
                None => print_json(b),
            }))
        }
        Cmd::Policy { cmd } => policy(cmd),
        Cmd::Exec { args, conn } => exec::run(args, &conn.server, conn.token).await,
        Cmd::Mcp { conn } => mcp_stdio(conn).await,
        Cmd::Bench(args) => Ok(ExitCode::from(bench::run(args).await?)),
        Cmd::Dev {
            cmd:
                DevCmd::Token {
                    kind,
                    subject,
                    groups,
                    repository,
                    git_ref,
                    environment,
                    event_name,
                    actor,
                    run_id,
                    ttl,
                },
            conn,
        } => {
            let c = Client::new(&conn.server, None);
            let a = c
                .post("/v1/dev/tokens", &json!({"kind": kind, "subject": subject, "groups": groups, "repository": repository,
                    "git_ref": git_ref, "environment": environment, "event_name": event_name, "actor": actor,
                    "run_id": run_id, "ttl_secs": secs(ttl)}))
                .await?;
            Ok(print_answer(&conn, &a, |b| {
                println!("{}", b["token"].as_str().unwrap_or(""))
            }))
        }
    }
}

async fn vote(v: Vote, verb: &str) -> Result<ExitCode, String> {
    let c = Client::new(&v.conn.server, v.conn.token.clone());
    let a = c
        .post(
            &format!("/v1/approvals/{}/{verb}", v.request),
            &json!({"digest": v.digest, "reason": v.reason}),
        )
        .await?;
    Ok(print_answer(&v.conn, &a, |b| {
        println!(
            "request {} is now {}",
            b["id"].as_str().unwrap_or("?"),
            b["state"].as_str().unwrap_or("?")
        );
    }))
}

#[derive(serde::Deserialize)]
struct CaseFile {
    #[serde(rename = "case")]
    cases: Vec<latch_core::policy::PolicyTestCase>,
}

fn policy(cmd: PolicyCmd) -> Result<ExitCode, String> {
    match cmd {
        PolicyCmd::Validate { config } => {
            let cfg = latch_server::Config::load(&config).map_err(|e| e.to_string())?;
            let engine = latch_server::startup::load_policy(&cfg).map_err(|e| e.to_string())?;
            println!(
                "ok: {} policies valid against the schema (fingerprint {})",
                engine.policy_ids().len(),
                engine.fingerprint()
            );
            for id in engine.policy_ids() {
                println!("  {id}");
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCmd::Test { file, config, json } => {
            let cfg = latch_server::Config::load(&config).map_err(|e| e.to_string())?;
            let engine = latch_server::startup::load_policy(&cfg).map_err(|e| e.to_string())?;
            let text = std::fs::read_to_string(&file)
                .map_err(|e| format!("cannot read `{}`: {e}", file.display()))?;
            let cases: CaseFile =
                toml::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
            let resources = cfg.domain_resources();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            let mut failed = 0;
            let mut results = Vec::new();
            for case in &cases.cases {
                if !["allow", "deny", "step_up"].contains(&case.expect.as_str()) {
                    return Err(format!(
                        "case `{}`: `expect` must be allow, deny or step_up",
                        case.name
                    ));
                }
                let d = latch_core::broker::run_policy_case(
                    &engine,
                    &resources,
                    &cfg.tasks.production_environments,
                    case,
                    now,
                )?;
                let pass = d.kind() == case.expect;
                if !pass {
                    failed += 1;
                }
                results.push(json!({"name": case.name, "expect": case.expect, "got": d.kind(), "pass": pass, "decision": d}));
                if !json {
                    println!(
                        "{} {}  (expected {}, got {}; policies: {})",
                        if pass { "PASS" } else { "FAIL" },
                        case.name,
                        case.expect,
                        d.kind(),
                        d.policy_ids().join(", ")
                    );
                }
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&results).unwrap_or_default()
                );
            } else {
                println!("{} passed, {} failed", cases.cases.len() - failed, failed);
            }
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(5)
            })
        }
    }
}
