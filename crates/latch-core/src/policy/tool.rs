//! Cedar evaluation of MCP gateway tool calls: `Latch::Action::"call_tool"` on a
//! `Latch::Tool` resource, with the call's arguments in context.
//!
//! # Backward compatibility
//! A policy that does not name its action is validated against every action, `call_tool`
//! included. So `Latch::Tool` carries a resource's attributes too (`kind` `mcp_tool`, the
//! task's `environment` and `production`, `audience` = the upstream, `sensitivity`
//! `internal`, `max_ttl_secs` 0) and the context is a superset of a request's (`ttl_secs` 0):
//! policies written before the gateway still validate. Such a policy also *applies* to tool
//! calls: a permit that names no action permits them too (`resource is Latch::Tool` tells them
//! apart).
//!
//! # Arguments as Cedar values
//! Cedar has no "any JSON" type and a strict schema cannot name every tool's arguments, so the
//! arguments become the **tags** of a `Latch::ToolArguments` entity that `context.arguments`
//! references (Cedar entity tags: `hasTag`/`getTag`). Each tag is one argument path and its value
//! is an `ArgumentValue` record:
//! * `kind`: `string`, `integer`, `number`, `boolean`, `null`, `array` or `object`;
//! * `text`: the string itself for a string, otherwise the value's canonical JSON (members
//!   sorted, no whitespace) — so `like` works on every argument;
//! * `long`: for integers that fit Cedar's 64-bit `Long` (a larger integer or any number with
//!   a fraction or exponent is `kind: "number"` with `text` only: Cedar has no floating point,
//!   and its `decimal` keeps four places, so Latch does not round);
//! * `bool`: for booleans.
//!
//! Paths: a top-level argument `query` is the tag `query`; the members of an object argument
//! are tags too, joined with `.` (`filter.schema`), down to the depth bound. Array elements
//! are not tags of their own: the array's `text` holds them. A call with more than
//! [`MAX_TAGS`] paths is denied (errors deny). `context.argument_names` is the set of top-level
//! names. A policy reads them guarded, as strict validation requires:
//! `context.arguments.hasTag("query") && context.arguments.getTag("query").text like "*prod.*"`.

use std::collections::HashSet;

use cedar_policy::{Context, Entities, Entity, Request, RestrictedExpression, Schema};
use serde_json::{Map, Value};

use super::{ActionVerdict, ApprovalContext, PolicyEngine, PolicyLoadError, s, set_of, uid};
use crate::gateway::canonical_json;
use crate::model::{Decision, DenyCode, GroupQuorum, Task, Workload};

/// The Cedar action of a gateway tool call.
pub const TOOL_ACTION: &str = "call_tool";

/// Most argument paths (tags) one call may have.
pub const MAX_TAGS: usize = 256;

/// Everything a tool-call decision is made from.
#[derive(Debug, Clone)]
pub struct ToolEvalInput<'a> {
    /// The workload calling (the task's owner).
    pub workload: &'a Workload,
    /// The task the call is made in.
    pub task: &'a Task,
    /// The upstream's configured name (`resource.upstream`, `context.upstream`).
    pub upstream: &'a str,
    /// The tool's name at the upstream (`resource.name`, `context.tool`).
    pub tool: &'a str,
    /// The namespaced name (`<upstream>__<tool>`): the `Latch::Tool` entity id.
    pub name: &'a str,
    /// The call's arguments.
    pub arguments: &'a Map<String, Value>,
    /// Keyed digest of the call (`context.arguments_digest`).
    pub arguments_digest: &'a str,
    /// Evaluation time.
    pub now_unix_secs: i64,
    /// Source address of the caller.
    pub source_ip: Option<&'a str>,
    /// Approval state.
    pub approval: &'a ApprovalContext,
    /// Whether the upstream is marked `egress` (`resource.egress`).
    pub egress: bool,
    /// The task's past and the budgets: `context.history`, `context.budget`.
    pub history: super::HistoryInput<'a>,
}

