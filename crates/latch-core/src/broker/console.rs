//! The approval console's use cases: sessions (open, look up, close), sign-in failures, CSRF
//! tokens, the requests a human may see, and task timelines with the rule of who may read them.
//!
//! Who may read what:
//! * a request page: the approvers it asks (a group of theirs is one of its step-up groups),
//!   the human its agent acts for, and admins ([`BrokerSettings::admin_groups`]);
//! * a task's timeline: the task's own human (`on_behalf_of`), anyone who may read one of its
//!   requests' pages as an approver, and admins.
//!
//! Anyone else gets `task_not_found` / `request_not_found`, as for an id that does not exist.

use super::*;
use crate::console::{RequestView, TaskTimeline};

/// Most audit events a task's timeline shows.
const TIMELINE_MAX: u32 = 1000;

impl Broker {
    /// The keyed HMAC (hex) under which the session with id `session_id` is stored.
    pub fn console_session_hmac(&self, session_id: &str) -> String {
        self.hasher
            .hmac_hex(&format!("latch console session v1\0{session_id}"))
    }

    /// The CSRF token of the session with id `session_id`: a keyed HMAC of the id, so it is
    /// per session, cannot be computed without the id, and does not reveal it.
    pub fn console_csrf_token(&self, session_id: &str) -> String {
        self.hasher
            .hmac_hex(&format!("latch console csrf v1\0{session_id}"))
    }

