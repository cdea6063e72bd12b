//! Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document, as the MCP
//! authorization specification 2025-11-25 uses them): an MCP client's `client_id` is an https
//! URL, and the document found there names its redirect URIs.
//!
//! # Security (SSRF)
//! The URL comes from whoever opens the authorization endpoint, so fetching it must not reach
//! what the broker can reach and they cannot:
//! * `https` only; plain `http` only to a loopback address, and only while the broker itself
//!   runs on loopback `http` (development; `allow_loopback`);
//! * no user info, no fragment, a path other than `/`; at most 512 characters;
//! * the host is resolved once, **every** address it resolves to is checked (no private,
//!   loopback unless allowed, link-local, shared, unspecified, multicast, broadcast,
//!   documentation or IPv4-mapped such addresses), and the connection goes to the checked
//!   address (reqwest's `resolve`), so a second DNS answer cannot move it (DNS rebinding);
//! * no redirects, a 5 s deadline, at most 5 KB read;
//! * the document's `client_id` must equal the URL; answers are cached 5 minutes, at most 256.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;

/// Largest document read (bytes).
const MAX_DOCUMENT: usize = 5 * 1024;
/// How long a fetched document is reused (seconds).
const CACHE_SECS: i64 = 300;
/// Most documents cached.
const CACHE_MAX: usize = 256;

/// What Latch uses of a client's metadata document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMetadata {
    /// The URL (= `client_id`).
    pub client_id: String,
    /// `client_name`, if given.
    pub client_name: Option<String>,
    /// `redirect_uris`.
    pub redirect_uris: Vec<String>,
}

#[derive(Deserialize)]
struct Document {
    client_id: String,
    #[serde(default)]
    client_name: Option<String>,
    redirect_uris: Vec<String>,
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
}

/// Fetches and caches client metadata documents under the rules above.
#[derive(Debug)]
pub struct ClientMetadataFetcher {
    allow_loopback: bool,
    cache: Mutex<HashMap<String, (i64, ClientMetadata)>>,
}

/// Whether an address may be fetched: public unicast only (loopback when `allow_loopback`).
pub fn address_allowed(ip: IpAddr, allow_loopback: bool) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                return allow_loopback;
            }
            !(v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (18..20).contains(&o[1]))
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return address_allowed(IpAddr::V4(v4), allow_loopback);
            }
            if v6.is_loopback() {
                return allow_loopback;
            }
            let s = v6.segments();
            // Transition ranges reach IPv4 (and so private IPv4) through a gateway: NAT64
            // 64:ff9b::/96 and 64:ff9b:1::/48, 6to4 2002::/16, Teredo 2001::/32,
            // IPv4-compatible ::/96; and site-local fec0::/10, discard-only 100::/64.
            let transition = (s[0] == 0x64 && s[1] == 0xff9b)
                || s[0] == 0x2002
                || (s[0] == 0x2001 && s[1] == 0)
                || s[..6].iter().all(|x| *x == 0)
                || (s[0] & 0xffc0) == 0xfec0
                || (s[0] == 0x100 && s[1..4].iter().all(|x| *x == 0));
            !(v6.is_unspecified()
                || v6.is_multicast()
                || transition
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || s[0] == 0x2001 && s[1] == 0x0db8)
        }
    }
}

