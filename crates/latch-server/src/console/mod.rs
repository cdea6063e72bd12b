//! The approval console's server-side parts that are not HTTP handlers: its settings
//! ([`ConsoleState`]), the sealed login state of a sign-in in progress ([`LoginState`],
//! [`LoginSealer`]), the one-use record of login states, and the OpenID Connect relying party
//! ([`oidc::RelyingParty`]). The handlers are in `crate::http::console`.
//!
//! # Security
//! * A sign-in in progress keeps its `state`, `nonce` and PKCE verifier in a cookie sealed with
//!   AES-256-GCM under a key derived from the master key ([`LoginSealer`]): the browser cannot
//!   read or change it, another browser does not have it, and it expires with `login_ttl`.
//!   Each login state is accepted once ([`ConsoleState::first_use`]: the shared use-once store
//!   with replicas, else this process's memory), so a replayed callback is refused.
//! * Sessions are server-side, in the store, keyed by a keyed HMAC of their id (see
//!   `latch_core::broker` `console`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_lc_rs::aead::{AES_256_GCM, Aad, RandomizedNonceKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latch_core::ports::UseOnce;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub mod cimd;
pub mod oidc;

/// Cookie holding the session id.
pub const SESSION_COOKIE: &str = "latch_console";
/// Cookie holding the sealed login state.
pub const LOGIN_COOKIE: &str = "latch_console_login";
/// Longest a login-state cookie may be (bytes of its value).
const MAX_LOGIN_COOKIE: usize = 3072;
/// Most login states remembered as used in memory.
const MAX_USED: usize = 100_000;

/// What the console needs besides the broker.
pub struct ConsoleState {
    /// The broker's public URL (no trailing `/`); pages link under `{base}/console/`.
    pub base_url: String,
    /// Whether cookies carry `Secure` (false only for loopback `http` public URLs).
    pub secure_cookies: bool,
    /// Session lifetime (seconds).
    pub session_ttl_secs: i64,
    /// Login-state lifetime (seconds).
    pub login_ttl_secs: i64,
    /// How long a sign-in's groups count for votes and operator actions (seconds; see
    /// `Broker::console_authority`). Default 600.
    pub authority_max_age_secs: i64,
    /// The OpenID Provider sign-in, when an issuer is configured.
    pub oidc: Option<oidc::RelyingParty>,
    /// Whether the development sign-in (`POST /console/login/dev`) is offered.
    pub dev_login: bool,
    /// Seals login states.
    pub sealer: LoginSealer,
    /// Shared use-once store (replicas), when the store has one.
    pub once: Option<Arc<dyn UseOnce>>,
    /// MCP clients' Client ID Metadata Documents (the authorization endpoint's clients).
    /// Loopback `http` documents are allowed only while the broker itself runs on loopback
    /// `http` (development).
    pub client_metadata: cimd::ClientMetadataFetcher,
    used: Mutex<HashMap<String, i64>>,
}

impl std::fmt::Debug for ConsoleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleState")
            .field("base_url", &self.base_url)
            .field("secure_cookies", &self.secure_cookies)
            .field("oidc", &self.oidc.is_some())
            .field("dev_login", &self.dev_login)
            .finish_non_exhaustive()
    }
}

/// Whether a public URL is plain `http` on a loopback host (then cookies cannot be `Secure`:
/// browsers would drop them).
pub fn is_loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split('/').next().unwrap_or_default();
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl ConsoleState {
    /// The console's settings. `login_key` is the master key's console login key.
    ///
    /// # Errors
    /// When the key is not 32 bytes.
    pub fn new(
        base_url: &str,
        session_ttl_secs: i64,
        login_ttl_secs: i64,
        oidc: Option<oidc::RelyingParty>,
        dev_login: bool,
        login_key: &[u8],
        once: Option<Arc<dyn UseOnce>>,
    ) -> Result<Self, String> {
        Ok(Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            secure_cookies: !is_loopback_http(base_url),
            session_ttl_secs,
            login_ttl_secs,
            authority_max_age_secs: 600.min(session_ttl_secs),
            oidc,
            dev_login,
            sealer: LoginSealer::new(login_key)?,
            once,
            client_metadata: cimd::ClientMetadataFetcher::new(is_loopback_http(base_url)),
            used: Mutex::new(HashMap::new()),
        })
    }

    /// These settings with votes and operator actions trusting a sign-in's groups for
    /// `secs` seconds.
    #[must_use]
    pub fn with_authority_max_age(mut self, secs: i64) -> Self {
        self.authority_max_age_secs = secs;
        self
    }

    /// Records the login state `id` as used until `expires_at`: `Ok(true)` the first time,
    /// `Ok(false)` for a replay.
    ///
    /// # Errors
    /// The shared use-once store is unreachable.
    pub async fn first_use(&self, id: &str, expires_at: i64, now: i64) -> Result<bool, String> {
        let key = format!("console-login:{}", sha256_hex(id));
        if let Some(once) = &self.once {
            return once
                .first_use(&key, expires_at, now)
                .await
                .map_err(|e| e.to_string());
        }
        let mut used = self
            .used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        used.retain(|_, until| *until >= now);
        if used.contains_key(&key) {
            return Ok(false);
        }
        if used.len() >= MAX_USED {
            return Err("too many sign-ins in progress".into());
        }
        used.insert(key, expires_at);
        Ok(true)
    }
}

