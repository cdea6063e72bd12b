//! Figures of the audit trail over a window, folded one record at a time ([`FigureFold`]), so a
//! report never holds the records themselves.
//!
//! Every figure is a count or a time an auditor can recount from an export of the same records
//! (`seq` within the report's range, `at_unix_secs` within its window).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;
#[cfg(feature = "openapi")]
use utoipa::ToSchema;

use crate::model::{AuditEvent, AuditKind, DenyCode};

/// Most audit records one report reads; past it the figures stop there and the report says so.
pub const MAX_EVENTS: u64 = 100_000;
/// Most lease ids a figure lists (counts stay exact).
const MAX_LISTED: usize = 20;

/// Figures of the audit records in a report's window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditFigures {
    /// Records read.
    pub events_read: u64,
    /// `seq` of the first record read.
    pub first_seq: Option<i64>,
    /// `seq` of the last record read.
    pub last_seq: Option<i64>,
    /// The read stopped at [`MAX_EVENTS`] before the end of the window.
    pub truncated: bool,
    /// Tasks.
    pub tasks: TaskFigures,
    /// Credentials granted.
    pub grants: GrantFigures,
    /// The longest TTL granted (issue or renewal).
    pub longest_ttl: Option<TtlFigure>,
    /// Step-up approvals.
    pub step_ups: StepUpFigures,
    /// Refusals of grants, claims and renewals.
    pub denials: DenialFigures,
    /// Leaked secrets reported and the response.
    pub leaks: LeakFigures,
    /// Revocations.
    pub revocations: RevocationFigures,
    /// Tool calls through the MCP gateway, and tool uses agents reported.
    pub tools: ToolFigures,
    /// Failed authentications by error code.
    pub auth_failures: BTreeMap<String, u64>,
    /// Kill switches engaged.
    pub freezes_engaged: u64,
    /// Freezes lifted.
    pub freezes_lifted: u64,
    /// Operator actions on others' tasks and leases (`operator.acted`).
    pub operator_actions: u64,
    /// Policy reloads, and reloads refused (invalid sets).
    pub policy_reloads: u64,
    /// Policy reloads refused.
    pub policy_reloads_refused: u64,
    /// Notifications to approvers delivered.
    pub notifications_delivered: u64,
    /// Notification attempts that failed.
    pub notifications_failed: u64,
    /// MCP clients that registered with the authorization server.
    pub oauth_clients_registered: u64,
    /// OAuth grants issued to MCP clients after a human's consent.
    pub oauth_grants_issued: u64,
    /// Audit reads recorded (`audit.searched`, `audit.exported`, reports).
    pub audit_reads: u64,
}

/// Task figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TaskFigures {
    /// Opened.
    pub opened: u64,
    /// Opened in a production environment.
    pub production: u64,
    /// Opened on behalf of a named human.
    pub on_behalf_of_human: u64,
    /// Distinct workload principals that opened one.
    pub workloads: u64,
    /// Completed by their owner.
    pub completed: u64,
    /// Cancelled (owner, operator, leak response).
    pub cancelled: u64,
    /// Reached their TTL.
    pub expired: u64,
}

/// Grant figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct GrantFigures {
    /// Credentials issued.
    pub total: u64,
    /// Credentials issued per resource.
    pub by_resource: BTreeMap<String, u64>,
    /// Issued for production resources.
    pub production: u64,
    /// Issued for production resources on a request that policy allowed without step-up.
    pub production_without_step_up: u64,
    /// Issued on a request that went through a step-up approval.
    pub after_step_up: u64,
    /// Issued on a request decided before the window (how it was decided is not counted).
    pub decided_before_window: u64,
    /// Bound to a key (`cnf.jkt`, DPoP, RFC 9449).
    pub sender_constrained: u64,
    /// Carrying a delegation (`act`, RFC 8693 token exchange).
    pub delegated: u64,
    /// Renewals.
    pub renewals: u64,
}

