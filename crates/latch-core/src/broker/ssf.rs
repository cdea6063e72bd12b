//! Shared Signals: the revocations Latch transmits ([`Broker::security_signals`]), and what a
//! Security Event Token from a configured transmitter does ([`Broker::receive_security_event`]).
//!
//! # Receiving, and why a replay cannot slip through
//! The SET's record (its issuer and `jti`, unique), its `ssf.received` event and, when it acts,
//! the freeze of its human commit in one batch. A replay, on any replica or after a restart,
//! conflicts on that record and is refused before anything else happens. Once the freeze is
//! committed every grant, claim and renewal of a task acting for the human is refused (the
//! freeze check reads the store each time); the tasks are then ended one by one (each with an
//! `ssf.acted` event in its batch), and the freeze's scope swept for live leases. A task that
//! cannot be ended now (the store failed mid-way) stays frozen: it gets nothing new, and its
//! credentials were revoked by the sweep or expire.

use serde_json::Value;

use super::*;
use crate::freeze::{Freeze, FreezeScope, FreezeState, ScopeKind};
use crate::ssf::{
    self, PushError, PushErrorCode, ReceivedSetRecord, SetAction, Signal, VerifiedSet,
};

/// Open tasks read per page when looking for a human's tasks.
const TASK_PAGE: u32 = 500;

/// A page of revocations to transmit, read from the audit trail.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SignalPage {
    /// The revocations, in record order.
    pub signals: Vec<Signal>,
    /// The last record read (where a receiver's cursor moves once every signal before it is
    /// delivered); `None` when there were no new records.
    pub last_seq: Option<i64>,
}

/// What a received SET did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReceiveReport {
    /// The SET's `jti`.
    pub jti: String,
    /// The human its subject names, if any.
    pub human: Option<String>,
    /// Whether an event of it ended the human's tasks and froze their grants.
    pub acted: bool,
    /// The freeze that holds the human's grants (new, or one already active).
    pub freeze_id: Option<String>,
    /// Tasks ended because of it.
    pub tasks_ended: Vec<String>,
    /// Tasks that could not be ended now (the store failed): they stay frozen.
    pub tasks_not_ended: usize,
}

impl Broker {
    /// The revocations among the audit records after `after_seq` (at most `limit` records
    /// read), as CAEP events ([`ssf::signal_for`]), with the task and lease each needs read
    /// from the store.
    ///
    /// # Errors
    /// `store_unavailable`.
    pub async fn security_signals(&self, after_seq: i64, limit: u32) -> Result<SignalPage> {
        let records = self.store.audit_records(after_seq, limit).await?;
        let mut page = SignalPage {
            signals: Vec::new(),
            last_seq: records.last().map(|r| r.seq),
        };
        let mut tasks: HashMap<String, Option<Task>> = HashMap::new();
        for r in &records {
            // A body this version cannot read is no revocation it knows of.
            let Ok(ev) = serde_json::from_str::<AuditEvent>(&r.body) else {
                continue;
            };
            let Some((need_task, need_lease)) = ssf::transmit::needs(&ev.kind) else {
                continue;
            };
            let task = match (&ev.task_id, need_task) {
                (Some(id), true) => {
                    if !tasks.contains_key(id) {
                        tasks.insert(id.clone(), self.store.task(id).await?);
                    }
                    tasks.get(id).cloned().flatten()
                }
                _ => None,
            };
            let lease = match (&ev.lease_id, need_lease) {
                (Some(id), true) => self.store.lease(id).await?,
                _ => None,
            };
            if let Some(s) = ssf::signal_for(r.seq, &ev, task.as_ref(), lease.as_ref()) {
                page.signals.push(s);
            }
        }
        Ok(page)
    }

