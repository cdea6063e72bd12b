//! The format of the opaque secrets Latch generates: a recognisable prefix and a checksum.
//!
//! ```text
//! ltc<kind>_<body><check>
//!   ltc     "latch credential"
//!   <kind>  two lowercase letters naming what the secret is (`pg`: PostgreSQL password,
//!           `rd`: Redis ACL password, `sk`: other opaque secret)
//!   _       separator
//!   <body>  43 characters of base62 [0-9A-Za-z] from the OS random generator (~256 bits)
//!   <check> 6 characters of base62: CRC-32 (IEEE) of `ltc<kind>_<body>`, zero-padded
//! ```
//!
//! Like GitHub's `ghp_…` tokens, the prefix makes a leaked value easy to spot and the checksum
//! lets a scanner discard look-alikes offline (a random 55-character string passes with
//! probability 2⁻³²) before it asks the broker whether the value belongs to a lease. The whole
//! value is `[0-9A-Za-z_]`, so it double-click selects and needs no quoting in SQL literals,
//! Redis ACL rules, URLs or shells.
//!
//! JWT access tokens keep the JWT format (resource servers verify them); scanners recognise
//! those by structure instead (see `latch-scan`).
//!
//! # Security
//! The checksum is not a MAC: it only detects typos and look-alikes. Whether a value is a live
//! Latch credential is decided by its keyed HMAC against the store.

use zeroize::Zeroizing;

/// The common prefix of every Latch opaque credential.
pub const PREFIX: &str = "ltc";
/// Characters of the random body.
pub const BODY_LEN: usize = 43;
/// Characters of the checksum.
pub const CHECK_LEN: usize = 6;
/// Total length of a credential (`ltc` + 2-letter kind + `_` + body + checksum).
pub const TOTAL_LEN: usize = PREFIX.len() + 2 + 1 + BODY_LEN + CHECK_LEN;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// What an opaque Latch credential is, encoded in its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialKind {
    /// A PostgreSQL role password (`ltcpg_`).
    Postgres,
    /// A Redis ACL user password (`ltcrd_`).
    Redis,
    /// Any other opaque secret Latch generates (`ltcsk_`).
    Secret,
    /// An access token Latch's authorization server issued to an MCP client (`ltcoa_`).
    OAuthAccess,
    /// A refresh token Latch's authorization server issued to an MCP client (`ltcor_`).
    OAuthRefresh,
    /// An authorization code of Latch's authorization server (`ltcoc_`).
    OAuthCode,
}

impl CredentialKind {
    /// Every kind.
    pub const ALL: [CredentialKind; 6] = [
        Self::Postgres,
        Self::Redis,
        Self::Secret,
        Self::OAuthAccess,
        Self::OAuthRefresh,
        Self::OAuthCode,
    ];

    /// The two-letter code after `ltc`.
    pub fn code(self) -> &'static str {
        match self {
            Self::Postgres => "pg",
            Self::Redis => "rd",
            Self::Secret => "sk",
            Self::OAuthAccess => "oa",
            Self::OAuthRefresh => "or",
            Self::OAuthCode => "oc",
        }
    }

    /// Stable snake_case name used in scan findings (`latch_postgres_password`, …).
    pub fn finding_kind(self) -> &'static str {
        match self {
            Self::Postgres => "latch_postgres_password",
            Self::Redis => "latch_redis_password",
            Self::Secret => "latch_secret",
            Self::OAuthAccess => "latch_oauth_access_token",
            Self::OAuthRefresh => "latch_oauth_refresh_token",
            Self::OAuthCode => "latch_oauth_code",
        }
    }

    /// The kind for a two-letter code.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }
}