/// The longest TTL granted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TtlFigure {
    /// Seconds from issue (or renewal) to expiry.
    pub secs: i64,
    /// The resource.
    pub resource: String,
    /// The lease.
    pub lease_id: String,
    /// `seq` of the record.
    pub seq: i64,
}

/// Step-up figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct StepUpFigures {
    /// Requests policy held for approval.
    pub requested: u64,
    /// Of them (or earlier ones), approved at quorum.
    pub approved: u64,
    /// Denied by an approver.
    pub denied: u64,
    /// Expired undecided or unclaimed.
    pub expired: u64,
    /// Approving votes per approver.
    pub approvers: BTreeMap<String, u64>,
    /// Denying votes per approver.
    pub deniers: BTreeMap<String, u64>,
}

/// Denial figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DenialFigures {
    /// Refused grants, renewals and frozen calls.
    pub total: u64,
    /// By reason code (`policy_denied`, `environment_separation`, `approver_denied`,
    /// `step_up_required` for renewals, `frozen`).
    pub by_code: BTreeMap<String, u64>,
}

/// Leak figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LeakFigures {
    /// Findings reported (`leak.detected`).
    pub reported: u64,
    /// Latch credentials found that were still live, and revoked.
    pub revoked: u64,
    /// Latch credentials found that were already dead (revoked, expired).
    pub inactive: u64,
    /// Candidate values Latch did not issue.
    pub unmatched: u64,
    /// Third-party secrets found (nothing for Latch to revoke).
    pub third_party: u64,
    /// Tasks cancelled by the leak response.
    pub tasks_cancelled: u64,
    /// Seconds from the leak's report to the confirmed revocation of the leaked credential.
    pub time_to_revocation: Option<Spread>,
    /// Leaked live credentials whose revocation was not confirmed within the window.
    pub not_revoked: u64,
    /// Their lease ids (at most 20).
    pub not_revoked_leases: Vec<String>,
}

/// Minimum, median and maximum of a set of durations (seconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Spread {
    /// How many.
    pub count: u64,
    /// Smallest.
    pub min_secs: i64,
    /// Median (the mean of the two middle values for an even count).
    pub median_secs: f64,
    /// Largest.
    pub max_secs: i64,
}

impl Spread {
    /// The spread of `v`, `None` when empty.
    pub fn of(mut v: Vec<i64>) -> Option<Self> {
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2] as f64
        } else {
            (v[n / 2 - 1] as f64 + v[n / 2] as f64) / 2.0
        };
        Some(Self {
            count: n as u64,
            min_secs: v[0],
            median_secs: median,
            max_secs: v[n - 1],
        })
    }
}

/// Revocation figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RevocationFigures {
    /// Revocations confirmed (`credential.revoked`).
    pub revoked: u64,
    /// Confirmed revocations by reason (`task completed`, `leaked`, `expired`, …).
    pub by_reason: BTreeMap<String, u64>,
    /// Failed attempts (retried with backoff).
    pub failed_attempts: u64,
    /// Leases with at least one failed attempt.
    pub leases_with_failures: u64,
    /// Of them, leases with no confirmed revocation within the window.
    pub unconfirmed: u64,
    /// Live leases a policy reload no longer allowed (revoked).
    pub policy_revoked: u64,
}

/// Tool figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ToolFigures {
    /// Tool calls through the gateway.
    pub calls: u64,
    /// Of them, forwarded to the upstream.
    pub forwarded: u64,
    /// Of them, refused (policy, step-up, task not open, frozen).
    pub refused: u64,
    /// Refusals by outcome.
    pub refused_by_outcome: BTreeMap<String, u64>,
    /// Tool uses agents reported (`tool.used`).
    pub reported_uses: u64,
}

