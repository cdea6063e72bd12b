//! Calls to targets (the systems providers mint in: databases, caches) and their health.
//!
//! Every provider call the broker makes ([`mint`](CredentialProvider::mint),
//! [`renew`](CredentialProvider::renew), [`revoke`](CredentialProvider::revoke),
//! [`probe`](CredentialProvider::probe)) runs under one overall deadline
//! ([`BrokerSettings::target_call_timeout`]), so a target that accepts connections and never
//! answers fails that call only. A retryable failure (unreachable, timed out) marks the target
//! *unhealthy*; while it is, the broker does not send it more work: grants for its resources fail
//! at once (503 `target_unavailable`, naming the outage), and revocations are parked (the lease stays
//! `revoking` with its attempts and last error) instead of each waiting out the deadline. The
//! targets job ([`Broker::tend_targets`]) probes unhealthy targets every
//! `[targets] probe_interval`; the first probe or call that succeeds marks the target healthy
//! and revokes its parked leases at once, so a revoked credential dies within about one probe
//! interval of the target answering again.
//!
//! Revocations run per target with bounded concurrency
//! ([`BrokerSettings::target_concurrency`]), and one lease is revoked by one worker at a time:
//! in this process an in-flight set guards it; across replicas the store's claims do.
//!
//! # Security
//! Health entries carry the provider's error message, which providers keep secret-free
//! ([`ProviderError`]).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Mutex;

use tokio::sync::Semaphore;

use super::*;
use crate::ports::ProviderError;

/// How one target stands, as `/readyz` and `/metrics` report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetStatus {
    /// The resource whose target this is.
    pub resource_id: String,
    /// Provider kind (`postgres`, `redis`, …).
    pub provider: String,
    /// Whether the last call or probe succeeded (a target never called is healthy).
    pub healthy: bool,
    /// When the target last changed between healthy and unhealthy (Unix seconds; 0: never).
    pub since_unix_secs: i64,
    /// Retryable failures in a row (0 when healthy).
    pub consecutive_failures: u32,
    /// The last failure's secret-free message, if unhealthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// What [`Broker::tend_targets`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TendReport {
    /// Targets probed (they were unhealthy).
    pub probed: usize,
    /// Targets that answered again.
    pub recovered: Vec<String>,
    /// Parked revocations that succeeded after a recovery.
    pub leases_revoked: usize,
    /// Parked revocations that failed again.
    pub revocations_failed: usize,
}

#[derive(Debug)]
struct Entry {
    healthy: bool,
    since: i64,
    failures: u32,
    last_error: Option<String>,
    /// Set when the target turned healthy and its parked revocations have not been resumed.
    resume: bool,
    lane: Arc<Semaphore>,
}

/// Per-target health, lanes and the in-flight set (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Targets {
    entries: Mutex<HashMap<String, Entry>>,
    in_flight: Mutex<HashSet<String>>,
}

/// Removes a lease id from the in-flight set when dropped (also when a call is cancelled).
struct InFlight<'a> {
    set: &'a Mutex<HashSet<String>>,
    id: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

impl Targets {
    fn with_entry<R>(&self, id: &str, permits: usize, f: impl FnOnce(&mut Entry) -> R) -> R {
        let mut m = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry(id.to_owned()).or_insert_with(|| Entry {
            healthy: true,
            since: 0,
            failures: 0,
            last_error: None,
            resume: false,
            lane: Arc::new(Semaphore::new(permits.max(1))),
        });
        f(e)
    }

    fn is_healthy(&self, id: &str) -> bool {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .is_none_or(|e| e.healthy)
    }

    fn record(&self, id: &str, permits: usize, now: i64, failure: Option<&ProviderError>) {
        self.with_entry(id, permits, |e| match failure {
            None => {
                if !e.healthy {
                    tracing::info!(resource = %id, "target answers again");
                    e.healthy = true;
                    e.since = now;
                    e.resume = true;
                }
                e.failures = 0;
                e.last_error = None;
            }
            Some(err) => {
                if e.healthy {
                    tracing::warn!(resource = %id, error = %err.message, "target unhealthy");
                    e.healthy = false;
                    e.since = now;
                }
                e.failures = e.failures.saturating_add(1);
                e.last_error = Some(err.message.clone());
            }
        });
    }

    fn lane(&self, id: &str, permits: usize) -> Arc<Semaphore> {
        self.with_entry(id, permits, |e| e.lane.clone())
    }

    fn take_resumable(&self) -> Vec<String> {
        let mut m = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        m.iter_mut()
            .filter(|(_, e)| e.resume && e.healthy)
            .map(|(id, e)| {
                e.resume = false;
                id.clone()
            })
            .collect()
    }

    fn unhealthy(&self) -> Vec<String> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, e)| !e.healthy)
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn enter(&self, lease_id: &str) -> Option<InFlight<'_>> {
        let fresh = self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(lease_id.to_owned());
        fresh.then(|| InFlight {
            set: &self.in_flight,
            id: lease_id.to_owned(),
        })
    }
}

