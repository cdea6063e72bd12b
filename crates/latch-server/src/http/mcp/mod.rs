//! The MCP server (Model Context Protocol, built on the official Rust SDK `rmcp`): Latch's
//! task and access flow as tools a model can call.
//!
//! Every tool is one call of the REST API (`/v1/...`) made with the caller's workload token,
//! so policy, audit and errors are exactly the REST API's. Two ways to reach that API:
//!
//! * over stdio (`latch mcp`): [`HttpDispatch`] sends the calls to a broker URL with the token
//!   the process was started with;
//! * over streamable HTTP at `/mcp` on the broker itself: [`RouterDispatch`] hands the calls
//!   to the broker's own router in-process, with the bearer token of the MCP HTTP request.
//!   The endpoint follows the MCP authorization spec: without a valid workload token (issuer,
//!   signature and audience checked) it answers 401 with a `WWW-Authenticate` challenge that
//!   points to its RFC 9728 protected resource metadata.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
pub use axum::http::Method;
use axum::http::header;
use latch_core::ErrorCode;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, Implementation, ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, schemars, tool, tool_handler, tool_router};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

pub mod edge;
pub mod gateway;

/// Sends one REST call with a bearer token and returns status and JSON body.
#[async_trait]
pub trait Dispatch: Send + Sync + 'static {
    /// `method path` with `token` and an optional JSON body.
    ///
    /// # Errors
    /// A transport failure (the message never contains the token).
    async fn call(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String>;

    /// Like [`Dispatch::call`], on behalf of an outer HTTP request whose extensions (source
    /// address, request id) the call should carry. By default they are ignored.
    ///
    /// # Errors
    /// A transport failure (the message never contains the token).
    async fn call_for(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
        _outer: Option<&axum::http::Extensions>,
    ) -> Result<(u16, Value), String> {
        self.call(token, method, path, body).await
    }
}

/// [`Dispatch`] over HTTP to a broker URL (stdio mode).
#[derive(Debug, Clone)]
pub struct HttpDispatch {
    http: reqwest::Client,
    base: String,
}

impl HttpDispatch {
    /// Calls go to `base` (e.g. `https://latch.example`).
    pub fn new(base: &str) -> Self {
        // A broker that accepts and never answers fails the tool call, not the session.
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
        }
    }
}

#[async_trait]
impl Dispatch for HttpDispatch {
    async fn call(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let m =
            reqwest::Method::from_bytes(method.as_str().as_bytes()).map_err(|e| e.to_string())?;
        let mut rb = self
            .http
            .request(m, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb
            .send()
            .await
            .map_err(|e| format!("cannot reach {}: {e}", self.base))?;
        let status = r.status().as_u16();
        let text = r.text().await.map_err(|e| e.to_string())?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }
}

/// [`Dispatch`] into the broker's own axum router, in-process (HTTP mode).
#[derive(Clone)]
pub struct RouterDispatch {
    router: axum::Router,
}

impl std::fmt::Debug for RouterDispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouterDispatch")
    }
}

impl RouterDispatch {
    /// Calls go to `router` (the REST API, without `/mcp`).
    pub fn new(router: axum::Router) -> Self {
        Self { router }
    }
}

#[async_trait]
impl Dispatch for RouterDispatch {
    async fn call(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        self.call_for(token, method, path, body, None).await
    }

    async fn call_for(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
        outer: Option<&axum::http::Extensions>,
    ) -> Result<(u16, Value), String> {
        use tower::ServiceExt;
        let mut req = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(axum::body::Body::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            ))
            .map_err(|e| e.to_string())?;
        // The in-process call is the outer `/mcp` request's: same peer (policy `source_ip`,
        // audit) and same request id.
        if let Some(o) = outer {
            if let Some(ci) = o.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>() {
                req.extensions_mut().insert(*ci);
            }
            if let Some(m) = o.get::<crate::http::state::ReqMeta>() {
                req.extensions_mut().insert(m.clone());
            }
        }
        let resp = self
            .router
            .clone()
            .oneshot(req)
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), 4 * 1024 * 1024)
            .await
            .map_err(|e| e.to_string())?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }
}

/// Where the caller's token comes from.
#[derive(Clone)]
enum TokenSource {
    /// Fixed at start (stdio: the workload the process runs as).
    Fixed(Arc<SecretString>),
    /// The `Authorization: Bearer` header of each MCP HTTP request.
    PerRequest,
}

