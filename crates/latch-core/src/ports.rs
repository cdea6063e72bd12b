//! The ports the broker talks through. Adapters live in other crates; `latch-server`'s
//! `startup.rs` is the one place that names concrete implementations.
//!
//! Modelled on rustls's provider traits: small object-safe traits, held as `Arc<dyn …>`.

use async_trait::async_trait;

use crate::audit::{AuditCheckpoint, AuditRecord};
use crate::error::{ApiError, ErrorCode};
use crate::model::{
    AccessRequest, Approval, AuditEvent, AuditFilter, ConsoleSession, DeliveredCredential, Lease,
    Principal, Resource, Task, TokenBinding,
};

/// Verifies a bearer token and maps it onto a principal (workload or human).
///
/// # Errors
/// An [`ApiError`] with an authentication code (`token_malformed`, `alg_not_allowed`,
/// `unknown_kid`, `token_expired`, …). The message never contains the token.
#[async_trait]
pub trait IdentityVerifier: Send + Sync + 'static {
    /// Verifies `token` (a compact JWS) and returns the principal it proves.
    async fn verify(&self, token: &str) -> Result<Principal, ApiError>;

    /// Whether `token` verified recently and is still within its cached validity: a constant
    /// time digest lookup, no parsing or signature check. Lets a rate-limited source's callers
    /// that already proved who they are go on while new, unverified tokens from it are refused
    /// (a flood of bad tokens from a shared NAT address must not lock out its good agents).
    /// Default: `false`.
    fn recently_verified(&self, _token: &str) -> bool {
        false
    }

    /// The principal an X.509-SVID proves (SPIFFE X.509-SVID specification), presented as the
    /// client certificate of a mutual-TLS connection whose chain the listener already verified
    /// to the authorities of `spiffe_id`'s trust domain. `not_after_unix_secs` is the leaf's
    /// `notAfter`. Default: no X.509-SVIDs are accepted.
    ///
    /// # Security
    /// Only the listener may call this, with what its certificate verifier checked; a SPIFFE ID
    /// from anywhere else (a header, a body) is never a credential.
    ///
    /// # Errors
    /// `unknown_issuer` when no `kind = "spiffe"` issuer is configured for the trust domain;
    /// `spiffe_id_invalid` for an ID that names no workload.
    fn x509_svid_principal(
        &self,
        _spiffe_id: &str,
        _not_after_unix_secs: i64,
    ) -> Result<Principal, ApiError> {
        Err(ApiError::new(
            ErrorCode::UnknownIssuer,
            "this broker accepts no x509-svids",
        ))
    }
}

/// What a provider is asked to mint.
#[derive(Debug)]
pub struct MintRequest<'a> {
    /// Lease id the credential belongs to (JWT `jti`, role-name component, cert key id, …).
    pub lease_id: &'a str,
    /// The task.
    pub task: &'a Task,
    /// Workload principal id (JWT `sub`).
    pub principal_id: &'a str,
    /// The resource.
    pub resource: &'a Resource,
    /// Actions granted (sorted).
    pub actions: &'a [String],
    /// Validity start.
    pub issued_at_unix_secs: i64,
    /// Validity end (already bounded by the TTL rules).
    pub expires_at_unix_secs: i64,
    /// Provider-specific, non-secret request parameters (e.g. an SSH public key).
    pub params: &'a serde_json::Value,
    /// Key binding and delegation, from verified inputs only (see [`TokenBinding`]).
    pub binding: &'a TokenBinding,
}

/// A freshly minted credential.
#[derive(Debug)]
pub struct Minted {
    /// The credential to hand to the agent once.
    pub credential: DeliveredCredential,
    /// What the provider needs later to revoke it (never a secret).
    pub revocation_handle: String,
}

/// A provider failure. `retryable` says whether trying again later may succeed
/// (the target was unreachable) or not (the request itself is unacceptable).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    /// Secret-free, lowercase description.
    pub message: String,
    /// Whether a retry may succeed.
    pub retryable: bool,
    /// Whether the request itself (its `params`) is at fault: the broker answers 400
    /// `invalid_request` instead of 502 `provider_failed`.
    pub invalid_request: bool,
    /// Whether the target did not answer at all (refused, reset, timed out): the broker then
    /// treats the target as down until a probe succeeds. An error the target answered with
    /// (a refused statement) is not an outage.
    pub unreachable: bool,
}