/// A revocation attempt's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Attempt {
    /// The credential is gone and the lease recorded `revoked`.
    Revoked,
    /// The provider failed; the next attempt is scheduled.
    Failed,
    /// Not attempted: the target is unhealthy (parked until it answers) or another worker of
    /// this process is revoking the lease.
    Skipped,
}

impl Broker {
    fn lane_permits(&self) -> usize {
        self.settings.target_concurrency.max(1)
    }

    /// Runs one provider call for `resource_id` under the target deadline and records the
    /// target's health from its outcome (for providers with external state).
    ///
    /// # Errors
    /// The provider's error, or a retryable one when the deadline passed.
    pub(super) async fn call_target<T>(
        &self,
        resource_id: &str,
        external: bool,
        what: &'static str,
        call: impl Future<Output = std::result::Result<T, ProviderError>>,
    ) -> std::result::Result<T, ProviderError> {
        let limit = self.settings.target_call_timeout;
        let started = std::time::Instant::now();
        let out = match tokio::time::timeout(limit, call).await {
            Ok(r) => r,
            Err(_) => {
                log_timeout(resource_id, what);
                Err(ProviderError::unreachable(format!(
                    "{what} on `{resource_id}` did not answer within {} ms",
                    limit.as_millis()
                )))
            }
        };
        let outcome = match &out {
            Ok(_) => "ok",
            Err(e) if e.unreachable => "unreachable",
            Err(_) => "error",
        };
        // Latency of the call at its target (a metric, not TTL logic: real elapsed time).
        metrics::histogram!(
            "latch_provider_call_duration_seconds",
            "resource" => resource_id.to_owned(),
            "call" => what,
            "outcome" => outcome
        )
        .record(started.elapsed().as_secs_f64());
        if external {
            let failure = match &out {
                Ok(_) => None,
                Err(e) if e.unreachable => Some(e),
                // Any other error is an answer: the target is up.
                Err(_) => None,
            };
            self.targets
                .record(resource_id, self.lane_permits(), self.now(), failure);
        }
        out
    }

    /// Fails fast when `resource`'s target is known to be down, so a grant does not wait out
    /// the call deadline behind an outage.
    ///
    /// # Errors
    /// `target_unavailable` (503) naming the outage and its last error.
    pub(super) fn require_target_up(&self, resource_id: &str) -> Result<()> {
        if self.targets.is_healthy(resource_id) {
            return Ok(());
        }
        let last = self
            .target_statuses()
            .into_iter()
            .find(|s| s.resource_id == resource_id)
            .and_then(|s| s.last_error)
            .unwrap_or_default();
        Err(ApiError::new(
            ErrorCode::TargetUnavailable,
            format!(
                "the target of {} is unavailable ({last}); retry once it answers",
                quote(resource_id)
            ),
        ))
    }

    /// One revocation attempt of a lease in `revoking`/`revoke_failed`, in its target's lane: on
    /// success `revoked`; on failure the next attempt is scheduled with exponential backoff and,
    /// after `revoke_alert_after` attempts, the lease shows `revoke_failed`. Skipped while the
    /// target is unhealthy or another worker here holds the lease.
    ///
    /// # Errors
    /// `store_unavailable` or `conflict` when recording the outcome fails.
    pub(super) async fn attempt_revoke(&self, lease: Lease) -> Result<Attempt> {
        let Some(_guard) = self.targets.enter(&lease.id) else {
            return Ok(Attempt::Skipped);
        };
        if !self.targets.is_healthy(&lease.resource_id) {
            return self.park(lease).await;
        }
        let lane = self.targets.lane(&lease.resource_id, self.lane_permits());
        let Ok(_permit) = lane.acquire_owned().await else {
            return Ok(Attempt::Skipped);
        };
        // The target may have failed while this attempt waited for its turn.
        if !self.targets.is_healthy(&lease.resource_id) {
            return self.park(lease).await;
        }
        let result = match self.providers.get(&lease.provider) {
            Some(p) => {
                let external = p.has_external_state();
                self.call_target(&lease.resource_id, external, "revoke", p.revoke(&lease))
                    .await
            }
            None => Err(ProviderError::retryable(format!(
                "provider `{}` is not configured",
                lease.provider
            ))),
        };
        let ok = result.is_ok();
        self.record_attempt(lease, result).await?;
        Ok(if ok {
            Attempt::Revoked
        } else {
            Attempt::Failed
        })
    }

