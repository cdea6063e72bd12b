//! The domain model: workloads, humans, tasks, resources, access requests, approvals, leases and
//! audit events. Times are whole seconds since the Unix epoch (`*_unix_secs`), durations are
//! whole seconds (`*_secs`).

pub use crate::kinds::{
    AuditKind, Environment, ProviderKind, Sensitivity, UnknownAuditKind, UnknownProviderKind,
    UnknownSensitivity,
};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// Generates an opaque, prefixed identifier such as `task_019a…` (UUID v7: a millisecond
/// timestamp and 74 random bits). Time-ordered ids keep the store's B-tree inserts on the same
/// pages, so a group commit writes far fewer pages. Ids are not capabilities: every call checks
/// that the caller owns what an id names.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

pub use crate::workload_claims::WorkloadClaims;

/// A verified workload principal: what the caller **is**, proven by a token it did not choose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Workload {
    /// Stable principal id, `<issuer>#<stable subject>` (e.g. the service account UID).
    pub id: String,
    /// The issuer (`iss`).
    pub issuer: String,
    /// The token subject (`sub`), verbatim.
    pub subject: String,
    /// The issuer preset that mapped the claims (`github_actions`, `gitlab_ci`, `kubernetes`, `generic`).
    pub preset: String,
    /// The run this token belongs to, when the issuer says (CI run id and attempt, GitLab job id,
    /// pod UID). A task is bound to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_binding: Option<String>,
    /// The human on whose behalf the workload runs (GitHub `actor`, GitLab `user_login`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    /// Mapped claims.
    pub claims: WorkloadClaims,
    /// When the presented token expires.
    pub token_expires_at_unix_secs: i64,
}

/// A verified human (approver, or the person an agent works for).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Human {
    /// Stable human id (the configured claim, e.g. `preferred_username` or `sub`).
    pub id: String,
    /// The issuer.
    pub issuer: String,
    /// Approver groups the issuer asserts.
    pub groups: Vec<String>,
    /// When the issuer asserted `groups` (Unix seconds): the token's `iat`, or the console
    /// session's sign-in. Votes and operator actions refuse groups older than
    /// `[approvals] authority_max_age`; `None` (a token without `iat`) counts as too old.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_asserted_at_unix_secs: Option<i64>,
}

pub use crate::console_session::ConsoleSession;

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A workload (agent, CI job, pod).
    Workload(Box<Workload>),
    /// A human.
    Human(Human),
}

/// Lifecycle of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Accepting requests.
    Open,
    /// Ended by its owner; every lease revoked.
    Completed,
    /// Cancelled by its owner; every lease revoked.
    Cancelled,
    /// Reached its TTL; every lease revoked.
    Expired,
}

impl TaskState {
    /// Stable string form.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Open => "open",
            TaskState::Completed => "completed",
            TaskState::Cancelled => "cancelled",
            TaskState::Expired => "expired",
        }
    }
}

/// One unit of an agent's work; the root of revocation for everything minted in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Task {
    /// `task_<uuid>`.
    pub id: String,
    /// The workload that opened it, as verified then. Only the same principal, in the same run
    /// (see [`Workload::run_binding`]), may act in the task; policies are re-evaluated against
    /// this snapshot when they reload.
    pub owner: Workload,
    /// Why the agent needs access (free text, bounded).
    pub purpose: String,
    /// Repository the work is on.
    pub repository: Option<String>,
    /// Branch the work is on.
    pub branch: Option<String>,
    /// Environment (`sandbox`, `staging`, `production`, …).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub environment: Environment,
    /// True when `environment` is one of the configured production environments.
    pub production: bool,
    /// The human the agent acts for, if known.
    pub on_behalf_of: Option<String>,
    /// State.
    pub state: TaskState,
    /// When it was opened.
    pub created_at_unix_secs: i64,
    /// Hard end; no lease outlives it.
    pub expires_at_unix_secs: i64,
    /// When it ended, if it did.
    pub ended_at_unix_secs: Option<i64>,
    /// Optimistic-concurrency version (compare-and-set).
    pub version: i64,
}

