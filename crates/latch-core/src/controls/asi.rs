//! OWASP Top 10 for Agentic Applications 2026 (ASI01–ASI10), as Latch sees them: what a
//! credential broker and tool gateway can enforce and prove, and what it cannot observe.

use super::checks::{Facts, Spec, grade};
use super::{Control, Framework, Status};

const F: Framework = Framework::OwaspAgentic2026;

/// The ten controls, in order.
pub(super) fn controls(x: &Facts<'_>) -> Vec<Control> {
    vec![
        goal_hijack(x),
        tool_misuse(x),
        identity_privilege(x),
        supply_chain(x),
        code_execution(x),
        memory_poisoning(x),
        inter_agent(x),
        cascading(x),
        human_trust(x),
        rogue_agents(x),
    ]
}

fn goal_hijack(x: &Facts<'_>) -> Control {
    Spec {
        framework: F,
        id: "ASI01",
        title: "Agent Goal Hijack",
        summary: "Content the agent reads redirects its objectives or plan toward harmful actions.",
    }
    .with(
        Status::Manual,
        "manual: Latch never sees the model's prompts, retrieved content or plan, so whether an agent's goal can be hijacked is for the agent's owner to assess; Latch bounds what a hijacked agent can reach",
        vec![x.denials_line(), x.step_up_line(), x.grants_line()],
    )
}

fn tool_misuse(x: &Facts<'_>) -> Control {
    let gateway = !x.c.mcp_upstreams.is_empty();
    let status = if gateway {
        Status::Pass
    } else {
        Status::Partial
    };
    Spec {
        framework: F,
        id: "ASI02",
        title: "Tool Misuse and Exploitation",
        summary: "Agents use legitimate tools in unsafe ways: over-privileged, poisoned or ambiguous calls.",
    }
    .with(
        status,
        "passes when MCP gateway upstreams are configured (every tool call is decided by policy, bound to its arguments for step-up, and audited); partial without them (only the credentials tools use are brokered)",
        vec![x.upstreams_line(), x.tools_line(), x.grants_line()],
    )
}

fn identity_privilege(x: &Facts<'_>) -> Control {
    let dev = x.c.dev_issuer_enabled;
    let prod = x.production_without_step_up();
    let mut ev = vec![x.dev_issuer_line()];
    ev.extend(x.probe_lines());
    ev.extend([
        x.grants_line(),
        x.step_up_line(),
        x.ttl_line(),
        x.denials_line(),
    ]);
    Spec {
        framework: F,
        id: "ASI03",
        title: "Identity and Privilege Abuse",
        summary: "Agents reuse, escalate or borrow identities and privileges beyond what the task needs.",
    }
    .with(
        grade(&[dev, prod], &[]),
        "fails when the development issuer is enabled or any production resource is permitted without step-up (by a policy probe, or a grant in the window); passes otherwise",
        ev,
    )
}

fn supply_chain(x: &Facts<'_>) -> Control {
    Spec {
        framework: F,
        id: "ASI04",
        title: "Agentic Supply Chain Vulnerabilities",
        summary: "Tools, models, prompts or agents pulled in at run time are tampered with or malicious.",
    }
    .with(
        Status::Manual,
        "manual: Latch does not verify the provenance of agent code, models or tool servers; the MCP upstreams it fronts are listed for review",
        vec![x.upstreams_line(), x.tools_line()],
    )
}

fn code_execution(x: &Facts<'_>) -> Control {
    Spec {
        framework: F,
        id: "ASI05",
        title: "Unexpected Code Execution (RCE)",
        summary: "Generated or injected output becomes code that runs with the agent's reach.",
    }
    .with(
        Status::Manual,
        "manual: Latch does not run or sandbox agent code; it limits what code run by an agent can reach with the credentials of its task",
        vec![x.denials_line(), x.ttl_line()],
    )
}

fn memory_poisoning(x: &Facts<'_>) -> Control {
    Spec {
        framework: F,
        id: "ASI06",
        title: "Memory & Context Poisoning",
        summary: "Persistent memory or context is poisoned and biases later actions or leaks across sessions.",
    }
    .with(
        Status::Manual,
        "manual: Latch keeps no agent memory or context; each task's credentials end with the task, which the evidence shows",
        vec![x.tasks_line()],
    )
}

fn inter_agent(x: &Facts<'_>) -> Control {
    let plain = x.plain_http_off_loopback() && !x.c.tls;
    let unbound = x.f.grants.total > 0 && x.f.grants.sender_constrained == 0;
    Spec {
        framework: F,
        id: "ASI07",
        title: "Insecure Inter-Agent Communication",
        summary: "Messages between agents and services are spoofed, replayed or intercepted.",
    }
    .with(
        grade(&[plain], &[unbound]),
        "fails when the broker is reached over plain HTTP on a non-loopback address; partial when credentials were granted in the window and none was sender-constrained (DPoP); passes otherwise",
        vec![
            format!(
                "public URL {}; TLS on the listener: {}{}",
                x.c.public_url,
                if x.c.tls { "yes" } else { "no" },
                x.c.client_certificates
                    .as_deref()
                    .map(|c| format!(", client certificates {c}"))
                    .unwrap_or_default()
            ),
            x.sender_line(),
        ],
    )
}

fn cascading(x: &Facts<'_>) -> Control {
    let unconfirmed = x.f.revocations.unconfirmed > 0;
    let no_admin = x.c.admin_groups.is_empty();
    Spec {
        framework: F,
        id: "ASI08",
        title: "Cascading Failures",
        summary: "One fault or compromised agent fans out into system-wide harm.",
    }
    .with(
        grade(&[unconfirmed], &[no_admin, !x.c.budgets_configured]),
        "fails when revocations failed and were not confirmed within the window (credentials may outlive their task); partial when no admin group can engage the kill switch or no `[budgets]` bound how much one task or workload may be granted; passes otherwise",
        vec![x.revocation_line(), x.kill_switch_line(), x.budgets_line()],
    )
}

fn human_trust(x: &Facts<'_>) -> Control {
    let none = !x.has_step_up();
    let single = x.p.step_up.iter().all(|s| s.quorum < 2);
    Spec {
        framework: F,
        id: "ASI09",
        title: "Human-Agent Trust Exploitation",
        summary: "Agents persuade or mislead humans into approving harmful actions.",
    }
    .with(
        grade(&[none], &[single]),
        "fails when no `@step_up` policy is loaded (no human checkpoint); partial when every step-up needs a single approver; passes when one needs a quorum of two or more (approvals bind to the request digest either way)",
        vec![x.step_up_policy_line(), x.step_up_line()],
    )
}

fn rogue_agents(x: &Facts<'_>) -> Control {
    let no_admin = x.c.admin_groups.is_empty();
    let leak_open = x.f.leaks.not_revoked > 0;
    Spec {
        framework: F,
        id: "ASI10",
        title: "Rogue Agents",
        summary: "Compromised or misaligned agents act outside their mandate, persist or spread.",
    }
    .with(
        grade(&[no_admin, leak_open], &[]),
        "fails when no admin group can engage the kill switch or a leaked credential was not confirmed revoked within the window; passes otherwise",
        vec![
            x.kill_switch_line(),
            x.leak_line(),
            x.tasks_line(),
            x.signals_line(),
        ],
    )
}
