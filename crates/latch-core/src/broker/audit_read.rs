//! Reading the audit trail: the admin-checked query, credential search and export record
//! behind `/v1/audit`, `/v1/audit/find`, `/v1/audit/export` and `/v1/audit/checkpoints`.
//!
//! Only humans in one of [`BrokerSettings::admin_groups`] may read the trail. A search and an
//! export are themselves recorded (`audit.searched`, `audit.exported`), so who looked at the
//! trail stays in it.

use super::*;

/// Default page size of [`Broker::audit_query`].
const QUERY_DEFAULT_LIMIT: u32 = 100;
/// Largest page of [`Broker::audit_query`] and of each lookup of [`Broker::find_credential`].
const QUERY_MAX_LIMIT: u32 = 1000;

impl Broker {
    /// Whether `human` is in one of [`BrokerSettings::admin_groups`].
    pub fn is_admin(&self, human: &Human) -> bool {
        human
            .groups
            .iter()
            .any(|g| self.settings.admin_groups.contains(g))
    }

    /// Checks that `human` may read the audit trail (is in one of the admin groups).
    ///
    /// # Errors
    /// `wrong_principal_kind` when they are in none.
    pub fn require_audit_admin(&self, human: &Human) -> Result<()> {
        if self.is_admin(human) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::WrongPrincipalKind,
                "reading the audit log needs an admin group",
            ))
        }
    }

    /// Audit events matching `filter`, in `seq` order, for an admin.
    ///
    /// `last` (only without `filter.after_seq`) starts from the last this-many records of the
    /// log, before the other filters apply (as `tail` does). The page size is `filter.limit`,
    /// default 100, at most 1000.
    ///
    /// # Errors
    /// `wrong_principal_kind` (not an admin), `store_unavailable`.
    pub async fn audit_query(
        &self,
        human: &Human,
        mut filter: AuditFilter,
        last: Option<u32>,
    ) -> Result<Vec<AuditEvent>> {
        self.require_audit_admin(human)?;
        if let (None, Some(n)) = (filter.after_seq, last) {
            let head = self.store.audit_head().await?.map_or(0, |h| h.0);
            filter.after_seq = Some((head - i64::from(n)).max(0));
        }
        filter.limit = Some(
            filter
                .limit
                .unwrap_or(QUERY_DEFAULT_LIMIT)
                .min(QUERY_MAX_LIMIT),
        );
        Ok(self.store.audit_events(&filter).await?)
    }

    /// The audit story of a credential `value` (`latch audit find`), for an admin: the events
    /// naming it by keyed HMAC, plus every later event of their leases (renewals, revocation),
    /// in `seq` order without duplicates. Records an `audit.searched` event with the number of
    /// matches.
    ///
    /// # Errors
    /// `wrong_principal_kind` (not an admin), `invalid_request` (`value` empty after trimming
    /// whitespace), `store_unavailable` (audit fails closed: no answer without the record).
    ///
    /// # Security
    /// Only the value's keyed HMAC is computed and compared; the value is neither stored nor
    /// logged.
    pub async fn find_credential(
        &self,
        ctx: &CallCtx,
        human: &Human,
        value: &str,
    ) -> Result<Vec<AuditEvent>> {
        self.require_audit_admin(human)?;
        let value = value.trim();
        if value.is_empty() {
            return Err(bad("`value` must not be empty"));
        }
        let f = AuditFilter {
            credential_hmac: Some(self.credential_hmac(value)),
            limit: Some(QUERY_MAX_LIMIT),
            ..AuditFilter::default()
        };
        let mut found = self.store.audit_events(&f).await?;
        // The lease's later events (renewals, revocation) belong to the story too.
        let leases: BTreeSet<String> = found.iter().filter_map(|e| e.lease_id.clone()).collect();
        for l in leases {
            let more = self
                .store
                .audit_events(&AuditFilter {
                    lease_id: Some(l),
                    limit: Some(QUERY_MAX_LIMIT),
                    ..AuditFilter::default()
                })
                .await?;
            found.extend(more);
        }
        found.sort_by_key(|e| e.seq);
        found.dedup_by_key(|e| e.seq);
        let ev = AuditEvent::new(
            self.now(),
            crate::model::AuditKind::AuditSearched,
            &human.id,
            "ok",
        )
        .detail(json!({ "matches": found.len() }));
        self.record_event(ctx, ev).await?;
        Ok(found)
    }

    /// Authorises an audit export for an admin and records it (`audit.exported`, with
    /// `after_seq` and `checkpoints_only`) before any record leaves. Returns the sequence number
    /// to export after (`after_seq`, default 0, never negative); the export itself (format
    /// `latch-audit/1`) is written by the server's checkpointer.
    ///
    /// # Errors
    /// `wrong_principal_kind` (not an admin), `store_unavailable` (audit fails closed: no
    /// export without its record).
    pub async fn export_audit(
        &self,
        ctx: &CallCtx,
        human: &Human,
        after_seq: Option<i64>,
        checkpoints_only: bool,
    ) -> Result<i64> {
        self.require_audit_admin(human)?;
        let ev = AuditEvent::new(
            self.now(),
            crate::model::AuditKind::AuditExported,
            &human.id,
            "ok",
        )
        .detail(json!({
            "after_seq": after_seq, "checkpoints_only": checkpoints_only,
        }));
        self.record_event(ctx, ev).await?;
        Ok(after_seq.unwrap_or(0).max(0))
    }
}