/// Something an agent can be given access to, configured by the operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Resource {
    /// Resource id, e.g. `payments-db`.
    pub id: String,
    /// Provider kind that mints for it: a [`ProviderKind`] string (`jwt`, …) or the kind of a
    /// provider registered by the embedder.
    pub kind: String,
    /// Environment the resource lives in.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub environment: Environment,
    /// Data sensitivity: a [`Sensitivity`] string (`public`, `internal`, `confidential`,
    /// `secret`).
    pub sensitivity: String,
    /// Audience the credential is for (JWT `aud`).
    pub audience: String,
    /// Actions the resource offers.
    pub actions: Vec<String>,
    /// Longest TTL any credential for it may have, per issue or renewal (seconds).
    pub max_ttl_secs: i64,
    /// Longest total life of one lease across renewals (seconds, ≥ `max_ttl_secs`).
    pub max_lifetime_secs: i64,
    /// TTL used when the request names none (seconds, ≤ `max_ttl_secs`).
    pub default_ttl_secs: i64,
    /// Owning team, for policies.
    pub owner: Option<String>,
    /// True when `environment` is a production environment.
    pub production: bool,
    /// Marks a resource data can leave through (an external API, publishing, a deploy
    /// pipeline): policy reads it as `resource.egress`, and the example policies hold such a
    /// credential back for step-up once the task is tainted (see [`crate::history`]).
    #[serde(default)]
    pub egress: bool,
    /// Whether a budget breach on a request for this resource also ends the task (all its
    /// credentials revoked); `on_budget_breach = "end_task"` in `latch.toml`.
    #[serde(default)]
    pub end_task_on_budget_breach: bool,
    /// Provider-specific settings (never secrets: those are referenced by file or env name).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub settings: serde_json::Value,
}

/// State of an access request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    /// Waiting for human approval (step-up).
    Pending,
    /// Quorum reached and policy re-evaluated to allow; the agent may claim the credential.
    Approved,
    /// Denied by policy or by an approver.
    Denied,
    /// A credential was minted for it (see `lease_id`).
    Granted,
    /// Not decided or claimed in time.
    Expired,
    /// Closed before it was decided or claimed because its task ended (completed, cancelled,
    /// expired); it can no longer be approved, denied or claimed.
    Cancelled,
}

impl RequestState {
    /// Stable string form.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Approved => "approved",
            RequestState::Denied => "denied",
            RequestState::Granted => "granted",
            RequestState::Expired => "expired",
            RequestState::Cancelled => "cancelled",
        }
    }
}

/// An approver group that must approve, and how many distinct members must.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct GroupQuorum {
    /// Group name, from the policy's `@step_up("…")` annotation.
    pub group: String,
    /// Distinct approvals needed, from `@quorum("n")` (default 1).
    pub quorum: u32,
}

/// Why a request is denied: the one vocabulary every surface (REST, `/oauth/token`, MCP,
/// renewal) reads, set where the decision is made ([`crate::policy::decide`], an approver's
/// vote). [`as_str`](Self::as_str) is the stable error code the API answers.
///
/// Stored and sent as the `code` of a deny [`Decision`], in snake case
/// (`environment_separation`, `policy_denied`, `approver_denied`, `step_up_required`,
/// `budget_exceeded`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DenyCode {
    /// A non-production task asked for a production resource (hard separation, before policy).
    EnvironmentSeparation,
    /// Policy denies: a `forbid`, no `permit` (default deny), or a policy that failed to
    /// evaluate (errors deny).
    PolicyDenied,
    /// An approver voted to deny the request.
    ApproverDenied,
    /// Policy would allow only after a new human approval, which the call cannot wait for
    /// (renewal). Never stored on a [`Decision::Deny`]: see [`Decision::deny_code`].
    StepUpRequired,
    /// A budget of the task or workload is used up (`[budgets]` in `latch.toml`, or a forbid
    /// annotated `@budget`; see [`crate::history`]).
    BudgetExceeded,
}

