//! Leak response: what the broker does when a scan finds a secret where it should not be.
//!
//! A Latch credential found by a scan is matched by its keyed HMAC against the current
//! credential of every lease, then against credentials recorded in the audit trail (values a
//! renewal replaced), revoked at once if its lease is still live and, by rule
//! ([`LeakScope::Task`]), the rest of its task is cancelled too. Every finding is recorded as a
//! `leak.detected` audit event (where, what, what was revoked; never the value), which the
//! audit sinks (file, stdout, webhook) deliver like any other event.

use super::*;

/// Longest `location` kept in an audit event (characters).
const LOCATION_MAX: usize = 512;

/// The kind a scan reports for one of the broker's own access tokens (a JWT).
pub const LATCH_ACCESS_TOKEN_KIND: &str = "latch_access_token";

/// What a scan found and where; contains no secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeakFinding {
    /// Stable snake_case kind (`latch_postgres_password`, `jwt`, `aws_access_token`, …).
    pub kind: String,
    /// Rule that matched (`latch-credential`, `jwt`, a gitleaks rule id, …).
    pub rule: String,
    /// Where: `path:line:column`, or the caller's source label with line and column.
    pub location: String,
}

/// How much a leaked live credential takes down with it (`[scan] on_leak` in `latch.toml`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeakScope {
    /// Revoke the leaked credential's lease only.
    #[default]
    Credential,
    /// Revoke it and cancel its task (revoking every other lease of the task).
    Task,
}

/// What the broker did about one finding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeakResponse {
    /// Whether the value is a credential Latch issued (current or past).
    pub matched: bool,
    /// Its lease.
    pub lease_id: Option<String>,
    /// Its task.
    pub task_id: Option<String>,
    /// Leases revoked because of this finding (the leaked one first).
    pub revoked_leases: Vec<String>,
    /// Whether the task was cancelled because of this finding.
    pub task_cancelled: bool,
}

/// One finding of a scan as the broker needs it: what and where, and for a Latch candidate the
/// secret itself.
#[derive(Clone)]
pub struct ScanHit<'a> {
    /// What and where. For a JWT the scanner's ownership rule (`latch_scan::is_latch_jwt`)
    /// says is ours, the kind is already [`LATCH_ACCESS_TOKEN_KIND`].
    pub finding: LeakFinding,
    /// The secret, for Latch-format credentials and JWTs (matched against leases by keyed
    /// HMAC); `None` for a third-party secret (recorded, nothing to revoke).
    ///
    /// # Security
    /// Only hashed; never stored, logged or returned.
    pub secret: Option<&'a [u8]>,
    /// Whether the finding is a JWT (labelled [`LATCH_ACCESS_TOKEN_KIND`] once it matches a
    /// lease).
    pub jwt: bool,
}

impl std::fmt::Debug for ScanHit<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScanHit")
            .field("finding", &self.finding)
            .field("secret", &self.secret.map(|_| "[redacted]"))
            .field("jwt", &self.jwt)
            .finish()
    }
}

/// What the broker made of one [`ScanHit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanAnswer {
    /// The finding's kind as reported ([`LATCH_ACCESS_TOKEN_KIND`] for a JWT that matched a
    /// lease).
    pub kind: String,
    /// For Latch candidates: what the broker did.
    pub response: Option<LeakResponse>,
}

/// What the broker did about all the findings of one scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanOutcome {
    /// One answer per hit, in the hits' order.
    pub answers: Vec<ScanAnswer>,
    /// Every lease revoked because of this scan.
    pub revoked_leases: Vec<String>,
}

