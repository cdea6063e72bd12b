//! One module per verb of `latch`: its arguments (clap derive) and what it does.
//!
//! Every verb answers `Result<ExitCode, String>`; `Err` becomes `error: …` and exit code 1
//! (see the crate documentation for the other exit codes).

use clap::Args;

use crate::client::Client;

pub(crate) mod admin;
pub(crate) mod approve;
pub(crate) mod audit;
pub(crate) mod bench;
pub(crate) mod demo;
pub(crate) mod dev;
pub(crate) mod exec;
pub(crate) mod lease;
pub(crate) mod login;
pub(crate) mod mcp;
pub(crate) mod policy;
pub(crate) mod proxy;
pub(crate) mod request;
pub(crate) mod resources;
pub(crate) mod scan;
pub(crate) mod serve;
pub(crate) mod task;

// No doc comment on this struct: clap would take it as the `about` of every command that
// flattens it.
#[derive(Args, Clone)]
pub(crate) struct Conn {
    /// Broker URL.
    #[arg(
        long,
        env = "LATCH_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub(crate) server: String,
    /// Bearer token (workload token for agent commands, human token for approvals). Without
    /// it, the sign-in `latch login` stored for `--server` is used.
    #[arg(long, env = "LATCH_TOKEN", global = true, hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Print the raw JSON answer (for scripts).
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

impl Conn {
    /// A client for `--server` with `--token`, else with the stored sign-in for that server
    /// (`latch login`).
    pub(crate) fn client(&self) -> Client {
        Client::new(&self.server, self.token.clone()).with_stored_login()
    }
}

/// A `--ttl` as whole seconds, as the API takes it (`ttl_secs`).
pub(crate) fn secs(d: Option<humantime::Duration>) -> Option<i64> {
    d.map(|d| std::time::Duration::from(d).as_secs() as i64)
}
