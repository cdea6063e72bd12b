//! The conditions several controls share, computed once from the inputs, and the evidence
//! lines that cite them. Each catalogue's file combines these into its controls' rules.

use super::{
    AuditFigures, Control, ControlConfig, ControlInputs, Framework, PolicyFacts, ProbeResult,
    ResourceFact, Status, counts_line,
};

/// A resource may issue credentials living longer than this per issue (seconds) and still be
/// short-lived; past it, `partial`.
pub(super) const SHORT_TTL_SECS: i64 = 3600;
/// A lease living longer than this across renewals (seconds) is long-lived: `fail`.
pub(super) const LONG_LIFETIME_SECS: i64 = 24 * 3600;
/// A workload issuer accepting tokens living longer than this (seconds): `partial`.
pub(super) const LONG_TOKEN_SECS: i64 = 3600;

/// The inputs with the conditions the rules share.
pub(super) struct Facts<'a> {
    pub(super) c: &'a ControlConfig,
    pub(super) f: &'a AuditFigures,
    pub(super) p: &'a PolicyFacts,
    pub(super) resources: &'a [ResourceFact],
    /// The checkpoint the figures stop at, as `seq N (hash …)`.
    pub(super) checkpoint: Option<String>,
}

impl<'a> Facts<'a> {
    pub(super) fn new(i: &'a ControlInputs) -> Self {
        Self {
            c: &i.config,
            f: &i.figures,
            p: &i.policy,
            resources: &i.resources,
            checkpoint: i
                .checkpoint
                .as_ref()
                .map(|cp| format!("seq {} (chain hash {}, key {})", cp.seq, cp.hash, cp.kid)),
        }
    }

    /// Probes of production or `secret` resources that policy allowed without approval.
    pub(super) fn open_probes(&self) -> Vec<&ProbeResult> {
        self.p
            .probes
            .iter()
            .filter(|r| r.decision == "allow")
            .collect()
    }

    /// Whether a production resource is reachable without step-up: a probe allowed it, or a
    /// credential for one was granted in the window on a request policy allowed outright.
    pub(super) fn production_without_step_up(&self) -> bool {
        self.open_probes().iter().any(|r| r.production)
            || self.f.grants.production_without_step_up > 0
    }

    /// Whether a `secret`-sensitivity resource is reachable without step-up (by the probes).
    pub(super) fn secret_without_step_up(&self) -> bool {
        self.open_probes().iter().any(|r| {
            self.resources
                .iter()
                .any(|x| x.id == r.resource && x.sensitivity == "secret")
        })
    }

    /// Whether the public URL is plain HTTP on a host other than loopback.
    pub(super) fn plain_http_off_loopback(&self) -> bool {
        let u = self.c.public_url.to_ascii_lowercase();
        let Some(rest) = u.strip_prefix("http://") else {
            return false;
        };
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
        let host = if host.starts_with('[') {
            host.split(']').next().unwrap_or("").trim_start_matches('[')
        } else {
            host.split(':').next().unwrap_or("")
        };
        !(host == "localhost"
            || host == "::1"
            || host.starts_with("127.")
            || host.ends_with(".localhost"))
    }

    /// Whether any step-up policy is loaded.
    pub(super) fn has_step_up(&self) -> bool {
        !self.p.step_up.is_empty()
    }

    // ---------------------------------------------------------------- evidence lines

    pub(super) fn dev_issuer_line(&self) -> String {
        if self.c.dev_issuer_enabled {
            "the development issuer is enabled: whoever reaches `POST /v1/dev/tokens` can mint any workload or human token".into()
        } else {
            "the development issuer is disabled".into()
        }
    }

    pub(super) fn probe_lines(&self) -> Vec<String> {
        let open = self.open_probes();
        let held = self
            .p
            .probes
            .iter()
            .filter(|r| r.decision == "step_up")
            .count();
        let mut out = vec![format!(
            "policy probes (fingerprint {}): production or `secret` resource actions probed: {}; needing a step-up: {}; permitted without one: {}; denied: {}",
            self.p.fingerprint,
            self.p.probes.len(),
            held,
            open.len(),
            self.p.probes.len() - held - open.len()
        )];
        for r in open.iter().take(10) {
            out.push(format!(
                "permitted without step-up: `{}` on `{}`{} for {} (policies: {})",
                r.action,
                r.resource,
                if r.production { " (production)" } else { "" },
                r.presets.join(", "),
                if r.policy_ids.is_empty() {
                    "-".to_owned()
                } else {
                    r.policy_ids.join(", ")
                }
            ));
        }
        if open.len() > 10 {
            out.push(format!(
                "… and {} more permitted without step-up",
                open.len() - 10
            ));
        }
        out
    }