impl ProviderError {
    /// A retryable failure (target unreachable, timeout).
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
            invalid_request: false,
            unreachable: false,
        }
    }
    /// The target did not answer (connection refused or dropped, timed out): retryable, and an
    /// outage of the target.
    pub fn unreachable(message: impl Into<String>) -> Self {
        Self {
            unreachable: true,
            ..Self::retryable(message)
        }
    }
    /// A permanent failure (bad parameters).
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
            invalid_request: false,
            unreachable: false,
        }
    }
    /// A permanent failure caused by the request (malformed, missing or unacceptable `params`,
    /// such as a weak key): mapped to 400 `invalid_request`.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
            invalid_request: true,
            unreachable: false,
        }
    }
}

/// Mints and revokes one kind of credential.
///
/// # Contract
/// * `mint` returns a credential valid no longer than `expires_at_unix_secs`.
/// * `revoke` is idempotent: revoking something already gone succeeds. A retryable error makes
///   the broker retry with backoff until it succeeds; the lease stays visible meanwhile.
/// * Providers whose credentials live in an external system (database roles, ACL users) return
///   `true` from [`has_external_state`](Self::has_external_state): the broker then records the
///   lease (`issuing`) before minting, so a crash mid-mint leaves something to revoke.
#[async_trait]
pub trait CredentialProvider: Send + Sync + 'static {
    /// Provider kind as named in resource configuration (`jwt`, `postgres`, …).
    fn kind(&self) -> &str;

    /// Whether minting creates state outside the broker.
    fn has_external_state(&self) -> bool {
        false
    }

    /// Checks a resource's provider settings at start, so a bad configuration stops the server.
    ///
    /// # Errors
    /// A permanent [`ProviderError`] naming the problem.
    fn check_resource(&self, _resource: &Resource) -> Result<(), ProviderError> {
        Ok(())
    }

    /// Mints a credential.
    ///
    /// # Errors
    /// [`ProviderError`]; nothing is left behind on error.
    async fn mint(&self, req: &MintRequest<'_>) -> Result<Minted, ProviderError>;

    /// Renews: by default mints a fresh credential for the same lease; providers that can extend
    /// in place (e.g. `ALTER ROLE … VALID UNTIL`) override this.
    ///
    /// # Errors
    /// [`ProviderError`].
    async fn renew(&self, _lease: &Lease, req: &MintRequest<'_>) -> Result<Minted, ProviderError> {
        self.mint(req).await
    }

    /// Revokes the credential of `lease` (idempotent).
    ///
    /// # Errors
    /// [`ProviderError`]; retryable ones are retried with backoff.
    async fn revoke(&self, lease: &Lease) -> Result<(), ProviderError>;

    /// Checks that `resource`'s target answers (connect and one trivial command), so the broker
    /// learns that an unhealthy target is back and resumes its parked revocations. The broker
    /// bounds the call with its target deadline. The default, for providers without external
    /// state, always succeeds.
    ///
    /// # Errors
    /// A retryable [`ProviderError`] while the target does not answer.
    async fn probe(&self, _resource: &Resource) -> Result<(), ProviderError> {
        Ok(())
    }
}

/// The public side of a certificate authority that signs credentials (OpenSSH user CA, X.509
/// client CA): what relying parties fetch to trust its certificates and to learn revocations.
/// Served at `/v1/ssh/*` and `/v1/x509/*`.
#[async_trait]
pub trait CaPublisher: Send + Sync + 'static {
    /// The CA's published public material, current key first, then rotated-out keys whose
    /// certificates may still be valid (OpenSSH public keys one per line, or PEM certificates).
    fn ca_public(&self) -> String;

    /// The current revocation list, as served (an OpenSSH KRL in binary, or PEM CRLs).
    ///
    /// # Errors
    /// A retryable [`ProviderError`] when the store cannot be read; a permanent one when the
    /// list cannot be built or signed.
    async fn revocation_list(&self) -> Result<Vec<u8>, ProviderError>;
}

