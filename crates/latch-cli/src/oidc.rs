//! The OAuth side of `latch login`: the CLI is a public native client (RFC 8252) of the human
//! issuer the broker names (`GET /v1/login/config`). It discovers the provider (OpenID Connect
//! Discovery 1.0 §4), then signs in with the authorization code flow and PKCE (RFC 7636, S256)
//! through a loopback redirect (RFC 8252 §7.3), or with the device authorization grant
//! (RFC 8628); it refreshes (RFC 6749 §6) and revokes (RFC 7009) through the same client. The
//! protocol is the `oauth2` crate's; this module only supplies its HTTP client and the
//! loopback listener.

use std::time::Duration;

use std::sync::Arc;

use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, CsrfToken, DeviceAuthorizationUrl, EndpointNotSet,
    PkceCodeChallenge, RedirectUrl, RefreshToken, Scope, StandardRevocableToken, TokenResponse,
    TokenUrl,
};
use serde::{Deserialize, Serialize};

use crate::login_callback::{PendingPage, Receiver};

/// The token endpoint's answer beyond RFC 6749: the OpenID Connect ID token (Core 1.0 §3.1.3.3).
#[derive(Clone, Deserialize, Serialize)]
pub struct IdTokenField {
    /// The ID token, when the provider sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id_token: Option<String>,
}

impl std::fmt::Debug for IdTokenField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdTokenField")
            .field("id_token", &self.id_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl oauth2::ExtraTokenFields for IdTokenField {}

/// A token response with the ID token kept.
type TokenAnswer = oauth2::StandardTokenResponse<IdTokenField, BasicTokenType>;

/// `oauth2`'s client with [`TokenAnswer`] as its token response.
type OauthClient<
    HasAuthUrl = EndpointNotSet,
    HasDeviceAuthUrl = EndpointNotSet,
    HasTokenUrl = EndpointNotSet,
> = oauth2::Client<
    BasicErrorResponse,
    TokenAnswer,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    HasAuthUrl,
    HasDeviceAuthUrl,
    EndpointNotSet,
    EndpointNotSet,
    HasTokenUrl,
>;

/// What the broker publishes for terminal sign-in (`GET /v1/login/config`).
#[derive(Debug, Clone, Deserialize)]
pub struct LoginSettings {
    /// The human issuer's URL.
    pub issuer: String,
    /// The public client id.
    pub client_id: String,
    /// RFC 8707 resource indicator, when set.
    #[serde(default)]
    pub resource: Option<String>,
    /// Scopes to ask for.
    pub scopes: Vec<String>,
}

/// The provider metadata the CLI uses (OpenID Connect Discovery 1.0 §3).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct ProviderMetadata {
    /// Must equal the configured issuer exactly (§4.3).
    pub issuer: String,
    /// Authorization endpoint (code flow).
    pub authorization_endpoint: String,
    /// Token endpoint.
    pub token_endpoint: String,
    /// RFC 8628 device authorization endpoint, when offered.
    #[serde(default)]
    pub device_authorization_endpoint: Option<String>,
    /// RFC 7009 revocation endpoint, when offered.
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    /// The ID token signing algorithms the provider uses (JOSE names).
    #[serde(default)]
    pub id_token_signing_alg_values_supported: Vec<String>,
}

/// Tokens from a sign-in or a refresh.
pub struct Tokens {
    /// The access token the broker verifies (a JWT for the resource).
    pub access_token: String,
    /// The refresh token, when the provider issued one.
    pub refresh_token: Option<String>,
    /// Seconds the access token lives, when the provider says.
    pub expires_in: Option<u64>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("access_token", &"<redacted>")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// An HTTP failure, as `oauth2` needs it (`std::error::Error`).
#[derive(Debug)]
pub struct HttpError(String);

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HttpError {}

/// The HTTP client `oauth2` calls: Latch's reqwest, never following redirects (RFC 6749 §3.1:
/// a token endpoint that redirects is not followed with credentials).
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default()
}

