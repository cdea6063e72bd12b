//! The [`Broker`] facade: every use case of Latch, orchestrated over the ports.
//!
//! HTTP handlers and the CLI stay thin: they extract the caller, call one method here, and map
//! the result. Every state change is committed together with its audit events
//! ([`crate::ports::WriteBatch`]); a failed commit means the action did not happen.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::{ToolUseReport, is_deceptive};
use crate::clock::Clock;
use crate::digest::{CredentialHasher, request_digest};
use crate::error::{ApiError, ErrorCode, Result, quote};
use crate::model::*;
use crate::policy::{ApprovalContext, EvalInput, PolicyEngine};
use crate::ports::{
    CredentialProvider, IdentityVerifier, MintRequest, Store, StoreError, Write, WriteBatch,
};
use crate::ttl;

mod leak;
pub use leak::{LeakFinding, LeakResponse, LeakScope};

/// Operator settings the broker enforces.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// Environments that are production; a task outside them never gets a credential for a
    /// resource inside them.
    pub production_environments: Vec<String>,
    /// Task TTL when the opener names none (seconds).
    pub task_default_ttl_secs: i64,
    /// Longest task TTL (seconds).
    pub task_max_ttl_secs: i64,
    /// How long a step-up request waits for approval, and an approved one for its claim (seconds).
    pub pending_ttl_secs: i64,
    /// An `issuing` lease older than this is treated as an interrupted mint and revoked (seconds).
    pub issuing_grace_secs: i64,
    /// First revocation retry delay (seconds); doubles per attempt.
    pub revoke_backoff_base_secs: i64,
    /// Longest revocation retry delay (seconds).
    pub revoke_backoff_max_secs: i64,
    /// After this many failed attempts a revoking lease is marked `revoke_failed` and alerted
    /// (it is still retried).
    pub revoke_alert_after: u32,
    /// Longest accepted `purpose` / `justification` (characters).
    pub max_text_len: usize,
    /// This broker's name in reaper claims (replicas sharing a store must differ; default: a
    /// random id per process).
    pub replica_id: String,
    /// How long a reaper claim on a due lease lasts (seconds): if this replica dies mid-pass,
    /// another takes the lease over after this long.
    pub reaper_claim_secs: i64,
    /// Longest an introspection waits for the store when it cannot answer from its cache
    /// (default 2 s); past it the answer is `active: false` (fail closed), so a stalled
    /// database makes resource servers refuse rather than hang.
    pub introspection_store_timeout: Duration,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        Self {
            production_environments: vec!["production".into(), "prod".into()],
            task_default_ttl_secs: 3600,
            task_max_ttl_secs: 8 * 3600,
            pending_ttl_secs: 15 * 60,
            issuing_grace_secs: 120,
            revoke_backoff_base_secs: 2,
            revoke_backoff_max_secs: 300,
            revoke_alert_after: 5,
            max_text_len: 1024,
            replica_id: format!("replica-{}", uuid::Uuid::new_v4().simple()),
            reaper_claim_secs: 30,
            introspection_store_timeout: Duration::from_secs(2),
        }
    }
}

/// Per-call context: HTTP request id, source address, and audit events (such as the caller's
/// authentication) waiting to be committed with the call's first state change.
#[derive(Debug, Default)]
pub struct CallCtx {
    /// HTTP request id.
    pub request_id: Option<String>,
    /// Caller's address.
    pub source_ip: Option<String>,
    pending: Mutex<Vec<AuditEvent>>,
}

impl CallCtx {
    /// A context for one call.
    pub fn new(request_id: Option<String>, source_ip: Option<String>) -> Self {
        Self {
            request_id,
            source_ip,
            pending: Mutex::new(Vec::new()),
        }
    }
    fn push(&self, e: AuditEvent) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(e);
    }
    fn take(&self) -> Vec<AuditEvent> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }
    fn restore(&self, mut events: Vec<AuditEvent>) {
        let mut g = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        events.append(&mut g);
        *g = events;
    }
}

/// Input to open a task.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OpenTask {
    /// Why access is needed (1–1024 characters).
    pub purpose: String,
    /// Repository; defaults to the workload's, and must equal it when the identity names one.
    pub repository: Option<String>,
    /// Branch; defaults to the workload's, and must equal it when the identity names one.
    pub branch: Option<String>,
    /// Environment (`sandbox`, `staging`, `production`, …).
    pub environment: String,
    /// Task TTL in seconds (default and bound from configuration).
    pub ttl_secs: Option<i64>,
    /// Human the agent acts for; must match the identity's when it names one.
    pub on_behalf_of: Option<String>,
}

/// Input to request access in a task.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RequestAccess {
    /// Resource id.
    pub resource: String,
    /// Actions, e.g. `["read"]`.
    pub actions: Vec<String>,
    /// Requested TTL in seconds (default: the resource's default TTL); clamped to the bounds.
    pub ttl_secs: Option<i64>,
    /// Why (shown to approvers; ≤ 1024 characters).
    #[serde(default)]
    pub justification: String,
    /// Provider-specific parameters (e.g. a public key); never secrets.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub params: serde_json::Value,
}

/// A minted credential, delivered once, with its lease.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The request.
    pub request: AccessRequest,
    /// The lease.
    pub lease: Lease,
    /// The credential.
    pub credential: DeliveredCredential,
}

/// Outcome of an access request (or its claim after approval).
#[derive(Debug, Clone)]
pub enum AccessOutcome {
    /// Allowed and minted.
    Granted(Box<Grant>),
    /// Denied; the request carries the decision with policy ids and reasons.
    Denied(AccessRequest),
    /// Waiting for approvers (step-up).
    Pending(AccessRequest),
}

/// RFC 7662 introspection answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Introspection {
    /// Whether the token is currently active (RFC 7662 §2.2).
    pub active: bool,
    /// Space-separated actions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Workload principal id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Audience.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// Expiry (Unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Issued at (Unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Lease id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Task id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Resource id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// `Bearer`, or `DPoP` for a key-bound token (RFC 9449 §6.2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    /// Confirmation (RFC 7800 / RFC 9449 §6.2): `{"jkt": thumbprint}` when the token is bound
    /// to a key; every use must then carry a DPoP proof signed by that key.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub cnf: Option<serde_json::Value>,
    /// The actor (RFC 8693 §4.1) when the token was obtained on someone's behalf.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub act: Option<serde_json::Value>,
    /// Whether the token's resource requires sender-constrained use (`require_dpop`): then an
    /// introspection must carry the DPoP proof the resource server received. Not serialized.
    #[serde(skip)]
    pub requires_dpop: bool,
}

/// Active credentials by keyed HMAC, a cache of the store. With replicas another broker may
/// revoke or renew a lease: the server feeds the store's change notifications into
/// [`Broker::invalidate_lease`] / [`Broker::set_cache_trusted`], and a miss is loaded from
/// the store.
#[derive(Debug)]
struct LiveIndex {
    by_hmac: HashMap<String, LiveEntry>,
    /// Lease id → HMAC of its cached credential.
    by_lease: HashMap<String, String>,
    /// Bumped by every invalidation, so a load that raced one is not cached.
    generation: u64,
    /// Whether lookups may be answered from the index.
    trust: CacheTrust,
}

/// When the live index may answer instead of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CacheTrust {
    /// No other writer: the broker sees every change itself (SQLite, a single broker).
    Always,
    /// Changes may be missed (the change feed is down): every lookup reads the store.
    Never,
    /// Other writers' changes arrive on a feed that proves its own currency: the index is
    /// current as of the newest proof, and answers only while that is younger than
    /// `max_staleness`. Instants are [`Clock::monotonic`] readings.
    Bounded {
        /// The newest instant as of which every change is known applied (`None`: none since
        /// the feed reconnected).
        current_as_of: Option<Duration>,
        max_staleness: Duration,
    },
}

impl CacheTrust {
    /// Whether a lookup at monotonic instant `now` may be answered from the index.
    fn answers_at(self, now: impl FnOnce() -> Duration) -> bool {
        match self {
            Self::Always => true,
            Self::Never => false,
            Self::Bounded {
                current_as_of,
                max_staleness,
            } => current_as_of.is_some_and(|t| now().saturating_sub(t) < max_staleness),
        }
    }

    /// Records a proof that every change committed before `as_of` is applied, received at
    /// `now` (an `as_of` in the future is taken as `now`). Never moves the proof back.
    fn confirm(&mut self, as_of: Duration, now: Duration) {
        if let Self::Bounded { current_as_of, .. } = self {
            let as_of = as_of.min(now);
            if current_as_of.is_none_or(|t| t < as_of) {
                *current_as_of = Some(as_of);
            }
        }
    }

    fn state_at(self, now: Duration) -> CacheState {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        match self {
            Self::Always => CacheState::Exclusive,
            Self::Never => CacheState::Bypassed,
            Self::Bounded {
                current_as_of,
                max_staleness,
            } => {
                let age = current_as_of.map(|t| now.saturating_sub(t));
                match age {
                    Some(a) if a < max_staleness => CacheState::Fresh { age_ms: ms(a) },
                    _ => CacheState::Stale {
                        age_ms: age.map(ms),
                    },
                }
            }
        }
    }
}

/// How the broker's in-memory caches are trusted, for health reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum CacheState {
    /// No other writer: the caches are always current.
    Exclusive,
    /// The change feed is current: confirmed `age_ms` ago, within the staleness bound.
    Fresh {
        /// Milliseconds since the feed last proved it had delivered every earlier change.
        age_ms: u64,
    },
    /// The change feed has not proved its currency within the bound (stalled, lagging):
    /// lookups read the store until it does.
    Stale {
        /// Milliseconds since the last proof (`None`: none since the feed reconnected).
        age_ms: Option<u64>,
    },
    /// The change feed is down: every lookup reads the store.
    Bypassed,
}

impl LiveIndex {
    fn remove_lease(&mut self, lease_id: &str) {
        if let Some(h) = self.by_lease.remove(lease_id) {
            self.by_hmac.remove(&h);
        }
    }
    fn clear(&mut self) {
        self.by_hmac.clear();
        self.by_lease.clear();
    }
}

#[derive(Debug, Clone)]
struct LiveEntry {
    lease_id: String,
    task_id: String,
    sub: String,
    aud: String,
    scope: String,
    resource: String,
    iat: i64,
    exp: i64,
    binding: TokenBinding,
    require_dpop: bool,
}

/// Whether a resource only accepts key-bound credentials (`settings.require_dpop = true`).
pub fn resource_requires_dpop(resource: &Resource) -> bool {
    resource
        .settings
        .get("require_dpop")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false)
}

fn check_binding(resource: &Resource, binding: &TokenBinding) -> Result<()> {
    if resource_requires_dpop(resource) && binding.jkt.is_none() {
        return Err(ApiError::new(
            ErrorCode::DpopRequired,
            format!(
                "resource `{}` only accepts dpop-bound credentials: send a `DPoP` proof (rfc 9449) with the request",
                resource.id
            ),
        ));
    }
    Ok(())
}

/// What one reaper pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReapReport {
    /// Tasks expired.
    pub tasks_expired: usize,
    /// Requests expired.
    pub requests_expired: usize,
    /// Leases revoked.
    pub leases_revoked: usize,
    /// Revocation attempts that failed (will be retried).
    pub revocations_failed: usize,
}

/// Result of a policy reload.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadReport {
    /// Fingerprint of the new set.
    pub fingerprint: String,
    /// Leases re-evaluated.
    pub leases_checked: usize,
    /// Leases revoked because the new policies no longer allow them.
    pub leases_revoked: Vec<String>,
}

/// Everything the broker needs, assembled by the server's `startup.rs`.
pub struct BrokerParts {
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// Durable state.
    pub store: Arc<dyn Store>,
    /// Token verification.
    pub verifier: Arc<dyn IdentityVerifier>,
    /// Validated policies.
    pub policy: PolicyEngine,
    /// Providers by kind.
    pub providers: Vec<Arc<dyn CredentialProvider>>,
    /// Configured resources.
    pub resources: Vec<Resource>,
    /// Key for credential HMACs (≥ 32 bytes).
    pub hmac_key: Vec<u8>,
    /// Settings.
    pub settings: BrokerSettings,
}