impl DenyCode {
    /// The stable API error code: `environment_separation` or `policy_denied`.
    pub fn as_str(self) -> &'static str {
        self.error_code().as_str()
    }

    /// The error code a call refused for this reason answers (REST `code`, OAuth `latch_code`,
    /// MCP `code`).
    pub fn error_code(self) -> crate::error::ErrorCode {
        match self {
            Self::EnvironmentSeparation => crate::error::ErrorCode::EnvironmentSeparation,
            Self::PolicyDenied | Self::ApproverDenied | Self::StepUpRequired => {
                crate::error::ErrorCode::PolicyDenied
            }
            Self::BudgetExceeded => crate::error::ErrorCode::BudgetExceeded,
        }
    }

    /// Legacy fallback, ONLY for a denial stored before deny decisions carried their `code`
    /// (rows written by older brokers): the code is recovered from the reasons the deciding
    /// code wrote then, and anything else is a policy denial. Every denial written since
    /// carries `code`, so no new data is ever classified by its reason text.
    pub(crate) fn of_legacy_row(policy_ids: &[String], reasons: &[String]) -> Self {
        let any_starts_with = |prefix: &str| reasons.iter().any(|r| r.starts_with(prefix));
        if !policy_ids.is_empty() {
            Self::PolicyDenied
        } else if any_starts_with(crate::policy::SEPARATION_REASON) {
            Self::EnvironmentSeparation
        } else if any_starts_with(APPROVER_DENIED_REASON) {
            Self::ApproverDenied
        } else {
            Self::PolicyDenied
        }
    }
}

/// Prefix of the reason recorded when an approver denies a request.
pub const APPROVER_DENIED_REASON: &str = "denied by approver";

/// Cedar's verdict on a request.
///
/// Its JSON form is tagged by `decision`; a denial is
/// `{"decision": "deny", "code": "<deny code>", "policy_ids": […], "reasons": […]}` (see
/// [`DenyCode`] for the codes). A stored denial without `code` predates the field and is
/// decoded by the legacy reason rule (`DenyCode::of_legacy_row`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Allowed by `policy_ids`; `max_ttl_secs` is the tightest `@max_ttl` among them.
    Allow {
        /// Determining permit policies.
        policy_ids: Vec<String>,
        /// Policy maximum TTL, if any permit declares `@max_ttl`.
        max_ttl_secs: Option<i64>,
    },
    /// Denied; `reasons` are human-readable (from `@reason` annotations or built in).
    Deny {
        /// Why, as a stable code (`code` in JSON).
        code: DenyCode,
        /// Determining policies (forbids), empty for default deny.
        policy_ids: Vec<String>,
        /// Human-readable reasons.
        reasons: Vec<String>,
    },
    /// Would be allowed once the named groups approve.
    StepUp {
        /// The step-up forbid policies that hold it back.
        policy_ids: Vec<String>,
        /// Groups and their quorum.
        groups: Vec<GroupQuorum>,
    },
}

/// [`Decision`] as read back: the same JSON, where a denial's `code` may be missing (rows
/// written before the field existed).
#[derive(Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
enum DecisionWire {
    Allow {
        policy_ids: Vec<String>,
        max_ttl_secs: Option<i64>,
    },
    Deny {
        #[serde(default)]
        code: Option<DenyCode>,
        policy_ids: Vec<String>,
        reasons: Vec<String>,
    },
    StepUp {
        policy_ids: Vec<String>,
        groups: Vec<GroupQuorum>,
    },
}

impl<'de> Deserialize<'de> for Decision {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match DecisionWire::deserialize(d)? {
            DecisionWire::Allow {
                policy_ids,
                max_ttl_secs,
            } => Decision::Allow {
                policy_ids,
                max_ttl_secs,
            },
            DecisionWire::Deny {
                code,
                policy_ids,
                reasons,
            } => Decision::Deny {
                code: code.unwrap_or_else(|| DenyCode::of_legacy_row(&policy_ids, &reasons)),
                policy_ids,
                reasons,
            },
            DecisionWire::StepUp { policy_ids, groups } => Decision::StepUp { policy_ids, groups },
        })
    }
}