async fn send(
    http: reqwest::Client,
    req: oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse, HttpError> {
    let req = reqwest::Request::try_from(req).map_err(|e| HttpError(e.to_string()))?;
    let resp = http
        .execute(req)
        .await
        .map_err(|e| HttpError(format!("cannot reach the identity provider: {e}")))?;
    let mut out = oauth2::http::Response::builder().status(resp.status());
    for (k, v) in resp.headers() {
        out = out.header(k, v);
    }
    let body = resp.bytes().await.map_err(|e| HttpError(e.to_string()))?;
    out.body(body.to_vec())
        .map_err(|e| HttpError(e.to_string()))
}

/// A closure `oauth2` takes as its asynchronous HTTP client.
fn oauth_http() -> impl Fn(
    oauth2::HttpRequest,
) -> std::pin::Pin<
    Box<dyn Future<Output = Result<oauth2::HttpResponse, HttpError>> + Send>,
> {
    let http = http_client();
    move |req| Box::pin(send(http.clone(), req))
}

/// Fetches and checks the provider's metadata.
///
/// # Errors
/// The provider cannot be reached, its metadata is not JSON, or its `issuer` is not `issuer`
/// (OpenID Connect Discovery 1.0 §4.3: a mix-up defence).
pub async fn discover(issuer: &str) -> Result<ProviderMetadata, String> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let resp = http_client()
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("cannot reach the identity provider at {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!(
            "the identity provider answered {} for {url}",
            resp.status()
        ));
    }
    let m: ProviderMetadata = resp
        .json()
        .await
        .map_err(|e| format!("the identity provider's metadata at {url} is not usable: {e}"))?;
    if m.issuer != issuer {
        return Err(format!(
            "the identity provider's metadata names issuer `{}`, not `{issuer}`: refusing it",
            m.issuer
        ));
    }
    Ok(m)
}

fn url_err(what: &str) -> impl Fn(oauth2::url::ParseError) -> String + '_ {
    move |e| format!("the identity provider's {what} is not a URL: {e}")
}

fn tokens(t: &TokenAnswer) -> Tokens {
    Tokens {
        access_token: t.access_token().secret().clone(),
        refresh_token: t.refresh_token().map(|r| r.secret().clone()),
        expires_in: t.expires_in().map(|d| d.as_secs()),
    }
}

fn token_error<E: std::error::Error>(
    e: oauth2::RequestTokenError<E, impl oauth2::ErrorResponse>,
) -> String {
    match e {
        oauth2::RequestTokenError::ServerResponse(r) => {
            format!("the identity provider refused: {r}")
        }
        oauth2::RequestTokenError::Request(e) => e.to_string(),
        other => format!("the identity provider's answer is not usable: {other}"),
    }
}

/// Signs in through a loopback redirect: prints (and, unless `no_browser`, opens) the
/// authorization URL, waits up to `timeout` for the provider to redirect the browser to
/// `http://127.0.0.1:<port>/callback` with this attempt's `state`, redeems the code with its
/// PKCE verifier and checks the ID token ([`check_id_token`]). Answers the tokens and the
/// browser's page, still waiting for the caller's verdict ([`PendingPage::finish`]); on an
/// error the page shows the failure before this returns.
///
/// # Errors
/// The listener cannot bind, the provider reports an error, the wait times out, the code cannot
/// be redeemed, or the ID token is missing or does not verify.
///
/// # Security
/// The listener binds loopback only. A request without this attempt's `state` (random,
/// compared in full) is answered `400` and ignored, so a stray or forged request can neither
/// end nor hijack the sign-in; the code is useless without the PKCE verifier, which never leaves
/// this process; the ID token's signature, issuer, audience, lifetime and `nonce` are checked.
pub async fn sign_in_loopback(
    settings: &LoginSettings,
    meta: &ProviderMetadata,
    no_browser: bool,
    timeout: Duration,
) -> Result<(Tokens, PendingPage), String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot listen on loopback for the sign-in redirect: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let redirect = format!("http://127.0.0.1:{port}/callback");
    let client = OauthClient::new(ClientId::new(settings.client_id.clone()))
        .set_auth_uri(
            AuthUrl::new(meta.authorization_endpoint.clone())
                .map_err(url_err("authorization endpoint"))?,
        )
        .set_token_uri(
            TokenUrl::new(meta.token_endpoint.clone()).map_err(url_err("token endpoint"))?,
        )
        .set_redirect_uri(RedirectUrl::new(redirect).map_err(url_err("redirect"))?);
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let nonce = CsrfToken::new_random();
    let mut req = client
        .authorize_url(CsrfToken::new_random)
        .add_scopes(scopes(settings).map(Scope::new))
        .add_extra_param("nonce", nonce.secret().clone())
        .set_pkce_challenge(challenge);
    if let Some(r) = &settings.resource {
        req = req.add_extra_param("resource", r.clone());
    }
    let (url, state) = req.url();
    let mut receiver = Receiver::start(listener, state.secret().clone());
    eprintln!("Sign in with your browser:\n\n  {url}\n");
    if !no_browser {
        open_browser(url.as_str());
    }
    let arrived = match receiver.wait(timeout).await {
        Ok(a) => a,
        Err(e) => {
            receiver.close().await;
            return Err(e);
        }
    };
    let mut exchange = client
        .exchange_code(AuthorizationCode::new(arrived.code.clone()))
        .set_pkce_verifier(verifier);
    if let Some(r) = &settings.resource {
        exchange = exchange.add_extra_param("resource", r.clone());
    }
    let checked = match exchange.request_async(&oauth_http()).await {
        Ok(t) => check_id_token(
            t.extra_fields().id_token.as_deref(),
            settings,
            meta,
            nonce.secret(),
        )
        .await
        .map(|()| tokens(&t)),
        Err(e) => Err(token_error(e)),
    };
    let page = PendingPage::new(arrived, receiver);
    match checked {
        Ok(t) => Ok((t, page)),
        Err(e) => {
            page.finish(Err(e.clone())).await;
            Err(e)
        }
    }
}

