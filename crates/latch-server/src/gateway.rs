//! The MCP gateway's upstream connections ([`latch_core::gateway::ToolUpstreams`] over the
//! official Rust SDK's client, `rmcp`): streamable HTTP over Latch's own `reqwest` client, or a
//! child process over stdio.
//!
//! One connection per upstream, opened at the first listing or call and kept; a call that
//! fails at the transport drops it, so the next one reconnects. The tool list is read at each
//! connection and refreshed when older than [`TOOLS_MAX_AGE`].
//!
//! # Security
//! The credential is sent only to its upstream (a header marked sensitive, or the child's
//! environment, which otherwise holds only `PATH`, `HOME`, `LANG` and the configured `env`);
//! it is never logged, never in an error, never in `Debug`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use latch_core::gateway::{GatewayTool, ToolUpstreams, UpstreamError, UpstreamFailure, namespaced};
use rmcp::model::CallToolRequestParams;
use rmcp::service::{Peer, RunningService};
use rmcp::{RoleClient, ServiceExt};
use secrecy::ExposeSecret;
use serde_json::{Map, Value};
use tokio::sync::Mutex;

use crate::config::{UpstreamConfig, UpstreamSecret, UpstreamTransport};

/// How long a listed set of tools is trusted before it is read again.
pub const TOOLS_MAX_AGE: Duration = Duration::from_secs(30);

/// An open connection: the client service (kept alive) and the tools it listed.
struct Conn {
    _service: RunningService<RoleClient, ()>,
    peer: Peer<RoleClient>,
    tools: Vec<GatewayTool>,
    listed_at: Instant,
}

/// One configured upstream.
struct Upstream {
    config: UpstreamConfig,
    secret: Option<UpstreamSecret>,
    http: reqwest::Client,
    conn: Mutex<Option<Conn>>,
}

/// The configured upstreams.
pub struct McpUpstreams {
    upstreams: Vec<Arc<Upstream>>,
}

impl std::fmt::Debug for McpUpstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.upstreams.iter().map(|u| &u.config.name))
            .finish()
    }
}

fn failure(kind: UpstreamFailure, message: impl Into<String>) -> UpstreamError {
    UpstreamError {
        kind,
        message: message.into(),
    }
}

impl McpUpstreams {
    /// The upstreams of `configs`, each with its resolved secret. Nothing is connected yet.
    ///
    /// # Errors
    /// A message naming the upstream (an unreadable secret, an HTTP client that cannot be
    /// built, a credential header rmcp reserves).
    pub fn new(
        configs: &[UpstreamConfig],
        secrets: Vec<Option<UpstreamSecret>>,
    ) -> Result<Self, String> {
        let mut upstreams = Vec::new();
        for (config, secret) in configs.iter().zip(secrets) {
            let http = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| format!("mcp upstream `{}`: {e}", config.name))?;
            upstreams.push(Arc::new(Upstream {
                config: config.clone(),
                secret,
                http,
                conn: Mutex::new(None),
            }));
        }
        Ok(Self { upstreams })
    }
}

impl Upstream {
    fn name(&self) -> &str {
        &self.config.name
    }

    /// Opens the connection and lists the tools, within the call timeout.
    async fn connect(&self) -> Result<Conn, UpstreamError> {
        let deadline = self.config.call_timeout;
        let opened = tokio::time::timeout(deadline, self.open()).await;
        let service = match opened {
            Ok(r) => r?,
            Err(_) => {
                return Err(failure(
                    UpstreamFailure::Timeout,
                    format!("no MCP session within {deadline:?}"),
                ));
            }
        };
        let peer = service.peer().clone();
        let tools = self.list(&peer).await?;
        Ok(Conn {
            _service: service,
            peer,
            tools,
            listed_at: Instant::now(),
        })
    }