impl Broker {
    /// Responds to everything one scan found (`POST /v1/scan`): every Latch candidate is
    /// answered by [`Broker::respond_to_leak`] (a value repeated in the text is checked once and
    /// its answer reused), with no cap; the third-party secrets are collapsed into one
    /// `leak.detected` event ([`Broker::record_leaks`]).
    ///
    /// # Errors
    /// `store_unavailable` (audit fails closed: the caller must report the scan as failed).
    ///
    /// # Security
    /// As [`Broker::respond_to_leak`]: the secrets are only hashed.
    pub async fn respond_to_findings(
        &self,
        ctx: &CallCtx,
        actor: &str,
        hits: Vec<ScanHit<'_>>,
        scope: LeakScope,
    ) -> Result<ScanOutcome> {
        let mut out = ScanOutcome {
            answers: Vec::with_capacity(hits.len()),
            revoked_leases: Vec::new(),
        };
        let mut answers: HashMap<&[u8], LeakResponse> = HashMap::new();
        let mut third_party = Vec::new();
        for hit in hits {
            let mut kind = hit.finding.kind.clone();
            let Some(secret) = hit.secret else {
                third_party.push(hit.finding);
                out.answers.push(ScanAnswer {
                    kind,
                    response: None,
                });
                continue;
            };
            let r = match answers.get(secret) {
                Some(r) => r.clone(),
                None => {
                    let value = std::str::from_utf8(secret).unwrap_or_default();
                    let r = self
                        .respond_to_leak(ctx, actor, value, &hit.finding, scope)
                        .await?;
                    out.revoked_leases.extend(r.revoked_leases.iter().cloned());
                    answers.insert(secret, r.clone());
                    r
                }
            };
            if r.matched && hit.jwt {
                kind = LATCH_ACCESS_TOKEN_KIND.into();
            }
            out.answers.push(ScanAnswer {
                kind,
                response: Some(r),
            });
        }
        self.record_leaks(ctx, actor, &third_party).await?;
        Ok(out)
    }