/// The arguments as Cedar tags (see the module documentation): path → `ArgumentValue`.
///
/// # Errors
/// A message when there are more than [`MAX_TAGS`] paths.
pub fn arguments_tags(
    arguments: &Map<String, Value>,
) -> Result<Vec<(String, RestrictedExpression)>, String> {
    fn add(
        path: String,
        v: &Value,
        out: &mut Vec<(String, RestrictedExpression)>,
    ) -> Result<(), String> {
        if out.len() >= MAX_TAGS {
            return Err(format!(
                "the arguments have more than {MAX_TAGS} paths; policy cannot see them all"
            ));
        }
        let mut rec = Vec::new();
        let kind = match v {
            Value::String(x) => {
                rec.push(("text".to_owned(), s(x)));
                "string"
            }
            Value::Number(n) => {
                rec.push(("text".to_owned(), s(&n.to_string())));
                match n.as_i64() {
                    Some(i) => {
                        rec.push(("long".to_owned(), RestrictedExpression::new_long(i)));
                        "integer"
                    }
                    None => "number",
                }
            }
            Value::Bool(b) => {
                rec.push(("text".to_owned(), s(if *b { "true" } else { "false" })));
                rec.push(("bool".to_owned(), RestrictedExpression::new_bool(*b)));
                "boolean"
            }
            Value::Null => {
                rec.push(("text".to_owned(), s("null")));
                "null"
            }
            Value::Array(_) => {
                rec.push(("text".to_owned(), s(&canonical_json(v))));
                "array"
            }
            Value::Object(_) => {
                rec.push(("text".to_owned(), s(&canonical_json(v))));
                "object"
            }
        };
        let text = match v {
            Value::String(x) => x.clone(),
            Value::Array(_) | Value::Object(_) => canonical_json(v),
            other => other.to_string(),
        };
        rec.push(("folded".to_owned(), s(&fold(&text))));
        rec.push(("kind".to_owned(), s(kind)));
        let record = RestrictedExpression::new_record(rec).map_err(|e| e.to_string())?;
        out.push((path.clone(), record));
        if let Value::Object(m) = v {
            for (k, x) in m {
                add(format!("{path}.{k}"), x, out)?;
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for (k, v) in arguments {
        add(k.clone(), v, &mut out)?;
    }
    Ok(out)
}

/// Entity id of a call's `Latch::ToolArguments` (one per evaluation; not stored).
const ARGUMENTS_ID: &str = "call";

impl PolicyEngine {
    /// The entities and context of one tool-call evaluation.
    fn tool_request(
        input: &ToolEvalInput<'_>,
        approval: &ApprovalContext,
        schema: Option<&Schema>,
    ) -> Result<(Request, Vec<Entity>), String> {
        let workload = Self::workload_entity(input.workload)?;
        let tool = Entity::new(
            uid("Tool", input.name),
            [
                ("upstream".to_owned(), s(input.upstream)),
                ("name".to_owned(), s(input.tool)),
                ("kind".to_owned(), s("mcp_tool")),
                ("environment".to_owned(), s(input.task.environment.as_str())),
                ("sensitivity".to_owned(), s("internal")),
                ("audience".to_owned(), s(input.upstream)),
                (
                    "production".to_owned(),
                    RestrictedExpression::new_bool(input.task.production),
                ),
                ("max_ttl_secs".to_owned(), RestrictedExpression::new_long(0)),
                (
                    "egress".to_owned(),
                    RestrictedExpression::new_bool(input.egress),
                ),
            ]
            .into_iter()
            .collect(),
            HashSet::new(),
        )
        .map_err(|e| e.to_string())?;
        let args = Entity::new_with_tags(
            uid("ToolArguments", ARGUMENTS_ID),
            [],
            [],
            arguments_tags(input.arguments)?,
        )
        .map_err(|e| e.to_string())?;
        let history = super::history::history_entity(&input.task.id, input.history.history)?;
        let names: Vec<String> = input.arguments.keys().cloned().collect();
        let mut pairs = vec![
            ("task".to_owned(), Self::task_record(input.task)?),
            ("approval".to_owned(), Self::approval_record(approval)?),
            ("ttl_secs".to_owned(), RestrictedExpression::new_long(0)),
            (
                "now_unix_secs".to_owned(),
                RestrictedExpression::new_long(input.now_unix_secs),
            ),
            ("upstream".to_owned(), s(input.upstream)),
            ("tool".to_owned(), s(input.tool)),
            (
                "arguments".to_owned(),
                RestrictedExpression::new_entity_uid(uid("ToolArguments", ARGUMENTS_ID)),
            ),
            ("argument_names".to_owned(), set_of(&names)),
            ("arguments_digest".to_owned(), s(input.arguments_digest)),
            (
                "history".to_owned(),
                super::history::history_ref(&input.task.id),
            ),
            (
                "budget".to_owned(),
                super::history::budget_record(&input.history)?,
            ),
        ];
        if let Some(ip) = input.source_ip {
            pairs.push(("source_ip".into(), s(ip)));
        }
        if let Some(h) = &input.task.on_behalf_of {
            pairs.push(("on_behalf_of".into(), s(h)));
        }
        let ctx = Context::from_pairs(pairs).map_err(|e| e.to_string())?;
        let req = Request::new(
            uid("Workload", &input.workload.id),
            uid("Action", TOOL_ACTION),
            uid("Tool", input.name),
            ctx,
            schema,
        )
        .map_err(|e| e.to_string())?;
        Ok((req, vec![workload, tool, args, history]))
    }

    fn tool_verdict(&self, input: &ToolEvalInput<'_>, approval: &ApprovalContext) -> ActionVerdict {
        let built = Self::tool_request(input, approval, None).and_then(|(req, ents)| {
            Entities::from_entities(ents, None)
                .map(|e| (req, e))
                .map_err(|e| e.to_string())
        });
        match built {
            Ok((req, entities)) => {
                self.judge(&req, &entities, &format!("calling tool `{}`", input.name))
            }
            Err(e) => ActionVerdict::Deny {
                policy_ids: vec![],
                reasons: vec![format!("cannot build the tool call's policy request: {e}")],
            },
        }
    }

    /// Decides a gateway tool call: `Allow`, `Deny` (policy ids and reasons) or `StepUp` when
    /// the only obstacles are `@step_up` forbids an approval would lift (the same rule as
    /// [`PolicyEngine::evaluate`]; `@max_ttl` means nothing here).
    pub fn evaluate_tool(&self, input: &ToolEvalInput<'_>) -> Decision {
        let (policy_ids, reasons) = match self.tool_verdict(input, input.approval) {
            ActionVerdict::Allow { policy_ids, .. } => {
                return Decision::Allow {
                    policy_ids,
                    max_ttl_secs: None,
                };
            }
            ActionVerdict::Deny {
                policy_ids,
                reasons,
            } => (policy_ids, reasons),
        };
        let deny = |policy_ids, reasons| Decision::Deny {
            code: DenyCode::PolicyDenied,
            policy_ids,
            reasons,
        };
        let Some(groups) = self.step_up_groups(&policy_ids) else {
            return deny(policy_ids, reasons);
        };
        let mut hyp = input.approval.clone();
        hyp.approved = true;
        hyp.approvers.push("(pending approval)".into());
        hyp.groups.extend(groups.iter().map(|(g, _)| g.clone()));
        match self.tool_verdict(input, &hyp) {
            ActionVerdict::Allow { .. } => Decision::StepUp {
                policy_ids,
                groups: groups
                    .into_iter()
                    .map(|(group, quorum)| GroupQuorum { group, quorum })
                    .collect(),
            },
            ActionVerdict::Deny {
                policy_ids,
                reasons,
            } => deny(policy_ids, reasons),
        }
    }

    /// Checks that the schema accepts the entities and context Latch sends for a tool call
    /// (`Latch::Tool`, `Latch::ToolArguments` and the `call_tool` action), so a schema without
    /// them is refused at start when gateway upstreams are configured.
    ///
    /// # Errors
    /// [`PolicyLoadError`] naming `schema_name` and what the schema refused.
    pub fn check_tool_shape(&self, schema_name: &str) -> Result<(), PolicyLoadError> {
        let fail = |m: String| PolicyLoadError {
            file: schema_name.to_owned(),
            line: None,
            column: None,
            message: m,
        };
        let w = Workload {
            id: "probe".into(),
            issuer: "probe".into(),
            subject: "probe".into(),
            preset: "generic".into(),
            run_binding: None,
            on_behalf_of: Some("h".into()),
            claims: crate::model::WorkloadClaims::default(),
            token_expires_at_unix_secs: 0,
        };
        let t = Task {
            id: "t".into(),
            owner: w.clone(),
            purpose: "p".into(),
            repository: Some("r".into()),
            branch: Some("b".into()),
            environment: "e".into(),
            production: false,
            on_behalf_of: Some("h".into()),
            state: crate::model::TaskState::Open,
            created_at_unix_secs: 0,
            expires_at_unix_secs: 0,
            ended_at_unix_secs: None,
            version: 0,
        };
        let args: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "s": "x", "i": 1, "f": 1.5, "b": true, "n": null, "a": [1], "o": {"k": "v"}
        }))
        .unwrap_or_default();
        let approval = ApprovalContext::default();
        let input = ToolEvalInput {
            workload: &w,
            task: &t,
            upstream: "u",
            tool: "t",
            name: "u__t",
            arguments: &args,
            arguments_digest: "d",
            now_unix_secs: 0,
            source_ip: Some("127.0.0.1"),
            approval: &approval,
            egress: true,
            history: super::HistoryInput::empty(),
        };
        let (_, ents) = Self::tool_request(&input, &approval, Some(&self.schema)).map_err(|e| {
            fail(format!(
                "schema does not accept latch's tool-call request: {e}"
            ))
        })?;
        Entities::from_entities(ents, Some(&self.schema)).map_err(|e| {
            fail(format!(
                "schema does not accept latch's tool-call entities: {e}"
            ))
        })?;
        Ok(())
    }
}

/// The `folded` form of an argument's text, for deny rules that must not be dodged by spelling:
/// Unicode NFKC (fullwidth and compatibility forms become their plain letters), lowercase, and
/// without whitespace, quotes, backquotes, brackets and SQL comment markers (`/*`, `*/`, `--`).
/// `"Production" . users`, `PRODUCTION/**/.users` and `ｐroduction.users` all fold to
/// `production.users`.
///
/// # Security
/// Folding narrows the ways around a text rule; it does not make a deny-list complete (a query
/// can name a schema through `search_path`, a view, a function). Prefer permits that allow known
/// shapes over forbids that name bad ones.
pub fn fold(text: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let lower: String = text.nfkc().collect::<String>().to_lowercase();
    let stripped = lower.replace("/*", "").replace("*/", "").replace("--", "");
    stripped
        .chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '"' | '\'' | '`' | '[' | ']'))
        .collect()
}
