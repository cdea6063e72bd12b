//! The [`Broker`] facade: every use case of Latch, orchestrated over the ports.
//!
//! HTTP handlers and the CLI stay thin: they extract the caller, call one method here, and map
//! the result. Every state change is committed together with its audit events
//! ([`crate::ports::WriteBatch`]); a failed commit means the action did not happen (a commit
//! whose answer was lost is read back first, see `outcome`).
//!
//! # Map
//! Each use case is an `impl Broker` block in a file of its own: `auth` (callers), `tasks`,
//! `access` (request, claim, mint), `approvals` (pending view, votes, quorum), `leases` (list,
//! renew), `console` (the approval console's sessions, views and reading rules), `revocation` (revoke, reaper), `introspection`, `reload` (policy reload), `leak`
//! (leak response to scan findings), `audit_read` (admin-checked audit query, find, export),
//! `exchange` (RFC 8693 token exchange), `ssf` (Shared Signals: revocations to transmit, and
//! what a received Security Event Token does). `call` holds the per-call context, `input` the use
//! cases' inputs, outputs and input checks, `cache` the live-lease index and task cache and how
//! far they are trusted, `live_index` the index's compact storage, `outcome` the read-back of a commit whose answer was lost.
//! This file holds the broker itself, its settings and accessors, `commit`/`flush`, and the
//! steps several use cases share (task ownership, revocation writes and attempts, the policy
//! decision, request expiry, the `request.decided` event).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::{ToolUseReport, check_text};
use crate::clock::Clock;
use crate::digest::{CredentialHasher, request_digest};
use crate::error::{ApiError, ErrorCode, Result, quote};
use crate::model::*;
use crate::policy::{ApprovalContext, EvalInput, PolicyEngine};
use crate::ports::{
    CredentialProvider, IdentityVerifier, MintRequest, Store, StoreError, Write, WriteBatch,
};
use crate::ttl;

mod access;
mod approvals;
mod audit_read;
mod auth;
mod cache;
mod call;
mod catalog;
mod console;
mod controls;
mod exchange;
mod freezes;
mod gateway;
mod history;
mod input;
mod introspection;
mod leak;
mod leases;
mod live_index;
mod notify;
mod oauth_grants;
mod operators;
mod outcome;
mod reload;
mod retention;
mod revocation;
mod ssf;
mod targets;
mod tasks;

pub use crate::policy::{SEPARATION_REASON, decide, login_principals, run_policy_case};
pub use approvals::PendingView;
pub use cache::CacheState;
pub use call::{CallCtx, PeerSvid};
pub use catalog::ResourceInfo;
pub use controls::{DEFAULT_REPORT_WINDOW_SECS, MAX_REPORT_WINDOW_SECS, WindowAsk};
pub use exchange::{
    AUTHZ_DETAILS_TYPE, ExchangeError, ExchangeOutcome, ExchangeParties, ExchangeRequest,
    LatchAccessDetail, auth_req_id,
};
pub use freezes::{FreezeReport, FreezeRequest};
pub use gateway::ToolCallOutcome;
pub use input::{
    AccessOutcome, Grant, OpenTask, RequestAccess, resource_requires_dpop, valid_human_id,
};
pub use introspection::Introspection;
pub use leak::{
    LATCH_ACCESS_TOKEN_KIND, LeakFinding, LeakResponse, LeakScope, ScanAnswer, ScanHit, ScanOutcome,
};
pub use notify::DeliveryOutcome;
pub use oauth_grants::{
    CodeExchange, ConsentClient, ConsentRequest, GrantError, IssuedTokens, pkce_s256_matches,
};
pub use operators::{LeasePage, LiveLease, OperatorFilter, TaskPage};
pub use reload::ReloadReport;
pub use revocation::ReapReport;
pub use ssf::{ReceiveReport, SignalPage};
pub use targets::{TargetStatus, TendReport};

