//! OWASP Non-Human Identities Top 10 2025 (NHI1:2025–NHI10:2025), as Latch sees them: the
//! credentials it issues are the non-human identities, per task and short-lived.

use std::collections::BTreeMap;

use super::checks::{Facts, LONG_LIFETIME_SECS, LONG_TOKEN_SECS, SHORT_TTL_SECS, Spec, grade};
use super::{Control, Framework, Status};

const F: Framework = Framework::OwaspNhi2025;

/// The ten controls, in order.
pub(super) fn controls(x: &Facts<'_>) -> Vec<Control> {
    vec![
        offboarding(x),
        secret_leakage(x),
        third_party(x),
        authentication(x),
        overprivileged(x),
        deployment(x),
        long_lived(x),
        isolation(x),
        reuse(x),
        human_use(x),
    ]
}

fn offboarding(x: &Facts<'_>) -> Control {
    let no_reaper = !x.c.reaper_enabled;
    let unconfirmed = x.f.revocations.unconfirmed > 0;
    Spec {
        framework: F,
        id: "NHI1:2025",
        title: "Improper Offboarding",
        summary: "Identities and keys stay active after the service or task that needed them is gone.",
    }
    .with(
        grade(&[no_reaper, unconfirmed], &[]),
        "fails when the reaper is disabled (expired tasks keep their credentials) or a failed revocation was not confirmed within the window; passes otherwise (ending a task revokes its credentials)",
        vec![x.tasks_line(), x.revocation_line()],
    )
}

fn secret_leakage(x: &Facts<'_>) -> Control {
    Spec {
        framework: F,
        id: "NHI2:2025",
        title: "Secret Leakage",
        summary: "Keys, tokens and certificates end up in code, logs, tickets or chats.",
    }
    .with(
        grade(&[x.f.leaks.not_revoked > 0], &[]),
        "fails when a leaked live Latch credential reported in the window was not confirmed revoked within it; passes otherwise",
        vec![
            x.leak_line(),
            format!(
                "a leaked live credential takes down its {} (`[scan] on_leak`); `POST /v1/scan` and `latch scan` report findings",
                if x.c.scan_on_leak.is_empty() {
                    "credential"
                } else {
                    x.c.scan_on_leak.as_str()
                }
            ),
        ],
    )
}

fn third_party(x: &Facts<'_>) -> Control {
    let ups = &x.c.mcp_upstreams;
    let spec = Spec {
        framework: F,
        id: "NHI3:2025",
        title: "Vulnerable Third-Party NHI",
        summary: "Credentials held by or granted to third-party tools and services are stolen or misused.",
    };
    let rule = "not applicable without MCP gateway upstreams; partial when Latch holds a static credential for one (a long-lived third-party secret); passes otherwise";
    let ev = vec![
        x.upstreams_line(),
        format!(
            "MCP clients registered: {}; OAuth grants issued after a human's consent: {}",
            x.f.oauth_clients_registered, x.f.oauth_grants_issued
        ),
    ];
    if ups.is_empty() {
        return spec.with(Status::NotApplicable, rule, ev);
    }
    spec.with(
        grade(&[], &[ups.iter().any(|u| u.static_credential)]),
        rule,
        ev,
    )
}

fn authentication(x: &Facts<'_>) -> Control {
    let dev = x.c.dev_issuer_enabled;
    let long =
        x.c.issuers
            .iter()
            .any(|i| i.kind != "human" && i.max_token_lifetime_secs > LONG_TOKEN_SECS);
    let none = x.c.issuers.is_empty();
    let mut failures: BTreeMap<String, u64> = x.f.auth_failures.clone();
    failures.retain(|_, n| *n > 0);
    Spec {
        framework: F,
        id: "NHI4:2025",
        title: "Insecure Authentication",
        summary: "Deprecated or weak authentication methods for non-human identities.",
    }
    .with(
        grade(&[dev], &[long, none]),
        "fails when the development issuer is enabled; partial when no issuer is configured or a workload issuer accepts tokens living longer than 1 h; passes otherwise (signed OIDC tokens with asymmetric keys only)",
        vec![
            x.dev_issuer_line(),
            x.issuers_line(),
            format!(
                "failed authentications by code: {}",
                super::counts_line(&failures, 8)
            ),
            x.sender_line(),
        ],
    )
}

fn overprivileged(x: &Facts<'_>) -> Control {
    let mut ev = x.probe_lines();
    ev.extend([x.grants_line(), x.denials_line()]);
    Spec {
        framework: F,
        id: "NHI5:2025",
        title: "Overprivileged NHI",
        summary: "Identities hold far more privilege than their function needs.",
    }
    .with(
        grade(&[x.production_without_step_up()], &[]),
        "fails when any production resource is permitted without step-up (by a policy probe, or a grant in the window); passes otherwise (credentials are per task, resource and action)",
        ev,
    )
}