/// The MCP server: tools over a [`Dispatch`].
#[derive(Clone)]
pub struct LatchMcp {
    dispatch: Arc<dyn Dispatch>,
    token: TokenSource,
    tool_router: ToolRouter<Self>,
    /// The task gateway calls run in when they name none (see [`gateway`]): the last one
    /// `open_task` opened in this session. One `LatchMcp` per MCP session.
    session_task: Arc<std::sync::Mutex<Option<String>>>,
}

impl std::fmt::Debug for LatchMcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LatchMcp { token: <redacted> }")
    }
}

/// `open_task` arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenTaskArgs {
    /// Why you need access: one line, shown to human approvers (1-1024 characters).
    #[schemars(length(min = 1, max = 1024))]
    pub purpose: String,
    /// Environment of the work: `sandbox`, `staging` or `production`. Production resources are
    /// only ever granted in a `production` task.
    pub environment: String,
    /// Repository (`owner/name`); default and bound: the one your identity proves.
    #[serde(default)]
    pub repository: Option<String>,
    /// Branch; default and bound: the one your identity proves.
    #[serde(default)]
    pub branch: Option<String>,
    /// How long the task may live, in seconds (default from the server, typically 3600). Every
    /// credential ends with the task at the latest.
    #[serde(default)]
    pub ttl_secs: Option<i64>,
}

/// `request_access` arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestAccessArgs {
    /// Task id from `open_task` (`task_…`).
    pub task_id: String,
    /// Resource id, e.g. `ci-cache`, `staging-db`, `payments-db`.
    pub resource: String,
    /// Actions on the resource, e.g. `["read"]`. Ask for the fewest you need.
    #[schemars(length(min = 1))]
    pub actions: Vec<String>,
    /// Credential lifetime in seconds (default: the resource's); clamped to the policy maximum.
    #[serde(default)]
    pub ttl_secs: Option<i64>,
    /// Why you need this access now: one line, shown to approvers.
    pub justification: String,
}

/// `check_request` arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRequestArgs {
    /// Task id.
    pub task_id: String,
    /// Request id returned by a `pending` `request_access` (`req_…`).
    pub request_id: String,
    /// Wait up to this many seconds (0-60) for the approval before answering `pending` again.
    #[serde(default)]
    #[schemars(range(max = 60))]
    pub wait_secs: Option<u64>,
}

/// `renew_lease` arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewArgs {
    /// Lease id (`lease_…`).
    pub lease_id: String,
    /// New lifetime in seconds (default: the original request's); never past the lease's max.
    #[serde(default)]
    pub ttl_secs: Option<i64>,
}

/// `report_tool_use` arguments (the body of `POST /v1/tasks/{id}/events`).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportToolUseArgs {
    /// Task id.
    pub task_id: String,
    /// Tool you used, e.g. `psql` or `github.create_pull_request` (1-128 characters).
    pub tool: String,
    /// What it acted on: a resource id, host or path (at most 512 characters).
    #[serde(default)]
    pub target: Option<String>,
    /// `ok`, `error`, `denied`, … (lowercase letters, digits and `_`; default `ok`).
    #[serde(default)]
    pub outcome: Option<String>,
    /// The lease whose credential the tool used, if any (must belong to the task).
    #[serde(default)]
    pub lease_id: Option<String>,
    /// How long the call took, in milliseconds.
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// Extra details as a small JSON object. Never put credentials here: the audit log is read
    /// by many.
    #[serde(default)]
    pub attributes: Option<serde_json::Map<String, Value>>,
}

/// Arguments naming a task.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskArgs {
    /// Task id (`task_…`).
    pub task_id: String,
}