use crate::policy::quorum_context;
use cache::{CacheTrust, LiveEntry, LiveIndex};
use call::fold_authentication;
use freezes::FreezeRead;
use input::{check_binding, check_name};
use live_index::LiveEntries;
use targets::{Attempt, Targets};

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
    /// Human groups allowed to read the audit log (query, find, export, checkpoints); from
    /// `[admin] groups` in `latch.toml` (default `latch-admins`).
    pub admin_groups: Vec<String>,
    /// How old a human's groups may be (seconds since the token's `iat` or the console
    /// sign-in) for a vote or an operator action to count (default 600); `[approvals]
    /// authority_max_age`.
    pub authority_max_age_secs: i64,
    /// Overall deadline of one call to a target (a provider's mint, renew, revoke or probe),
    /// connect included (default 10 s); `[targets] call_timeout` in `latch.toml`.
    pub target_call_timeout: Duration,
    /// Revocations one target works on at once (default 4); `[targets] concurrency`.
    pub target_concurrency: usize,
    /// Aggregation and rate limit of failed authentications per source (`[auth_failures]`).
    pub auth_failures: crate::auth_failures::AuthFailureSettings,
    /// The broker's public base URL (`[server] public_url`, default `http://<listen
    /// address>`): the base of the approval console's links
    /// ([`Broker::request_console_url`]). A trailing `/` is ignored.
    pub public_url: String,
    /// Whether this broker serves the approval console (`[console] enabled`, default false).
    /// Without it no answer or notification carries a console link (it would be a `404`).
    pub console_enabled: bool,
    /// Notifications to approvers: channels and the groups they serve, retries
    /// (`[[notifications]]`, `[notify]`).
    pub notify: crate::notify::NotifySettings,
    /// Lifetimes of the MCP authorization server's codes and tokens (`[mcp_oauth]`).
    pub oauth: crate::oauth_grant::OAuthGrantSettings,
    /// Budgets of tasks and workloads (`[budgets]`; none by default).
    pub budgets: crate::history::Budgets,
    /// The configuration facts the control report reads (`latch report controls`).
    pub controls: crate::controls::ControlConfig,
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
            admin_groups: vec!["latch-admins".into()],
            authority_max_age_secs: 600,
            target_call_timeout: Duration::from_secs(10),
            target_concurrency: 4,
            auth_failures: crate::auth_failures::AuthFailureSettings::default(),
            public_url: "http://localhost".into(),
            console_enabled: false,
            notify: crate::notify::NotifySettings::default(),
            oauth: crate::oauth_grant::OAuthGrantSettings::default(),
            budgets: crate::history::Budgets::default(),
            controls: crate::controls::ControlConfig::default(),
        }
    }
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
    /// Target health, revocation lanes and the in-flight set (see [`targets`]).
    targets: Targets,
    /// Failed authentications per source: aggregated audit and rate limit (see `auth`).
    auth_failures: crate::auth_failures::AuthFailures,
    /// The MCP gateway's upstreams, when configured (see `gateway`).
    gateway: std::sync::OnceLock<Arc<dyn crate::gateway::ToolUpstreams>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("resources", &self.resources.keys())
            .finish_non_exhaustive()
    }
}

const BROKER: &str = "latch";