fn deployment(x: &Facts<'_>) -> Control {
    Spec {
        framework: F,
        id: "NHI6:2025",
        title: "Insecure Cloud Deployment Configurations",
        summary: "CI/CD and cloud identities trusted through static secrets or weakly checked OIDC claims.",
    }
    .with(
        grade(&[x.c.dev_issuer_enabled, x.c.generated_master_key], &[]),
        "fails when the development issuer is enabled or the master key was generated on the broker (development keys); passes otherwise (workload OIDC tokens checked per issuer and preset, no static secrets)",
        vec![
            x.dev_issuer_line(),
            format!(
                "master key: {}",
                if x.c.generated_master_key {
                    "generated into the data directory (development only)"
                } else {
                    "supplied by the operator"
                }
            ),
            x.issuers_line(),
        ],
    )
}

fn long_lived(x: &Facts<'_>) -> Control {
    let (ttl, life) = x.longest_configured();
    let max_ttl = ttl.map_or(0, |r| r.max_ttl_secs);
    let max_life = life.map_or(0, |r| r.max_lifetime_secs);
    let mut ev = vec![x.ttl_line()];
    if let Some(r) = ttl {
        ev.push(format!(
            "longest configured TTL per issue: {} s (`{}`)",
            r.max_ttl_secs, r.id
        ));
    }
    if let Some(r) = life {
        ev.push(format!(
            "longest configured lease life across renewals: {} s (`{}`)",
            r.max_lifetime_secs, r.id
        ));
    }
    ev.push(format!("longest task: {} s", x.c.task_max_ttl_secs));
    Spec {
        framework: F,
        id: "NHI7:2025",
        title: "Long-Lived Secrets",
        summary: "Secrets that expire far in the future, or never.",
    }
    .with(
        grade(
            &[max_life > LONG_LIFETIME_SECS],
            &[max_ttl > SHORT_TTL_SECS],
        ),
        "fails when a resource lets one lease live longer than 24 h across renewals; partial when one issues credentials for longer than 1 h; passes otherwise",
        ev,
    )
}

fn isolation(x: &Facts<'_>) -> Control {
    let envs: std::collections::BTreeSet<&str> =
        x.resources.iter().map(|r| r.environment.as_str()).collect();
    let unlisted: Vec<&str> = envs
        .iter()
        .copied()
        .filter(|e| {
            e.to_ascii_lowercase().contains("prod")
                && !x
                    .c
                    .production_environments
                    .iter()
                    .any(|p| p.eq_ignore_ascii_case(e))
        })
        .collect();
    let spec = Spec {
        framework: F,
        id: "NHI8:2025",
        title: "Environment Isolation",
        summary: "The same identities reach development, test and production.",
    };
    let rule = "not applicable when every resource is in one environment; fails when no environment is configured as production, or a resource's environment is named like production but not configured as one; passes otherwise (production credentials only reach production tasks, before policy)";
    let ev = vec![
        format!(
            "resource environments: {}; production environments: {}",
            envs.iter().copied().collect::<Vec<_>>().join(", "),
            x.c.production_environments.join(", ")
        ),
        format!(
            "refusals by hard environment separation in the window: {}",
            x.f.denials
                .by_code
                .get("environment_separation")
                .copied()
                .unwrap_or(0)
        ),
    ];
    if envs.len() < 2 {
        return spec.with(Status::NotApplicable, rule, ev);
    }
    spec.with(
        grade(
            &[x.c.production_environments.is_empty(), !unlisted.is_empty()],
            &[],
        ),
        rule,
        ev,
    )
}

fn reuse(x: &Facts<'_>) -> Control {
    let mut by_aud: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for r in x.resources {
        by_aud
            .entry(r.audience.as_str())
            .or_default()
            .push(r.id.as_str());
    }
    let shared: Vec<String> = by_aud
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(a, ids)| format!("`{a}`: {}", ids.join(", ")))
        .collect();
    let mut ev = vec![format!(
        "credentials granted: {}, tasks opened: {}, distinct workload principals: {}; each credential belongs to one lease of one task",
        x.f.grants.total, x.f.tasks.opened, x.f.tasks.workloads
    )];
    if !shared.is_empty() {
        ev.push(format!(
            "resources sharing an audience (one credential is accepted by each): {}",
            shared.join("; ")
        ));
    }
    Spec {
        framework: F,
        id: "NHI9:2025",
        title: "NHI Reuse",
        summary: "One identity shared across applications, services or components.",
    }
    .with(
        grade(&[], &[!shared.is_empty()]),
        "partial when two resources share an audience (a credential for one is accepted by the other); passes otherwise (a credential per task, resource and lease)",
        ev,
    )
}

fn human_use(x: &Facts<'_>) -> Control {
    Spec {
        framework: F,
        id: "NHI10:2025",
        title: "Human Use of NHI",
        summary: "People use machine identities for manual work, blurring accountability.",
    }
    .with(
        grade(&[x.c.dev_issuer_enabled], &[]),
        "fails when the development issuer is enabled (a person can mint workload identities); passes otherwise (humans authenticate as humans: workload routes refuse their tokens)",
        vec![
            x.dev_issuer_line(),
            format!(
                "human tokens refused where a workload was expected (and the reverse): {}",
                x.f.auth_failures
                    .get("wrong_principal_kind")
                    .copied()
                    .unwrap_or(0)
            ),
            x.tasks_line(),
        ],
    )
}
