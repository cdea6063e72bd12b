//! `[mcp]`: the MCP gateway's upstream servers.
//!
//! ```toml
//! [[mcp.upstreams]]
//! name = "db"                              # [a-z][a-z0-9-]{0,31}; tools are `db__<tool>`
//! transport = "streamable_http"            # or "stdio"
//! url = "https://mcp.internal.example/mcp" # streamable_http
//! call_timeout = "20s"                     # per tool call (default 20 s)
//! [mcp.upstreams.credential]               # what Latch sends; the agent never sees it
//! secret_env = "DB_MCP_TOKEN"              # or secret_file = "secrets/db-mcp-token"
//! header = "Authorization"                 # default; streamable_http only
//! prefix = "Bearer "                       # default; streamable_http only
//!
//! [[mcp.upstreams]]
//! name = "files"
//! transport = "stdio"
//! command = "/usr/local/bin/files-mcp"
//! args = ["--root", "/srv/data"]
//! env = { LOG_LEVEL = "warn" }             # not secrets: the configuration is not a vault
//! [mcp.upstreams.credential]
//! secret_file = "secrets/files-token"
//! env_var = "FILES_TOKEN"                  # stdio: the child's variable that receives it
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::read_secret;

/// `[mcp]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpConfig {
    /// Upstream MCP servers whose tools Latch offers through its gateway.
    #[serde(default)]
    pub upstreams: Vec<UpstreamConfig>,
}

/// How Latch reaches an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamTransport {
    /// MCP streamable HTTP at `url`.
    StreamableHttp,
    /// A child process speaking MCP over its stdin/stdout (`command`, `args`, `env`).
    Stdio,
}

/// One `[[mcp.upstreams]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Name (`[a-z][a-z0-9-]{0,31}`): the prefix of its tools (`<name>__<tool>`), and
    /// `resource.upstream` in policies.
    pub name: String,
    /// `streamable_http` or `stdio`.
    pub transport: UpstreamTransport,
    /// The MCP endpoint (`streamable_http`).
    #[serde(default)]
    pub url: Option<String>,
    /// The program (`stdio`).
    #[serde(default)]
    pub command: Option<String>,
    /// Its arguments (`stdio`).
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment of the child (`stdio`); not for secrets (see `credential`). The
    /// child does not inherit Latch's environment beyond `PATH`, `HOME` and `LANG`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Deadline of one tool call (default 20 s); must be below `[http] request_timeout`, so
    /// a call's audit event is written before the HTTP request times out.
    #[serde(default = "default_call_timeout", with = "humantime_serde")]
    pub call_timeout: Duration,
    /// The credential Latch presents to the upstream.
    #[serde(default)]
    pub credential: Option<UpstreamCredentialConfig>,
    /// Data can leave through its tools (an external API, publishing): policy reads
    /// `resource.egress` on its `Latch::Tool`s (the example policies hold them back for step-up
    /// in a tainted task).
    #[serde(default)]
    pub egress: bool,
}

fn default_call_timeout() -> Duration {
    Duration::from_secs(20)
}

/// `[mcp.upstreams.credential]`: a secret Latch holds for the upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamCredentialConfig {
    /// File holding the secret (relative to the configuration's directory).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Environment variable holding the secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// HTTP header carrying it (`streamable_http`; default `Authorization`).
    #[serde(default)]
    pub header: Option<String>,
    /// Text before the secret in the header (default `Bearer `).
    #[serde(default)]
    pub prefix: Option<String>,
    /// The child's environment variable receiving it (`stdio`, required there).
    #[serde(default)]
    pub env_var: Option<String>,
}

/// A resolved upstream credential.
#[derive(Clone)]
pub enum UpstreamSecret {
    /// Sent as `header: prefix + secret` on every HTTP request.
    Header {
        /// Header name.
        name: String,
        /// The full header value.
        value: SecretString,
    },
    /// Set as the child's environment variable `name`.
    Env {
        /// Variable name.
        name: String,
        /// The secret.
        value: SecretString,
    },
}

impl std::fmt::Debug for UpstreamSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Header { name, .. } => write!(f, "Header({name}: <redacted>)"),
            Self::Env { name, .. } => write!(f, "Env({name}=<redacted>)"),
        }
    }
}

impl McpConfig {
    /// Checks names (valid, distinct) and each upstream's transport fields.
    ///
    /// # Errors
    /// A message naming the upstream and the field.
    pub fn validate(&self, request_timeout: Duration) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for u in &self.upstreams {
            if !latch_core::gateway::valid_upstream_name(&u.name) {
                return Err(format!(
                    "mcp upstream name `{}` must match [a-z][a-z0-9-]{{0,31}}",
                    u.name
                ));
            }
            if !seen.insert(&u.name) {
                return Err(format!("duplicate mcp upstream name `{}`", u.name));
            }
            u.validate()?;
            if u.call_timeout >= request_timeout {
                return Err(format!(
                    "mcp upstream `{}`: `call_timeout` must be below [http] request_timeout ({request_timeout:?})",
                    u.name
                ));
            }
        }
        Ok(())
    }
}

