//! Tasks and their timelines: `/v1/tasks`, `/v1/tasks/{id}`, `…/complete`, `…/cancel`,
//! `…/events`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use latch_core::broker::CallCtx;
use latch_core::broker::OpenTask;
use latch_core::model::{AuditEvent, Task, TaskState};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::{ApiJson, ApiQuery, as_workload};
use crate::http::state::{AppState, ReqMeta};

#[utoipa::path(post, path = "/v1/tasks", request_body = OpenTask, security(("bearer" = [])),
    responses((status = 201, body = Task, description = "the task, open and bound to the caller (principal and run)"),
              (status = 403, body = ErrorBody, description = "`wrong_principal_kind`: a human token"),
              (status = 422, body = ErrorBody, description = "`task_identity_mismatch` (environment, repository, branch or `on_behalf_of` contradict the identity), `ttl_out_of_bounds` (above `[tasks] max_ttl`)")))]
pub(crate) async fn open_task(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<OpenTask>,
) -> ApiResult<(StatusCode, Json<Task>)> {
    let r = as_workload(&s, &m, &headers, async |ctx: &CallCtx, w| {
        s.broker.open_task(ctx, &w, body).await
    })
    .await;
    let t = r?;
    metrics::counter!("latch_tasks_opened_total").increment(1);
    Ok((StatusCode::CREATED, Json(t)))
}

#[utoipa::path(get, path = "/v1/tasks", security(("bearer" = [])),
    responses((status = 200, body = [Task], description = "the caller's tasks"),
              (status = 403, body = ErrorBody, description = "`wrong_principal_kind`: a human token")))]
pub(crate) async fn list_tasks(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
) -> ApiResult<Json<Vec<Task>>> {
    let r = as_workload(&s, &m, &headers, async |_ctx: &CallCtx, w| {
        s.broker.list_tasks(&w).await
    })
    .await;
    Ok(Json(r?))
}

#[utoipa::path(get, path = "/v1/tasks/{id}", security(("bearer" = [])), params(("id" = String, Path, description = "task id", pattern = "^task_[0-9a-f]{32}$")),
    responses((status = 200, body = Task, description = "the task"),
              (status = 403, body = ErrorBody, description = "`wrong_principal_kind`: a human token"),
              (status = 404, body = ErrorBody, description = "`task_not_found` (also for tasks of other workloads or runs)")))]
pub(crate) async fn get_task(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Task>> {
    let r = as_workload(&s, &m, &headers, async |_ctx: &CallCtx, w| {
        s.broker.task(&w, &id).await
    })
    .await;
    Ok(Json(r?))
}

#[utoipa::path(get, path = "/v1/tasks/{id}/history", security(("bearer" = [])), params(("id" = String, Path, description = "task id", pattern = "^task_[0-9a-f]{32}$")),
    responses((status = 200, body = latch_core::history::HistoryReport, description = "the task's history and budgets, as policy sees them (`context.history`, `context.budget`)"),
              (status = 403, body = ErrorBody, description = "`wrong_principal_kind`: a human token"),
              (status = 404, body = ErrorBody, description = "`task_not_found` (also for tasks of other workloads or runs)")))]
pub(crate) async fn task_history(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<latch_core::history::HistoryReport>> {
    let r = as_workload(&s, &m, &headers, async |_ctx: &CallCtx, w| {
        s.broker.task_history(&w, &id).await
    })
    .await;
    Ok(Json(r?))
}

async fn end_task(
    s: AppState,
    m: ReqMeta,
    headers: HeaderMap,
    id: String,
    state: TaskState,
) -> ApiResult<Json<Task>> {
    let r = as_workload(&s, &m, &headers, async |ctx: &CallCtx, w| {
        s.broker.end_task(ctx, &w, &id, state).await
    })
    .await;
    Ok(Json(r?))
}

#[utoipa::path(post, path = "/v1/tasks/{id}/complete", security(("bearer" = [])), params(("id" = String, Path, description = "task id", pattern = "^task_[0-9a-f]{32}$")),
    responses((status = 200, body = Task, description = "task completed; every lease revoked"),
              (status = 403, body = ErrorBody, description = "`wrong_principal_kind`: a human token"),
              (status = 404, body = ErrorBody, description = "`task_not_found`"),
              (status = 409, body = ErrorBody, description = "`task_not_open` (already ended), `conflict` (a concurrent change won; retry)")))]
pub(crate) async fn complete_task(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Task>> {
    end_task(s, m, headers, id, TaskState::Completed).await
}

#[utoipa::path(post, path = "/v1/tasks/{id}/cancel", security(("bearer" = [])), params(("id" = String, Path, description = "task id", pattern = "^task_[0-9a-f]{32}$")),
    responses((status = 200, body = Task, description = "task cancelled; every lease revoked"),
              (status = 403, body = ErrorBody, description = "`wrong_principal_kind`: a human token"),
              (status = 404, body = ErrorBody, description = "`task_not_found`"),
              (status = 409, body = ErrorBody, description = "`task_not_open` (already ended), `conflict` (a concurrent change won; retry)")))]
pub(crate) async fn cancel_task(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Task>> {
    end_task(s, m, headers, id, TaskState::Cancelled).await
}

/// Timeline query.
#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only after this sequence number.
    pub after_seq: Option<i64>,
    /// Page size (default 1000; larger values are read as 1000).
    #[param(value_type = Option<u64>, maximum = 4294967295_u64)]
    pub limit: Option<u32>,
}

#[utoipa::path(post, path = "/v1/tasks/{id}/events", request_body = latch_core::audit::ToolUseReport,
    security(("bearer" = [])), params(("id" = String, Path, description = "task id", pattern = "^task_[0-9a-f]{32}$")),
    responses((status = 201, body = AuditEvent, description = "recorded as a `tool.used` event"),
        (status = 403, body = ErrorBody, description = "`wrong_principal_kind`: a human token"),
        (status = 404, body = ErrorBody, description = "`task_not_found`"),
        (status = 422, body = ErrorBody, description = "`unknown_lease`: `lease_id` is not a lease of this task")))]
pub(crate) async fn report_tool_use(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<latch_core::audit::ToolUseReport>,
) -> ApiResult<(StatusCode, Json<AuditEvent>)> {
    let r = as_workload(&s, &m, &headers, async |ctx: &CallCtx, w| {
        s.broker.report_tool_use(ctx, &w, &id, body).await
    })
    .await;
    Ok((StatusCode::CREATED, Json(r?)))
}

#[utoipa::path(get, path = "/v1/tasks/{id}/events", params(("id" = String, Path, description = "task id", pattern = "^task_[0-9a-f]{32}$"), EventsQuery),
    security(("bearer" = [])),
    responses((status = 200, body = [AuditEvent], description = "the task's timeline, in order"),
        (status = 403, body = ErrorBody, description = "`wrong_principal_kind`: a human token"),
        (status = 404, body = ErrorBody, description = "`task_not_found`")))]
pub(crate) async fn task_events(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> ApiResult<Json<Vec<AuditEvent>>> {
    let r = as_workload(&s, &m, &headers, async |_ctx: &CallCtx, w| {
        s.broker
            .task_events(&w, &id, q.after_seq, q.limit.unwrap_or(1000).min(1000))
            .await
    })
    .await;
    Ok(Json(r?))
}