    /// Acts on a verified SET (see the module documentation): records its `jti`, and for a
    /// an event [`ssf::classify_event`] acts on whose subject names a human
    /// (`ssf::subject::human_of`) the transmitter may act for, freezes
    /// grants for that human (a `human` freeze, engaged by `ssf:<transmitter>`, lifted by an
    /// operator as any other) and ends every open task acting for them. Other events and
    /// subjects are recorded as `ignored`.
    ///
    /// # Errors
    /// [`PushError::Refused`] `invalid_request` for a `jti` already received from this issuer,
    /// `access_denied` for an acting event about a human outside the transmitter's `humans`;
    /// [`PushError::Unavailable`] when the store fails before the SET is recorded.
    pub async fn receive_security_event(
        &self,
        ctx: &CallCtx,
        set: VerifiedSet,
    ) -> std::result::Result<ReceiveReport, PushError> {
        let actor = format!("ssf:{}", set.transmitter);
        let mut acting = Vec::new();
        let mut ignored = Vec::new();
        for (t, e) in &set.events {
            match ssf::classify_event(t, e) {
                SetAction::EndHumanTasks => acting.push(t.as_str()),
                SetAction::Verification => ignored.push("a verification event"),
                SetAction::Ignore(why) => ignored.push(why),
            }
        }
        let human = set
            .subject()
            .and_then(|s| ssf::subject::human_of(s, &set.subjects));
        if !acting.is_empty() && human.is_none() {
            ignored.push("the subject names no human");
        }
        if human
            .as_deref()
            .is_some_and(|h| !acting.is_empty() && !set.subjects.may_act_for(h))
        {
            // Signed by a configured transmitter, so worth keeping (an unauthenticated flood
            // never gets here): recorded, the `jti` not, so nothing else of the SET happens.
            let refusal = AuditEvent::new(self.now(), AuditKind::SsfReceived, &actor, "refused")
                .detail(json!({
                    "transmitter": set.transmitter, "issuer": set.issuer, "jti": set.jti,
                    "events": set.events.keys().collect::<Vec<_>>(), "human": human,
                    "reason": "the transmitter may not act for this human (`humans`)",
                }));
            self.commit(ctx, WriteBatch::new().audit(refusal))
                .await
                .map_err(|e| PushError::Unavailable(e.into()))?;
            return Err(PushError::refused(
                PushErrorCode::AccessDenied,
                "the subject names a human this transmitter may not act for (its `humans`)",
            ));
        }
        let act_on = human.as_deref().filter(|_| !acting.is_empty());
        let now = self.now();
        let unavailable = |e: ApiError| PushError::Unavailable(e);
        let mut freeze = None;
        let mut new_freeze = false;
        if let Some(h) = act_on {
            freeze = self.active_human_freeze(h).await.map_err(unavailable)?;
            if freeze.is_none() {
                freeze = Some(human_freeze(h, &set, &actor, &acting, now));
                new_freeze = true;
            }
        }
        let record = ReceivedSetRecord {
            key: ReceivedSetRecord::key_for(&set.issuer, &set.jti),
            transmitter: set.transmitter.clone(),
            issuer: set.issuer.clone(),
            jti: set.jti.clone(),
            received_at_unix_secs: now,
            expires_at_unix_secs: set.replay_until_unix_secs.max(now),
        };
        let types: Vec<&String> = set.events.keys().collect();
        let received = AuditEvent::new(
            now,
            AuditKind::SsfReceived,
            &actor,
            if act_on.is_some() { "acted" } else { "ignored" },
        )
        .detail(json!({
            "transmitter": set.transmitter, "issuer": set.issuer, "jti": set.jti, "txn": set.txn,
            "iat": set.iat, "events": types, "human": human,
            "freeze_id": freeze.as_ref().map(|f| &f.id), "ignored": ignored,
        }));
        let mut batch = WriteBatch::new()
            .write(Write::InsertReceivedSet(record))
            .audit(received);
        if let (Some(f), true) = (&freeze, new_freeze) {
            let engaged =
                AuditEvent::new(now, AuditKind::FreezeEngaged, &actor, "ok").detail(json!({
                    "freeze_id": f.id, "scope": f.scope, "reason": f.reason,
                    "ssf": {"issuer": set.issuer, "jti": set.jti},
                }));
            batch = batch.write(Write::InsertFreeze(f.clone())).audit(engaged);
        }
        match self.commit(ctx, batch).await {
            Ok(_) => {}
            Err(StoreError::Conflict(_)) => {
                return Err(PushError::refused(
                    PushErrorCode::InvalidRequest,
                    "a set with this `jti` was already received from this issuer",
                ));
            }
            Err(e) => return Err(unavailable(e.into())),
        }
        // Forget the records no SET can replay any more (their `iat` is refused anyway).
        if let Err(e) = self.store.purge_received_sets(now).await {
            tracing::warn!(error = %e, "shared signals: expired set records could not be purged");
        }
        let mut report = ReceiveReport {
            jti: set.jti.clone(),
            human: human.clone(),
            acted: act_on.is_some(),
            freeze_id: freeze.as_ref().map(|f| f.id.clone()),
            ..ReceiveReport::default()
        };
        if let (Some(h), Some(f)) = (act_on, &freeze) {
            let detail = json!({
                "transmitter": set.transmitter, "issuer": set.issuer, "jti": set.jti,
                "events": acting, "human": h, "freeze_id": f.id,
            });
            let (ended, failed) = self.end_human_tasks(ctx, h, &actor, &detail).await;
            report.tasks_ended = ended;
            report.tasks_not_ended = failed;
            // Leases of tasks that ended otherwise meanwhile, or that a grant slipped in.
            if let Err(e) = self.revoke_scope(f, &actor).await {
                tracing::warn!(freeze_id = %f.id, code = %e.code, error = %e.message,
                    "shared signals: the sweep of the human's live leases could not run");
            }
        }
        Ok(report)
    }