/// One row change inside a [`WriteBatch`]. Updates are compare-and-set: the row is changed only
/// if its stored `version` equals the new value's `version - 1`.
#[derive(Debug, Clone)]
pub enum Write {
    /// Insert a task.
    InsertTask(Task),
    /// Compare-and-set update of a task.
    UpdateTask(Task),
    /// Writes nothing; fails the batch with a conflict unless the task is `open` at exactly
    /// `version`. Grants carry it so a credential can never be recorded into a task that a
    /// concurrent call has just ended (ending a task bumps its version).
    RequireTaskOpen {
        /// Task id.
        task_id: String,
        /// The version the caller read.
        version: i64,
    },
    /// Insert an access request.
    InsertRequest(AccessRequest),
    /// Compare-and-set update of an access request.
    UpdateRequest(AccessRequest),
    /// Insert an approval (unique per request and approver).
    InsertApproval(Approval),
    /// Insert a lease.
    InsertLease(Lease),
    /// Compare-and-set update of a lease.
    UpdateLease(Lease),
    /// Insert a kill-switch freeze.
    InsertFreeze(crate::freeze::Freeze),
    /// Compare-and-set update of a freeze (lifting it).
    UpdateFreeze(crate::freeze::Freeze),
    /// Insert an outbox row (a notification to deliver), in the batch of the decision it
    /// tells of.
    InsertNotification(crate::notify::Notification),
    /// Compare-and-set update of an outbox row (its delivery outcome); releases its claim.
    UpdateNotification(crate::notify::Notification),
    /// Insert an approval-console session (keyed by the HMAC of its id, never the id).
    InsertConsoleSession(ConsoleSession),
    /// Delete an approval-console session (sign-out); deleting one that is gone is no error.
    DeleteConsoleSession {
        /// The HMAC (hex) of the session id.
        id_hmac: String,
    },
    /// Insert an OAuth authorization server record (a registered client, a grant, a code or
    /// token stored as its HMAC); an existing key is a conflict.
    InsertOAuth(crate::oauth_grant::OAuthRecord),
    /// Compare-and-set update of an OAuth record (a grant revoked, a code or refresh token used).
    UpdateOAuth(crate::oauth_grant::OAuthRecord),
    /// Adds to counters (a task's history, budgets; see [`crate::history`]), in the commit of
    /// what they count. Fails the batch with [`StoreError::LimitReached`] when an increment
    /// would pass its cap. Names are distinct within one write.
    Count(Vec<crate::history::CounterDelta>),
    /// Writes nothing; fails the batch with [`StoreError::HistoryMoved`] unless the counter holds
    /// exactly `equals` (a missing row holds 0). Reads under a share lock where the backend
    /// locks rows, so a concurrent increment of it commits before or after this batch, never
    /// unseen beside it. Guards a decision against a concurrent change of the task's history.
    RequireCounter {
        /// Task or workload.
        scope: crate::history::CounterScope,
        /// Task id or workload id.
        subject: String,
        /// Counter name.
        name: String,
        /// The count the decision read.
        equals: i64,
    },
    /// Writes nothing; fails the batch with [`StoreError::LimitReached`] (counter `live`)
    /// unless fewer than `limit` leases of the scope are live (`issuing` or `active`, expiring
    /// after `now_unix_secs`). Checked under a lock on the scope's `live` counter row, so two
    /// replicas granting at once cannot both pass. Put it before the lease insert.
    RequireLiveBelow {
        /// Task (its leases) or workload (the leases of all its tasks).
        scope: crate::history::CounterScope,
        /// Task id or workload id.
        subject: String,
        /// Most live leases allowed before this grant.
        limit: i64,
        /// Now (Unix seconds).
        now_unix_secs: i64,
    },
    /// Insert the record of a received Security Event Token (its issuer and `jti`); an
    /// existing key (a replay) is a conflict.
    InsertReceivedSet(crate::ssf::ReceivedSetRecord),
}

/// State changes and the audit events that describe them, committed atomically: all or none.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    /// Row changes, applied in order.
    pub writes: Vec<Write>,
    /// Audit events, appended in order.
    pub audit: Vec<AuditEvent>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a write.
    pub fn write(mut self, w: Write) -> Self {
        self.writes.push(w);
        self
    }
    /// Adds an audit event.
    pub fn audit(mut self, e: AuditEvent) -> Self {
        self.audit.push(e);
        self
    }
}

/// Store failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A compare-and-set failed or a unique key exists; nothing was written.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The store failed or did not answer within its deadline; nothing was written.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A write's commit was sent but its answer was lost (the connection broke, or the
    /// deadline passed, during `COMMIT`): the batch may or may not be durable. Only
    /// [`Store::apply`] returns it; the broker then re-reads what the batch wrote before
    /// answering, so a write that committed is never reported as failed. Answered like
    /// [`StoreError::Unavailable`] (`store_unavailable`) when the re-read cannot tell.
    #[error("store unavailable, outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// A [`Write::Count`] increment would pass its cap, or a [`Write::RequireLiveBelow`] found
    /// the limit reached; nothing was written. Carries the scope and counter name.
    #[error("limit reached: {} counter `{}`", .0.as_str(), .1)]
    LimitReached(crate::history::CounterScope, String),
    /// A [`Write::RequireCounter`] found its counter moved: the history a decision read
    /// changed before the commit; nothing was written. Decide again.
    #[error("history changed: {0}")]
    HistoryMoved(String),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => ApiError::new(crate::ErrorCode::Conflict, m),
            StoreError::Unavailable(m) => ApiError::new(crate::ErrorCode::StoreUnavailable, m),
            StoreError::OutcomeUnknown(m) => ApiError::new(
                crate::ErrorCode::StoreUnavailable,
                format!("{m}; the change may have been applied: read it back before retrying"),
            ),
            StoreError::HistoryMoved(m) => ApiError::new(crate::ErrorCode::HistoryChanged, m),
            StoreError::LimitReached(scope, name) => ApiError::new(
                crate::ErrorCode::BudgetExceeded,
                format!("{} budget reached (counter `{name}`)", scope.as_str()),
            ),
        }
    }
}