/// The scopes to ask for: the broker's, with `openid` (this is an OpenID Connect sign-in).
fn scopes(settings: &LoginSettings) -> impl Iterator<Item = String> + '_ {
    let openid = (!settings.scopes.iter().any(|s| s == "openid")).then(|| "openid".to_owned());
    openid.into_iter().chain(settings.scopes.iter().cloned())
}

/// Checks the ID token of a code exchange (OpenID Connect Core 1.0 §3.1.3.7) with Latch's own
/// verifier: signature with the provider's keys (discovery), `iss` equal to the issuer, `aud`
/// containing (and `azp`, when present, equal to) the client id, `exp`/`iat` with 60 s of
/// leeway, and `nonce` equal to this attempt's.
///
/// # Errors
/// No ID token, keys that cannot be fetched, or a token that fails a check.
async fn check_id_token(
    id_token: Option<&str>,
    settings: &LoginSettings,
    meta: &ProviderMetadata,
    nonce: &str,
) -> Result<(), String> {
    use latch_identity::{
        IssuerConfig, IssuerKind, JwksSource, OidcVerifier, SigningAlgorithm, VerifierOptions,
    };
    let Some(id_token) = id_token else {
        return Err("the identity provider returned no ID token".to_owned());
    };
    let mut algorithms: Vec<SigningAlgorithm> = meta
        .id_token_signing_alg_values_supported
        .iter()
        .filter_map(|a| SigningAlgorithm::from_jose(a))
        .collect();
    if algorithms.is_empty() {
        // OpenID Connect Discovery 1.0 §3: RS256 must be supported.
        algorithms.push(SigningAlgorithm::RS256);
    }
    const NAME: &str = "login";
    let issuer = IssuerConfig::new(
        NAME,
        settings.issuer.clone(),
        IssuerKind::Human,
        settings.client_id.clone(),
        JwksSource::Discovery,
    )
    .with_algorithms(algorithms);
    let verifier = OidcVerifier::new(
        vec![issuer],
        VerifierOptions::default(),
        Arc::new(latch_core::SystemClock),
        http_client(),
    )
    .map_err(|e| format!("the identity provider cannot be checked: {e}"))?;
    verifier
        .verify_id_token(id_token, NAME, &settings.client_id, nonce)
        .await
        .map(|_| ())
        .map_err(|e| format!("the ID token is not acceptable: {}", e.message))
}

