//! The `jwt` credential provider: short-lived signed access tokens.
//!
//! Tokens are JWTs (RFC 7519) in the RFC 9068 access-token profile (header `typ: "at+jwt"`),
//! signed with the broker's current key from [`SigningKeys`]. Resource servers verify them
//! offline against the broker's JWK Set (RFC 7517, [`SigningKeys::jwks`]) and, for prompt
//! revocation, ask the broker's introspection endpoint, where the lease state decides whether a
//! token is still active.
//!
//! # JWT-SVIDs
//! A resource with `format = "jwt_svid"` gets SPIFFE JWT-SVIDs instead (SPIFFE JWT-SVID
//! specification), so services that already verify SVIDs accept them unchanged:
//! ```toml
//! [resources.settings]
//! format = "jwt_svid"
//! trust_domain = "latch.example"   # sub = spiffe://latch.example/agents/task/<task id>
//! path_prefix = "/agents"          # optional
//! ```
//! Header `typ: "JWT"`, `alg: "ES256"` (§3: EdDSA is not a JWT-SVID algorithm, so these are
//! signed with the broker's ES256 key whatever `keys.signing_alg` says), `kid`; claims `sub`
//! (the SPIFFE ID), `aud` (a one-element array, the resource's audience: required, §3.2),
//! `exp`, `iat`, and `jti` (the lease id). The keys are published with `use: "jwt-svid"` in the
//! broker's SPIFFE bundle (`GET /v1/spiffe/bundle`).

use std::sync::Arc;

use async_trait::async_trait;
use latch_core::model::{DeliveredCredential, Lease, Resource};
use latch_core::ports::{CredentialProvider, MintRequest, Minted, ProviderError};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::keyring::SigningKeys;

/// JWS `typ` header of access tokens (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Provider kind as named in resource configuration.
pub const KIND: &str = latch_core::model::ProviderKind::Jwt.as_str();

/// The claims of an access token minted by [`JwtProvider`]. Times are whole seconds since the
/// Unix epoch (RFC 7519 `NumericDate`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    /// Issuer: the broker's issuer URL.
    pub iss: String,
    /// Subject: the workload principal id.
    pub sub: String,
    /// Audience: the resource's configured audience.
    pub aud: String,
    /// OAuth client the token was issued to (RFC 9068 §2.2): the workload principal id.
    pub client_id: String,
    /// Issued at.
    pub iat: i64,
    /// Not before (equals `iat`).
    pub nbf: i64,
    /// Expiry.
    pub exp: i64,
    /// Token id: the lease id.
    pub jti: String,
    /// The task the lease belongs to.
    pub task_id: String,
    /// Granted actions, space-separated (RFC 8693 §4.2 / RFC 9068 §2.2.3 `scope`).
    pub scope: String,
    /// Resource id.
    pub resource: String,
    /// The resource's environment.
    pub environment: String,
    /// Confirmation (RFC 9449 §6.1): `{"jkt": thumbprint}` of the key the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<serde_json::Value>,
    /// The actor (RFC 8693 §4.1), for a token obtained by exchange with an actor token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<serde_json::Value>,
}

/// Mints signed JWT access tokens (kind `"jwt"`).
///
/// Minting touches nothing outside the broker ([`has_external_state`] is `false`), and
/// revocation is a no-op: a revoked lease makes its token inactive at introspection, and the
/// token's own `exp` bounds its offline validity.
///
/// [`has_external_state`]: CredentialProvider::has_external_state
#[derive(Debug, Clone)]
pub struct JwtProvider {
    issuer_url: String,
    keys: Arc<SigningKeys>,
    svid_keys: Option<Arc<SigningKeys>>,
}

/// What a `jwt` resource's tokens are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Format {
    /// RFC 9068 access tokens (default).
    #[default]
    AccessToken,
    /// SPIFFE JWT-SVIDs.
    JwtSvid,
}