impl Decision {
    /// `allow`, `deny` or `step_up`.
    pub fn kind(&self) -> &'static str {
        match self {
            Decision::Allow { .. } => "allow",
            Decision::Deny { .. } => "deny",
            Decision::StepUp { .. } => "step_up",
        }
    }
    /// The determining policy ids.
    pub fn policy_ids(&self) -> &[String] {
        match self {
            Decision::Allow { policy_ids, .. }
            | Decision::Deny { policy_ids, .. }
            | Decision::StepUp { policy_ids, .. } => policy_ids,
        }
    }
    /// Why a call that cannot wait for approval is refused: the deny code of a denial,
    /// [`DenyCode::StepUpRequired`] for a step-up, `None` when allowed.
    pub fn deny_code(&self) -> Option<DenyCode> {
        match self {
            Decision::Allow { .. } => None,
            Decision::Deny { code, .. } => Some(*code),
            Decision::StepUp { .. } => Some(DenyCode::StepUpRequired),
        }
    }
}

/// A task's ask for `actions` on a `resource` for a TTL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AccessRequest {
    /// `req_<uuid>`.
    pub id: String,
    /// Task it belongs to.
    pub task_id: String,
    /// Workload principal that asked.
    pub principal_id: String,
    /// Resource id.
    pub resource_id: String,
    /// Actions, sorted and de-duplicated.
    pub actions: Vec<String>,
    /// TTL asked for (seconds), after defaulting.
    pub ttl_secs: i64,
    /// The agent's justification (bounded).
    pub justification: String,
    /// State.
    pub state: RequestState,
    /// The latest decision.
    pub decision: Decision,
    /// SHA-256 (hex) over the canonical request (see [`crate::digest`]); approvals bind to it.
    pub digest: String,
    /// Source address of the requester, if known.
    pub source_ip: Option<String>,
    /// When it was made.
    pub created_at_unix_secs: i64,
    /// Pending/approved requests expire at this time.
    pub expires_at_unix_secs: i64,
    /// Lease minted for it, once granted.
    pub lease_id: Option<String>,
    /// Humans who approved, in order.
    pub approvers: Vec<String>,
    /// Provider-specific, non-secret parameters of the request (an SSH public key, an X.509
    /// public key or CSR). Part of the digest, so approvers approve this exact key; used again
    /// when the approved request is claimed and when the lease is renewed.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub params: serde_json::Value,
    /// Approver groups and quorum the first decision asked for (empty unless it was step-up).
    /// Kept when later decisions replace `decision`, so renewals and policy reloads can rebuild
    /// the approval context.
    #[serde(default)]
    pub step_up_groups: Vec<GroupQuorum>,
    /// Optimistic-concurrency version.
    pub version: i64,
}

/// An approver's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Approve.
    Approve,
    /// Deny.
    Deny,
}

/// A human's verdict on one pending request, bound to its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Approval {
    /// `apr_<uuid>`.
    pub id: String,
    /// Request id.
    pub request_id: String,
    /// Digest the approver saw and approved; must equal the request's.
    pub digest: String,
    /// Human id.
    pub approver: String,
    /// Groups of the approver that this vote counts for.
    pub groups: Vec<String>,
    /// Verdict.
    pub verdict: Verdict,
    /// Reason given.
    pub reason: String,
    /// When.
    pub created_at_unix_secs: i64,
}

/// Lifecycle of a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    /// Recorded before an external mint (providers with external state), so a crash mid-mint
    /// leaves a record the reaper revokes.
    Issuing,
    /// Live.
    Active,
    /// Revocation requested; being retried with backoff.
    Revoking,
    /// Revocation has failed repeatedly; still retried, and alerted.
    RevokeFailed,
    /// Revoked (or expired and cleaned up).
    Revoked,
}

