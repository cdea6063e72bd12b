//! Ambient workload identity: the token `latch` presents when it is given none, found where
//! the platform puts it.
//!
//! Order, unless `--identity` / `LATCH_IDENTITY` names one source:
//! 1. GitHub Actions: an OIDC token requested from `ACTIONS_ID_TOKEN_REQUEST_URL` with
//!    `Authorization: bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN` and `audience=<aud>`; the answer
//!    is `{"value": "<jwt>"}` (GitHub, "OpenID Connect in cloud providers", the job's
//!    `id-token: write` permission);
//! 2. GitLab CI: the ID token in the variable named by `--gitlab-token-var` (default
//!    `LATCH_ID_TOKEN`, declared with `id_tokens:` in `.gitlab-ci.yml`);
//! 3. Kubernetes: a projected service-account token file (`--k8s-token-file`, default
//!    `/var/run/secrets/tokens/latch-token`), read again before every use because the kubelet
//!    rewrites it when it rotates the token;
//! 4. SPIFFE: a JWT-SVID from the Workload API at `SPIFFE_ENDPOINT_SOCKET` (gRPC
//!    `FetchJWTSVID` with the `workload.spiffe.io: true` header, through the `spiffe` crate);
//! 5. `LATCH_TOKEN`.
//!
//! `--token` wins over all of these. Tokens fetched over the network (GitHub, SPIFFE) are kept
//! until a minute before their `exp`, never past it; file and variable tokens are read at each
//! use.
//!
//! # Security
//! Tokens are never printed, logged, or put in `Debug` output or error messages. The payload's
//! `exp` is read without verifying the signature, only to know when to fetch again: the broker
//! verifies every token.

use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// GitHub Actions: the token service URL.
pub const GITHUB_URL_ENV: &str = "ACTIONS_ID_TOKEN_REQUEST_URL";
/// GitHub Actions: the bearer token for the token service.
pub const GITHUB_TOKEN_ENV: &str = "ACTIONS_ID_TOKEN_REQUEST_TOKEN";
/// The SPIFFE Workload API endpoint (`unix:///run/spire/agent.sock`).
pub const SPIFFE_ENV: &str = "SPIFFE_ENDPOINT_SOCKET";
/// The plain token variable, last in the order.
pub const TOKEN_ENV: &str = "LATCH_TOKEN";

/// Seconds before `exp` at which a fetched token is fetched again.
const REFETCH_MARGIN_SECS: i64 = 60;

/// The one line printed when no identity is found.
pub const NOT_FOUND: &str = "no workload identity found: pass --token, or --identity \
     github|gitlab|kubernetes|spiffe|file:PATH|env:VAR (or LATCH_IDENTITY), or run where one \
     is provided (GitHub Actions with `id-token: write`, GitLab `id_tokens` in $LATCH_ID_TOKEN \
     or --gitlab-token-var, a projected token at --k8s-token-file, SPIFFE_ENDPOINT_SOCKET, \
     LATCH_TOKEN), or `latch login`";

/// Where a workload token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The GitHub Actions OIDC token service.
    Github,
    /// A GitLab CI `id_tokens` variable (its name).
    Gitlab(String),
    /// A Kubernetes projected service-account token file.
    Kubernetes(PathBuf),
    /// The SPIFFE Workload API (the endpoint, e.g. `unix:///run/spire/agent.sock`).
    Spiffe(String),
    /// A file holding a token (trimmed).
    File(PathBuf),
    /// An environment variable holding a token.
    Env(String),
}

impl Source {
    /// A short name for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Github => "GitHub Actions OIDC".to_owned(),
            Self::Gitlab(v) => format!("GitLab ID token ${v}"),
            Self::Kubernetes(p) => format!("Kubernetes token {}", p.display()),
            Self::Spiffe(e) => format!("SPIFFE Workload API {e}"),
            Self::File(p) => format!("file {}", p.display()),
            Self::Env(v) => format!("${v}"),
        }
    }

    /// Environment variables the source reads that a command run by `latch exec` must not
    /// inherit (they would let it obtain identity tokens itself).
    pub fn secret_env(&self) -> Vec<String> {
        match self {
            Self::Github => vec![GITHUB_URL_ENV.into(), GITHUB_TOKEN_ENV.into()],
            Self::Gitlab(v) | Self::Env(v) => vec![v.clone()],
            _ => Vec::new(),
        }
    }
}

