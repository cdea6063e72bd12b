//! NIST AI RMF 1.0 (NIST AI 100-1): the GOVERN, MAP, MEASURE and MANAGE subcategories Latch
//! holds evidence for. Subcategory texts are summarised, not quoted.

use super::checks::{Facts, Spec, grade};
use super::{Control, Framework};

const F: Framework = Framework::NistAiRmf1;

/// The subcategories, function by function.
pub(super) fn controls(x: &Facts<'_>) -> Vec<Control> {
    vec![
        govern_1_4(x),
        govern_1_6(x),
        govern_3_2(x),
        map_3_5(x),
        measure_2_7(x),
        measure_2_8(x),
        manage_2_4(x),
        manage_4_1(x),
        manage_4_3(x),
    ]
}

fn govern_1_4(x: &Facts<'_>) -> Control {
    Spec {
        framework: F,
        id: "GOVERN 1.4",
        title: "Transparent risk management policies and controls",
        summary: "The risk management process and its outcomes are set through transparent policies, procedures and controls.",
    }
    .with(
        grade(&[x.p.policies == 0], &[x.f.policy_reloads_refused > 0]),
        "fails when no policy is loaded; partial when a policy reload was refused in the window (the running set differs from the files); passes otherwise (policy as code, fingerprinted, reloads audited)",
        vec![
            format!(
                "Cedar policies loaded: {} (fingerprint {}), default deny",
                x.p.policies, x.p.fingerprint
            ),
            format!(
                "policy reloads in the window: {} applied, {} refused",
                x.f.policy_reloads, x.f.policy_reloads_refused
            ),
            x.step_up_policy_line(),
        ],
    )
}

fn govern_1_6(x: &Facts<'_>) -> Control {
    let unowned: Vec<&str> = x
        .resources
        .iter()
        .filter(|r| r.owner.as_deref().is_none_or(|o| o.trim().is_empty()))
        .map(|r| r.id.as_str())
        .collect();
    Spec {
        framework: F,
        id: "GOVERN 1.6",
        title: "Inventory of AI systems",
        summary: "Mechanisms exist to inventory AI systems, resourced by risk priority.",
    }
    .with(
        grade(&[], &[!unowned.is_empty()]),
        "partial when a resource names no owning team; passes otherwise (every agent is a workload principal with tasks on record, every resource has an owner)",
        vec![
            x.tasks_line(),
            format!(
                "resources configured: {}; without an owner: {}",
                x.resources.len(),
                if unowned.is_empty() {
                    "none".to_owned()
                } else {
                    unowned.join(", ")
                }
            ),
        ],
    )
}

fn govern_3_2(x: &Facts<'_>) -> Control {
    let no_admin = x.c.admin_groups.is_empty();
    let no_step = !x.has_step_up();
    Spec {
        framework: F,
        id: "GOVERN 3.2",
        title: "Roles for human-AI configurations and oversight",
        summary: "Policies define and differentiate human roles in human-AI configurations and in oversight of AI systems.",
    }
    .with(
        grade(&[no_admin && no_step], &[no_admin || no_step]),
        "fails when neither an admin group (operators) nor a step-up group (approvers) is configured; partial when one is missing; passes otherwise",
        vec![
            format!(
                "operators (admin groups): {}",
                if no_admin {
                    "none".to_owned()
                } else {
                    x.c.admin_groups.join(", ")
                }
            ),
            x.step_up_policy_line(),
            x.step_up_line(),
        ],
    )
}

fn map_3_5(x: &Facts<'_>) -> Control {
    let unattended =
        x.f.step_ups.requested > 0 && x.f.step_ups.approved == 0 && x.f.step_ups.denied == 0;
    Spec {
        framework: F,
        id: "MAP 3.5",
        title: "Human oversight processes",
        summary: "Processes for human oversight are defined, assessed and documented per the GOVERN policies.",
    }
    .with(
        grade(&[!x.has_step_up()], &[unattended]),
        "fails when no `@step_up` policy is loaded; partial when step-ups were requested in the window and no human decided any; passes otherwise",
        vec![
            x.step_up_policy_line(),
            x.step_up_line(),
            format!(
                "notification channels to approvers: {}; delivered {}, failed attempts {}",
                if x.c.notification_channels.is_empty() {
                    "none".to_owned()
                } else {
                    x.c.notification_channels.join(", ")
                },
                x.f.notifications_delivered,
                x.f.notifications_failed
            ),
        ],
    )
}