impl LeaseState {
    /// Stable string form.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Issuing => "issuing",
            LeaseState::Active => "active",
            LeaseState::Revoking => "revoking",
            LeaseState::RevokeFailed => "revoke_failed",
            LeaseState::Revoked => "revoked",
        }
    }
    /// Whether the credential may still work at the target (anything but `Revoked`).
    pub fn is_live(self) -> bool {
        !matches!(self, LeaseState::Revoked)
    }
}

/// The broker's record of a credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Lease {
    /// `lease_<uuid>`; also the JWT `jti`.
    pub id: String,
    /// Task.
    pub task_id: String,
    /// Request it was minted for.
    pub request_id: String,
    /// Resource.
    pub resource_id: String,
    /// Provider kind (the resource's `kind`; see [`ProviderKind`]).
    pub provider: String,
    /// Actions granted (the credential's scope).
    pub actions: Vec<String>,
    /// State.
    pub state: LeaseState,
    /// When minted.
    pub issued_at_unix_secs: i64,
    /// Current end of validity.
    pub expires_at_unix_secs: i64,
    /// No renewal passes this: min(issue + resource max TTL, issue + policy max TTL, task end).
    pub max_expires_at_unix_secs: i64,
    /// Renewals so far.
    pub renewals: u32,
    /// Provider's handle to revoke (never a secret).
    pub revocation_handle: String,
    /// Keyed HMAC (hex) of the current credential value, for introspection and leak lookup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_hmac: Option<String>,
    /// Why it was revoked.
    pub revoke_reason: Option<String>,
    /// Revocation attempts so far.
    pub revoke_attempts: u32,
    /// Next revocation attempt.
    pub next_revoke_at_unix_secs: Option<i64>,
    /// Last revocation error (secret-free).
    pub last_revoke_error: Option<String>,
    /// When revocation completed.
    pub revoked_at_unix_secs: Option<i64>,
    /// When revocation was decided (milliseconds since the epoch): the start of the
    /// revocation latency `latch_revocation_duration_seconds` measures. Absent on leases
    /// revoked before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_requested_at_unix_millis: Option<i64>,
    /// Sender constraint and delegation of the credential (RFC 9449 / RFC 8693); kept so a
    /// renewal mints a credential bound the same way.
    #[serde(default, skip_serializing_if = "TokenBinding::is_empty")]
    pub binding: TokenBinding,
    /// Optimistic-concurrency version.
    pub version: i64,
}

/// How a credential is bound to a key and on whose behalf it acts. Set by the broker from
/// verified inputs only (a checked DPoP proof, verified subject and actor tokens), never from
/// request parameters an agent chooses freely.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TokenBinding {
    /// RFC 7638 SHA-256 thumbprint (base64url) of the public key the credential is bound to:
    /// the JWT carries it as `cnf.jkt` (RFC 9449 §6.1), and every use needs a DPoP proof
    /// signed by that key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jkt: Option<String>,
    /// The actor (RFC 8693 §4.1 `act` claim), e.g. `{"sub": "...", "iss": "..."}`, when the
    /// credential was obtained by token exchange with an actor token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub act: Option<serde_json::Value>,
    /// Subject of the credential (JWT `sub`) when it is not the task's workload: the human a
    /// token exchange's `subject_token` proved, with the workload as actor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

impl TokenBinding {
    /// Nothing bound: a plain bearer credential of the task's workload.
    pub const NONE: Self = Self {
        jkt: None,
        act: None,
        subject: None,
    };

    /// Whether nothing is bound (a plain bearer credential of the task's workload).
    pub fn is_empty(&self) -> bool {
        self.jkt.is_none() && self.act.is_none() && self.subject.is_none()
    }
}

/// A credential as handed to the agent, once.
///
/// # Security
/// `secret` is a [`SecretString`]: its `Debug` is redacted and it is zeroized on drop. It is
/// never stored; only its keyed HMAC is.
#[derive(Debug, Clone)]
pub struct DeliveredCredential {
    /// Kind, e.g. `bearer_token`.
    pub kind: String,
    /// The credential value.
    pub secret: SecretString,
    /// Non-secret metadata (token type, audience, username for database roles, …).
    pub metadata: serde_json::Value,
}

