//! The console's OpenID Connect relying party: discovery (OpenID Connect Discovery 1.0 §4),
//! the authorization request with `state`, `nonce` and PKCE S256 (RFC 7636), and the code
//! exchange (RFC 6749 §4.1.3, client_secret_basic), through the `oauth2` crate; the ID token is
//! verified by Latch's own verifier for the human issuer
//! ([`latch_identity::OidcVerifier::verify_id_token`]), like every other token.

use std::sync::Arc;
use std::time::{Duration, Instant};

use latch_core::model::Human;
use latch_core::{ApiError, ErrorCode};
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthUrl, AuthorizationCode, Client, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, ExtraTokenFields, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    StandardRevocableToken, StandardTokenResponse, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::is_loopback_http;

/// How long discovered provider metadata is reused.
const META_TTL: Duration = Duration::from_secs(3600);

/// The ID token of a token response (OpenID Connect Core 1.0 §3.1.3.3).
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct IdTokenFields {
    /// The ID token (a JWS).
    #[serde(default)]
    pub id_token: Option<String>,
}

impl ExtraTokenFields for IdTokenFields {}

type OidcTokenResponse = StandardTokenResponse<IdTokenFields, BasicTokenType>;
type OidcClient = Client<
    BasicErrorResponse,
    OidcTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// Endpoints read by discovery.
#[derive(Clone, Debug, Deserialize)]
struct ProviderMeta {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    /// OpenID Connect RP-Initiated Logout 1.0 §2.1, when the provider offers it.
    #[serde(default)]
    end_session_endpoint: Option<String>,
}

/// The console's client at the human issuer.
pub struct RelyingParty {
    /// The `[[issuers]]` name.
    pub issuer_name: String,
    /// The issuer URL (exact `iss`).
    pub issuer: String,
    client_id: String,
    client_secret: SecretString,
    redirect_uri: String,
    post_logout_redirect_uri: Option<String>,
    scopes: Vec<String>,
    http: reqwest::Client,
    verifier: Arc<latch_identity::OidcVerifier>,
    meta: tokio::sync::RwLock<Option<(ProviderMeta, Instant)>>,
}

impl std::fmt::Debug for RelyingParty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelyingParty")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// An authorization request to send the browser to, and what the callback must check.
pub struct AuthorizationStart {
    /// The provider's authorization URL with every parameter.
    pub url: String,
    /// `state`.
    pub state: String,
    /// `nonce`.
    pub nonce: String,
    /// The PKCE verifier.
    pub pkce_verifier: String,
}

/// An HTTP failure of the token request (its message names no secret).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

fn sign_in_failed(m: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::SignInFailed, m)
}