    /// Whether `presented` is the CSRF token of the session `session_id` (constant time).
    pub fn console_csrf_ok(&self, session_id: &str, presented: &str) -> bool {
        let expected = self.console_csrf_token(session_id);
        aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_bytes(), presented.as_bytes())
            .is_ok()
    }

    /// Opens a console session for `human` (signed in `via` `oidc` or `dev`), stored under the
    /// HMAC of `session_id`, valid `ttl_secs`; records `console.signed_in` with it. Expired
    /// sessions are purged first.
    ///
    /// # Errors
    /// `invalid_request` for a non-positive TTL; `store_unavailable`.
    pub async fn open_console_session(
        &self,
        ctx: &CallCtx,
        human: &Human,
        name: Option<&str>,
        via: &str,
        session_id: &str,
        ttl_secs: i64,
    ) -> Result<ConsoleSession> {
        if ttl_secs <= 0 {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "a console session needs a positive lifetime",
            ));
        }
        let now = self.now();
        // Sessions that ended are deleted as new ones open (best effort: they are refused on
        // read anyway).
        if let Err(e) = self.store.purge_console_sessions(now).await {
            tracing::debug!(error = %e, "expired console sessions not purged; will retry");
        }
        let session = ConsoleSession {
            id_hmac: self.console_session_hmac(session_id),
            human_id: human.id.clone(),
            issuer: human.issuer.clone(),
            groups: human.groups.clone(),
            name: name.map(str::to_owned),
            via: via.to_owned(),
            created_at_unix_secs: now,
            expires_at_unix_secs: now.saturating_add(ttl_secs),
        };
        let ev = AuditEvent::new(now, AuditKind::ConsoleSignedIn, &human.id, "ok").detail(json!({
            "via": via,
            "issuer": human.issuer,
            "groups": human.groups,
            "session": session_ref(&session),
            "expires_at_unix_secs": session.expires_at_unix_secs,
        }));
        let batch = WriteBatch::new()
            .write(Write::InsertConsoleSession(session.clone()))
            .audit(ev);
        self.commit(ctx, batch).await?;
        Ok(session)
    }

    /// The live session whose id is `session_id`; `None` when there is none or it expired.
    ///
    /// # Errors
    /// `store_unavailable`.
    pub async fn console_session(&self, session_id: &str) -> Result<Option<ConsoleSession>> {
        let found = self
            .store
            .console_session(&self.console_session_hmac(session_id))
            .await?;
        let now = self.now();
        Ok(found.filter(|s| now < s.expires_at_unix_secs))
    }

    /// The human a console session may act as — vote, or act as an operator — or `None` when
    /// its sign-in is more than `max_age_secs` old. A session keeps the groups it was signed in
    /// with; past this age they may no longer be true (a human removed from an approver or
    /// admin group), so the caller must sign the human in again, which reads their groups
    /// afresh from the identity provider. Reading pages needs no fresh authority.
    ///
    /// # Security
    /// This bounds how long a group change at the identity provider takes to reach the
    /// console's decisions (`[console] authority_max_age`, default 10 minutes).
    pub fn console_authority(&self, session: &ConsoleSession, max_age_secs: i64) -> Option<Human> {
        let age = self.now().saturating_sub(session.created_at_unix_secs);
        (age <= max_age_secs).then(|| session.human())
    }

    /// Signs the session out: deletes it and records `console.signed_out`.
    ///
    /// # Errors
    /// `store_unavailable`.
    pub async fn close_console_session(
        &self,
        ctx: &CallCtx,
        session: &ConsoleSession,
    ) -> Result<()> {
        let ev = AuditEvent::new(
            self.now(),
            AuditKind::ConsoleSignedOut,
            &session.human_id,
            "ok",
        )
        .detail(json!({"via": session.via, "session": session_ref(session)}));
        let batch = WriteBatch::new()
            .write(Write::DeleteConsoleSession {
                id_hmac: session.id_hmac.clone(),
            })
            .audit(ev);
        self.commit(ctx, batch).await?;
        Ok(())
    }

    /// Records a failed console sign-in (`console.sign_in_failed`, outcome `code`). `who` is
    /// the human when known (an ID token that verified but failed a later check), else
    /// `anonymous`; `reason` must hold no token or secret.
    ///
    /// Failures are counted per source like every failed authentication
    /// ([`crate::auth_failures`]): the first of its code in the source's window is written at
    /// once, later ones only count towards the window's `auth.failed` summary, so a flood of bad
    /// callbacks writes a bounded number of rows. Callers refuse a limited source first
    /// ([`Broker::check_auth_limit`]).
    ///
    /// # Errors
    /// `store_unavailable`.
    pub async fn console_sign_in_failed(
        &self,
        ctx: &CallCtx,
        who: Option<&str>,
        code: ErrorCode,
        reason: &str,
    ) -> Result<()> {
        let source = ctx.source_ip.as_deref().unwrap_or("unknown");
        if let crate::auth_failures::Recorded::Counted =
            self.auth_failures.record(source, code, self.now())
        {
            return Ok(());
        }
        let ev = AuditEvent::new(
            self.now(),
            AuditKind::ConsoleSignInFailed,
            who.unwrap_or("anonymous"),
            code.as_str(),
        )
        .detail(json!({"reason": reason}));
        self.commit(ctx, WriteBatch::new().audit(ev)).await?;
        Ok(())
    }

    /// The console's pending list: every request `human` may vote on, readable.
    ///
    /// # Errors
    /// `store_unavailable`.
    pub async fn console_pending(&self, human: &Human) -> Result<Vec<RequestView>> {
        let now = self.now();
        Ok(self
            .pending_views(human)
            .await?
            .iter()
            .map(|pv| self.request_view(human, pv, now))
            .collect())
    }

    /// One request's page for `human`, whatever its state (see the module's reading rule).
    ///
    /// # Errors
    /// `request_not_found` (also when `human` may not read it); `store_unavailable`.
    pub async fn console_request(&self, human: &Human, request_id: &str) -> Result<RequestView> {
        let not_found = || {
            ApiError::new(
                ErrorCode::RequestNotFound,
                format!("no request {}", quote(request_id)),
            )
        };
        let request = self
            .store
            .request(request_id)
            .await?
            .ok_or_else(not_found)?;
        let task = self
            .store
            .task(&request.task_id)
            .await?
            .ok_or_else(not_found)?;
        let asked = self.asks(human, &request);
        if !(asked || self.is_own_task(human, &task) || self.is_admin(human)) {
            return Err(not_found());
        }
        let approvals = self.store.approvals(&request.id).await?;
        let pv = PendingView {
            request,
            task,
            approvals,
        };
        Ok(self.request_view(human, &pv, self.now()))
    }

    /// A task's timeline from the audit trail, for `human` (see the module's reading rule).
    ///
    /// # Errors
    /// `task_not_found` (also when `human` may not read it); `store_unavailable`.
    pub async fn console_task(&self, human: &Human, task_id: &str) -> Result<TaskTimeline> {
        let not_found = || {
            ApiError::new(
                ErrorCode::TaskNotFound,
                format!("no task {}", quote(task_id)),
            )
        };
        let task = self.store.task(task_id).await?.ok_or_else(not_found)?;
        let filter = AuditFilter {
            task_id: Some(task.id.clone()),
            limit: Some(TIMELINE_MAX),
            ..AuditFilter::default()
        };
        let events = self.store.audit_events(&filter).await?;
        let may = self.is_own_task(human, &task)
            || self.is_admin(human)
            || self.approves_in(human, &task, &events).await?;
        if !may {
            return Err(not_found());
        }
        Ok(TaskTimeline::of(&task, &events))
    }

    /// Whether `human` is one of the approvers `request` asks for.
    fn asks(&self, human: &Human, request: &AccessRequest) -> bool {
        self.step_groups(request)
            .iter()
            .any(|g| human.groups.contains(&g.group))
    }

    /// Whether `task` is one `human`'s agent works in.
    fn is_own_task(&self, human: &Human, task: &Task) -> bool {
        task.on_behalf_of
            .as_deref()
            .is_some_and(|h| h.eq_ignore_ascii_case(&human.id))
    }

    /// Whether one of the task's requests (named by its events) asks `human` to approve.
    async fn approves_in(&self, human: &Human, task: &Task, events: &[AuditEvent]) -> Result<bool> {
        let mut seen = BTreeSet::new();
        for id in events.iter().filter_map(|e| e.access_request_id.as_deref()) {
            if !seen.insert(id.to_owned()) {
                continue;
            }
            if let Some(r) = self.store.request(id).await?
                && r.task_id == task.id
                && self.asks(human, &r)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn request_view(&self, human: &Human, pv: &PendingView, now: i64) -> RequestView {
        let resource = self.resources.get(&pv.request.resource_id);
        let production = resource.is_some_and(|r| self.is_production(r.environment.as_str()));
        RequestView::of(human, pv, resource, production, now)
    }
}

/// A short, non-secret reference to a session for the audit trail (the first 16 hex digits of
/// the HMAC of its id), so sign-in and sign-out events can be matched up.
fn session_ref(s: &ConsoleSession) -> String {
    s.id_hmac.chars().take(16).collect()
}
