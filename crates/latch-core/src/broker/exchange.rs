//! Token exchange (RFC 8693) with Rich Authorization Requests (RFC 9396) as a use case: who
//! the parties are (subject and actor tokens, the on-behalf-of rule), then either a new task
//! and access request from one `latch_access` authorization details object, or the poll of an
//! earlier step-up by its `auth_req_id` (which claims like `POST …/requests/{rid}/claim`).
//!
//! The HTTP front (`/oauth/token`) parses the form, checks the grant and token types, verifies
//! the DPoP proof (RFC 9449, bound to the HTTP request) between [`Broker::exchange_parties`]
//! and [`Broker::exchange_token`], and renders the RFC 6749 / RFC 8693 JSON.

use super::*;

/// The RFC 9396 `authorization_details` type Latch understands.
pub const AUTHZ_DETAILS_TYPE: &str = "latch_access";

/// One RFC 9396 authorization details object of type [`AUTHZ_DETAILS_TYPE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LatchAccessDetail {
    /// Always `latch_access`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Latch resource id (e.g. `ci-cache`).
    pub resource: String,
    /// Actions on it (e.g. `["read"]`).
    pub actions: Vec<String>,
    /// Repository of the task (must equal the one the subject token proves, if any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Branch of the task (must equal the one the subject token proves, if any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Environment of the task; default: the resource's environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Why (task purpose and justification shown to approvers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// Requested lifetime (seconds); clamped by policy and the resource's bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<i64>,
}

/// The authenticated parties of a token exchange (RFC 8693 §2.1): the `subject_token`'s
/// principal and, when sent, the `actor_token`'s.
#[derive(Debug, Clone)]
pub struct ExchangeParties {
    /// Principal of `subject_token`.
    pub subject: Principal,
    /// Principal of `actor_token`, if one was sent.
    pub actor: Option<Principal>,
}

/// A token exchange after its parties are known: what it asks for, and the key the issued
/// token is bound to.
#[derive(Debug, Clone, Default)]
pub struct ExchangeRequest {
    /// RFC 7638 thumbprint of the verified DPoP proof's key (RFC 9449 §5), if any.
    pub jkt: Option<String>,
    /// `auth_req_id` of an earlier `authorization_pending` answer (`<task id>.<request id>`):
    /// collect that request. Wins over `authorization_details`.
    pub auth_req_id: Option<String>,
    /// `authorization_details` as sent: a JSON array with exactly one object of type
    /// [`AUTHZ_DETAILS_TYPE`] (RFC 9396 §2).
    pub authorization_details: Option<String>,
}

/// Outcome of a token exchange.
#[derive(Debug, Clone)]
pub enum ExchangeOutcome {
    /// Allowed and minted; `detail` is what was granted (the lease's actions and lifetime in
    /// seconds), not what was asked for.
    Granted {
        /// The grant (request, lease, credential shown once).
        grant: Box<Grant>,
        /// The granted authorization details.
        detail: LatchAccessDetail,
    },
    /// Waiting for approvers (step-up): poll with [`auth_req_id`] of the request.
    Pending(AccessRequest),
    /// Denied; the request's decision carries the [`DenyCode`], policy ids and reasons.
    Denied(AccessRequest),
}

/// Why a token exchange is refused before any broker rule decides.
#[derive(Debug)]
pub enum ExchangeError {
    /// The exchange is malformed (RFC 6749 §5.2 `invalid_request`); the message says how.
    InvalidRequest(String),
    /// The authorization details are malformed (RFC 9396 §5
    /// `invalid_authorization_details`); the message says how.
    InvalidDetails(String),
    /// A broker rule refused it (authentication, task, access, store …).
    Broker(ApiError),
}

impl From<ApiError> for ExchangeError {
    fn from(e: ApiError) -> Self {
        Self::Broker(e)
    }
}

/// The `auth_req_id` of a pending request: `<task id>.<request id>`.
pub fn auth_req_id(request: &AccessRequest) -> String {
    format!("{}.{}", request.task_id, request.id)
}

fn principal_id(p: &Principal) -> (String, String) {
    match p {
        Principal::Workload(w) => (w.id.clone(), w.issuer.clone()),
        Principal::Human(h) => (h.id.clone(), h.issuer.clone()),
    }
}