    async fn open(&self) -> Result<RunningService<RoleClient, ()>, UpstreamError> {
        let err = |e: String| failure(UpstreamFailure::Error, e);
        match self.config.transport {
            UpstreamTransport::StreamableHttp => {
                use rmcp::transport::StreamableHttpClientTransport;
                use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
                let mut headers = HashMap::new();
                if let Some(UpstreamSecret::Header { name, value }) = &self.secret {
                    let n = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| err(format!("bad credential header name `{name}`")))?;
                    let mut v = reqwest::header::HeaderValue::from_str(value.expose_secret())
                        .map_err(|_| err("the credential is not a valid header value".into()))?;
                    v.set_sensitive(true);
                    headers.insert(n, v);
                }
                let config = StreamableHttpClientTransportConfig::with_uri(
                    self.config.url.clone().unwrap_or_default(),
                )
                .custom_headers(headers);
                let transport =
                    StreamableHttpClientTransport::with_client(self.http.clone(), config);
                ().serve(transport)
                    .await
                    .map_err(|e| err(format!("cannot open an MCP session: {e}")))
            }
            UpstreamTransport::Stdio => {
                use rmcp::transport::TokioChildProcess;
                let mut cmd =
                    tokio::process::Command::new(self.config.command.clone().unwrap_or_default());
                cmd.args(&self.config.args).env_clear();
                for k in ["PATH", "HOME", "LANG"] {
                    if let Ok(v) = std::env::var(k) {
                        cmd.env(k, v);
                    }
                }
                cmd.envs(&self.config.env);
                if let Some(UpstreamSecret::Env { name, value }) = &self.secret {
                    cmd.env(name, value.expose_secret());
                }
                let (child, _stderr) = TokioChildProcess::builder(cmd)
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .map_err(|e| err(format!("cannot start the upstream's command: {e}")))?;
                ().serve(child)
                    .await
                    .map_err(|e| err(format!("cannot open an MCP session: {e}")))
            }
        }
    }

    async fn list(&self, peer: &Peer<RoleClient>) -> Result<Vec<GatewayTool>, UpstreamError> {
        let listed = tokio::time::timeout(self.config.call_timeout, peer.list_all_tools())
            .await
            .map_err(|_| failure(UpstreamFailure::Timeout, "tools/list timed out"))?
            .map_err(|e| failure(UpstreamFailure::Error, format!("tools/list failed: {e}")))?;
        let mut out = Vec::new();
        for t in listed {
            let Some(name) = namespaced(self.name(), &t.name) else {
                tracing::warn!(
                    upstream = self.name(),
                    "an upstream tool's name breaks the MCP tool-name rule; it is not offered"
                );
                continue;
            };
            out.push(GatewayTool {
                name,
                upstream: self.name().to_owned(),
                tool: t.name.to_string(),
                description: t.description.map(|d| d.to_string()),
                input_schema: Value::Object((*t.input_schema).clone()),
                egress: self.config.egress,
            });
        }
        Ok(out)
    }

    /// The live connection's peer and tools, connecting (or refreshing the list) as needed.
    async fn session(&self) -> Result<(Peer<RoleClient>, Vec<GatewayTool>), UpstreamError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_mut() {
            if c.peer.is_transport_closed() {
                *guard = None;
            } else if c.listed_at.elapsed() > TOOLS_MAX_AGE {
                match self.list(&c.peer).await {
                    Ok(tools) => {
                        c.tools = tools;
                        c.listed_at = Instant::now();
                    }
                    Err(_) => *guard = None,
                }
            }
        }
        if guard.is_none() {
            *guard = Some(self.connect().await?);
        }
        match guard.as_ref() {
            Some(c) => Ok((c.peer.clone(), c.tools.clone())),
            None => Err(failure(UpstreamFailure::Error, "no connection")),
        }
    }

    async fn drop_connection(&self) {
        *self.conn.lock().await = None;
    }
}

#[async_trait]
impl ToolUpstreams for McpUpstreams {
    async fn tools(&self) -> Vec<GatewayTool> {
        let mut out = Vec::new();
        for u in &self.upstreams {
            match u.session().await {
                Ok((_, tools)) => out.extend(tools),
                Err(e) => tracing::warn!(
                    upstream = u.name(),
                    outcome = e.kind.as_str(),
                    error = %e.message,
                    "mcp upstream unavailable; its tools are not offered"
                ),
            }
        }
        out
    }

    async fn call(
        &self,
        tool: &GatewayTool,
        arguments: Map<String, Value>,
    ) -> Result<Value, UpstreamError> {
        let u = self
            .upstreams
            .iter()
            .find(|u| u.name() == tool.upstream)
            .ok_or_else(|| failure(UpstreamFailure::Error, "no such upstream"))?;
        let (peer, _) = u.session().await?;
        let params = CallToolRequestParams::new(tool.tool.clone()).with_arguments(arguments);
        match tokio::time::timeout(u.config.call_timeout, peer.call_tool(params)).await {
            Err(_) => Err(failure(
                UpstreamFailure::Timeout,
                format!("no answer within {:?}", u.config.call_timeout),
            )),
            Ok(Err(e)) => {
                if peer.is_transport_closed() {
                    u.drop_connection().await;
                }
                Err(failure(
                    UpstreamFailure::Error,
                    format!("tools/call failed: {e}"),
                ))
            }
            Ok(Ok(result)) => serde_json::to_value(result)
                .map_err(|e| failure(UpstreamFailure::Error, e.to_string())),
        }
    }
}