/// CRC-32 (IEEE) of `data` as exactly [`CHECK_LEN`] base62 characters.
fn checksum(data: &[u8]) -> [u8; CHECK_LEN] {
    let mut n = crc32fast::hash(data);
    let mut out = [b'0'; CHECK_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// A fresh credential of `kind` (see the module documentation for the format).
///
/// # Errors
/// `Err(())` if the system random generator fails.
///
/// # Security
/// The body is 43 base62 characters from `aws-lc-rs`'s OS-backed generator, drawn by rejection
/// sampling (no modulo bias): about 256 bits. The result is zeroized on drop.
#[expect(
    clippy::result_unit_err,
    reason = "the only failure is the OS random source, which has nothing to report"
)]
pub fn generate(kind: CredentialKind) -> Result<Zeroizing<String>, ()> {
    let mut out = Zeroizing::new(String::with_capacity(TOTAL_LEN));
    out.push_str(PREFIX);
    out.push_str(kind.code());
    out.push('_');
    let mut buf = Zeroizing::new([0u8; 64]);
    while out.len() < PREFIX.len() + 3 + BODY_LEN {
        aws_lc_rs::rand::fill(&mut buf[..]).map_err(|_| ())?;
        for &b in buf.iter() {
            // 248 = 4 × 62: bytes at or above it would bias the low characters.
            if b < 248 && out.len() < PREFIX.len() + 3 + BODY_LEN {
                out.push(BASE62[(b % 62) as usize] as char);
            }
        }
    }
    let check = checksum(out.as_bytes());
    out.push_str(std::str::from_utf8(&check).map_err(|_| ())?);
    Ok(out)
}

/// The kind of `value` if it is a well-formed Latch credential with a valid checksum.
pub fn parse(value: &str) -> Option<CredentialKind> {
    let b = value.as_bytes();
    if b.len() != TOTAL_LEN || !value.starts_with(PREFIX) || b[PREFIX.len() + 2] != b'_' {
        return None;
    }
    let kind = CredentialKind::from_code(value.get(PREFIX.len()..PREFIX.len() + 2)?)?;
    let tail = &b[PREFIX.len() + 3..];
    if !tail.iter().all(u8::is_ascii_alphanumeric) {
        return None;
    }
    let (head, check) = b.split_at(TOTAL_LEN - CHECK_LEN);
    (checksum(head) == *check).then_some(kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_values_parse_and_differ() {
        for kind in CredentialKind::ALL {
            let a = generate(kind).unwrap();
            let b = generate(kind).unwrap();
            assert_eq!(a.len(), TOTAL_LEN);
            assert!(a.starts_with(&format!("ltc{}_", kind.code())));
            assert_eq!(parse(&a), Some(kind));
            assert_ne!(*a, *b);
            assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_'));
        }
    }

    #[test]
    fn rejects_wrong_shapes() {
        let good = generate(CredentialKind::Postgres).unwrap();
        assert_eq!(parse(&good[..TOTAL_LEN - 1]), None);
        assert_eq!(parse(&good.replacen("ltcpg", "ltcxx", 1)), None);
        assert_eq!(
            parse(&good.replacen("ltcpg", "ltcrd", 1)),
            None,
            "kind is checksummed"
        );
        assert_eq!(parse(""), None);
    }

    proptest! {
        /// Changing any single character of a credential breaks its checksum or shape.
        #[test]
        fn any_single_change_is_detected(pos in 0usize..TOTAL_LEN, c in "[0-9A-Za-z_]") {
            let good = generate(CredentialKind::Redis).unwrap();
            let mut bytes = good.as_bytes().to_vec();
            let c = c.as_bytes()[0];
            prop_assume!(bytes[pos] != c);
            bytes[pos] = c;
            let changed = String::from_utf8(bytes).unwrap();
            prop_assert_eq!(parse(&changed), None);
        }

        /// Random strings of the right shape almost never pass (2^-32 per try).
        #[test]
        fn random_lookalikes_fail(body in "[0-9A-Za-z]{49}") {
            prop_assert_eq!(parse(&format!("ltcpg_{body}")), None);
        }
    }
}