fn measure_2_7(x: &Facts<'_>) -> Control {
    let insecure = x.c.dev_issuer_enabled || x.production_without_step_up();
    let unconfirmed = x.f.revocations.unconfirmed > 0;
    Spec {
        framework: F,
        id: "MEASURE 2.7",
        title: "Security and resilience evaluated",
        summary: "The AI system's security and resilience are evaluated and documented.",
    }
    .with(
        grade(
            &[insecure, unconfirmed],
            &[x.f.revocations.failed_attempts > 0],
        ),
        "fails when the development issuer is enabled, a production resource is permitted without step-up, or a failed revocation stayed unconfirmed; partial when revocation attempts failed in the window but were confirmed later; passes otherwise",
        vec![
            x.dev_issuer_line(),
            x.probe_lines().remove(0),
            x.revocation_line(),
            x.denials_line(),
        ],
    )
}

fn measure_2_8(x: &Facts<'_>) -> Control {
    Spec {
        framework: F,
        id: "MEASURE 2.8",
        title: "Transparency and accountability",
        summary: "Risks tied to transparency and accountability are examined and documented.",
    }
    .with(
        grade(&[x.checkpoint.is_none()], &[x.c.audit_sinks.is_empty()]),
        "fails when no signed checkpoint covers the report; partial when no audit sink keeps a copy of the trail off the broker; passes otherwise (every decision, vote and credential is a hash-chained record naming its actor)",
        vec![x.audit_line(), x.step_up_line()],
    )
}

fn manage_2_4(x: &Facts<'_>) -> Control {
    Spec {
        framework: F,
        id: "MANAGE 2.4",
        title: "Supersede, disengage or deactivate",
        summary: "Mechanisms and assigned responsibilities exist to supersede, disengage or deactivate AI systems acting outside their intended use.",
    }
    .with(
        grade(&[x.c.admin_groups.is_empty()], &[]),
        "fails when no admin group is configured (nobody may engage the kill switch, revoke leases or cancel tasks); passes otherwise",
        vec![x.kill_switch_line(), x.tasks_line()],
    )
}

fn manage_4_1(x: &Facts<'_>) -> Control {
    let no_sink = x.c.audit_sinks.is_empty();
    let no_notify = x.c.notification_channels.is_empty();
    Spec {
        framework: F,
        id: "MANAGE 4.1",
        title: "Post-deployment monitoring",
        summary: "Post-deployment monitoring plans are implemented: input capture, appeal and override, decommissioning, incident response, recovery, change management.",
    }
    .with(
        grade(&[], &[no_sink, no_notify]),
        "partial when no audit sink streams events off the broker or no notification channel tells approvers; passes otherwise",
        vec![x.audit_line(), x.kill_switch_line(), x.revocation_line()],
    )
}

fn manage_4_3(x: &Facts<'_>) -> Control {
    Spec {
        framework: F,
        id: "MANAGE 4.3",
        title: "Incidents communicated and tracked",
        summary: "Incidents and errors are communicated to the relevant actors; tracking, response and recovery are followed and documented.",
    }
    .with(
        grade(
            &[x.f.leaks.not_revoked > 0],
            &[x.c.audit_sinks.is_empty() && x.c.ssf_receivers == 0],
        ),
        "fails when a leaked credential was not confirmed revoked within the window; partial when neither an audit sink nor a Shared Signals receiver carries incidents off the broker; passes otherwise",
        vec![
            x.leak_line(),
            x.revocation_line(),
            x.audit_line(),
            x.signals_line(),
        ],
    )
}