/// One append-only record of something that happened. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditEvent {
    /// Sequence number assigned by the store (0 before it is stored; not part of the stored
    /// body, which the chain hash covers together with `seq`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seq: i64,
    /// `evt_<uuid>`.
    pub id: String,
    /// When.
    pub at_unix_secs: i64,
    /// Dotted kind, the string form of an [`AuditKind`] (`auth.succeeded`, `task.opened`,
    /// `credential.issued`, …; see its variants for the full list). A `String` so records from
    /// other versions still decode; see [`AuditKind`] for why.
    pub kind: String,
    /// Who acted (principal id, human id, or `latch` for the broker itself).
    pub actor: String,
    /// HTTP request id, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Task, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Access request, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_request_id: Option<String>,
    /// Lease, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<String>,
    /// Outcome (`ok`, `allow`, `deny`, `step_up`, an error code, …).
    pub outcome: String,
    /// Kind-specific details (policy ids, reasons, TTLs); never secrets.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub detail: serde_json::Value,
    /// Chain hash of the previous record (hex SHA-256; set when read from the store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_hash: Option<String>,
    /// Chain hash of this record (see [`crate::audit::chain_hash`]; set when read from the store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

#[allow(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference (pedantic lint, so not `expect`)"
)]
fn is_zero(v: &i64) -> bool {
    *v == 0
}

impl AuditEvent {
    /// A new event of `kind` at `at_unix_secs`; fill the ids with the builder methods.
    pub fn new(at_unix_secs: i64, kind: AuditKind, actor: &str, outcome: &str) -> Self {
        Self {
            seq: 0,
            id: new_id("evt"),
            at_unix_secs,
            kind: kind.as_str().to_owned(),
            actor: actor.to_owned(),
            request_id: None,
            task_id: None,
            access_request_id: None,
            lease_id: None,
            outcome: outcome.to_owned(),
            detail: serde_json::Value::Null,
            prev_hash: None,
            hash: None,
        }
    }
    /// True when this event's `kind` is `kind`'s string form.
    #[must_use]
    pub fn is(&self, kind: AuditKind) -> bool {
        self.kind == kind.as_str()
    }
    /// Sets the task id.
    pub fn task(mut self, id: &str) -> Self {
        self.task_id = Some(id.to_owned());
        self
    }
    /// Sets the access request id.
    pub fn access_request(mut self, id: &str) -> Self {
        self.access_request_id = Some(id.to_owned());
        self
    }
    /// Sets the lease id.
    pub fn lease(mut self, id: &str) -> Self {
        self.lease_id = Some(id.to_owned());
        self
    }
    /// Sets the detail object, without its `null` members: an absent member reads as `null`
    /// (`detail["x"]`), and the stored record is shorter (issue 19, storage per grant).
    pub fn detail(mut self, mut detail: serde_json::Value) -> Self {
        if let serde_json::Value::Object(members) = &mut detail {
            members.retain(|_, v| !v.is_null());
        }
        self.detail = detail;
        self
    }
}

