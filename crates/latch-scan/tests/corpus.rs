//! Planted secrets in realistic transcripts and logs are found (with the right kind and
//! location); a corpus of harmless look-alikes yields nothing; redaction removes every secret.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unimplemented,
    clippy::too_many_lines,
    reason = "test code: a failed step fails the test, and a scenario reads best in one piece"
)]
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use latch_core::credential_format::{self, CredentialKind};
use latch_scan::{Family, Scanner, redact};
use proptest::prelude::*;

/// Deterministic pseudo-random characters from `alphabet` (high entropy, reproducible).
fn chars(alphabet: &[u8], n: usize, seed: u64) -> String {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            alphabet[(x % alphabet.len() as u64) as usize] as char
        })
        .collect()
}
const ALNUM: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const UPPER32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const HEX: &[u8] = b"0123456789abcdef";

fn jwt(iss: &str) -> String {
    let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA","typ":"at+jwt","kid":"k-2026-11"}"#);
    let p = URL_SAFE_NO_PAD.encode(
        format!(r#"{{"iss":"{iss}","sub":"repo:acme/api","aud":"orders-db","exp":1893456000}}"#)
            .as_bytes(),
    );
    format!("{h}.{p}.{}", chars(ALNUM, 86, 99))
}

struct Planted {
    kind: &'static str,
    value: String,
}

fn planted() -> Vec<Planted> {
    let p = |kind, value: String| Planted { kind, value };
    vec![
        p(
            "latch_postgres_password",
            credential_format::generate(CredentialKind::Postgres)
                .unwrap()
                .to_string(),
        ),
        p(
            "latch_redis_password",
            credential_format::generate(CredentialKind::Redis)
                .unwrap()
                .to_string(),
        ),
        p("jwt", jwt("https://latch.example")),
        p("aws_access_token", format!("AKIA{}", chars(UPPER32, 16, 1))),
        p("github_pat", format!("ghp_{}", chars(ALNUM, 36, 2))),
        p(
            "github_fine_grained_pat",
            format!("github_pat_{}", chars(ALNUM, 82, 3)),
        ),
        p(
            "slack_bot_token",
            format!("xoxb-1234567890-1234567890123-{}", chars(ALNUM, 24, 4)),
        ),
        p(
            "stripe_access_token",
            format!("sk_live_{}", chars(ALNUM, 24, 5)),
        ),
        p("gcp_api_key", format!("AIza{}", chars(ALNUM, 35, 6))),
        p("gitlab_pat", format!("glpat-{}", chars(ALNUM, 20, 7))),
        p("npm_access_token", format!("npm_{}", chars(ALNUM, 36, 8))),
        p(
            "anthropic_api_key",
            format!("sk-ant-api03-{}AA", chars(ALNUM, 93, 9)),
        ),
        p(
            "private_key",
            format!(
                "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n{}\n-----END OPENSSH PRIVATE KEY-----",
                chars(ALNUM, 70, 10),
                chars(ALNUM, 70, 11)
            ),
        ),
    ]
}

/// A transcript / CI log with each planted value in a typical place.
fn transcript(secrets: &[Planted]) -> String {
    let mut s = String::from(
        "2026-11-29T16:00:01Z INFO agent started task=task_0190a1b2 run=4411\n\
         user: the nightly export fails, can you look?\n\
         assistant: I'll check the database connection first.\n",
    );
    for (i, p) in secrets.iter().enumerate() {
        match i % 4 {
            0 => s.push_str(&format!("tool_call bash: export SECRET_{i}={}\n", p.value)),
            1 => s.push_str(&format!(
                "tool_result: {{\"stdout\": \"token: '{}'\", \"exit\": 0}}\n",
                p.value
            )),
            2 => s.push_str(&format!("assistant: I used {} to connect.\n", p.value)),
            _ => s.push_str(&format!("+    password = \"{}\"\n", p.value)),
        }
        s.push_str("2026-11-29T16:00:02Z DEBUG step=retry attempt=2 latency_ms=120\n");
    }
    s.push_str("postgres://app:Xk9vQ2mL7pR4tW8z@db.internal:5432/orders?sslmode=require\n");
    s
}

#[test]
fn planted_secrets_of_each_kind_are_found_with_location() {
    let secrets = planted();
    let text = transcript(&secrets);
    let findings = Scanner::new().scan(text.as_bytes());
    for p in &secrets {
        let start = text.find(&p.value).unwrap();
        let f = findings
            .iter()
            .find(|f| f.start == start)
            .unwrap_or_else(|| panic!("{} not found; got {findings:?}", p.kind));
        assert_eq!(f.kind, p.kind);
        assert_eq!(f.secret(text.as_bytes()), p.value.as_bytes());
        let line = text[..start].matches('\n').count() + 1;
        assert_eq!(f.line, line, "{}", p.kind);
        let col = start - text[..start].rfind('\n').map_or(0, |i| i + 1) + 1;
        assert_eq!(f.column, col);
    }
    let conn = findings
        .iter()
        .find(|f| f.kind == "connection_string_password")
        .expect("connection string");
    assert_eq!(conn.secret(text.as_bytes()), b"Xk9vQ2mL7pR4tW8z");
    assert_eq!(findings.len(), secrets.len() + 1, "{findings:?}");
    let jwt = findings.iter().find(|f| f.family == Family::Jwt).unwrap();
    let info = jwt.jwt.as_ref().unwrap();
    assert_eq!(info.typ.as_deref(), Some("at+jwt"));
    assert_eq!(info.iss.as_deref(), Some("https://latch.example"));
    assert_eq!(info.kid.as_deref(), Some("k-2026-11"));
    // Findings serialise without the secret.
    let json = serde_json::to_string(&findings).unwrap();
    for p in &secrets {
        assert!(!json.contains(&p.value));
    }
}

#[test]
fn redaction_masks_every_finding() {
    let secrets = planted();
    let text = transcript(&secrets);
    let s = Scanner::new();
    let findings = s.scan(text.as_bytes());
    let out = String::from_utf8(redact(text.as_bytes(), &findings)).unwrap();
    for p in &secrets {
        assert!(!out.contains(&p.value), "{} survived", p.kind);
        assert!(out.contains(&format!("[redacted:{}]", p.kind)));
    }
    assert!(!out.contains("Xk9vQ2mL7pR4tW8z"));
    assert!(out.contains("user: the nightly export fails"));
    assert!(
        s.scan(out.as_bytes()).is_empty(),
        "redacted output is clean"
    );
}

/// Harmless values that look like secrets: hashes, UUIDs, base64 blobs, ids, placeholders.
fn lookalikes() -> Vec<String> {
    let mut v = vec![
        // git / sha hashes
        chars(HEX, 40, 20),
        format!("sha256:{}", chars(HEX, 64, 21)),
        format!("commit {}", chars(HEX, 40, 22)),
        format!(
            "integrity sha512-{}==",
            STANDARD.encode(chars(ALNUM, 64, 23))
        ),
        // UUIDs and Latch ids
        "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
        "request_id=rq_0190a1b2c3d47e5f8a9b0c1d2e3f4a5b lease=lease_0190a1b2c3d47e5f".into(),
        // base64 blobs of binary and text
        STANDARD.encode((0u8..=255).collect::<Vec<u8>>()),
        STANDARD.encode(b"this is an ordinary sentence, base64 encoded for transport"),
        URL_SAFE_NO_PAD.encode(chars(ALNUM, 120, 24)),
        // look-alikes of Latch credentials: wrong checksum, wrong kind, too short
        format!("ltcpg_{}", chars(ALNUM, 49, 25)),
        format!("ltczz_{}", chars(ALNUM, 49, 26)),
        format!("ltcrd_{}", chars(ALNUM, 30, 27)),
        // eyJ-looking but not JSON
        format!(
            "eyJ{}.eyJ{}.{}",
            chars(ALNUM, 30, 28),
            chars(ALNUM, 30, 29),
            chars(ALNUM, 40, 30)
        ),
        // documented examples and placeholders
        "AKIAIOSFODNN7EXAMPLE".into(),
        "postgres://app@db.internal:5432/orders".into(),
        "postgres://app:${PGPASSWORD}@db.internal:5432/orders".into(),
        "redis://:****@cache:6379".into(),
        "https://example.com/path?query=1#frag".into(),
        "ghp_short".into(),
        "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----".into(),
        "sk_test_short".into(),
        "version 1.2.3-rc.4+build.5 at 2026-11-29T16:00:00Z".into(),
    ];
    for i in 0..20 {
        v.push(chars(HEX, 32, 100 + i));
        v.push(STANDARD.encode(chars(ALNUM, 48, 200 + i)));
    }
    v
}

#[test]
fn lookalike_corpus_yields_no_findings() {
    let s = Scanner::new();
    let mut corpus = String::new();
    for (i, l) in lookalikes().into_iter().enumerate() {
        corpus.push_str(&format!("2026-11-29T16:00:{:02}Z INFO value={l}\n", i % 60));
        let f = s.scan(l.as_bytes());
        assert!(f.is_empty(), "false positive on {l:?}: {f:?}");
    }
    assert!(s.scan(corpus.as_bytes()).is_empty());
}

proptest! {
    /// Random hex strings, UUIDs and base64 blobs never produce findings.
    #[test]
    fn random_hashes_uuids_and_blobs_are_clean(bytes in proptest::collection::vec(any::<u8>(), 16..96)) {
        let s = Scanner::new();
        let hexed: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let uuid = format!("{}-{}-{}-{}-{}", &hexed[0..8], &hexed[8..12], &hexed[12..16], &hexed[16..20], &hexed[20..32]);
        for text in [hexed.clone(), uuid, STANDARD.encode(&bytes), URL_SAFE_NO_PAD.encode(&bytes)] {
            prop_assert!(s.scan(text.as_bytes()).is_empty(), "{}", text);
        }
    }

    /// Redaction removes every finding and keeps the rest of the text byte for byte.
    #[test]
    fn redaction_keeps_surrounding_text(prefix in "[a-z ]{0,40}", suffix in "[a-z ]{0,40}") {
        let secret = credential_format::generate(CredentialKind::Postgres).unwrap();
        let text = format!("{prefix} {} {suffix}", *secret);
        let s = Scanner::new();
        let f = s.scan(text.as_bytes());
        prop_assert_eq!(f.len(), 1);
        let out = String::from_utf8(redact(text.as_bytes(), &f)).unwrap();
        prop_assert_eq!(out, format!("{prefix} [redacted:latch_postgres_password] {suffix}"));
    }
}

/// Latch's own credentials are found in ordinary contexts with no word boundary around them.
#[test]
fn latch_credentials_found_without_word_boundaries() {
    let s = Scanner::new();
    let t = jwt("https://latch.example");
    let sk = credential_format::generate(CredentialKind::Secret)
        .unwrap()
        .to_string();
    let pg = credential_format::generate(CredentialKind::Postgres)
        .unwrap()
        .to_string();
    let cases = [
        (format!(r#"{{"msg":"token:\n{pg}\nend"}}"#), pg.clone()),
        (format!("\x1b[32m{pg}\x1b[0m"), pg.clone()),
        (format!("\x1b[1;31m{t}\x1b[0m"), t.clone()),
        (format!("GET /x?access_token={t}&page=2"), t.clone()),
        (format!("[{t}, {t}]"), t.clone()),
        (
            format!("f({t}) | {t}. <{t}> {{\"a\":{t}}} x:{t}:y"),
            t.clone(),
        ),
        (format!("[link](https://x.example/cb?token={t})"), t.clone()),
        (format!("MY_SECRET_{sk}"), sk.clone()),
        (format!("password%3D{sk}%26x"), sk.clone()),
        (format!("id42{sk}"), sk.clone()),
        (format!("\\n{sk}"), sk.clone()),
    ];
    for (input, secret) in cases {
        let f = s.scan(input.as_bytes());
        assert!(
            f.iter()
                .any(|f| f.is_latch_candidate() && f.secret(input.as_bytes()) == secret.as_bytes()),
            "missed in {input:?}: {f:?}"
        );
    }
    // A longer alphanumeric run is not a credential.
    assert!(s.scan(format!("{sk}X").as_bytes()).is_empty());
}
