//! Operators (humans in `[admin] groups`): `GET /v1/admin/tasks`, `GET /v1/admin/leases`,
//! `POST /v1/admin/leases/{id}/revoke`, `POST /v1/admin/tasks/{id}/cancel`, and the kill
//! switch: `GET`/`POST /v1/admin/freezes`, `POST /v1/admin/freezes/{id}/lift`.
//!
//! Each checks that the caller is an operator before it reads the query or the body: a
//! non-admin gets `403 not_admin` whatever they send, and learns nothing of the schemas.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use latch_core::broker::{
    CallCtx, FreezeReport, FreezeRequest, LeasePage, OperatorFilter, TaskPage,
};
use latch_core::freeze::{Freeze, FreezeScope, ScopeKind};
use latch_core::model::{Human, Lease, Task};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::schema::{
    AdditionalProperties, ObjectBuilder, OneOf, OneOfBuilder, Schema, SchemaType, Type,
};

use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::{RawJson, as_human, parse_query};
use crate::http::state::{AppState, ReqMeta};

/// Filters and paging of the operators' lists. Every filter is optional; given ones must all
/// match.
#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OperatorQuery {
    /// Only this workload principal (`iss#sub`, exact).
    pub workload: Option<String>,
    /// Only tasks of this repository (`owner/name`, ASCII case ignored).
    pub repository: Option<String>,
    /// Only this resource (its live leases; tasks holding one).
    pub resource: Option<String>,
    /// Only tasks of this environment (ASCII case ignored).
    pub environment: Option<String>,
    /// Paging: the `next` of the previous page.
    pub after: Option<String>,
    /// Page size (default 100; larger values are read as 500).
    #[param(value_type = Option<u64>, maximum = 4294967295_u64)]
    pub limit: Option<u32>,
}

impl From<OperatorQuery> for OperatorFilter {
    fn from(q: OperatorQuery) -> Self {
        OperatorFilter {
            workload: q.workload,
            repository: q.repository,
            resource: q.resource,
            environment: q.environment,
            after: q.after,
            limit: q.limit,
        }
    }
}

/// An operator's reason (required).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    /// Why (1–1024 characters, not only white space; no control, bidi or zero-width
    /// characters). Recorded in the audit trail with the operator's id.
    #[schema(schema_with = reason_schema)]
    pub reason: String,
}

/// A kill switch: what to revoke and freeze, and why.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FreezeBody {
    /// `{"kind": "all"}`, or `{"kind": "workload" | "repository" | "resource" | "human",
    /// "value": …}`.
    #[schema(schema_with = scope_schema)]
    pub scope: ScopeBody,
    /// Why (1–1024 characters, not only white space; no control, bidi or zero-width
    /// characters).
    #[schema(schema_with = reason_schema)]
    pub reason: String,
}

/// A freeze's scope as sent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeBody {
    /// The kind.
    pub kind: ScopeKind,
    /// The value (absent for `all`).
    #[serde(default)]
    pub value: Option<String>,
}

fn reason_schema() -> utoipa::openapi::schema::Object {
    latch_core::openapi::described(
        latch_core::openapi::text(1024, true, false),
        "Why (1–1024 characters, not only white space; no control, bidi or zero-width characters).",
    )
}

fn kind_enum(kinds: &[&str]) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .enum_values(Some(kinds.iter().copied()))
}

fn scope_schema() -> Schema {
    let closed = || Some(AdditionalProperties::FreeForm(false));
    let one: OneOf = OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .property("kind", kind_enum(&["all"]))
                .required("kind")
                .additional_properties(closed()),
        )
        .item(
            ObjectBuilder::new()
                .property("kind", kind_enum(&["workload", "repository", "resource"]))
                .property(
                    "value",
                    latch_core::openapi::described(
                        latch_core::openapi::text(256, true, false),
                        "The workload id (`iss#sub`), repository (`owner/name`) or resource id.",
                    ),
                )
                .required("kind")
                .required("value")
                .additional_properties(closed()),
        )
        .item(
            ObjectBuilder::new()
                .property("kind", kind_enum(&["human"]))
                .property(
                    "value",
                    ObjectBuilder::new()
                        .schema_type(SchemaType::Type(Type::String))
                        .pattern(Some("^[A-Za-z0-9._@+-]{1,128}$"))
                        .description(Some(
                            "The human id: the `on_behalf_of` of the tasks acting for them (1–128 ASCII letters, digits and `._@+-`, ASCII case ignored).",
                        )),
                )
                .required("kind")
                .required("value")
                .additional_properties(closed()),
        )
        .description(Some(
            "What a freeze covers: everything, or one workload, repository, resource or human.",
        ))
        .build();
    Schema::OneOf(one)
}

const NOT_ADMIN: &str = "`not_admin`: a human outside the admin groups (`[admin] groups`); `wrong_principal_kind`: a workload token";

#[utoipa::path(get, operation_id = "admin_tasks", path = "/v1/admin/tasks", params(OperatorQuery), security(("bearer" = [])),
    responses((status = 200, body = TaskPage, description = "open tasks of every workload, by id"),
              (status = 403, body = ErrorBody, description = NOT_ADMIN)))]
pub(crate) async fn tasks(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<TaskPage>> {
    let r = as_human(&s, &m, &headers, async |_ctx: &CallCtx, h: Human| {
        s.broker.require_operator(&h)?;
        let f = OperatorFilter::from(parse_query::<OperatorQuery>(q.as_deref())?);
        s.broker.operator_tasks(&h, &f).await
    })
    .await;
    Ok(Json(r?))
}

#[utoipa::path(get, operation_id = "admin_leases", path = "/v1/admin/leases", params(OperatorQuery), security(("bearer" = [])),
    responses((status = 200, body = LeasePage, description = "live (`issuing`, `active`) leases of every workload, by id, with their task's principal, repository, branch and environment"),
              (status = 403, body = ErrorBody, description = NOT_ADMIN)))]