/// Folds audit records into [`AuditFigures`].
#[derive(Debug, Default)]
pub struct FigureFold {
    f: AuditFigures,
    /// The first `request.decided` outcome of each request seen.
    first_decision: HashMap<String, String>,
    /// Requests held for a step-up that a later decision allowed (at quorum, then at claim).
    approved: HashSet<String>,
    /// The resource of each lease issued in the window (renewals name only the lease).
    lease_resource: HashMap<String, String>,
    workloads: HashSet<String>,
    /// Leaked leases and when the leak was reported.
    leaked: Vec<(String, i64)>,
    /// First `credential.revocation_requested` with reason `leaked`, per lease.
    leak_requested: HashMap<String, i64>,
    /// Confirmed revocation time per lease.
    revoked_at: HashMap<String, i64>,
    failed: HashSet<String>,
    /// Resource ids that are production.
    production: HashSet<String>,
}

fn detail_str<'a>(e: &'a AuditEvent, key: &str) -> Option<&'a str> {
    e.detail.get(key).and_then(Value::as_str)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn bump(m: &mut BTreeMap<String, u64>, k: &str) {
    *m.entry(k.to_owned()).or_default() += 1;
}

/// The stored code of a denial: `detail.code`, or for a record written before decisions
/// carried it, the legacy rule over its policy ids and reasons.
fn deny_code(e: &AuditEvent) -> String {
    if let Some(c) = detail_str(e, "code") {
        return c.to_owned();
    }
    let code = DenyCode::of_legacy_row(
        &strings(e.detail.get("policy_ids")),
        &strings(e.detail.get("reasons")),
    );
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "policy_denied".into())
}

impl FigureFold {
    /// A fold that counts grants of the resources in `production_resources` as production.
    pub fn new(production_resources: impl IntoIterator<Item = String>) -> Self {
        Self {
            production: production_resources.into_iter().collect(),
            ..Self::default()
        }
    }

    /// How many records were folded so far.
    pub fn events_read(&self) -> u64 {
        self.f.events_read
    }

    /// Marks the figures as cut short by the read cap.
    pub fn truncate(&mut self) {
        self.f.truncated = true;
    }

    /// Adds one record (records come in `seq` order).
    pub fn add(&mut self, e: &AuditEvent) {
        self.f.events_read += 1;
        self.f.first_seq.get_or_insert(e.seq);
        self.f.last_seq = Some(e.seq);
        let Ok(kind) = e.kind.parse::<AuditKind>() else {
            return;
        };
        match kind {
            AuditKind::TaskOpened => self.task_opened(e),
            AuditKind::TaskCompleted => self.f.tasks.completed += 1,
            AuditKind::TaskCancelled => self.f.tasks.cancelled += 1,
            AuditKind::TaskExpired => self.f.tasks.expired += 1,
            AuditKind::RequestDecided => self.decided(e),
            AuditKind::RequestExpired => self.f.step_ups.expired += 1,
            AuditKind::ApprovalRecorded => self.vote(e),
            AuditKind::CredentialIssued => self.issued(e),
            AuditKind::CredentialRenewed => {
                self.f.grants.renewals += 1;
                let resource = e
                    .lease_id
                    .as_ref()
                    .and_then(|l| self.lease_resource.get(l))
                    .cloned()
                    .unwrap_or_else(|| "-".into());
                self.ttl(e, &resource);
            }
            AuditKind::CredentialRenewalDenied => {
                let code = match e.outcome.as_str() {
                    "step_up" => "step_up_required".to_owned(),
                    "budget_exceeded" => "budget_exceeded".to_owned(),
                    _ => deny_code(e),
                };
                self.denial(&code);
            }
            AuditKind::AccessFrozen => self.denial("frozen"),
            AuditKind::CredentialRevoked => self.revoked(e),
            AuditKind::CredentialRevocationRequested => {
                if let Some(l) = &e.lease_id
                    && detail_str(e, "reason") == Some("leaked")
                {
                    self.leak_requested
                        .entry(l.clone())
                        .or_insert(e.at_unix_secs);
                }
            }
            AuditKind::CredentialRevocationFailed => {
                self.f.revocations.failed_attempts += 1;
                if let Some(l) = &e.lease_id {
                    self.failed.insert(l.clone());
                }
            }
            AuditKind::CredentialPolicyRevoked => self.f.revocations.policy_revoked += 1,
            AuditKind::LeakDetected => self.leak(e),
            AuditKind::ToolCalled => self.tool_called(e),
            AuditKind::ToolUsed => self.f.tools.reported_uses += 1,
            AuditKind::AuthFailed => self.auth_failed(e),
            AuditKind::FreezeEngaged => self.f.freezes_engaged += 1,
            AuditKind::FreezeLifted => self.f.freezes_lifted += 1,
            AuditKind::OperatorActed => self.f.operator_actions += 1,
            AuditKind::PolicyReloaded => self.f.policy_reloads += 1,
            AuditKind::PolicyReloadRefused => self.f.policy_reloads_refused += 1,
            AuditKind::NotificationDelivered => self.f.notifications_delivered += 1,
            AuditKind::NotificationFailed => self.f.notifications_failed += 1,
            AuditKind::OAuthClientRegistered => self.f.oauth_clients_registered += 1,
            AuditKind::OAuthGrantIssued => self.f.oauth_grants_issued += 1,
            AuditKind::AuditExported | AuditKind::AuditSearched | AuditKind::ReportGenerated => {
                self.f.audit_reads += 1;
            }
            _ => {}
        }
    }

