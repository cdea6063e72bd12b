//! The kill switch: an operator revokes every live credential in a scope (a workload, a
//! repository, a resource, the tasks acting for a human, or everything) and freezes new grants
//! there until the freeze is lifted. A Shared Signals event about a human engages a `human`
//! freeze the same way (`super::ssf`).
//!
//! # Why it holds everywhere
//! The freeze is a stored row, committed (with `freeze.engaged`) **before** the scope's leases
//! are read. Every grant, claim and renewal reads the active freezes before deciding, and a
//! grant (a claim too) reads them once more after committing its lease, from a read ordered
//! after that commit ([`Store::active_freezes_after`]: a fresh read, or on PostgreSQL the read
//! its group commit made under the audit chain head's lock). So a grant racing the switch
//! either committed its lease before the switch read the leases (and is revoked by it) or
//! reads the freeze after its own commit (and revokes itself, answering `frozen`). The read
//! before deciding may be up to 250 ms old on PostgreSQL for a provider without external state
//! (see [`FreezeRead`]); anything but an allowed grant, which the check after commit covers,
//! is confirmed on a fresh read. The same holds across replicas sharing the store
//! and after a restart. A store that cannot be read refuses the grant (fail closed).
//!
//! Revocation goes through the one path (`revocation_writes`, `revoke_all`): providers
//! without external state are revoked in the batch; others become `revoking`, are attempted
//! at once, retried by the reaper, and parked while their target is down.

use crate::freeze::{Freeze, FreezeScope, FreezeState, GrantSubject, ScopeKind, covering};

use super::*;

/// Leases revoked per batch by the kill switch.
const REVOKE_CHUNK: usize = 100;

/// An operator's kill-switch call: the scope and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FreezeRequest {
    /// What to revoke and freeze.
    pub scope: FreezeScope,
    /// Why (required; ≤ the text bound, single line, no control, bidi or zero-width
    /// characters).
    pub reason: String,
}

/// What a kill switch did.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FreezeReport {
    /// The freeze, active.
    pub freeze: Freeze,
    /// Live leases in scope whose revocation was committed by this call.
    pub leases_revoked: u64,
    /// Of those, revocations at a target that did not succeed in this call (its target down or
    /// failing): they are retried by the reaper, and their leases are already inactive at
    /// introspection.
    pub revocations_pending: u64,
}

impl Broker {
    /// Engages a kill switch: stores the freeze, then revokes every live credential in its
    /// scope and answers once each revocation was attempted.
    ///
    /// # Errors
    /// `not_admin`, `invalid_request` (empty reason, a scope without its value or `all` with
    /// one, hostile text), `unknown_resource`, `store_unavailable`.
    pub async fn engage_freeze(
        &self,
        ctx: &CallCtx,
        human: &Human,
        input: FreezeRequest,
    ) -> Result<FreezeReport> {
        self.require_operator_action(human)?;
        check_text("reason", &input.reason, self.settings.max_text_len, true)?;
        self.check_scope(&input.scope)?;
        let now = self.now();
        let freeze = Freeze {
            id: new_id("frz"),
            scope: input.scope,
            state: FreezeState::Active,
            engaged_by: human.id.clone(),
            reason: input.reason,
            created_at_unix_secs: now,
            lifted_by: None,
            lift_reason: None,
            lifted_at_unix_secs: None,
            version: 1,
        };
        let ev = AuditEvent::new(now, AuditKind::FreezeEngaged, &human.id, "ok").detail(json!({
            "freeze_id": freeze.id, "scope": freeze.scope, "reason": freeze.reason,
            "groups": human.groups,
        }));
        self.commit(
            ctx,
            WriteBatch::new()
                .write(Write::InsertFreeze(freeze.clone()))
                .audit(ev),
        )
        .await?;
        let (revoked, pending) = self.revoke_scope(&freeze, &human.id).await?;
        Ok(FreezeReport {
            freeze,
            leases_revoked: revoked,
            revocations_pending: pending,
        })
    }

