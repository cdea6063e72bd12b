//! What the approval console shows, in readable form: the view models of a request (what
//! exactly is approved), of its request parameters (an SSH key's fingerprint and principals, a
//! CSR's subject) and of a task's timeline. The HTTP edge only renders these; every rule about
//! what a request means lives here.
//!
//! # Security
//! Every text a workload or an issuer controls (purpose, justification, repository, branch,
//! names) is a [`Shown`]: escaped by [`escape_text`] (control, bidi and zero-width characters
//! become visible `\u{…}` escapes) and flagged when it held such characters. Nothing here
//! carries a credential: requests hold none, and timeline details drop every value whose key
//! names a secret.

use serde::Serialize;
use serde_json::Value;

use crate::audit::{escape_text, is_deceptive};
use crate::broker::PendingView;
use crate::model::{
    AccessRequest, Approval, AuditEvent, Decision, GroupQuorum, Human, RequestState, Resource,
    Task, TaskState, Verdict,
};

/// A text from a workload or an issuer, made safe to show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shown {
    /// The text with control, bidi and zero-width characters (and `\`) escaped.
    pub text: String,
    /// Whether the original held characters that can hide or rewrite what a reader sees.
    pub deceptive: bool,
}

impl Shown {
    /// `s` escaped ([`escape_text`]), flagged when it held a control or deceptive character.
    pub fn of(s: &str) -> Self {
        Self {
            text: escape_text(s).into_owned(),
            deceptive: s.chars().any(|c| c.is_control() || is_deceptive(c)),
        }
    }
}

/// The request parameters in readable form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ParamsView {
    /// No parameters.
    None,
    /// An SSH certificate request: the key's algorithm and SHA-256 fingerprint
    /// (`SHA256:…`, as `ssh-keygen -l` prints it), and the principals asked for.
    Ssh {
        /// Key algorithm (`ssh-ed25519`, …).
        algorithm: String,
        /// `SHA256:<base64>` fingerprint.
        fingerprint: String,
        /// Principals asked for (empty: the resource's defaults).
        principals: Vec<Shown>,
        /// The key's comment, if any.
        comment: Option<Shown>,
    },
    /// An X.509 certificate request by CSR: its subject and the SHA-256 of its public key.
    Csr {
        /// The CSR's subject (RFC 4514 string).
        subject: Shown,
        /// SHA-256 (hex) of the subject public key info (DER).
        public_key_sha256: String,
    },
    /// An X.509 certificate request by public key: the SHA-256 of the key.
    PublicKey {
        /// SHA-256 (hex) of the subject public key info (DER).
        public_key_sha256: String,
    },
    /// Parameters this view cannot read: shown as escaped JSON.
    Other(Shown),
}

impl ParamsView {
    /// Reads `params` as the console shows them. Parameters that do not parse are shown as
    /// escaped JSON, never dropped: an approver sees everything that will be minted from.
    pub fn of(params: &Value) -> Self {
        match params {
            Value::Null => Self::None,
            Value::Object(m) if m.is_empty() => Self::None,
            Value::Object(m) => {
                if let Some(Value::String(k)) = m.get("public_key")
                    && let Some(v) = ssh_view(k, m.get("principals"))
                {
                    return v;
                }
                if let Some(Value::String(pem)) = m.get("csr_pem")
                    && let Some(v) = csr_view(pem)
                {
                    return v;
                }
                if let Some(Value::String(pem)) = m.get("public_key_pem")
                    && let Some(v) = spki_view(pem)
                {
                    return v;
                }
                Self::Other(Shown::of(&params.to_string()))
            }
            other => Self::Other(Shown::of(&other.to_string())),
        }
    }
}

fn ssh_view(key: &str, principals: Option<&Value>) -> Option<ParamsView> {
    let public = ssh_key::PublicKey::from_openssh(key.trim()).ok()?;
    let principals = match principals {
        Some(Value::Array(items)) => items
            .iter()
            .map(|p| Shown::of(p.as_str().unwrap_or_default()))
            .collect(),
        _ => Vec::new(),
    };
    let comment = Some(public.comment())
        .filter(|c| !c.is_empty())
        .map(Shown::of);
    Some(ParamsView::Ssh {
        algorithm: public.algorithm().as_str().to_owned(),
        fingerprint: public.fingerprint(ssh_key::HashAlg::Sha256).to_string(),
        principals,
        comment,
    })
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes))
}

fn csr_view(pem: &str) -> Option<ParamsView> {
    use x509_parser::prelude::FromDer;
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.trim().as_bytes()).ok()?;
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&parsed.contents)
            .ok()?;
    let info = &csr.certification_request_info;
    Some(ParamsView::Csr {
        subject: Shown::of(&info.subject.to_string()),
        public_key_sha256: sha256_hex(info.subject_pki.raw),
    })
}