/// Filter for listing audit events.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditFilter {
    /// Only this task.
    pub task_id: Option<String>,
    /// Only this lease.
    pub lease_id: Option<String>,
    /// Only this kind prefix (e.g. `credential.`).
    pub kind_prefix: Option<String>,
    /// Only this actor (principal or human id, `latch` for the broker).
    #[serde(default)]
    pub actor: Option<String>,
    /// Only events at or after this time.
    #[serde(default)]
    pub since_unix_secs: Option<i64>,
    /// Only events before this time.
    #[serde(default)]
    pub until_unix_secs: Option<i64>,
    /// Only events whose body contains this keyed credential HMAC (lowercase hex; see
    /// `latch audit find`).
    #[serde(default)]
    pub credential_hmac: Option<String>,
    /// Only events with `seq` greater than this (paging).
    pub after_seq: Option<i64>,
    /// At most this many (default 100, max 1000).
    pub limit: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored event leaves out what it does not have (absent ids, `null` detail members),
    /// reads back equal, and reads the same as the longer form older records have.
    #[test]
    fn audit_events_store_no_nulls_and_read_both_forms() {
        let e = AuditEvent::new(7, AuditKind::CredentialIssued, "wl", "ok")
            .task("task_1")
            .detail(serde_json::json!({"kind": "x", "cnf_jkt": null, "n": [null]}));
        let body = crate::audit::encode_event(&e).expect("encodes");
        assert!(!body.contains("null,") && !body.contains(":null"), "{body}");
        assert!(
            body.contains(r#""n":[null]"#),
            "only the detail's own members go: {body}"
        );
        let back: AuditEvent = serde_json::from_str(&body).expect("decodes");
        assert_eq!(back, e);
        assert!(back.detail["cnf_jkt"].is_null() && back.lease_id.is_none());
        let mut old: serde_json::Value = serde_json::from_str(&body).expect("json");
        old["lease_id"] = serde_json::Value::Null;
        old["detail"]["cnf_jkt"] = serde_json::Value::Null;
        let legacy: AuditEvent = serde_json::from_value(old).expect("legacy form decodes");
        assert!(legacy.lease_id.is_none() && legacy.detail["cnf_jkt"].is_null());
    }

    /// Every deny code a broker stores is written as `code` and comes back from the stored
    /// JSON; a legacy row without `code` still decodes to the code it was decided with.
    #[test]
    fn stored_denials_keep_their_code() {
        let cases = [
            (
                DenyCode::PolicyDenied,
                vec!["forbid-x".to_owned()],
                "forbidden by policy `forbid-x`".to_owned(),
            ),
            (
                DenyCode::PolicyDenied,
                vec![],
                "no policy permits `read` on `db` (default deny)".to_owned(),
            ),
            (
                DenyCode::EnvironmentSeparation,
                vec![],
                format!(
                    "{}: task environment `sandbox` …",
                    crate::policy::SEPARATION_REASON
                ),
            ),
            (
                DenyCode::ApproverDenied,
                vec![],
                format!("{APPROVER_DENIED_REASON} `bob`: no"),
            ),
        ];
        for (code, policy_ids, reason) in cases {
            let d = Decision::Deny {
                code,
                policy_ids,
                reasons: vec![reason],
            };
            let mut json = serde_json::to_value(&d).unwrap();
            assert_eq!(json["code"], serde_json::to_value(code).unwrap(), "{json}");
            let back: Decision = serde_json::from_value(json.clone()).unwrap();
            assert_eq!(back, d);
            assert_eq!(back.deny_code(), Some(code));
            // A row written before deny decisions carried `code`.
            json.as_object_mut().unwrap().remove("code");
            let legacy: Decision = serde_json::from_value(json).unwrap();
            assert_eq!(legacy, d);
        }
        // The stored code wins over the reason text: new data is never classified by prefix.
        let d = Decision::Deny {
            code: DenyCode::PolicyDenied,
            policy_ids: vec![],
            reasons: vec![format!("{}: quoted", crate::policy::SEPARATION_REASON)],
        };
        let back: Decision = serde_json::from_value(serde_json::to_value(&d).unwrap()).unwrap();
        assert_eq!(back.deny_code(), Some(DenyCode::PolicyDenied));
        assert_eq!(
            serde_json::to_value(DenyCode::EnvironmentSeparation).unwrap(),
            "environment_separation"
        );
        assert_eq!(
            serde_json::to_value(DenyCode::ApproverDenied).unwrap(),
            "approver_denied"
        );
        assert_eq!(DenyCode::ApproverDenied.as_str(), "policy_denied");
        assert_eq!(DenyCode::StepUpRequired.as_str(), "policy_denied");
        assert_eq!(
            DenyCode::EnvironmentSeparation.as_str(),
            "environment_separation"
        );
    }
}
