//! Wiring of the MCP gateway: its upstreams, installed in the broker.

use std::sync::Arc;

use latch_core::Broker;

use super::StartError;
use crate::config::Config;

/// The MCP gateway's upstreams (`[[mcp.upstreams]]`), installed in the broker; the policy
/// schema must then describe tool calls.
pub(super) fn build_gateway(config: &Config, broker: &Broker) -> Result<(), StartError> {
    if config.mcp.upstreams.is_empty() {
        return Ok(());
    }
    broker
        .policy()
        .check_tool_shape(&config.policy.schema.display().to_string())
        .map_err(|e| StartError(format!("policy: {e}")))?;
    let secrets = config
        .mcp
        .upstreams
        .iter()
        .map(|u| u.secret(&config.base_dir))
        .collect::<Result<Vec<_>, _>>()
        .map_err(StartError)?;
    let upstreams =
        crate::gateway::McpUpstreams::new(&config.mcp.upstreams, secrets).map_err(StartError)?;
    broker.set_gateway(Arc::new(upstreams));
    Ok(())
}