fn spki_view(pem: &str) -> Option<ParamsView> {
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.trim().as_bytes()).ok()?;
    Some(ParamsView::PublicKey {
        public_key_sha256: sha256_hex(&parsed.contents),
    })
}

/// One approver group's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuorumView {
    /// The group.
    pub group: String,
    /// Approvals that count for it so far.
    pub approvals: u32,
    /// Approvals it needs.
    pub quorum: u32,
}

/// One vote as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VoteView {
    /// The approver.
    pub approver: Shown,
    /// `approve` or `deny`.
    pub verdict: &'static str,
    /// Their reason.
    pub reason: Shown,
    /// When (Unix seconds).
    pub at_unix_secs: i64,
}

/// Where the agent runs: repository, branch, run, and a link to the CI run when the verified
/// identity says where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunView {
    /// Repository (the task's, proved by the identity).
    pub repository: Option<Shown>,
    /// Branch.
    pub branch: Option<Shown>,
    /// The run the task is bound to (`gh-run:<id>/<attempt>`, `gl-job:<id>`, `pod:<uid>`).
    pub run: Option<Shown>,
    /// `https://github.com/{repo}/actions/runs/{id}` for a GitHub Actions run whose repository
    /// and run id are plain (nothing that could make the link point elsewhere).
    pub run_url: Option<String>,
    /// The workload principal (`iss#sub`).
    pub workload: Shown,
    /// Whether the run came from an untrusted source (a pull request).
    pub untrusted_source: bool,
}

impl RunView {
    /// The run of `task`.
    pub fn of(task: &Task) -> Self {
        let repository = task
            .repository
            .as_deref()
            .or(task.owner.claims.repository.as_deref());
        Self {
            repository: repository.map(Shown::of),
            branch: task.branch.as_deref().map(Shown::of),
            run: task.owner.run_binding.as_deref().map(Shown::of),
            run_url: github_run_url(task),
            workload: Shown::of(&task.owner.id),
            untrusted_source: task.owner.claims.untrusted_source,
        }
    }
}

/// The GitHub Actions run page of a task's run, when its identity is a GitHub Actions one and
/// both the repository (`owner/name`) and the run id are plain.
fn github_run_url(task: &Task) -> Option<String> {
    if task.owner.preset != "github_actions" {
        return None;
    }
    let repo = task.owner.claims.repository.as_deref()?;
    let plain = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let (owner, name) = repo.split_once('/')?;
    if !plain(owner) || !plain(name) {
        return None;
    }
    let run = task.owner.run_binding.as_deref()?.strip_prefix("gh-run:")?;
    let (id, attempt) = run.split_once('/').unwrap_or((run, ""));
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut url = format!("https://github.com/{owner}/{name}/actions/runs/{id}");
    if !attempt.is_empty() && attempt.chars().all(|c| c.is_ascii_digit()) {
        url.push_str(&format!("/attempts/{attempt}"));
    }
    Some(url)
}

/// Whether the human looking at a request may vote on it, and if not, why. The vote itself
/// checks the same rules again ([`crate::Broker::vote`]); this only decides whether the console
/// offers the form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VoteStanding {
    /// They may vote.
    May,
    /// The request is no longer open to votes (decided, expired, or its task has ended).
    Closed,
    /// They are the human the request's agent acts for.
    OwnAgent,
    /// They already voted on it.
    AlreadyVoted,
    /// None of their groups is one the request asks; these are the groups it needs.
    NotEligible(Vec<String>),
}

impl VoteStanding {
    /// The standing of `human` on `pv` at `now` (Unix seconds).
    pub fn of(human: &Human, pv: &PendingView, now: i64) -> Self {
        let (r, t) = (&pv.request, &pv.task);
        let open = r.state == RequestState::Pending
            && now < r.expires_at_unix_secs
            && t.state == TaskState::Open
            && now < t.expires_at_unix_secs;
        if !open {
            return Self::Closed;
        }
        if t.on_behalf_of
            .as_deref()
            .is_some_and(|h| h.eq_ignore_ascii_case(&human.id))
        {
            return Self::OwnAgent;
        }
        if pv
            .approvals
            .iter()
            .any(|a| a.approver.eq_ignore_ascii_case(&human.id))
        {
            return Self::AlreadyVoted;
        }
        if !r
            .step_up_groups
            .iter()
            .any(|g| human.groups.contains(&g.group))
        {
            return Self::NotEligible(r.step_up_groups.iter().map(|g| g.group.clone()).collect());
        }
        Self::May
    }