/// The workload that owns the task and the human it acts for, if any (RFC 8693 §4.1
/// delegation): a workload subject alone, or a workload and a human on either side.
fn acting(
    parties: &ExchangeParties,
) -> std::result::Result<(Workload, Option<String>), ExchangeError> {
    match (&parties.subject, &parties.actor) {
        (Principal::Workload(w), None) => Ok(((**w).clone(), None)),
        (Principal::Workload(w), Some(Principal::Human(h)))
        | (Principal::Human(h), Some(Principal::Workload(w))) => {
            Ok(((**w).clone(), Some(h.id.clone())))
        }
        _ => Err(ExchangeError::InvalidRequest(
            "one of `subject_token` and `actor_token` must be a workload identity, and at most one a human's"
                .into(),
        )),
    }
}

/// The binding of the issued token: the DPoP key, the actor (RFC 8693 §4.1 `act`) and the
/// subject when it is not the workload (on-behalf-of).
fn exchange_binding(
    parties: &ExchangeParties,
    workload: &Workload,
    jkt: Option<String>,
) -> TokenBinding {
    let (sub_id, _) = principal_id(&parties.subject);
    TokenBinding {
        jkt,
        act: parties.actor.as_ref().map(|a| {
            let (id, iss) = principal_id(a);
            json!({"sub": id, "iss": iss})
        }),
        subject: (sub_id != workload.id).then_some(sub_id),
    }
}

/// The one `latch_access` object of `authorization_details` (RFC 9396).
fn parse_details(raw: Option<&str>) -> std::result::Result<LatchAccessDetail, ExchangeError> {
    let raw = raw.filter(|r| !r.is_empty()).ok_or_else(|| {
        ExchangeError::InvalidRequest("`authorization_details` (rfc 9396) is missing".into())
    })?;
    // Strict: a duplicate member name (at any depth) is refused, so the details mean one thing.
    let details: Vec<LatchAccessDetail> = crate::json::from_slice(raw.as_bytes()).map_err(|e| {
        ExchangeError::InvalidDetails(format!(
            "`authorization_details` is not a json array of latch_access objects: {}",
            crate::error::without_input_values(&e.to_string())
        ))
    })?;
    let [d] = <[LatchAccessDetail; 1]>::try_from(details).map_err(|_| {
        ExchangeError::InvalidDetails(
            "exactly one authorization details object is accepted (one token has one audience)"
                .into(),
        )
    })?;
    if d.kind != AUTHZ_DETAILS_TYPE {
        return Err(ExchangeError::InvalidDetails(format!(
            "authorization details type must be `{AUTHZ_DETAILS_TYPE}`"
        )));
    }
    Ok(d)
}

impl Broker {
    /// Authenticates the parties of a token exchange: `subject_token`, then `actor_token` if
    /// sent (RFC 8693 §2.1). Each must be a valid identity token of a configured issuer.
    ///
    /// # Errors
    /// The authentication errors of [`Broker::authenticate`] (`token_invalid`, …).
    pub async fn exchange_parties(
        &self,
        ctx: &CallCtx,
        subject_token: &str,
        actor_token: Option<&str>,
    ) -> Result<ExchangeParties> {
        let subject = self.authenticate(ctx, Some(subject_token)).await?;
        let actor = match actor_token {
            Some(t) => Some(self.authenticate(ctx, Some(t)).await?),
            None => None,
        };
        Ok(ExchangeParties { subject, actor })
    }

