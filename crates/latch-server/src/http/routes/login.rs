//! Who is calling, and how a human signs in from a terminal: `GET /v1/whoami`,
//! `GET /v1/login/config` (what `latch login` needs; see `config/login.rs`).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::{Extension, Json};
use latch_core::model::Principal;
use latch_core::{ApiError, ErrorCode};
use serde::Serialize;
use utoipa::ToSchema;

use crate::config::LoginSettings;
use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::{bearer, finish};
use crate::http::state::{AppState, ReqMeta};

/// The caller as the broker sees it (`GET /v1/whoami`).
#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmI {
    /// `human` or `workload`.
    pub kind: &'static str,
    /// Stable principal id (a human's configured id claim; a workload's `issuer#subject`).
    pub id: String,
    /// The issuer that vouched for the token.
    pub issuer: String,
    /// Approver groups (humans).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Whether the human is in an `[admin] groups` group (operator and audit routes).
    pub admin: bool,
    /// Repository the workload runs for (lowercase for GitHub and GitLab), when it says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Git ref the workload runs on, when it says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// The run the token belongs to, when the issuer says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// When the presented token expires (Unix seconds), for workloads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_expires_at_unix_secs: Option<i64>,
}

/// `GET /v1/whoami`: the verified identity behind the bearer token (`latch whoami`).
#[utoipa::path(get, path = "/v1/whoami", security(("bearer" = [])),
    responses((status = 200, body = WhoAmI, description = "the caller: a human with its groups, or a workload with its repository, ref and run")))]
pub(crate) async fn whoami(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    headers: HeaderMap,
) -> ApiResult<Json<WhoAmI>> {
    let ctx = m.ctx();
    let r = s
        .broker
        .authenticate(&ctx, bearer(&headers))
        .await
        .map(|p| match p {
            Principal::Human(h) => WhoAmI {
                kind: "human",
                admin: s.broker.is_admin(&h),
                id: h.id,
                issuer: h.issuer,
                groups: h.groups,
                repository: None,
                git_ref: None,
                run: None,
                token_expires_at_unix_secs: None,
            },
            Principal::Workload(w) => WhoAmI {
                kind: "workload",
                id: w.id,
                issuer: w.issuer,
                groups: Vec::new(),
                admin: false,
                repository: w.claims.repository,
                git_ref: w.claims.git_ref,
                run: w.run_binding,
                token_expires_at_unix_secs: Some(w.token_expires_at_unix_secs),
            },
        });
    Ok(Json(finish(&s, &ctx, r).await?))
}

/// `GET /v1/login/config`: the human issuer, public client id, resource and scopes `latch
/// login` uses (OAuth 2.0 for native apps, RFC 8252). Nothing in it is secret.
///
/// # Errors
/// `404 not_found` when `[login]` is not configured.
#[utoipa::path(get, path = "/v1/login/config",
    responses((status = 200, body = LoginSettings, description = "how to sign in from a terminal"),
              (status = 404, body = ErrorBody, description = "`not_found`: terminal sign-in is not configured (`[login]`)")))]
pub(crate) async fn login_config(State(s): State<AppState>) -> ApiResult<Json<LoginSettings>> {
    match &s.login {
        Some(l) => Ok(Json(l.as_ref().clone())),
        None => Err(ApiError::new(
            ErrorCode::NotFound,
            "terminal sign-in is not configured on this broker (`[login]` in latch.toml)",
        )
        .into()),
    }
}