    /// Why they may not vote, in a sentence (`None` when they may).
    pub fn why_not(&self) -> Option<String> {
        match self {
            Self::May => None,
            Self::Closed => Some("this request is no longer open to votes".into()),
            Self::OwnAgent => Some("you are the human this agent acts for".into()),
            Self::AlreadyVoted => Some("you already voted".into()),
            Self::NotEligible(groups) if groups.is_empty() => {
                Some("this request asks no approver group".into())
            }
            Self::NotEligible(groups) => Some(format!("needs {}", groups.join(" or "))),
        }
    }
}

/// A request exactly as an approver is asked to approve it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestView {
    /// Request id.
    pub id: String,
    /// Its state (`pending`, `approved`, `denied`, `granted`, `expired`).
    pub state: &'static str,
    /// The digest the approval binds to (the form submits it back).
    pub digest: String,
    /// Resource id.
    pub resource: String,
    /// Resource kind (`jwt`, `postgres`, `ssh`, …), when the resource is configured.
    pub resource_kind: Option<String>,
    /// The resource's environment.
    pub resource_environment: Option<String>,
    /// Whether that environment is a production one.
    pub resource_production: bool,
    /// The resource's sensitivity.
    pub resource_sensitivity: Option<String>,
    /// Actions asked for.
    pub actions: Vec<String>,
    /// TTL asked for (seconds).
    pub ttl_secs: i64,
    /// The request parameters, readable.
    pub params: ParamsView,
    /// The agent's justification.
    pub justification: Shown,
    /// Task id.
    pub task_id: String,
    /// The task's purpose.
    pub purpose: Shown,
    /// The task's environment.
    pub task_environment: String,
    /// The task's state.
    pub task_state: &'static str,
    /// The human the agent acts for.
    pub on_behalf_of: Option<Shown>,
    /// Where the agent runs.
    pub run: RunView,
    /// The policies that asked for step-up.
    pub step_up_policies: Vec<String>,
    /// Approvals so far per group, and the quorums.
    pub quorum: Vec<QuorumView>,
    /// The votes cast so far.
    pub votes: Vec<VoteView>,
    /// When it was made (Unix seconds).
    pub created_at_unix_secs: i64,
    /// When it expires if undecided (Unix seconds).
    pub expires_at_unix_secs: i64,
    /// Seconds left until then (0 when past).
    pub seconds_left: i64,
    /// Whether the human it was made for may vote on it.
    pub standing: VoteStanding,
}

impl RequestView {
    /// The view of `pv` (with its resource's configuration, if still configured) at `now`, for
    /// `human`.
    pub fn of(
        human: &Human,
        pv: &PendingView,
        resource: Option<&Resource>,
        production: bool,
        now: i64,
    ) -> Self {
        let r: &AccessRequest = &pv.request;
        let t: &Task = &pv.task;
        let step_up_policies = match &r.decision {
            Decision::StepUp { policy_ids, .. } => policy_ids.clone(),
            _ => Vec::new(),
        };
        Self {
            id: r.id.clone(),
            state: r.state.as_str(),
            digest: r.digest.clone(),
            resource: r.resource_id.clone(),
            resource_kind: resource.map(|x| x.kind.clone()),
            resource_environment: resource.map(|x| x.environment.to_string()),
            resource_production: production,
            resource_sensitivity: resource.map(|x| x.sensitivity.clone()),
            actions: r.actions.clone(),
            ttl_secs: r.ttl_secs,
            params: ParamsView::of(&r.params),
            justification: Shown::of(&r.justification),
            task_id: t.id.clone(),
            purpose: Shown::of(&t.purpose),
            task_environment: t.environment.to_string(),
            task_state: t.state.as_str(),
            on_behalf_of: t.on_behalf_of.as_deref().map(Shown::of),
            run: RunView::of(t),
            step_up_policies,
            quorum: quorum_views(&r.step_up_groups, &pv.approvals),
            votes: pv.approvals.iter().map(vote_view).collect(),
            created_at_unix_secs: r.created_at_unix_secs,
            expires_at_unix_secs: r.expires_at_unix_secs,
            seconds_left: (r.expires_at_unix_secs - now).max(0),
            standing: VoteStanding::of(human, pv, now),
        }
    }
}

fn quorum_views(groups: &[GroupQuorum], approvals: &[Approval]) -> Vec<QuorumView> {
    groups
        .iter()
        .map(|g| QuorumView {
            group: g.group.clone(),
            approvals: u32::try_from(
                approvals
                    .iter()
                    .filter(|a| a.verdict == Verdict::Approve && a.groups.contains(&g.group))
                    .count(),
            )
            .unwrap_or(u32::MAX),
            quorum: g.quorum,
        })
        .collect()
}

fn vote_view(a: &Approval) -> VoteView {
    VoteView {
        approver: Shown::of(&a.approver),
        verdict: match a.verdict {
            Verdict::Approve => "approve",
            Verdict::Deny => "deny",
        },
        reason: Shown::of(&a.reason),
        at_unix_secs: a.created_at_unix_secs,
    }
}