/// Counts of live state at one moment, for the gauges of `/metrics`: read on demand, never
/// kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Census {
    /// Tasks in state `open`.
    pub open_tasks: i64,
    /// Leases `issuing` or `active`: credentials that may work at their target.
    pub live_leases: i64,
    /// Leases `revoking`: revocation committed, not yet confirmed by the target (retried).
    pub revoking_leases: i64,
    /// Requests `pending`: waiting for a human's step-up approval.
    pub pending_requests: i64,
    /// Approver notifications not yet delivered (retried with backoff).
    pub pending_notifications: i64,
    /// Leases `revoke_failed`: revocation failed `revoke_alert_after` times and is still
    /// retried.
    pub revoke_failed_leases: i64,
    /// Leases `revoking` or `revoke_failed` whose revocation failed at least once (waiting for
    /// a retry).
    pub retrying_revocations: i64,
    /// Notifications `pending` whose delivery failed at least once (waiting for a retry).
    pub retrying_notifications: i64,
}

/// What one pass of [`Store::prune_ended_tasks`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PruneReport {
    /// Tasks deleted (with everything below).
    pub tasks: u64,
    /// Their requests (and the approvals and delivered notifications of those).
    pub requests: u64,
    /// Their leases, every one `revoked`.
    pub leases: u64,
}