/// What one policy decision is asked about; the broker adds the engine and the time.
struct Ask<'a> {
    task: &'a Task,
    /// The workload the credential would be for (the task's owner).
    workload: &'a Workload,
    resource: &'a Resource,
    /// Sorted, distinct actions.
    actions: &'a [String],
    /// TTL asked for, after clamping (seconds).
    ttl_secs: i64,
    source_ip: Option<&'a str>,
    /// Approvals recorded so far (empty for a new request).
    approval: &'a ApprovalContext,
    /// Provider parameters of the request.
    params: &'a serde_json::Value,
    /// The task's past and the workload's usage (`context.history`, `context.budget`).
    history: &'a history::HistoryView,
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, msg)
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
            auth_failures: crate::auth_failures::AuthFailures::new(
                parts.settings.auth_failures.clone(),
            ),
            settings: parts.settings,
            live: RwLock::new(LiveIndex {
                entries: LiveEntries::default(),
                generation: 0,
                trust: CacheTrust::Always,
            }),
            task_cache: RwLock::new(HashMap::new()),
            targets: Targets::default(),
            gateway: std::sync::OnceLock::new(),
        };
        b.load_live_index().await?;
        Ok(b)
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The store port, for wiring (startup, background jobs, tests). HTTP handlers use the
    /// use cases instead (e.g. [`Broker::audit_query`], [`Broker::ping`]).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Whether the store answers (readiness probes).
    ///
    /// # Errors
    /// `store_unavailable` when it does not.
    pub async fn ping(&self) -> Result<()> {
        Ok(self.store.ping().await?)
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

    /// The approval console's page of one access request:
    /// `{public_url}/console/requests/{request_id}`, or `None` when this broker does not serve
    /// the console ([`BrokerSettings::console_enabled`]). The one place this URL is spelled:
    /// every pending answer (REST, MCP, `/oauth/token`, `latch exec`) and every notification
    /// uses it, so none of them ever links to a page that does not exist.
    pub fn request_console_url(&self, request_id: &str) -> Option<String> {
        self.settings
            .console_enabled
            .then(|| format!("{}/console/requests/{request_id}", self.public_base()))
    }

    /// The approval console's page of one task: `{public_url}/console/tasks/{task_id}`, or
    /// `None` when the console is not served.
    pub fn task_console_url(&self, task_id: &str) -> Option<String> {
        self.settings
            .console_enabled
            .then(|| format!("{}/console/tasks/{task_id}", self.public_base()))
    }

    fn public_base(&self) -> &str {
        self.settings.public_url.trim_end_matches('/')
    }

    /// Keyed HMAC of a credential value (for leak search and revocation by value).
    pub fn credential_hmac(&self, value: &str) -> String {
        self.hasher.hmac_hex(value)
    }

    fn now(&self) -> i64 {
        self.clock.now_unix_secs()
    }

    /// Observes one revocation's latency, from its decision (`decided_unix_millis`) to now:
    /// `latch_revocation_duration_seconds{resource}` (seconds, on the injected clock).
    fn observe_revocation(&self, resource_id: &str, decided_unix_millis: i64) {
        let ms = self
            .clock
            .now_unix_millis()
            .saturating_sub(decided_unix_millis)
            .max(0);
        #[expect(
            clippy::cast_precision_loss,
            reason = "a latency in milliseconds stays far below 2^52"
        )]
        let secs = ms as f64 / 1000.0;
        metrics::histogram!(
            "latch_revocation_duration_seconds",
            "resource" => resource_id.to_owned()
        )
        .record(secs);
    }

    fn is_production(&self, env: &str) -> bool {
        Environment::from(env).is_production(&self.settings.production_environments)
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
            // Defence in depth: free text a caller wrote (a tool name, an attribute) never keeps
            // a credential-shaped word in the trail.
            crate::error::redact_json(&mut e.detail);
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
        let plan = outcome::ReadBack::of(&batch);
        let applied = match self.store.apply(batch).await {
            // The commit's answer was lost: read back whether it happened before answering.
            Err(StoreError::OutcomeUnknown(m)) => match self.committed_after_all(&plan).await {
                Some(seqs) => {
                    tracing::warn!("a commit's answer was lost, but its writes are stored");
                    Ok(seqs)
                }
                None => Err(StoreError::OutcomeUnknown(m)),
            },
            other => other,
        };
        match applied {
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

    /// Most open tasks the grant path keeps cached: a task is ≈ 1 KB as JSON and a few KB in
    /// memory, so this bounds the cache to tens of MB whatever the number of open tasks.
    const TASK_CACHE_MAX: usize = 10_000;

    fn cache_task(&self, t: Task) {
        let mut c = self.task_cache.write().unwrap_or_else(|p| p.into_inner());
        if t.state != TaskState::Open {
            c.remove(&t.id);
            return;
        }
        if c.len() >= Self::TASK_CACHE_MAX && !c.contains_key(&t.id) {
            // One arbitrary entry makes room (a miss costs one store read), rather than
            // emptying the cache for every task in use.
            if let Some(k) = c.keys().next().cloned() {
                c.remove(&k);
            }
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

    /// Loads a task the caller owns. Tasks of others are reported as not found.
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
            let decided = *n
                .revoke_requested_at_unix_millis
                .get_or_insert_with(|| self.clock.now_unix_millis());
            let in_place = self
                .providers
                .get(&l.provider)
                .is_some_and(|p| !p.has_external_state());
            if in_place {
                n.state = LeaseState::Revoked;
                n.revoked_at_unix_secs = Some(now);
                n.next_revoke_at_unix_secs = None;
                // Nothing outside the broker to undo: revoked as the batch commits.
                self.observe_revocation(&n.resource_id, decided);
                batch = batch.write(Write::UpdateLease(n.clone())).audit(
                    AuditEvent::new(now, AuditKind::CredentialRevoked, actor, "ok")
                        .task(&l.task_id)
                        .lease(&l.id)
                        .access_request(&l.request_id)
                        .detail(json!({"reason": n.revoke_reason, "provider": l.provider})),
                );
            } else {
                if matches!(n.state, LeaseState::Active | LeaseState::Issuing) {
                    n.state = LeaseState::Revoking;
                }
                // The caller attempts it right away; until that attempt could have ended, no
                // reaper (here or on another replica) takes it up as due.
                n.next_revoke_at_unix_secs = Some(now + self.claim_secs());
                batch = batch.write(Write::UpdateLease(n.clone())).audit(
                    AuditEvent::new(now, AuditKind::CredentialRevocationRequested, actor, "ok")
                        .task(&l.task_id)
                        .lease(&l.id)
                        .detail(json!({"reason": n.revoke_reason, "provider": l.provider})),
                );
                external.push(n);
            }
        }
        (batch, external)
    }

    /// Records the outcome of one revocation attempt: on success `revoked`; on failure the next
    /// attempt is scheduled with exponential backoff and, after `revoke_alert_after` attempts,
    /// the lease shows `revoke_failed`.
    async fn record_attempt(
        &self,
        lease: Lease,
        result: std::result::Result<(), crate::ports::ProviderError>,
    ) -> Result<()> {
        let now = self.now();
        let mut n = lease.clone();
        n.version += 1;
        let ctx = CallCtx::default();
        match result {
            Ok(()) => {
                n.state = LeaseState::Revoked;
                n.revoked_at_unix_secs = Some(now);
                n.next_revoke_at_unix_secs = None;
                n.last_revoke_error = None;
                if let Some(decided) = n.revoke_requested_at_unix_millis {
                    self.observe_revocation(&n.resource_id, decided);
                }
                let ev = AuditEvent::new(now, AuditKind::CredentialRevoked, BROKER, "ok")
                    .task(&n.task_id)
                    .lease(&n.id)
                    .access_request(&n.request_id)
                    .detail(json!({"reason": n.revoke_reason, "provider": n.provider, "attempts": n.revoke_attempts + 1}));
                self.commit(
                    &ctx,
                    WriteBatch::new().write(Write::UpdateLease(n)).audit(ev),
                )
                .await?;
                Ok(())
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
                let ev = AuditEvent::new(now, AuditKind::CredentialRevocationFailed, BROKER, "retry")
                    .task(&n.task_id)
                    .lease(&n.id)
                    .detail(json!({"error": e.message, "attempts": n.revoke_attempts,
                        "next_attempt_at_unix_secs": n.next_revoke_at_unix_secs, "state": n.state.as_str()}));
                self.commit(
                    &ctx,
                    WriteBatch::new().write(Write::UpdateLease(n)).audit(ev),
                )
                .await?;
                Ok(())
            }
        }
    }

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
    fn decide(&self, ask: &Ask<'_>) -> Decision {
        let principals = login_principals(ask.resource, ask.params);
        decide(
            &self.policy(),
            &EvalInput {
                workload: ask.workload,
                resource: ask.resource,
                actions: ask.actions,
                task: ask.task,
                ttl_secs: ask.ttl_secs,
                now_unix_secs: self.now(),
                source_ip: ask.source_ip,
                approval: ask.approval,
                principals: principals.as_deref(),
                history: ask.history.input(&self.settings.budgets),
            },
        )
    }

    async fn expire_request(&self, req: AccessRequest) -> Result<()> {
        let mut r = req;
        r.state = RequestState::Expired;
        r.version += 1;
        let ev = AuditEvent::new(self.now(), AuditKind::RequestExpired, BROKER, "expired")
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
}

fn decision_event(now: i64, actor: &str, req: &AccessRequest) -> AuditEvent {
    let (reasons, groups, max_ttl, code) = match &req.decision {
        Decision::Deny { reasons, code, .. } => (reasons.clone(), vec![], None, Some(*code)),
        Decision::StepUp { groups, .. } => (vec![], groups.clone(), None, None),
        Decision::Allow { max_ttl_secs, .. } => (vec![], vec![], *max_ttl_secs, None),
    };
    AuditEvent::new(now, AuditKind::RequestDecided, actor, req.decision.kind())
        .task(&req.task_id)
        .access_request(&req.id)
        .detail(json!({
            "resource": req.resource_id, "actions": req.actions, "ttl_secs": req.ttl_secs,
            "policy_ids": req.decision.policy_ids(), "reasons": reasons, "step_up_groups": groups,
            "policy_max_ttl_secs": max_ttl, "state": req.state.as_str(), "digest": req.digest,
            "approvers": req.approvers, "justification": req.justification,
            // The denial's stable code (records before it existed: the legacy reason rule).
            "code": code,
        }))
}
