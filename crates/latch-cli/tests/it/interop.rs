//! A minted token verified by an independent implementation: Python's PyJWT against the JWKS
//! endpoint.

use latch_testkit::{TestServer, tool_available};

const VERIFY: &str = r#"
import json, sys, urllib.request
import jwt
base, token, aud = sys.argv[1], sys.argv[2], sys.argv[3]
jwks = urllib.request.urlopen(base + "/.well-known/jwks.json").read().decode()
keys = jwt.PyJWKSet.from_json(jwks)
kid = jwt.get_unverified_header(token)["kid"]
key = next(k for k in keys.keys if k.key_id == kid)
claims = jwt.decode(token, key=key, algorithms=["EdDSA", "ES256"], audience=aud, issuer=base)
print(json.dumps(claims))
"#;

#[tokio::test]
async fn pyjwt_verifies_a_minted_token_against_the_jwks() {
    if !tool_available("python3", &["-c", "import jwt, cryptography"]) {
        return;
    }
    let s = TestServer::start().await;
    let agent = s.agent("1").await;
    let t = s.open_task(&agent, "sandbox", 600).await;
    let g = s
        .request(&agent, &t, "ci-cache", &["read", "write"], None)
        .await;
    let tok = g.body["credential"]["value"].as_str().unwrap();
    // Async: the server runs on this test's runtime and must answer Python's JWKS fetch.
    let out = tokio::process::Command::new("python3")
        .args(["-c", VERIFY, &s.base, tok, "https://ci-cache.acme.example"])
        .output()
        .await
        .expect("python3");
    assert!(
        out.status.success(),
        "PyJWT refused the token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let claims: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(claims["jti"], g.body["lease"]["id"]);
    assert_eq!(claims["task_id"], t.as_str());
    assert_eq!(claims["scope"], "read write");
    assert_eq!(claims["exp"], g.body["lease"]["expires_at_unix_secs"]);
    // A tampered token is refused by PyJWT too.
    let mut bad = tok.to_owned();
    let mid = bad.find('.').unwrap() + 5;
    bad.replace_range(
        mid..mid + 1,
        if &bad[mid..mid + 1] == "A" { "B" } else { "A" },
    );
    let out = tokio::process::Command::new("python3")
        .args(["-c", VERIFY, &s.base, &bad, "https://ci-cache.acme.example"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success(), "PyJWT must refuse a tampered token");
    s.stop().await;
}