/// `[resources.settings]` of a `jwt` resource. Unknown keys are refused.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JwtSettings {
    #[serde(default)]
    format: Format,
    /// JWT-SVIDs only: the trust domain of their SPIFFE IDs.
    trust_domain: Option<String>,
    /// JWT-SVIDs only: path segments before `/task/<task id>`, e.g. `/agents`.
    #[serde(default)]
    path_prefix: String,
    /// Only key-bound (DPoP) tokens: read by the broker from the raw settings
    /// (`latch_core::broker::resource_requires_dpop`); declared here so that a misspelt key is
    /// refused at start instead of silently leaving the tokens bearer tokens.
    #[serde(default)]
    #[expect(
        dead_code,
        reason = "read by the broker from the raw settings, not here"
    )]
    require_dpop: bool,
}

impl JwtSettings {
    fn of(resource: &Resource) -> Result<Self, ProviderError> {
        let s: Self = if resource.settings.is_null() {
            Self::default()
        } else {
            serde_json::from_value(resource.settings.clone()).map_err(|e| {
                ProviderError::permanent(format!("resource {} settings: {e}", resource.id))
            })?
        };
        let bad = |why: &str| {
            Err(ProviderError::permanent(format!(
                "resource {}: {why}",
                resource.id
            )))
        };
        match (s.format, &s.trust_domain) {
            (Format::JwtSvid, None) => return bad("a jwt_svid resource needs `trust_domain`"),
            (Format::AccessToken, Some(_)) => {
                return bad("`trust_domain` applies to `format = \"jwt_svid\"` only");
            }
            (Format::JwtSvid, Some(td)) if !valid_trust_domain(td) => {
                return bad("`trust_domain` must be 1-255 of a-z 0-9 . - _ (spiffe id §2.1)");
            }
            _ => {}
        }
        if !s.path_prefix.is_empty() && !valid_path(&s.path_prefix) {
            return bad(
                "`path_prefix` must be `/segment`s of a-z A-Z 0-9 . - _, not `.` or `..` (spiffe id §2.2)",
            );
        }
        Ok(s)
    }

    /// The SPIFFE ID of a task's JWT-SVID.
    fn spiffe_id(&self, task_id: &str) -> String {
        format!(
            "spiffe://{}{}/task/{task_id}",
            self.trust_domain.as_deref().unwrap_or_default(),
            self.path_prefix
        )
    }
}

fn valid_trust_domain(td: &str) -> bool {
    (1..=255).contains(&td.len())
        && td
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

fn valid_path(p: &str) -> bool {
    p.strip_prefix('/').is_some_and(|rest| {
        rest.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        })
    })
}

/// The claims of a JWT-SVID (SPIFFE JWT-SVID §3).
#[derive(Debug, Serialize)]
struct SvidClaims<'a> {
    sub: String,
    aud: [&'a str; 1],
    exp: i64,
    iat: i64,
    jti: &'a str,
}

impl JwtProvider {
    /// A provider issuing as `issuer_url` (the `iss` claim) and signing with `keys`.
    pub fn new(issuer_url: String, keys: Arc<SigningKeys>) -> Self {
        Self {
            issuer_url,
            keys,
            svid_keys: None,
        }
    }

    /// This provider, also minting JWT-SVIDs (for `format = "jwt_svid"` resources) with
    /// `keys`, which must be ES256.
    ///
    /// # Errors
    /// A permanent [`ProviderError`] when `keys` are not ES256.
    pub fn with_svid_keys(mut self, keys: Arc<SigningKeys>) -> Result<Self, ProviderError> {
        if keys.alg() != crate::keyring::SigningAlg::Es256 {
            return Err(ProviderError::permanent("jwt-svid keys must be ES256"));
        }
        self.svid_keys = Some(keys);
        Ok(self)
    }

    /// The JWT-SVID signing keys, if any (published in the SPIFFE bundle).
    pub fn svid_keys(&self) -> Option<&Arc<SigningKeys>> {
        self.svid_keys.as_ref()
    }

