//! A strict SPIFFE ID parser (SPIFFE-ID specification, "The SPIFFE Identity and Verifiable
//! Identity Document", §2).
//!
//! No maintained Rust crate parses SPIFFE IDs without pulling in the Workload API client (gRPC,
//! tonic), so the few rules live here, each from the specification:
//! * scheme `spiffe`, lowercase, followed by `://` (§2);
//! * trust domain: 1 to 255 characters of `a-z`, `0-9`, `.`, `-`, `_` (§2.1): uppercase, a port
//!   (`:`), user info (`@`) or percent-encoding are refused;
//! * path: zero or more `/segment`s; a segment is 1 or more characters of `a-z`, `A-Z`, `0-9`,
//!   `.`, `-`, `_`, and is not `.` or `..` (§2.2): no empty segment, no trailing `/`;
//! * no query or fragment (§2.3): `?` and `#` are outside both character sets;
//! * at most 2048 bytes in all (§2.3).

use std::fmt;

/// Longest SPIFFE ID accepted, in bytes (SPIFFE-ID §2.3).
pub const MAX_SPIFFE_ID_BYTES: usize = 2048;

/// Longest trust domain name accepted, in bytes (SPIFFE-ID §2.1).
pub const MAX_TRUST_DOMAIN_BYTES: usize = 255;

const SCHEME: &str = "spiffe://";

/// A parsed SPIFFE ID: `spiffe://<trust domain><path>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeId {
    trust_domain: String,
    segments: Vec<String>,
}

/// Why a string is not a SPIFFE ID. The message names the rule, never the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpiffeIdError(&'static str);

impl SpiffeId {
    /// Parses `s` strictly (see the module documentation for the rules).
    ///
    /// # Errors
    /// [`SpiffeIdError`] naming the rule `s` breaks.
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        if s.len() > MAX_SPIFFE_ID_BYTES {
            return Err(SpiffeIdError("a spiffe id is at most 2048 bytes"));
        }
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or(SpiffeIdError("a spiffe id starts with `spiffe://`"))?;
        let (td, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let trust_domain = parse_trust_domain(td)?.to_owned();
        let mut segments = Vec::new();
        if !path.is_empty() {
            for seg in path[1..].split('/') {
                segments.push(parse_segment(seg)?.to_owned());
            }
        }
        Ok(Self {
            trust_domain,
            segments,
        })
    }

    /// The trust domain name (`example.org`).
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The path's segments in order (`["ns", "payments", "sa", "api"]`); empty for the trust
    /// domain's own ID.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// The path (`/ns/payments/sa/api`), empty for the trust domain's own ID.
    pub fn path(&self) -> String {
        self.segments.iter().map(|s| format!("/{s}")).collect()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}{}", self.trust_domain, self.path())
    }
}

/// Checks a trust domain name (SPIFFE-ID §2.1); returns it unchanged.
///
/// # Errors
/// [`SpiffeIdError`] for an empty or too long name, or a character outside `a-z0-9.-_`.
pub fn parse_trust_domain(td: &str) -> Result<&str, SpiffeIdError> {
    if td.is_empty() {
        return Err(SpiffeIdError("the trust domain is empty"));
    }
    if td.len() > MAX_TRUST_DOMAIN_BYTES {
        return Err(SpiffeIdError("the trust domain is longer than 255 bytes"));
    }
    if td.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(SpiffeIdError("the trust domain must be lowercase"));
    }
    if td.contains(':') {
        return Err(SpiffeIdError("a spiffe id carries no port"));
    }
    if td.contains('@') {
        return Err(SpiffeIdError("a spiffe id carries no user info"));
    }
    if td.contains(['?', '#']) {
        return Err(SpiffeIdError("a spiffe id carries no query or fragment"));
    }
    if !td
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(SpiffeIdError(
            "the trust domain holds a character outside a-z, 0-9, `.`, `-`, `_`",
        ));
    }
    Ok(td)
}

fn parse_segment(seg: &str) -> Result<&str, SpiffeIdError> {
    match seg {
        "" => Err(SpiffeIdError(
            "the path has an empty segment (`//` or a trailing `/`)",
        )),
        "." | ".." => Err(SpiffeIdError("the path has a `.` or `..` segment")),
        _ if seg.contains(['?', '#']) => {
            Err(SpiffeIdError("a spiffe id carries no query or fragment"))
        }
        _ if !seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')) =>
        {
            Err(SpiffeIdError(
                "a path segment holds a character outside a-z, A-Z, 0-9, `.`, `-`, `_`",
            ))
        }
        _ => Ok(seg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_ids() {
        let id = SpiffeId::parse("spiffe://example.org/ns/payments/sa/api").unwrap();
        assert_eq!(id.trust_domain(), "example.org");
        assert_eq!(id.segments(), ["ns", "payments", "sa", "api"]);
        assert_eq!(id.path(), "/ns/payments/sa/api");
        assert_eq!(id.to_string(), "spiffe://example.org/ns/payments/sa/api");
        let root = SpiffeId::parse("spiffe://a-b_c.9").unwrap();
        assert!(root.segments().is_empty());
        assert!(SpiffeId::parse("spiffe://td/A.b-c_9/...").is_ok());
    }

    #[test]
    fn refuses_what_the_specification_refuses() {
        let long = format!("spiffe://td/{}", "a".repeat(2040));
        for bad in [
            "",
            "spiffe://",
            "SPIFFE://example.org/a",
            "https://example.org/a",
            "spiffe:/example.org/a",
            "spiffe://Example.org/a",
            "spiffe://example.org:8080/a",
            "spiffe://user@example.org/a",
            "spiffe://example.org/a/",
            "spiffe://example.org//a",
            "spiffe://example.org/a/../b",
            "spiffe://example.org/./b",
            "spiffe://example.org/a?x=1",
            "spiffe://example.org/a#f",
            "spiffe://example.org/a%20b",
            "spiffe://exa mple.org/a",
            "spiffe://example.org/caf\u{e9}",
            long.as_str(),
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let td = format!("spiffe://{}", "a".repeat(256));
        assert!(SpiffeId::parse(&td).is_err());
    }
}