/// One entry of a task's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineEntry {
    /// Audit sequence number.
    pub seq: i64,
    /// When (Unix seconds).
    pub at_unix_secs: i64,
    /// The event kind (`task.opened`, `request.decided`, `approval.recorded`,
    /// `credential.issued`, `credential.revoked`, `tool.used`, …).
    pub kind: String,
    /// Who acted.
    pub actor: Shown,
    /// The outcome.
    pub outcome: Shown,
    /// The access request, if the event is about one.
    pub request_id: Option<String>,
    /// The lease, if the event is about one.
    pub lease_id: Option<String>,
    /// A one-line summary of the event's detail (`key=value`, values escaped; no value whose
    /// key names a secret, and no HMAC of one).
    pub summary: Shown,
}

/// A task's page: the task and its timeline from the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskTimeline {
    /// Task id.
    pub id: String,
    /// Its state.
    pub state: &'static str,
    /// Purpose.
    pub purpose: Shown,
    /// Environment.
    pub environment: String,
    /// The human the agent acts for.
    pub on_behalf_of: Option<Shown>,
    /// Where the agent runs.
    pub run: RunView,
    /// Opened at, and hard end (Unix seconds).
    pub created_at_unix_secs: i64,
    /// Hard end (Unix seconds).
    pub expires_at_unix_secs: i64,
    /// Events, oldest first.
    pub events: Vec<TimelineEntry>,
}

impl TaskTimeline {
    /// The timeline of `task` from its audit `events`.
    pub fn of(task: &Task, events: &[AuditEvent]) -> Self {
        Self {
            id: task.id.clone(),
            state: task.state.as_str(),
            purpose: Shown::of(&task.purpose),
            environment: task.environment.to_string(),
            on_behalf_of: task.on_behalf_of.as_deref().map(Shown::of),
            run: RunView::of(task),
            created_at_unix_secs: task.created_at_unix_secs,
            expires_at_unix_secs: task.expires_at_unix_secs,
            events: events.iter().map(timeline_entry).collect(),
        }
    }
}

fn timeline_entry(e: &AuditEvent) -> TimelineEntry {
    TimelineEntry {
        seq: e.seq,
        at_unix_secs: e.at_unix_secs,
        kind: e.kind.clone(),
        actor: Shown::of(&e.actor),
        outcome: Shown::of(&e.outcome),
        request_id: e.access_request_id.clone(),
        lease_id: e.lease_id.clone(),
        summary: Shown::of(&summary(&e.detail)),
    }
}

/// Keys whose values are never shown, even though the trail holds no secret in clear: an HMAC
/// of a credential is still not for a web page, and `auth` repeats the caller's identity.
fn hidden_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    [
        "secret",
        "token",
        "password",
        "credential",
        "hmac",
        "key",
        "auth",
        "cnf",
        "jkt",
    ]
    .iter()
    .any(|w| k.contains(w))
}

/// `key=value` pairs of the top level of `detail`, at most 400 characters.
fn summary(detail: &Value) -> String {
    let Value::Object(m) = detail else {
        return String::new();
    };
    let mut out = String::new();
    for (k, v) in m {
        if hidden_key(k) {
            continue;
        }
        let v = match v {
            Value::String(s) => s.clone(),
            Value::Null => continue,
            other => other.to_string(),
        };
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(k);
        out.push('=');
        out.push_str(&v);
        if out.chars().count() > 400 {
            out = out.chars().take(400).collect();
            out.push('…');
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hostile_text_is_escaped_and_flagged() {
        let s = Shown::of("main\u{1b}[31m\r\nX\u{202e}cba\u{200b}");
        assert!(s.deceptive);
        assert!(!s.text.chars().any(|c| c.is_control() || is_deceptive(c)));
        assert!(s.text.contains("\\u{202e}"));
        assert!(!Shown::of("feature/ok-1").deceptive);
    }

    #[test]
    fn ssh_params_show_fingerprint_and_principals() {
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@host";
        let v = ParamsView::of(&json!({"public_key": key, "principals": ["deploy"]}));
        let ParamsView::Ssh {
            algorithm,
            fingerprint,
            principals,
            ..
        } = v
        else {
            panic!("not ssh: {v:?}");
        };
        assert_eq!(algorithm, "ssh-ed25519");
        assert!(fingerprint.starts_with("SHA256:"));
        assert_eq!(principals[0].text, "deploy");
    }

    #[test]
    fn unreadable_params_are_shown_not_dropped() {
        let v = ParamsView::of(&json!({"public_key": "not a key"}));
        assert!(matches!(v, ParamsView::Other(_)));
    }

    #[test]
    fn summaries_hide_secret_shaped_keys() {
        let s = summary(&json!({"credential_hmac": "ab", "resource": "db", "token": "x"}));
        assert_eq!(s, "resource=db");
    }
}