    pub(super) fn grants_line(&self) -> String {
        let g = &self.f.grants;
        format!(
            "credentials granted in the window: {} ({}); for production resources: {}, of them on requests allowed without step-up: {}; after a step-up approval: {}",
            g.total,
            counts_line(&g.by_resource, 8),
            g.production,
            g.production_without_step_up,
            g.after_step_up
        )
    }

    pub(super) fn step_up_line(&self) -> String {
        let s = &self.f.step_ups;
        format!(
            "step-ups: {} requested, {} approved at quorum, {} denied by an approver, {} expired; approvals by: {}; denials by: {}",
            s.requested,
            s.approved,
            s.denied,
            s.expired,
            counts_line(&s.approvers, 8),
            counts_line(&s.deniers, 8)
        )
    }

    pub(super) fn step_up_policy_line(&self) -> String {
        if self.p.step_up.is_empty() {
            return "no `@step_up` policy is loaded: no request ever waits for a human".into();
        }
        let v: Vec<String> = self
            .p
            .step_up
            .iter()
            .map(|s| format!("`{}` → {} ×{}", s.policy_id, s.group, s.quorum))
            .collect();
        format!("step-up policies: {}", v.join("; "))
    }

    pub(super) fn denials_line(&self) -> String {
        format!(
            "refusals of grants, claims and renewals: {} (by reason: {})",
            self.f.denials.total,
            counts_line(&self.f.denials.by_code, 8)
        )
    }

    pub(super) fn ttl_line(&self) -> String {
        match &self.f.longest_ttl {
            Some(t) => format!(
                "longest TTL granted: {} s (`{}`, lease `{}`, seq {})",
                t.secs, t.resource, t.lease_id, t.seq
            ),
            None => "longest TTL granted: none (no credential granted in the window)".into(),
        }
    }

    pub(super) fn longest_configured(&self) -> (Option<&ResourceFact>, Option<&ResourceFact>) {
        (
            self.resources.iter().max_by_key(|r| r.max_ttl_secs),
            self.resources.iter().max_by_key(|r| r.max_lifetime_secs),
        )
    }

    pub(super) fn leak_line(&self) -> String {
        let l = &self.f.leaks;
        let ttr = match &l.time_to_revocation {
            Some(s) => format!(
                "time from report to confirmed revocation: min {} s, median {} s, max {} s over {}",
                s.min_secs, s.median_secs, s.max_secs, s.count
            ),
            None => "no revocation timed".into(),
        };
        format!(
            "leak reports: {} (live Latch credentials revoked: {}, already dead: {}, unmatched: {}, third-party secrets: {}, tasks cancelled: {}); {ttr}; not confirmed revoked in the window: {}",
            l.reported,
            l.revoked,
            l.inactive,
            l.unmatched,
            l.third_party,
            l.tasks_cancelled,
            l.not_revoked
        )
    }

    pub(super) fn revocation_line(&self) -> String {
        let r = &self.f.revocations;
        format!(
            "revocations confirmed: {} (by reason: {}); failed attempts: {} (leases: {}), still unconfirmed in the window: {}; revoked by a policy reload: {}",
            r.revoked,
            counts_line(&r.by_reason, 6),
            r.failed_attempts,
            r.leases_with_failures,
            r.unconfirmed,
            r.policy_revoked
        )
    }

    pub(super) fn tasks_line(&self) -> String {
        let t = &self.f.tasks;
        format!(
            "tasks opened: {} (distinct workload principals: {}; in production: {}; on behalf of a human: {}); completed: {}, cancelled: {}, expired: {}",
            t.opened,
            t.workloads,
            t.production,
            t.on_behalf_of_human,
            t.completed,
            t.cancelled,
            t.expired
        )
    }

    pub(super) fn tools_line(&self) -> String {
        let t = &self.f.tools;
        format!(
            "tool calls through the gateway: {} ({} forwarded, {} refused: {}); tool uses reported by agents: {}",
            t.calls,
            t.forwarded,
            t.refused,
            counts_line(&t.refused_by_outcome, 6),
            t.reported_uses
        )
    }