impl ClientMetadataFetcher {
    /// A fetcher; `allow_loopback` permits `http` and loopback addresses (development only).
    pub fn new(allow_loopback: bool) -> Self {
        Self {
            allow_loopback,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `client_id` is meant as a metadata document URL (it has a URL scheme).
    pub fn is_url(client_id: &str) -> bool {
        client_id.starts_with("https://") || client_id.starts_with("http://")
    }

    /// The checked URL and the address to connect to.
    ///
    /// # Errors
    /// A lowercase sentence saying which rule the URL breaks.
    pub async fn check_target(&self, raw: &str) -> Result<(url::Url, SocketAddr), String> {
        if raw.len() > 512 {
            return Err("the client metadata url is longer than 512 characters".into());
        }
        let u = url::Url::parse(raw).map_err(|_| "the client id is not a valid url".to_owned())?;
        let host = u
            .host_str()
            .ok_or("the client metadata url has no host")?
            .to_owned();
        match u.scheme() {
            "https" => {}
            "http" if self.allow_loopback => {}
            _ => return Err("the client metadata url must use https".into()),
        }
        if !u.username().is_empty() || u.password().is_some() || u.fragment().is_some() {
            return Err("the client metadata url may have no user info and no fragment".into());
        }
        if u.path() == "/" || u.path().is_empty() {
            return Err("the client metadata url needs a path".into());
        }
        let port = u.port_or_known_default().unwrap_or(443);
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let addrs: Vec<SocketAddr> = tokio::time::timeout(
            Duration::from_secs(3),
            tokio::net::lookup_host((bare.as_str(), port)),
        )
        .await
        .map_err(|_| "the client metadata host did not resolve in time".to_owned())?
        .map_err(|_| "the client metadata host does not resolve".to_owned())?
        .collect();
        let Some(first) = addrs.first().copied() else {
            return Err("the client metadata host does not resolve".into());
        };
        if addrs
            .iter()
            .any(|a| !address_allowed(a.ip(), self.allow_loopback))
        {
            return Err(
                "the client metadata url points at a private, loopback or reserved address".into(),
            );
        }
        if u.scheme() == "http" && !first.ip().is_loopback() {
            return Err("the client metadata url must use https".into());
        }
        Ok((u, first))
    }

    /// The metadata document at `client_id` (from the cache while fresh).
    ///
    /// # Errors
    /// A lowercase, secret-free sentence: which rule failed, or why the document is unusable.
    pub async fn fetch(&self, client_id: &str, now: i64) -> Result<ClientMetadata, String> {
        if let Some((at, m)) = self.lock().get(client_id)
            && now - at < CACHE_SECS
        {
            return Ok(m.clone());
        }
        let (u, addr) = self.check_target(client_id).await?;
        let host = u.host_str().unwrap_or_default().to_owned();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(3))
            .resolve(&host, addr)
            .no_proxy()
            .build()
            .map_err(|_| "cannot build an http client".to_owned())?;
        let mut resp = http
            .get(u.as_str())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|_| "the client metadata document could not be fetched".to_owned())?;
        if !resp.status().is_success() {
            return Err(format!(
                "the client metadata document answered {}",
                resp.status().as_u16()
            ));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|_| "the client metadata document could not be read".to_owned())?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_DOCUMENT {
                return Err("the client metadata document is larger than 5 kb".into());
            }
        }
        let doc: Document = latch_core::json::parse(&body)
            .ok()
            .and_then(|v| serde_json::from_value(v).ok())
            .ok_or("the client metadata document is not the expected json")?;
        if doc.client_id != client_id {
            return Err("the client metadata document names another client_id".into());
        }
        if doc
            .token_endpoint_auth_method
            .as_deref()
            .is_some_and(|m| m != "none")
        {
            return Err(
                "only public clients (token_endpoint_auth_method none) are supported".into(),
            );
        }
        check_redirect_uris(&doc.redirect_uris)?;
        let m = ClientMetadata {
            client_id: doc.client_id,
            client_name: doc
                .client_name
                .filter(|n| !n.is_empty())
                .map(|n| n.chars().take(128).collect()),
            redirect_uris: doc.redirect_uris,
        };
        let mut cache = self.lock();
        cache.retain(|_, (at, _)| now - *at < CACHE_SECS);
        if cache.len() < CACHE_MAX {
            cache.insert(client_id.to_owned(), (now, m.clone()));
        }
        Ok(m)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (i64, ClientMetadata)>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Checks redirect URIs of a client (registration or metadata document): 1–10 absolute URIs
/// of at most 512 characters, `https`, or `http` on a loopback host (RFC 8252 §7.3), without
/// fragment or user info.
///
/// # Errors
/// A lowercase sentence naming the rule broken.
pub fn check_redirect_uris(uris: &[String]) -> Result<(), String> {
    if uris.is_empty() || uris.len() > 10 {
        return Err("a client needs 1 to 10 redirect_uris".into());
    }
    for raw in uris {
        let u = url::Url::parse(raw).map_err(|_| "a redirect uri is not a url".to_owned())?;
        let loopback = match u.host() {
            Some(url::Host::Ipv4(a)) => a.is_loopback(),
            Some(url::Host::Ipv6(a)) => a.is_loopback(),
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            None => false,
        };
        let scheme_ok = u.scheme() == "https" || (u.scheme() == "http" && loopback);
        if raw.len() > 512
            || !scheme_ok
            || u.fragment().is_some()
            || !u.username().is_empty()
            || u.password().is_some()
        {
            return Err(
                "redirect uris must be https, or http on a loopback host, without fragment".into(),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_reserved_addresses_are_refused() {
        for a in [
            "10.0.0.1",
            "172.16.3.4",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "100.64.0.1",
            "127.0.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
            "::",
            "64:ff9b::a00:1",
            "2002:a00:1::1",
            "2001:0:a00:1::1",
            "::a00:1",
            "fec0::1",
            "100::1",
        ] {
            assert!(!address_allowed(a.parse().unwrap(), false), "{a}");
        }
        assert!(address_allowed("93.184.215.14".parse().unwrap(), false));
        assert!(address_allowed("2606:4700::1111".parse().unwrap(), false));
        assert!(address_allowed("127.0.0.1".parse().unwrap(), true));
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_unless_allowed() {
        let strict = ClientMetadataFetcher::new(false);
        let e = strict
            .check_target("https://localhost/client.json")
            .await
            .unwrap_err();
        assert!(e.contains("private, loopback"), "{e}");
        for bad in [
            "http://example.com/c.json",
            "https://10.0.0.1/c.json",
            "https://[fe80::1]/c.json",
            "https://u:p@example.com/c.json",
            "https://example.com/",
        ] {
            assert!(strict.check_target(bad).await.is_err(), "{bad}");
        }
        let dev = ClientMetadataFetcher::new(true);
        assert!(dev.check_target("http://localhost:9/c.json").await.is_ok());
        assert!(
            dev.check_target("https://10.0.0.1/c.json").await.is_err(),
            "private addresses stay refused in development"
        );
    }
}