/// The broker.
pub struct Broker {
    clock: Arc<dyn Clock>,
    store: Arc<dyn Store>,
    verifier: Arc<dyn IdentityVerifier>,
    policy: RwLock<Arc<PolicyEngine>>,
    providers: HashMap<String, Arc<dyn CredentialProvider>>,
    resources: HashMap<String, Resource>,
    hasher: CredentialHasher,
    settings: BrokerSettings,
    /// Introspection index of active credentials (see [`LiveIndex`]).
    live: RwLock<LiveIndex>,
    /// Open tasks as this process last wrote or read them, for the grant path. Safe even if
    /// stale (another replica ended the task): every grant's batch carries
    /// [`Write::RequireTaskOpen`], which the store checks inside the commit.
    task_cache: RwLock<HashMap<String, Task>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("resources", &self.resources.keys())
            .finish_non_exhaustive()
    }
}

const BROKER: &str = "latch";

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, msg)
}

/// The call's queued `auth.succeeded` events, merged with the events the call itself records: an
/// authentication whose actor also acts in one of `own` is folded into the first such event as
/// `detail.auth` (issuer, principal kind, source address) instead of taking a record of its own.
/// Every call stays attributable (a call that records nothing else still gets its
/// `auth.succeeded`), with one record fewer per state change.
fn fold_authentication(pending: Vec<AuditEvent>, mut own: Vec<AuditEvent>) -> Vec<AuditEvent> {
    let mut out = Vec::with_capacity(pending.len() + own.len());
    for p in pending {
        if p.kind == "auth.succeeded"
            && let Some(e) = own.iter_mut().find(|e| e.actor == p.actor)
        {
            match &mut e.detail {
                serde_json::Value::Object(m) if !m.contains_key("auth") => {
                    m.insert("auth".into(), p.detail);
                    continue;
                }
                serde_json::Value::Null => {
                    e.detail = json!({ "auth": p.detail });
                    continue;
                }
                _ => {}
            }
        }
        out.push(p);
    }
    out.append(&mut own);
    out
}

/// Free text shown to approvers (purpose, justification, reasons): bounded, single-line, and
/// free of control, bidi and zero-width characters, so an agent cannot forge or hide lines on an
/// approver's screen or in a log.
fn check_text(field: &str, v: &str, max: usize, required: bool) -> Result<()> {
    if required && v.trim().is_empty() {
        return Err(bad(format!("`{field}` must not be empty")));
    }
    if v.chars().any(|c| c.is_control() || is_deceptive(c)) {
        return Err(bad(format!(
            "`{field}` must not contain control, bidi or zero-width characters"
        )));
    }
    if v.chars().count() > max {
        return Err(bad(format!("`{field}` is longer than {max} characters")));
    }
    Ok(())
}

/// Whether `id` is an acceptable human id: 1–128 ASCII letters, digits and `._@+-`. Ids are
/// compared case-insensitively, so with this alphabet one human has exactly one spelling —
/// no whitespace, invisible or look-alike characters can make a second approver out of one.
pub fn valid_human_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '+' | '-'))
}

fn check_name(field: &str, v: &str) -> Result<()> {
    let ok = !v.is_empty()
        && v.len() <= 128
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':'));
    if ok {
        Ok(())
    } else {
        Err(bad(format!("`{field}` {} is not a valid name", quote(v))))
    }
}

impl Broker {
    /// Assembles a broker and loads the live-lease index from the store.
    ///
    /// # Errors
    /// `store_unavailable` if the index cannot be loaded; `invalid_request` if a resource names
    /// a provider that is not configured or that refuses the resource's settings.
    pub async fn new(parts: BrokerParts) -> Result<Self> {
        let providers: HashMap<String, Arc<dyn CredentialProvider>> = parts
            .providers
            .into_iter()
            .map(|p| (p.kind().to_owned(), p))
            .collect();
        for r in &parts.resources {
            let p = providers.get(&r.kind).ok_or_else(|| {
                bad(format!(
                    "resource `{}` names unknown provider `{}`",
                    r.id, r.kind
                ))
            })?;
            p.check_resource(r)
                .map_err(|e| bad(format!("resource `{}`: {}", r.id, e.message)))?;
        }
        let b = Self {
            clock: parts.clock,
            store: parts.store,
            verifier: parts.verifier,
            policy: RwLock::new(Arc::new(parts.policy)),
            providers,
            resources: parts
                .resources
                .into_iter()
                .map(|r| (r.id.clone(), r))
                .collect(),
            hasher: CredentialHasher::new(&parts.hmac_key),
            settings: parts.settings,
            live: RwLock::new(LiveIndex {
                by_hmac: HashMap::new(),
                by_lease: HashMap::new(),
                generation: 0,
                trust: CacheTrust::Always,
            }),
            task_cache: RwLock::new(HashMap::new()),
        };
        b.load_live_index().await?;
        Ok(b)
    }

    async fn load_live_index(&self) -> Result<()> {
        let mut after = String::new();
        loop {
            let page = self.store.active_leases(&after, 500).await?;
            let Some(last) = page.last() else { break };
            after = last.id.clone();
            for l in &page {
                if let Some(task) = self.store.task(&l.task_id).await? {
                    self.index_insert(l, &task);
                }
            }
        }
        Ok(())
    }

    fn live_generation(&self) -> u64 {
        self.live
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .generation
    }

    /// Indexes a lease this broker just committed, unless an invalidation arrived since
    /// `generation` was read (another replica may have changed the lease after our commit).
    fn index_insert_since(&self, l: &Lease, task: &Task, generation: u64) {
        self.index_insert_checked(l, task, Some(generation));
    }

    fn index_insert(&self, l: &Lease, task: &Task) {
        self.index_insert_checked(l, task, None);
    }

    fn index_insert_checked(&self, l: &Lease, task: &Task, generation: Option<u64>) {
        let Some(e) = self.live_entry(l, task) else {
            return;
        };
        let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
        if generation.is_some_and(|g| g != live.generation) {
            return;
        }
        live.remove_lease(&l.id);
        if let Some(h) = &l.credential_hmac {
            live.by_lease.insert(l.id.clone(), h.clone());
            live.by_hmac.insert(h.clone(), e);
        }
    }

    fn live_entry(&self, l: &Lease, task: &Task) -> Option<LiveEntry> {
        let r = self.resources.get(&l.resource_id)?;
        l.credential_hmac.as_ref()?;
        Some(LiveEntry {
            lease_id: l.id.clone(),
            task_id: l.task_id.clone(),
            // As the token's `sub`: the exchanged subject when there was one.
            sub: l
                .binding
                .subject
                .clone()
                .unwrap_or_else(|| task.owner.id.clone()),
            aud: r.audience.clone(),
            scope: l.actions.join(" "),
            resource: l.resource_id.clone(),
            iat: l.issued_at_unix_secs,
            exp: l.expires_at_unix_secs,
            binding: l.binding.clone(),
            require_dpop: resource_requires_dpop(r),
        })
    }

    fn index_remove(&self, l: &Lease) {
        let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
        live.remove_lease(&l.id);
        if let Some(h) = &l.credential_hmac {
            live.by_hmac.remove(h);
        }
    }

    /// Forgets any cached copy of lease `lease_id` (another replica changed it): introspection
    /// of its credentials is answered from the store again.
    pub fn invalidate_lease(&self, lease_id: &str) {
        let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
        live.generation += 1;
        live.remove_lease(lease_id);
    }

    /// Forgets any cached copy of task `task_id` (another replica changed it).
    pub fn invalidate_task(&self, task_id: &str) {
        self.task_cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(task_id);
    }

    /// Says whether this broker receives every change other replicas make (default: true, as
    /// for a store no other process writes). Either way the caches are emptied; while
    /// untrusted, introspection reads the store on every call.
    ///
    /// # Security
    /// A replica that may have missed a revocation must not answer from its cache: the server
    /// sets `false` whenever its change feed is interrupted. With replicas it then uses
    /// [`follow_change_feed`](Self::follow_change_feed) rather than `true`, so that a feed that
    /// stalls without an error is noticed too.
    pub fn set_cache_trusted(&self, trusted: bool) {
        self.reset_caches(Some(if trusted {
            CacheTrust::Always
        } else {
            CacheTrust::Never
        }));
    }

    /// The change feed is (re)connected: empties the caches and trusts them only while the feed
    /// keeps proving its currency through [`confirm_cache_fresh`](Self::confirm_cache_fresh),
    /// at most `max_staleness` after the newest proof. Until the first proof, lookups read the
    /// store.
    ///
    /// # Security
    /// This is what bounds how long a revocation made on another replica can go unnoticed
    /// here: at most `max_staleness` (plus the feed's delivery of the proof), whatever happens
    /// to the feed's connection, since a silent stall simply stops the proofs.
    pub fn follow_change_feed(&self, max_staleness: Duration) {
        self.reset_caches(Some(CacheTrust::Bounded {
            current_as_of: None,
            max_staleness,
        }));
    }

    /// Every change committed before `as_of` (a [`Clock::monotonic`] reading) has been
    /// applied to the caches (the change feed's heartbeat came back): they may answer until
    /// `as_of + max_staleness`. Ignored unless [`follow_change_feed`](Self::follow_change_feed)
    /// is in force; never moves the bound back, and a future `as_of` counts as now.
    pub fn confirm_cache_fresh(&self, as_of: Duration) {
        let now = self.clock.monotonic();
        self.live
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .trust
            .confirm(as_of, now);
    }

    /// How the caches are trusted right now (for `/readyz` and metrics).
    pub fn cache_state(&self) -> CacheState {
        let trust = self.live.read().unwrap_or_else(|p| p.into_inner()).trust;
        trust.state_at(self.clock.monotonic())
    }

    /// Empties the caches without changing how they are trusted (a change feed reported a
    /// change it could not attribute to rows).
    pub fn clear_caches(&self) {
        self.reset_caches(None);
    }

