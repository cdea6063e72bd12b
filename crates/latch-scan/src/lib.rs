//! Secret scanner for prompts, transcripts, CI logs and diffs.
//!
//! Finds two families of secrets in arbitrary bytes (text or not):
//! - **Latch credentials**: opaque secrets in Latch's format (`ltcpg_…`, `ltcrd_…`, `ltcsk_…`,
//!   valid CRC-32 checksum; see [`latch_core::credential_format`]) and JWTs, whose header and
//!   payload are decoded (never the signature) so a broker can tell its own access tokens (its
//!   `iss`, `typ: at+jwt`, a `kid` of its JWKS: [`is_latch_jwt`], the one rule the CLI and the
//!   broker share). Whether a candidate belongs to a lease is decided
//!   by the broker from the value's keyed HMAC, not here.
//! - **Third-party secrets**: private keys, cloud keys and tokens of the big providers, using a
//!   vendored subset of the gitleaks rule set (`rules/gitleaks.toml`, MIT), plus one Latch rule
//!   for connection strings with an inline password (gitleaks has none).
//!
//! A [`Finding`] holds offsets, line, column and kind, never the secret; [`Finding::secret`]
//! borrows it from the scanned input when a caller (the broker) needs to fingerprint it.
//!
//! # Security
//! Nothing in this crate logs, stores or formats a secret: `Debug` of every public type is safe
//! to log. [`redact`] replaces each finding with `[redacted:<kind>]`.

use std::collections::BTreeMap;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latch_core::credential_format;
use regex::bytes::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

/// The vendored gitleaks rules (see `rules/gitleaks.toml` for provenance and licence).
pub const GITLEAKS_RULES: &str = include_str!("../rules/gitleaks.toml");

/// Rule id of Latch's own opaque credentials.
pub const LATCH_RULE: &str = "latch-credential";
/// Rule id of connection strings with an inline password (not in gitleaks).
pub const CONNECTION_STRING_RULE: &str = "connection-string-password";

/// How much of a JWT's header and payload is decoded (bytes of base64url per segment).
const JWT_SEGMENT_MAX: usize = 8 * 1024;

/// Errors building a scanner from a rule file.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// The rule file is not valid TOML or lacks required fields.
    #[error("invalid rule file: {0}")]
    Parse(String),
    /// A rule's regular expression does not compile.
    #[error("rule {rule}: invalid regex: {message}")]
    Regex {
        /// Rule id.
        rule: String,
        /// Compiler message.
        message: String,
    },
}

/// What kind of secret a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// An opaque credential in Latch's format (checksum verified).
    Latch,
    /// A JWT (maybe one of the broker's access tokens: see [`JwtInfo`]).
    Jwt,
    /// A third-party secret matched by a rule.
    ThirdParty,
}

/// Non-secret parts of a JWT found by a scan (from its header and payload).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtInfo {
    /// Header `typ` (`at+jwt` for RFC 9068 access tokens).
    pub typ: Option<String>,
    /// Header `kid`.
    pub kid: Option<String>,
    /// Header `alg`.
    pub alg: Option<String>,
    /// Payload `iss`.
    pub iss: Option<String>,
}

/// The RFC 9068 `typ` of the broker's access tokens (compared ignoring ASCII case).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Whether a JWT found by a scan is one of this broker's access tokens: the one "is this
/// credential ours" rule of the scan CLI and `POST /v1/scan`.
///
/// All three must hold, each read from the token's unverified header and payload:
/// - payload `iss` is exactly `issuer` (the broker's issuer URL, as in its RFC 8414 metadata);
/// - header `typ` is `at+jwt` (RFC 9068), ASCII case ignored;
/// - header `kid` is present and is one of `kids` (the `kid`s of the broker's JWKS).
///
/// A token without a `kid` is never ours, even if a key of the JWKS has no `kid`. An empty
/// `issuer` matches nothing.
///
/// # Security
/// This is a routing decision, not authentication: nothing is verified. It decides which JWTs
/// the CLI may send to the broker (a third party's token, a CI's OIDC token, never leaves the
/// machine: a `kid` alone is not enough, since key ids such as `key-1` are not unique across
/// issuers) and which the broker labels `latch_access_token`. Whether a value belongs to a lease
/// is decided by the broker from its keyed HMAC.
pub fn is_latch_jwt<S: AsRef<str>>(info: &JwtInfo, issuer: &str, kids: &[S]) -> bool {
    if issuer.is_empty() || info.iss.as_deref() != Some(issuer) {
        return false;
    }
    if !info
        .typ
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case(ACCESS_TOKEN_TYP))
    {
        return false;
    }
    info.kid
        .as_deref()
        .is_some_and(|kid| kids.iter().any(|k| k.as_ref() == kid))
}

