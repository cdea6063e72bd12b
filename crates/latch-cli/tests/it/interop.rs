//! Tokens of every issuer Latch signs for, verified by an independent implementation: Python's
//! PyJWT, with the keys Latch publishes, found through its authorization server metadata
//! (`jwks_uri` for access tokens and audit checkpoints, `latch_dev_jwks_uri` for the
//! development issuer's workload and human tokens), all fetched over HTTP.

use latch_core::Clock;
use latch_testkit::{TestOptions, TestServer, tool_available};
use serde_json::{Value, json};

/// Input: the base URL and a JSON list of jobs `{name, token, set: "access"|"dev", iss, aud,
/// valid}`. For each: verifies the token with the key of its `kid` in its set (signature, `iss`,
/// `aud` when given, `exp`), and that no key of the other set verifies it. Prints one JSON
/// document: the two URLs and, per job, the header and claims or the error.
const VERIFY: &str = r#"
import json, sys, urllib.request
import jwt
base, jobs = sys.argv[1], json.loads(sys.argv[2])
get = lambda url: urllib.request.urlopen(url).read().decode()
meta = json.loads(get(base + "/.well-known/oauth-authorization-server"))
sets = {"access": jwt.PyJWKSet.from_json(get(meta["jwks_uri"])),
        "dev": jwt.PyJWKSet.from_json(get(meta["latch_dev_jwks_uri"]))}
ALGS = ["EdDSA", "ES256"]
out = {"jwks_uri": meta["jwks_uri"], "latch_dev_jwks_uri": meta["latch_dev_jwks_uri"], "results": {}}
for job in jobs:
    token, r = job["token"], {}
    r["header"] = jwt.get_unverified_header(token)
    key = next((k for k in sets[job["set"]].keys if k.key_id == r["header"].get("kid")), None)
    try:
        if key is None:
            raise jwt.InvalidKeyError("no published key has this kid")
        required = ["iss", "iat"] + (["aud", "exp"] if job["aud"] else [])
        r["claims"] = jwt.decode(token, key=key, algorithms=ALGS, audience=job["aud"],
                                 issuer=job["iss"], options={"require": required})
    except jwt.PyJWTError as e:
        r["error"] = type(e).__name__
    other = "dev" if job["set"] == "access" else "access"
    r["other_set_refused"] = True
    for k in sets[other].keys:
        try:
            jwt.decode(token, key=k, algorithms=ALGS,
                       options={"verify_aud": False, "verify_iss": False, "verify_exp": False})
            r["other_set_refused"] = False
        except jwt.PyJWTError:
            pass
    out["results"][job["name"]] = r
print(json.dumps(out))
"#;

/// One token for PyJWT: from the `access` or the `dev` key set, with its issuer and audience.
fn job(name: &str, token: &str, set: &str, iss: &str, aud: Option<&str>) -> Value {
    json!({"name": name, "token": token, "set": set, "iss": iss, "aud": aud})
}