impl UpstreamConfig {
    fn validate(&self) -> Result<(), String> {
        let n = &self.name;
        match self.transport {
            UpstreamTransport::StreamableHttp => {
                let url = self
                    .url
                    .as_deref()
                    .ok_or_else(|| format!("mcp upstream `{n}`: streamable_http needs `url`"))?;
                let parsed = url::Url::parse(url)
                    .map_err(|e| format!("mcp upstream `{n}`: bad `url`: {e}"))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(format!("mcp upstream `{n}`: `url` must be http or https"));
                }
                if self.command.is_some() || !self.args.is_empty() || !self.env.is_empty() {
                    return Err(format!(
                        "mcp upstream `{n}`: `command`, `args` and `env` are for stdio"
                    ));
                }
            }
            UpstreamTransport::Stdio => {
                if self.command.as_deref().is_none_or(str::is_empty) {
                    return Err(format!("mcp upstream `{n}`: stdio needs `command`"));
                }
                if self.url.is_some() {
                    return Err(format!("mcp upstream `{n}`: `url` is for streamable_http"));
                }
            }
        }
        if self.call_timeout.is_zero() {
            return Err(format!(
                "mcp upstream `{n}`: `call_timeout` must be positive"
            ));
        }
        if let Some(c) = &self.credential {
            if c.secret_file.is_some() == c.secret_env.is_some() {
                return Err(format!(
                    "mcp upstream `{n}`: credential needs exactly one of `secret_file`, `secret_env`"
                ));
            }
            let stdio = self.transport == UpstreamTransport::Stdio;
            if stdio && c.env_var.is_none() {
                return Err(format!(
                    "mcp upstream `{n}`: a stdio credential needs `env_var`"
                ));
            }
            if stdio && (c.header.is_some() || c.prefix.is_some()) {
                return Err(format!(
                    "mcp upstream `{n}`: `header` and `prefix` are for streamable_http"
                ));
            }
            if !stdio && c.env_var.is_some() {
                return Err(format!("mcp upstream `{n}`: `env_var` is for stdio"));
            }
        }
        Ok(())
    }

    /// Reads the credential's secret (at start).
    ///
    /// # Errors
    /// A message naming the file or variable, never the secret.
    pub fn secret(&self, base_dir: &Path) -> Result<Option<UpstreamSecret>, String> {
        let Some(c) = &self.credential else {
            return Ok(None);
        };
        let secret = read_secret(base_dir, c.secret_file.as_deref(), c.secret_env.as_deref())
            .map_err(|e| format!("mcp upstream `{}`: {e}", self.name))?;
        Ok(Some(match self.transport {
            UpstreamTransport::Stdio => UpstreamSecret::Env {
                name: c.env_var.clone().unwrap_or_default(),
                value: secret,
            },
            UpstreamTransport::StreamableHttp => {
                use secrecy::ExposeSecret;
                let prefix = c.prefix.clone().unwrap_or_else(|| "Bearer ".into());
                UpstreamSecret::Header {
                    name: c.header.clone().unwrap_or_else(|| "Authorization".into()),
                    value: SecretString::from(format!("{prefix}{}", secret.expose_secret())),
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<McpConfig, String> {
        let c: McpConfig = toml::from_str(t).map_err(|e| e.to_string())?;
        c.validate(Duration::from_secs(30)).map(|()| c)
    }

    #[test]
    fn upstreams_are_checked() {
        let ok = parse(
            r#"
[[upstreams]]
name = "db"
transport = "streamable_http"
url = "http://127.0.0.1:9/mcp"
credential = { secret_env = "X" }
[[upstreams]]
name = "files"
transport = "stdio"
command = "files-mcp"
credential = { secret_env = "Y", env_var = "TOKEN" }
"#,
        );
        assert!(ok.is_ok(), "{ok:?}");
        for bad in [
            r#"[[upstreams]]
name = "Bad_name"
transport = "stdio"
command = "x""#,
            r#"[[upstreams]]
name = "a"
transport = "stdio""#,
            r#"[[upstreams]]
name = "a"
transport = "streamable_http"
url = "ftp://x""#,
            r#"[[upstreams]]
name = "a"
transport = "stdio"
command = "x"
credential = { secret_env = "Y" }"#,
            r#"[[upstreams]]
name = "a"
transport = "stdio"
command = "x"
[[upstreams]]
name = "a"
transport = "stdio"
command = "x""#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
