//! The MCP gateway over REST: `GET /v1/gateway/tools` (the upstreams' tools, namespaced) and
//! `POST /v1/tasks/{id}/tool-calls` (one call, decided by policy in the task, forwarded when
//! allowed). The MCP server's gateway tools are these two calls, like every other MCP tool.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use latch_core::broker::{CallCtx, ToolCallOutcome};
use latch_core::gateway::{GatewayTool, ToolCall};
use latch_core::model::AccessRequest;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::{ApiJson, as_workload};
use crate::http::routes::access::console_url_of;
use crate::http::state::{AppState, ReqMeta};

/// `GET /v1/gateway/tools`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GatewayTools {
    /// Every tool the upstreams offer now (an unreachable upstream offers none).
    pub tools: Vec<GatewayTool>,
}

/// The answer to a gateway tool call.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ToolCallResponse {
    /// `ok` (forwarded; the upstream answered), `error` (forwarded; the upstream's result is an
    /// error result), `denied` (by policy; not forwarded), `pending` (step-up; not forwarded:
    /// retry the exact same call once approved).
    pub status: String,
    /// For `denied`: `policy_denied`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The upstream's MCP `CallToolResult`, when forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    /// The deciding policies.
    pub policy_ids: Vec<String>,
    /// For `denied`: why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// For `pending`, and for a call forwarded on an approval: the step-up request (its id,
    /// groups, digest and expiry). It binds the exact tool and arguments digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<AccessRequest>,
    /// For `pending`, when the console is served: the request's page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_url: Option<String>,
    /// HTTP request id.
    pub request_id: String,
}

#[utoipa::path(get, path = "/v1/gateway/tools", security(("bearer" = [])),
    responses((status = 200, body = GatewayTools, description = "the upstreams' tools, named `<upstream>__<tool>`, with their input schemas"),
              (status = 403, body = ErrorBody, description = "`wrong_principal_kind`: a human token")))]
pub(crate) async fn tools(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
) -> ApiResult<Json<GatewayTools>> {
    let tools = as_workload(&s, &m, &headers, async |_ctx: &CallCtx, _w| {
        Ok(s.broker.gateway_tools().await)
    })
    .await?;
    Ok(Json(GatewayTools { tools }))
}

#[utoipa::path(post, path = "/v1/tasks/{id}/tool-calls", request_body = ToolCall, security(("bearer" = [])),
    params(("id" = String, Path, description = "task id", pattern = "^task_[0-9a-f]{32}$")),
    responses((status = 200, body = ToolCallResponse, description = "allowed and forwarded: the upstream's result (`status` `ok`, or `error` for an error result)"),
              (status = 202, body = ToolCallResponse, description = "step-up: a request waits for approvers; retry the exact same call once approved"),
              (status = 403, body = ToolCallResponse, description = "denied by policy (not forwarded), or an `ErrorBody` `wrong_principal_kind`"),
              (status = 404, body = ErrorBody, description = "`task_not_found`"),
              (status = 409, body = ErrorBody, description = "`task_not_open` (the task ended: nothing is forwarded), `request_not_pending` (another call used the approval)"),
              (status = 422, body = ErrorBody, description = "`unknown_tool`"),
              (status = 423, body = ErrorBody, description = "`frozen`: an operator froze this workload or repository (kill switch)"),
              (status = 502, body = ErrorBody, description = "`upstream_failed`: forwarded, no result (unreachable, protocol error, timeout)")))]
pub(crate) async fn call_tool(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ToolCall>,
) -> ApiResult<(StatusCode, Json<ToolCallResponse>)> {
    let out = as_workload(&s, &m, &headers, async |ctx: &CallCtx, w| {
        s.broker.call_tool(ctx, &w, &id, body).await
    })
    .await?;
    let mut r = ToolCallResponse {
        status: String::new(),
        code: None,
        result: None,
        policy_ids: vec![],
        reasons: vec![],
        request: None,
        console_url: None,
        request_id: m.request_id.clone(),
    };
    let status = match out {
        ToolCallOutcome::Forwarded {
            result,
            policy_ids,
            request_id: _,
        } => {
            let error = result.get("isError").and_then(serde_json::Value::as_bool) == Some(true);
            r.status = if error { "error" } else { "ok" }.into();
            r.result = Some(result);
            r.policy_ids = policy_ids;
            StatusCode::OK
        }
        ToolCallOutcome::Denied {
            code,
            policy_ids,
            reasons,
        } => {
            r.status = "denied".into();
            r.code = Some(code.error_code().as_str().into());
            r.policy_ids = policy_ids;
            r.reasons = reasons;
            StatusCode::FORBIDDEN
        }
        ToolCallOutcome::Pending(req) => {
            r.status = "pending".into();
            r.policy_ids = req.decision.policy_ids().to_vec();
            r.console_url = console_url_of(&s.broker, &req);
            r.request = Some(*req);
            StatusCode::ACCEPTED
        }
    };
    Ok((status, Json(r)))
}