/// Durable state. Implementations: SQLite (embedded default), PostgreSQL (replicas).
///
/// Every state change goes through [`apply`](Self::apply) together with its audit events.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies `batch` atomically and returns the sequence numbers given to its audit events.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when a compare-and-set or unique key fails; nothing is written.
    /// [`StoreError::Unavailable`] when the store failed before the commit (nothing is
    /// written); [`StoreError::OutcomeUnknown`] when it failed during the commit.
    async fn apply(&self, batch: WriteBatch) -> Result<Vec<i64>, StoreError>;
    /// A task by id.
    async fn task(&self, id: &str) -> Result<Option<Task>, StoreError>;
    /// The counters of one scope and subject (a task's history, a workload's usage), in name
    /// order.
    async fn counters(
        &self,
        scope: crate::history::CounterScope,
        subject: &str,
    ) -> Result<Vec<crate::history::CounterRow>, StoreError>;
    /// Live leases (`issuing` or `active`, expiring after `now_unix_secs`) of a task or of
    /// all tasks of a workload.
    async fn live_lease_count(
        &self,
        scope: crate::history::CounterScope,
        subject: &str,
        now_unix_secs: i64,
    ) -> Result<i64, StoreError>;
    /// Tasks opened by `owner_id`, newest first.
    async fn tasks_by_owner(&self, owner_id: &str, limit: u32) -> Result<Vec<Task>, StoreError>;
    /// Open tasks whose `expires_at_unix_secs <= now`.
    async fn expired_open_tasks(
        &self,
        now_unix_secs: i64,
        limit: u32,
    ) -> Result<Vec<Task>, StoreError>;
    /// An access request by id.
    async fn request(&self, id: &str) -> Result<Option<AccessRequest>, StoreError>;
    /// Requests in state `pending`, oldest first.
    async fn pending_requests(&self, limit: u32) -> Result<Vec<AccessRequest>, StoreError>;
    /// Pending or approved requests whose `expires_at_unix_secs <= now`.
    async fn expired_requests(
        &self,
        now_unix_secs: i64,
        limit: u32,
    ) -> Result<Vec<AccessRequest>, StoreError>;
    /// The `pending` and `approved` requests of a task (those its end must close), oldest
    /// first.
    async fn open_requests_by_task(&self, task_id: &str) -> Result<Vec<AccessRequest>, StoreError>;
    /// Approvals recorded for a request, in order.
    async fn approvals(&self, request_id: &str) -> Result<Vec<Approval>, StoreError>;
    /// A lease by id.
    async fn lease(&self, id: &str) -> Result<Option<Lease>, StoreError>;
    /// Leases of a task.
    async fn leases_by_task(&self, task_id: &str) -> Result<Vec<Lease>, StoreError>;
    /// Open tasks with id greater than `after_id`, ordered by id (operators' paging).
    async fn open_tasks(&self, after_id: &str, limit: u32) -> Result<Vec<Task>, StoreError>;
    /// Leases that may still work (`issuing` or `active`) with id greater than `after_id`,
    /// ordered by id (operators' paging, the kill switch).
    async fn live_leases(&self, after_id: &str, limit: u32) -> Result<Vec<Lease>, StoreError>;
    /// Every active freeze, oldest first, from a fresh read: it must not be served from a cache
    /// that can miss another replica's write (see [`recent_active_freezes`] and
    /// [`active_freezes_after`] for the reads that may be).
    ///
    /// [`recent_active_freezes`]: Self::recent_active_freezes
    /// [`active_freezes_after`]: Self::active_freezes_after
    async fn active_freezes(&self) -> Result<Vec<crate::freeze::Freeze>, StoreError>;
    /// The active freezes from a read that may be a little older than the call (PostgreSQL:
    /// the one the replica's latest group commit made, while it is at most
    /// 250 ms old). For letting a grant through early only: the broker confirms a freeze it
    /// finds here with a fresh read before refusing, and checks the grant again after its
    /// commit with [`active_freezes_after`](Self::active_freezes_after). By default a fresh
    /// read, [`active_freezes`](Self::active_freezes).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the store cannot be read.
    async fn recent_active_freezes(&self) -> Result<Vec<crate::freeze::Freeze>, StoreError> {
        self.active_freezes().await
    }
    /// The active freezes from a read ordered after the commit that gave an audit event `seq`
    /// (one of this store's own [`apply`](Self::apply) answers): it holds every freeze whose
    /// engagement committed before that commit, and a freeze it misses committed after it, so
    /// the engagement's sweep of live leases sees what that commit wrote. This is the check
    /// that keeps a grant racing a kill switch from outliving it. By default a fresh read,
    /// which is such a read.
    ///
    /// # Security
    /// A store that answers from anything but a fresh read must prove the ordering (the
    /// PostgreSQL store reads the freezes inside a group commit, under the lock on the audit
    /// chain head that every engagement also takes).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the store cannot be read.
    async fn active_freezes_after(
        &self,
        seq: i64,
    ) -> Result<Vec<crate::freeze::Freeze>, StoreError> {
        let _ = seq;
        self.active_freezes().await
    }
    /// A freeze by id.
    async fn freeze(&self, id: &str) -> Result<Option<crate::freeze::Freeze>, StoreError>;
    /// Active leases with id greater than `after_id`, ordered by id (paging).
    async fn active_leases(&self, after_id: &str, limit: u32) -> Result<Vec<Lease>, StoreError>;
    /// The tasks of the leases [`active_leases`](Self::active_leases) returns for the same
    /// arguments, each once, in no particular order: one read instead of one per task when
    /// the live-lease index is loaded. A task missing from the answer (a store without this
    /// read, or a lease added between the two reads) is read with [`task`](Self::task).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the store cannot be read.
    async fn active_lease_tasks(
        &self,
        after_id: &str,
        limit: u32,
    ) -> Result<Vec<Task>, StoreError> {
        let _ = (after_id, limit);
        Ok(Vec::new())
    }
    /// Leases needing work from the reaper: active and expired, issuing for longer than
    /// `issuing_grace_secs`, or revoking / revoke_failed with a due next attempt.
    async fn due_leases(
        &self,
        now_unix_secs: i64,
        issuing_grace_secs: i64,
        limit: u32,
    ) -> Result<Vec<Lease>, StoreError>;
    /// Claims leases needing work from the reaper (as [`due_leases`](Self::due_leases)) for
    /// `owner` until `claim_until_unix_secs`, and returns them, oldest due first.
    ///
    /// # Contract
    /// A lease whose claim has not expired (`claim_until > now`, whoever the owner) is not
    /// returned, so replicas sharing a store split the work; once a claim expires (its replica
    /// died mid-pass) any owner may claim the lease again. Every
    /// [`Write::UpdateLease`] clears the claim. Claims only spread work: a revocation is still
    /// recorded by a compare-and-set update, so it happens at most once even if two owners
    /// work on the same lease.
    ///
    /// The default, for stores used by a single process, returns the due leases unclaimed.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn claim_due_leases(
        &self,
        now_unix_secs: i64,
        issuing_grace_secs: i64,
        owner: &str,
        claim_until_unix_secs: i64,
        limit: u32,
    ) -> Result<Vec<Lease>, StoreError> {
        let _ = (owner, claim_until_unix_secs);
        self.due_leases(now_unix_secs, issuing_grace_secs, limit)
            .await
    }
    /// Claims the leases of resource `resource_id` whose revocation is pending (`revoking`,
    /// `revoke_failed`), whatever their next attempt time, for `owner` until
    /// `claim_until_unix_secs`, and returns them (by id, at most `limit`): what a target that
    /// answers again must revoke at once.
    ///
    /// # Contract
    /// As [`claim_due_leases`](Self::claim_due_leases): a lease claimed by another owner whose
    /// claim has not expired at `now_unix_secs` is not returned; this owner's own claims are.
    /// Stores used by a single process may return them unclaimed.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn claim_pending_revocations(
        &self,
        now_unix_secs: i64,
        resource_id: &str,
        owner: &str,
        claim_until_unix_secs: i64,
        limit: u32,
    ) -> Result<Vec<Lease>, StoreError>;
    /// Claims outbox rows that are due (`pending`, `next_attempt_at_unix_secs <= now`) for
    /// `owner` until `claim_until_unix_secs`, and returns them, oldest due first.
    ///
    /// # Contract
    /// As [`claim_due_leases`](Self::claim_due_leases): a row claimed by another owner whose
    /// claim has not expired is not returned, so replicas split the work; every
    /// [`Write::UpdateNotification`] releases the claim. The outcome is still recorded by a
    /// compare-and-set update, so two owners cannot both record one attempt. Stores used by a
    /// single process may return the due rows unclaimed. The default (a store without an
    /// outbox) returns none.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn claim_due_notifications(
        &self,
        now_unix_secs: i64,
        owner: &str,
        claim_until_unix_secs: i64,
        limit: u32,
    ) -> Result<Vec<crate::notify::Notification>, StoreError> {
        let _ = (now_unix_secs, owner, claim_until_unix_secs, limit);
        Ok(Vec::new())
    }
    /// The outbox rows written for one access request, oldest first (none by default).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn notifications_for_request(
        &self,
        request_id: &str,
    ) -> Result<Vec<crate::notify::Notification>, StoreError> {
        let _ = request_id;
        Ok(Vec::new())
    }
    /// Leases whose revocation was requested or done (`revoking`, `revoke_failed`, `revoked`)
    /// and whose `expires_at_unix_secs > now_unix_secs`, with id greater than `after_id`,
    /// ordered by id (paging). Certificate providers build their revocation lists (OpenSSH KRL,
    /// X.509 CRL) from these: a certificate stays listed until it would have expired anyway.
    async fn revoked_unexpired_leases(
        &self,
        now_unix_secs: i64,
        after_id: &str,
        limit: u32,
    ) -> Result<Vec<Lease>, StoreError>;
    /// The lease whose current credential has this keyed HMAC.
    async fn lease_by_credential_hmac(&self, hmac_hex: &str) -> Result<Option<Lease>, StoreError>;
    /// Audit events matching `filter`, in sequence order.
    async fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError>;
    /// Stored audit records (bodies byte for byte, with their chain hashes) with
    /// `seq > after_seq`, in order, at most `limit`.
    ///
    /// # Contract
    /// [`apply`](Self::apply) gives audit events the sequence numbers 1, 2, 3, … in commit order,
    /// without gaps, and stores each with `prev_hash` and
    /// [`chain_hash`](crate::audit::chain_hash)`(prev_hash, seq, body)`, in the same transaction
    /// as the state change, serialised across every writer (process or replica).
    async fn audit_records(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError>;
    /// `(seq, hash)` of the last audit record, or `None` for an empty log.
    async fn audit_head(&self) -> Result<Option<(i64, String)>, StoreError>;
    /// Stores a signed checkpoint (a second one for the same `seq` is ignored).
    async fn put_checkpoint(&self, cp: &AuditCheckpoint) -> Result<(), StoreError>;
    /// Checkpoints with `seq > after_seq`, in order, at most `limit`.
    async fn checkpoints(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditCheckpoint>, StoreError>;
    /// The checkpoint with the highest `seq`, if any.
    async fn last_checkpoint(&self) -> Result<Option<AuditCheckpoint>, StoreError>;
    /// The last `seq` the named audit sink delivered (0 if none).
    async fn sink_cursor(&self, sink: &str) -> Result<i64, StoreError>;
    /// Records that the named audit sink delivered everything up to `seq`.
    async fn set_sink_cursor(&self, sink: &str, seq: i64) -> Result<(), StoreError>;
    /// A stored (already encrypted) key blob by name.
    async fn key_blob(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores a key blob unless one exists; returns the stored blob (existing or new).
    async fn put_key_blob_if_absent(&self, name: &str, blob: &[u8]) -> Result<Vec<u8>, StoreError>;
    /// Cheap health check.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Counts of open tasks, live and revoking leases, pending requests and undelivered
    /// notifications, and the revocations and notifications waiting for a retry ([`Census`]),
    /// read in one statement.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`]; a store that keeps no such state answers it (the
    /// default).
    async fn census(&self) -> Result<Census, StoreError> {
        Err(StoreError::Unavailable("this store keeps no census".into()))
    }
    /// The approval-console session whose id has HMAC `id_hmac` (hex), expired or not.
    ///
    /// Stores that keep no console sessions answer `None` (the default).
    async fn console_session(&self, _id_hmac: &str) -> Result<Option<ConsoleSession>, StoreError> {
        Ok(None)
    }
    /// The OAuth authorization server record stored under `key`
    /// ([`crate::oauth_grant::OAuthRecord::key`]), expired or not.
    ///
    /// Stores that keep no such records answer `None` (the default).
    async fn oauth_record(
        &self,
        _key: &str,
    ) -> Result<Option<crate::oauth_grant::OAuthRecord>, StoreError> {
        Ok(None)
    }
    /// Deletes the console sessions that expired before `now_unix_secs`; returns how many.
    async fn purge_console_sessions(&self, _now_unix_secs: i64) -> Result<u64, StoreError> {
        Ok(0)
    }
    /// Deletes up to `limit` ended tasks whose expiry is before `expired_before_unix_secs`,
    /// with their requests, approvals, notifications, leases and per-task counters, in one
    /// transaction. A task is only taken when it is not `open`, every one of its leases is
    /// `revoked`, no notification of its requests is still `pending`, none of its audit
    /// records comes after `settled_through_seq` (what a reader of the trail that looks rows
    /// up, the Shared Signals transmitter, has not passed yet), and it ended (its
    /// `ended_at_unix_secs`, when set) before `expired_before_unix_secs` too: nothing that
    /// still needs revoking, delivering or transmitting is lost. When anything is deleted,
    /// `record` is appended in the same transaction with the deleted task ids and counts as
    /// its detail, so the trail says what went, and it is otherwise never touched.
    ///
    /// Stores that keep no such state delete nothing (the default).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`]; nothing is deleted then.
    async fn prune_ended_tasks(
        &self,
        _bounds: (i64, i64, u32),
        _record: AuditEvent,
    ) -> Result<PruneReport, StoreError> {
        Ok(PruneReport::default())
    }
    /// Deletes the audit records before `cut.seq` in one transaction, under the chain head's
    /// lock, after checking that they are still the chain that was written (each hash over its
    /// record, each linked to the one before, every stored checkpoint among them matching) and
    /// that the record at `cut.seq` has `cut.hash`. That record stays as the start of the
    /// stored chain: its previous hash is stored with it first, so it still verifies, and
    /// `cut` (a checkpoint signed by audit retention, [`crate::audit::CutSigner`]) is stored as
    /// its checkpoint. `record` is appended with the detail `before_seq`, `anchor_hash`,
    /// `first_seq`, `records` and `cut`, so the chain itself says where it was cut. Returns how
    /// many records went; 0 (and nothing written) when none is older than the cut.
    ///
    /// The caller picks the cut: records every audit sink and every other reader of the trail
    /// has passed. Stores that keep no audit trail delete nothing (the default).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] with `audit chain alarm` when what would go is not the chain
    /// as written, or the record at the cut does not match it; also when the cut is more than
    /// 50,000 records past the oldest, or the store fails. Nothing is deleted then.
    ///
    /// # Security
    /// Only a prefix is ever deleted, only after it was checked, and only up to a cut the
    /// broker signed, so `latch audit verify` checks what is kept from that cut on and reports
    /// any other missing start.
    async fn prune_audit_before(
        &self,
        _cut: &crate::audit::AuditCheckpoint,
        _record: AuditEvent,
    ) -> Result<u64, StoreError> {
        Ok(0)
    }
    /// Deletes the received Security Event Token records ([`Write::InsertReceivedSet`]) that
    /// expired before `now_unix_secs`; returns how many. Stores that keep none answer 0.
    async fn purge_received_sets(&self, _now_unix_secs: i64) -> Result<u64, StoreError> {
        Ok(0)
    }
}

// ------------------------------------------------------------------ store capabilities

/// A use-once cache shared by every replica (for example DPoP proof `jti`s, RFC 9449 §11.1):
/// a key is accepted once until it expires, whichever replica sees it.
///
/// Only stores that several broker processes share have one (PostgreSQL); a single process
/// keeps its own in memory.
///
/// # Security
/// Callers must refuse the value when [`first_use`](Self::first_use) fails: accepting it
/// unchecked would let a replay through. Keys should be digests, never secrets (they are
/// stored in the clear).
#[async_trait]
pub trait UseOnce: Send + Sync + 'static {
    /// Records `key` as used until `expires_at_unix_secs` (Unix seconds): `Ok(true)` the first
    /// time, or once an earlier use expired before `now_unix_secs`; `Ok(false)` for a replay.
    /// Two replicas racing on one key cannot both get `true`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the shared cache cannot be reached.
    async fn first_use(
        &self,
        key: &str,
        expires_at_unix_secs: i64,
        now_unix_secs: i64,
    ) -> Result<bool, StoreError>;

    /// Forgets the keys that expired before `now_unix_secs`; returns how many. Run it now and
    /// then (once a minute) so the cache does not grow without bound.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the shared cache cannot be reached.
    async fn forget_expired(&self, now_unix_secs: i64) -> Result<u64, StoreError>;
}

/// How a [`ChangeFeed`] proves it is current.
///
/// Every `heartbeat_every` the feed notes the instant, then sends a heartbeat through the store
/// carrying a fresh random token; one is in flight at a time. The store delivers changes and
/// heartbeats in commit order, so when the feed receives that token back, every change
/// committed before the noted instant has been received: the feed reports
/// [`StoreChange::Fresh`] with that instant. A feed that has not received its own heartbeat for
/// `stall_after` is presumed silently stalled (a hung backend, a half-open TCP connection, a
/// middlebox that drops packets without a reset): it reports [`StoreChange::Lost`] and
/// reconnects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedSettings {
    /// Interval between heartbeats (default 100 ms).
    pub heartbeat_every: std::time::Duration,
    /// Silence after which the connection is replaced (default 3 s).
    pub stall_after: std::time::Duration,
}

