//! `latch mcp`: an MCP server on stdio acting as one workload, forwarding to the broker's API.

use std::process::ExitCode;

use super::Conn;

/// `latch mcp`: checks the token once (fails fast on a bad one), then serves MCP on stdio.
/// Nothing but the protocol is written to stdout.
///
/// # Errors
/// No token, a broker that refuses it or cannot be reached, or an MCP transport failure.
pub(crate) async fn run(conn: Conn) -> Result<ExitCode, String> {
    use latch_server::mcp::{Dispatch, HttpDispatch, LatchMcp};
    use rmcp::ServiceExt;
    // Resolved once: the MCP session acts with this token until it ends (an ambient token
    // that expires meanwhile is refused by the broker; restart `latch mcp`).
    let token = conn.workload_client()?.bearer().await?.ok_or(
        "`latch mcp` needs the workload token it acts as (--token, --identity or LATCH_TOKEN)",
    )?;
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
