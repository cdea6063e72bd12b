//! A write whose commit outcome is unknown: the store failed, or its deadline passed, after
//! `COMMIT` was sent ([`StoreError::OutcomeUnknown`]). The batch may be durable; answering
//! "failed" for it would make a retry meet its own effect (a completed task answering 409
//! `task_not_open`). So the broker reads back what the batch wrote before it answers.
//!
//! Evidence, strongest first:
//! 1. An audit event of the batch found in the log by its id (`evt_<uuid>`, unique): the batch
//!    is atomic, so it committed, and its events' seqs follow from the one found (a batch's
//!    events are appended consecutively). Looked up by its task or lease (both indexed), kind,
//!    actor and second.
//! 2. Without such an event: every row the batch writes, read back, equal to what the batch
//!    wrote (versions included). An update that lost to another writer leaves another version
//!    or body; an insert of a fresh random id cannot collide.
//!
//! No evidence (or a failed read-back) keeps the error: answered 503 `store_unavailable`, with
//! the advice to read the state back before retrying. Idempotent operations (ending a task
//! twice in the same state) make such a retry safe either way.

use super::*;

/// What to read back should a commit's outcome be unknown, taken from the batch before it is
/// sent (the batch itself moves into the store).
pub(super) struct ReadBack {
    /// The first audit event that names a task or lease, with its index in the batch.
    witness: Option<(usize, Witness)>,
    /// How many audit events the batch appends.
    events: usize,
    /// The batch's writes, kept only when there is no witness.
    writes: Vec<Write>,
}

/// What finds one audit event in the log: its id, and the indexed fields to search by.
struct Witness {
    id: String,
    task_id: Option<String>,
    lease_id: Option<String>,
    kind: String,
    actor: String,
    at_unix_secs: i64,
}

impl ReadBack {
    /// The read-back plan of `batch`, as it will be committed (authentication events folded).
    pub(super) fn of(batch: &WriteBatch) -> Self {
        let witness = batch
            .audit
            .iter()
            .enumerate()
            .find(|(_, e)| e.task_id.is_some() || e.lease_id.is_some())
            .map(|(i, e)| {
                let w = Witness {
                    id: e.id.clone(),
                    task_id: e.task_id.clone(),
                    lease_id: e.lease_id.clone(),
                    kind: e.kind.clone(),
                    actor: e.actor.clone(),
                    at_unix_secs: e.at_unix_secs,
                };
                (i, w)
            });
        let writes = if witness.is_none() {
            batch.writes.clone()
        } else {
            Vec::new()
        };
        Self {
            witness,
            events: batch.audit.len(),
            writes,
        }
    }
}

impl Broker {
    /// Whether the batch of `plan`, whose commit answered [`StoreError::OutcomeUnknown`], is
    /// durable: `Some(seqs)` (its audit events' seqs; empty when only its rows prove it) if
    /// the read-back proves it committed, `None` when it does not or the store cannot be read.
    pub(super) async fn committed_after_all(&self, plan: &ReadBack) -> Option<Vec<i64>> {
        if let Some((index, witness)) = &plan.witness {
            let seq = self.stored_event_seq(witness).await?;
            let first = seq - *index as i64;
            return Some((0..plan.events as i64).map(|i| first + i).collect());
        }
        if plan
            .writes
            .iter()
            .all(|w| matches!(w, Write::RequireTaskOpen { .. }))
        {
            // Nothing to read back: no row and no findable event.
            return None;
        }
        for w in &plan.writes {
            if !self.row_as_written(w).await? {
                return None;
            }
        }
        Some(Vec::new())
    }

    /// The seq of the witness event if the log holds it (matched by id), `None` if not or
    /// unreadable.
    async fn stored_event_seq(&self, w: &Witness) -> Option<i64> {
        let filter = AuditFilter {
            task_id: w.task_id.clone(),
            lease_id: w.lease_id.clone(),
            kind_prefix: Some(w.kind.clone()),
            actor: Some(w.actor.clone()),
            since_unix_secs: Some(w.at_unix_secs),
            until_unix_secs: Some(w.at_unix_secs.saturating_add(1)),
            limit: Some(1000),
            ..AuditFilter::default()
        };
        let found = self.store.audit_events(&filter).await.ok()?;
        found.into_iter().find(|e| e.id == w.id).map(|e| e.seq)
    }

    /// Whether the row `w` writes is stored exactly as written (`Some(true)`), differs or is
    /// missing (`Some(false)`); `None` when the store cannot be read. Guards write nothing and
    /// count as written.
    async fn row_as_written(&self, w: &Write) -> Option<bool> {
        let same = match w {
            Write::InsertTask(t) | Write::UpdateTask(t) => {
                self.store.task(&t.id).await.ok()?.as_ref() == Some(t)
            }
            Write::InsertRequest(r) | Write::UpdateRequest(r) => {
                self.store.request(&r.id).await.ok()?.as_ref() == Some(r)
            }
            Write::InsertLease(l) | Write::UpdateLease(l) => {
                self.store.lease(&l.id).await.ok()?.as_ref() == Some(l)
            }
            Write::InsertApproval(a) => self
                .store
                .approvals(&a.request_id)
                .await
                .ok()?
                .iter()
                .any(|stored| stored == a),
            Write::InsertFreeze(f) | Write::UpdateFreeze(f) => {
                self.store.freeze(&f.id).await.ok()?.as_ref() == Some(f)
            }
            Write::InsertNotification(n) | Write::UpdateNotification(n) => self
                .store
                .notifications_for_request(&n.notice.request_id)
                .await
                .ok()?
                .iter()
                .any(|stored| stored == n),
            Write::InsertConsoleSession(c) => {
                self.store.console_session(&c.id_hmac).await.ok()?.as_ref() == Some(c)
            }
            Write::DeleteConsoleSession { id_hmac } => {
                self.store.console_session(id_hmac).await.ok()?.is_none()
            }
            Write::InsertOAuth(r) | Write::UpdateOAuth(r) => {
                self.store.oauth_record(&r.key()).await.ok()?.as_ref() == Some(r)
            }
            // Guards and counters prove nothing alone; the batch's rows and events decide.
            Write::RequireTaskOpen { .. }
            | Write::Count(_)
            | Write::RequireLiveBelow { .. }
            | Write::RequireCounter { .. } => true,
            // Not read back: a received SET whose commit is unknown is answered `503`, and
            // the transmitter's retry finds its `jti` recorded or not.
            Write::InsertReceivedSet(_) => return None,
        };
        Some(same)
    }
}