impl Default for FeedSettings {
    fn default() -> Self {
        Self {
            heartbeat_every: std::time::Duration::from_millis(100),
            stall_after: std::time::Duration::from_secs(3),
        }
    }
}

/// A change another writer (this process or another replica) committed, as reported by a
/// [`ChangeFeed`]. Caches keyed by these rows must drop their copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChange {
    /// A lease was updated (revoked, renewed, …): forget any cached copy of it.
    Lease(String),
    /// A task was updated (ended, …): forget any cached copy of it.
    Task(String),
    /// The change feed was interrupted: notifications may have been missed, so caches must not
    /// be trusted until [`Resynced`](Self::Resynced).
    Lost,
    /// The change feed is (re)connected: drop every cached row. It is followed at once by a
    /// [`Fresh`](Self::Fresh) for the instant listening began.
    Resynced,
    /// A notification that names no rows (not one Latch sends: another client on the channel)
    /// arrived: drop every cached row, since it cannot be told which changed. The feed stays
    /// connected, and as current as before.
    Unknown,
    /// Every change committed before this instant has been reported (as `Lease`/`Task` items
    /// earlier in the feed). A cache is current as of the newest such instant; how stale it
    /// may become before it is bypassed is the consumer's bound.
    Fresh(tokio::time::Instant),
}

