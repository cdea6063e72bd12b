//! The MCP gateway's domain: tools of upstream MCP servers as Latch offers them (namespaced),
//! the port that reaches the upstreams, tool-call inputs and outcomes, and the keyed digest of
//! a call's arguments.
//!
//! # Names
//! An upstream is named `[a-z][a-z0-9-]{0,31}` (no `_`), and its tool `t` is offered as
//! `<upstream>__<tool>`: the first `__` splits the name unambiguously, and the result stays
//! within MCP 2025-11-25's tool-name rule (1–128 characters of `A-Z a-z 0-9 _ - .`) and within
//! the stricter `^[a-zA-Z0-9_-]{1,64}$` some model APIs impose on function names when short
//! enough. An upstream tool whose name breaks the rule is not offered (and logged).
//!
//! # Security
//! A call's arguments may hold secrets: they are never stored or audited in clear, only their
//! keyed digest ([`crate::digest::CredentialHasher`] over the canonical JSON of upstream, tool
//! and arguments), which is what approvals bind to.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{ApiError, ErrorCode, quote};

/// Separator between the upstream's name and its tool's name in a namespaced tool name.
pub const TOOL_SEPARATOR: &str = "__";

/// Longest accepted serialized arguments of one call (bytes).
pub const MAX_ARGUMENTS_BYTES: usize = 64 * 1024;

/// Deepest accepted nesting of one call's arguments.
pub const MAX_ARGUMENTS_DEPTH: usize = 16;

/// One tool of an upstream MCP server, as the gateway offers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GatewayTool {
    /// The namespaced name clients call: `<upstream>__<tool>`.
    pub name: String,
    /// The upstream's configured name.
    pub upstream: String,
    /// The tool's name at the upstream.
    pub tool: String,
    /// The upstream's description of the tool (text for a model; may be absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The tool's JSON Schema for its arguments, as the upstream declares it.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub input_schema: Value,
    /// Whether its upstream is marked `egress` (`resource.egress` in policy).
    #[serde(default)]
    pub egress: bool,
}

/// How an upstream call ended when it did not answer with a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamFailure {
    /// The upstream could not be reached or answered with a protocol error.
    Error,
    /// No answer within the upstream's call timeout.
    Timeout,
}

impl UpstreamFailure {
    /// `error` or `timeout` (the audit record's `upstream_outcome`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Timeout => "timeout",
        }
    }
}

/// A failed upstream call: its kind and a message without secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamError {
    /// What happened.
    pub kind: UpstreamFailure,
    /// Lowercase description (never a credential or an argument).
    pub message: String,
}

/// The upstream MCP servers the gateway fronts (implemented in the server over `rmcp`'s
/// client, named only in `startup`).
#[async_trait]
pub trait ToolUpstreams: Send + Sync {
    /// Every tool the upstreams offer now, namespaced. An upstream that cannot be reached
    /// contributes no tools (it is tried again at the next listing).
    async fn tools(&self) -> Vec<GatewayTool>;

    /// Calls `tool` with `arguments` at its upstream, with the credential the gateway holds for
    /// it, under the upstream's timeout. Answers the MCP `CallToolResult` as JSON (a result
    /// with `isError: true` is an answer, not a failure).
    ///
    /// # Errors
    /// [`UpstreamError`] when the upstream gave no result (unreachable, protocol error,
    /// timeout).
    async fn call(
        &self,
        tool: &GatewayTool,
        arguments: Map<String, Value>,
    ) -> Result<Value, UpstreamError>;
}

/// A gateway tool call (`POST /v1/tasks/{id}/tool-calls`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ToolCall {
    /// The namespaced tool name (`<upstream>__<tool>`), as listed by `GET /v1/gateway/tools`.
    pub tool: String,
    /// The tool's arguments (a JSON object; at most 64 KiB serialized, depth 16).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub arguments: Map<String, Value>,
    /// Why the call is needed, shown to approvers when policy asks for a step-up (optional;
    /// bounded like a request's justification).
    #[serde(default)]
    pub justification: Option<String>,
}

