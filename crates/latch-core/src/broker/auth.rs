//! Authentication of callers (workloads and humans), queued as audit events on the call; and
//! the failures, aggregated per source and rate-limited ([`crate::auth_failures`]).

use super::*;
use crate::auth_failures::{AuthFailureSummary, Recorded};

impl Broker {
    /// Verifies a bearer token. Success queues an `auth.succeeded` event in `ctx` (committed
    /// with the call's first change); failure goes to
    /// [`record_auth_failure`](Self::record_auth_failure) (audited at once if it is the first of
    /// its code from the caller's source in the current window, else counted for the window's
    /// summary).
    ///
    /// # Errors
    /// `rate_limited` when the caller's source had too many failures in its window (nothing is
    /// verified or written); else the verifier's authentication error (`token_expired`,
    /// `unknown_kid`, …); `store_unavailable` if a failure that must be audited at once cannot be.
    pub async fn authenticate(&self, ctx: &CallCtx, token: Option<&str>) -> Result<Principal> {
        self.check_auth_limit_for(ctx, token)?;
        let now = self.now();
        // A bearer token names the caller; without one, the connection's X.509-SVID does.
        let result = match (token, &ctx.peer_svid) {
            // An access token Latch issued to an MCP client: looked up by its HMAC, accepted
            // only through the resource it was issued for.
            (Some(t), _)
                if crate::credential_format::parse(t)
                    == Some(crate::credential_format::CredentialKind::OAuthAccess) =>
            {
                self.verify_oauth_access(ctx, t)
                    .await
                    .map(|w| Principal::Workload(Box::new(w)))
            }
            (Some(t), _) => self.verifier.verify(t).await,
            (None, Some(svid)) => self
                .verifier
                .x509_svid_principal(&svid.spiffe_id, svid.not_after_unix_secs),
            (None, None) => Err(ApiError::new(
                ErrorCode::TokenMissing,
                "no bearer token was presented",
            )),
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
                let method = if token.is_none() {
                    "x509_svid"
                } else {
                    "bearer"
                };
                ctx.push(
                    AuditEvent::new(now, AuditKind::AuthSucceeded, &actor, "ok").detail(
                        json!({"principal_kind": kind, "issuer": issuer, "source_ip": ctx.source_ip,
                           "method": method}),
                    ),
                );
                Ok(p)
            }
            Err(e) => {
                self.record_auth_failure(ctx, &e).await?;
                Err(e)
            }
        }
    }

    /// Refuses a call whose source (`ctx.source_ip`) had `max_failures` failed
    /// authentications in its current window; the refusal is counted in the window's summary.
    /// Calls without a source (in-process) are never refused.
    ///
    /// # Errors
    /// `rate_limited` (429), with the seconds until the window ends in the message; the HTTP
    /// layer adds them as `Retry-After` ([`auth_retry_after`](Self::auth_retry_after)).
    pub fn check_auth_limit(&self, ctx: &CallCtx) -> Result<()> {
        let Some(ip) = ctx.source_ip.as_deref() else {
            return Ok(());
        };
        match self.auth_failures.check(ip, self.now()) {
            None => Ok(()),
            Some(secs) => Err(ApiError::new(
                ErrorCode::RateLimited,
                format!("too many failed authentications from this address; retry in {secs}s"),
            )),
        }
    }

    /// [`check_auth_limit`](Self::check_auth_limit), except that a bearer `token` the verifier
    /// accepted recently ([`IdentityVerifier::recently_verified`]) goes through: the limit
    /// refuses unproven tokens from a flooding address, not the agents behind the same address
    /// that already proved who they are.
    ///
    /// # Errors
    /// `rate_limited` (429), as `check_auth_limit`.
    pub fn check_auth_limit_for(&self, ctx: &CallCtx, token: Option<&str>) -> Result<()> {
        let limited = self.auth_retry_after(ctx.source_ip.as_deref()).is_some();
        if limited && token.is_some_and(|t| self.verifier.recently_verified(t)) {
            return Ok(());
        }
        self.check_auth_limit(ctx)
    }

    /// Seconds until a rate-limited source may try again (`None`: it is not limited). Counts
    /// nothing.
    pub fn auth_retry_after(&self, source_ip: Option<&str>) -> Option<u64> {
        self.auth_failures.retry_after(source_ip?, self.now())
    }

    /// Records a failed authentication by `ctx`'s source (also client authentication of
    /// introspection and revocation calls): the first failure of its code in the source's
    /// window is committed at once as `auth.failed` (outcome: the code; detail: message,
    /// `source_ip`, `window_start_unix_secs`); later ones only count towards the window's
    /// summary, written by [`flush_auth_failures`](Self::flush_auth_failures).
    ///
    /// # Errors
    /// `store_unavailable` if an event that must be written at once cannot be.
    pub async fn record_auth_failure(&self, ctx: &CallCtx, e: &ApiError) -> Result<()> {
        let now = self.now();
        let source = ctx.source_ip.as_deref().unwrap_or("unknown");
        match self.auth_failures.record(source, e.code, now) {
            Recorded::Counted => Ok(()),
            Recorded::AuditNow {
                window_start_unix_secs,
            } => {
                let ev = AuditEvent::new(now, AuditKind::AuthFailed, "anonymous", e.code.as_str())
                    .detail(json!({"message": e.message, "source_ip": ctx.source_ip,
                        "window_start_unix_secs": window_start_unix_secs}));
                self.commit(ctx, WriteBatch::new().audit(ev)).await?;
                Ok(())
            }
        }
    }

    /// Writes the summaries of failed-authentication windows that have closed (with `all`, of
    /// every window: at shutdown) as `auth.failed` events with outcome `repeated`, in one
    /// batch; returns how many. Run periodically by the server.
    ///
    /// # Errors
    /// `store_unavailable`: the summaries are kept for the next flush.
    pub async fn flush_auth_failures(&self, all: bool) -> Result<usize> {
        let due: Vec<AuthFailureSummary> = self.auth_failures.take_due(self.now(), all);
        if due.is_empty() {
            return Ok(0);
        }
        let batch = due
            .iter()
            .fold(WriteBatch::new(), |b, s| b.audit(s.event()));
        match self.commit(&CallCtx::default(), batch).await {
            Ok(_) => Ok(due.len()),
            Err(e) => {
                self.auth_failures.requeue(due);
                Err(e.into())
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
}