/// Signs in with the device authorization grant (RFC 8628): prints where to go and the code to
/// enter, then polls the token endpoint at the provider's interval until the human approves,
/// refuses, or the code expires.
///
/// # Errors
/// The provider offers no device authorization endpoint, refuses, or the code expires.
pub async fn sign_in_device(
    settings: &LoginSettings,
    meta: &ProviderMetadata,
) -> Result<Tokens, String> {
    let Some(device) = &meta.device_authorization_endpoint else {
        return Err(
            "the identity provider offers no device authorization (RFC 8628); sign in without \
             `--device`"
                .into(),
        );
    };
    let client = OauthClient::new(ClientId::new(settings.client_id.clone()))
        .set_device_authorization_url(
            DeviceAuthorizationUrl::new(device.clone())
                .map_err(url_err("device authorization endpoint"))?,
        )
        .set_token_uri(
            TokenUrl::new(meta.token_endpoint.clone()).map_err(url_err("token endpoint"))?,
        );
    let mut req = client
        .exchange_device_code()
        .add_scopes(scopes(settings).map(Scope::new));
    if let Some(r) = &settings.resource {
        req = req.add_extra_param("resource", r.clone());
    }
    let details: oauth2::StandardDeviceAuthorizationResponse = req
        .request_async(&oauth_http())
        .await
        .map_err(token_error)?;
    match details.verification_uri_complete() {
        Some(full) => eprintln!(
            "To sign in, open\n\n  {}\n\nand check that it shows the code {}\n",
            full.secret(),
            details.user_code().secret()
        ),
        None => eprintln!(
            "To sign in, open\n\n  {}\n\nand enter the code {}\n",
            details.verification_uri().as_str(),
            details.user_code().secret()
        ),
    }
    let mut poll = client.exchange_device_access_token(&details);
    if let Some(r) = &settings.resource {
        poll = poll.add_extra_param("resource", r.clone());
    }
    let t = poll
        .request_async(&oauth_http(), tokio::time::sleep, None)
        .await
        .map_err(token_error)?;
    Ok(tokens(&t))
}

/// Trades `refresh_token` for fresh tokens (RFC 6749 §6).
///
/// # Errors
/// The provider refuses (expired or revoked refresh token) or cannot be reached.
pub async fn refresh(
    client_id: &str,
    token_endpoint: &str,
    resource: Option<&str>,
    refresh_token: &str,
) -> Result<Tokens, String> {
    let client = OauthClient::new(ClientId::new(client_id.to_owned())).set_token_uri(
        TokenUrl::new(token_endpoint.to_owned()).map_err(url_err("token endpoint"))?,
    );
    let token = RefreshToken::new(refresh_token.to_owned());
    let mut req = client.exchange_refresh_token(&token);
    if let Some(r) = resource {
        req = req.add_extra_param("resource", r.to_owned());
    }
    let t = req
        .request_async(&oauth_http())
        .await
        .map_err(token_error)?;
    let mut out = tokens(&t);
    // A provider that does not rotate refresh tokens keeps the old one valid.
    if out.refresh_token.is_none() {
        out.refresh_token = Some(refresh_token.to_owned());
    }
    Ok(out)
}

/// Revokes `refresh_token` at `revocation_endpoint` (RFC 7009 §2.1: a form POST with the
/// token, `token_type_hint=refresh_token` and, for a public client, `client_id`), which ends the
/// grant.
///
/// # Errors
/// The endpoint is plain `http` on a host other than loopback, or the provider refuses or
/// cannot be reached.
///
/// # Security
/// The token is sent only over `https`, or `http` to `127.0.0.1`/`localhost`/`[::1]` (a local
/// provider). (`oauth2` refuses every `http` revocation URL, loopback too, so this one request
/// is made directly.)
pub async fn revoke(
    client_id: &str,
    revocation_endpoint: &str,
    refresh_token: &str,
) -> Result<(), String> {
    let url = reqwest::Url::parse(revocation_endpoint)
        .map_err(|e| format!("the revocation endpoint is not a URL: {e}"))?;
    let loopback = matches!(
        url.host_str(),
        Some("127.0.0.1" | "localhost" | "[::1]" | "::1")
    );
    if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
        return Err("the revocation endpoint is not https: the token is not sent there".into());
    }
    let r = http_client()
        .post(url)
        .form(&[
            ("token", refresh_token),
            ("token_type_hint", "refresh_token"),
            ("client_id", client_id),
        ])
        .send()
        .await
        .map_err(|e| format!("cannot reach the identity provider: {e}"))?;
    if r.status().is_success() {
        Ok(())
    } else {
        Err(format!("the identity provider answered {}", r.status()))
    }
}

/// Opens `url` in the desktop's browser when there is a desktop (`$BROWSER`, else `xdg-open`
/// or `open`); silently does nothing otherwise (the URL is printed anyway).
fn open_browser(url: &str) {
    let has_desktop = std::env::var_os("DISPLAY").is_some()
        || std::env::var_os("WAYLAND_DISPLAY").is_some()
        || cfg!(target_os = "macos");
    let program = match std::env::var("BROWSER") {
        Ok(b) if !b.trim().is_empty() => b,
        _ if !has_desktop => return,
        _ if cfg!(target_os = "macos") => "open".to_owned(),
        _ => "xdg-open".to_owned(),
    };
    let _ = std::process::Command::new(program)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}