    pub(super) fn audit_line(&self) -> String {
        let sinks: Vec<String> = self
            .c
            .audit_sinks
            .iter()
            .map(|s| format!("{} ({})", s.name, s.kind))
            .collect();
        format!(
            "audit: {} records read (seq {} to {}); checkpoint {}; periodic checkpoints {}; sinks: {}",
            self.f.events_read,
            self.f
                .first_seq
                .map_or_else(|| "-".into(), |s| s.to_string()),
            self.f
                .last_seq
                .map_or_else(|| "-".into(), |s| s.to_string()),
            self.checkpoint.as_deref().unwrap_or("none (empty trail)"),
            if self.c.checkpoint_interval_secs > 0 {
                format!("every {} s", self.c.checkpoint_interval_secs)
            } else {
                "off".into()
            },
            if sinks.is_empty() {
                "none".into()
            } else {
                sinks.join(", ")
            }
        )
    }

    pub(super) fn kill_switch_line(&self) -> String {
        format!(
            "kill switch: admin groups {}; {} freezes engaged, {} lifted, {} grants refused as frozen; {} operator actions on others' tasks and leases",
            if self.c.admin_groups.is_empty() {
                "none (nobody can engage it)".to_owned()
            } else {
                self.c.admin_groups.join(", ")
            },
            self.f.freezes_engaged,
            self.f.freezes_lifted,
            self.f.denials.by_code.get("frozen").copied().unwrap_or(0),
            self.f.operator_actions
        )
    }

    pub(super) fn budgets_line(&self) -> String {
        format!(
            "per-task and per-workload budgets: {}",
            if self.c.budgets_configured {
                "configured"
            } else {
                "not configured"
            }
        )
    }

    pub(super) fn signals_line(&self) -> String {
        format!(
            "Shared Signals (SSF/CAEP): receivers {}, transmitters {}",
            self.c.ssf_receivers, self.c.ssf_transmitters
        )
    }

    pub(super) fn issuers_line(&self) -> String {
        if self.c.issuers.is_empty() {
            return "no identity issuer is configured".into();
        }
        let v: Vec<String> = self
            .c
            .issuers
            .iter()
            .map(|i| {
                format!(
                    "{} ({}, {}, tokens up to {} s)",
                    i.name, i.kind, i.preset, i.max_token_lifetime_secs
                )
            })
            .collect();
        format!("issuers: {}", v.join("; "))
    }

    pub(super) fn sender_line(&self) -> String {
        format!(
            "credentials granted sender-constrained (DPoP `cnf.jkt`): {} of {}; with a delegation (`act`): {}; DPoP nonces {}",
            self.f.grants.sender_constrained,
            self.f.grants.total,
            self.f.grants.delegated,
            if self.c.dpop_require_nonce {
                "required"
            } else {
                "not required"
            }
        )
    }

    pub(super) fn upstreams_line(&self) -> String {
        if self.c.mcp_upstreams.is_empty() {
            return "no MCP gateway upstream is configured: agents' tool calls do not pass through Latch".into();
        }
        let v: Vec<String> = self
            .c
            .mcp_upstreams
            .iter()
            .map(|u| {
                format!(
                    "{} ({}{})",
                    u.name,
                    u.transport,
                    if u.static_credential {
                        ", static credential held by Latch"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        format!("MCP gateway upstreams: {}", v.join(", "))
    }
}

/// A control of `framework`, with its status, rule and evidence.
pub(super) struct Spec {
    pub(super) framework: Framework,
    pub(super) id: &'static str,
    pub(super) title: &'static str,
    pub(super) summary: &'static str,
}

impl Spec {
    pub(super) fn with(&self, status: Status, rule: &str, evidence: Vec<String>) -> Control {
        Control {
            framework: self.framework,
            id: self.id.to_owned(),
            title: self.title.to_owned(),
            summary: self.summary.to_owned(),
            status,
            rule: rule.to_owned(),
            evidence,
        }
    }
}

/// `fail` if any of `fails`, else `partial` if any of `partials`, else `pass`.
pub(super) fn grade(fails: &[bool], partials: &[bool]) -> Status {
    if fails.iter().any(|b| *b) {
        Status::Fail
    } else if partials.iter().any(|b| *b) {
        Status::Partial
    } else {
        Status::Pass
    }
}
