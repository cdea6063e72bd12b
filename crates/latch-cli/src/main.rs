//! `latch`: the Latch broker and its command-line client.
//!
//! Exit codes: 0 success; 1 error; 2 usage; 3 access denied; 4 access pending approval;
//! 5 policy tests failed; 6 audit chain damaged (`latch audit verify`); 7 secrets found
//! (`latch scan`); `latch exec` passes its command's own. The manual page lists them
//! ([`manpage::EXIT_STATUS`]), and the environment variables read.
//!
//! This file only parses the command line, sets up tracing and dispatches: each verb lives in
//! its own module under [`cmd`], the HTTP client in [`client`], shared printing in [`render`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod client;
mod cmd;
mod credentials;
mod hints;
mod human;
mod identity;
mod login_callback;
mod manpage;
mod oidc;
mod render;

use cmd::Conn;

#[derive(Parser)]
#[command(
    name = "latch",
    version,
    about = "Just-in-time access broker for AI agents and workloads"
)]
struct Cli {
    /// Colours in plain output: auto (on a terminal, unless `NO_COLOR` is set), always, never.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "auto",
        value_name = "WHEN"
    )]
    color: human::ColorChoice,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the broker.
    Serve {
        /// Configuration file.
        #[arg(long, short, env = "LATCH_CONFIG", default_value = "latch.toml")]
        config: PathBuf,
        /// Address to listen on (`127.0.0.1:9090`), instead of `[server] listen`.
        #[arg(long, env = "LATCH_LISTEN")]
        listen: Option<String>,
    },
    /// Start a broker on the embedded default and drive a scripted agent through the main flow.
    Demo,
    /// The demo's tiny MCP server on stdio (the upstream `latch demo` fronts with its gateway).
    #[command(hide = true)]
    DemoUpstream,
    /// `latch bench --baseline`'s child: an empty axum handler (not for users).
    #[command(hide = true)]
    BenchEmptyServer {
        /// Loopback address to listen on.
        #[arg(long)]
        listen: String,
    },
    /// Tasks: open, show, list, complete, cancel.
    Task {
        #[command(subcommand)]
        cmd: cmd::task::TaskCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// What may be requested: resources with their environment, kind, actions and TTL bounds.
    Resources {
        #[command(flatten)]
        conn: Conn,
    },
    /// Ask for access in a task.
    Request(cmd::request::RequestArgs),
    /// Claim the credential of an approved request (delivered once).
    Claim(cmd::request::ClaimArgs),
    /// Sign in as a human through the broker's identity provider (browser with a loopback
    /// redirect, or `--device`); the sign-in is stored for `--server` and used by commands
    /// given no token.
    Login {
        #[command(flatten)]
        args: cmd::login::LoginArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Who the broker takes you for (the stored sign-in, or `--token`).
    Whoami {
        #[command(flatten)]
        conn: Conn,
    },
    /// Forget the stored sign-in for `--server` (and revoke it at the identity provider).
    Logout {
        #[command(flatten)]
        conn: Conn,
    },
    /// Pending requests you may approve (human token).
    Pending {
        #[command(flatten)]
        conn: Conn,
    },
    /// Approve a pending request (human token).
    Approve(cmd::approve::Vote),
    /// Deny a pending request (human token).
    Deny(cmd::approve::Vote),
    /// Leases: list, renew, revoke.
    Lease {
        #[command(subcommand)]
        cmd: cmd::lease::LeaseCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Operators (admin token): every open task and live lease, revoke, cancel, and the kill
    /// switch (freeze, unfreeze, freezes); each action takes a required `--reason`.
    Admin {
        #[command(subcommand)]
        cmd: cmd::admin::AdminCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Audit trail: tail, export, verify, find (admin token; `verify --file` works offline).
    Audit {
        #[command(subcommand)]
        cmd: cmd::audit::AuditCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Reports (admin token): `controls`, the control evidence report (OWASP agentic and
    /// non-human-identity lists, CSA MAESTRO, NIST AI RMF) as Markdown, HTML or JSON.
    Report {
        #[command(subcommand)]
        cmd: cmd::report::ReportCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Policies: validate, test.
    Policy {
        #[command(subcommand)]
        cmd: cmd::policy::PolicyCmd,
    },
    /// Run a command inside a task with just-in-time credentials; revokes them when it ends.
    Exec {
        #[command(flatten)]
        args: cmd::exec::ExecArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// MCP server over stdio, acting as the workload whose token it is started with
    /// (`--token`, else the ambient identity: see `--identity`; resolved once at start). The
    /// broker also serves MCP over streamable HTTP at `/mcp`.
    Mcp {
        #[command(flatten)]
        conn: Conn,
    },
    /// Find leaked secrets in files, directories or stdin; revoke Latch credentials found
    /// (exit 7 on any finding).
    Scan {
        #[command(flatten)]
        args: cmd::scan::ScanArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Local HTTP proxy for a task: injects the task's credential into requests to one
    /// upstream, records each call, stops when the task ends (workload token).
    Proxy {
        #[command(flatten)]
        args: cmd::proxy::ProxyArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Load-test a running broker on loopback: grants/s and latency per concurrency level.
    Bench(cmd::bench::BenchArgs),
    /// Print a shell completion script (`latch completions bash > /etc/bash_completion.d/latch`,
    /// `source <(latch completions zsh)`, `latch completions fish | source`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff; `latch man | man -l -`), or with `--dir` write one page per
    /// command there (`latch.1`, `latch-task.1`, …), or with `--markdown` the whole command
    /// reference as one Markdown page (the book's `reference/cli.md`).
    Man {
        /// Write `latch.1` and a page per command into this directory instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Print every command, flag and environment variable as Markdown instead.
        #[arg(long, conflicts_with = "dir")]
        markdown: bool,
    },
    /// Development helpers.
    Dev {
        #[command(subcommand)]
        cmd: cmd::dev::DevCmd,
        #[command(flatten)]
        conn: Conn,
    },
}

/// Tracing for the commands that run Latch code in this process, through
/// [`latch_server::logging`] (the operator's `LATCH_LOG` plus the fixed cap on third-party
/// libraries): `serve` writes JSON lines on stdout; `demo` text on stderr (only errors unless
/// `LATCH_LOG` is set, so the account of its steps stays readable); `mcp` text on stderr only
/// when `LATCH_LOG` is set (stdout carries the protocol). The other client commands log
/// nothing.
fn init_tracing_for(cmd: &Cmd) {
    use latch_server::logging::{ENV_VAR, Format, env_filter, init};
    let set = std::env::var_os(ENV_VAR).is_some();
    // A second initialisation (never in this binary) would keep the first subscriber.
    let _ = match cmd {
        Cmd::Serve { .. } => init(Format::Json, env_filter("info"), std::io::stdout),
        Cmd::Demo => init(Format::Text, env_filter("error"), std::io::stderr),
        Cmd::Mcp { .. } if set => init(Format::Text, env_filter("warn"), std::io::stderr),
        _ => Ok(()),
    };
}

#[tokio::main]
async fn main() -> ExitCode {
    quiet_on_closed_pipe();
    let cli = Cli::parse();
    human::set_color(cli.color);
    init_tracing_for(&cli.cmd);
    hints::set_caller(caller_of(&cli.cmd));
    let json = json_requested();
    match run(cli.cmd).await {
        Ok(code) => code,
        // A verb that writes with `write!` reports a closed pipe as an error: the reader
        // (`| head`) is done, which is not a failure.
        Err(e) if e.contains("Broken pipe") => ExitCode::from(CLOSED_PIPE_EXIT as u8),
        Err(e) => {
            let line = latch_core::audit::escape_text(&e);
            if json {
                // `--json` always prints one JSON document, errors of the CLI's own included:
                // the API's error form, with the code `cli_error`.
                println!(
                    "{}",
                    serde_json::json!({"error": {"code": "cli_error", "message": line}})
                );
            }
            eprintln!("{} {line}", human::error_prefix());
            ExitCode::from(1)
        }
    }
}

/// Whom a command speaks for, so an error's next step names the right token.
fn caller_of(cmd: &Cmd) -> hints::Caller {
    match cmd {
        Cmd::Pending { .. }
        | Cmd::Approve(_)
        | Cmd::Deny(_)
        | Cmd::Login { .. }
        | Cmd::Whoami { .. }
        | Cmd::Logout { .. } => hints::Caller::Human,
        Cmd::Admin { .. } | Cmd::Audit { .. } | Cmd::Report { .. } => hints::Caller::Admin,
        _ => hints::Caller::Workload,
    }
}

/// Whether `--json` was given (before a `--`, after which the arguments are a command's).
fn json_requested() -> bool {
    std::env::args()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json")
}

/// `latch completions SHELL`: the script on stdout.
fn completions(shell: clap_complete::Shell) -> ExitCode {
    use clap::CommandFactory;
    let mut cmd = with_value_hints(Cli::command());
    clap_complete::generate(shell, &mut cmd, "latch", &mut std::io::stdout());
    ExitCode::SUCCESS
}

/// Marks every option whose value is neither a path nor one of a fixed list (an id, an
/// environment, a duration, a URL…) as [`clap::ValueHint::Other`], so completion offers no file
/// names for it; paths (`PathBuf`, or an explicit hint) and fixed lists keep theirs.
fn with_value_hints(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|a| {
        let free_text = !a.is_positional()
            && a.get_action().takes_values()
            && a.get_possible_values().is_empty()
            && a.get_value_hint() == clap::ValueHint::Unknown;
        if free_text {
            a.value_hint(clap::ValueHint::Other)
        } else {
            a
        }
    })
    .mut_subcommands(with_value_hints)
}

/// `latch man --markdown`: the command reference as Markdown on stdout, titled for the book.
fn man_markdown() -> ExitCode {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let options = clap_markdown::MarkdownOptions::new()
        .title("CLI reference".to_owned())
        .show_footer(false)
        .show_table_of_contents(true);
    let body = clap_markdown::help_markdown_command_custom(&cmd, &options);
    print!(
        "{}",
        body.replacen(
            "\n",
            "\n\n<!-- Generated by `latch man --markdown` from the CLI's own definitions: do not edit. -->\n",
            1
        )
    );
    print!("{}", manpage::markdown_sections());
    ExitCode::SUCCESS
}

/// `latch man`: the root page on stdout, or with `dir` every page written there.
fn man(dir: Option<PathBuf>) -> Result<ExitCode, String> {
    use clap::CommandFactory;
    let cmd = Cli::command();
    match dir {
        Some(d) => manpage::write_pages(cmd, &d)
            .map_err(|e| format!("cannot write the pages into {}: {e}", d.display()))?,
        None => {
            let out = manpage::root_page(cmd).map_err(|e| e.to_string())?;
            use std::io::Write;
            std::io::stdout()
                .write_all(&out)
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Exit status of a process whose output pipe closed (128 + SIGPIPE), as shells report it.
const CLOSED_PIPE_EXIT: i32 = 141;

/// `latch audit tail | head -1`: once the reader closes the pipe, Rust's `println!` panics
/// ("failed printing to stdout: Broken pipe"). Like any Unix filter, exit quietly instead, with
/// the status a SIGPIPE death would give; every other panic keeps the default report.
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to std") && msg.contains("Broken pipe") {
            std::process::exit(CLOSED_PIPE_EXIT);
        }
        default(info);
    }));
}

/// Runs one verb; `Err` is printed as `error: …` with exit code 1.
async fn run(cmd: Cmd) -> Result<ExitCode, String> {
    match cmd {
        Cmd::Serve { config, listen } => cmd::serve::run(&config, listen).await,
        Cmd::Demo => Ok(ExitCode::from(cmd::demo::run().await as u8)),
        Cmd::DemoUpstream => {
            cmd::demo::gateway::serve_upstream().await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::BenchEmptyServer { listen } => {
            cmd::bench::baseline::serve_empty(&listen).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Task { cmd, conn } => cmd::task::run(cmd, &conn).await,
        Cmd::Resources { conn } => cmd::resources::run(&conn).await,
        Cmd::Request(args) => cmd::request::run(args).await,
        Cmd::Claim(args) => cmd::request::claim(args).await,
        Cmd::Login { args, conn } => cmd::login::login(&args, &conn).await,
        Cmd::Whoami { conn } => cmd::login::whoami(&conn).await,
        Cmd::Logout { conn } => cmd::login::logout(&conn).await,
        Cmd::Pending { conn } => cmd::approve::pending(&conn).await,
        Cmd::Approve(v) => cmd::approve::vote(v, "approve").await,
        Cmd::Deny(v) => cmd::approve::vote(v, "deny").await,
        Cmd::Lease { cmd, conn } => cmd::lease::run(cmd, &conn).await,
        Cmd::Admin { cmd, conn } => cmd::admin::run(cmd, &conn).await,
        Cmd::Audit { cmd, conn } => cmd::audit::run(cmd, &conn.client(), conn.json).await,
        Cmd::Report { cmd, conn } => cmd::report::run(cmd, &conn).await,
        Cmd::Policy { cmd } => cmd::policy::run(cmd),
        Cmd::Exec { args, conn } => cmd::exec::run(args, &conn).await,
        Cmd::Mcp { conn } => cmd::mcp::run(conn).await,
        Cmd::Scan { args, conn } => {
            cmd::scan::run(args, &conn.server, conn.plain_token(), conn.json).await
        }
        Cmd::Proxy { args, conn } => {
            cmd::proxy::run(args, conn.workload_client()?).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Bench(args) => Ok(ExitCode::from(cmd::bench::run(args).await?)),
        Cmd::Completions { shell } => Ok(completions(shell)),
        Cmd::Man { markdown: true, .. } => Ok(man_markdown()),
        Cmd::Man { dir, .. } => man(dir),
        Cmd::Dev { cmd, conn } => cmd::dev::run(cmd, &conn).await,
    }
}