    /// Whether any of `resources` is a `jwt` resource with `format = "jwt_svid"`.
    pub fn any_jwt_svid<'a>(resources: impl IntoIterator<Item = &'a Resource>) -> bool {
        resources.into_iter().any(|r| {
            r.kind == KIND && JwtSettings::of(r).is_ok_and(|s| s.format == Format::JwtSvid)
        })
    }

    fn mint_svid(
        &self,
        req: &MintRequest<'_>,
        settings: &JwtSettings,
    ) -> Result<Minted, ProviderError> {
        let keys = self.svid_keys.as_ref().ok_or_else(|| {
            ProviderError::permanent("jwt-svid keys are not loaded (configuration error)")
        })?;
        let spiffe_id = settings.spiffe_id(&req.task.id);
        let claims = SvidClaims {
            sub: spiffe_id.clone(),
            aud: [req.resource.audience.as_str()],
            exp: req.expires_at_unix_secs,
            iat: req.issued_at_unix_secs,
            jti: req.lease_id,
        };
        let token = keys
            .sign("JWT", &claims)
            .map_err(|e| ProviderError::permanent(e.to_string()))?;
        Ok(Minted {
            credential: DeliveredCredential {
                kind: "jwt_svid".to_owned(),
                secret: SecretString::from(token),
                metadata: json!({
                    "spiffe_id": spiffe_id,
                    "expires_at_unix_secs": req.expires_at_unix_secs,
                    "audience": req.resource.audience,
                }),
            },
            revocation_handle: req.lease_id.to_owned(),
        })
    }

    /// The issuer URL (`iss`).
    pub fn issuer_url(&self) -> &str {
        &self.issuer_url
    }

    /// The signing keys (for serving the JWK Set).
    pub fn keys(&self) -> &Arc<SigningKeys> {
        &self.keys
    }
}

/// Whether `action` is a valid OAuth scope token (RFC 6749 §3.3:
/// `1*( %x21 / %x23-5B / %x5D-7E )`), so actions joined by spaces form a valid `scope`.
fn is_scope_token(action: &str) -> bool {
    !action.is_empty()
        && action
            .bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E))
}

fn check_audience(resource: &Resource) -> Result<(), ProviderError> {
    if resource.audience.trim().is_empty() {
        return Err(ProviderError::permanent(format!(
            "resource {} has no audience; the jwt provider needs one for the aud claim",
            resource.id
        )));
    }
    Ok(())
}

#[async_trait]
impl CredentialProvider for JwtProvider {
    fn kind(&self) -> &str {
        KIND
    }

    fn has_external_state(&self) -> bool {
        false
    }

    /// Requires a non-empty `audience` and action names that are valid OAuth scope tokens
    /// (printable ASCII without space, `"` or `\`).
    fn check_resource(&self, resource: &Resource) -> Result<(), ProviderError> {
        check_audience(resource)?;
        let settings = JwtSettings::of(resource)?;
        if settings.format == Format::JwtSvid && self.svid_keys.is_none() {
            return Err(ProviderError::permanent(format!(
                "resource {}: jwt-svid keys are not loaded",
                resource.id
            )));
        }
        if let Some(bad) = resource.actions.iter().find(|a| !is_scope_token(a)) {
            return Err(ProviderError::permanent(format!(
                "resource {} action {bad:?} cannot be a jwt scope token \
                 (printable ascii without space, quote or backslash)",
                resource.id
            )));
        }
        Ok(())
    }