    /// A scope names its value unless it is `all`; a resource scope names a configured one.
    fn check_scope(&self, scope: &FreezeScope) -> Result<()> {
        match (scope.kind, scope.value.as_deref()) {
            (ScopeKind::All, None) => Ok(()),
            (ScopeKind::All, Some(_)) => Err(bad("a scope of kind `all` takes no `value`")),
            (k, None) => Err(bad(format!(
                "a scope of kind `{}` needs a `value`",
                k.as_str()
            ))),
            (k, Some(v)) => {
                check_text("scope.value", v, 256, true)?;
                if k == ScopeKind::Resource {
                    self.resource(v)?;
                }
                if k == ScopeKind::Human && !valid_human_id(v) {
                    return Err(bad(
                        "a human id is 1 to 128 ASCII letters, digits and `._@+-`",
                    ));
                }
                Ok(())
            }
        }
    }

    /// Revokes every live lease `freeze` covers, in batches, through the usual revocation path;
    /// answers (revoked, attempts that did not succeed now).
    pub(super) async fn revoke_scope(&self, freeze: &Freeze, actor: &str) -> Result<(u64, u64)> {
        let mut tasks: HashMap<String, Option<Task>> = HashMap::new();
        let mut covered = Vec::new();
        let mut cursor = String::new();
        loop {
            let chunk = self.store.live_leases(&cursor, 500).await?;
            let last = chunk.len() < 500;
            for l in chunk {
                cursor.clone_from(&l.id);
                if !tasks.contains_key(&l.task_id) {
                    tasks.insert(l.task_id.clone(), self.store.task(&l.task_id).await?);
                }
                let Some(Some(t)) = tasks.get(&l.task_id) else {
                    continue;
                };
                if freeze.scope.covers(&subject(t, &l.resource_id)) {
                    covered.push(l);
                }
            }
            if last {
                break;
            }
        }
        let reason = format!("frozen:{}", freeze.id);
        let mut revoked = 0u64;
        let mut to_attempt = Vec::new();
        for chunk in covered.chunks(REVOKE_CHUNK) {
            let mut leases = chunk.to_vec();
            for _ in 0..4 {
                let now = self.now();
                let (b, rv) =
                    self.revocation_writes(WriteBatch::new(), &leases, &reason, actor, now);
                match self.commit(&CallCtx::default(), b).await {
                    Ok(_) => {
                        revoked += leases.len() as u64;
                        for l in &leases {
                            self.index_remove(l);
                        }
                        to_attempt.extend(rv);
                        break;
                    }
                    // A lease of the chunk changed meanwhile (renewed, revoked): read the chunk
                    // again and retry with what is still live.
                    Err(StoreError::Conflict(_)) => {
                        let mut fresh = Vec::new();
                        for l in &leases {
                            if let Some(n) = self.store.lease(&l.id).await?
                                && matches!(n.state, LeaseState::Active | LeaseState::Issuing)
                            {
                                fresh.push(n);
                            }
                        }
                        leases = fresh;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let attempts = self.revoke_all(to_attempt).await;
        let pending = attempts
            .iter()
            .filter(|a| !matches!(a, Ok(targets::Attempt::Revoked)))
            .count() as u64;
        Ok((revoked, pending))
    }

    /// Lifts a freeze: grants in its scope are decided by policy again. Revoked credentials
    /// stay revoked.
    ///
    /// # Errors
    /// `not_admin`, `invalid_request`, `freeze_not_found`, `freeze_not_active`, `conflict`,
    /// `store_unavailable`.
    pub async fn lift_freeze(
        &self,
        ctx: &CallCtx,
        human: &Human,
        freeze_id: &str,
        reason: &str,
    ) -> Result<Freeze> {
        self.require_operator_action(human)?;
        check_text("reason", reason, self.settings.max_text_len, true)?;
        let f = self.store.freeze(freeze_id).await?.ok_or_else(|| {
            ApiError::new(
                ErrorCode::FreezeNotFound,
                format!("no freeze {}", quote(freeze_id)),
            )
        })?;
        if f.state != FreezeState::Active {
            return Err(ApiError::new(
                ErrorCode::FreezeNotActive,
                format!("freeze `{}` is already lifted", f.id),
            ));
        }
        let now = self.now();
        let mut n = f.clone();
        n.state = FreezeState::Lifted;
        n.lifted_by = Some(human.id.clone());
        n.lift_reason = Some(reason.to_owned());
        n.lifted_at_unix_secs = Some(now);
        n.version += 1;
        let ev = AuditEvent::new(now, AuditKind::FreezeLifted, &human.id, "ok").detail(json!({
            "freeze_id": n.id, "scope": n.scope, "reason": reason, "engaged_by": n.engaged_by,
            "groups": human.groups,
        }));
        self.commit(
            ctx,
            WriteBatch::new()
                .write(Write::UpdateFreeze(n.clone()))
                .audit(ev),
        )
        .await?;
        Ok(n)
    }

    /// The active freezes, oldest first (operators only).
    ///
    /// # Errors
    /// `not_admin`, `store_unavailable`.
    pub async fn active_freezes(&self, human: &Human) -> Result<Vec<Freeze>> {
        self.require_operator(human)?;
        Ok(self.store.active_freezes().await?)
    }

    /// Refuses (`frozen`, audited as `access.frozen` with the freeze's operator and reason) a
    /// grant, claim or renewal (`what`) of `resource_id` in `task` that an active freeze covers.
    /// Reads the freezes from the store every time, as `read` says; a store that cannot answer
    /// refuses.
    pub(super) async fn refuse_if_frozen(
        &self,
        ctx: &CallCtx,
        task: &Task,
        resource_id: &str,
        what: &str,
        read: FreezeRead,
    ) -> Result<()> {
        let mut freezes = match read {
            FreezeRead::Fresh => self.store.active_freezes().await?,
            FreezeRead::Recent => self.store.recent_active_freezes().await?,
            FreezeRead::After(seq) => self.store.active_freezes_after(seq).await?,
        };
        let who = subject(task, resource_id);
        if matches!(read, FreezeRead::Recent) && covering(&freezes, &who).is_some() {
            // An older read only lets a grant through early; a refusal is always decided on a
            // fresh one, so a freeze lifted on another replica stops refusing at once.
            freezes = self.store.active_freezes().await?;
        }
        let Some(f) = covering(&freezes, &who) else {
            return Ok(());
        };
        let ev = AuditEvent::new(
            self.now(),
            AuditKind::AccessFrozen,
            &task.owner.id,
            "frozen",
        )
        .task(&task.id)
        .detail(json!({
            "what": what, "resource": resource_id, "freeze_id": f.id, "scope": f.scope,
            "engaged_by": f.engaged_by, "freeze_reason": f.reason,
        }));
        self.commit(ctx, WriteBatch::new().audit(ev)).await?;
        Err(ApiError::new(
            ErrorCode::Frozen,
            format!(
                "{} froze grants for `{}` (freeze `{}`): nothing is granted, claimed or renewed there until an operator lifts it",
                f.engaged_by_label(),
                f.scope.label(),
                f.id
            ),
        ))
    }

    /// After a grant committed `lease` (its audit events got `seqs`): if a freeze now covers it
    /// (the switch was engaged while this grant was deciding), revoke it at once and refuse
    /// with `frozen`. The freezes come from a read ordered after that commit
    /// ([`Store::active_freezes_after`](crate::ports::Store::active_freezes_after)).
    pub(super) async fn recheck_frozen(
        &self,
        ctx: &CallCtx,
        task: &Task,
        lease: &Lease,
        seqs: &[i64],
    ) -> Result<()> {
        let read = seqs
            .iter()
            .max()
            .map_or(FreezeRead::Fresh, |&seq| FreezeRead::After(seq));
        if let Err(e) = self
            .refuse_if_frozen(ctx, task, &lease.resource_id, "grant", read)
            .await
        {
            let _ = self
                .revoke_lease(&CallCtx::default(), lease.clone(), "frozen", BROKER)
                .await;
            return Err(e);
        }
        Ok(())
    }
}

/// Which read of the active freezes a check uses (see [`crate::ports::Store`]).
#[derive(Debug, Clone, Copy)]
pub(super) enum FreezeRead {
    /// A fresh read: the early check of a claim, of a renewal (not checked again after its
    /// commit), of a grant at a provider with external state, and of a grant decided other
    /// than allowed; also the check after a commit that returned no seqs.
    Fresh,
    /// A possibly slightly older read, confirmed by a fresh one before it refuses: the early
    /// check of a grant whose provider keeps no external state (nothing is created at a
    /// target before the check after its commit).
    Recent,
    /// A read ordered after the commit that gave audit event `seq`: a grant's check after
    /// its commit, which is what keeps it from outliving a kill switch.
    After(i64),
}

/// What the scope rule sees of a lease or grant in `task`.
fn subject<'a>(task: &'a Task, resource_id: &'a str) -> GrantSubject<'a> {
    GrantSubject {
        principal_id: &task.owner.id,
        repository: task.repository.as_deref(),
        resource_id,
        on_behalf_of: task.on_behalf_of.as_deref(),
    }
}