    /// A failure recorded on its own counts once under its code; a window's summary
    /// (`repeated`) adds, per code, the failures beyond the first (which had its own record).
    fn auth_failed(&mut self, e: &AuditEvent) {
        if e.outcome != "repeated" {
            bump(&mut self.f.auth_failures, &e.outcome);
            return;
        }
        if let Some(codes) = e.detail.get("codes").and_then(Value::as_object) {
            for (code, n) in codes {
                let extra = n.as_u64().unwrap_or(0).saturating_sub(1);
                if extra > 0 {
                    *self.f.auth_failures.entry(code.clone()).or_default() += extra;
                }
            }
        }
    }

    fn task_opened(&mut self, e: &AuditEvent) {
        let t = &mut self.f.tasks;
        t.opened += 1;
        if e.detail.get("production").and_then(Value::as_bool) == Some(true) {
            t.production += 1;
        }
        if detail_str(e, "on_behalf_of").is_some() {
            t.on_behalf_of_human += 1;
        }
        self.workloads.insert(e.actor.clone());
    }

    fn decided(&mut self, e: &AuditEvent) {
        let Some(rid) = &e.access_request_id else {
            return;
        };
        let first = !self.first_decision.contains_key(rid);
        if first {
            self.first_decision.insert(rid.clone(), e.outcome.clone());
        }
        match e.outcome.as_str() {
            "step_up" if first => self.f.step_ups.requested += 1,
            // A later `allow` of a request held for a step-up is its approval at quorum (and
            // again at its claim: counted once).
            "allow"
                if !first
                    && self.first_decision.get(rid).map(String::as_str) == Some("step_up")
                    && self.approved.insert(rid.clone()) =>
            {
                self.f.step_ups.approved += 1;
            }
            "deny" => self.denial(&deny_code(e)),
            _ => {}
        }
    }

    fn vote(&mut self, e: &AuditEvent) {
        match e.outcome.as_str() {
            "approve" => bump(&mut self.f.step_ups.approvers, &e.actor),
            "deny" => {
                self.f.step_ups.denied += 1;
                bump(&mut self.f.step_ups.deniers, &e.actor);
            }
            _ => {}
        }
    }

    fn denial(&mut self, code: &str) {
        self.f.denials.total += 1;
        bump(&mut self.f.denials.by_code, code);
    }