/// What the sources need to know, from flags and environment (see `Conn`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `--identity` / `LATCH_IDENTITY`.
    pub identity: Option<String>,
    /// Audience to ask for (GitHub, SPIFFE).
    pub audience: String,
    /// GitLab: the `id_tokens` variable's name.
    pub gitlab_var: String,
    /// Kubernetes: the projected token's path.
    pub k8s_file: PathBuf,
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Settings {
    /// The source named by `--identity`/`LATCH_IDENTITY`, else the first one present, in the
    /// documented order; `None` when nothing is there.
    ///
    /// # Errors
    /// An unknown `--identity`, or a named source that is not available (one line naming
    /// what is missing).
    pub fn source(&self) -> Result<Option<Source>, String> {
        match self.identity.as_deref().filter(|s| !s.is_empty()) {
            Some(named) => self.named(named).map(Some),
            None => Ok(self.detect()),
        }
    }

    fn named(&self, named: &str) -> Result<Source, String> {
        let need = |var: &str, what: &str| {
            env_nonempty(var).ok_or_else(|| format!("--identity {what}: ${var} is not set"))
        };
        Ok(match named {
            "github" => {
                need(GITHUB_URL_ENV, named)?;
                need(GITHUB_TOKEN_ENV, named)?;
                Source::Github
            }
            "gitlab" => {
                need(&self.gitlab_var, named)?;
                Source::Gitlab(self.gitlab_var.clone())
            }
            "kubernetes" => Source::Kubernetes(self.k8s_file.clone()),
            "spiffe" => Source::Spiffe(need(SPIFFE_ENV, named)?),
            other => {
                if let Some(p) = other.strip_prefix("file:").filter(|p| !p.is_empty()) {
                    Source::File(PathBuf::from(p))
                } else if let Some(v) = other.strip_prefix("env:").filter(|v| !v.is_empty()) {
                    Source::Env(v.to_owned())
                } else {
                    return Err(format!(
                        "--identity {other:?}: expected github, gitlab, kubernetes, spiffe, \
                         file:PATH or env:VAR"
                    ));
                }
            }
        })
    }

    fn detect(&self) -> Option<Source> {
        if env_nonempty(GITHUB_URL_ENV).is_some() && env_nonempty(GITHUB_TOKEN_ENV).is_some() {
            return Some(Source::Github);
        }
        if env_nonempty(&self.gitlab_var).is_some() {
            return Some(Source::Gitlab(self.gitlab_var.clone()));
        }
        if self.k8s_file.is_file() {
            return Some(Source::Kubernetes(self.k8s_file.clone()));
        }
        if let Some(e) = env_nonempty(SPIFFE_ENV) {
            return Some(Source::Spiffe(e));
        }
        env_nonempty(TOKEN_ENV).map(|_| Source::Env(TOKEN_ENV.to_owned()))
    }
}

/// A workload token source with its cache (tokens fetched over the network).
pub struct Ambient {
    source: Source,
    audience: String,
    http: reqwest::Client,
    cached: tokio::sync::Mutex<Option<(String, i64)>>,
}