/// The `kid`s of a JWK Set (RFC 7517 `{"keys": [{"kid": …}, …]}`); keys without a string
/// `kid` are left out. Anything else than a JWK Set gives no `kid`.
pub fn jwks_kids(jwks: &serde_json::Value) -> Vec<String> {
    jwks.get("keys")
        .and_then(serde_json::Value::as_array)
        .map(|keys| {
            keys.iter()
                .filter_map(|k| k.get("kid").and_then(serde_json::Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// One secret found in the input. Contains no secret material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Family.
    pub family: Family,
    /// Stable snake_case kind: `latch_postgres_password`, `latch_redis_password`,
    /// `latch_secret`, `jwt`, or the gitleaks rule id with `-` as `_` (`aws_access_token`, …).
    pub kind: String,
    /// Rule id (`latch-credential`, `jwt`, a gitleaks id, `connection-string-password`).
    pub rule: String,
    /// Byte offset of the secret's first byte in the input.
    pub start: usize,
    /// Byte offset one past the secret's last byte.
    pub end: usize,
    /// 1-based line of `start`.
    pub line: usize,
    /// 1-based column (bytes) of `start`.
    pub column: usize,
    /// For JWTs: the decoded, non-secret header and payload fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtInfo>,
}

impl Finding {
    /// The secret itself, borrowed from the scanned `input`.
    ///
    /// # Security
    /// Only for fingerprinting (keyed HMAC) and revocation; never log or return it.
    pub fn secret<'a>(&self, input: &'a [u8]) -> &'a [u8] {
        input.get(self.start..self.end).unwrap_or_default()
    }

    /// Whether the broker should check this finding against its leases (Latch-format
    /// credentials and JWTs).
    pub fn is_latch_candidate(&self) -> bool {
        matches!(self.family, Family::Latch | Family::Jwt)
    }

    /// Whether this finding is one of the broker's own credentials as far as a scanner can
    /// tell without asking it: any Latch-format credential (checksum-valid), or a JWT that
    /// passes [`is_latch_jwt`] for `issuer` and `kids`. Third-party secrets never are.
    pub fn is_ours<S: AsRef<str>>(&self, issuer: &str, kids: &[S]) -> bool {
        match (self.family, &self.jwt) {
            (Family::Latch, _) => true,
            (Family::Jwt, Some(info)) => is_latch_jwt(info, issuer, kids),
            _ => false,
        }
    }
}

#[derive(Debug, Deserialize)]
struct RuleFile {
    rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
struct RawRule {
    id: String,
    regex: String,
    #[serde(default)]
    entropy: Option<f64>,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    allowlists: Vec<RawAllow>,
}

#[derive(Debug, Deserialize)]
struct RawAllow {
    #[serde(default)]
    regexes: Vec<String>,
}

struct Rule {
    id: String,
    kind: String,
    family: Family,
    regex: Regex,
    entropy: Option<f64>,
    allow: Vec<Regex>,
}

/// A compiled scanner. Build once ([`Scanner::new`]), share freely (`Send + Sync`).
pub struct Scanner {
    rules: Vec<Rule>,
    /// Keyword automaton: pattern index → rules it enables.
    keywords: AhoCorasick,
    keyword_rules: Vec<Vec<usize>>,
    /// Rules without keywords always run.
    always: Vec<usize>,
}

impl std::fmt::Debug for Scanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scanner")
            .field("rules", &self.rules.len())
            .finish()
    }
}

fn compile(id: &str, pattern: &str) -> Result<Regex, RuleError> {
    // RE2 semantics: ASCII classes and word boundaries (also much faster on large inputs).
    RegexBuilder::new(pattern)
        .unicode(false)
        .size_limit(64 << 20)
        .build()
        .map_err(|e| RuleError::Regex {
            rule: id.to_owned(),
            message: e.to_string(),
        })
}

impl Scanner {
    /// The built-in scanner: Latch credentials, JWTs, the vendored gitleaks rules and the
    /// connection-string rule.
    ///
    /// # Panics
    /// Never in practice: the built-in rules are compiled by the crate's tests.
    #[expect(
        clippy::expect_used,
        reason = "the vendored rules are constants, compiled by this crate's tests"
    )]
    pub fn new() -> Self {
        Self::with_rules(GITLEAKS_RULES).expect("built-in rules compile")
    }

    /// A scanner with the Latch rules plus the gitleaks-format rules in `toml`.
    ///
    /// # Errors
    /// [`RuleError`] for an unparsable file or a regex that does not compile.
    pub fn with_rules(toml_text: &str) -> Result<Self, RuleError> {
        let file: RuleFile =
            toml::from_str(toml_text).map_err(|e| RuleError::Parse(e.message().to_owned()))?;
        let mut rules = vec![Rule {
            id: LATCH_RULE.into(),
            kind: String::new(),
            family: Family::Latch,
            // No word boundary before (`MY_SECRET_ltcsk_…`, `\\nltc…`, `%3Dltc…`, ANSI codes);
            // the byte after is checked in `run_rule`, the checksum removes look-alikes.
            regex: compile(LATCH_RULE, r"ltc(?:pg|rd|sk)_[0-9A-Za-z]{49}")?,
            entropy: None,
            allow: vec![],
        }];
        let mut keywords: Vec<(String, usize)> = vec![("ltc".into(), 0)];
        // JWTs (the broker's access tokens among them) without gitleaks' terminator: a token
        // followed by `,` `)` `&` `.` `|` `}` `]` `:` `<` is still found. Look-alikes are
        // removed by decoding (JSON header with `alg`) and, for Latch's, by the broker's JWKS.
        rules.push(Rule {
            id: "jwt".into(),
            kind: "jwt".into(),
            family: Family::Jwt,
            regex: compile(
                "jwt",
                r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*",
            )?,
            entropy: None,
            allow: vec![],
        });
        keywords.push(("eyj".into(), rules.len() - 1));
        rules.push(Rule {
            id: CONNECTION_STRING_RULE.into(),
            kind: "connection_string_password".into(),
            family: Family::ThirdParty,
            regex: compile(
                CONNECTION_STRING_RULE,
                r#"(?i)\b(?:postgres(?:ql)?|mysql|mariadb|mongodb(?:\+srv)?|rediss?|amqps?|mssql|sqlserver|clickhouse)://[^\s:/@'"`]*:([^\s@'"`/]{3,200})@[^\s'"`]+"#,
            )?,
            entropy: None,
            allow: vec![compile(
                CONNECTION_STRING_RULE,
                r"^(?:\[redacted:.*|\*+|x+|\$.*|\{.*|<.*|%.*|password|passwd|pass|secret|changeme)$",
            )?],
        });
        keywords.extend(["://"].into_iter().map(|k| (k.to_owned(), rules.len() - 1)));
        for r in file.rules {
            if r.id == "jwt" {
                continue; // replaced by the rule above
            }
            let idx = rules.len();
            let family = if r.id == "jwt" {
                Family::Jwt
            } else {
                Family::ThirdParty
            };
            let mut allow = Vec::new();
            for a in &r.allowlists {
                for p in &a.regexes {
                    allow.push(compile(&r.id, p)?);
                }
            }
            rules.push(Rule {
                kind: r.id.replace('-', "_"),
                regex: compile(&r.id, &r.regex)?,
                id: r.id,
                family,
                entropy: r.entropy,
                allow,
            });
            for k in r.keywords {
                keywords.push((k, idx));
            }
        }
        let mut by_word: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (k, idx) in keywords {
            by_word.entry(k.to_ascii_lowercase()).or_default().push(idx);
        }
        let with_kw: std::collections::BTreeSet<usize> =
            by_word.values().flatten().copied().collect();
        let always = (0..rules.len()).filter(|i| !with_kw.contains(i)).collect();
        let words: Vec<&String> = by_word.keys().collect();
        let ac = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(&words)
            .map_err(|e| RuleError::Parse(e.to_string()))?;
        Ok(Self {
            rules,
            keywords: ac,
            keyword_rules: by_word.into_values().collect(),
            always,
        })
    }

    /// Number of rules (Latch's and the vendored ones).
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Every secret in `input`, in input order, without overlaps (a Latch credential wins over
    /// a third-party rule matching the same bytes, then the longer match).
    pub fn scan(&self, input: &[u8]) -> Vec<Finding> {
        let mut active = vec![false; self.rules.len()];
        for i in &self.always {
            active[*i] = true;
        }
        let mut remaining = self.keyword_rules.len();
        let mut seen = vec![false; self.keyword_rules.len()];
        for m in self.keywords.find_overlapping_iter(input) {
            let p = m.pattern().as_usize();
            if !seen[p] {
                seen[p] = true;
                for r in &self.keyword_rules[p] {
                    active[*r] = true;
                }
                remaining -= 1;
                if remaining == 0 {
                    break;
                }
            }
        }
        let mut found = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            if active[i] {
                self.run_rule(rule, input, &mut found);
            }
        }
        // Latch first, then longest, for the same start; then drop overlaps.
        found.sort_by(|a: &Finding, b: &Finding| {
            a.start
                .cmp(&b.start)
                .then((b.family == Family::Latch).cmp(&(a.family == Family::Latch)))
                .then((b.end - b.start).cmp(&(a.end - a.start)))
        });
        let mut out: Vec<Finding> = Vec::with_capacity(found.len());
        for f in found {
            match out.last_mut() {
                Some(last) if f.start < last.end => {
                    if f.family == Family::Latch && last.family != Family::Latch {
                        *last = f;
                    }
                }
                _ => out.push(f),
            }
        }
        locate(input, &mut out);
        out
    }

    fn run_rule(&self, rule: &Rule, input: &[u8], found: &mut Vec<Finding>) {
        for caps in rule.regex.captures_iter(input) {
            let Some(m) = caps.iter().skip(1).flatten().next().or_else(|| caps.get(0)) else {
                continue;
            };
            let secret = m.as_bytes();
            if secret.is_empty() {
                continue;
            }
            if let Some(min) = rule.entropy
                && shannon_entropy(secret) < min
            {
                continue;
            }
            if rule.allow.iter().any(|a| a.is_match(secret)) {
                continue;
            }
            let (kind, jwt) = match rule.family {
                Family::Latch => {
                    if input.get(m.end()).is_some_and(u8::is_ascii_alphanumeric) {
                        continue; // part of a longer token
                    }
                    let Some(k) = std::str::from_utf8(secret)
                        .ok()
                        .and_then(credential_format::parse)
                    else {
                        continue; // bad checksum: a look-alike
                    };
                    (k.finding_kind().to_owned(), None)
                }
                Family::Jwt => match decode_jwt(secret) {
                    Some(info) => ("jwt".to_owned(), Some(info)),
                    None => continue, // not JSON inside: a look-alike
                },
                Family::ThirdParty => (rule.kind.clone(), None),
            };
            found.push(Finding {
                family: rule.family,
                kind,
                rule: rule.id.clone(),
                start: m.start(),
                end: m.end(),
                line: 0,
                column: 0,
                jwt,
            });
        }
    }
}

