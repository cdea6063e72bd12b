//! The one "is this credential ours" rule ([`latch_scan::is_latch_jwt`], [`Finding::is_ours`]):
//! issuer, `typ: at+jwt` and a `kid` of the broker's JWKS must all match.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unimplemented,
    clippy::too_many_lines,
    reason = "test code: a failed step fails the test, and a scenario reads best in one piece"
)]
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latch_core::credential_format::{self, CredentialKind};
use latch_scan::{Finding, JwtInfo, Scanner, is_latch_jwt, jwks_kids};
use serde_json::json;

const ISSUER: &str = "https://latch.example";

fn info(iss: Option<&str>, typ: Option<&str>, kid: Option<&str>) -> JwtInfo {
    JwtInfo {
        typ: typ.map(str::to_owned),
        kid: kid.map(str::to_owned),
        alg: Some("EdDSA".into()),
        iss: iss.map(str::to_owned),
    }
}

#[test]
fn a_broker_access_token_is_ours() {
    let kids = ["k-old", "k-2026-11"];
    assert!(is_latch_jwt(
        &info(Some(ISSUER), Some("at+jwt"), Some("k-2026-11")),
        ISSUER,
        &kids
    ));
    // `typ` is compared ignoring ASCII case (RFC 7515 §4.1.9 media types).
    assert!(is_latch_jwt(
        &info(Some(ISSUER), Some("AT+JWT"), Some("k-old")),
        ISSUER,
        &kids
    ));
}

#[test]
fn a_known_kid_alone_is_not_enough() {
    // What the CLI used to accept: a third party's token whose key id happens to be ours.
    let kids = vec!["key-1".to_owned()];
    let foreign = info(
        Some("https://token.actions.githubusercontent.com"),
        Some("JWT"),
        Some("key-1"),
    );
    assert!(!is_latch_jwt(&foreign, ISSUER, &kids));
    // Right issuer, wrong type (an ID token or a JWT of another profile).
    assert!(!is_latch_jwt(
        &info(Some(ISSUER), Some("JWT"), Some("key-1")),
        ISSUER,
        &kids
    ));
    assert!(!is_latch_jwt(
        &info(Some(ISSUER), None, Some("key-1")),
        ISSUER,
        &kids
    ));
    // Right type and kid, other issuer (or none, or a prefix of ours).
    for iss in [
        None,
        Some("https://latch.example/"),
        Some("https://latch.exam"),
    ] {
        assert!(!is_latch_jwt(
            &info(iss, Some("at+jwt"), Some("key-1")),
            ISSUER,
            &kids
        ));
    }
}

#[test]
fn a_missing_kid_never_matches_a_key_without_kid() {
    // The server's old rule compared `Option`s, so a kid-less token matched a kid-less JWK.
    let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}]});
    let kids = jwks_kids(&jwks);
    assert!(kids.is_empty());
    assert!(!is_latch_jwt(
        &info(Some(ISSUER), Some("at+jwt"), None),
        ISSUER,
        &kids
    ));
    let none: [&str; 0] = [];
    assert!(!is_latch_jwt(
        &info(Some(ISSUER), Some("at+jwt"), Some("k")),
        ISSUER,
        &none
    ));
}

#[test]
fn an_empty_issuer_matches_nothing() {
    assert!(!is_latch_jwt(
        &info(Some(""), Some("at+jwt"), Some("k")),
        "",
        &["k"]
    ));
}

#[test]
fn jwks_kids_reads_string_kids_only() {
    let jwks = json!({"keys": [{"kid": "a"}, {"kid": 7}, {"x": "y"}, {"kid": "b"}]});
    assert_eq!(jwks_kids(&jwks), vec!["a", "b"]);
    assert!(jwks_kids(&json!({"keys": "nope"})).is_empty());
    assert!(jwks_kids(&json!(null)).is_empty());
}

fn token(header: &str, payload: &str) -> String {
    format!(
        "{}.{}.c2lnbmF0dXJlLW5vdC1yZWFsbHktYS1zaWduYXR1cmUtYnV0LWxvbmctZW5vdWdo",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    )
}

fn scan_one(text: &str) -> Finding {
    let mut found = Scanner::new().scan(text.as_bytes());
    assert_eq!(found.len(), 1, "{found:?}");
    found.remove(0)
}

#[test]
fn findings_apply_the_same_rule() {
    let kids = ["k1"];
    let ours = scan_one(&token(
        r#"{"alg":"EdDSA","typ":"at+jwt","kid":"k1"}"#,
        &format!(r#"{{"iss":"{ISSUER}","sub":"w"}}"#),
    ));
    assert!(ours.is_ours(ISSUER, &kids));
    let theirs = scan_one(&token(
        r#"{"alg":"RS256","typ":"JWT","kid":"k1"}"#,
        r#"{"iss":"https://token.actions.githubusercontent.com"}"#,
    ));
    assert!(!theirs.is_ours(ISSUER, &kids));
    // Latch-format credentials are always ours (checksum-valid), whatever the keys.
    let pg = credential_format::generate(CredentialKind::Postgres)
        .unwrap()
        .to_string();
    let none: [&str; 0] = [];
    assert!(scan_one(&format!("password={pg}\n")).is_ours("", &none));
    // Third-party secrets never are.
    let aws = scan_one("key=AKIAQ3XW7ZJ5LK2MN4PB\n");
    assert!(!aws.is_ours(ISSUER, &kids));
}
