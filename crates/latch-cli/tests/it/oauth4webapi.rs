//! Interoperability with an independent OAuth client, panva/oauth4webapi (npm): the Node script
//! `testdata/oauth4webapi/interop.mjs` drives discovery, token exchange with
//! `authorization_details`, DPoP (Ed25519 under both names, ES256, with the nonce challenge),
//! introspection and revocation with its default client authentication against a real server.
//! Also the Rust-side regression tests of what that client found: form-urlencoded HTTP Basic
//! client credentials (RFC 6749 §2.3.1).
//!
//! `scripts/test.sh` installs Node.js and the pinned package (`npm ci` in
//! `testdata/oauth4webapi`); without them the Node test skips loudly, and fails with `CI=true`.

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use latch_core::Clock;
use latch_testkit::{TestOptions, TestServer, tool_available};
use serde_json::{Value, json};

/// An introspection client whose id and secret change under form-urlencoding: a space, `+`,
/// `%`, `:`, `/` and a non-ASCII letter.
const CLIENT_ID: &str = "oauth4webapi rs";
const CLIENT_SECRET: &str = "s3cr+t %/:ü~!";
/// Both as RFC 6749 §2.3.1 puts them in HTTP Basic (`application/x-www-form-urlencoded`).
const CLIENT_ID_ENCODED: &str = "oauth4webapi+rs";
const CLIENT_SECRET_ENCODED: &str = "s3cr%2Bt+%25%2F%3A%C3%BC%7E%21";

fn sha256_hex(s: &str) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The example configuration plus the client above, a resource that requires DPoP, and server
/// nonces required in every proof.
fn options() -> TestOptions {
    TestOptions {
        extra_config: format!(
            "[oauth]\ndpop_require_nonce = true\n\
             [[introspection_clients]]\nid = \"{CLIENT_ID}\"\nsecret_sha256 = \"{}\"\n\
             [[resources]]\nid = \"bound-api\"\nkind = \"jwt\"\nenvironment = \"sandbox\"\n\
             sensitivity = \"internal\"\naudience = \"https://bound-api.acme.example\"\n\
             actions = [\"read\"]\nmax_ttl = \"10m\"\ndefault_ttl = \"5m\"\n\
             settings = {{ require_dpop = true }}\n",
            sha256_hex(CLIENT_SECRET)
        ),
        ..Default::default()
    }
}

