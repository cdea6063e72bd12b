//! The demo's MCP gateway step, and `latch demo-upstream`: the tiny MCP server over stdio the
//! demo's broker fronts (no Python needed). It offers one tool, `query`, which answers a
//! made-up row count and whether it received the credential Latch holds for it (never the
//! credential itself).

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ErrorData, ServerHandler, ServiceExt, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;
use serde_json::json;

use super::{Script, short};
use crate::client::Client;

/// The child's variable that receives the credential (see the demo's `[[mcp.upstreams]]`).
pub(super) const TOKEN_VAR: &str = "DEMO_UPSTREAM_TOKEN";

/// The `[[mcp.upstreams]]` block of the demo: this binary as a stdio upstream named `demo-db`,
/// with the credential in `secret_file` (relative to the demo's directory).
pub(super) fn upstream_config(secret_file: &str) -> Result<String, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let exe = exe
        .to_string_lossy()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    Ok(format!(
        "\n[[mcp.upstreams]]\nname = \"demo-db\"\ntransport = \"stdio\"\ncommand = \"{exe}\"\n\
         args = [\"demo-upstream\"]\ncall_timeout = \"10s\"\n[mcp.upstreams.credential]\n\
         secret_file = \"{secret_file}\"\nenv_var = \"{TOKEN_VAR}\"\n"
    ))
}

/// `query` arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct QueryArgs {
    /// SQL to run, e.g. `select * from sandbox.orders`.
    pub query: String,
}

/// The demo upstream.
#[derive(Clone)]
pub struct DemoUpstream {
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl DemoUpstream {
    /// Runs a (pretend) query.
    #[tool(
        description = "Run a read-only SQL query on the demo database and return the row count."
    )]
    async fn query(
        &self,
        Parameters(a): Parameters<QueryArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let authenticated = std::env::var(TOKEN_VAR).is_ok_and(|t| !t.is_empty());
        Ok(CallToolResult::structured(json!({
            "rows": 2,
            "query_chars": a.query.chars().count(),
            "authenticated": authenticated,
        })))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for DemoUpstream {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_server_info(
            Implementation::new("latch-demo-upstream", env!("CARGO_PKG_VERSION")),
        )
    }
}

/// `latch demo-upstream`: serves the demo upstream on stdio until stdin closes.
///
/// # Errors
/// An MCP transport failure.
pub async fn serve_upstream() -> Result<(), String> {
    let server = DemoUpstream {
        tool_router: DemoUpstream::tool_router(),
    };
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| format!("demo-upstream: {e}"))?;
    running
        .waiting()
        .await
        .map_err(|e| format!("demo-upstream: {e}"))?;
    Ok(())
}

/// The gateway step: the sandbox task calls `demo-db__query` through Latch twice — allowed,
/// then denied by its arguments (it names the `production` schema) — and both calls are in the
/// audit trail, with an arguments digest and never the credential.
pub(super) async fn gateway_step(
    s: &mut Script,
    agent: &Client,
    auditor: &Client,
    sandbox: &str,
    secret: &str,
) -> Result<(), String> {
    s.step("MCP gateway: the agent calls another MCP server's tool through Latch, per call under policy");
    let tools = agent.get("/v1/gateway/tools").await?;
    let listed = tools.body["tools"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t["name"] == "demo-db__query"));
    s.check(listed, "the upstream's tool is offered as `demo-db__query`");
    let call = |q: &str| json!({"tool": "demo-db__query", "arguments": {"query": q}});
    let path = format!("/v1/tasks/{sandbox}/tool-calls");
    let ok = agent
        .post(&path, &call("select * from sandbox.orders"))
        .await?;
    s.check(
        ok.status == 200
            && ok.body["status"] == "ok"
            && ok.body["result"]["structuredContent"]["authenticated"] == true,
        "a query on the sandbox schema is allowed and forwarded with Latch's credential",
    );
    let denied = agent
        .post(&path, &call("select * from production.payments"))
        .await?;
    s.check(
        denied.status == 403 && denied.body["status"] == "denied",
        &format!(
            "a query naming the production schema is denied by {} (never sent upstream)",
            short(&denied.body["policy_ids"][0])
        ),
    );
    let a = auditor
        .get(&format!(
            "/v1/audit?task_id={sandbox}&kind=tool.called&limit=100"
        ))
        .await?;
    let events = a.body.as_array().cloned().unwrap_or_default();
    for e in &events {
        s.say(format!(
            "#{:<4} {:<12} {:<7} {} digest {}…",
            e["seq"],
            short(&e["kind"]),
            short(&e["outcome"]),
            short(&e["detail"]["name"]),
            short(&e["detail"]["arguments_digest"])
                .chars()
                .take(12)
                .collect::<String>()
        ));
    }
    let text = a.body.to_string();
    s.check(
        events.len() == 2
            && events.iter().any(|e| e["outcome"] == "ok")
            && events.iter().any(|e| e["outcome"] == "deny")
            && !text.contains(secret)
            && !text.contains("production.payments"),
        "both calls are in the audit trail (tool, arguments digest, decision); no argument or credential in clear",
    );
    Ok(())
}
