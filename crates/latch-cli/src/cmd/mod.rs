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
pub(crate) mod checks;
pub(crate) mod demo;
pub(crate) mod dev;
pub(crate) mod exec;
pub(crate) mod lease;
pub(crate) mod login;
pub(crate) mod mcp;
pub(crate) mod policy;
pub(crate) mod proxy;
pub(crate) mod report;
pub(crate) mod request;
pub(crate) mod resources;
pub(crate) mod scan;
pub(crate) mod serve;
pub(crate) mod task;
pub(crate) mod wait;

// No doc comment on this struct: clap would take it as the `about` of every command that
// flattens it.
#[derive(Args, Clone)]
pub(crate) struct Conn {
    /// Broker URL, `http://HOST:PORT` or `https://HOST[:PORT]`, without a path (a bare
    /// `HOST:PORT` is taken as `http://` on a loopback address only).
    #[arg(
        long,
        env = "LATCH_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true,
        value_name = "URL",
        value_parser = crate::human::server_arg
    )]
    pub(crate) server: String,
    /// Bearer token (workload token for agent commands, human token for approvals); wins over
    /// every other source. Without it: human commands use `LATCH_TOKEN`, else the sign-in
    /// `latch login` stored for `--server`; workload commands use `--identity`, else the first
    /// identity found (GitHub Actions OIDC, GitLab `id_tokens`, Kubernetes projected token,
    /// SPIFFE Workload API, `LATCH_TOKEN`), else the stored sign-in.
    #[arg(long, global = true)]
    pub(crate) token: Option<String>,
    /// Where the workload identity comes from: github, gitlab, kubernetes, spiffe, file:PATH
    /// or env:VAR (default: the first one found, in the order above).
    #[arg(long, env = "LATCH_IDENTITY", global = true, value_name = "SOURCE")]
    pub(crate) identity: Option<String>,
    /// Audience of the identity token asked for (GitHub Actions OIDC, SPIFFE JWT-SVID); must
    /// be the `audience` of the broker's `[[issuers]]` entry (default: `--server`).
    #[arg(long, env = "LATCH_AUDIENCE", global = true)]
    pub(crate) audience: Option<String>,
    /// GitLab CI: the variable that holds the job's ID token (`id_tokens:` in .gitlab-ci.yml).
    #[arg(
        long,
        env = "LATCH_GITLAB_TOKEN_VAR",
        default_value = "LATCH_ID_TOKEN",
        global = true,
        value_name = "VAR"
    )]
    pub(crate) gitlab_token_var: String,
    /// Kubernetes: the projected service-account token file (read again before each use).
    #[arg(
        long,
        env = "LATCH_K8S_TOKEN_FILE",
        default_value = "/var/run/secrets/tokens/latch-token",
        global = true,
        value_name = "FILE"
    )]
    pub(crate) k8s_token_file: std::path::PathBuf,
    /// Print the raw JSON answer (for scripts).
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

impl Conn {
    /// `--token`, else `LATCH_TOKEN` (human commands, and commands that take a token only).
    pub(crate) fn plain_token(&self) -> Option<String> {
        self.token.clone().or_else(|| {
            std::env::var(crate::identity::TOKEN_ENV)
                .ok()
                .filter(|t| !t.trim().is_empty())
        })
    }

    /// A client for `--server` with `--token` or `LATCH_TOKEN`, else with the stored sign-in
    /// for that server (`latch login`): human commands.
    pub(crate) fn client(&self) -> Client {
        Client::new(&self.server, self.plain_token()).with_stored_login()
    }

    /// The ambient identity's settings.
    pub(crate) fn identity_settings(&self) -> crate::identity::Settings {
        crate::identity::Settings {
            identity: self.identity.clone(),
            audience: self
                .audience
                .clone()
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| self.server.trim_end_matches('/').to_owned()),
            gitlab_var: self.gitlab_token_var.clone(),
            k8s_file: self.k8s_token_file.clone(),
        }
    }

    /// A client for workload commands: `--token`, else the ambient identity (`--identity` or
    /// the first found), else the stored sign-in.
    ///
    /// # Errors
    /// A bad `--identity`, or no identity at all (one line naming the options).
    pub(crate) fn workload_client(&self) -> Result<Client, String> {
        if let Some(t) = &self.token {
            return Ok(Client::new(&self.server, Some(t.clone())));
        }
        let settings = self.identity_settings();
        if let Some(src) = settings.source()? {
            return Ok(Client::with_ambient(
                &self.server,
                crate::identity::Ambient::new(src, &settings.audience),
            ));
        }
        match crate::credentials::load(&self.server) {
            Ok(Some(_)) => Ok(Client::new(&self.server, None).with_stored_login()),
            Ok(None) => Err(crate::identity::NOT_FOUND.to_owned()),
            Err(e) => Err(e),
        }
    }
}

/// A `--ttl` as whole seconds, as the API takes it (`ttl_secs`).
pub(crate) fn secs(d: Option<humantime::Duration>) -> Option<i64> {
    d.map(|d| std::time::Duration::from(d).as_secs() as i64)
}