    /// Signs an access token for the lease.
    ///
    /// # Errors
    /// A permanent [`ProviderError`] when the resource has no audience, an action is not a valid
    /// scope token, the validity window is empty, or signing fails.
    async fn mint(&self, req: &MintRequest<'_>) -> Result<Minted, ProviderError> {
        check_audience(req.resource)?;
        if req.expires_at_unix_secs <= req.issued_at_unix_secs {
            return Err(ProviderError::permanent(
                "credential validity window is empty",
            ));
        }
        if req.actions.iter().any(|a| !is_scope_token(a)) {
            return Err(ProviderError::permanent(
                "an action is not a valid scope token",
            ));
        }
        let settings = JwtSettings::of(req.resource)?;
        if settings.format == Format::JwtSvid {
            if req.binding.jkt.is_some() {
                return Err(ProviderError::invalid_request(
                    "a jwt-svid cannot be bound to a dpop key",
                ));
            }
            return self.mint_svid(req, &settings);
        }
        let claims = AccessTokenClaims {
            iss: self.issuer_url.clone(),
            sub: req
                .binding
                .subject
                .clone()
                .unwrap_or_else(|| req.principal_id.to_owned()),
            aud: req.resource.audience.clone(),
            client_id: req.principal_id.to_owned(),
            iat: req.issued_at_unix_secs,
            nbf: req.issued_at_unix_secs,
            exp: req.expires_at_unix_secs,
            jti: req.lease_id.to_owned(),
            task_id: req.task.id.clone(),
            scope: req.actions.join(" "),
            resource: req.resource.id.clone(),
            environment: req.resource.environment.to_string(),
            cnf: req.binding.jkt.as_ref().map(|j| json!({ "jkt": j })),
            act: req.binding.act.clone(),
        };
        let token = self
            .keys
            .sign(ACCESS_TOKEN_TYP, &claims)
            .map_err(|e| ProviderError::permanent(e.to_string()))?;
        tracing::debug!(
            lease_id = req.lease_id,
            kid = self.keys.current_kid(),
            exp = req.expires_at_unix_secs,
            "minted jwt access token"
        );
        Ok(Minted {
            credential: DeliveredCredential {
                // A DPoP-bound token is not a bearer token: useless without its key.
                kind: if req.binding.jkt.is_some() {
                    "dpop_token"
                } else {
                    "bearer_token"
                }
                .to_owned(),
                secret: SecretString::from(token),
                metadata: json!({
                    "token_type": if req.binding.jkt.is_some() { "DPoP" } else { "Bearer" },
                    "expires_at_unix_secs": req.expires_at_unix_secs,
                    "audience": req.resource.audience,
                }),
            },
            revocation_handle: req.lease_id.to_owned(),
        })
    }

    /// Nothing to do: the token becomes inactive at introspection once the lease is revoked.
    async fn revoke(&self, _lease: &Lease) -> Result<(), ProviderError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(settings: serde_json::Value) -> Resource {
        serde_json::from_value(json!({
            "id": "r", "kind": "jwt", "environment": "sandbox", "sensitivity": "internal",
            "audience": "aud", "actions": ["read"], "max_ttl_secs": 600,
            "max_lifetime_secs": 600, "default_ttl_secs": 300, "production": false,
            "settings": settings,
        }))
        .unwrap()
    }

    #[test]
    fn jwt_svid_settings_are_checked() {
        let ok = JwtSettings::of(&resource(
            json!({"format": "jwt_svid", "trust_domain": "latch.example", "path_prefix": "/a/b"}),
        ))
        .unwrap();
        assert_eq!(ok.spiffe_id("tk_1"), "spiffe://latch.example/a/b/task/tk_1");
        for (bad, why) in [
            (json!({"format": "jwt_svid"}), "needs `trust_domain`"),
            (
                json!({"format": "jwt_svid", "trust_domain": "Bad Domain"}),
                "trust_domain",
            ),
            (json!({"trust_domain": "latch.example"}), "applies to"),
            (
                json!({"format": "jwt_svid", "trust_domain": "t", "path_prefix": "/a/../b"}),
                "path_prefix",
            ),
            (
                json!({"format": "jwt_svid", "trust_domain": "t", "path_prefix": "a"}),
                "path_prefix",
            ),
        ] {
            let e = JwtSettings::of(&resource(bad.clone())).unwrap_err();
            assert!(e.message.contains(why), "{bad}: {}", e.message);
        }
        assert_eq!(
            JwtSettings::of(&resource(serde_json::Value::Null))
                .unwrap()
                .format,
            Format::AccessToken
        );
    }
}
