//! `[proxy]` in `latch.toml` and the one grammar of proxy allow rules (`METHOD:PATH`), used by
//! the broker (to check `[[proxy.rules]]` at load) and by `latch proxy` (for the broker's rules
//! and its own `--allow` flags).

use serde::Deserialize;

/// `[proxy]` in `latch.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Per-resource allow rules.
    #[serde(default)]
    pub rules: Vec<ProxyResourceRules>,
}

/// `[[proxy.rules]]`: what `latch proxy` may forward for one resource.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyResourceRules {
    /// Resource id.
    pub resource: String,
    /// `METHOD:PATH` entries, each a [`ProxyRule`] (checked at load).
    pub allow: Vec<String>,
}

impl ProxyConfig {
    /// Checks every rule's syntax ([`ProxyRule::parse`]).
    ///
    /// # Errors
    /// A message naming the bad entry.
    pub fn validate(&self) -> Result<(), String> {
        for r in &self.rules {
            for a in &r.allow {
                if ProxyRule::parse(a).is_err() {
                    return Err(format!(
                        "[[proxy.rules]] for `{}`: `{a}` is not METHOD:/path",
                        r.resource
                    ));
                }
            }
        }
        Ok(())
    }
}

/// One allow rule of `latch proxy`: `METHOD:PATH`.
///
/// `METHOD` is `*` (any) or an HTTP method name (ASCII letters, compared upper-cased, as
/// request methods are sent); `PATH` starts with `/` and matches exactly, or, ending in `*`, any
/// path starting with what precedes the `*`. Rules are matched against the
/// [`normalize_path`]-ed request path, never the raw one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRule {
    /// Upper-cased method; `None` for `*`.
    method: Option<String>,
    /// Path pattern (starts with `/`; a trailing `*` matches any rest).
    path: String,
}

impl ProxyRule {
    /// Parses `METHOD:PATH`.
    ///
    /// # Errors
    /// A short message (without the rule itself; callers add where it came from): no `:`, a
    /// method that is neither `*` nor letters, or a path not starting with `/`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (m, p) = s
            .split_once(':')
            .ok_or_else(|| "expected METHOD:PATH".to_owned())?;
        let method = if m == "*" {
            None
        } else if !m.is_empty() && m.bytes().all(|b| b.is_ascii_alphabetic()) {
            Some(m.to_ascii_uppercase())
        } else {
            return Err("the method must be * or an HTTP method name".into());
        };
        if !p.starts_with('/') {
            return Err("the path must start with /".into());
        }
        Ok(Self {
            method,
            path: p.to_owned(),
        })
    }

    /// Whether a request with `method` (as sent, e.g. `GET`) for `path` (already
    /// [`normalize_path`]-ed) is allowed by this rule.
    pub fn matches(&self, method: &str, path: &str) -> bool {
        if self.method.as_deref().is_some_and(|m| m != method) {
            return false;
        }
        match self.path.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => path == self.path,
        }
    }
}

/// The request path with `%2e`/`%2E` decoded and `.`/`..` segments resolved, as the upstream
/// would see it. `None` (refused) for a path not starting with `/`, an encoded `/` or `\`, a
/// `\`, or `..` above the root.
///
/// # Security
/// [`ProxyRule::matches`] must only see this form: `/v1/orders/../admin` is `/v1/admin`.
pub fn normalize_path(raw: &str) -> Option<String> {
    let lower = raw.to_ascii_lowercase();
    if raw.contains('\\') || lower.contains("%2f") || lower.contains("%5c") {
        return None;
    }
    let rest = raw.strip_prefix('/')?;
    let decoded = rest.replace("%2e", ".").replace("%2E", ".");
    let mut out: Vec<&str> = Vec::new();
    let segs: Vec<&str> = decoded.split('/').collect();
    let mut trailing = false;
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        match *seg {
            "." => trailing = last,
            ".." => {
                out.pop()?;
                trailing = last;
            }
            s => {
                out.push(s);
                trailing = false;
            }
        }
    }
    let mut path = format!("/{}", out.join("/"));
    if trailing && !path.ends_with('/') {
        path.push('/');
    }
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_rules() {
        let r = ProxyRule::parse("GET:/v1/orders/*").unwrap();
        assert!(r.matches("GET", "/v1/orders/1"));
        assert!(!r.matches("POST", "/v1/orders/1"));
        assert!(!r.matches("GET", "/v1/admin"));
        let any = ProxyRule::parse("*:/health").unwrap();
        assert!(any.matches("DELETE", "/health"));
        assert!(!any.matches("DELETE", "/health/x"));
        assert!(ProxyRule::parse("GET/x").is_err());
        assert!(ProxyRule::parse("GET:x").is_err());
        assert!(ProxyRule::parse(":/x").is_err());
        assert!(ProxyRule::parse("G-T:/x").is_err());
        assert!(ProxyRule::parse("get:/x").unwrap().matches("GET", "/x"));
    }

    #[test]
    fn paths_are_normalised_before_the_rules() {
        let n = |s: &str| normalize_path(s);
        assert_eq!(n("/v1/orders/../admin").as_deref(), Some("/v1/admin"));
        assert_eq!(
            n("/v1/orders/%2E%2E/%2e%2e/secret").as_deref(),
            Some("/secret")
        );
        assert_eq!(n("/v1/./orders/.").as_deref(), Some("/v1/orders/"));
        assert_eq!(n("/v1/orders/1").as_deref(), Some("/v1/orders/1"));
        assert_eq!(n("/").as_deref(), Some("/"));
        assert_eq!(n("/v1/orders/"), Some("/v1/orders/".into()));
        assert_eq!(n("/../x"), None);
        assert_eq!(n("/v1/orders%2f..%2fadmin"), None);
        assert_eq!(n("/v1/orders/..%5cadmin"), None);
        assert_eq!(n("/v1\\x"), None);
        assert_eq!(n("v1/x"), None);
        let r = ProxyRule::parse("GET:/v1/orders/*").unwrap();
        assert!(!r.matches("GET", &n("/v1/orders/../admin").unwrap()));
    }

    #[test]
    fn config_validation_uses_the_same_grammar() {
        let cfg = |allow: &str| ProxyConfig {
            rules: vec![ProxyResourceRules {
                resource: "r".into(),
                allow: vec![allow.into()],
            }],
        };
        assert!(cfg("GET:/v1/*").validate().is_ok());
        assert!(cfg("*:/").validate().is_ok());
        let e = cfg("GET/v1").validate().unwrap_err();
        assert_eq!(e, "[[proxy.rules]] for `r`: `GET/v1` is not METHOD:/path");
    }
}
