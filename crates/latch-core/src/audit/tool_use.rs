//! Agents' tool-use reports and their bounds.

use serde::{Deserialize, Serialize};

use super::text::check_text;
use super::{MAX_ATTRIBUTES_BYTES, MAX_ATTRIBUTES_DEPTH, MAX_ATTRIBUTES_KEYS};
use crate::error::{ApiError, ErrorCode};

/// What an agent reports about one use of a tool (`POST /v1/tasks/{id}/events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ToolUseReport {
    /// Tool name, e.g. `psql`, `github.create_pull_request` (1–128 characters, no control,
    /// bidi or zero-width characters).
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::tool))]
    pub tool: String,
    /// What it acted on (a resource id, host, path; ≤ 512 characters).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::target))]
    pub target: Option<String>,
    /// `ok`, `error`, `denied`, … (`[a-z0-9_]`, 1–32 characters; default `ok`).
    #[serde(default = "default_outcome")]
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::outcome))]
    pub outcome: String,
    /// The lease whose credential was used, if any (must belong to the task).
    #[serde(default)]
    pub lease_id: Option<String>,
    /// How long the call took (milliseconds).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::duration_ms))]
    pub duration_ms: Option<u64>,
    /// Free-form details: a JSON object of at most [`MAX_ATTRIBUTES_BYTES`] bytes serialized,
    /// [`MAX_ATTRIBUTES_KEYS`] keys and depth [`MAX_ATTRIBUTES_DEPTH`]. Values may hold any
    /// text; it is stored JSON-escaped and rendered escaped.
    ///
    /// # Security
    /// Never put credentials here: the audit log is read by many.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::attributes))]
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

/// The schemas of the report's fields (`schema_with` takes no description: each carries its
/// field's).
#[cfg(feature = "openapi")]
mod schemas {
    use crate::openapi::{described, text};
    use utoipa::openapi::schema::Object;

    pub(super) fn tool() -> Object {
        described(
            text(128, true, false),
            "Tool name, e.g. `psql`, `github.create_pull_request` (1–128 characters, no control, bidi or zero-width characters).",
        )
    }
    pub(super) fn target() -> Object {
        described(
            text(512, true, true),
            "What it acted on (a resource id, host, path; 1–512 characters).",
        )
    }
    pub(super) fn outcome() -> Object {
        described(
            crate::openapi::outcome(),
            "`ok`, `error`, `denied`, … (`[a-z0-9_]`, 1–32 characters; default `ok`).",
        )
    }
    pub(super) fn duration_ms() -> Object {
        described(
            crate::openapi::unsigned(u64::MAX, true),
            "How long the call took (milliseconds).",
        )
    }
    pub(super) use crate::openapi::attributes;
}

fn default_outcome() -> String {
    "ok".into()
}

fn invalid(msg: String) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, msg)
}

impl ToolUseReport {
    /// Checks the bounds documented on the fields.
    ///
    /// # Errors
    /// `invalid_request` naming the field and the bound.
    pub fn validate(&self) -> Result<(), ApiError> {
        check_text("tool", &self.tool, 128, true)?;
        if let Some(t) = &self.target {
            check_text("target", t, 512, true)?;
        }
        let o = &self.outcome;
        if o.is_empty()
            || o.len() > 32
            || !o
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(invalid(
                "`outcome` must be 1-32 characters of `a-z`, `0-9` and `_`".into(),
            ));
        }
        let size = serde_json::to_vec(&self.attributes).map_or(usize::MAX, |v| v.len());
        if size > MAX_ATTRIBUTES_BYTES {
            return Err(invalid(format!(
                "`attributes` is {size} bytes; at most {MAX_ATTRIBUTES_BYTES} are accepted"
            )));
        }
        let mut keys = 0usize;
        check_value(&self.attributes, 1, &mut keys)
    }
}

fn check_value(
    map: &serde_json::Map<String, serde_json::Value>,
    depth: usize,
    keys: &mut usize,
) -> Result<(), ApiError> {
    if depth > MAX_ATTRIBUTES_DEPTH {
        return Err(invalid(format!(
            "`attributes` is nested deeper than {MAX_ATTRIBUTES_DEPTH} levels"
        )));
    }
    for (k, v) in map {
        *keys += 1;
        if *keys > MAX_ATTRIBUTES_KEYS {
            return Err(invalid(format!(
                "`attributes` has more than {MAX_ATTRIBUTES_KEYS} keys"
            )));
        }
        check_text("attributes key", k, 128, true)?;
        check_nested(v, depth, keys)?;
    }
    Ok(())
}

fn check_nested(v: &serde_json::Value, depth: usize, keys: &mut usize) -> Result<(), ApiError> {
    match v {
        serde_json::Value::Object(m) => check_value(m, depth + 1, keys),
        serde_json::Value::Array(items) => {
            if depth + 1 > MAX_ATTRIBUTES_DEPTH {
                return Err(invalid(format!(
                    "`attributes` is nested deeper than {MAX_ATTRIBUTES_DEPTH} levels"
                )));
            }
            items
                .iter()
                .try_for_each(|i| check_nested(i, depth + 1, keys))
        }
        serde_json::Value::String(v) if v.contains('\0') => Err(invalid(
            "`attributes` values must not contain NUL characters".into(),
        )),
        _ => Ok(()),
    }
}
