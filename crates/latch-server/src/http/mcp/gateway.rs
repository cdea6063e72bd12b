//! The gateway's tools in the MCP server: the upstreams' tools are listed next to Latch's own
//! (`GET /v1/gateway/tools`, named `<upstream>__<tool>`), and a call of one is
//! `POST /v1/tasks/{task}/tool-calls` with the caller's token, like every other tool.
//!
//! # Which task a call is made in
//! `_meta["latch/task_id"]` of the `tools/call` request when present (a client that runs
//! several tasks in one session names each call's); otherwise the session's current task: the
//! last one `open_task` opened in this MCP session, until `complete_task` ends it. With
//! neither, the result is an error with code `task_required` and nothing is called.

use std::sync::Arc;

use rmcp::model::{CallToolRequestParams, CallToolResponse, CallToolResult, ListToolsResult, Tool};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};
use serde_json::{Value, json};

use super::{LatchMcp, Method, error_result, offer_console, seg};

/// The `_meta` key naming a gateway call's task.
pub const TASK_META_KEY: &str = "latch/task_id";

/// Latch's tools and the gateway's (those the upstreams offer now; none when the broker fronts
/// no upstream or cannot list them).
pub(super) async fn list_tools(
    mcp: &LatchMcp,
    ctx: RequestContext<RoleServer>,
) -> Result<ListToolsResult, ErrorData> {
    let mut tools = mcp.tool_router.list_all();
    if let Ok((200, b)) = mcp.call(&ctx, Method::GET, "/v1/gateway/tools", None).await {
        for t in b["tools"].as_array().into_iter().flatten() {
            let (Some(name), Some(schema)) = (t["name"].as_str(), t["input_schema"].as_object())
            else {
                continue;
            };
            let description = t["description"].as_str().map(str::to_owned);
            let mut tool = Tool::new(
                name.to_owned(),
                description.unwrap_or_default(),
                Arc::new(schema.clone()),
            );
            if t["description"].is_null() {
                tool.description = None;
            }
            tools.push(tool);
        }
    }
    Ok(ListToolsResult {
        result_type: Some(rmcp::model::ResultType::COMPLETE),
        tools,
        ..Default::default()
    })
}

/// The task a gateway call names: `_meta["latch/task_id"]`, else the session's.
fn task_of(
    mcp: &LatchMcp,
    request: &CallToolRequestParams,
    ctx: &RequestContext<RoleServer>,
) -> Option<String> {
    let from_meta = |v: Value| {
        v.get(TASK_META_KEY)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    serde_json::to_value(&request.meta)
        .ok()
        .and_then(from_meta)
        .or_else(|| serde_json::to_value(&ctx.meta).ok().and_then(from_meta))
        .or_else(|| mcp.session_task())
}

/// Calls Latch's own tool, or forwards an upstream's through the broker.
pub(super) async fn call_tool(
    mcp: &LatchMcp,
    request: CallToolRequestParams,
    ctx: RequestContext<RoleServer>,
) -> Result<CallToolResponse, ErrorData> {
    if mcp.tool_router.has_route(&request.name) {
        let tcc = rmcp::handler::server::tool::ToolCallContext::new(mcp, request, ctx);
        return mcp.tool_router.call(tcc).await;
    }
    let Some(task) = task_of(mcp, &request, &ctx) else {
        return Ok(CallToolResponse::Complete(
            CallToolResult::structured_error(json!({
                "http_status": 400,
                "code": "task_required",
                "message": format!("a gateway tool call runs in a task: call open_task first, or send _meta[\"{TASK_META_KEY}\"]"),
            })),
        ));
    };
    let path = format!("/v1/tasks/{}/tool-calls", seg(&task)?);
    let body =
        json!({"tool": request.name, "arguments": request.arguments.clone().unwrap_or_default()});
    let (st, b) = mcp.call(&ctx, Method::POST, &path, Some(body)).await?;
    let result = match (st, b["status"].as_str()) {
        (200, Some("ok" | "error")) => {
            serde_json::from_value::<CallToolResult>(b["result"].clone()).unwrap_or_else(|_| {
                CallToolResult::structured_error(json!({"code": "upstream_failed",
                    "message": "the upstream's result could not be read"}))
            })
        }
        (403, Some("denied")) => CallToolResult::structured_error(json!({
            "status": "denied",
            "code": b["code"],
            "policy_ids": b["policy_ids"],
            "reasons": b["reasons"],
            "next_step": "policy denied this call with these arguments; nothing was sent to the tool. Change what the call does (other arguments, another tool) or ask a human",
        })),
        (202, Some("pending")) => {
            let request_id = b["request"]["id"].as_str().unwrap_or_default().to_owned();
            if let Some(url) = b["console_url"].as_str() {
                offer_console(&ctx, url, &request_id).await;
            }
            let mut out = json!({
                "status": "pending",
                "request_id": request_id,
                "task_id": task,
                "approvers_needed": b["request"]["decision"]["groups"],
                "digest": b["request"]["digest"],
                "expires_at_unix_secs": b["request"]["expires_at_unix_secs"],
                "next_step": "a human must approve this exact call (step-up); nothing was sent to the tool. Once approved, call the same tool again with the same arguments: it is forwarded once",
            });
            if let Some(url) = b.get("console_url").filter(|u| u.is_string()) {
                out["console_url"] = url.clone();
            }
            CallToolResult::structured_error(out)
        }
        _ => error_result(st, b),
    };
    Ok(CallToolResponse::Complete(result))
}
