//! Every rejection of workload-identity verification, through HTTP, each with its stable code and
//! an `auth.failed` audit event; plus JWKS rotation without a restart.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latch_core::Clock;
use latch_testkit::{TestIssuer, TestServer};
use serde_json::{Value, json};

async fn try_open(s: &TestServer, token: &str) -> latch_testkit::Resp {
    s.post(
        Some(token),
        "/v1/tasks",
        json!({"purpose": "auth test", "environment": "sandbox"}),
    )
    .await
}

fn claims(s: &TestServer) -> Value {
    TestIssuer::github_claims(s.clock.now_unix_secs(), "9001")
}

async fn assert_rejected(s: &TestServer, token: &str, code: &str) {
    let r = try_open(s, token).await;
    assert_eq!(r.status, 401, "{code}: {}", r.body);
    assert_eq!(r.code(), Some(code), "{}", r.body);
    assert!(r.body["error"]["request_id"].is_string());
    let msg = r.body["error"]["message"].as_str().unwrap();
    if token.len() > 20 {
        assert!(
            !msg.contains(&token[token.len() - 20..]),
            "the token must not be echoed"
        );
    }
    let ev = s.audit("kind=auth.failed").await;
    assert!(
        ev.iter().any(|e| e["outcome"] == code),
        "no auth.failed audit event with outcome {code}"
    );
}

#[tokio::test]
async fn a_valid_test_issuer_token_is_accepted() {
    let s = TestServer::start().await;
    let tok = s.issuer.sign(&claims(&s));
    let r = try_open(&s, &tok).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["owner"]["run_binding"], "gh-run:9001/1");
    assert_eq!(r.body["owner"]["claims"]["repository_id"], "734001");
    s.stop().await;
}

#[tokio::test]
async fn every_rejection_has_its_code() {
    let s = TestServer::start().await;
    let c = claims(&s);
    let body = URL_SAFE_NO_PAD.encode(c.to_string());

    // No token at all.
    let r = s
        .post(
            None,
            "/v1/tasks",
            json!({"purpose": "x", "environment": "sandbox"}),
        )
        .await;
    assert_eq!(r.code(), Some("token_missing"));
    // alg: none (unsigned).
    let none = format!(
        "{}.{body}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT"}).to_string())
    );
    assert_rejected(&s, &none, "alg_not_allowed").await;
    // HMAC, with the public key material as the secret (the classic confusion attack).
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &c,
        &jsonwebtoken::EncodingKey::from_secret(s.issuer.jwk()["x"].as_str().unwrap().as_bytes())
            .unwrap(),
    )
    .unwrap();
    assert_rejected(&s, &hs, "alg_not_allowed").await;
    // Keys supplied in the header.
    for (k, v) in [
        ("jwk", s.issuer.jwk()),
        ("jku", json!("https://attacker.example/jwks.json")),
        ("x5c", json!(["MIIBszCCAVmgAwIBAgIUQ"])),
        ("x5u", json!("https://attacker.example/cert.pem")),
    ] {
        let mut h = json!({"alg": "EdDSA", "kid": s.issuer.kid});
        h[k] = v;
        assert_rejected(&s, &s.issuer.sign_raw(&h, &c), "header_key_forbidden").await;
    }
    // Wrong iss / aud.
    let mut x = c.clone();
    x["iss"] = json!("https://evil.example");
    assert_rejected(&s, &s.issuer.sign(&x), "unknown_issuer").await;
    let mut x = c.clone();
    x["aud"] = json!("https://someone-else.example");
    assert_rejected(&s, &s.issuer.sign(&x), "audience_mismatch").await;
    // Expired beyond the 60 s leeway; within the leeway is fine.
    let now = s.clock.now_unix_secs();
    let mut x = c.clone();
    x["exp"] = json!(now - 61);
    x["iat"] = json!(now - 600);
    x["nbf"] = json!(now - 600);
    assert_rejected(&s, &s.issuer.sign(&x), "token_expired").await;
    x["exp"] = json!(now - 30);
    assert_eq!(
        try_open(&s, &s.issuer.sign(&x)).await.status,
        201,
        "within leeway"
    );
    // Not yet valid.
    let mut x = c.clone();
    x["nbf"] = json!(now + 120);
    assert_rejected(&s, &s.issuer.sign(&x), "token_not_yet_valid").await;
    // Malformed.
    for bad in [
        "abc",
        "a.b",
        "a.b.c.d",
        "!!!.###.$$$",
        &format!("{}.{body}.sig", URL_SAFE_NO_PAD.encode("not json")),
    ] {
        assert_rejected(&s, bad, "token_malformed").await;
    }
    // Oversized: refused before any parsing.
    assert_rejected(&s, &"A".repeat(20_000), "token_too_large").await;
    // Bad signature.
    // Flip a character in the middle of the signature (the last one may carry only padding bits).
    let t = s.issuer.sign(&c);
    let at = t.rfind('.').unwrap() + 20;
    let flipped = if &t[at..at + 1] == "A" { "B" } else { "A" };
    let t = format!("{}{flipped}{}", &t[..at], &t[at + 1..]);
    let r = try_open(&s, &t).await;
    assert_eq!(r.code(), Some("signature_invalid"), "{}", r.body);
    s.stop().await;
}

#[tokio::test]
async fn unknown_kid_refreshes_once_rate_limited_then_rotation_without_restart() {
    let s = TestServer::start().await;
    // Warm the JWKS cache.
    assert_eq!(try_open(&s, &s.issuer.sign(&claims(&s))).await.status, 201);
    let rotated = s.issuer.rotated("test-key-2");
    let tok = rotated.sign(&claims(&s));
    assert_rejected(&s, &tok, "unknown_kid").await;
    // The operator publishes the new key; a refresh right away is rate-limited…
    s.issuer.write_jwks(&[&s.issuer, &rotated]);
    let r = try_open(&s, &tok).await;
    assert_eq!(r.code(), Some("unknown_kid"), "refresh is rate-limited");
    // …and once the interval passed, the rotated key is picked up without a restart.
    s.clock.advance(31);
    let tok = rotated.sign(&claims(&s));
    let r = try_open(&s, &tok).await;
    assert_eq!(r.status, 201, "{}", r.body);
    // The old key keeps working while it is published.
    assert_eq!(try_open(&s, &s.issuer.sign(&claims(&s))).await.status, 201);
    s.stop().await;
}

#[tokio::test]
async fn a_cached_verification_never_outlives_the_token() {
    let s = TestServer::start().await;
    let c = claims(&s); // exp = now + 600
    let tok = s.issuer.sign(&c);
    assert_eq!(try_open(&s, &tok).await.status, 201);
    assert_eq!(
        try_open(&s, &tok).await.status,
        201,
        "served from the verification cache"
    );
    s.clock.advance(600 + 61);
    let r = try_open(&s, &tok).await;
    assert_eq!(r.code(), Some("token_expired"), "{}", r.body);
    s.stop().await;
}
