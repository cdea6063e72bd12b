//! `POST /v1/scan`: the leak scanner for agent frameworks (prompts, tool output, transcripts).
//!
//! Any authenticated caller (workload or human) may submit up to `[scan] max_bytes` of text.
//! Every finding is reported by location and kind, never by value. A JWT is labelled
//! `latch_access_token` by the one ownership rule [`latch_scan::is_latch_jwt`] (shared with
//! `latch scan`). The response is the use case
//! [`Broker::respond_to_findings`](latch_core::Broker::respond_to_findings): Latch credentials found
//! are answered by [`Broker::respond_to_leak`](latch_core::Broker::respond_to_leak) (revoked at once,
//! with `on_leak = "task"` their whole task too when the leaked credential was live), each as a
//! `leak.detected` audit event; every Latch candidate in the text is checked (no cap below
//! `max_bytes`; a value repeated is checked once). Third-party secrets are collapsed into at most
//! one `leak.detected` event per request.

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::{Extension, Json};
use latch_core::broker::{CallCtx, LATCH_ACCESS_TOKEN_KIND, LeakFinding, LeakResponse, ScanHit};
use latch_core::model::Principal;
use latch_core::{ApiError, ErrorCode};
use latch_scan::{Family, Scanner};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::error::{AppError, ErrorBody};
use crate::http::extract::{ApiJson, bearer, finish};
use crate::http::state::{AppState, ReqMeta, ScanSettings};

/// Longest accepted `source` label.
const SOURCE_MAX: usize = 256;

fn scanner() -> &'static Scanner {
    static S: OnceLock<Scanner> = OnceLock::new();
    S.get_or_init(Scanner::new)
}

/// Body of `POST /v1/scan`.
#[derive(Deserialize, ToSchema)]
pub struct ScanRequest {
    /// The text to scan (a prompt, tool output, a log excerpt).
    ///
    /// # Security
    /// Scanned in memory and dropped; never stored or logged.
    #[schema(value_type = String)]
    pub text: SecretString,
    /// Where the text comes from (file, conversation, tool), recorded in findings' locations.
    #[serde(default)]
    pub source: Option<String>,
}

impl std::fmt::Debug for ScanRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScanRequest")
            .field("text", &"[redacted]")
            .field("source", &self.source)
            .finish()
    }
}

/// One finding: where and what, never the value.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScanFinding {
    /// Kind: `latch_access_token`, `latch_postgres_password`, `latch_redis_password`,
    /// `latch_secret`, `jwt`, or a third-party kind (`aws_access_token`, `private_key`, …).
    pub kind: String,
    /// Rule id.
    pub rule: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (bytes).
    pub column: usize,
    /// Byte offsets of the secret in `text` (`end` exclusive), for redaction by the caller.
    pub start: usize,
    /// See `start`.
    pub end: usize,
    /// For Latch credentials: what the broker did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<LeakResponse>,
}

/// Answer of `POST /v1/scan`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScanResponse {
    /// Findings in text order.
    pub findings: Vec<ScanFinding>,
    /// Every lease revoked because of this scan.
    pub revoked_leases: Vec<String>,
}

#[utoipa::path(post, path = "/v1/scan", request_body = ScanRequest, security(("bearer" = [])),
    responses((status = 200, body = ScanResponse, description = "findings (location and kind, never values); Latch credentials found are revoked"),
        (status = 413, body = ErrorBody, description = "`body_too_large`: the body, or `text`, is larger than `[scan] max_bytes`")))]
pub(crate) async fn scan(
    State(s): State<AppState>,
    Extension(m): Extension<ReqMeta>,
    Extension(settings): Extension<Arc<ScanSettings>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ScanRequest>,
) -> Result<Json<ScanResponse>, AppError> {
    let ctx: CallCtx = m.ctx();
    let r = async {
        let who = s.broker.authenticate(&ctx, bearer(&headers)).await?;
        let actor = match &who {
            Principal::Workload(w) => w.id.clone(),
            Principal::Human(h) => h.id.clone(),
        };
        let text = body.text.expose_secret().as_bytes();
        if text.len() > settings.config.max_bytes {
            return Err(ApiError::new(
                ErrorCode::BodyTooLarge,
                format!("`text` is larger than {} bytes", settings.config.max_bytes),
            ));
        }
        let source: String = body
            .source
            .as_deref()
            .unwrap_or("api")
            .chars()
            .filter(|c| !c.is_control())
            .take(SOURCE_MAX)
            .collect();
        let found = scanner().scan(text);
        // The one "is this JWT ours" rule, shared with `latch scan`.
        let kids = latch_scan::jwks_kids(&(s.jwks)());
        let hits: Vec<ScanHit<'_>> = found
            .iter()
            .map(|f| {
                let ours = f
                    .jwt
                    .as_ref()
                    .is_some_and(|info| latch_scan::is_latch_jwt(info, &settings.issuer, &kids));
                ScanHit {
                    finding: LeakFinding {
                        kind: if ours {
                            LATCH_ACCESS_TOKEN_KIND.into()
                        } else {
                            f.kind.clone()
                        },
                        rule: f.rule.clone(),
                        location: format!("{source}:{}:{}", f.line, f.column),
                    },
                    secret: f.is_latch_candidate().then(|| f.secret(text)),
                    jwt: f.family == Family::Jwt,
                }
            })
            .collect();
        let outcome = s
            .broker
            .respond_to_findings(&ctx, &actor, hits, settings.config.on_leak)
            .await?;
        let out = ScanResponse {
            findings: found
                .into_iter()
                .zip(outcome.answers)
                .map(|(f, a)| ScanFinding {
                    kind: a.kind,
                    rule: f.rule,
                    line: f.line,
                    column: f.column,
                    start: f.start,
                    end: f.end,
                    response: a.response,
                })
                .collect(),
            revoked_leases: outcome.revoked_leases,
        };
        metrics::counter!("latch_scan_findings_total").increment(out.findings.len() as u64);
        Ok(out)
    }
    .await;
    Ok(Json(finish(&s, &ctx, r).await?))
}
