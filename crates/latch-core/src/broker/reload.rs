//! Policy reload: swap the policy set and re-evaluate every active lease under it.

use super::*;

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

impl Broker {
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
        let ev = AuditEvent::new(now, AuditKind::PolicyReloaded, BROKER, "ok")
            .detail(json!({"fingerprint": fingerprint, "policies": count, "source": source}));
        self.commit(&CallCtx::default(), WriteBatch::new().audit(ev))
            .await?;
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(engine);
        let mut report = ReloadReport {
            fingerprint,
            ..Default::default()
        };
        let mut after = String::new();
        // Each task's history, read once per reload.
        let mut views: HashMap<String, history::HistoryView> = HashMap::new();
        loop {
            let page = self.store.active_leases(&after, 200).await?;
            let Some(last) = page.last() else { break };
            after = last.id.clone();
            for l in page {
                report.leases_checked += 1;
                let Some(task) = self.store.task(&l.task_id).await? else {
                    continue;
                };
                let view = match views.get(&task.id) {
                    Some(v) => v.clone(),
                    None => {
                        let v = self.history_view(&task, now).await?;
                        views.insert(task.id.clone(), v.clone());
                        v
                    }
                };
                let detail = json!({"fingerprint": report.fingerprint});
                if self
                    .enforce_on_lease(&task, &l, &view, "policy_changed", detail)
                    .await?
                {
                    report.leases_revoked.push(l.id.clone());
                }
            }
        }
        Ok(report)
    }

    /// Continuous enforcement of one live lease: decides it again (its task's current history
    /// `view`, its request's approvals, the TTL it has left) and revokes it when the policies no
    /// longer allow it (`credential.policy_revoked`, with `detail` added, revocation `reason`).
    /// Returns whether it was revoked.
    ///
    /// # Errors
    /// `store_unavailable`.
    pub(super) async fn enforce_on_lease(
        &self,
        task: &Task,
        l: &Lease,
        view: &history::HistoryView,
        reason: &str,
        mut detail: serde_json::Value,
    ) -> Result<bool> {
        let now = self.now();
        let Some(req) = self.store.request(&l.request_id).await? else {
            return Ok(false);
        };
        let Ok(resource) = self.resource(&l.resource_id).cloned() else {
            return Ok(false);
        };
        let approval = self.approval_context(&req).await?;
        let d = self.decide(&Ask {
            task,
            workload: &task.owner,
            resource: &resource,
            actions: &l.actions,
            ttl_secs: (l.expires_at_unix_secs - now).max(1),
            source_ip: req.source_ip.as_deref(),
            approval: &approval,
            params: &req.params,
            history: view,
        });
        if matches!(d, Decision::Allow { .. }) {
            return Ok(false);
        }
        detail["policy_ids"] = json!(d.policy_ids());
        let ctx = CallCtx::default();
        ctx.push(
            AuditEvent::new(now, AuditKind::CredentialPolicyRevoked, BROKER, d.kind())
                .task(&l.task_id)
                .lease(&l.id)
                .detail(detail),
        );
        match self.revoke_lease(&ctx, l.clone(), reason, BROKER).await {
            Ok(_) => Ok(true),
            Err(e) if e.code == ErrorCode::Conflict || e.code == ErrorCode::LeaseNotActive => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Records that a policy reload was refused (the old set stays in force).
    ///
    /// # Errors
    /// `store_unavailable`.
    pub async fn record_reload_refused(&self, source: &str, error: &str) -> Result<()> {
        let ev = AuditEvent::new(
            self.now(),
            AuditKind::PolicyReloadRefused,
            BROKER,
            "invalid",
        )
        .detail(json!({"source": source, "error": error}));
        self.commit(&CallCtx::default(), WriteBatch::new().audit(ev))
            .await
            .map(|_| ())
            .map_err(Into::into)
    }
}