/// The changes that other writers commit to a shared store, for replicas that cache rows
/// (PostgreSQL's `LISTEN`/`NOTIFY`), plus the health of the channel that carries them.
///
/// # Security
/// On PostgreSQL any role that can connect to the database can send and listen on the channel:
/// heartbeats therefore carry only a random token whose send instant this process recorded, so
/// a forged or copied one proves nothing. Such a role can still make replicas drop their caches
/// (slower, never stale) or pin the notification queue (then no change can commit): see
/// [`public_may_connect`](Self::public_may_connect) and [`queue_usage`](Self::queue_usage).
#[async_trait]
pub trait ChangeFeed: Send + Sync + 'static {
    /// Starts following committed changes and returns them as a stream.
    ///
    /// The stream starts with [`StoreChange::Lost`] until the feed is connected, then sends
    /// [`StoreChange::Resynced`] and [`StoreChange::Fresh`], and a `Fresh` for every heartbeat
    /// that comes back (see [`FeedSettings`]). When the connection drops or stalls it sends
    /// `Lost`, reconnects with backoff and sends `Resynced` again. The background task stops
    /// when the receiver is dropped. Must be called inside a Tokio runtime.
    fn watch(&self, settings: FeedSettings) -> tokio::sync::mpsc::Receiver<StoreChange>;

    /// The fraction (0 to 1) of the store's notification queue in use. When it is full every
    /// transaction that changes a lease or task fails at commit, revocations included.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the store cannot be reached.
    async fn queue_usage(&self) -> Result<f64, StoreError>;

    /// Whether roles without a grant of their own may connect to the store (and so send on
    /// and pin the change channel). Operators should close that door.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the store cannot be reached.
    async fn public_may_connect(&self) -> Result<bool, StoreError>;
}
