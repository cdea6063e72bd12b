//! Health, readiness, metrics and the published signing keys: `/healthz`, `/readyz`,
//! `/metrics`, `/.well-known/jwks.json`.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use latch_core::{ApiError, ErrorCode};

use crate::http::error::{ApiResult, AppError, ErrorBody};
use crate::http::state::AppState;

#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "process is up")))]
pub(crate) async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Longest `/readyz` waits for the store before answering 503 (a load balancer's probe must
/// get an answer, not a hang, when the database stalls).
const READY_STORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Readiness: the store answers within [`READY_STORE_TIMEOUT`]. The body also reports how the
/// caches are trusted (`cache.state`: `exclusive` for a single broker; with replicas `fresh`,
/// `stale` or `bypassed`, as the change feed stands); a stale or bypassed cache is still
/// correct (lookups read the database), so it does not make the replica unready.
///
/// `targets` lists every target whose provider keeps external state (databases, caches) with
/// its health; while one is down, `status` is `degraded` (revocations for it are parked until it
/// answers) and, with `[targets] ready_requires_targets = true`, the answer is 503
/// `target_unavailable`.
#[utoipa::path(get, path = "/readyz", responses((status = 200, description = "store reachable; `status` is `ready` or `degraded` (a target is down, listed under `targets`); `cache` reports the change feed"), (status = 503, body = ErrorBody, description = "`store_unavailable` (the store did not answer in time), `target_unavailable` (with `[targets] ready_requires_targets`)")))]
pub(crate) async fn readyz(State(s): State<AppState>) -> ApiResult<Json<serde_json::Value>> {
    match tokio::time::timeout(READY_STORE_TIMEOUT, s.broker.ping()).await {
        Ok(r) => r.map_err(AppError)?,
        Err(_) => {
            return Err(AppError(ApiError::new(
                ErrorCode::StoreUnavailable,
                format!(
                    "the store did not answer within {}s",
                    READY_STORE_TIMEOUT.as_secs()
                ),
            )));
        }
    }
    let targets = s.broker.target_statuses();
    let down: Vec<&str> = targets
        .iter()
        .filter(|t| !t.healthy)
        .map(|t| t.resource_id.as_str())
        .collect();
    if !down.is_empty() && s.ready_requires_targets {
        return Err(AppError(ApiError::new(
            ErrorCode::TargetUnavailable,
            format!("targets not answering: {}", down.join(", ")),
        )));
    }
    let status = if down.is_empty() { "ready" } else { "degraded" };
    Ok(Json(serde_json::json!({
        "status": status,
        "cache": s.broker.cache_state(),
        "targets": targets,
    })))
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, content_type = "text/plain; version=0.0.4",
    description = "Prometheus text exposition of the broker's metrics")))]
pub(crate) async fn metrics_endpoint(State(s): State<AppState>) -> impl IntoResponse {
    // 1 while introspection may answer from the in-memory cache, 0 while it reads the store.
    let answering = matches!(
        s.broker.cache_state(),
        latch_core::broker::CacheState::Exclusive | latch_core::broker::CacheState::Fresh { .. }
    );
    metrics::gauge!("latch_cache_answering").set(if answering { 1.0 } else { 0.0 });
    #[expect(
        clippy::cast_precision_loss,
        reason = "a gauge; exact below 2^53 entries"
    )]
    metrics::gauge!("latch_introspection_index_entries").set(s.broker.live_index_len() as f64);
    crate::jobs::targets::export_gauges(&s.broker);
    if s.census.due(s.broker.clock().monotonic()) {
        crate::metrics::record_census(s.broker.store().census().await);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::sorted_exposition(&s.metrics.render()),
    )
}

#[utoipa::path(get, path = "/.well-known/jwks.json", responses((status = 200, description = "RFC 7517 JWK Set of the keys that sign access tokens")))]
pub(crate) async fn jwks(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json((s.jwks)()),
    )
}
