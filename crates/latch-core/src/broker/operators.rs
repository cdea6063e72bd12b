//! Operators: humans in one of [`BrokerSettings::admin_groups`] see every open task and live
//! lease, revoke a lease and cancel a task of any workload — each with a required reason,
//! audited (`operator.acted`) in the batch of the change it explains.
//!
//! The console (and any other edge) calls these methods; they check the operator themselves.

use super::*;

/// Default page size of the operators' lists.
const PAGE_DEFAULT: u32 = 100;
/// Largest page of the operators' lists.
const PAGE_MAX: u32 = 500;
/// Store rows one list call reads at most while filtering; past it, the page ends early with
/// a `next` cursor so the caller goes on (a call never scans the whole store).
const SCAN_MAX: usize = 5_000;
/// Rows read per store call while filtering.
const SCAN_CHUNK: u32 = 500;

/// Filters and paging of [`Broker::operator_tasks`] and [`Broker::operator_leases`]. Every
/// filter is optional; given ones must all match.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OperatorFilter {
    /// Only this workload principal (`iss#sub`, exact).
    pub workload: Option<String>,
    /// Only tasks of this repository (`owner/name`, ASCII case ignored).
    pub repository: Option<String>,
    /// Only this resource (leases of it; tasks holding a live lease of it).
    pub resource: Option<String>,
    /// Only tasks of this environment (ASCII case ignored).
    pub environment: Option<String>,
    /// Paging: the `next` of the previous page.
    pub after: Option<String>,
    /// Page size (default 100, at most 500).
    pub limit: Option<u32>,
}

/// A page of open tasks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskPage {
    /// Open tasks, by id (oldest first: ids are time-ordered).
    pub items: Vec<Task>,
    /// Pass as `after` for the next page; absent on the last.
    pub next: Option<String>,
}

/// A live lease with what operators filter and act on: whose it is and where it came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LiveLease {
    /// The lease (never the credential: its HMAC at most).
    pub lease: Lease,
    /// The workload principal of its task.
    pub principal_id: String,
    /// Its task's repository.
    pub repository: Option<String>,
    /// Its task's branch.
    pub branch: Option<String>,
    /// Its task's environment.
    pub environment: String,
}

/// A page of live leases.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeasePage {
    /// Live (`issuing` or `active`) leases, by id.
    pub items: Vec<LiveLease>,
    /// Pass as `after` for the next page; absent on the last.
    pub next: Option<String>,
}

impl OperatorFilter {
    fn task_matches(&self, t: &Task) -> bool {
        self.workload.as_ref().is_none_or(|w| *w == t.owner.id)
            && self.repository.as_ref().is_none_or(|r| {
                t.repository
                    .as_deref()
                    .is_some_and(|x| x.eq_ignore_ascii_case(r))
            })
            && self
                .environment
                .as_ref()
                .is_none_or(|e| t.environment.as_str().eq_ignore_ascii_case(e))
    }

    fn page_size(&self) -> usize {
        self.limit.unwrap_or(PAGE_DEFAULT).clamp(1, PAGE_MAX) as usize
    }
}

impl Broker {
    /// Checks that `human`'s groups were asserted at most `authority_max_age_secs` ago (the
    /// token's `iat`, or the console sign-in), so that a group removed at the identity provider
    /// stops counting for votes and operator actions within that bound, whatever the token's
    /// own lifetime.
    ///
    /// # Errors
    /// `insufficient_user_authentication` (401, RFC 9470) when they are older, or undated.
    ///
    /// # Security
    /// Fails closed: a token without `iat` cannot vote or act as an operator.
    pub fn require_recent_groups(&self, human: &Human) -> Result<()> {
        let max = self.settings.authority_max_age_secs;
        let fresh = human
            .groups_asserted_at_unix_secs
            .is_some_and(|at| self.now().saturating_sub(at) <= max);
        if fresh {
            return Ok(());
        }
        Err(ApiError::new(
            ErrorCode::InsufficientUserAuthentication,
            format!(
                "`{}`'s groups were asserted more than {max} s ago: sign in again (`latch login`, or a fresh token) so that they are read afresh, then repeat",
                human.id
            ),
        ))
    }

