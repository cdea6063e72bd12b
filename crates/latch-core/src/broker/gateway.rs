//! The MCP gateway's use case: one tool call of an upstream MCP server, decided by Cedar in
//! the caller's task, forwarded with the credential Latch holds when allowed, and recorded as
//! exactly one `tool.called` audit event whatever happened.
//!
//! # The steps of a call
//! 1. The tool must be one the upstreams offer; the arguments within their bounds.
//! 2. The task is read from the store (never the cache: a task ended a moment ago, on any
//!    replica, refuses the next call) and must be the caller's and open; the freezes are read
//!    from the store and none may cover the task (`all`, `workload`, `repository` scopes).
//!    A refusal here is audited (`task_not_open`, `frozen`) and the upstream is not called.
//! 3. The arguments' keyed digest is computed. If the task holds an approved step-up request
//!    for this exact tool and digest, policy is evaluated with its approvals in context and,
//!    when allowed, the request is claimed (compare-and-set: one forward per approval) and the
//!    call forwarded. A pending one answers `pending` again.
//! 4. Otherwise Cedar decides: deny (audited, upstream not called), step-up (a pending request
//!    bound to the tool and the digest, with notifications, audited) or allow (forwarded).
//! 5. The forwarded call's outcome (`ok`, `error`, `timeout`) is recorded in the one event.
//!
//! # Security
//! Arguments are never stored or audited in clear (the digest is keyed, so a guessable argument
//! cannot be confirmed from the log). The event is written after the upstream answered; if it
//! cannot be written the caller gets `store_unavailable` and not the upstream's result.

use std::time::Instant;

use serde_json::{Map, Value};

use super::*;
use crate::freeze::{GrantSubject, covering};
use crate::gateway::{
    GatewayTool, ToolCall, ToolUpstreams, arguments_digest_input, check_arguments, unknown_tool,
};
use crate::policy::{TOOL_ACTION, ToolEvalInput};

/// What a gateway tool call came to.
#[derive(Debug, Clone)]
pub enum ToolCallOutcome {
    /// Allowed and forwarded: the upstream's `CallToolResult` (JSON), which may itself be an
    /// error result (`isError: true`).
    Forwarded {
        /// The upstream's answer.
        result: Value,
        /// The decision's policy ids.
        policy_ids: Vec<String>,
        /// The step-up request whose approval this call used, if any.
        request_id: Option<String>,
    },
    /// Denied by policy: nothing was sent upstream.
    Denied {
        /// The denial's code (`policy_denied`).
        code: DenyCode,
        /// Deciding policy ids.
        policy_ids: Vec<String>,
        /// Reasons.
        reasons: Vec<String>,
    },
    /// Waiting for approvers: retry the exact same call after approval.
    Pending(Box<AccessRequest>),
}

/// The facts of one call the audit event records.
struct CallFacts<'a> {
    tool: &'a GatewayTool,
    task: &'a Task,
    caller: &'a Workload,
    digest: &'a str,
    /// The task's past (`context.history`), read once per call.
    history: &'a super::history::HistoryView,
}

impl Broker {
    /// Installs the gateway's upstreams (once, at start).
    pub fn set_gateway(&self, upstreams: Arc<dyn ToolUpstreams>) {
        let _ = self.gateway.set(upstreams);
    }

