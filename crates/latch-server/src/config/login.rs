//! `[login]` in `latch.toml`: how `latch login` signs a human in from a terminal. The broker only
//! publishes these settings (`GET /v1/login/config`); the CLI runs the OAuth flow with the
//! human issuer itself, as a public native client (RFC 8252), and presents the access token it
//! gets to the broker, which verifies it like every human token.
//!
//! ```toml
//! [login]
//! issuer = "okta"               # the `name` of a `kind = "human"` [[issuers]] entry
//! client_id = "latch-cli"       # a public (no secret) native client registered there
//! resource = "urn:latch"        # RFC 8707 resource indicator; must be that issuer's `audience`
//! scopes = ["openid", "offline_access", "groups"]
//! ```

use serde::{Deserialize, Serialize};

/// `[login]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginConfig {
    /// The `name` of the `[[issuers]]` entry (`kind = "human"`) humans sign in with.
    pub issuer: String,
    /// The public client id registered with that issuer for the CLI (loopback redirect with
    /// PKCE, RFC 8252 §7.3; device authorization grant, RFC 8628; refresh tokens).
    pub client_id: String,
    /// RFC 8707 resource indicator the CLI asks tokens for. The issuer's access tokens for it
    /// must be JWTs whose `aud` is the issuer entry's `audience`, so they must be equal.
    /// Default: none (the issuer's default audience must then be the entry's `audience`).
    #[serde(default)]
    pub resource: Option<String>,
    /// Scopes the CLI asks for. Default `openid`, `offline_access` (a refresh token, so the
    /// CLI can renew its sign-in), `groups`.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
}

fn default_scopes() -> Vec<String> {
    ["openid", "offline_access", "groups"]
        .map(str::to_owned)
        .to_vec()
}

/// What `GET /v1/login/config` publishes: everything a CLI needs to sign a human in, and
/// nothing secret.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LoginSettings {
    /// The human issuer's URL (`iss`); its OpenID Provider metadata is at
    /// `{issuer}/.well-known/openid-configuration` (OpenID Connect Discovery 1.0 §4).
    pub issuer: String,
    /// The public client id to use.
    pub client_id: String,
    /// RFC 8707 resource indicator to ask tokens for, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Scopes to ask for.
    pub scopes: Vec<String>,
}

impl LoginConfig {
    /// The published settings, checked against the configured issuers.
    ///
    /// # Errors
    /// A message when `issuer` names no human issuer, `client_id` is empty, or `resource` is
    /// not that issuer's `audience`.
    pub fn settings(
        &self,
        issuers: &[latch_identity::IssuerConfig],
    ) -> Result<LoginSettings, String> {
        let Some(entry) = issuers.iter().find(|i| i.name == self.issuer) else {
            return Err(format!(
                "`login.issuer` `{}` names no [[issuers]] entry",
                self.issuer
            ));
        };
        if entry.kind != latch_identity::IssuerKind::Human {
            return Err(format!(
                "`login.issuer` `{}` is not a `kind = \"human\"` issuer",
                self.issuer
            ));
        }
        if self.client_id.trim().is_empty() {
            return Err("`login.client_id` is empty".to_owned());
        }
        if let Some(r) = &self.resource
            && *r != entry.audience
        {
            return Err(format!(
                "`login.resource` `{r}` must be the audience of issuer `{}` (`{}`): tokens \
                 for it would not verify",
                self.issuer, entry.audience
            ));
        }
        if !self.scopes.iter().any(|s| s == "openid") {
            return Err("`login.scopes` must include `openid`".to_owned());
        }
        Ok(LoginSettings {
            issuer: entry.issuer.clone(),
            client_id: self.client_id.clone(),
            resource: self.resource.clone(),
            scopes: self.scopes.clone(),
        })
    }
}