    /// Checks that `human` is an operator whose groups were asserted recently: what every
    /// operator action (revoke, cancel, kill switch, lift) needs.
    ///
    /// # Errors
    /// `not_admin`; `insufficient_user_authentication` when the groups are older than
    /// `authority_max_age_secs` ([`Broker::require_recent_groups`]).
    pub fn require_operator_action(&self, human: &Human) -> Result<()> {
        self.require_operator(human)?;
        self.require_recent_groups(human)
    }

    /// Checks that `human` is an operator (in one of the admin groups). Enough to read;
    /// actions also need recent groups ([`Broker::require_operator_action`]).
    ///
    /// # Errors
    /// `not_admin` when they are in none.
    pub fn require_operator(&self, human: &Human) -> Result<()> {
        if human
            .groups
            .iter()
            .any(|g| self.settings.admin_groups.contains(g))
        {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::NotAdmin,
                format!(
                    "`{}` is not an operator: operator actions need a human in one of the admin groups (`[admin] groups`)",
                    human.id
                ),
            ))
        }
    }

    /// Open tasks of every workload, filtered and paged (see [`OperatorFilter`]).
    ///
    /// # Errors
    /// `not_admin`, `store_unavailable`.
    pub async fn operator_tasks(&self, human: &Human, f: &OperatorFilter) -> Result<TaskPage> {
        self.require_operator(human)?;
        let want = f.page_size();
        let mut cursor = f.after.clone().unwrap_or_default();
        let mut items = Vec::new();
        let mut scanned = 0usize;
        loop {
            let chunk = self.store.open_tasks(&cursor, SCAN_CHUNK).await?;
            let exhausted = chunk.len() < SCAN_CHUNK as usize;
            for t in chunk {
                scanned += 1;
                cursor.clone_from(&t.id);
                if f.task_matches(&t) && self.holds_resource(&t, f.resource.as_deref()).await? {
                    items.push(t);
                    if items.len() == want {
                        return Ok(TaskPage {
                            items,
                            next: Some(cursor),
                        });
                    }
                }
            }
            if exhausted {
                return Ok(TaskPage { items, next: None });
            }
            if scanned >= SCAN_MAX {
                return Ok(TaskPage {
                    items,
                    next: Some(cursor),
                });
            }
        }
    }

    /// Whether `t` holds a live lease of `resource` (always, without a resource filter).
    async fn holds_resource(&self, t: &Task, resource: Option<&str>) -> Result<bool> {
        let Some(r) = resource else {
            return Ok(true);
        };
        Ok(self.store.leases_by_task(&t.id).await?.iter().any(|l| {
            l.resource_id == r && matches!(l.state, LeaseState::Active | LeaseState::Issuing)
        }))
    }

    /// Live leases of every workload, filtered and paged (see [`OperatorFilter`]).
    ///
    /// # Errors
    /// `not_admin`, `store_unavailable`.
    pub async fn operator_leases(&self, human: &Human, f: &OperatorFilter) -> Result<LeasePage> {
        self.require_operator(human)?;
        let want = f.page_size();
        let mut cursor = f.after.clone().unwrap_or_default();
        let mut items = Vec::new();
        let mut tasks: HashMap<String, Option<Task>> = HashMap::new();
        let mut scanned = 0usize;
        loop {
            let chunk = self.store.live_leases(&cursor, SCAN_CHUNK).await?;
            let exhausted = chunk.len() < SCAN_CHUNK as usize;
            for l in chunk {
                scanned += 1;
                cursor.clone_from(&l.id);
                if f.resource.as_ref().is_some_and(|r| *r != l.resource_id) {
                    continue;
                }
                if !tasks.contains_key(&l.task_id) {
                    let t = self.store.task(&l.task_id).await?;
                    tasks.insert(l.task_id.clone(), t);
                }
                let Some(Some(t)) = tasks.get(&l.task_id) else {
                    continue;
                };
                if !f.task_matches(t) {
                    continue;
                }
                items.push(LiveLease {
                    principal_id: t.owner.id.clone(),
                    repository: t.repository.clone(),
                    branch: t.branch.clone(),
                    environment: t.environment.as_str().to_owned(),
                    lease: l,
                });
                if items.len() == want {
                    return Ok(LeasePage {
                        items,
                        next: Some(cursor),
                    });
                }
            }
            if exhausted {
                return Ok(LeasePage { items, next: None });
            }
            if scanned >= SCAN_MAX {
                return Ok(LeasePage {
                    items,
                    next: Some(cursor),
                });
            }
        }
    }

    /// An operator revokes a lease of any workload. The revocation goes the usual way
    /// (in place, or `revoking` and attempted at once, retried by the reaper, parked while its
    /// target is down); `operator.acted` with the operator and `reason` joins its batch.
    ///
    /// # Errors
    /// `not_admin`, `invalid_request` (an empty reason, or one with control, bidi or
    /// zero-width characters), `lease_not_found`, `lease_not_active`, `conflict`,
    /// `store_unavailable`.
    pub async fn operator_revoke_lease(
        &self,
        ctx: &CallCtx,
        human: &Human,
        lease_id: &str,
        reason: &str,
    ) -> Result<Lease> {
        self.require_operator_action(human)?;
        check_text("reason", reason, self.settings.max_text_len, true)?;
        let lease = self.store.lease(lease_id).await?.ok_or_else(|| {
            ApiError::new(
                ErrorCode::LeaseNotFound,
                format!("no lease {}", quote(lease_id)),
            )
        })?;
        if !lease.state.is_live() {
            return Err(ApiError::new(
                ErrorCode::LeaseNotActive,
                format!("lease `{}` is already revoked", lease.id),
            ));
        }
        let now = self.now();
        let acted = operator_event(now, human, "revoke_lease", reason)
            .task(&lease.task_id)
            .lease(&lease.id);
        let (b, rv) = self.revocation_writes(
            WriteBatch::new().audit(acted),
            std::slice::from_ref(&lease),
            "revoked_by_operator",
            &human.id,
            now,
        );
        self.commit(ctx, b).await?;
        self.index_remove(&lease);
        let _ = self.revoke_all(rv).await;
        self.store
            .lease(&lease.id)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::Internal, "lease vanished"))
    }

    /// An operator cancels a task of any workload: as its owner's cancel (every lease revoked,
    /// its pending and approved requests closed), with `operator.acted` in the same batch.
    ///
    /// # Errors
    /// `not_admin`, `invalid_request`, `task_not_found`, `task_not_open`, `conflict`,
    /// `store_unavailable`.
    pub async fn operator_cancel_task(
        &self,
        ctx: &CallCtx,
        human: &Human,
        task_id: &str,
        reason: &str,
    ) -> Result<Task> {
        self.require_operator_action(human)?;
        check_text("reason", reason, self.settings.max_text_len, true)?;
        let task = self.task_unchecked(task_id).await?;
        let acted = operator_event(self.now(), human, "cancel_task", reason).task(&task.id);
        self.end_task_with(ctx, task, TaskState::Cancelled, &human.id, vec![acted])
            .await
    }
}

/// The `operator.acted` event of `human` doing `action` for `reason`.
fn operator_event(now: i64, human: &Human, action: &str, reason: &str) -> AuditEvent {
    AuditEvent::new(now, AuditKind::OperatorActed, &human.id, "ok")
        .detail(json!({"action": action, "reason": reason, "groups": human.groups}))
}