/// `POST path` (a form with `token`) with `Authorization: Basic base64(user:pass)`.
async fn basic_post(s: &TestServer, path: &str, user: &str, pass: &str, token: &str) -> u16 {
    let creds = STANDARD.encode(format!("{user}:{pass}"));
    s.http
        .post(format!("{}{path}", s.base))
        .header("authorization", format!("Basic {creds}"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// RFC 6749 §2.3.1: the id and secret are form-urlencoded before base64. Latch decodes them
/// (oauth4webapi got 401 before), and still takes them as they are from clients that do not
/// encode (`curl -u`).
#[tokio::test]
async fn introspection_clients_authenticate_with_form_urlencoded_basic_credentials() {
    let s = TestServer::start_with(options()).await;
    let agent = s.agent("1401").await;
    let task = s.open_task(&agent, "sandbox", 600).await;
    let g = s.request(&agent, &task, "ci-cache", &["read"], None).await;
    let tok = g.body["credential"]["value"].as_str().unwrap().to_owned();
    let introspect = "/v1/oauth/introspect";
    for (user, pass) in [
        (CLIENT_ID_ENCODED, CLIENT_SECRET_ENCODED),
        // Encoded otherwise but equivalently (`%20` for the space, lowercase hex).
        ("oauth4webapi%20rs", "s3cr%2bt%20%25/%3a%c3%bc~!"),
        // Not encoded at all.
        (CLIENT_ID, CLIENT_SECRET),
    ] {
        assert_eq!(
            basic_post(&s, introspect, user, pass, &tok).await,
            200,
            "{user}:{pass}"
        );
    }
    // A wrong secret, however encoded, is refused; so is a decoding that is not the secret.
    for (user, pass) in [
        (CLIENT_ID_ENCODED, "s3cr%2Bt+%25%2F%3A%C3%BC%7E"),
        (CLIENT_ID_ENCODED, "s3cr+t+%25%2F%3A%C3%BC%7E%21"),
        ("oauth4webapi%2Brs", CLIENT_SECRET_ENCODED),
        (CLIENT_ID_ENCODED, "%FF"),
    ] {
        assert_eq!(
            basic_post(&s, introspect, user, pass, &tok).await,
            401,
            "{user}:{pass}"
        );
    }
    // Revocation authenticates the same way.
    assert_eq!(
        basic_post(
            &s,
            "/v1/oauth/revoke",
            CLIENT_ID_ENCODED,
            CLIENT_SECRET_ENCODED,
            &tok
        )
        .await,
        200
    );
    assert_eq!(s.introspect(&tok).await["active"], false);
    s.stop().await;
}

/// `testdata/oauth4webapi`, if its package is installed; else skips loudly (fails with CI=true).
fn oauth4webapi_dir() -> Option<PathBuf> {
    if !tool_available("node", &["--version"]) {
        return None;
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/oauth4webapi");
    if dir.join("node_modules/oauth4webapi/package.json").is_file() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "oauth4webapi is not installed in {} (`npm ci` there; scripts/test.sh does), and CI=true",
            dir.display()
        );
    }
    eprintln!(
        "\n!!!!! SKIPPING: oauth4webapi is not installed in {} (run `npm ci` there; set CI=true to make this a failure) !!!!!\n",
        dir.display()
    );
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth4webapi_drives_discovery_exchange_dpop_introspection_and_revocation() {
    let Some(dir) = oauth4webapi_dir() else {
        return;
    };
    let s = TestServer::start_with(options()).await;
    let agent = s.agent("1402").await;
    let bound_url = "https://bound-api.acme.example/items";
    let input = json!({
        "base": s.base,
        "server_now": s.clock.now_unix_secs(),
        "subject_token": agent,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "bound": {"resource": "bound-api", "environment": "sandbox", "url": bound_url},
        "plain": {"resource": "ci-cache", "environment": "sandbox"},
    });
    // Async: the server runs on this test's runtime and must answer the script.
    let out = tokio::process::Command::new("node")
        .arg("interop.mjs")
        .arg(input.to_string())
        .current_dir(&dir)
        .output()
        .await
        .expect("node");
    assert!(
        out.status.success(),
        "the oauth4webapi script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    latch_testkit::record_output(r.to_string());

    let m = &r["metadata"];
    assert_eq!(m["issuer"], s.base.as_str());
    assert_eq!(m["token_endpoint"], format!("{}/oauth/token", s.base));
    assert_eq!(
        m["authorization_details_types_supported"],
        json!(["latch_access"])
    );
    for alg in ["Ed25519", "EdDSA", "ES256"] {
        assert!(
            m["dpop_signing_alg_values_supported"]
                .as_array()
                .unwrap()
                .contains(&json!(alg)),
            "{m}"
        );
    }

    let runs = r["dpop"].as_array().unwrap();
    assert_eq!(runs.len(), 3, "{r}");
    for (run, name) in runs.iter().zip(["Ed25519", "EdDSA", "ES256"]) {
        assert_eq!(run["name"], name);
        // The proofs carried the algorithm under test, and the first one was challenged for a
        // server nonce, which the library then used.
        assert_eq!(run["proof_algs"], json!([name]), "{run}");
        assert_eq!(run["proof_header_alg"], name, "{run}");
        assert_eq!(run["challenged"], "use_dpop_nonce", "{run}");
        assert_eq!(run["token_type"], "dpop", "{run}");
        assert_eq!(run["authorization_scheme"], "DPoP");
        assert_eq!(run["authorization_details"][0]["resource"], "bound-api");
        assert_eq!(run["authorization_details"][0]["actions"], json!(["read"]));
        // The token is bound to the key the library holds (its own RFC 7638 thumbprint).
        assert!(run["jkt"].as_str().is_some_and(|j| j.len() == 43), "{run}");
        assert_eq!(run["cnf_jkt"], run["jkt"], "{run}");
        let i = &run["introspection"];
        assert_eq!(i["active"], true, "{run}");
        assert_eq!(i["token_type"], "DPoP");
        assert_eq!(i["cnf"]["jkt"], run["jkt"]);
        assert_eq!(run["stolen_introspection"]["active"], false, "{run}");
        assert_eq!(run["revoked_introspection"]["active"], false, "{run}");
    }

    let b = &r["bearer"];
    assert_eq!(b["token_type"], "bearer", "{b}");
    assert_eq!(b["scope"], "read");
    assert_eq!(b["authorization_details"][0]["resource"], "ci-cache");
    assert_eq!(b["introspection"]["active"], true, "{b}");
    assert_eq!(b["introspection"]["token_type"], "Bearer");
    assert_eq!(b["wrong_secret"]["status"], 401, "{b}");
    assert_eq!(b["revoked_introspection"]["active"], false, "{b}");
    s.stop().await;
}