    /// Responds to a credential `value` found by a scan: revokes it (and, with
    /// [`LeakScope::Task`], cancels its task) if Latch issued it and it is still live, then
    /// records a `leak.detected` event naming `finding`, the value's keyed HMAC and what was
    /// revoked. Values Latch did not issue are recorded as unmatched.
    ///
    /// # Errors
    /// `store_unavailable` (audit fails closed: the caller must report the scan as failed).
    ///
    /// # Security
    /// Anyone able to present a credential may have it revoked: revocation only removes
    /// access, and whoever holds a leaked value could use it anyway. The value is only
    /// hashed; it never reaches the store, the audit trail or an error message.
    pub async fn respond_to_leak(
        &self,
        ctx: &CallCtx,
        actor: &str,
        value: &str,
        finding: &LeakFinding,
        scope: LeakScope,
    ) -> Result<LeakResponse> {
        let h = self.hasher.hmac_hex(value);
        let mut lease = self.store.lease_by_credential_hmac(&h).await?;
        if lease.is_none() {
            // A value a renewal replaced: its issue is recorded in the audit trail.
            let f = AuditFilter {
                credential_hmac: Some(h.clone()),
                limit: Some(1),
                ..AuditFilter::default()
            };
            if let Some(lid) = self
                .store
                .audit_events(&f)
                .await?
                .into_iter()
                .find_map(|e| e.lease_id)
            {
                lease = self.store.lease(&lid).await?;
            }
        }
        let mut resp = LeakResponse::default();
        if let Some(l) = lease {
            resp.matched = true;
            resp.lease_id = Some(l.id.clone());
            resp.task_id = Some(l.task_id.clone());
            // Whether the leaked value was still usable when found (its lease live and revoked
            // by us). A dead credential (revoked, expired, renewed away with its lease ended)
            // must not take its task down: anyone could replay an old leak to cancel tasks.
            let mut was_live = false;
            if l.state.is_live() {
                let id = l.id.clone();
                match self.revoke_lease(ctx, l.clone(), "leaked", actor).await {
                    Ok(_) => {
                        was_live = true;
                        resp.revoked_leases.push(id);
                    }
                    Err(e) if e.code == ErrorCode::LeaseNotActive => {}
                    Err(e) => return Err(e),
                }
            }
            if scope == LeakScope::Task && was_live {
                let task = self.task_unchecked(&l.task_id).await?;
                if task.state == TaskState::Open {
                    let live: Vec<String> = self
                        .store
                        .leases_by_task(&task.id)
                        .await?
                        .into_iter()
                        .filter(|x| x.state.is_live())
                        .map(|x| x.id)
                        .collect();
                    match self
                        .end_task_internal(ctx, task, TaskState::Cancelled, actor)
                        .await
                    {
                        Ok(_) => {
                            resp.task_cancelled = true;
                            resp.revoked_leases.extend(live);
                        }
                        Err(e) if e.code == ErrorCode::TaskNotOpen => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        let outcome = match (&resp.matched, resp.revoked_leases.is_empty()) {
            (false, _) => "unmatched",
            (true, false) => "revoked",
            (true, true) => "inactive",
        };
        let mut ev = self.leak_event(actor, outcome).detail(json!({
            "kind": finding.kind,
            "rule": finding.rule,
            "location": clip(&finding.location),
            "credential_hmac": h,
            "revoked_leases": resp.revoked_leases,
            "task_cancelled": resp.task_cancelled,
        }));
        if let Some(t) = &resp.task_id {
            ev = ev.task(t);
        }
        if let Some(l) = &resp.lease_id {
            ev = ev.lease(l);
        }
        match &resp.task_id {
            // The leak joins the task's history (`context.history.leaked`) in the same commit.
            Some(t) => {
                let mut ev = ev;
                ev.request_id.clone_from(&ctx.request_id);
                let d = crate::history::leak_deltas(t, self.now());
                self.commit(ctx, WriteBatch::new().write(Write::Count(d)).audit(ev))
                    .await?;
                if let Ok(task) = self.task_unchecked(t).await
                    && task.state == TaskState::Open
                {
                    self.enforce_on_history_change(&task, None).await;
                }
            }
            None => self.record_event(ctx, ev).await?,
        }
        Ok(resp)
    }

    /// Records a third-party secret found by a scan (nothing to revoke) as a `leak.detected`
    /// event with outcome `third_party`.
    ///
    /// # Errors
    /// `store_unavailable`.
    pub async fn record_leak(
        &self,
        ctx: &CallCtx,
        actor: &str,
        finding: &LeakFinding,
    ) -> Result<()> {
        let ev = self.leak_event(actor, "third_party").detail(json!({
            "kind": finding.kind,
            "rule": finding.rule,
            "location": clip(&finding.location),
        }));
        self.record_event(ctx, ev).await
    }

    /// Records the third-party secrets found by one scan as a single `leak.detected` event
    /// (outcome `third_party`): the first finding's kind, rule and location, the number of
    /// findings and their distinct kinds. Nothing if `findings` is empty.
    ///
    /// # Errors
    /// `store_unavailable`.
    pub async fn record_leaks(
        &self,
        ctx: &CallCtx,
        actor: &str,
        findings: &[LeakFinding],
    ) -> Result<()> {
        let Some(first) = findings.first() else {
            return Ok(());
        };
        let kinds: std::collections::BTreeSet<&str> = findings
            .iter()
            .map(|f| f.kind.as_str())
            .take(1000)
            .collect();
        let ev = self.leak_event(actor, "third_party").detail(json!({
            "kind": first.kind,
            "rule": first.rule,
            "location": clip(&first.location),
            "count": findings.len(),
            "kinds": kinds.into_iter().take(64).collect::<Vec<_>>(),
        }));
        self.record_event(ctx, ev).await
    }

    fn leak_event(&self, actor: &str, outcome: &str) -> AuditEvent {
        AuditEvent::new(self.now(), AuditKind::LeakDetected, actor, outcome)
    }
}

fn clip(s: &str) -> String {
    s.chars().take(LOCATION_MAX).collect()
}