    /// Token exchange (RFC 8693) for `parties`: the workload among them owns the task, a human
    /// on either side is the one it acts for. With `auth_req_id`, collects that earlier
    /// request (the human must be the one the task was opened for) exactly as
    /// [`Broker::claim`]; otherwise opens a task from the one `latch_access` authorization
    /// details object (environment default: the resource's) and requests access in it, so
    /// policy decides exactly as for `POST /v1/tasks/{id}/requests`.
    ///
    /// # Errors
    /// [`ExchangeError::InvalidRequest`] (no workload among the parties, a malformed
    /// `auth_req_id`, no authorization details), [`ExchangeError::InvalidDetails`], or the
    /// broker errors of [`Broker::open_task`], [`Broker::request_access`] and
    /// [`Broker::claim`] (`task_identity_mismatch` for another human's poll, `unknown_resource`,
    /// …).
    ///
    /// # Security
    /// The issued token is bound to `jkt` and names the actor (`act`) and, for on-behalf-of,
    /// the human subject; a poll by a human other than the task's is refused.
    pub async fn exchange_token(
        &self,
        ctx: &CallCtx,
        parties: &ExchangeParties,
        request: ExchangeRequest,
    ) -> std::result::Result<ExchangeOutcome, ExchangeError> {
        let (workload, human) = acting(parties)?;
        let binding = exchange_binding(parties, &workload, request.jkt);
        let (outcome, detail) = match request.auth_req_id.as_deref().filter(|id| !id.is_empty()) {
            Some(id) => {
                self.poll_exchange(ctx, &workload, human.as_deref(), id, &binding)
                    .await?
            }
            None => {
                let d = parse_details(request.authorization_details.as_deref())?;
                self.ask_exchange(ctx, &workload, human, d, &binding)
                    .await?
            }
        };
        Ok(match outcome {
            AccessOutcome::Granted(g) => {
                let detail = LatchAccessDetail {
                    actions: g.lease.actions.clone(),
                    ttl_secs: Some(g.lease.expires_at_unix_secs - g.lease.issued_at_unix_secs),
                    ..detail
                };
                ExchangeOutcome::Granted { grant: g, detail }
            }
            AccessOutcome::Pending(r) => ExchangeOutcome::Pending(r),
            AccessOutcome::Denied(r) => ExchangeOutcome::Denied(r),
        })
    }

    /// Collects the request `auth_req_id` names, as its claim; the details describe it.
    async fn poll_exchange(
        &self,
        ctx: &CallCtx,
        workload: &Workload,
        human: Option<&str>,
        auth_req_id: &str,
        binding: &TokenBinding,
    ) -> std::result::Result<(AccessOutcome, LatchAccessDetail), ExchangeError> {
        let (task_id, req_id) = auth_req_id
            .split_once('.')
            .ok_or_else(|| ExchangeError::InvalidRequest("`auth_req_id` is malformed".into()))?;
        // The human of the poll must be the one the task was opened for.
        let opened = self.task(workload, task_id).await?;
        if let Some(h) = human
            && !opened
                .on_behalf_of
                .as_deref()
                .is_some_and(|o| o.eq_ignore_ascii_case(h))
        {
            return Err(ApiError::new(
                ErrorCode::TaskIdentityMismatch,
                format!(
                    "human {} is not the one this request was made for",
                    quote(h)
                ),
            )
            .into());
        }
        let o = self.claim(ctx, workload, task_id, req_id, binding).await?;
        let req = match &o {
            AccessOutcome::Granted(g) => &g.request,
            AccessOutcome::Denied(r) | AccessOutcome::Pending(r) => r,
        };
        let task = self.task(workload, task_id).await?;
        let d = LatchAccessDetail {
            kind: AUTHZ_DETAILS_TYPE.into(),
            resource: req.resource_id.clone(),
            actions: req.actions.clone(),
            repository: task.repository.clone(),
            branch: task.branch.clone(),
            environment: Some(task.environment.to_string()),
            purpose: Some(task.purpose.clone()),
            ttl_secs: Some(req.ttl_secs),
        };
        Ok((o, d))
    }

    /// Opens a task for `d` and requests its access; the details gain the task's repository,
    /// branch and environment.
    async fn ask_exchange(
        &self,
        ctx: &CallCtx,
        workload: &Workload,
        human: Option<String>,
        d: LatchAccessDetail,
        binding: &TokenBinding,
    ) -> std::result::Result<(AccessOutcome, LatchAccessDetail), ExchangeError> {
        let environment = match &d.environment {
            Some(e) => e.clone(),
            None => self.resource(&d.resource)?.environment.to_string(),
        };
        let purpose = d
            .purpose
            .clone()
            .unwrap_or_else(|| "oauth token exchange".into());
        let task = self
            .open_task(
                ctx,
                workload,
                OpenTask {
                    purpose: purpose.clone(),
                    repository: d.repository.clone(),
                    branch: d.branch.clone(),
                    environment: environment.clone(),
                    ttl_secs: None,
                    on_behalf_of: human,
                },
            )
            .await?;
        let ask = RequestAccess {
            resource: d.resource.clone(),
            actions: d.actions.clone(),
            ttl_secs: d.ttl_secs,
            justification: purpose,
            params: serde_json::Value::Null,
        };
        let o = self
            .request_access(ctx, workload, &task.id, ask, binding)
            .await?;
        let d = LatchAccessDetail {
            repository: task.repository.clone(),
            branch: task.branch.clone(),
            environment: Some(environment),
            ..d
        };
        Ok((o, d))
    }
}
