//! The `jwt` credential provider: short-lived signed access tokens.
//!
//! Tokens are JWTs (RFC 7519) in the RFC 9068 access-token profile (header `typ: "at+jwt"`),
//! signed with the broker's current key from [`SigningKeys`]. Resource servers verify them
//! offline against the broker's JWK Set (RFC 7517, [`SigningKeys::jwks`]) and, for prompt
//! revocation, ask the broker's introspection endpoint, where the lease state decides whether a
//! token is still active.

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
}

impl JwtProvider {
    /// A provider issuing as `issuer_url` (the `iss` claim) and signing with `keys`.
    pub fn new(issuer_url: String, keys: Arc<SigningKeys>) -> Self {
        Self { issuer_url, keys }
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
