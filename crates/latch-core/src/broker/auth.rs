//! Authentication of callers (workloads and humans), queued as audit events on the call.

use super::*;

impl Broker {
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
                ctx.push(AuditEvent::new(now, AuditKind::AuthSucceeded, &actor, "ok").detail(
                    json!({"principal_kind": kind, "issuer": issuer, "source_ip": ctx.source_ip}),
                ));
                Ok(p)
            }
            Err(e) => {
                let ev = AuditEvent::new(now, AuditKind::AuthFailed, "anonymous", e.code.as_str())
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
}