impl std::fmt::Debug for Ambient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ambient")
            .field("source", &self.source)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl Ambient {
    /// A source asking for `audience` (GitHub, SPIFFE).
    pub fn new(source: Source, audience: &str) -> Arc<Self> {
        Arc::new(Self {
            source,
            audience: audience.to_owned(),
            http: reqwest::Client::new(),
            cached: tokio::sync::Mutex::new(None),
        })
    }

    /// Where the tokens come from.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// A token to present now.
    ///
    /// # Errors
    /// The source is unreachable, refuses, or answers no token (one line, never the token).
    pub async fn token(&self) -> Result<String, String> {
        match &self.source {
            Source::Gitlab(v) | Source::Env(v) => env_nonempty(v)
                .map(|t| t.trim().to_owned())
                .ok_or_else(|| format!("${v} is not set (workload identity)")),
            Source::Kubernetes(p) | Source::File(p) => read_token_file(p),
            Source::Github => self.fetched(None).await,
            Source::Spiffe(e) => self.fetched(Some(e)).await,
        }
    }

    /// A token fetched over the network (GitHub's token service, or the Workload API at
    /// `spiffe`), kept until [`REFETCH_MARGIN_SECS`] before its `exp`.
    async fn fetched(&self, spiffe: Option<&str>) -> Result<String, String> {
        let mut g = self.cached.lock().await;
        if let Some((t, exp)) = g.as_ref()
            && exp - REFETCH_MARGIN_SECS > now()
        {
            return Ok(t.clone());
        }
        let t = match spiffe {
            None => self.github().await?,
            Some(e) => self.spiffe(e).await?,
        };
        // Without a readable `exp` the token is not kept.
        *g = jwt_exp(&t).map(|exp| (t.clone(), exp));
        Ok(t)
    }

    /// GitHub Actions: `GET $ACTIONS_ID_TOKEN_REQUEST_URL&audience=…` with the request token.
    async fn github(&self) -> Result<String, String> {
        let (Some(url), Some(bearer)) =
            (env_nonempty(GITHUB_URL_ENV), env_nonempty(GITHUB_TOKEN_ENV))
        else {
            return Err(format!(
                "GitHub Actions OIDC: ${GITHUB_URL_ENV} and ${GITHUB_TOKEN_ENV} must be set \
                 (the job needs `permissions: id-token: write`)"
            ));
        };
        let mut url = reqwest::Url::parse(&url)
            .map_err(|e| format!("GitHub Actions OIDC: ${GITHUB_URL_ENV} is not a URL: {e}"))?;
        url.query_pairs_mut()
            .append_pair("audience", &self.audience);
        let resp = self
            .http
            .get(url)
            .header(reqwest::header::AUTHORIZATION, format!("bearer {bearer}"))
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| {
                format!(
                    "GitHub Actions OIDC: cannot reach the token service: {}",
                    e.without_url()
                )
            })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!(
                "GitHub Actions OIDC: the token service answered {status} (does the job have \
                 `permissions: id-token: write`?)"
            ));
        }
        let body: serde_json::Value = resp.json().await.map_err(|_| {
            "GitHub Actions OIDC: the token service's answer is not JSON".to_owned()
        })?;
        body.get("value")
            .and_then(serde_json::Value::as_str)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| "GitHub Actions OIDC: the answer has no `value`".to_owned())
    }

    /// SPIFFE: `FetchJWTSVID` for our audience at `endpoint`.
    async fn spiffe(&self, endpoint: &str) -> Result<String, String> {
        let c = spiffe::WorkloadApiClient::connect_to(endpoint)
            .await
            .map_err(|e| format!("SPIFFE Workload API {endpoint}: cannot connect: {e}"))?;
        c.fetch_jwt_token([self.audience.as_str()], None)
            .await
            .map_err(|e| format!("SPIFFE Workload API {endpoint}: no JWT-SVID: {e}"))
    }
}

/// A token file's content, trimmed; read at each use (the kubelet rewrites it on rotation).
fn read_token_file(p: &std::path::Path) -> Result<String, String> {
    let t = std::fs::read_to_string(p)
        .map_err(|e| format!("cannot read the identity token file {}: {e}", p.display()))?;
    let t = t.trim();
    if t.is_empty() {
        return Err(format!("the identity token file {} is empty", p.display()));
    }
    Ok(t.to_owned())
}

/// The `exp` of a JWT's payload (unverified: only to know when to fetch again).
fn jwt_exp(jwt: &str) -> Option<i64> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("exp")?.as_i64()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(identity: Option<&str>) -> Settings {
        Settings {
            identity: identity.map(str::to_owned),
            audience: "https://latch.example".into(),
            gitlab_var: "LATCH_TEST_NO_SUCH_VAR".into(),
            k8s_file: "/nonexistent/latch-token".into(),
        }
    }

    #[test]
    fn named_sources_parse_and_unknown_ones_are_refused() {
        assert_eq!(
            settings(Some("file:/run/t")).source().unwrap(),
            Some(Source::File("/run/t".into()))
        );
        assert_eq!(
            settings(Some("env:MY_TOKEN")).source().unwrap(),
            Some(Source::Env("MY_TOKEN".into()))
        );
        assert_eq!(
            settings(Some("kubernetes")).source().unwrap(),
            Some(Source::Kubernetes("/nonexistent/latch-token".into()))
        );
        let e = settings(Some("aws")).source().unwrap_err();
        assert!(e.contains("github, gitlab, kubernetes, spiffe"), "{e}");
        let e = settings(Some("gitlab")).source().unwrap_err();
        assert!(e.contains("$LATCH_TEST_NO_SUCH_VAR is not set"), "{e}");
    }

    #[test]
    fn exp_is_read_from_the_payload() {
        let p = URL_SAFE_NO_PAD.encode(br#"{"exp":1700000000}"#);
        assert_eq!(jwt_exp(&format!("h.{p}.s")), Some(1_700_000_000));
        assert_eq!(jwt_exp("not-a-jwt"), None);
    }
}