/// What would make a denied request allowed, from its code and decision.
fn what_would_allow(code: ErrorCode, decision: &Value) -> Vec<String> {
    let mut v = Vec::new();
    if code == ErrorCode::EnvironmentSeparation {
        v.push(
            "this resource belongs to another environment and sandbox and production tasks are hard-separated: do not retry in a more privileged environment; ask a human to run this work under an identity entitled to that environment".into(),
        );
        return v;
    }
    let ids = decision["policy_ids"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if ids.is_empty() {
        v.push("no policy permits this resource, action and task: ask for other actions or another resource, or ask an operator to add a permit policy".into());
    } else {
        for r in decision["reasons"].as_array().into_iter().flatten() {
            if let Some(r) = r.as_str() {
                v.push(format!("satisfy or avoid: {r}"));
            }
        }
        v.push(format!(
            "the forbidding policies are {}; a request they do not match (fewer actions, shorter ttl, another task) may be allowed",
            Value::Array(ids)
        ));
    }
    v
}

/// Shapes a REST access answer for a model.
fn access_result(status: u16, b: Value) -> CallToolResult {
    match b.get("status").and_then(Value::as_str) {
        Some("granted") | Some("renewed") => CallToolResult::structured(json!({
            "status": b["status"],
            "resource": b["request"]["resource_id"],
            "actions": b["lease"]["actions"],
            "lease_id": b["lease"]["id"],
            "expires_at_unix_secs": b["lease"]["expires_at_unix_secs"],
            "credential": b["credential"],
            "note": "the credential is shown only once; renew with renew_lease before it expires",
        })),
        Some("denied") => {
            // The typed code REST answered for this denial (the decision's `DenyCode`), so a
            // tool result carries exactly the REST and `/oauth/token` code.
            let code = serde_json::from_value::<ErrorCode>(b["code"].clone())
                .unwrap_or(ErrorCode::PolicyDenied);
            let d = &b["request"]["decision"];
            CallToolResult::structured(json!({
                "status": "denied",
                "code": code,
                "request_id": b["request"]["id"],
                "policy_ids": d["policy_ids"],
                "reasons": d["reasons"],
                "what_would_make_it_allowed": what_would_allow(code, d),
            }))
        }
        Some("pending") => CallToolResult::structured(pending_result(&b)),
        _ => error_result(status, b),
    }
}

/// The `pending` answer of `request_access` / `check_request`: `console_url` only when the
/// broker serves the approval console (the REST answer carries it then), and a next step that
/// names what the human can actually use.
fn pending_result(b: &Value) -> Value {
    let mut out = json!({
        "status": "pending",
        "request_id": b["request"]["id"],
        "task_id": b["request"]["task_id"],
        "approvers_needed": b["request"]["decision"]["groups"],
        "digest": b["request"]["digest"],
        "expires_at_unix_secs": b["request"]["expires_at_unix_secs"],
    });
    let then = "then call check_request with this task_id and request_id (wait_secs up to 60) until the status is granted or denied";
    out["next_step"] = match b.get("console_url").filter(|u| u.is_string()) {
        Some(url) => {
            out["console_url"] = url.clone();
            json!(format!(
                "a human must approve (step-up): send your human to console_url, {then}"
            ))
        }
        None => json!(format!(
            "a human must approve (step-up): an approver runs `latch approve {}`, {then}",
            b["request"]["id"].as_str().unwrap_or("REQUEST_ID")
        )),
    };
    out
}

/// How long the broker keeps listening for the client's answer to a URL elicitation (the
/// answer changes nothing; it is only logged).
const ELICITATION_WAIT: Duration = Duration::from_secs(300);

/// Offers the console page as a URL-mode elicitation (MCP 2025-11-25 `elicitation/create`,
/// `mode: "url"`) when the client declared `elicitation.url`; otherwise does nothing.
///
/// The request is sent on the tool call's own stream, before the tool result, and the tool
/// call does not wait for the user's answer: a client that shows a dialog its user ignores
/// still gets the pending result (with the same URL) at once. The answer changes nothing
/// (the approval happens in the console); a background task logs it, or its absence after
/// [`ELICITATION_WAIT`].
async fn offer_console(ctx: &RequestContext<RoleServer>, url: &str, request_id: &str) {
    if !ctx
        .peer
        .supported_elicitation_modes()
        .contains(&rmcp::service::ElicitationMode::Url)
    {
        return;
    }
    let Ok(parsed) = url::Url::parse(url) else {
        return;
    };
    let params = rmcp::model::ElicitRequestParams::UrlElicitationParams {
        meta: None,
        message: format!(
            "Access request {request_id} needs a human approver. Open the Latch console to review it."
        ),
        url: parsed.to_string(),
        elicitation_id: request_id.to_owned(),
    };
    let request =
        rmcp::model::ServerRequest::ElicitRequest(rmcp::model::ElicitRequest::new(params));
    let mut options = rmcp::service::PeerRequestOptions::no_options();
    options.timeout = Some(ELICITATION_WAIT);
    // Sent now (it rides this call's stream); answered, or not, later.
    match ctx.peer.send_request_with_option(request, options).await {
        Ok(handle) => {
            let request_id = request_id.to_owned();
            tokio::spawn(async move {
                match handle.await_response().await {
                    Ok(answer) => {
                        tracing::debug!(request_id, ?answer, "console URL elicitation answered");
                    }
                    Err(e) => {
                        tracing::debug!(request_id, error = %e, "console URL elicitation not answered");
                    }
                }
            });
        }
        Err(e) => tracing::debug!(request_id, error = %e, "console URL elicitation not sent"),
    }
}

fn error_result(status: u16, b: Value) -> CallToolResult {
    let e = b.get("error").cloned().unwrap_or(Value::Null);
    CallToolResult::structured_error(json!({
        "http_status": status,
        "code": e["code"],
        "message": e["message"],
    }))
}

fn plain(status: u16, b: Value) -> CallToolResult {
    if (200..300).contains(&status) {
        CallToolResult::structured(b)
    } else {
        error_result(status, b)
    }
}

impl LatchMcp {
    /// An MCP server acting with a fixed workload token (stdio).
    pub fn with_token(dispatch: Arc<dyn Dispatch>, token: SecretString) -> Self {
        Self {
            dispatch,
            token: TokenSource::Fixed(Arc::new(token)),
            tool_router: Self::tool_router(),
            session_task: Arc::default(),
        }
    }

    /// An MCP server acting with the bearer token of each HTTP request.
    pub fn per_request(dispatch: Arc<dyn Dispatch>) -> Self {
        Self {
            dispatch,
            token: TokenSource::PerRequest,
            tool_router: Self::tool_router(),
            session_task: Arc::default(),
        }
    }

    fn session_task(&self) -> Option<String> {
        self.session_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_session_task(&self, task: Option<String>) {
        *self.session_task.lock().unwrap_or_else(|p| p.into_inner()) = task;
    }

    async fn call(
        &self,
        ctx: &RequestContext<RoleServer>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), ErrorData> {
        let parts = ctx.extensions.get::<axum::http::request::Parts>();
        let token: String = match &self.token {
            TokenSource::Fixed(t) => t.expose_secret().to_owned(),
            TokenSource::PerRequest => parts
                .and_then(|p| crate::http::extract::bearer(&p.headers).map(str::to_owned))
                .ok_or_else(|| ErrorData::invalid_request("no bearer token", None))?,
        };
        self.dispatch
            .call_for(&token, method, path, body, parts.map(|p| &p.extensions))
            .await
            .map_err(|e| ErrorData::internal_error(e, None))
    }
}

fn seg(id: &str) -> Result<&str, ErrorData> {
    // Ids travel in URL paths: refuse anything that could change the path.
    if !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        Ok(id)
    } else {
        Err(ErrorData::invalid_params(
            "ids are letters, digits, `_` and `-`",
            None,
        ))
    }
}

#[tool_router]
impl LatchMcp {
    /// Opens a task.
    #[tool(
        description = "Open a task: one unit of your work that needs access. Returns the task (its `id` is the task_id for the other tools). Every credential obtained in the task is revoked when you call complete_task or when the task expires."
    )]
    async fn open_task(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<OpenTaskArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let (st, b) = self
            .call(
                &ctx,
                Method::POST,
                "/v1/tasks",
                Some(json!({"purpose": a.purpose, "environment": a.environment,
                    "repository": a.repository, "branch": a.branch, "ttl_secs": a.ttl_secs})),
            )
            .await?;
        if (200..300).contains(&st) {
            self.set_session_task(b["id"].as_str().map(str::to_owned));
        }
        Ok(plain(st, b))
    }

    /// Requests access.
    #[tool(
        description = "Request access to a resource in a task. Answers one of: status `granted` with the credential (shown once) and its lease_id; status `denied` with the policy ids, the reasons, and what would make it allowed; or status `pending` when humans must approve (step-up), with the request_id to pass to check_request."
    )]
    async fn request_access(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<RequestAccessArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let path = format!("/v1/tasks/{}/requests", seg(&a.task_id)?);
        let (st, b) = self
            .call(
                &ctx,
                Method::POST,
                &path,
                Some(json!({"resource": a.resource, "actions": a.actions,
                    "ttl_secs": a.ttl_secs, "justification": a.justification})),
            )
            .await?;
        if let Some(url) = b.get("console_url").and_then(Value::as_str)
            && b.get("status").and_then(Value::as_str) == Some("pending")
        {
            offer_console(&ctx, url, b["request"]["id"].as_str().unwrap_or("")).await;
        }
        Ok(access_result(st, b))
    }

    /// Checks (and claims) a pending request.
    #[tool(
        description = "Check a pending (step-up) access request, optionally waiting up to wait_secs (max 60) for the approval. Once approved, policy is evaluated again and the credential is returned (status `granted`, shown once); otherwise status `pending` or `denied`."
    )]
    async fn check_request(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<CheckRequestArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let path = format!(
            "/v1/tasks/{}/requests/{}/claim",
            seg(&a.task_id)?,
            seg(&a.request_id)?
        );
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(a.wait_secs.unwrap_or(0).min(60));
        loop {
            let (st, b) = self
                .call(&ctx, Method::POST, &path, Some(json!({})))
                .await?;
            let pending = b.get("status").and_then(Value::as_str) == Some("pending");
            if !pending || tokio::time::Instant::now() >= deadline {
                return Ok(access_result(st, b));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Renews a lease.
    #[tool(
        description = "Renew a lease before it expires: policy is evaluated again with the current context and a fresh credential is returned (shown once). If policy no longer allows it, the lease is revoked and an error explains why."
    )]
    async fn renew_lease(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<RenewArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let path = format!("/v1/leases/{}/renew", seg(&a.lease_id)?);
        let (st, b) = self
            .call(
                &ctx,
                Method::POST,
                &path,
                Some(json!({"ttl_secs": a.ttl_secs})),
            )
            .await?;
        Ok(access_result(st, b))
    }

    /// Reports a tool use into the task's audit timeline.
    #[tool(
        description = "Report one use of a tool in a task (what you ran, on what, with which lease, and how it went), so the task's audit timeline shows what the access was used for. Returns the recorded `tool.used` event. Never include credentials."
    )]
    async fn report_tool_use(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<ReportToolUseArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let path = format!("/v1/tasks/{}/events", seg(&a.task_id)?);
        let mut body = json!({"tool": a.tool, "target": a.target, "lease_id": a.lease_id,
            "duration_ms": a.duration_ms, "attributes": a.attributes.unwrap_or_default()});
        if let Some(o) = a.outcome {
            body["outcome"] = json!(o);
        }
        let (st, b) = self.call(&ctx, Method::POST, &path, Some(body)).await?;
        Ok(plain(st, b))
    }

    /// Lists a task's leases.
    #[tool(
        description = "List the leases (credentials issued) of a task with their state (`active`, `revoking`, `revoked`), actions and expiry. Never returns credential values."
    )]
    async fn list_leases(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<TaskArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let path = format!("/v1/tasks/{}/leases", seg(&a.task_id)?);
        let (st, b) = self.call(&ctx, Method::GET, &path, None).await?;
        if (200..300).contains(&st) {
            Ok(CallToolResult::structured(json!({ "leases": b })))
        } else {
            Ok(error_result(st, b))
        }
    }

    /// Completes a task.
    #[tool(
        description = "Complete a task when the work is done: every credential issued in it is revoked at once."
    )]
    async fn complete_task(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<TaskArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let path = format!("/v1/tasks/{}/complete", seg(&a.task_id)?);
        let (st, b) = self
            .call(&ctx, Method::POST, &path, Some(json!({})))
            .await?;
        if (200..300).contains(&st) && self.session_task().as_deref() == Some(a.task_id.as_str()) {
            self.set_session_task(None);
        }
        Ok(plain(st, b))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for LatchMcp {
    async fn list_tools(
        &self,
        _request: Option<rmcp::model::PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListToolsResult, ErrorData> {
        gateway::list_tools(self, context).await
    }

    async fn call_tool(
        &self,
        request: rmcp::model::CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, ErrorData> {
        gateway::call_tool(self, request, context).await
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("latch", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Latch grants short-lived credentials for a task. Call open_task first, then \
                 request_access for each resource you need (least privilege, shortest ttl). \
                 If the answer is pending, a human must approve: poll check_request. Report \
                 what you do with the access with report_tool_use. Call complete_task when \
                 done; it revokes everything. Tools named <upstream>__<tool> are other \
                 servers' tools through Latch's gateway: each call runs in the task open_task \
                 last opened in this session (or _meta[\"latch/task_id\"]) and policy decides \
                 it; a pending answer means retry the same call once a human approved.",
            )
    }
}