    fn issued(&mut self, e: &AuditEvent) {
        let resource = detail_str(e, "resource").unwrap_or("-").to_owned();
        let g = &mut self.f.grants;
        g.total += 1;
        bump(&mut g.by_resource, &resource);
        if e.detail.get("cnf_jkt").is_some_and(|v| !v.is_null()) {
            g.sender_constrained += 1;
        }
        if e.detail.get("act").is_some_and(|v| !v.is_null()) {
            g.delegated += 1;
        }
        let decision = e
            .access_request_id
            .as_ref()
            .and_then(|r| self.first_decision.get(r));
        match decision.map(String::as_str) {
            Some("step_up") => g.after_step_up += 1,
            Some(_) => {}
            None => g.decided_before_window += 1,
        }
        if let Some(l) = &e.lease_id {
            self.lease_resource.insert(l.clone(), resource.clone());
        }
        if self.production.contains(&resource) {
            g.production += 1;
            if decision.is_some_and(|d| d == "allow") {
                g.production_without_step_up += 1;
            }
        }
        self.ttl(e, &resource);
    }

    fn ttl(&mut self, e: &AuditEvent, resource: &str) {
        let Some(exp) = e.detail.get("expires_at_unix_secs").and_then(Value::as_i64) else {
            return;
        };
        let secs = exp - e.at_unix_secs;
        if self.f.longest_ttl.as_ref().is_none_or(|t| secs > t.secs) {
            self.f.longest_ttl = Some(TtlFigure {
                secs,
                resource: resource.to_owned(),
                lease_id: e.lease_id.clone().unwrap_or_default(),
                seq: e.seq,
            });
        }
    }

    fn revoked(&mut self, e: &AuditEvent) {
        let r = &mut self.f.revocations;
        r.revoked += 1;
        bump(
            &mut r.by_reason,
            detail_str(e, "reason").unwrap_or("unspecified"),
        );
        if let Some(l) = &e.lease_id {
            self.revoked_at.entry(l.clone()).or_insert(e.at_unix_secs);
        }
    }

    fn leak(&mut self, e: &AuditEvent) {
        let l = &mut self.f.leaks;
        l.reported += 1;
        match e.outcome.as_str() {
            "revoked" => {
                l.revoked += 1;
                if let Some(lease) = &e.lease_id {
                    self.leaked.push((lease.clone(), e.at_unix_secs));
                }
            }
            "inactive" => l.inactive += 1,
            "unmatched" => l.unmatched += 1,
            "third_party" => {
                l.third_party += e.detail.get("count").and_then(Value::as_u64).unwrap_or(1);
            }
            _ => {}
        }
        if e.detail.get("task_cancelled").and_then(Value::as_bool) == Some(true) {
            l.tasks_cancelled += 1;
        }
    }

    fn tool_called(&mut self, e: &AuditEvent) {
        let t = &mut self.f.tools;
        t.calls += 1;
        match e.outcome.as_str() {
            "ok" | "error" | "timeout" => t.forwarded += 1,
            other => {
                t.refused += 1;
                bump(&mut t.refused_by_outcome, other);
            }
        }
    }

    /// The figures, with what needs every record (distinct counts, times to revocation).
    pub fn finish(mut self) -> AuditFigures {
        self.f.tasks.workloads = self.workloads.len() as u64;
        let mut ttr = Vec::new();
        for (lease, reported_at) in &self.leaked {
            // The leak is reported when the scan's answer starts revoking it; the event that
            // records the finding is written once the revocation is done.
            let reported = self
                .leak_requested
                .get(lease)
                .map_or(*reported_at, |r| (*r).min(*reported_at));
            match self.revoked_at.get(lease) {
                Some(at) => ttr.push((at - reported).max(0)),
                None => {
                    let l = &mut self.f.leaks;
                    l.not_revoked += 1;
                    if l.not_revoked_leases.len() < MAX_LISTED {
                        l.not_revoked_leases.push(lease.clone());
                    }
                }
            }
        }
        self.f.leaks.time_to_revocation = Spread::of(ttr);
        let r = &mut self.f.revocations;
        r.leases_with_failures = self.failed.len() as u64;
        r.unconfirmed = self
            .failed
            .iter()
            .filter(|l| !self.revoked_at.contains_key(*l))
            .count() as u64;
        self.f
    }
}
