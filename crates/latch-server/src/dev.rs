//! The development issuer: mints GitHub-Actions-shaped workload tokens and human tokens so
//! Latch can be tried locally without a CI system or an identity provider.
//!
//! # Security
//! Off unless `[dev_issuer] enabled = true`. Its issuers (`latch-dev://workload`,
//! `latch-dev://human`) are ordinary issuers to the verifier: its tokens pass the same checks.

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{EncodingKey, Header, jwk::JwkSet};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Issuer of development workload tokens.
pub const DEV_WORKLOAD_ISSUER: &str = "latch-dev://workload";
/// Issuer of development human tokens.
pub const DEV_HUMAN_ISSUER: &str = "latch-dev://human";

/// Longest development token lifetime, seconds (also the development issuers'
/// `max_token_lifetime`).
pub const MAX_TOKEN_TTL_SECS: i64 = 3600;

/// What token to mint.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DevTokenRequest {
    /// `workload` (GitHub-Actions-shaped) or `human`.
    #[schema(schema_with = dev_token_kind)]
    pub kind: String,
    /// Human id (`sub`); required for human tokens.
    #[schema(min_length = 1)]
    pub subject: Option<String>,
    /// Approver groups for human tokens.
    #[serde(default)]
    pub groups: Vec<String>,
    /// `owner/name` (workload; default `acme/app`).
    #[schema(pattern = "^[^/]+/.+$")]
    pub repository: Option<String>,
    /// Git ref (workload; default `refs/heads/main`).
    pub git_ref: Option<String>,
    /// GitHub environment the job is bound to (workload).
    pub environment: Option<String>,
    /// Triggering event (workload; default `push`).
    pub event_name: Option<String>,
    /// Human the workload runs for (`actor`).
    pub actor: Option<String>,
    /// Run id (workload; default random).
    pub run_id: Option<String>,
    /// Run attempt (workload; default `1`).
    pub run_attempt: Option<String>,
    /// Token lifetime, seconds (default 600, at most 3600).
    #[schema(minimum = 1, maximum = 3600)]
    pub ttl_secs: Option<i64>,
}

/// The `kind` of a [`DevTokenRequest`], for the OpenAPI document.
fn dev_token_kind() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(["workload", "human"]))
        .description(Some("`workload` (GitHub-Actions-shaped) or `human`."))
        .build()
}

/// The development issuer's key.
pub struct DevIssuer {
    encoding: EncodingKey,
    kid: String,
    jwks: JwkSet,
    audience: String,
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIssuer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl DevIssuer {
    /// Builds the issuer from an Ed25519 PKCS#8 document.
    ///
    /// # Errors
    /// A message if the key does not parse.
    pub fn from_pkcs8(pkcs8: &[u8], audience: String) -> Result<Self, String> {
        let kp = Ed25519KeyPair::from_pkcs8(pkcs8)
            .map_err(|_| "dev issuer key does not parse".to_string())?;
        let x = URL_SAFE_NO_PAD.encode(kp.public_key().as_ref());
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, x.as_bytes());
        let kid = format!("dev-{}", &hex::encode(digest.as_ref())[..16]);
        let jwks: JwkSet = serde_json::from_value(json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"
        }]}))
        .map_err(|e| format!("dev jwks: {e}"))?;
        Ok(Self {
            encoding: EncodingKey::from_ed_der(pkcs8),
            kid,
            jwks,
            audience,
        })
    }

    /// Generates a fresh Ed25519 PKCS#8 document.
    ///
    /// # Errors
    /// A message if the system RNG fails.
    pub fn generate_pkcs8() -> Result<Vec<u8>, String> {
        Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .map(|d| d.as_ref().to_vec())
            .map_err(|_| "cannot generate dev issuer key".to_string())
    }

    /// Public keys, for the verifier's static JWKS.
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// Audience of minted tokens.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Mints a token at `now_unix_secs`.
    ///
    /// # Errors
    /// A lowercase message for a bad request.
    pub fn mint(&self, req: &DevTokenRequest, now_unix_secs: i64) -> Result<String, String> {
        let ttl = req.ttl_secs.unwrap_or(600);
        if !(1..=MAX_TOKEN_TTL_SECS).contains(&ttl) {
            return Err("`ttl_secs` must be 1 to 3600".into());
        }
        let jti = uuid::Uuid::new_v4().to_string();
        let claims = match req.kind.as_str() {
            "human" => {
                let sub = req
                    .subject
                    .clone()
                    .filter(|s| !s.is_empty())
                    .ok_or("`subject` is required for a human token")?;
                json!({"iss": DEV_HUMAN_ISSUER, "sub": sub, "aud": self.audience, "groups": req.groups,
                       "iat": now_unix_secs, "nbf": now_unix_secs, "exp": now_unix_secs + ttl, "jti": jti})
            }
            "workload" => {
                let repo = req.repository.clone().unwrap_or_else(|| "acme/app".into());
                let (owner, _) = repo
                    .split_once('/')
                    .filter(|(o, n)| !o.is_empty() && !n.is_empty())
                    .ok_or("`repository` must be `owner/name`")?;
                let git_ref = req
                    .git_ref
                    .clone()
                    .unwrap_or_else(|| "refs/heads/main".into());
                let event = req.event_name.clone().unwrap_or_else(|| "push".into());
                let sub = match (&req.environment, event.as_str()) {
                    (Some(env), _) => format!("repo:{repo}:environment:{env}"),
                    (None, "pull_request") => format!("repo:{repo}:pull_request"),
                    (None, _) => format!("repo:{repo}:ref:{git_ref}"),
                };
                let repo_id = u32::from_be_bytes(
                    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, repo.as_bytes()).as_ref()
                        [..4]
                        .try_into()
                        .unwrap_or([0; 4]),
                ) % 100_000_000;
                let run_id = req
                    .run_id
                    .clone()
                    .unwrap_or_else(|| (now_unix_secs % 1_000_000_000).to_string());
                let mut c = json!({
                    "iss": DEV_WORKLOAD_ISSUER, "sub": sub, "aud": self.audience, "jti": jti,
                    "iat": now_unix_secs, "nbf": now_unix_secs, "exp": now_unix_secs + ttl,
                    "repository": repo, "repository_owner": owner, "repository_id": repo_id.to_string(),
                    "ref": git_ref, "ref_type": "branch",
                    "ref_protected": if git_ref == "refs/heads/main" { "true" } else { "false" },
                    "event_name": event, "run_id": run_id,
                    "run_attempt": req.run_attempt.clone().unwrap_or_else(|| "1".into()),
                    "runner_environment": "github-hosted",
                    "workflow_ref": format!("{repo}/.github/workflows/agent.yml@{git_ref}"),
                    "job_workflow_ref": format!("{repo}/.github/workflows/agent.yml@{git_ref}"),
                });
                if let Some(env) = &req.environment {
                    c["environment"] = json!(env);
                }
                if let Some(a) = &req.actor {
                    c["actor"] = json!(a);
                }
                c
            }
            // The kind given is not repeated: it could be anything, a credential included.
            _ => return Err("unknown token kind (expected `workload` or `human`)".to_owned()),
        };
        let mut header = Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| format!("cannot sign: {e}"))
    }
}