    /// The active `human` freeze of `human` (ASCII case ignored), if any.
    async fn active_human_freeze(&self, human: &str) -> Result<Option<Freeze>> {
        Ok(self.store.active_freezes().await?.into_iter().find(|f| {
            f.state == FreezeState::Active
                && f.scope.kind == ScopeKind::Human
                && f.scope
                    .value
                    .as_deref()
                    .is_some_and(|v| v.eq_ignore_ascii_case(human))
        }))
    }

    /// Ends every open task acting for `human` (cancelled, each with an `ssf.acted` event);
    /// answers the ended ids and how many could not be ended.
    async fn end_human_tasks(
        &self,
        ctx: &CallCtx,
        human: &str,
        actor: &str,
        detail: &Value,
    ) -> (Vec<String>, usize) {
        let mut ended = Vec::new();
        let mut failed = 0;
        let mut cursor = String::new();
        loop {
            let page = match self.store.open_tasks(&cursor, TASK_PAGE).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "shared signals: open tasks could not be read");
                    return (ended, failed + 1);
                }
            };
            let last = page.len() < TASK_PAGE as usize;
            for t in page {
                cursor.clone_from(&t.id);
                if !t
                    .on_behalf_of
                    .as_deref()
                    .is_some_and(|o| o.eq_ignore_ascii_case(human))
                {
                    continue;
                }
                let id = t.id.clone();
                match self.end_for_set(ctx, t, actor, detail).await {
                    Ok(()) => ended.push(id),
                    Err(e) if e.code == ErrorCode::TaskNotOpen => {}
                    Err(e) => {
                        tracing::warn!(task_id = %id, code = %e.code, error = %e.message,
                            "shared signals: a task acting for the human could not be ended; it stays frozen");
                        failed += 1;
                    }
                }
            }
            if last {
                return (ended, failed);
            }
        }
    }

    /// Cancels `task` with an `ssf.acted` event in its batch, reading it again after a
    /// concurrent change.
    async fn end_for_set(
        &self,
        ctx: &CallCtx,
        mut task: Task,
        actor: &str,
        detail: &Value,
    ) -> Result<()> {
        for _ in 0..3 {
            let acted = AuditEvent::new(self.now(), AuditKind::SsfActed, actor, "ok")
                .task(&task.id)
                .detail(detail.clone());
            match self
                .end_task_with(ctx, task.clone(), TaskState::Cancelled, actor, vec![acted])
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if e.code == ErrorCode::Conflict => {
                    task = self.task_unchecked(&task.id).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::new(
            ErrorCode::Conflict,
            format!("task `{}` kept changing", task.id),
        ))
    }
}

/// A new `human` freeze for `human`, engaged by `actor` because of `set`.
fn human_freeze(human: &str, set: &VerifiedSet, actor: &str, events: &[&str], now: i64) -> Freeze {
    let what: Vec<&str> = events
        .iter()
        .map(|t| t.rsplit('/').next().unwrap_or(t))
        .collect();
    Freeze {
        id: new_id("frz"),
        scope: FreezeScope {
            kind: ScopeKind::Human,
            value: Some(human.to_owned()),
        },
        state: FreezeState::Active,
        engaged_by: actor.to_owned(),
        reason: format!(
            "shared signals: {} for human {human} from transmitter {} (jti {})",
            what.join(", "),
            set.transmitter,
            set.jti
        ),
        created_at_unix_secs: now,
        lifted_by: None,
        lift_reason: None,
        lifted_at_unix_secs: None,
        version: 1,
    }
}