    fn upstreams(&self) -> Result<&Arc<dyn ToolUpstreams>> {
        self.gateway.get().ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnknownTool,
                "this broker fronts no MCP upstream ([[mcp.upstreams]] is empty)",
            )
        })
    }

    /// The tools the gateway offers (empty without upstreams). Any authenticated workload
    /// may list them; calling one is what policy decides.
    pub async fn gateway_tools(&self) -> Vec<GatewayTool> {
        match self.gateway.get() {
            Some(g) => g.tools().await,
            None => Vec::new(),
        }
    }

    /// Keyed digest (HMAC-SHA256, lowercase hex) of a call: upstream, tool and canonical
    /// arguments. What audit records and approvals carry instead of the arguments.
    pub fn tool_arguments_digest(
        &self,
        tool: &GatewayTool,
        arguments: &Map<String, Value>,
    ) -> String {
        self.hasher.hmac_hex(&arguments_digest_input(
            &tool.upstream,
            &tool.tool,
            arguments,
        ))
    }

    /// One tool call through the gateway in the caller's task (see the module documentation).
    ///
    /// # Errors
    /// `unknown_tool`, `invalid_request` (arguments out of bounds, hostile justification),
    /// `task_not_found`, `task_not_open`, `frozen`, `upstream_failed` (no result: unreachable
    /// or timeout; audited), `store_unavailable`.
    pub async fn call_tool(
        &self,
        ctx: &CallCtx,
        caller: &Workload,
        task_id: &str,
        call: ToolCall,
    ) -> Result<ToolCallOutcome> {
        let upstreams = self.upstreams()?.clone();
        check_arguments(&call.arguments)?;
        if let Some(j) = &call.justification {
            check_text("justification", j, self.settings.max_text_len, false)?;
        }
        let tool = upstreams
            .tools()
            .await
            .into_iter()
            .find(|t| t.name == call.tool)
            .ok_or_else(|| unknown_tool(&call.tool))?;
        let task = self.owned_task(caller, task_id).await?;
        let digest = self.tool_arguments_digest(&tool, &call.arguments);
        let view = self.history_view(&task, self.now()).await?;
        let facts = CallFacts {
            tool: &tool,
            task: &task,
            caller,
            digest: &digest,
            history: &view,
        };
        self.gateway_preconditions(ctx, &facts).await?;
        if let Some(out) = self.approved_retry(ctx, &facts, &call, &upstreams).await? {
            return Ok(out);
        }
        let decision = self.decide_tool(ctx, &facts, &call.arguments, &ApprovalContext::default());
        match decision {
            Decision::Allow { policy_ids, .. } => {
                self.forward(ctx, &facts, &upstreams, call.arguments, policy_ids, None)
                    .await
            }
            Decision::Deny {
                code,
                policy_ids,
                reasons,
            } => {
                let detail = json!({"decision": "deny", "code": code, "policy_ids": policy_ids,
                    "reasons": reasons, "upstream_outcome": "not_called"});
                self.record_call(ctx, &facts, "deny", detail, None).await?;
                Ok(ToolCallOutcome::Denied {
                    code,
                    policy_ids,
                    reasons,
                })
            }
            Decision::StepUp { .. } => {
                let justification = call.justification.unwrap_or_else(|| {
                    format!("MCP tool call `{}` through the Latch gateway", tool.name)
                });
                self.tool_step_up(ctx, &facts, decision, justification)
                    .await
            }
        }
    }

    /// Refuses (audited, upstream not called) a call whose task is not open or is frozen.
    async fn gateway_preconditions(&self, ctx: &CallCtx, f: &CallFacts<'_>) -> Result<()> {
        if let Err(e) = self.open_task_check(f.task) {
            let detail = json!({"decision": "refused", "code": e.code, "reasons": [e.message],
                "upstream_outcome": "not_called"});
            self.record_call(ctx, f, e.code.as_str(), detail, None)
                .await?;
            return Err(e);
        }
        let freezes = self.store.active_freezes().await?;
        let subject = GrantSubject {
            principal_id: &f.task.owner.id,
            repository: f.task.repository.as_deref(),
            resource_id: &f.tool.name,
            on_behalf_of: f.task.on_behalf_of.as_deref(),
        };
        if let Some(fr) = covering(&freezes, &subject) {
            let detail = json!({"decision": "refused", "code": ErrorCode::Frozen,
                "freeze_id": fr.id, "scope": fr.scope, "upstream_outcome": "not_called"});
            self.record_call(ctx, f, "frozen", detail, None).await?;
            return Err(ApiError::new(
                ErrorCode::Frozen,
                format!(
                    "{} froze `{}` (freeze `{}`): the gateway forwards nothing there until an operator lifts it",
                    fr.engaged_by_label(),
                    fr.scope.label(),
                    fr.id
                ),
            ));
        }
        Ok(())
    }

    fn decide_tool(
        &self,
        ctx: &CallCtx,
        f: &CallFacts<'_>,
        arguments: &Map<String, Value>,
        approval: &ApprovalContext,
    ) -> Decision {
        self.policy().evaluate_tool(&ToolEvalInput {
            workload: f.caller,
            task: f.task,
            upstream: &f.tool.upstream,
            tool: &f.tool.tool,
            name: &f.tool.name,
            arguments,
            arguments_digest: f.digest,
            now_unix_secs: self.now(),
            source_ip: ctx.source_ip.as_deref(),
            approval,
            egress: f.tool.egress,
            history: f.history.input(&self.settings.budgets),
        })
    }

    /// The task's step-up request for this exact tool and digest, if one is pending or
    /// approved: pending answers `pending` again; approved is decided with its approvals and,
    /// when allowed, claimed and forwarded once.
    async fn approved_retry(
        &self,
        ctx: &CallCtx,
        f: &CallFacts<'_>,
        call: &ToolCall,
        upstreams: &Arc<dyn ToolUpstreams>,
    ) -> Result<Option<ToolCallOutcome>> {
        let now = self.now();
        let found = self
            .store
            .open_requests_by_task(&f.task.id)
            .await?
            .into_iter()
            .find(|r| {
                r.params["gateway"]["tool"] == f.tool.name
                    && r.params["gateway"]["arguments_digest"] == f.digest
                    && now < r.expires_at_unix_secs
            });
        let Some(req) = found else {
            return Ok(None);
        };
        if req.state == RequestState::Pending {
            let detail = json!({"decision": "step_up", "state": "pending",
                "upstream_outcome": "not_called"});
            self.record_call(ctx, f, "step_up", detail, Some(&req.id))
                .await?;
            return Ok(Some(ToolCallOutcome::Pending(Box::new(req))));
        }
        if req.state != RequestState::Approved {
            return Ok(None);
        }
        let approval = self.approval_context(&req).await?;
        let decision = self.decide_tool(ctx, f, &call.arguments, &approval);
        let mut r = req.clone();
        r.version += 1;
        r.decision = decision.clone();
        let policy_ids = decision.policy_ids().to_vec();
        r.state = match decision {
            Decision::Allow { .. } => RequestState::Granted,
            _ => RequestState::Denied,
        };
        // The claim: a compare-and-set, so concurrent retries forward at most once.
        match self
            .commit(
                ctx,
                WriteBatch::new().write(Write::UpdateRequest(r.clone())),
            )
            .await
        {
            Ok(_) => {}
            Err(StoreError::Conflict(_)) => {
                // Another retry used the approval first: this call is refused, and audited
                // like every other call (upstream not called).
                let e = ApiError::new(
                    ErrorCode::RequestNotPending,
                    format!("request `{}` was used by another call", req.id),
                );
                let detail = json!({"decision": "refused", "code": e.code,
                    "reasons": [e.message], "upstream_outcome": "not_called"});
                self.record_call(ctx, f, e.code.as_str(), detail, Some(&req.id))
                    .await?;
                return Err(e);
            }
            Err(e) => return Err(e.into()),
        }
        if let Decision::Deny {
            code,
            policy_ids,
            reasons,
        } = r.decision
        {
            let detail = json!({"decision": "deny", "code": code, "policy_ids": policy_ids,
                "reasons": reasons, "upstream_outcome": "not_called"});
            self.record_call(ctx, f, "deny", detail, Some(&r.id))
                .await?;
            return Ok(Some(ToolCallOutcome::Denied {
                code,
                policy_ids,
                reasons,
            }));
        }
        let out = self
            .forward(
                ctx,
                f,
                upstreams,
                call.arguments.clone(),
                policy_ids,
                Some(r.id),
            )
            .await?;
        Ok(Some(out))
    }

    /// Stores a pending request bound to the tool and the digest (with the approvers'
    /// notifications) and records the call.
    async fn tool_step_up(
        &self,
        ctx: &CallCtx,
        f: &CallFacts<'_>,
        decision: Decision,
        justification: String,
    ) -> Result<ToolCallOutcome> {
        let now = self.now();
        let id = new_id("req");
        let actions = vec![TOOL_ACTION.to_owned()];
        let params = json!({"gateway": {"upstream": f.tool.upstream, "tool": f.tool.name,
            "arguments_digest": f.digest}});
        let digest = request_digest(
            &id,
            &f.task.id,
            &f.caller.id,
            &f.tool.name,
            &actions,
            0,
            &justification,
            &params,
        );
        let req = AccessRequest {
            id,
            task_id: f.task.id.clone(),
            principal_id: f.caller.id.clone(),
            resource_id: f.tool.name.clone(),
            actions,
            ttl_secs: 0,
            justification,
            state: RequestState::Pending,
            step_up_groups: match &decision {
                Decision::StepUp { groups, .. } => groups.clone(),
                _ => vec![],
            },
            decision,
            digest,
            source_ip: ctx.source_ip.clone(),
            created_at_unix_secs: now,
            expires_at_unix_secs: now + self.settings.pending_ttl_secs,
            lease_id: None,
            approvers: vec![],
            params,
            version: 1,
        };
        // What the approvers' notices show of the tool (it is not a configured resource).
        let shown = Resource {
            id: f.tool.name.clone(),
            kind: "mcp_tool".into(),
            environment: f.task.environment.clone(),
            sensitivity: "internal".into(),
            audience: f.tool.upstream.clone(),
            actions: req.actions.clone(),
            max_ttl_secs: 0,
            max_lifetime_secs: 0,
            default_ttl_secs: 0,
            owner: None,
            production: f.task.production,
            egress: false,
            end_task_on_budget_breach: false,
            settings: Value::Null,
        };
        let mut batch = WriteBatch::new()
            .write(Write::RequireTaskOpen {
                task_id: f.task.id.clone(),
                version: f.task.version,
            })
            .write(Write::InsertRequest(req.clone()));
        batch
            .writes
            .extend(self.step_up_notifications(f.task, &shown, &req));
        let detail = json!({"decision": "step_up", "state": "pending",
            "policy_ids": req.decision.policy_ids(), "step_up_groups": req.step_up_groups,
            "request_digest": req.digest, "upstream_outcome": "not_called"});
        let ev = self.call_event(f, "step_up", detail, Some(&req.id));
        self.commit(ctx, batch.audit(ev)).await?;
        metrics::counter!("latch_gateway_calls_total", "upstream" => f.tool.upstream.clone(),
            "decision" => "step_up")
        .increment(1);
        Ok(ToolCallOutcome::Pending(Box::new(req)))
    }

    /// Sends an allowed call upstream and records it with the upstream's outcome.
    async fn forward(
        &self,
        ctx: &CallCtx,
        f: &CallFacts<'_>,
        upstreams: &Arc<dyn ToolUpstreams>,
        arguments: Map<String, Value>,
        policy_ids: Vec<String>,
        request_id: Option<String>,
    ) -> Result<ToolCallOutcome> {
        let started = Instant::now();
        let answer = upstreams.call(f.tool, arguments).await;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (outcome, error) = match &answer {
            Ok(r) if r.get("isError").and_then(Value::as_bool) == Some(true) => ("error", None),
            Ok(_) => ("ok", None),
            Err(e) => (e.kind.as_str(), Some(e.message.clone())),
        };
        let detail = json!({"decision": "allow", "policy_ids": policy_ids,
            "upstream_outcome": outcome, "upstream_error": error, "duration_ms": duration_ms});
        self.record_call(ctx, f, outcome, detail, request_id.as_deref())
            .await?;
        match answer {
            Ok(result) => Ok(ToolCallOutcome::Forwarded {
                result,
                policy_ids,
                request_id,
            }),
            Err(e) => Err(ApiError::new(
                ErrorCode::UpstreamFailed,
                format!(
                    "upstream `{}` gave no result ({}): {}",
                    f.tool.upstream,
                    e.kind.as_str(),
                    e.message
                ),
            )),
        }
    }

    fn call_event(
        &self,
        f: &CallFacts<'_>,
        outcome: &str,
        mut detail: Value,
        request_id: Option<&str>,
    ) -> AuditEvent {
        detail["upstream"] = json!(f.tool.upstream);
        detail["tool"] = json!(f.tool.tool);
        detail["name"] = json!(f.tool.name);
        detail["arguments_digest"] = json!(f.digest);
        let ev = AuditEvent::new(self.now(), AuditKind::ToolCalled, &f.caller.id, outcome)
            .task(&f.task.id)
            .detail(detail);
        match request_id {
            Some(r) => ev.access_request(r),
            None => ev,
        }
    }

    /// Commits the call's one audit event and counts it.
    async fn record_call(
        &self,
        ctx: &CallCtx,
        f: &CallFacts<'_>,
        outcome: &str,
        detail: Value,
        request_id: Option<&str>,
    ) -> Result<()> {
        let decision = match detail["decision"].as_str() {
            Some("allow") => "allow",
            Some("deny") => "deny",
            Some("step_up") => "step_up",
            _ => "refused",
        };
        let ev = self.call_event(f, outcome, detail, request_id);
        let mut batch = WriteBatch::new();
        if decision == "allow" {
            // A forwarded call is part of the task's history (`context.history.tools`).
            let now = self.now();
            let mut deltas = crate::history::tool_deltas(&f.task.id, &f.tool.name, now);
            if f.tool.egress {
                // Data went out through an egress tool: `context.history.egress`, and the
                // first time a change of the history that can withdraw access.
                deltas.extend(crate::history::egress_deltas(
                    &f.task.id,
                    !f.history.task.egress,
                    now,
                ));
            }
            batch = batch.write(Write::Count(deltas));
        }
        let first_egress = decision == "allow" && f.tool.egress && !f.history.task.egress;
        self.commit(ctx, batch.audit(ev)).await?;
        if first_egress {
            self.enforce_on_history_change(f.task, None).await;
        }
        metrics::counter!("latch_gateway_calls_total", "upstream" => f.tool.upstream.clone(),
            "decision" => decision)
        .increment(1);
        Ok(())
    }
}

/// Whether `req` is a gateway tool call's step-up request (bound to a tool and an arguments
/// digest rather than to a configured resource).
pub(super) fn is_tool_request(req: &AccessRequest) -> bool {
    req.params.get("gateway").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_requests_are_recognised_by_their_params() {
        let mut r = AccessRequest {
            id: "req_1".into(),
            task_id: "t".into(),
            principal_id: "p".into(),
            resource_id: "db__query".into(),
            actions: vec![TOOL_ACTION.into()],
            ttl_secs: 0,
            justification: String::new(),
            state: RequestState::Pending,
            decision: Decision::Allow {
                policy_ids: vec![],
                max_ttl_secs: None,
            },
            digest: String::new(),
            source_ip: None,
            created_at_unix_secs: 0,
            expires_at_unix_secs: 0,
            lease_id: None,
            approvers: vec![],
            params: Value::Null,
            step_up_groups: vec![],
            version: 1,
        };
        assert!(!is_tool_request(&r));
        r.params = json!({"gateway": {"tool": "db__query"}});
        assert!(is_tool_request(&r));
        assert_eq!(crate::gateway::UpstreamFailure::Timeout.as_str(), "timeout");
    }
}
