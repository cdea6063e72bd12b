//! The control evidence report's server side: the configuration facts it reads, taken from
//! `latch.toml` at start ([`control_config`]), and its Markdown and HTML renderings of
//! [`ControlReport`] (the JSON form is the report's own serde form).
//!
//! # Security
//! Every value of a report may hold text from outside the operator's hands (an approver's id
//! from an identity provider, a resource id): the HTML rendering goes through maud, which
//! escapes every value; the Markdown rendering escapes HTML and Markdown syntax and makes
//! control, bidi and invisible characters visible ([`markdown::md`]).

use latch_core::controls::{ControlConfig, ControlReport, IssuerFact, SinkFact, UpstreamFact};

use crate::config::{AuditSinkConfig, Config, UpstreamTransport};
use crate::tls::ClientCertificates;

pub mod html;
pub mod markdown;

/// An output format of the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReportFormat {
    /// `application/json`: [`ControlReport`].
    #[default]
    Json,
    /// `text/markdown`.
    Markdown,
    /// `text/html` (one page, inline CSS, no script).
    Html,
}

impl ReportFormat {
    /// `json`, `markdown` or `html`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Markdown => "markdown",
            Self::Html => "html",
        }
    }

    /// The media type of a rendering in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Markdown => "text/markdown; charset=utf-8",
            Self::Html => "text/html; charset=utf-8",
        }
    }

    /// `report` rendered in this format.
    ///
    /// # Errors
    /// Never in practice (JSON of plain data).
    pub fn render(self, report: &ControlReport) -> Result<String, serde_json::Error> {
        Ok(match self {
            Self::Json => serde_json::to_string_pretty(report)?,
            Self::Markdown => markdown::render(report),
            Self::Html => html::render(report).into_string(),
        })
    }
}

/// The configuration facts of `config` a control report reads. The broker adds what it holds
/// itself (admin groups, production environments, notification channels, the public URL).
pub fn control_config(config: &Config) -> ControlConfig {
    let keys = &config.keys;
    ControlConfig {
        issuers: config
            .issuers
            .iter()
            .map(|i| IssuerFact {
                name: i.name.clone(),
                kind: i.kind.as_str().to_owned(),
                preset: i.effective_preset().as_str().to_owned(),
                max_token_lifetime_secs: secs(i.effective_max_token_lifetime()),
            })
            .collect(),
        dev_issuer_enabled: config.dev_issuer.enabled,
        generated_master_key: keys.master_key_file.is_none()
            && keys.master_key_env.is_none()
            && keys.generate_if_missing,
        checkpoint_interval_secs: secs(config.audit.checkpoint_interval),
        audit_sinks: config
            .audit
            .sinks
            .iter()
            .map(|s| SinkFact {
                name: s.name().to_owned(),
                kind: match s {
                    AuditSinkConfig::File { .. } => "file",
                    AuditSinkConfig::Stdout { .. } => "stdout",
                    AuditSinkConfig::Webhook { .. } => "webhook",
                }
                .to_owned(),
            })
            .collect(),
        scan_on_leak: match config.scan.on_leak {
            latch_core::broker::LeakScope::Credential => "credential",
            latch_core::broker::LeakScope::Task => "task",
        }
        .to_owned(),
        dpop_require_nonce: config.oauth.dpop_require_nonce,
        reaper_enabled: config.reaper.enabled,
        revoke_alert_after_attempts: config.reaper.alert_after_attempts,
        mcp_upstreams: config
            .mcp
            .upstreams
            .iter()
            .map(|u| UpstreamFact {
                name: u.name.clone(),
                transport: match u.transport {
                    UpstreamTransport::StreamableHttp => "streamable_http",
                    UpstreamTransport::Stdio => "stdio",
                }
                .to_owned(),
                static_credential: u.credential.is_some(),
            })
            .collect(),
        tls: config.server.tls.is_some(),
        client_certificates: config.server.tls.as_ref().map(|t| {
            match t.client_certificates {
                ClientCertificates::None => "none",
                ClientCertificates::Optional => "optional",
                ClientCertificates::Required => "required",
            }
            .to_owned()
        }),
        console_enabled: config.console.enabled,
        console_issuer: config.console.issuer.clone(),
        introspection_clients: u32::try_from(config.introspection_clients.len())
            .unwrap_or(u32::MAX),
        budgets_configured: {
            let b = config.budgets.budgets();
            b.task.any() || b.workload.any()
        },
        ssf_receivers: u32::try_from(config.ssf.receivers.len()).unwrap_or(u32::MAX),
        ssf_transmitters: u32::try_from(config.ssf.transmitters.len()).unwrap_or(u32::MAX),
        ..ControlConfig::default()
    }
}

fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