pub(crate) async fn leases(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<LeasePage>> {
    let r = as_human(&s, &m, &headers, async |_ctx: &CallCtx, h: Human| {
        s.broker.require_operator(&h)?;
        let f = OperatorFilter::from(parse_query::<OperatorQuery>(q.as_deref())?);
        s.broker.operator_leases(&h, &f).await
    })
    .await;
    Ok(Json(r?))
}

#[utoipa::path(post, operation_id = "admin_revoke_lease", path = "/v1/admin/leases/{id}/revoke", request_body = ReasonBody, security(("bearer" = [])),
    params(("id" = String, Path, description = "lease id", pattern = "^lease_[0-9a-f]{32}$")),
    responses((status = 200, body = Lease, description = "the lease, revoked (or `revoking`: its target is attempted again by the reaper); audited as `operator.acted`"),
              (status = 403, body = ErrorBody, description = NOT_ADMIN),
              (status = 404, body = ErrorBody, description = "`lease_not_found`"),
              (status = 409, body = ErrorBody, description = "`lease_not_active` (already revoked), `conflict`")))]
pub(crate) async fn revoke_lease(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: RawJson,
) -> ApiResult<Json<Lease>> {
    let r = as_human(&s, &m, &headers, async |ctx: &CallCtx, h: Human| {
        s.broker.require_operator(&h)?;
        let body: ReasonBody = body.parse()?;
        s.broker
            .operator_revoke_lease(ctx, &h, &id, &body.reason)
            .await
    })
    .await;
    Ok(Json(r?))
}

#[utoipa::path(post, operation_id = "admin_cancel_task", path = "/v1/admin/tasks/{id}/cancel", request_body = ReasonBody, security(("bearer" = [])),
    params(("id" = String, Path, description = "task id", pattern = "^task_[0-9a-f]{32}$")),
    responses((status = 200, body = Task, description = "the task, cancelled: every lease revoked, its pending and approved requests closed; audited as `operator.acted`"),
              (status = 403, body = ErrorBody, description = NOT_ADMIN),
              (status = 404, body = ErrorBody, description = "`task_not_found`"),
              (status = 409, body = ErrorBody, description = "`task_not_open` (already ended), `conflict`")))]
pub(crate) async fn cancel_task(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: RawJson,
) -> ApiResult<Json<Task>> {
    let r = as_human(&s, &m, &headers, async |ctx: &CallCtx, h: Human| {
        s.broker.require_operator(&h)?;
        let body: ReasonBody = body.parse()?;
        s.broker
            .operator_cancel_task(ctx, &h, &id, &body.reason)
            .await
    })
    .await;
    Ok(Json(r?))
}

#[utoipa::path(get, operation_id = "admin_freezes", path = "/v1/admin/freezes", security(("bearer" = [])),
    responses((status = 200, body = [Freeze], description = "active freezes, oldest first"),
              (status = 403, body = ErrorBody, description = NOT_ADMIN)))]
pub(crate) async fn freezes(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
) -> ApiResult<Json<Vec<Freeze>>> {
    let r = as_human(&s, &m, &headers, async |_ctx: &CallCtx, h: Human| {
        s.broker.active_freezes(&h).await
    })
    .await;
    Ok(Json(r?))
}

#[utoipa::path(post, operation_id = "admin_engage_freeze", path = "/v1/admin/freezes", request_body = FreezeBody, security(("bearer" = [])),
    responses((status = 201, body = FreezeReport, description = "kill switch engaged: the freeze is stored (grants, claims and renewals in scope now answer `423 frozen`) and every live credential in scope was revoked (`revocations_pending`: attempts at a target that did not succeed yet; the reaper retries them)"),
              (status = 403, body = ErrorBody, description = NOT_ADMIN),
              (status = 422, body = ErrorBody, description = "`unknown_resource`: a resource scope names no configured resource")))]
pub(crate) async fn engage(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    body: RawJson,
) -> ApiResult<(StatusCode, Json<FreezeReport>)> {
    let r = as_human(&s, &m, &headers, async |ctx: &CallCtx, h: Human| {
        s.broker.require_operator(&h)?;
        let body: FreezeBody = body.parse()?;
        let input = FreezeRequest {
            scope: FreezeScope {
                kind: body.scope.kind,
                value: body.scope.value,
            },
            reason: body.reason,
        };
        s.broker.engage_freeze(ctx, &h, input).await
    })
    .await;
    Ok((StatusCode::CREATED, Json(r?)))
}

#[utoipa::path(post, operation_id = "admin_lift_freeze", path = "/v1/admin/freezes/{id}/lift", request_body = ReasonBody, security(("bearer" = [])),
    params(("id" = String, Path, description = "freeze id", pattern = "^frz_[0-9a-f]{32}$")),
    responses((status = 200, body = Freeze, description = "the freeze, lifted: policy decides in its scope again (revoked credentials stay revoked)"),
              (status = 403, body = ErrorBody, description = NOT_ADMIN),
              (status = 404, body = ErrorBody, description = "`freeze_not_found`"),
              (status = 409, body = ErrorBody, description = "`freeze_not_active` (already lifted), `conflict`")))]
pub(crate) async fn lift(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: RawJson,
) -> ApiResult<Json<Freeze>> {
    let r = as_human(&s, &m, &headers, async |ctx: &CallCtx, h: Human| {
        s.broker.require_operator(&h)?;
        let body: ReasonBody = body.parse()?;
        s.broker.lift_freeze(ctx, &h, &id, &body.reason).await
    })
    .await;
    Ok(Json(r?))
}