impl RelyingParty {
    /// A relying party for `issuer_name` (issuer URL `issuer`) as `client_id`, redirecting to
    /// `redirect_uri`; nothing is fetched until the first sign-in.
    #[expect(
        clippy::too_many_arguments,
        reason = "one constructor called once from startup; a builder would only rename the arguments"
    )]
    pub fn new(
        issuer_name: &str,
        issuer: &str,
        client_id: &str,
        client_secret: SecretString,
        redirect_uri: &str,
        scopes: &[String],
        http: reqwest::Client,
        verifier: Arc<latch_identity::OidcVerifier>,
    ) -> Self {
        let mut scopes: Vec<String> = scopes.to_vec();
        if !scopes.iter().any(|s| s == "openid") {
            scopes.insert(0, "openid".into());
        }
        Self {
            issuer_name: issuer_name.to_owned(),
            issuer: issuer.to_owned(),
            client_id: client_id.to_owned(),
            client_secret,
            redirect_uri: redirect_uri.to_owned(),
            post_logout_redirect_uri: None,
            scopes,
            http,
            verifier,
            meta: tokio::sync::RwLock::new(None),
        }
    }

    /// This relying party, sending `uri` as the `post_logout_redirect_uri` of its sign-out
    /// links (it must be registered at the provider for the client).
    #[must_use]
    pub fn with_post_logout_redirect_uri(mut self, uri: &str) -> Self {
        self.post_logout_redirect_uri = Some(uri.to_owned());
        self
    }

    /// Where a human signs out at the provider too: its `end_session_endpoint` (OpenID
    /// Connect RP-Initiated Logout 1.0 §2) with `client_id` and, when registered,
    /// `post_logout_redirect_uri`. No `id_token_hint`: the console keeps no ID token, so the
    /// provider asks the human to confirm. `None` when discovery offers no such endpoint (or
    /// the provider cannot be reached now), or it is neither https nor loopback http.
    pub async fn end_session_url(&self) -> Option<String> {
        let m = self.meta().await.ok()?;
        let end = m.end_session_endpoint?;
        if !(end.starts_with("https://") || is_loopback_http(&end)) {
            return None;
        }
        let mut url = url::Url::parse(&end).ok()?;
        url.query_pairs_mut()
            .append_pair("client_id", &self.client_id);
        if let Some(back) = &self.post_logout_redirect_uri {
            url.query_pairs_mut()
                .append_pair("post_logout_redirect_uri", back);
        }
        Some(url.to_string())
    }

    /// The provider's metadata, discovered at most once an hour.
    async fn meta(&self) -> Result<ProviderMeta, ApiError> {
        if let Some((m, at)) = self.meta.read().await.as_ref()
            && at.elapsed() < META_TTL
        {
            return Ok(m.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let fail = |why: &str| {
            tracing::warn!(issuer = %self.issuer_name, why, "openid provider discovery failed");
            sign_in_failed(format!(
                "the identity provider `{}` could not be reached (discovery)",
                self.issuer_name
            ))
        };
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| fail(&e.to_string()))?;
        if !resp.status().is_success() {
            return Err(fail(&format!("status {}", resp.status())));
        }
        let m: ProviderMeta = resp.json().await.map_err(|e| fail(&e.to_string()))?;
        if m.issuer != self.issuer {
            return Err(fail("the metadata's issuer is not the configured issuer"));
        }
        for u in [&m.authorization_endpoint, &m.token_endpoint] {
            if !(u.starts_with("https://") || is_loopback_http(u)) {
                return Err(fail("an endpoint is neither https nor loopback http"));
            }
        }
        *self.meta.write().await = Some((m.clone(), Instant::now()));
        Ok(m)
    }

    fn client(&self, m: &ProviderMeta) -> Result<OidcClient, ApiError> {
        let bad = |_| sign_in_failed("the identity provider's endpoints are not valid urls");
        Ok(Client::new(ClientId::new(self.client_id.clone()))
            .set_client_secret(ClientSecret::new(
                self.client_secret.expose_secret().to_owned(),
            ))
            .set_auth_uri(AuthUrl::new(m.authorization_endpoint.clone()).map_err(bad)?)
            .set_token_uri(TokenUrl::new(m.token_endpoint.clone()).map_err(bad)?)
            .set_redirect_uri(
                RedirectUrl::new(self.redirect_uri.clone())
                    .map_err(|_| sign_in_failed("the console's redirect uri is not a valid url"))?,
            ))
    }

    /// Starts a sign-in: a fresh `state`, `nonce` and PKCE S256 pair, and the authorization
    /// URL carrying them.
    ///
    /// # Errors
    /// `sign_in_failed` when discovery fails or the random generator does.
    pub async fn start(&self) -> Result<AuthorizationStart, ApiError> {
        let m = self.meta().await?;
        let client = self.client(&m)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let nonce = super::random_token(32).map_err(sign_in_failed)?;
        let state = super::random_token(32).map_err(sign_in_failed)?;
        let st = state.clone();
        let (url, _) = client
            .authorize_url(move || CsrfToken::new(st))
            .add_scopes(self.scopes.iter().cloned().map(Scope::new))
            .add_extra_param("nonce", nonce.clone())
            .set_pkce_challenge(challenge)
            .url();
        Ok(AuthorizationStart {
            url: url.to_string(),
            state,
            nonce,
            pkce_verifier: verifier.secret().clone(),
        })
    }

    /// Exchanges `code` (with the PKCE verifier) at the token endpoint and verifies the ID
    /// token it returns (signature, issuer, audience = this client, times, `nonce`). Returns
    /// the human and their display name. The tokens themselves are dropped here.
    ///
    /// # Errors
    /// `sign_in_failed` (the provider refused the code, or answered without an ID token), or
    /// the verifier's error for an ID token it refuses.
    pub async fn finish(
        &self,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
    ) -> Result<(Human, Option<String>), ApiError> {
        let m = self.meta().await?;
        let client = self.client(&m)?;
        let http = self.http.clone();
        let call = move |req: oauth2::HttpRequest| {
            let http = http.clone();
            async move { send(&http, req).await }
        };
        let resp = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .request_async(&call)
            .await
            .map_err(|e| {
                let why = match &e {
                    oauth2::RequestTokenError::ServerResponse(r) => r.error().to_string(),
                    oauth2::RequestTokenError::Request(_) => "unreachable".to_owned(),
                    oauth2::RequestTokenError::Parse(..) => "unreadable answer".to_owned(),
                    oauth2::RequestTokenError::Other(_) => "error".to_owned(),
                };
                sign_in_failed(format!(
                    "the identity provider refused the authorization code ({why})"
                ))
            })?;
        let id_token = resp
            .extra_fields()
            .id_token
            .as_deref()
            .ok_or_else(|| sign_in_failed("the identity provider returned no id token"))?;
        self.verifier
            .verify_id_token(id_token, &self.issuer_name, &self.client_id, nonce)
            .await
    }
}

/// Sends an `oauth2` request with Latch's HTTP client.
async fn send(
    http: &reqwest::Client,
    req: oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse, HttpError> {
    let req = reqwest::Request::try_from(req).map_err(|e| HttpError(e.to_string()))?;
    let resp = http
        .execute(req)
        .await
        .map_err(|e| HttpError(e.without_url().to_string()))?;
    let mut builder = oauth2::http::Response::builder().status(resp.status());
    for (k, v) in resp.headers() {
        builder = builder.header(k, v);
    }
    let body = resp
        .bytes()
        .await
        .map_err(|e| HttpError(e.without_url().to_string()))?;
    builder
        .body(body.to_vec())
        .map_err(|e| HttpError(e.to_string()))
}