impl Default for Scanner {
    fn default() -> Self {
        Self::new()
    }
}

/// Fills `line` and `column` of sorted findings in one pass over `input`.
fn locate(input: &[u8], findings: &mut [Finding]) {
    let mut line = 1;
    let mut line_start = 0;
    let mut pos = 0;
    for f in findings.iter_mut() {
        for nl in memchr::memchr_iter(b'\n', &input[pos..f.start]) {
            line += 1;
            line_start = pos + nl + 1;
        }
        pos = f.start;
        f.line = line;
        f.column = f.start - line_start + 1;
    }
}

/// Shannon entropy of `data` in bits per byte (as gitleaks computes it).
pub fn shannon_entropy(data: &[u8]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    let mut counts = [0usize; 256];
    for b in data {
        counts[*b as usize] += 1;
    }
    let n = data.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = *c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// Decodes a JWT's header and payload (not its signature); `None` unless both are JSON
/// objects and the header names an `alg`.
fn decode_jwt(token: &[u8]) -> Option<JwtInfo> {
    let mut parts = token.split(|b| *b == b'.');
    let header = decode_segment(parts.next()?)?;
    let payload = decode_segment(parts.next()?)?;
    let header = header.as_object()?;
    let s = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(str::to_owned);
    let alg = s(header.get("alg"))?;
    Some(JwtInfo {
        typ: s(header.get("typ")),
        kid: s(header.get("kid")),
        alg: Some(alg),
        iss: s(payload.as_object()?.get("iss")),
    })
}

fn decode_segment(seg: &[u8]) -> Option<serde_json::Value> {
    if seg.len() > JWT_SEGMENT_MAX {
        return None;
    }
    let trimmed: Vec<u8> = seg.iter().copied().filter(|b| *b != b'=').collect();
    let bytes = URL_SAFE_NO_PAD.decode(trimmed).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// `input` with every finding's bytes replaced by `[redacted:<kind>]`.
///
/// `findings` must come from [`Scanner::scan`] on the same input (sorted, not overlapping).
pub fn redact(input: &[u8], findings: &[Finding]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut pos = 0;
    for f in findings {
        if f.start < pos || f.end > input.len() {
            continue;
        }
        out.extend_from_slice(&input[pos..f.start]);
        out.extend_from_slice(format!("[redacted:{}]", f.kind).as_bytes());
        pos = f.end;
    }
    out.extend_from_slice(&input[pos..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_rules_compile() {
        let s = Scanner::new();
        assert!(s.rule_count() > 20);
    }

    #[test]
    fn entropy_matches_known_values() {
        assert_eq!(shannon_entropy(b"aaaa"), 0.0);
        assert!((shannon_entropy(b"ab") - 1.0).abs() < 1e-9);
    }
}