/// A token exchange (RFC 8693) for `ci-cache`; the answer.
async fn exchange(s: &TestServer, subject: &str) -> Value {
    let details = json!([{"type": "latch_access", "resource": "ci-cache", "actions": ["read"],
        "environment": "sandbox", "purpose": "pyjwt interop"}])
    .to_string();
    let r = s
        .http
        .post(format!("{}/oauth/token", s.base))
        .form(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", subject),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
            ("authorization_details", &details),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// Mints one token of each issuer on a server signing with `alg`, has PyJWT verify them all,
/// and checks what it saw.
async fn pyjwt_verifies_every_issuer(alg: &'static str) {
    if !tool_available("python3", &["-c", "import jwt, cryptography"]) {
        return;
    }
    let s = TestServer::start_with(TestOptions {
        replace: vec![(
            "signing_alg = \"EdDSA\"".into(),
            format!("signing_alg = \"{alg}\""),
        )],
        ..Default::default()
    })
    .await;
    let aud = "https://ci-cache.acme.example";
    let agent = s.agent("1").await;
    let alice = s.human("alice", &["sre"]).await;
    let t = s.open_task(&agent, "sandbox", 600).await;
    let g = s
        .request(&agent, &t, "ci-cache", &["read", "write"], None)
        .await;
    let access = g.body["credential"]["value"].as_str().unwrap().to_owned();
    let x = exchange(&s, &agent).await;
    let exchanged = x["access_token"].as_str().unwrap().to_owned();
    let admin = s.human("auditor", &["latch-admins"]).await;
    let cp = s
        .post(Some(&admin), "/v1/audit/checkpoints", json!({}))
        .await;
    assert_eq!(cp.status, 200, "{}", cp.body);
    // A tampered access token (one payload character changed).
    let mut tampered = access.clone();
    let mid = tampered.find('.').unwrap() + 5;
    let swap = if &tampered[mid..=mid] == "A" {
        "B"
    } else {
        "A"
    };
    tampered.replace_range(mid..=mid, swap);
    let base = s.base.as_str();
    let jobs = json!([
        job("access", &access, "access", base, Some(aud)),
        job("exchange", &exchanged, "access", base, Some(aud)),
        job(
            "checkpoint",
            cp.body["jws"].as_str().unwrap(),
            "access",
            base,
            None
        ),
        job(
            "dev_workload",
            &agent,
            "dev",
            "latch-dev://workload",
            Some("latch")
        ),
        job(
            "dev_human",
            &alice,
            "dev",
            "latch-dev://human",
            Some("latch")
        ),
        job("tampered", &tampered, "access", base, Some(aud)),
    ]);
    // Async: the server runs on this test's runtime and must answer Python's fetches.
    let out = tokio::process::Command::new("python3")
        .args(["-c", VERIFY, base, &jobs.to_string()])
        .output()
        .await
        .expect("python3");
    assert!(
        out.status.success(),
        "the PyJWT script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["jwks_uri"], format!("{base}/.well-known/jwks.json"));
    assert_eq!(v["latch_dev_jwks_uri"], format!("{base}/v1/dev/jwks.json"));
    let r = &v["results"];
    for name in [
        "access",
        "exchange",
        "checkpoint",
        "dev_workload",
        "dev_human",
    ] {
        assert!(r[name].get("error").is_none(), "PyJWT refused {name}: {v}");
        assert_eq!(r[name]["other_set_refused"], true, "{name}: {v}");
        let want = if name.starts_with("dev") {
            "EdDSA"
        } else {
            alg
        };
        assert_eq!(r[name]["header"]["alg"], want, "{name}: {v}");
    }
    let c = &r["access"]["claims"];
    assert_eq!(r["access"]["header"]["typ"], "at+jwt");
    assert_eq!(c["jti"], g.body["lease"]["id"]);
    assert_eq!(c["task_id"], t.as_str());
    assert_eq!(c["scope"], "read write");
    assert_eq!(c["exp"], g.body["lease"]["expires_at_unix_secs"]);
    let c = &r["exchange"]["claims"];
    assert_eq!(r["exchange"]["header"]["typ"], "at+jwt");
    assert_eq!(c["jti"], x["lease_id"]);
    assert_eq!(c["task_id"], x["task_id"]);
    assert_eq!(c["scope"], "read");
    let c = &r["checkpoint"]["claims"];
    assert_eq!(c["typ"], "latch-audit-checkpoint");
    assert_eq!(c["seq"], cp.body["seq"]);
    assert_eq!(c["hash"], cp.body["hash"]);
    assert_eq!(r["checkpoint"]["header"]["kid"], cp.body["kid"]);
    let c = &r["dev_workload"]["claims"];
    assert_eq!(c["repository"], "acme/payments-api");
    assert_eq!(c["sub"], "repo:acme/payments-api:ref:refs/heads/main");
    let c = &r["dev_human"]["claims"];
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["groups"], json!(["sre"]));
    assert!(c["exp"].as_i64().unwrap() > s.clock.now_unix_secs());
    assert_eq!(
        r["tampered"]["error"], "InvalidSignatureError",
        "PyJWT must refuse a tampered token: {v}"
    );
    s.stop().await;
}

#[tokio::test]
async fn pyjwt_verifies_tokens_of_every_issuer_from_published_keys() {
    pyjwt_verifies_every_issuer("EdDSA").await;
}

#[tokio::test]
async fn pyjwt_verifies_es256_access_tokens_and_checkpoints_from_published_keys() {
    pyjwt_verifies_every_issuer("ES256").await;
}

/// The development issuer's key is published (apart from the access-token keys) and advertised
/// while it is enabled, and its tokens verify with it; disabled, neither exists.
#[tokio::test]
async fn the_development_issuer_publishes_its_keys_only_while_enabled() {
    let s = TestServer::start().await;
    let m = s.get(None, "/.well-known/oauth-authorization-server").await;
    let uri = format!("{}/v1/dev/jwks.json", s.base);
    assert_eq!(m.body["latch_dev_jwks_uri"], uri.as_str());
    assert_eq!(
        m.body["latch_dev_issuers"],
        json!(["latch-dev://workload", "latch-dev://human"])
    );
    let r = s.http.get(&uri).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["cache-control"].to_str().unwrap(),
        "public, max-age=300"
    );
    let jwks: jsonwebtoken::jwk::JwkSet = r.json().await.unwrap();
    assert_eq!(jwks.keys.len(), 1);
    let raw = serde_json::to_value(&jwks.keys[0]).unwrap();
    assert_eq!(
        (raw["kty"].as_str(), raw["crv"].as_str()),
        (Some("OKP"), Some("Ed25519"))
    );
    assert!(raw.get("d").is_none(), "no private key material");
    let kid = jwks.keys[0].common.key_id.clone().unwrap();
    let access = s.get(None, "/.well-known/jwks.json").await.body;
    assert!(
        access["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["kid"] != kid.as_str()),
        "the development key is not an access-token key"
    );
    let agent = s.agent("2").await;
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.set_issuer(&["latch-dev://workload"]);
    v.set_audience(&["latch"]);
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwks.keys[0]).unwrap();
    let c = jsonwebtoken::decode::<Value>(&agent, &key, &v)
        .unwrap()
        .claims;
    assert_eq!(c["repository"], "acme/payments-api");
    s.stop().await;

    let off = TestServer::start_with(TestOptions {
        replace: vec![(
            "[dev_issuer]\nenabled = true".into(),
            "[dev_issuer]\nenabled = false".into(),
        )],
        ..Default::default()
    })
    .await;
    let m = off
        .get(None, "/.well-known/oauth-authorization-server")
        .await;
    assert!(m.body.get("latch_dev_jwks_uri").is_none(), "{}", m.body);
    assert!(m.body.get("latch_dev_issuers").is_none(), "{}", m.body);
    assert_ne!(off.get(None, "/v1/dev/jwks.json").await.status, 200);
    off.stop().await;
}