    /// Skips a revocation because its target is down. A lease parked for the first time (never
    /// attempted, no error shown) records why, once, so every stuck lease says what it waits
    /// for: `last_revoke_error` names the outage, `revoke_attempts` stays as it is.
    async fn park(&self, lease: Lease) -> Result<Attempt> {
        if lease.last_revoke_error.is_some() {
            return Ok(Attempt::Skipped);
        }
        let last = self
            .target_statuses()
            .into_iter()
            .find(|s| s.resource_id == lease.resource_id)
            .and_then(|s| s.last_error)
            .unwrap_or_default();
        let now = self.now();
        let mut n = lease.clone();
        n.version += 1;
        n.last_revoke_error = Some(format!(
            "not attempted: the target is not answering ({last}); revoked as soon as it answers"
        ));
        let ev = AuditEvent::new(now, AuditKind::CredentialRevocationFailed, BROKER, "parked")
            .task(&n.task_id)
            .lease(&n.id)
            .detail(
                json!({"error": n.last_revoke_error, "attempts": n.revoke_attempts,
                "state": n.state.as_str()}),
            );
        match self
            .commit(
                &CallCtx::default(),
                WriteBatch::new().write(Write::UpdateLease(n)).audit(ev),
            )
            .await
        {
            Ok(_) | Err(StoreError::Conflict(_)) => Ok(Attempt::Skipped),
            Err(e) => Err(e.into()),
        }
    }

    /// Attempts every lease in `leases` at once (each in its target's lane, each bounded by the
    /// call deadline), so one slow target does not hold up another's revocations.
    pub(super) async fn revoke_all(&self, leases: Vec<Lease>) -> Vec<Result<Attempt>> {
        futures_util::future::join_all(leases.into_iter().map(|l| self.attempt_revoke(l))).await
    }

    /// Health of every target whose provider keeps external state, sorted by resource id.
    pub fn target_statuses(&self) -> Vec<TargetStatus> {
        let m = self
            .targets
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<TargetStatus> = self
            .resources
            .values()
            .filter(|r| {
                self.providers
                    .get(&r.kind)
                    .is_some_and(|p| p.has_external_state())
            })
            .map(|r| {
                let e = m.get(&r.id);
                TargetStatus {
                    resource_id: r.id.clone(),
                    provider: r.kind.clone(),
                    healthy: e.is_none_or(|e| e.healthy),
                    since_unix_secs: e.map_or(0, |e| e.since),
                    consecutive_failures: e.map_or(0, |e| e.failures),
                    last_error: e.and_then(|e| e.last_error.clone()),
                }
            })
            .collect();
        out.sort_by(|a, b| a.resource_id.cmp(&b.resource_id));
        out
    }

    /// The targets job's step: probes every unhealthy target (under the call deadline, all at
    /// once) and, for each that answers again, or that a successful call marked healthy since,
    /// revokes the leases parked behind its outage.
    ///
    /// # Errors
    /// `store_unavailable` when the parked leases cannot be read.
    pub async fn tend_targets(&self) -> Result<TendReport> {
        let mut report = TendReport::default();
        let down = self.targets.unhealthy();
        report.probed = down.len();
        let probes = down.iter().filter_map(|id| {
            let r = self.resources.get(id)?;
            let p = self.providers.get(&r.kind)?;
            Some(self.call_target(id, true, "probe", p.probe(r)))
        });
        let _ = futures_util::future::join_all(probes).await;
        for id in self.targets.take_resumable() {
            report.recovered.push(id.clone());
            for outcome in self.resume_target(&id).await? {
                match outcome {
                    Ok(Attempt::Revoked) => report.leases_revoked += 1,
                    Ok(Attempt::Failed) => report.revocations_failed += 1,
                    _ => {}
                }
            }
        }
        Ok(report)
    }

    /// Claims and attempts the parked revocations of one target (whatever their backoff says).
    async fn resume_target(&self, resource_id: &str) -> Result<Vec<Result<Attempt>>> {
        let now = self.now();
        let parked = self
            .store
            .claim_pending_revocations(
                now,
                resource_id,
                &self.settings.replica_id,
                now + self.claim_secs(),
                500,
            )
            .await?;
        if !parked.is_empty() {
            tracing::info!(resource = %resource_id, leases = parked.len(), "resuming revocations after target recovery");
        }
        Ok(self.revoke_all(parked).await)
    }

    /// How long a claim on a lease lasts: the configured reaper claim, but always longer than one
    /// provider call, so no other replica takes a lease over while this one still revokes it.
    pub(super) fn claim_secs(&self) -> i64 {
        let call = i64::try_from(self.settings.target_call_timeout.as_secs()).unwrap_or(i64::MAX);
        self.settings
            .reaper_claim_secs
            .max(call.saturating_add(5))
            .max(1)
    }
}

/// The API error for a provider failure: 503 `target_unavailable` when the target did not
/// answer, 400 `invalid_request` when the request's parameters are at fault, else 502
/// `provider_failed`; the message is `what: <provider message>` (secret-free).
pub(super) fn provider_api_error(e: &ProviderError, what: &str) -> ApiError {
    let code = if e.invalid_request {
        ErrorCode::InvalidRequest
    } else if e.unreachable {
        ErrorCode::TargetUnavailable
    } else {
        ErrorCode::ProviderFailed
    };
    ApiError::new(code, format!("{what}: {}", e.message))
}

fn log_timeout(resource_id: &str, what: &str) {
    tracing::warn!(resource = %resource_id, call = %what, "target call timed out");
}