    /// Empties both caches (bumping the generation, so no racing load is cached) and, when
    /// given, sets how the index is trusted, in one critical section.
    fn reset_caches(&self, trust: Option<CacheTrust>) {
        {
            let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
            live.generation += 1;
            live.clear();
            if let Some(t) = trust {
                live.trust = t;
            }
        }
        self.task_cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The store (for read-only views such as the audit log).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Configured resources.
    pub fn resources(&self) -> impl Iterator<Item = &Resource> {
        self.resources.values()
    }

    /// The current policy engine.
    pub fn policy(&self) -> Arc<PolicyEngine> {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Settings.
    pub fn settings(&self) -> &BrokerSettings {
        &self.settings
    }

    /// Keyed HMAC of a credential value (for leak search and revocation by value).
    pub fn credential_hmac(&self, value: &str) -> String {
        self.hasher.hmac_hex(value)
    }

    fn now(&self) -> i64 {
        self.clock.now_unix_secs()
    }

    fn is_production(&self, env: &str) -> bool {
        self.settings
            .production_environments
            .iter()
            .any(|p| p.eq_ignore_ascii_case(env))
    }

    async fn commit(
        &self,
        ctx: &CallCtx,
        mut batch: WriteBatch,
    ) -> std::result::Result<Vec<i64>, StoreError> {
        let pending = ctx.take();
        let n = pending.len();
        let mut audit = fold_authentication(pending.clone(), std::mem::take(&mut batch.audit));
        for e in &mut audit {
            if e.request_id.is_none() {
                e.request_id.clone_from(&ctx.request_id);
            }
        }
        batch.audit = audit;
        let tasks: Vec<Task> = batch
            .writes
            .iter()
            .filter_map(|w| match w {
                Write::InsertTask(t) | Write::UpdateTask(t) => Some(t.clone()),
                _ => None,
            })
            .collect();
        match self.store.apply(batch).await {
            Ok(seqs) => {
                for t in tasks {
                    self.cache_task(t);
                }
                Ok(seqs)
            }
            Err(e) => {
                if n > 0 {
                    ctx.restore(pending);
                }
                Err(e)
            }
        }
    }

    /// Commits audit events still pending in `ctx` (e.g. the authentication of a read-only call).
    ///
    /// # Errors
    /// `store_unavailable`: the caller must fail the call (audit fails closed).
    pub async fn flush(&self, ctx: &CallCtx) -> Result<()> {
        if ctx
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
        {
            return Ok(());
        }
        self.commit(ctx, WriteBatch::new())
            .await
            .map(|_| ())
            .map_err(Into::into)
    }

    // ------------------------------------------------------------------ authentication

    /// Verifies a bearer token. Success queues an `auth.succeeded` event in `ctx` (committed
    /// with the call's first change); failure records `auth.failed` at once.
    ///
    /// # Errors
    /// The verifier's authentication error (`token_expired`, `unknown_kid`, …).
    pub async fn authenticate(&self, ctx: &CallCtx, token: Option<&str>) -> Result<Principal> {
        let now = self.now();
        let result = match token {
            None => Err(ApiError::new(
                ErrorCode::TokenMissing,
                "no bearer token was presented",
            )),
            Some(t) => self.verifier.verify(t).await,
        };
        // One canonical spelling per human (self-approval and quorum compare these ids).
        let result = result.and_then(|p| {
            let bad_id = match &p {
                Principal::Human(h) => (!valid_human_id(&h.id)).then(|| h.id.clone()),
                Principal::Workload(w) => w
                    .on_behalf_of
                    .as_ref()
                    .filter(|a| !valid_human_id(a))
                    .cloned(),
            };
            match bad_id {
                Some(id) => Err(ApiError::new(
                    ErrorCode::ClaimsInvalid,
                    format!(
                        "human id {} is not 1-128 ascii letters, digits or `._@+-`",
                        quote(&id)
                    ),
                )),
                None => Ok(p),
            }
        });
        match result {
            Ok(p) => {
                let (actor, kind, issuer) = match &p {
                    Principal::Workload(w) => (w.id.clone(), "workload", w.issuer.clone()),
                    Principal::Human(h) => (h.id.clone(), "human", h.issuer.clone()),
                };
                ctx.push(AuditEvent::new(now, "auth.succeeded", &actor, "ok").detail(
                    json!({"principal_kind": kind, "issuer": issuer, "source_ip": ctx.source_ip}),
                ));
                Ok(p)
            }
            Err(e) => {
                let ev = AuditEvent::new(now, "auth.failed", "anonymous", e.code.as_str())
                    .detail(json!({"message": e.message, "source_ip": ctx.source_ip}));
                self.commit(ctx, WriteBatch::new().audit(ev)).await?;
                Err(e)
            }
        }
    }

    /// [`authenticate`](Self::authenticate), requiring a workload.
    ///
    /// # Errors
    /// As `authenticate`, or `wrong_principal_kind` for a human token.
    pub async fn authenticate_workload(
        &self,
        ctx: &CallCtx,
        token: Option<&str>,
    ) -> Result<Workload> {
        match self.authenticate(ctx, token).await? {
            Principal::Workload(w) => Ok(*w),
            Principal::Human(_) => Err(ApiError::new(
                ErrorCode::WrongPrincipalKind,
                "this call needs a workload identity token",
            )),
        }
    }

    /// [`authenticate`](Self::authenticate), requiring a human.
    ///
    /// # Errors
    /// As `authenticate`, or `wrong_principal_kind` for a workload token.
    pub async fn authenticate_human(&self, ctx: &CallCtx, token: Option<&str>) -> Result<Human> {
        match self.authenticate(ctx, token).await? {
            Principal::Human(h) => Ok(h),
            Principal::Workload(_) => Err(ApiError::new(
                ErrorCode::WrongPrincipalKind,
                "this call needs a human identity token",
            )),
        }
    }

    // ------------------------------------------------------------------ tasks

    /// Opens a task bound to `caller` (principal and run).
    ///
    /// # Errors
    /// `invalid_request`, `ttl_out_of_bounds`, `task_identity_mismatch` (environment,
    /// repository, branch or `on_behalf_of` contradict the identity), `store_unavailable`.
    pub async fn open_task(
        &self,
        ctx: &CallCtx,
        caller: &Workload,
        input: OpenTask,
    ) -> Result<Task> {
        let max = self.settings.max_text_len;
        check_text("purpose", &input.purpose, max, true)?;
        check_name("environment", &input.environment)?;
        let claims = &caller.claims;
        let mismatch = |m: String| ApiError::new(ErrorCode::TaskIdentityMismatch, m);
        if let Some(env) = &claims.environment
            && !env.eq_ignore_ascii_case(&input.environment)
        {
            return Err(mismatch(format!(
                "task environment {} is not the environment the identity proves ({})",
                quote(&input.environment),
                quote(env)
            )));
        }
        let repository = match (&input.repository, &claims.repository) {
            (Some(r), Some(id)) if r != id => {
                return Err(mismatch(format!(
                    "task repository {} is not the repository the identity proves ({})",
                    quote(r),
                    quote(id)
                )));
            }
            (Some(r), _) => {
                check_name("repository", r)?;
                Some(r.clone())
            }
            (None, id) => id.clone(),
        };
        let identity_branch = claims.branch.clone().or_else(|| claims.git_ref.clone());
        let branch = match (&input.branch, &identity_branch) {
            (Some(b), Some(id)) if b != id && claims.git_ref.as_deref() != Some(b.as_str()) => {
                return Err(mismatch(format!(
                    "task branch {} is not the ref the identity proves ({})",
                    quote(b),
                    quote(id)
                )));
            }
            (Some(b), _) => {
                check_name("branch", b)?;
                Some(identity_branch.clone().unwrap_or_else(|| b.clone()))
            }
            (None, id) => id.clone(),
        };
        let on_behalf_of = match (&input.on_behalf_of, &caller.on_behalf_of) {
            (Some(h), Some(id)) if !h.eq_ignore_ascii_case(id) => {
                return Err(mismatch(format!(
                    "`on_behalf_of` {} is not the human the identity names",
                    quote(h)
                )));
            }
            (Some(h), _) => {
                check_name("on_behalf_of", h)?;
                Some(h.clone())
            }
            (None, id) => id.clone(),
        };
        let ttl = input
            .ttl_secs
            .unwrap_or(self.settings.task_default_ttl_secs);
        if ttl <= 0 || ttl > self.settings.task_max_ttl_secs {
            return Err(ApiError::new(
                ErrorCode::TtlOutOfBounds,
                format!(
                    "task ttl must be 1 to {} seconds, got {ttl}",
                    self.settings.task_max_ttl_secs
                ),
            ));
        }
        let now = self.now();
        let task = Task {
            id: new_id("task"),
            owner: caller.clone(),
            purpose: input.purpose,
            repository,
            branch,
            production: self.is_production(&input.environment),
            environment: input.environment,
            on_behalf_of,
            state: TaskState::Open,
            created_at_unix_secs: now,
            expires_at_unix_secs: now + ttl,
            ended_at_unix_secs: None,
            version: 1,
        };
        let ev = AuditEvent::new(now, "task.opened", &caller.id, "ok").task(&task.id).detail(json!({
            "purpose": task.purpose, "repository": task.repository, "branch": task.branch,
            "environment": task.environment, "production": task.production,
            "expires_at_unix_secs": task.expires_at_unix_secs, "on_behalf_of": task.on_behalf_of,
            "run_binding": caller.run_binding,
        }));
        self.commit(
            ctx,
            WriteBatch::new()
                .write(Write::InsertTask(task.clone()))
                .audit(ev),
        )
        .await?;
        Ok(task)
    }

    /// Loads a task the caller owns. Tasks of others are reported as not found.
    const TASK_CACHE_MAX: usize = 100_000;

    fn cache_task(&self, t: Task) {
        let mut c = self.task_cache.write().unwrap_or_else(|p| p.into_inner());
        if t.state != TaskState::Open {
            c.remove(&t.id);
            return;
        }
        if c.len() >= Self::TASK_CACHE_MAX {
            c.clear();
        }
        c.insert(t.id.clone(), t);
    }

    /// [`owned_task`](Self::owned_task) served from the task cache when possible (grant path).
    /// A stale entry cannot mint into an ended task: the grant's batch carries a
    /// `RequireTaskOpen` guard checked by the store.
    async fn owned_task_cached(&self, caller: &Workload, task_id: &str) -> Result<Task> {
        let hit = self
            .task_cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(task_id)
            .cloned();
        match hit {
            Some(t) if t.owner.id == caller.id && t.owner.run_binding == caller.run_binding => {
                Ok(t)
            }
            Some(_) => Err(ApiError::new(
                ErrorCode::TaskNotFound,
                format!("no task {}", quote(task_id)),
            )),
            None => {
                let t = self.owned_task(caller, task_id).await?;
                self.cache_task(t.clone());
                Ok(t)
            }
        }
    }

    async fn owned_task(&self, caller: &Workload, task_id: &str) -> Result<Task> {
        let t = self.store.task(task_id).await?;
        match t {
            Some(t) if t.owner.id == caller.id && t.owner.run_binding == caller.run_binding => {
                Ok(t)
            }
            _ => Err(ApiError::new(
                ErrorCode::TaskNotFound,
                format!("no task {}", quote(task_id)),
            )),
        }
    }

    /// A task the caller owns.
    ///
    /// # Errors
    /// `task_not_found` (also for tasks of other workloads or runs).
    pub async fn task(&self, caller: &Workload, task_id: &str) -> Result<Task> {
        self.owned_task(caller, task_id).await
    }

    /// A task by id, for operators' views (no ownership check).
    ///
    /// # Errors
    /// `task_not_found`.
    pub async fn task_unchecked(&self, task_id: &str) -> Result<Task> {
        self.store.task(task_id).await?.ok_or_else(|| {
            ApiError::new(
                ErrorCode::TaskNotFound,
                format!("no task {}", quote(task_id)),
            )
        })
    }

    /// Records one audit event (with the call's pending events), e.g. an auditor's export.
    ///
    /// # Errors
    /// `store_unavailable`: the caller must not go ahead (audit fails closed).
    pub async fn record_event(&self, ctx: &CallCtx, mut event: AuditEvent) -> Result<()> {
        event.request_id.clone_from(&ctx.request_id);
        self.commit(ctx, WriteBatch::new().audit(event)).await?;
        Ok(())
    }

    /// Records a tool-use report from the agent working in `task_id` as a `tool.used` audit
    /// event (actor: the workload; outcome: the reported outcome) and returns it with its `seq`.
    /// Reports are accepted for ended tasks too (the last call may finish after completion); the
    /// event then records the task's state.
    ///
    /// # Errors
    /// `invalid_request` (bounds of [`ToolUseReport::validate`]), `task_not_found`,
    /// `lease_not_found` (the lease is not in this task), `store_unavailable`.
    ///
    /// # Security
    /// The report is the agent's own claim; it is stored as such, JSON-escaped, never trusted
    /// as a decision input.
    pub async fn report_tool_use(
        &self,
        ctx: &CallCtx,
        caller: &Workload,
        task_id: &str,
        report: ToolUseReport,
    ) -> Result<AuditEvent> {
        report.validate()?;
        let task = self.owned_task(caller, task_id).await?;
        if let Some(lid) = &report.lease_id {
            match self.store.lease(lid).await? {
                Some(l) if l.task_id == task.id => {}
                _ => {
                    return Err(ApiError::new(
                        ErrorCode::LeaseNotFound,
                        format!("no lease {} in task {}", quote(lid), quote(&task.id)),
                    ));
                }
            }
        }
        let mut event = AuditEvent::new(self.now(), "tool.used", &caller.id, &report.outcome)
            .task(&task.id)
            .detail(json!({
                "tool": report.tool,
                "target": report.target,
                "duration_ms": report.duration_ms,
                "attributes": report.attributes,
                "task_state": task.state,
            }));
        if let Some(lid) = &report.lease_id {
            event = event.lease(lid);
        }
        event.request_id.clone_from(&ctx.request_id);
        let seqs = self
            .commit(ctx, WriteBatch::new().audit(event.clone()))
            .await?;
        event.seq = seqs.last().copied().unwrap_or_default();
        Ok(event)
    }

    /// The audit events of a task the caller owns, in order (its timeline), after `after_seq`.
    ///
    /// # Errors
    /// `task_not_found`, `store_unavailable`.
    pub async fn task_events(
        &self,
        caller: &Workload,
        task_id: &str,
        after_seq: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEvent>> {
        let task = self.owned_task(caller, task_id).await?;
        let filter = AuditFilter {
            task_id: Some(task.id),
            after_seq,
            limit: Some(limit),
            ..AuditFilter::default()
        };
        Ok(self.store.audit_events(&filter).await?)
    }

    /// Tasks opened by the caller's principal in the caller's run, newest first.
    ///
    /// # Errors
    /// `store_unavailable`.
    pub async fn list_tasks(&self, caller: &Workload) -> Result<Vec<Task>> {
        let all = self.store.tasks_by_owner(&caller.id, 200).await?;
        Ok(all
            .into_iter()
            .filter(|t| t.owner.run_binding == caller.run_binding)
            .collect())
    }

    /// Ends a task (`completed` or `cancelled`) and revokes every lease in it.
    ///
    /// # Errors
    /// `task_not_found`, `task_not_open`, `conflict`, `store_unavailable`.
    pub async fn end_task(
        &self,
        ctx: &CallCtx,
        caller: &Workload,
        task_id: &str,
        state: TaskState,
    ) -> Result<Task> {
        if !matches!(state, TaskState::Completed | TaskState::Cancelled) {
            return Err(bad("a task can only be completed or cancelled"));
        }
        let task = self.owned_task(caller, task_id).await?;
        self.end_task_internal(ctx, task, state, &caller.id).await
    }

    async fn end_task_internal(
        &self,
        ctx: &CallCtx,
        task: Task,
        state: TaskState,
        actor: &str,
    ) -> Result<Task> {
        if task.state != TaskState::Open {
            return Err(ApiError::new(
                ErrorCode::TaskNotOpen,
                format!("task `{}` is already {}", task.id, task.state.as_str()),
            ));
        }
        let now = self.now();
        let mut t = task.clone();
        t.state = state;
        t.ended_at_unix_secs = Some(now);
        t.version += 1;
        let leases = self.store.leases_by_task(&task.id).await?;
        let live: Vec<Lease> = leases.into_iter().filter(|l| l.state.is_live()).collect();
        let kind = format!("task.{}", state.as_str());
        let mut batch = WriteBatch::new().write(Write::UpdateTask(t.clone())).audit(
            AuditEvent::new(now, &kind, actor, "ok")
                .task(&t.id)
                .detail(json!({"live_leases": live.len()})),
        );
        let reason = format!("task_{}", state.as_str());
        let (batch2, to_revoke) = self.revocation_writes(batch, &live, &reason, actor, now);
        batch = batch2;
        self.commit(ctx, batch).await?;
        for l in &live {
            self.index_remove(l);
        }
        for l in to_revoke {
            let _ = self.attempt_revoke(l).await;
        }
        self.sweep_ended_task(&t, &reason, actor).await?;
        Ok(t)
    }

    /// Revokes leases that a grant committed into `task` between the read of its live leases
    /// and the commit that ended it. Once the task is ended no grant can commit into it (each
    /// grant's batch requires the task open at the version it read, checked in the commit), so
    /// one fresh read after the end finds every such lease; conflicts with a concurrent renewal
    /// or revocation are retried.
    async fn sweep_ended_task(&self, task: &Task, reason: &str, actor: &str) -> Result<()> {
        for _ in 0..5 {
            let stray: Vec<Lease> = self
                .store
                .leases_by_task(&task.id)
                .await?
                .into_iter()
                .filter(|l| matches!(l.state, LeaseState::Active | LeaseState::Issuing))
                .collect();
            if stray.is_empty() {
                return Ok(());
            }
            let now = self.now();
            let (batch, to_revoke) =
                self.revocation_writes(WriteBatch::new(), &stray, reason, actor, now);
            match self.commit(&CallCtx::default(), batch).await {
                Ok(_) => {
                    for l in &stray {
                        self.index_remove(l);
                    }
                    for l in to_revoke {
                        let _ = self.attempt_revoke(l).await;
                    }
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Adds to `batch` the writes that start revoking `leases`: providers without external
    /// state are revoked in place (nothing outside the broker to undo); others go to
    /// `revoking` and are returned for [`attempt_revoke`](Self::attempt_revoke).
    fn revocation_writes(
        &self,
        mut batch: WriteBatch,
        leases: &[Lease],
        reason: &str,
        actor: &str,
        now: i64,
    ) -> (WriteBatch, Vec<Lease>) {
        let mut external = Vec::new();
        for l in leases {
            if !l.state.is_live() {
                continue;
            }
            let mut n = l.clone();
            n.version += 1;
            if n.revoke_reason.is_none() {
                n.revoke_reason = Some(reason.to_owned());
            }
            let in_place = self
                .providers
                .get(&l.provider)
                .is_some_and(|p| !p.has_external_state());
            if in_place {
                n.state = LeaseState::Revoked;
                n.revoked_at_unix_secs = Some(now);
                n.next_revoke_at_unix_secs = None;
                batch = batch.write(Write::UpdateLease(n.clone())).audit(
                    AuditEvent::new(now, "credential.revoked", actor, "ok")
                        .task(&l.task_id)
                        .lease(&l.id)
                        .access_request(&l.request_id)
                        .detail(json!({"reason": n.revoke_reason, "provider": l.provider})),
                );
            } else {
                if matches!(n.state, LeaseState::Active | LeaseState::Issuing) {
                    n.state = LeaseState::Revoking;
                }
                n.next_revoke_at_unix_secs = Some(now);
                batch = batch.write(Write::UpdateLease(n.clone())).audit(
                    AuditEvent::new(now, "credential.revocation_requested", actor, "ok")
                        .task(&l.task_id)
                        .lease(&l.id)
                        .detail(json!({"reason": n.revoke_reason, "provider": l.provider})),
                );
                external.push(n);
            }
        }
        (batch, external)
    }

    /// One revocation attempt of a lease in `revoking`/`revoke_failed`: on success `revoked`;
    /// on failure the next attempt is scheduled with exponential backoff and, after
    /// `revoke_alert_after` attempts, the lease shows `revoke_failed`.
    async fn attempt_revoke(&self, lease: Lease) -> Result<bool> {
        let now = self.now();
        let result = match self.providers.get(&lease.provider) {
            Some(p) => p.revoke(&lease).await,
            None => Err(crate::ports::ProviderError::retryable(format!(
                "provider `{}` is not configured",
                lease.provider
            ))),
        };
        let mut n = lease.clone();
        n.version += 1;
        let ctx = CallCtx::default();
        match result {
            Ok(()) => {
                n.state = LeaseState::Revoked;
                n.revoked_at_unix_secs = Some(now);
                n.next_revoke_at_unix_secs = None;
                n.last_revoke_error = None;
                let ev = AuditEvent::new(now, "credential.revoked", BROKER, "ok")
                    .task(&n.task_id)
                    .lease(&n.id)
                    .access_request(&n.request_id)
                    .detail(json!({"reason": n.revoke_reason, "provider": n.provider, "attempts": n.revoke_attempts + 1}));
                self.commit(
                    &ctx,
                    WriteBatch::new().write(Write::UpdateLease(n)).audit(ev),
                )
                .await?;
                Ok(true)
            }
            Err(e) => {
                n.revoke_attempts += 1;
                let exp = n.revoke_attempts.saturating_sub(1).min(20);
                let delay = (self.settings.revoke_backoff_base_secs.max(1) << exp)
                    .min(self.settings.revoke_backoff_max_secs);
                n.next_revoke_at_unix_secs = Some(now + delay);
                n.last_revoke_error = Some(e.message.clone());
                if n.revoke_attempts >= self.settings.revoke_alert_after {
                    n.state = LeaseState::RevokeFailed;
                }
                tracing::warn!(lease_id = %n.id, attempts = n.revoke_attempts, error = %e.message, "revocation failed; will retry");
                let ev = AuditEvent::new(now, "credential.revocation_failed", BROKER, "retry")
                    .task(&n.task_id)
                    .lease(&n.id)
                    .detail(json!({"error": e.message, "attempts": n.revoke_attempts,
                        "next_attempt_at_unix_secs": n.next_revoke_at_unix_secs, "state": n.state.as_str()}));
                self.commit(
                    &ctx,
                    WriteBatch::new().write(Write::UpdateLease(n)).audit(ev),
                )
                .await?;
                Ok(false)
            }
        }
    }

    // ------------------------------------------------------------------ access requests

    fn resource(&self, id: &str) -> Result<&Resource> {
        self.resources.get(id).ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnknownResource,
                format!("no resource {}", quote(id)),
            )
        })
    }

    fn open_task_check(&self, task: &Task) -> Result<()> {
        if task.state != TaskState::Open || self.now() >= task.expires_at_unix_secs {
            let st = if task.state == TaskState::Open {
                "expired"
            } else {
                task.state.as_str()
            };
            return Err(ApiError::new(
                ErrorCode::TaskNotOpen,
                format!("task `{}` is {st}", task.id),
            ));
        }
        Ok(())
    }

    async fn approval_context(&self, req: &AccessRequest) -> Result<ApprovalContext> {
        if req.approvers.is_empty() {
            return Ok(ApprovalContext::default());
        }
        let approvals = self.store.approvals(&req.id).await?;
        Ok(quorum_context(&approvals, &self.step_groups(req)))
    }

    fn step_groups(&self, req: &AccessRequest) -> Vec<GroupQuorum> {
        req.step_up_groups.clone()
    }

    /// Evaluates policy for a request, enforcing hard sandbox/production separation first.
    #[allow(clippy::too_many_arguments)]
    fn decide(
        &self,
        task: &Task,
        workload: &Workload,
        resource: &Resource,
        actions: &[String],
        ttl_secs: i64,
        source_ip: Option<&str>,
        approval: &ApprovalContext,
        params: &serde_json::Value,
    ) -> Decision {
        let principals = login_principals(resource, params);
        decide(
            &self.policy(),
            &EvalInput {
                workload,
                resource,
                actions,
                task,
                ttl_secs,
                now_unix_secs: self.now(),
                source_ip,
                approval,
                principals: principals.as_deref(),
            },
        )
    }

    /// Asks for access in a task. Returns the credential (allow), the denial with policy ids and
    /// reasons (deny), or a pending request (step-up).
    ///
    /// # Errors
    /// `task_not_found`, `task_not_open`, `unknown_resource`, `unknown_action`,
    /// `ttl_out_of_bounds`, `invalid_request`, `provider_failed`, `store_unavailable`.
    pub async fn request_access(
        &self,
        ctx: &CallCtx,
        caller: &Workload,
        task_id: &str,
        input: RequestAccess,
    ) -> Result<AccessOutcome> {
        self.request_access_bound(ctx, caller, task_id, input, TokenBinding::default())
            .await
    }

    /// [`request_access`](Self::request_access) whose credential, if one is minted, carries
    /// `binding`: a DPoP key thumbprint (RFC 9449 `cnf.jkt`), an RFC 8693 actor and subject.
    ///
    /// # Errors
    /// As `request_access`, and `dpop_required` when the resource requires a key binding and
    /// `binding` names no key.
    ///
    /// # Security
    /// `binding` must come from verified inputs only (a checked DPoP proof, verified tokens).
    pub async fn request_access_bound(
        &self,
        ctx: &CallCtx,
        caller: &Workload,
        task_id: &str,
        input: RequestAccess,
        binding: TokenBinding,
    ) -> Result<AccessOutcome> {
        let task = self.owned_task_cached(caller, task_id).await?;
        self.open_task_check(&task)?;
        check_text(
            "justification",
            &input.justification,
            self.settings.max_text_len,
            false,
        )?;
        let resource = self.resource(&input.resource)?.clone();
        check_binding(&resource, &binding)?;
        let actions: Vec<String> = input
            .actions
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if actions.is_empty() {
            return Err(bad("`actions` must name at least one action"));
        }
        for a in &actions {
            if !resource.actions.contains(a) {
                return Err(ApiError::new(
                    ErrorCode::UnknownAction,
                    format!("resource `{}` offers no action {}", resource.id, quote(a)),
                ));
            }
        }
        let ttl = input.ttl_secs.unwrap_or(resource.default_ttl_secs);
        if ttl <= 0 {
            return Err(ApiError::new(
                ErrorCode::TtlOutOfBounds,
                format!("ttl must be positive, got {ttl}"),
            ));
        }
        let ttl = ttl.min(resource.max_ttl_secs);
        let now = self.now();
        let id = new_id("req");
        let digest = request_digest(
            &id,
            &task.id,
            &caller.id,
            &resource.id,
            &actions,
            ttl,
            &input.justification,
            &input.params,
        );
        let decision = self.decide(
            &task,
            caller,
            &resource,
            &actions,
            ttl,
            ctx.source_ip.as_deref(),
            &ApprovalContext::default(),
            &input.params,
        );
        let mut req = AccessRequest {
            id,
            task_id: task.id.clone(),
            principal_id: caller.id.clone(),
            resource_id: resource.id.clone(),
            actions,
            ttl_secs: ttl,
            justification: input.justification,
            state: RequestState::Denied,
            decision: decision.clone(),
            digest,
            source_ip: ctx.source_ip.clone(),
            created_at_unix_secs: now,
            expires_at_unix_secs: now,
            lease_id: None,
            approvers: vec![],
            params: input.params.clone(),
            step_up_groups: match &decision {
                Decision::StepUp { groups, .. } => groups.clone(),
                _ => vec![],
            },
            version: 1,
        };
        // The state the request reaches by this decision (an allowed request is granted in the
        // same commit as its credential).
        let decided = {
            let mut r = req.clone();
            if matches!(decision, Decision::Allow { .. }) {
                r.state = RequestState::Granted;
            }
            decision_event(now, &caller.id, &r)
        };
        match decision {
            Decision::Deny { .. } => {
                self.commit(
                    ctx,
                    WriteBatch::new()
                        .write(Write::InsertRequest(req.clone()))
                        .audit(decided),
                )
                .await?;
                Ok(AccessOutcome::Denied(req))
            }
            Decision::StepUp { .. } => {
                req.state = RequestState::Pending;
                req.expires_at_unix_secs = now + self.settings.pending_ttl_secs;
                let decided = decision_event(now, &caller.id, &req);
                self.commit(
                    ctx,
                    WriteBatch::new()
                        .write(Write::InsertRequest(req.clone()))
                        .audit(decided),
                )
                .await?;
                Ok(AccessOutcome::Pending(req))
            }
            Decision::Allow { max_ttl_secs, .. } => {
                let grant = self
                    .mint(
                        ctx,
                        &task,
                        &resource,
                        req,
                        Some(decided),
                        max_ttl_secs,
                        &input.params,
                        &binding,
                        true,
                    )
                    .await?;
                Ok(grant)
            }
        }
    }

    /// Mints for an allowed request and commits request, lease and audit together.
    #[allow(clippy::too_many_arguments)]
    async fn mint(
        &self,
        ctx: &CallCtx,
        task: &Task,
        resource: &Resource,
        mut req: AccessRequest,
        decided: Option<AuditEvent>,
        policy_max: Option<i64>,
        params: &serde_json::Value,
        binding: &TokenBinding,
        insert_request: bool,
    ) -> Result<AccessOutcome> {
        let now = self.now();
        let window = ttl::grant_window(
            now,
            req.ttl_secs,
            resource.max_ttl_secs,
            resource.max_lifetime_secs,
            policy_max,
            task.expires_at_unix_secs,
        )
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::TaskNotOpen,
                format!("task `{}` has no time left", task.id),
            )
        })?;
        let provider = self
            .providers
            .get(&resource.kind)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Internal,
                    format!("provider `{}` is not configured", resource.kind),
                )
            })?
            .clone();
        let lease_id = new_id("lease");
        let mut lease = Lease {
            id: lease_id.clone(),
            task_id: task.id.clone(),
            request_id: req.id.clone(),
            resource_id: resource.id.clone(),
            provider: resource.kind.clone(),
            actions: req.actions.clone(),
            state: LeaseState::Issuing,
            issued_at_unix_secs: now,
            expires_at_unix_secs: window.expires_at_unix_secs,
            max_expires_at_unix_secs: window.max_expires_at_unix_secs,
            renewals: 0,
            revocation_handle: String::new(),
            credential_hmac: None,
            revoke_reason: None,
            revoke_attempts: 0,
            next_revoke_at_unix_secs: None,
            last_revoke_error: None,
            revoked_at_unix_secs: None,
            binding: binding.clone(),
            version: 1,
        };
        req.state = RequestState::Granted;
        req.lease_id = Some(lease_id.clone());
        req.version += if insert_request { 0 } else { 1 };
        let req_write = if insert_request {
            Write::InsertRequest(req.clone())
        } else {
            Write::UpdateRequest(req.clone())
        };
        let external = provider.has_external_state();
        let guard = Write::RequireTaskOpen {
            task_id: task.id.clone(),
            version: task.version,
        };
        let mut pre = WriteBatch::new().write(guard.clone());
        if external {
            // Durable intent first: a crash after minting leaves a lease the reaper revokes.
            pre = pre
                .write(req_write.clone())
                .write(Write::InsertLease(lease.clone()));
            if let Some(d) = &decided {
                pre = pre.audit(d.clone());
            }
            self.commit(ctx, pre).await?;
        }
        let mint_req = MintRequest {
            lease_id: &lease_id,
            task,
            principal_id: &task.owner.id,
            resource,
            actions: &req.actions,
            issued_at_unix_secs: now,
            expires_at_unix_secs: window.expires_at_unix_secs,
            params,
            binding,
        };
        let minted = match provider.mint(&mint_req).await {
            Ok(m) => m,
            Err(e) => {
                if external {
                    // Nothing should exist, but the lease is revoked to be sure.
                    let (b, rv) = self.revocation_writes(
                        WriteBatch::new(),
                        &[lease.clone()],
                        "mint_failed",
                        BROKER,
                        now,
                    );
                    let _ = self.commit(ctx, b).await;
                    for l in rv {
                        let _ = self.attempt_revoke(l).await;
                    }
                } else {
                    let ev = AuditEvent::new(
                        now,
                        "credential.mint_failed",
                        &req.principal_id,
                        "provider_failed",
                    )
                    .task(&task.id)
                    .access_request(&req.id)
                    .detail(json!({"error": e.message}));
                    let _ = self.commit(ctx, WriteBatch::new().audit(ev)).await;
                }
                let code = if e.invalid_request {
                    ErrorCode::InvalidRequest
                } else {
                    ErrorCode::ProviderFailed
                };
                return Err(ApiError::new(
                    code,
                    format!("could not mint: {}", e.message),
                ));
            }
        };
        lease.state = LeaseState::Active;
        lease.revocation_handle = minted.revocation_handle;
        lease.credential_hmac = Some(self.hasher.hmac_secret(&minted.credential.secret));
        let issued = AuditEvent::new(now, "credential.issued", &req.principal_id, "ok")
            .task(&task.id)
            .access_request(&req.id)
            .lease(&lease.id)
            .detail(json!({
                "resource": resource.id, "provider": resource.kind, "actions": req.actions,
                "expires_at_unix_secs": lease.expires_at_unix_secs,
                "max_expires_at_unix_secs": lease.max_expires_at_unix_secs,
                "credential_hmac": lease.credential_hmac, "kind": minted.credential.kind,
                // Sender constraint and delegation (never secrets): who may use it, for whom.
                "cnf_jkt": lease.binding.jkt, "act": lease.binding.act,
                "subject": lease.binding.subject,
            }));
        let batch = if external {
            // The `issuing` row is at version 1; activation is a compare-and-set on it.
            lease.version += 1;
            WriteBatch::new()
                .write(Write::UpdateLease(lease.clone()))
                .audit(issued)
        } else {
            let mut b = WriteBatch::new()
                .write(guard)
                .write(req_write)
                .write(Write::InsertLease(lease.clone()));
            if let Some(d) = decided {
                b = b.audit(d);
            }
            b.audit(issued)
        };
        let generation = self.live_generation();
        if let Err(e) = self.commit(ctx, batch).await {
            if external {
                let _ = provider.revoke(&lease).await;
            }
            return Err(e.into());
        }
        self.index_insert_since(&lease, task, generation);
        Ok(AccessOutcome::Granted(Box::new(Grant {
            request: req,
            lease,
            credential: minted.credential,
        })))
    }

    /// An access request of the caller's task.
    ///
    /// # Errors
    /// `task_not_found`, `request_not_found`.
    pub async fn request(
        &self,
        caller: &Workload,
        task_id: &str,
        request_id: &str,
    ) -> Result<AccessRequest> {
        let task = self.owned_task(caller, task_id).await?;
        match self.store.request(request_id).await? {
            Some(r) if r.task_id == task.id => Ok(r),
            _ => Err(ApiError::new(
                ErrorCode::RequestNotFound,
                format!("no request {}", quote(request_id)),
            )),
        }
    }

    /// Claims the credential of an approved request. Policy is evaluated again, with the
    /// approval in context, before anything is minted; the credential is delivered once.
    ///
    /// # Errors
    /// `request_not_found`, `request_not_pending` (denied, or already claimed), `request_expired`,
    /// `task_not_open`, `provider_failed`.
    pub async fn claim(
        &self,
        ctx: &CallCtx,
        caller: &Workload,
        task_id: &str,
        request_id: &str,
    ) -> Result<AccessOutcome> {
        self.claim_bound(ctx, caller, task_id, request_id, TokenBinding::default())
            .await
    }

    /// [`claim`](Self::claim) whose credential carries `binding` (see
    /// [`request_access_bound`](Self::request_access_bound)).
    ///
    /// # Errors
    /// As `claim`, and `dpop_required` when the resource requires a key binding.
    ///
    /// # Security
    /// `binding` must come from verified inputs only.
    pub async fn claim_bound(
        &self,
        ctx: &CallCtx,
        caller: &Workload,
        task_id: &str,
        request_id: &str,
        binding: TokenBinding,
    ) -> Result<AccessOutcome> {
        let req = self.request(caller, task_id, request_id).await?;
        let task = self.owned_task(caller, task_id).await?;
        match req.state {
            RequestState::Pending => return Ok(AccessOutcome::Pending(req)),
            RequestState::Denied => return Ok(AccessOutcome::Denied(req)),
            RequestState::Granted => {
                return Err(ApiError::new(
                    ErrorCode::RequestNotPending,
                    format!(
                        "request `{}` was already granted; its credential is delivered only once",
                        req.id
                    ),
                ));
            }
            RequestState::Expired => {
                return Err(ApiError::new(
                    ErrorCode::RequestExpired,
                    format!("request `{}` expired", req.id),
                ));
            }
            RequestState::Approved => {}
        }
        let now = self.now();
        if now >= req.expires_at_unix_secs {
            self.expire_request(req.clone()).await?;
            return Err(ApiError::new(
                ErrorCode::RequestExpired,
                format!("request `{}` expired", req.id),
            ));
        }
        self.open_task_check(&task)?;
        let resource = self.resource(&req.resource_id)?.clone();
        check_binding(&resource, &binding)?;
        let approval = self.approval_context(&req).await?;
        let decision = self.decide(
            &task,
            caller,
            &resource,
            &req.actions,
            req.ttl_secs,
            ctx.source_ip.as_deref(),
            &approval,
            &req.params,
        );
        match decision {
            Decision::Allow { max_ttl_secs, .. } => {
                let mut r = req.clone();
                r.decision = decision.clone();
                let ev = decision_event(now, &caller.id, &r);
                self.mint(
                    ctx,
                    &task,
                    &resource,
                    r,
                    Some(ev),
                    max_ttl_secs,
                    &req.params,
                    &binding,
                    false,
                )
                .await
            }
            other => {
                let mut r = req.clone();
                r.decision = other;
                r.state = RequestState::Denied;
                r.version += 1;
                let ev = decision_event(now, &caller.id, &r);
                self.commit(
                    ctx,
                    WriteBatch::new()
                        .write(Write::UpdateRequest(r.clone()))
                        .audit(ev),
                )
                .await?;
                Ok(AccessOutcome::Denied(r))
            }
        }
    }

    async fn expire_request(&self, req: AccessRequest) -> Result<()> {
        let mut r = req;
        r.state = RequestState::Expired;
        r.version += 1;
        let ev = AuditEvent::new(self.now(), "request.expired", BROKER, "expired")
            .task(&r.task_id)
            .access_request(&r.id);
        match self
            .commit(
                &CallCtx::default(),
                WriteBatch::new().write(Write::UpdateRequest(r)).audit(ev),
            )
            .await
        {
            Ok(_) | Err(StoreError::Conflict(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    // ------------------------------------------------------------------ approvals

    /// Pending requests the human could vote on (they are in a required group, and the request
    /// is not their own agent's), oldest first, with each request's task.
    ///
    /// # Errors
    /// `store_unavailable`.
    pub async fn pending_for(&self, human: &Human) -> Result<Vec<(AccessRequest, Task)>> {
        let now = self.now();
        let mut out = Vec::new();
        for r in self.store.pending_requests(500).await? {
            if r.expires_at_unix_secs <= now {
                continue;
            }
            let eligible = self
                .step_groups(&r)
                .iter()
                .any(|g| human.groups.contains(&g.group));
            if !eligible {
                continue;
            }
            if let Some(t) = self.store.task(&r.task_id).await? {
                out.push((r, t));
            }
        }
        Ok(out)
    }

    /// Records a human's verdict on a pending request.
    ///
    /// The approval binds to `digest` (the exact request), counts once per distinct approver,
    /// may not come from the human the agent acts for, and only counts for the approver's groups
    /// that the request needs. At quorum of every group the policy is evaluated again with the
    /// approval in context; the request becomes `approved` (claimable) or `denied`.
    ///
    /// # Errors
    /// `request_not_found`, `request_not_pending`, `request_expired`, `approval_digest_mismatch`,
    /// `self_approval_forbidden`, `approver_not_eligible`, `already_voted`, `conflict`.
    pub async fn vote(
        &self,
        ctx: &CallCtx,
        human: &Human,
        request_id: &str,
        digest: &str,
        verdict: Verdict,
        reason: &str,
    ) -> Result<AccessRequest> {
        check_text("reason", reason, self.settings.max_text_len, false)?;
        for _attempt in 0..4 {
            let req = self.store.request(request_id).await?.ok_or_else(|| {
                ApiError::new(
                    ErrorCode::RequestNotFound,
                    format!("no request {}", quote(request_id)),
                )
            })?;
            if req.state != RequestState::Pending {
                return Err(ApiError::new(
                    ErrorCode::RequestNotPending,
                    format!("request `{}` is {}", req.id, req.state.as_str()),
                ));
            }
            let now = self.now();
            if now >= req.expires_at_unix_secs {
                self.expire_request(req.clone()).await?;
                return Err(ApiError::new(
                    ErrorCode::RequestExpired,
                    format!("request `{}` expired", req.id),
                ));
            }
            if !constant_time_eq(digest.as_bytes(), req.digest.as_bytes()) {
                return Err(ApiError::new(
                    ErrorCode::ApprovalDigestMismatch,
                    format!(
                        "digest {} is not the digest of request `{}`",
                        quote(digest),
                        req.id
                    ),
                ));
            }
            let task = self.task_unchecked(&req.task_id).await?;
            let is_self = task
                .on_behalf_of
                .as_deref()
                .is_some_and(|h| h.eq_ignore_ascii_case(&human.id));
            if is_self {
                return Err(ApiError::new(
                    ErrorCode::SelfApprovalForbidden,
                    format!(
                        "`{}` is the human this agent acts for and cannot approve its request",
                        human.id
                    ),
                ));
            }
            let needed = self.step_groups(&req);
            let groups: Vec<String> = needed
                .iter()
                .filter(|g| human.groups.contains(&g.group))
                .map(|g| g.group.clone())
                .collect();
            if groups.is_empty() {
                return Err(ApiError::new(
                    ErrorCode::ApproverNotEligible,
                    format!(
                        "`{}` is in none of the groups that must approve ({})",
                        human.id,
                        needed
                            .iter()
                            .map(|g| g.group.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            let mut approvals = self.store.approvals(&req.id).await?;
            if approvals
                .iter()
                .any(|a| a.approver.eq_ignore_ascii_case(&human.id))
            {
                return Err(ApiError::new(
                    ErrorCode::AlreadyVoted,
                    format!("`{}` already voted on request `{}`", human.id, req.id),
                ));
            }
            let approval = Approval {
                id: new_id("apr"),
                request_id: req.id.clone(),
                digest: req.digest.clone(),
                approver: human.id.clone(),
                groups: groups.clone(),
                verdict,
                reason: reason.to_owned(),
                created_at_unix_secs: now,
            };
            approvals.push(approval.clone());
            let mut r = req.clone();
            r.version += 1;
            let recorded =
                AuditEvent::new(now, "approval.recorded", &human.id, verdict_str(verdict))
                    .task(&r.task_id)
                    .access_request(&r.id)
                    .detail(json!({"groups": groups, "reason": reason, "digest": r.digest}));
            let mut batch = WriteBatch::new();
            match verdict {
                Verdict::Deny => {
                    r.state = RequestState::Denied;
                    r.decision = Decision::Deny {
                        policy_ids: vec![],
                        reasons: vec![format!("denied by approver `{}`: {}", human.id, reason)],
                    };
                }
                Verdict::Approve => {
                    r.approvers.push(human.id.clone());
                    let ctxa = quorum_context(&approvals, &needed);
                    if ctxa.approved {
                        let resource = self.resource(&r.resource_id)?.clone();
                        let d = self.decide(
                            &task,
                            &task.owner,
                            &resource,
                            &r.actions,
                            r.ttl_secs,
                            r.source_ip.as_deref(),
                            &ctxa,
                            &r.params,
                        );
                        match d {
                            Decision::Allow { .. } => {
                                r.state = RequestState::Approved;
                                r.decision = d;
                                r.expires_at_unix_secs = now + self.settings.pending_ttl_secs;
                            }
                            other => {
                                r.state = RequestState::Denied;
                                r.decision = other;
                            }
                        }
                    }
                }
            }
            batch = batch
                .write(Write::InsertApproval(approval))
                .write(Write::UpdateRequest(r.clone()))
                .audit(recorded);
            if r.state != RequestState::Pending {
                batch = batch.audit(decision_event(now, &human.id, &r));
            }
            match self.commit(ctx, batch).await {
                Ok(_) => return Ok(r),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::new(
            ErrorCode::Conflict,
            "the request changed concurrently; try again",
        ))
    }

    // ------------------------------------------------------------------ leases

    /// Leases of the caller's task.
    ///
    /// # Errors
    /// `task_not_found`.
    pub async fn leases(&self, caller: &Workload, task_id: &str) -> Result<Vec<Lease>> {
        let task = self.owned_task(caller, task_id).await?;
        Ok(self.store.leases_by_task(&task.id).await?)
    }

    async fn owned_lease(&self, caller: &Workload, lease_id: &str) -> Result<(Lease, Task)> {
        let not_found = || {
            ApiError::new(
                ErrorCode::LeaseNotFound,
                format!("no lease {}", quote(lease_id)),
            )
        };
        let lease = self.store.lease(lease_id).await?.ok_or_else(not_found)?;
        let task = self
            .owned_task(caller, &lease.task_id)
            .await
            .map_err(|_| not_found())?;
        Ok((lease, task))
    }

    /// Renews a lease: a fresh, full policy evaluation with current context, then a new
    /// credential whose validity never passes the lease's max TTL or the task's end. A renewal
    /// that policy no longer allows revokes the lease.
    ///
    /// # Errors
    /// `lease_not_found`, `lease_not_active`, `task_not_open`, `policy_denied`,
    /// `environment_separation`, `ttl_out_of_bounds` (max TTL reached), `provider_failed`.
    pub async fn renew(
        &self,
        ctx: &CallCtx,
        caller: &Workload,
        lease_id: &str,
        ttl_secs: Option<i64>,
    ) -> Result<Grant> {
        let (lease, task) = self.owned_lease(caller, lease_id).await?;
        let now = self.now();
        if lease.state != LeaseState::Active || now >= lease.expires_at_unix_secs {
            return Err(ApiError::new(
                ErrorCode::LeaseNotActive,
                format!(
                    "lease `{}` is {}",
                    lease.id,
                    if lease.state == LeaseState::Active {
                        "expired"
                    } else {
                        lease.state.as_str()
                    }
                ),
            ));
        }
        self.open_task_check(&task)?;
        let resource = self.resource(&lease.resource_id)?.clone();
        let req = self
            .store
            .request(&lease.request_id)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::Internal, "lease has no request"))?;
        let ttl = ttl_secs.unwrap_or(req.ttl_secs);
        if ttl <= 0 {
            return Err(ApiError::new(
                ErrorCode::TtlOutOfBounds,
                format!("ttl must be positive, got {ttl}"),
            ));
        }
        // As for a new request: clamp to the resource's max before policy sees it.
        let ttl = ttl.min(resource.max_ttl_secs);
        let approval = self.approval_context(&req).await?;
        let decision = self.decide(
            &task,
            caller,
            &resource,
            &lease.actions,
            ttl,
            ctx.source_ip.as_deref(),
            &approval,
            &req.params,
        );
        let policy_max = match &decision {
            Decision::Allow { max_ttl_secs, .. } => *max_ttl_secs,
            other => {
                let (ids, reasons) = match other {
                    Decision::Deny {
                        policy_ids,
                        reasons,
                    } => (policy_ids.clone(), reasons.clone()),
                    Decision::StepUp { policy_ids, .. } => (
                        policy_ids.clone(),
                        vec!["renewal needs a new approval; open a new request".into()],
                    ),
                    Decision::Allow { .. } => unreachable!(),
                };
                let ev =
                    AuditEvent::new(now, "credential.renewal_denied", &caller.id, other.kind())
                        .task(&task.id)
                        .lease(&lease.id)
                        .detail(json!({"policy_ids": ids, "reasons": reasons}));
                let (b, rv) = self.revocation_writes(
                    WriteBatch::new().audit(ev),
                    std::slice::from_ref(&lease),
                    "renewal_denied",
                    &caller.id,
                    now,
                );
                self.commit(ctx, b).await?;
                self.index_remove(&lease);
                for l in rv {
                    let _ = self.attempt_revoke(l).await;
                }
                let code = if resource.production && !task.production {
                    ErrorCode::EnvironmentSeparation
                } else {
                    ErrorCode::PolicyDenied
                };
                return Err(ApiError::new(
                    code,
                    format!(
                        "renewal denied ({}); the lease was revoked: {}",
                        ids.join(", "),
                        reasons.join("; ")
                    ),
                ));
            }
        };
        let expires = ttl::renewal_expiry(
            now,
            ttl,
            resource.max_ttl_secs,
            policy_max,
            lease.max_expires_at_unix_secs,
            task.expires_at_unix_secs,
        )
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::TtlOutOfBounds,
                format!("lease `{}` reached its max ttl", lease.id),
            )
        })?;
        let provider = self
            .providers
            .get(&lease.provider)
            .ok_or_else(|| ApiError::new(ErrorCode::Internal, "provider not configured"))?
            .clone();
        let mint_req = MintRequest {
            lease_id: &lease.id,
            task: &task,
            principal_id: &task.owner.id,
            resource: &resource,
            actions: &lease.actions,
            issued_at_unix_secs: now,
            expires_at_unix_secs: expires,
            params: &req.params,
            binding: &lease.binding,
        };
        let minted = provider.renew(&lease, &mint_req).await.map_err(|e| {
            ApiError::new(
                if e.invalid_request {
                    ErrorCode::InvalidRequest
                } else {
                    ErrorCode::ProviderFailed
                },
                format!("could not renew: {}", e.message),
            )
        })?;
        let mut n = lease.clone();
        n.expires_at_unix_secs = expires;
        n.renewals += 1;
        n.version += 1;
        n.revocation_handle = minted.revocation_handle;
        n.credential_hmac = Some(self.hasher.hmac_secret(&minted.credential.secret));
        let ev = AuditEvent::new(now, "credential.renewed", &caller.id, "ok")
            .task(&task.id)
            .lease(&n.id)
            .access_request(&n.request_id)
            .detail(
                json!({"policy_ids": decision.policy_ids(), "expires_at_unix_secs": expires,
                "renewals": n.renewals, "credential_hmac": n.credential_hmac}),
            );
        let generation = self.live_generation();
        self.commit(
            ctx,
            WriteBatch::new()
                .write(Write::UpdateLease(n.clone()))
                .audit(ev),
        )
        .await?;
        self.index_remove(&lease);
        self.index_insert_since(&n, &task, generation);
        Ok(Grant {
            request: req,
            lease: n,
            credential: minted.credential,
        })
    }

    /// Revokes a lease of the caller's task.
    ///
    /// # Errors
    /// `lease_not_found`, `lease_not_active`, `store_unavailable`.
    pub async fn revoke(&self, ctx: &CallCtx, caller: &Workload, lease_id: &str) -> Result<Lease> {
        let (lease, _) = self.owned_lease(caller, lease_id).await?;
        self.revoke_lease(ctx, lease, "revoked_by_owner", &caller.id)
            .await
    }

    /// Revokes whatever lease the credential `value` belongs to (RFC 7009: unknown or inactive
    /// tokens are not an error). Returns the lease id if one was revoked.
    ///
    /// # Errors
    /// `store_unavailable`.
    ///
    /// With `owner`, only a lease of a task that workload owns is revoked (RFC 7009 §2.1: the
    /// token must have been issued to the caller); others are silently ignored.
    pub async fn revoke_by_value(
        &self,
        ctx: &CallCtx,
        value: &str,
        actor: &str,
        owner: Option<&Workload>,
    ) -> Result<Option<String>> {
        let h = self.hasher.hmac_hex(value);
        match self.store.lease_by_credential_hmac(&h).await? {
            Some(l) if l.state.is_live() => {
                if let Some(w) = owner
                    && self.owned_task(w, &l.task_id).await.is_err()
                {
                    return Ok(None);
                }
                let id = l.id.clone();
                self.revoke_lease(ctx, l, "revoked_by_token", actor).await?;
                Ok(Some(id))
            }
            _ => Ok(None),
        }
    }

    /// Revokes a lease (operator or internal use).
    ///
    /// # Errors
    /// `lease_not_active` if already revoked, `store_unavailable`.
    pub async fn revoke_lease(
        &self,
        ctx: &CallCtx,
        lease: Lease,
        reason: &str,
        actor: &str,
    ) -> Result<Lease> {
        if !lease.state.is_live() {
            return Err(ApiError::new(
                ErrorCode::LeaseNotActive,
                format!("lease `{}` is already revoked", lease.id),
            ));
        }
        let now = self.now();
        let (b, rv) = self.revocation_writes(
            WriteBatch::new(),
            std::slice::from_ref(&lease),
            reason,
            actor,
            now,
        );
        self.commit(ctx, b).await?;
        self.index_remove(&lease);
        for l in rv {
            let _ = self.attempt_revoke(l).await;
        }
        self.store
            .lease(&lease.id)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::Internal, "lease vanished"))
    }

    /// RFC 7662 introspection of a credential value: active only while its lease is active,
    /// unexpired, and the value is the lease's current credential.
    ///
    /// Served from the in-memory index; a credential not in it (minted by another replica, or
    /// the index is not trusted) is looked up in the store. Fails closed: if the store cannot
    /// be read within `settings.introspection_store_timeout`, the answer is `active: false`.
    pub async fn introspect(&self, value: &str) -> Introspection {
        let h = self.hasher.hmac_hex(value);
        let now = self.now();
        let generation = {
            let live = self.live.read().unwrap_or_else(|p| p.into_inner());
            if live.trust.answers_at(|| self.clock.monotonic())
                && let Some(e) = live.by_hmac.get(&h)
            {
                return Self::introspection(e, now);
            }
            live.generation
        };
        let lookup = tokio::time::timeout(
            self.settings.introspection_store_timeout,
            self.load_live_entry(&h),
        );
        let entry = match lookup.await {
            Ok(Ok(Some(e))) => e,
            Ok(Ok(None)) => {
                // Whatever a stale index held for this value is wrong: forget it (the write
                // lock only when there is something to forget: unknown values are common).
                let cached = self
                    .live
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .by_hmac
                    .contains_key(&h);
                if cached {
                    let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
                    if let Some(e) = live.by_hmac.remove(&h)
                        && live.by_lease.get(&e.lease_id) == Some(&h)
                    {
                        live.by_lease.remove(&e.lease_id);
                    }
                }
                return Introspection::default();
            }
            Ok(Err(e)) => {
                tracing::warn!(code = %e.code, error = %e.message, "introspection: store lookup failed; answering inactive");
                return Introspection::default();
            }
            Err(_) => {
                tracing::warn!(
                    timeout_ms = self.settings.introspection_store_timeout.as_millis() as u64,
                    "introspection: store lookup timed out; answering inactive"
                );
                return Introspection::default();
            }
        };
        let answer = Self::introspection(&entry, now);
        let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
        // Not cached if an invalidation arrived while the store was read: it may be newer.
        // Caching while the index is stale is sound: a change committed after this read is
        // applied before the feed can next confirm freshness.
        if live.trust != CacheTrust::Never && live.generation == generation {
            live.remove_lease(&entry.lease_id);
            live.by_lease.insert(entry.lease_id.clone(), h.clone());
            live.by_hmac.insert(h, entry);
        }
        answer
    }

    fn introspection(e: &LiveEntry, now: i64) -> Introspection {
        // A resource that requires binding never accepts an unbound token.
        if now >= e.exp || (e.require_dpop && e.binding.jkt.is_none()) {
            return Introspection::default();
        }
        Introspection {
            active: true,
            scope: Some(e.scope.clone()),
            sub: Some(e.sub.clone()),
            aud: Some(e.aud.clone()),
            exp: Some(e.exp),
            iat: Some(e.iat),
            jti: Some(e.lease_id.clone()),
            task_id: Some(e.task_id.clone()),
            resource: Some(e.resource.clone()),
            token_type: Some(
                if e.binding.jkt.is_some() {
                    "DPoP"
                } else {
                    "Bearer"
                }
                .into(),
            ),
            cnf: e.binding.jkt.as_ref().map(|j| json!({ "jkt": j })),
            act: e.binding.act.clone(),
            requires_dpop: e.require_dpop,
        }
    }

    /// The index entry of the active lease whose current credential has HMAC `h`, if any.
    async fn load_live_entry(&self, h: &str) -> Result<Option<LiveEntry>> {
        let Some(l) = self.store.lease_by_credential_hmac(h).await? else {
            return Ok(None);
        };
        if l.state != LeaseState::Active || l.credential_hmac.as_deref() != Some(h) {
            return Ok(None);
        }
        let Some(task) = self.store.task(&l.task_id).await? else {
            return Ok(None);
        };
        Ok(self.live_entry(&l, &task))
    }

    // ------------------------------------------------------------------ background work

    /// One reaper pass: expires overdue tasks (revoking their leases), expires stale requests,
    /// revokes expired leases and interrupted mints, and retries failed revocations. Safe to run
    /// after a crash or restart: everything it needs is in the store.
    ///
    /// # Errors
    /// `store_unavailable`.
    pub async fn reap(&self) -> Result<ReapReport> {
        let mut report = ReapReport::default();
        let now = self.now();
        let ctx = CallCtx::default();
        for t in self.store.expired_open_tasks(now, 200).await? {
            match self
                .end_task_internal(&ctx, t, TaskState::Expired, BROKER)
                .await
            {
                Ok(_) => report.tasks_expired += 1,
                Err(e) if e.code == ErrorCode::Conflict || e.code == ErrorCode::TaskNotOpen => {}
                Err(e) => return Err(e),
            }
        }
        for r in self.store.expired_requests(now, 500).await? {
            self.expire_request(r).await?;
            report.requests_expired += 1;
        }
        let due = self
            .store
            .claim_due_leases(
                now,
                self.settings.issuing_grace_secs,
                &self.settings.replica_id,
                now + self.settings.reaper_claim_secs.max(1),
                500,
            )
            .await?;
        for l in due {
            let l = match l.state {
                LeaseState::Active | LeaseState::Issuing => {
                    let reason = if l.state == LeaseState::Active {
                        "expired"
                    } else {
                        "mint_interrupted"
                    };
                    let (b, rv) = self.revocation_writes(
                        WriteBatch::new(),
                        std::slice::from_ref(&l),
                        reason,
                        BROKER,
                        now,
                    );
                    match self.commit(&ctx, b).await {
                        Ok(_) => {}
                        Err(StoreError::Conflict(_)) => continue,
                        Err(e) => return Err(e.into()),
                    }
                    self.index_remove(&l);
                    match rv.into_iter().next() {
                        Some(x) => x,
                        None => {
                            report.leases_revoked += 1;
                            continue;
                        }
                    }
                }
                _ => l,
            };
            match self.attempt_revoke(l).await {
                Ok(true) => report.leases_revoked += 1,
                Ok(false) => report.revocations_failed += 1,
                Err(e) if e.code == ErrorCode::Conflict => {}
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }

    /// Swaps in a new, already validated policy set and re-evaluates every active lease under it
    /// (continuous enforcement); leases the new set no longer allows are revoked.
    ///
    /// # Errors
    /// `store_unavailable` (the new set stays in force; re-run to finish re-evaluation).
    pub async fn reload_policies(
        &self,
        engine: PolicyEngine,
        source: &str,
    ) -> Result<ReloadReport> {
        let now = self.now();
        let fingerprint = engine.fingerprint().to_owned();
        let count = engine.policy_ids().len();
        let ev = AuditEvent::new(now, "policy.reloaded", BROKER, "ok")
            .detail(json!({"fingerprint": fingerprint, "policies": count, "source": source}));
        self.commit(&CallCtx::default(), WriteBatch::new().audit(ev))
            .await?;
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(engine);
        let mut report = ReloadReport {
            fingerprint,
            ..Default::default()
        };
        let mut after = String::new();
        loop {
            let page = self.store.active_leases(&after, 200).await?;
            let Some(last) = page.last() else { break };
            after = last.id.clone();
            for l in page {
                report.leases_checked += 1;
                let Some(task) = self.store.task(&l.task_id).await? else {
                    continue;
                };
                let Some(req) = self.store.request(&l.request_id).await? else {
                    continue;
                };
                let Ok(resource) = self.resource(&l.resource_id).cloned() else {
                    continue;
                };
                let approval = self.approval_context(&req).await?;
                let remaining = (l.expires_at_unix_secs - now).max(1);
                let d = self.decide(
                    &task,
                    &task.owner,
                    &resource,
                    &l.actions,
                    remaining,
                    req.source_ip.as_deref(),
                    &approval,
                    &req.params,
                );
                if !matches!(d, Decision::Allow { .. }) {
                    let id = l.id.clone();
                    let ctx = CallCtx::default();
                    let ev = AuditEvent::new(now, "credential.policy_revoked", BROKER, d.kind())
                        .task(&l.task_id)
                        .lease(&l.id)
                        .detail(json!({"policy_ids": d.policy_ids(), "fingerprint": report.fingerprint}));
                    ctx.push(ev);
                    match self.revoke_lease(&ctx, l, "policy_changed", BROKER).await {
                        Ok(_) => report.leases_revoked.push(id),
                        Err(e)
                            if e.code == ErrorCode::Conflict
                                || e.code == ErrorCode::LeaseNotActive => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(report)
    }

    /// Records that a policy reload was refused (the old set stays in force).
    ///
    /// # Errors
    /// `store_unavailable`.
    pub async fn record_reload_refused(&self, source: &str, error: &str) -> Result<()> {
        let ev = AuditEvent::new(self.now(), "policy.reload_refused", BROKER, "invalid")
            .detail(json!({"source": source, "error": error}));
        self.commit(&CallCtx::default(), WriteBatch::new().audit(ev))
            .await
            .map(|_| ())
            .map_err(Into::into)
    }

    /// Approvals of a request (for operators and approvers).
    ///
    /// # Errors
    /// `store_unavailable`.
    pub async fn approvals(&self, request_id: &str) -> Result<Vec<Approval>> {
        Ok(self.store.approvals(request_id).await?)
    }
}

/// Prefix of the reason given when hard separation denies.
pub const SEPARATION_REASON: &str = "sandbox and production are hard-separated";

/// The decision for one request: hard sandbox/production separation first (a non-production
/// task never receives a credential for a production resource, whatever the policies say),
/// then Cedar. Used by the broker and by `latch policy test`, so both decide identically.
pub fn decide(engine: &PolicyEngine, input: &EvalInput<'_>) -> Decision {
    if input.resource.production && !input.task.production {
        return Decision::Deny {
            policy_ids: vec![],
            reasons: vec![format!(
                "{SEPARATION_REASON}: task environment `{}` may not receive a credential for production resource `{}`",
                input.task.environment, input.resource.id
            )],
        };
    }
    engine.evaluate(input)
}

/// Runs one `latch policy test` case against `engine` and returns the decision.
///
/// # Errors
/// A message when the case names an unknown resource.
pub fn run_policy_case(
    engine: &PolicyEngine,
    resources: &[Resource],
    production_environments: &[String],
    case: &crate::policy::PolicyTestCase,
    now_unix_secs: i64,
) -> std::result::Result<Decision, String> {
    let resource = resources
        .iter()
        .find(|r| r.id == case.resource)
        .ok_or_else(|| {
            format!(
                "case {}: unknown resource {}",
                quote(&case.name),
                quote(&case.resource)
            )
        })?;
    let workload = Workload {
        id: "policy-test#workload".into(),
        issuer: "policy-test".into(),
        subject: "workload".into(),
        preset: "generic".into(),
        run_binding: None,
        on_behalf_of: None,
        claims: case.principal.clone(),
        token_expires_at_unix_secs: now_unix_secs + 600,
    };
    let task = Task {
        id: "task_policy_test".into(),
        owner: workload.clone(),
        purpose: case.name.clone(),
        repository: case
            .repository
            .clone()
            .or_else(|| case.principal.repository.clone()),
        branch: case
            .branch
            .clone()
            .or_else(|| case.principal.branch.clone()),
        environment: case.environment.clone(),
        production: production_environments
            .iter()
            .any(|p| p.eq_ignore_ascii_case(&case.environment)),
        on_behalf_of: None,
        state: TaskState::Open,
        created_at_unix_secs: now_unix_secs,
        expires_at_unix_secs: now_unix_secs + 3600,
        ended_at_unix_secs: None,
        version: 1,
    };
    let approval = ApprovalContext {
        approved: !case.approved_groups.is_empty(),
        approvers: if case.approved_groups.is_empty() {
            vec![]
        } else {
            vec!["policy-test-approver".into()]
        },
        groups: case.approved_groups.clone(),
    };
    let mut actions = case.actions.clone();
    actions.sort();
    actions.dedup();
    Ok(decide(
        engine,
        &EvalInput {
            workload: &workload,
            resource,
            actions: &actions,
            task: &task,
            ttl_secs: case.ttl_secs,
            now_unix_secs,
            source_ip: None,
            approval: &approval,
            principals: login_principals(resource, &serde_json::Value::Null).as_deref(),
        },
    ))
}

/// The login names a credential for `resource` would carry, as policy sees them in
/// `context.principals`: for resources whose settings list allowed `principals` (SSH
/// certificates), the ones the request asks for in `params.principals`, or all the resource
/// allows when it names none. The provider still refuses names outside the allowed list.
pub fn login_principals(resource: &Resource, params: &serde_json::Value) -> Option<Vec<String>> {
    let names = |v: &serde_json::Value| -> Option<Vec<String>> {
        v.as_array().map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
    };
    let allowed = names(resource.settings.get("principals")?)?;
    Some(params.get("principals").and_then(names).unwrap_or(allowed))
}

fn verdict_str(v: Verdict) -> &'static str {
    match v {
        Verdict::Approve => "approve",
        Verdict::Deny => "deny",
    }
}

fn decision_event(now: i64, actor: &str, req: &AccessRequest) -> AuditEvent {
    let (reasons, groups, max_ttl) = match &req.decision {
        Decision::Deny { reasons, .. } => (reasons.clone(), vec![], None),
        Decision::StepUp { groups, .. } => (vec![], groups.clone(), None),
        Decision::Allow { max_ttl_secs, .. } => (vec![], vec![], *max_ttl_secs),
    };
    AuditEvent::new(now, "request.decided", actor, req.decision.kind())
        .task(&req.task_id)
        .access_request(&req.id)
        .detail(json!({
            "resource": req.resource_id, "actions": req.actions, "ttl_secs": req.ttl_secs,
            "policy_ids": req.decision.policy_ids(), "reasons": reasons, "step_up_groups": groups,
            "policy_max_ttl_secs": max_ttl, "state": req.state.as_str(), "digest": req.digest,
            "approvers": req.approvers, "justification": req.justification,
        }))
}

/// Builds `context.approval` from recorded approvals: a group is satisfied when `quorum`
/// distinct approvers counted for it; `approved` when every needed group is.
fn quorum_context(approvals: &[Approval], needed: &[GroupQuorum]) -> ApprovalContext {
    let approve: Vec<&Approval> = approvals
        .iter()
        .filter(|a| a.verdict == Verdict::Approve)
        .collect();
    let mut groups = Vec::new();
    for g in needed {
        let distinct: BTreeSet<String> = approve
            .iter()
            .filter(|a| a.groups.contains(&g.group))
            .map(|a| a.approver.to_ascii_lowercase())
            .collect();
        if distinct.len() as u32 >= g.quorum {
            groups.push(g.group.clone());
        }
    }
    let approvers: Vec<String> = approve
        .iter()
        .map(|a| a.approver.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    ApprovalContext {
        approved: !needed.is_empty() && groups.len() == needed.len(),
        approvers,
        groups,
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

#[cfg(test)]
mod fold_tests {
    use super::*;

    fn auth(actor: &str) -> AuditEvent {
        AuditEvent::new(1, "auth.succeeded", actor, "ok")
            .detail(json!({"issuer": "https://ci", "principal_kind": "workload"}))
    }

    #[test]
    fn authentication_folds_into_the_callers_own_event_only() {
        let own = vec![
            AuditEvent::new(1, "request.decided", "wl", "allow").detail(json!({"resource": "r"})),
            AuditEvent::new(1, "credential.issued", "wl", "ok"),
        ];
        let out = fold_authentication(vec![auth("wl")], own);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].detail["auth"]["issuer"], "https://ci");
        assert_eq!(out[0].detail["resource"], "r");
        assert!(out[1].detail.get("auth").is_none());
        // Another actor's event, or none at all: the authentication keeps its own record.
        let out = fold_authentication(
            vec![auth("wl")],
            vec![AuditEvent::new(1, "task.expired", "latch", "ok")],
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].kind, "auth.succeeded");
        let out = fold_authentication(vec![auth("wl")], vec![]);
        assert_eq!(out[0].kind, "auth.succeeded");
        // A failure is never folded.
        let failed = AuditEvent::new(1, "auth.failed", "wl", "token_expired");
        let out = fold_authentication(vec![failed], vec![AuditEvent::new(1, "x", "wl", "ok")]);
        assert_eq!(out.len(), 2);
    }
}

#[cfg(test)]
mod cache_trust_tests {
    use super::{CacheState, CacheTrust};
    use proptest::prelude::*;
    use std::time::Duration;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn states() {
        let mut t = CacheTrust::Bounded {
            current_as_of: None,
            max_staleness: ms(500),
        };
        assert!(!t.answers_at(|| ms(1_000)), "no proof since reconnect");
        assert_eq!(t.state_at(ms(1_000)), CacheState::Stale { age_ms: None });
        t.confirm(ms(900), ms(1_000));
        assert!(t.answers_at(|| ms(1_399)));
        assert_eq!(t.state_at(ms(1_000)), CacheState::Fresh { age_ms: 100 });
        assert!(!t.answers_at(|| ms(1_400)), "the bound is exclusive");
        assert_eq!(
            t.state_at(ms(1_400)),
            CacheState::Stale { age_ms: Some(500) }
        );
        t.confirm(ms(5_000), ms(1_500)); // a proof "from the future" counts as now
        assert!(!t.answers_at(|| ms(2_000)));
        t.confirm(ms(100), ms(2_000)); // an older proof never moves the bound back
        assert_eq!(
            t.state_at(ms(2_000)),
            CacheState::Stale { age_ms: Some(500) }
        );
        assert!(CacheTrust::Always.answers_at(|| ms(0)));
        assert!(!CacheTrust::Never.answers_at(|| ms(0)));
    }

    proptest! {
        /// Safety: a change committed at `r` whose invalidation precedes (in the feed) every
        /// proof with `as_of > r` is never hidden by the cache for `max_staleness` or more
        /// after `r`: whenever the index answers at `t >= r + max_staleness`, a proof newer
        /// than `r` has been received (so the invalidation was applied). Liveness: a proof
        /// younger than the bound lets the index answer.
        #[test]
        fn the_cache_never_hides_a_change_past_the_bound(
            max in 1u64..2_000,
            r in 0u64..10_000,
            // (gap before receipt, as_of relative to receipt: negative = delay, positive = forged)
            proofs in proptest::collection::vec((0u64..700, -3_000i64..500), 0..40),
            probes in proptest::collection::vec(0u64..3_000, 1..20),
        ) {
            let max_staleness = ms(max);
            let mut trust = CacheTrust::Bounded { current_as_of: None, max_staleness };
            let mut now = 0u64;
            let mut newest_effective: Option<u64> = None;
            for (gap, rel) in proofs {
                now += gap;
                let as_of = now.saturating_add_signed(rel);
                trust.confirm(ms(as_of), ms(now));
                let effective = as_of.min(now);
                newest_effective = Some(newest_effective.map_or(effective, |e| e.max(effective)));
                for p in &probes {
                    let t = now + p;
                    let answers = trust.answers_at(|| ms(t));
                    if answers && t >= r + max {
                        prop_assert!(newest_effective.is_some_and(|e| e > r),
                            "answered at {t} though no proof is newer than the change at {r}");
                    }
                    if let Some(e) = newest_effective {
                        prop_assert_eq!(answers, t - e < max);
                    }
                }
            }
        }
    }
}
