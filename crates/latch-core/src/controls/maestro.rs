//! CSA MAESTRO (Multi-Agent Environment, Security, Threat, Risk, and Outcome): its seven
//! layers, each with what Latch contributes to it. Layer 6, Security and Compliance, is
//! vertical: it spans the others, so it is computed from every other control of the report.

use super::checks::{Facts, Spec, grade};
use super::{Control, Framework, Status};

const F: Framework = Framework::CsaMaestro;

/// Layers 1–5 and 7; layer 6 is [`security_and_compliance`], computed last.
pub(super) fn controls(x: &Facts<'_>) -> Vec<Control> {
    vec![
        foundation_models(x),
        data_operations(x),
        agent_frameworks(x),
        infrastructure(x),
        observability(x),
        ecosystem(x),
    ]
}

fn foundation_models(x: &Facts<'_>) -> Control {
    Spec {
        framework: F,
        id: "L1",
        title: "Foundation Models",
        summary: "The models that reason for the agents: their integrity, alignment and robustness.",
    }
    .with(
        Status::Manual,
        "manual: Latch neither hosts nor evaluates models",
        vec![x.tasks_line()],
    )
}

fn data_operations(x: &Facts<'_>) -> Control {
    let mut ev = x.probe_lines();
    let secrets: Vec<&str> = x
        .resources
        .iter()
        .filter(|r| r.sensitivity == "secret")
        .map(|r| r.id.as_str())
        .collect();
    ev.push(format!(
        "`secret`-sensitivity resources: {}",
        if secrets.is_empty() {
            "none".to_owned()
        } else {
            secrets.join(", ")
        }
    ));
    ev.push(x.grants_line());
    Spec {
        framework: F,
        id: "L2",
        title: "Data Operations",
        summary: "Data stores, pipelines and knowledge sources the agents read and write.",
    }
    .with(
        grade(&[x.secret_without_step_up()], &[]),
        "fails when a probe finds a `secret`-sensitivity resource permitted without step-up; passes otherwise (data stores are reached with per-task credentials only)",
        ev,
    )
}

fn agent_frameworks(x: &Facts<'_>) -> Control {
    Spec {
        framework: F,
        id: "L3",
        title: "Agent Frameworks",
        summary: "The agent runtime: its control flow, tool orchestration and autonomy limits.",
    }
    .with(
        grade(&[], &[x.c.mcp_upstreams.is_empty()]),
        "partial when no MCP gateway upstream is configured (tool calls are not mediated by policy); passes otherwise",
        vec![x.upstreams_line(), x.tools_line()],
    )
}

fn infrastructure(x: &Facts<'_>) -> Control {
    let plain = x.plain_http_off_loopback() && !x.c.tls;
    Spec {
        framework: F,
        id: "L4",
        title: "Deployment and Infrastructure",
        summary: "Where agents and their brokers run: hosts, networks, keys and secrets at rest.",
    }
    .with(
        grade(
            &[x.c.dev_issuer_enabled, x.c.generated_master_key, plain],
            &[],
        ),
        "fails when the development issuer is enabled, the master key was generated on the broker, or the broker is reached over plain HTTP on a non-loopback address; passes otherwise",
        vec![
            x.dev_issuer_line(),
            format!(
                "master key {}; public URL {}; TLS on the listener: {}",
                if x.c.generated_master_key {
                    "generated into the data directory (development only)"
                } else {
                    "supplied by the operator"
                },
                x.c.public_url,
                if x.c.tls { "yes" } else { "no" }
            ),
        ],
    )
}

fn observability(x: &Facts<'_>) -> Control {
    let no_cp = x.checkpoint.is_none();
    let no_sink = x.c.audit_sinks.is_empty();
    let no_periodic = x.c.checkpoint_interval_secs <= 0;
    Spec {
        framework: F,
        id: "L5",
        title: "Evaluation and Observability",
        summary: "Monitoring, logging and evaluation of what agents do.",
    }
    .with(
        grade(&[no_cp], &[no_sink, no_periodic]),
        "fails when no signed checkpoint covers the report; partial when checkpoints are not periodic or no audit sink streams events off the broker; passes otherwise",
        vec![x.audit_line(), x.denials_line(), x.tools_line()],
    )
}

fn ecosystem(x: &Facts<'_>) -> Control {
    Spec {
        framework: F,
        id: "L7",
        title: "Agent Ecosystem",
        summary: "The agents, clients and marketplaces that interact, and who they claim to be.",
    }
    .with(
        grade(&[x.c.dev_issuer_enabled], &[]),
        "fails when the development issuer is enabled (any caller can claim any agent identity); passes otherwise (every agent proves a configured issuer's identity)",
        vec![
            x.dev_issuer_line(),
            x.issuers_line(),
            x.tasks_line(),
            format!(
                "MCP clients registered: {}; OAuth grants issued after a human's consent: {}; delegated credentials (`act`): {}",
                x.f.oauth_clients_registered, x.f.oauth_grants_issued, x.f.grants.delegated
            ),
        ],
    )
}

/// Layer 6, from every other control computed so far (the OWASP lists and MAESTRO's other
/// layers).
pub(super) fn security_and_compliance(others: &[&Control]) -> Control {
    let failed: Vec<&str> = others
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| c.id.as_str())
        .collect();
    let partial: Vec<&str> = others
        .iter()
        .filter(|c| c.status == Status::Partial)
        .map(|c| c.id.as_str())
        .collect();
    let list = |v: &[&str]| {
        if v.is_empty() {
            "none".to_owned()
        } else {
            v.join(", ")
        }
    };
    Spec {
        framework: F,
        id: "L6",
        title: "Security and Compliance",
        summary: "The vertical layer: security controls and compliance evidence across every other layer.",
    }
    .with(
        grade(&[!failed.is_empty()], &[!partial.is_empty()]),
        "fails when any computed OWASP or MAESTRO control of this report fails; partial when any is partial; passes otherwise",
        vec![
            format!("failed controls: {}", list(&failed)),
            format!("partial controls: {}", list(&partial)),
        ],
    )
}