/// Whether `name` is a valid upstream name (`[a-z][a-z0-9-]{0,31}`).
pub fn valid_upstream_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// The namespaced name of upstream `upstream`'s tool `tool`, when it obeys MCP 2025-11-25's
/// tool-name rule (1–128 characters of `A-Z a-z 0-9 _ - .`); `None` otherwise.
pub fn namespaced(upstream: &str, tool: &str) -> Option<String> {
    let name = format!("{upstream}{TOOL_SEPARATOR}{tool}");
    let ok = !tool.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'));
    ok.then_some(name)
}

/// Checks a call's arguments against the documented bounds.
///
/// # Errors
/// `invalid_request` naming the bound.
pub fn check_arguments(arguments: &Map<String, Value>) -> Result<(), ApiError> {
    let size = serde_json::to_vec(arguments).map_or(usize::MAX, |v| v.len());
    if size > MAX_ARGUMENTS_BYTES {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("`arguments` is {size} bytes; at most {MAX_ARGUMENTS_BYTES} are accepted"),
        ));
    }
    fn depth(v: &Value) -> usize {
        match v {
            Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
            Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }
    if arguments.values().map(depth).max().unwrap_or(0) + 1 > MAX_ARGUMENTS_DEPTH {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("`arguments` is nested deeper than {MAX_ARGUMENTS_DEPTH} levels"),
        ));
    }
    Ok(())
}

/// The canonical JSON of a value: object members sorted by name at every depth, no
/// whitespace (whatever map order serde_json was built with).
pub fn canonical_json(v: &Value) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    if let Some(x) = m.get(k) {
                        write(x, out);
                    }
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

/// What the keyed arguments digest is computed over: a version, the upstream, the tool and the
/// canonical arguments, NUL-separated.
pub fn arguments_digest_input(
    upstream: &str,
    tool: &str,
    arguments: &Map<String, Value>,
) -> String {
    format!(
        "latch tool call v1\0{upstream}\0{tool}\0{}",
        canonical_json(&Value::Object(arguments.clone()))
    )
}

/// `unknown_tool` for a name the gateway does not offer.
pub fn unknown_tool(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::UnknownTool,
        format!(
            "no gateway tool {}: list them with GET /v1/gateway/tools (names are `<upstream>__<tool>`)",
            quote(name)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names() {
        assert!(valid_upstream_name("db"));
        assert!(valid_upstream_name("git-hub2"));
        assert!(!valid_upstream_name("Db"));
        assert!(!valid_upstream_name("a_b"));
        assert!(!valid_upstream_name(""));
        assert_eq!(namespaced("db", "query").as_deref(), Some("db__query"));
        assert_eq!(namespaced("db", "a.b-c_d").as_deref(), Some("db__a.b-c_d"));
        assert_eq!(namespaced("db", "bad name"), None);
        assert_eq!(namespaced("db", ""), None);
        assert_eq!(namespaced("db", &"x".repeat(130)), None);
    }

    #[test]
    fn canonical_sorts_members_at_every_depth() {
        let a = json!({"b": 1, "a": {"y": [1, {"d": 2, "c": 1}], "x": "s"}});
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":"s","y":[1,{"c":1,"d":2}]},"b":1}"#
        );
    }

    #[test]
    fn argument_bounds() {
        let mut deep = json!(1);
        for _ in 0..20 {
            deep = json!({ "x": deep });
        }
        let m = deep.as_object().cloned().unwrap();
        assert_eq!(
            check_arguments(&m).unwrap_err().code,
            ErrorCode::InvalidRequest
        );
        let big: Map<String, Value> = [("q".to_owned(), json!("x".repeat(70_000)))]
            .into_iter()
            .collect();
        assert!(check_arguments(&big).is_err());
        let ok: Map<String, Value> = [("q".to_owned(), json!("select 1"))].into_iter().collect();
        assert!(check_arguments(&ok).is_ok());
    }
}