fn sha256_hex(s: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        s.as_bytes(),
    ))
}

/// A sign-in in progress: what the callback must find again. Sealed into the login cookie.
#[derive(Serialize, Deserialize)]
pub struct LoginState {
    /// Random id of this login (also the dev sign-in form's anti-forgery value).
    pub id: String,
    /// The OAuth `state` sent to the provider.
    pub state: String,
    /// The OpenID Connect `nonce` the ID token must carry.
    pub nonce: String,
    /// The PKCE code verifier (RFC 7636).
    pub pkce_verifier: String,
    /// When it stops being accepted (Unix seconds).
    pub expires_at: i64,
    /// The console page to return to once signed in (a path under `/console/`, checked by
    /// [`safe_return_path`]).
    #[serde(default)]
    pub return_to: Option<String>,
}

impl std::fmt::Debug for LoginState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoginState(..)")
    }
}

/// Seals and opens [`LoginState`]s (AES-256-GCM, random nonces, base64url).
pub struct LoginSealer {
    key: RandomizedNonceKey,
}

/// Additional authenticated data of sealed login states.
const LOGIN_AAD: &[u8] = b"latch console login state v1";

impl LoginSealer {
    /// A sealer under `key` (32 bytes).
    ///
    /// # Errors
    /// When the key is not 32 bytes.
    pub fn new(key: &[u8]) -> Result<Self, String> {
        RandomizedNonceKey::new(&AES_256_GCM, key)
            .map(|key| Self { key })
            .map_err(|_| "the console login key must be 32 bytes".to_owned())
    }

    /// `state` sealed for a cookie value.
    ///
    /// # Errors
    /// Serialization or sealing failed (a broken random generator).
    pub fn seal(&self, state: &LoginState) -> Result<String, String> {
        let mut data = Zeroizing::new(serde_json::to_vec(state).map_err(|e| e.to_string())?);
        let nonce = self
            .key
            .seal_in_place_append_tag(Aad::from(LOGIN_AAD), &mut *data)
            .map_err(|_| "sealing the login state failed".to_owned())?;
        let mut out = nonce.as_ref().to_vec();
        out.extend_from_slice(&data);
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    /// The login state sealed in `value`; `None` when it is not one this broker sealed (or
    /// was changed), or is too large.
    pub fn open(&self, value: &str) -> Option<LoginState> {
        if value.len() > MAX_LOGIN_COOKIE {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(value).ok()?;
        if bytes.len() < 12 {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(12);
        let nonce = aws_lc_rs::aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut data = Zeroizing::new(sealed.to_vec());
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(LOGIN_AAD), &mut data)
            .ok()?;
        serde_json::from_slice(plain).ok()
    }
}

/// `path` when it is a safe place to send a browser back to after sign-in: a path under
/// `/console/` on this broker (not `//…`, no backslash, no scheme, no control or non-ASCII
/// characters, at most 1024 bytes: an authorization request of an MCP client fits). Anything else is `None`, and the browser goes to the
/// console's front page: a sign-in never redirects off the console (no open redirect).
pub fn safe_return_path(path: &str) -> Option<String> {
    let ok = path.len() <= 1024
        && path.starts_with("/console/")
        && !path.contains("//")
        && !path.contains("/../")
        && !path.ends_with("/..")
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_.~%?=&+".contains(&b));
    ok.then(|| path.to_owned())
}

/// `n` random bytes as base64url (session ids, login ids, nonces).
///
/// # Errors
/// The system random generator failed.
pub fn random_token(n: usize) -> Result<String, String> {
    let mut buf = Zeroizing::new(vec![0u8; n]);
    aws_lc_rs::rand::fill(&mut buf).map_err(|_| "the random generator failed".to_owned())?;
    Ok(URL_SAFE_NO_PAD.encode(&*buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_http_is_recognised() {
        assert!(is_loopback_http("http://127.0.0.1:8080"));
        assert!(is_loopback_http("http://localhost:1/x"));
        assert!(is_loopback_http("http://[::1]:80"));
        assert!(!is_loopback_http("https://127.0.0.1"));
        assert!(!is_loopback_http("http://latch.example"));
        assert!(!is_loopback_http("http://10.0.0.1"));
    }

    #[test]
    fn only_console_paths_are_returned_to() {
        assert!(safe_return_path("/console/requests/req_1").is_some());
        assert!(safe_return_path("/console/operators?workload=a%23b").is_some());
        for bad in [
            "https://evil.example/console/",
            "//evil.example/console/",
            "/console//evil",
            "/console/../v1/admin",
            "/console/\\evil",
            "/v1/tasks",
            "/console/x\r\nLocation: y",
        ] {
            assert!(safe_return_path(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn sealed_login_state_opens_only_unchanged() {
        let s = LoginSealer::new(&[7u8; 32]).unwrap();
        let st = LoginState {
            id: "i".into(),
            state: "s".into(),
            nonce: "n".into(),
            pkce_verifier: "v".into(),
            expires_at: 9,
            return_to: None,
        };
        let sealed = s.seal(&st).unwrap();
        assert_eq!(s.open(&sealed).unwrap().state, "s");
        let mut bytes = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(s.open(&URL_SAFE_NO_PAD.encode(bytes)).is_none());
        assert!(
            LoginSealer::new(&[8u8; 32])
                .unwrap()
                .open(&sealed)
                .is_none()
        );
    }
}
