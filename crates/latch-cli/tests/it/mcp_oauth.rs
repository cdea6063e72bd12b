//! Latch as the OAuth 2.1 authorization server of MCP clients (MCP authorization 2025-11-25):
//! the official MCP Python SDK's `OAuthClientProvider` signs a local copilot in end to end
//! (discovery from the 401, dynamic registration or a Client ID Metadata Document, the code
//! flow with PKCE through the console's sign-in at a real OpenID Provider — panva
//! `oidc-provider` — and consent, tool calls, refresh, replay detection, revocation), and the
//! refusals are checked one by one over HTTP. Without Python's `mcp` package or the provider
//! the tests skip loudly, and fail under `CI=true`.

use latch_testkit::oidc;
use latch_testkit::tool_available;
use serde_json::{Value, json};

use crate::console::{Console, field, page};

/// A PKCE pair (RFC 7636 S256).
const VERIFIER: &str = "dBjftJeZ4CVP-mJ92K9TgsGjL2bKIpFEkp5tqjFqbYA";
const CHALLENGE: &str = "iqG2MaG4i3avCGdyYw8xihDcNfnLbBNbsYh91TT0crM";
const REDIRECT: &str = "http://127.0.0.1:9/callback";

fn sdk_available() -> bool {
    let ok = tool_available("python3", &["-c", "import mcp, httpx2"]);
    if !ok && std::env::var("CI").as_deref() == Ok("true") {
        panic!("the MCP Python SDK is not installed, and CI=true: this test needs it");
    }
    ok
}

async fn copilot(c: &Console, mode: &str, user: &str) -> Value {
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/mcp-oauth/copilot.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .args([mode, &c.s.base, user])
        .output()
        .await
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    latch_testkit::record_output(stdout.clone());
    assert!(
        out.status.success(),
        "the MCP Python SDK copilot failed ({mode}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// What both sign-ins must show: the tools worked as the copilot, the token refreshed with
/// rotation, and the token is for `/mcp` only.
fn check_common(o: &Value) {
    assert_eq!(o["granted"]["error"], false, "{o}");
    assert_eq!(o["pending"]["error"], false, "{o}");
    assert!(o["pending"]["request_id"].is_string(), "{o}");
    assert_eq!(o["after_refresh"]["error"], false, "{o}");
    assert_eq!(o["rotated"], true, "{o}");
    assert_eq!(o["mcp_with_token"], 200, "{o}");
    assert_eq!(o["rest_direct"]["status"], 401, "{o}");
    assert_eq!(
        o["rest_direct"]["body"]["error"]["code"],
        "audience_mismatch"
    );
    assert_eq!(o["other_resource"]["status"], 400);
    assert_eq!(o["other_resource"]["body"]["error"], "invalid_target");
    assert_eq!(
        o["mcp_after"], 401,
        "the revoked grant's access token must stop at once"
    );
    assert_eq!(o["refresh_after"]["status"], 400);
    assert_eq!(o["refresh_after"]["body"]["error"], "invalid_grant");
}

#[tokio::test]
async fn mcp_sdk_signs_a_copilot_in_with_dynamic_registration() {
    if !sdk_available() {
        return;
    }
    let Some(c) = Console::start().await else {
        return;
    };
    // erin is in prod-approvers: her copilot's production request must still not be hers to
    // approve.
    let o = copilot(&c, "dcr", "erin").await;
    check_common(&o);
    assert!(o["client_id"].as_str().unwrap().starts_with("mcpc_"));
    let consent = o["consent_page"].as_str().unwrap();
    assert!(consent.contains("Test Copilot"), "{consent}");
    assert!(consent.contains("registered client"));
    assert!(consent.contains("127.0.0.1"));
    assert_eq!(o["replay"]["status"], 400);
    assert_eq!(o["replay"]["body"]["error"], "invalid_grant");

    // The principal: the client acting for erin, on her machine.
    let store = c.s.broker().store().clone();
    let task = store
        .task(o["prod_task"]["id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(task.owner.preset, "mcp_client");
    assert_eq!(task.owner.on_behalf_of.as_deref(), Some("erin"));
    assert_eq!(task.on_behalf_of.as_deref(), Some("erin"));
    assert_eq!(task.owner.claims.developer_machine, Some(true));
    assert_eq!(
        task.owner.claims.client_id.as_deref(),
        o["client_id"].as_str()
    );
    // The production read waits for prod-approvers (40-copilots.cedar) ...
    let rid = o["pending"]["request_id"].as_str().unwrap();
    let digest = o["pending"]["digest"].as_str().unwrap();
    // ... and erin cannot approve her own copilot's request.
    let erin = c.signed_in("erin").await;
    let path = c.url(&format!("/console/requests/{rid}"));
    let (_, html) = page(&erin, &path).await;
    let r = erin
        .post(&path)
        .form(&[
            ("csrf", field(&html, "csrf").as_str()),
            ("digest", digest),
            ("verdict", "approve"),
            ("reason", "mine"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-latch-error"], "self_approval_forbidden");
    assert!(c.s.broker().approvals(rid).await.unwrap().is_empty());
    // bob can.
    let bob = c.signed_in("bob").await;
    let (_, html) = page(&bob, &path).await;
    let r = bob
        .post(&path)
        .form(&[
            ("csrf", field(&html, "csrf").as_str()),
            ("digest", digest),
            ("verdict", "approve"),
            ("reason", "looked at it"),
        ])
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_redirection() || r.status() == 200,
        "{}",
        r.status()
    );
    assert_eq!(c.s.broker().approvals(rid).await.unwrap().len(), 1);

    let kinds: Vec<(String, String)> =
        c.s.audit("kind=oauth.")
            .await
            .iter()
            .map(|e| {
                (
                    e["kind"].as_str().unwrap().to_owned(),
                    e["outcome"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
    for k in [
        ("oauth.client_registered", "ok"),
        ("oauth.consented", "ok"),
        ("oauth.grant_issued", "ok"),
        ("oauth.grant_refreshed", "ok"),
        ("oauth.grant_revoked", "refresh_replay"),
    ] {
        assert!(
            kinds.iter().any(|(a, b)| a == k.0 && b == k.1),
            "{k:?} not in {kinds:?}"
        );
    }
    c.stop().await;
}

#[tokio::test]
async fn mcp_sdk_signs_a_copilot_in_with_a_client_metadata_document() {
    if !sdk_available() {
        return;
    }
    let Some(c) = Console::start().await else {
        return;
    };
    let o = copilot(&c, "cimd", "alice").await;
    check_common(&o);
    let id = o["client_id"].as_str().unwrap();
    assert!(id.starts_with("http://127.0.0.1:") && id.ends_with("/copilot/client.json"));
    let consent = o["consent_page"].as_str().unwrap();
    assert!(consent.contains("Test Copilot (CIMD)"), "{consent}");
    assert!(consent.contains(id));
    assert_eq!(o["revoke"], 200);
    c.stop().await;
}

/// `GET /console/authorize` with these parameters, in `browser`.
async fn authorize(
    c: &Console,
    browser: &reqwest::Client,
    p: &[(&str, &str)],
) -> reqwest::Response {
    let u = reqwest::Url::parse_with_params(&c.url("/console/authorize"), p).unwrap();
    browser.get(u).send().await.unwrap()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// Consents (or refuses) in `browser`; returns the redirect to the client.
async fn consent(
    c: &Console,
    browser: &reqwest::Client,
    p: &[(&str, &str)],
    decision: &str,
) -> String {
    let r = authorize(c, browser, p).await;
    assert_eq!(r.status(), 200, "{}", location(&r));
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("form-action 'self' http://127.0.0.1:9"),
        "{csp}"
    );
    let html = r.text().await.unwrap();
    let mut form: Vec<(&str, &str)> = p.to_vec();
    let csrf = field(&html, "csrf");
    form.push(("csrf", &csrf));
    form.push(("decision", decision));
    let r = browser
        .post(c.url("/console/authorize"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    location(&r)
}

fn query(url: &str, k: &str) -> Option<String> {
    reqwest::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(a, _)| a == k)
        .map(|(_, v)| v.into_owned())
}

async fn token(c: &Console, form: &[(&str, &str)]) -> (u16, Value) {
    let r =
        c.s.http
            .post(c.url("/oauth/token"))
            .form(form)
            .send()
            .await
            .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn mcp_status(c: &Console, access: &str) -> u16 {
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"}}});
    c.s.http
        .post(c.url("/mcp"))
        .header("Accept", "application/json, text/event-stream")
        .bearer_auth(access)
        .json(&init)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn the_authorization_server_refuses_what_it_must() {
    let Some(c) = Console::start().await else {
        return;
    };
    let base = c.s.base.clone();
    // Metadata: Latch names itself, and says what it supports.
    let prm =
        c.s.get(None, "/.well-known/oauth-protected-resource/mcp")
            .await;
    assert_eq!(prm.body["authorization_servers"], json!([base]));
    let asm =
        c.s.get(None, "/.well-known/oauth-authorization-server")
            .await
            .body;
    assert_eq!(
        asm["authorization_endpoint"],
        format!("{base}/console/authorize")
    );
    assert_eq!(
        asm["registration_endpoint"],
        format!("{base}/oauth/register")
    );
    assert_eq!(asm["revocation_endpoint"], format!("{base}/oauth/revoke"));
    assert_eq!(asm["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(asm["client_id_metadata_document_supported"], true);
    for g in ["authorization_code", "refresh_token"] {
        assert!(
            asm["grant_types_supported"]
                .as_array()
                .unwrap()
                .contains(&json!(g))
        );
    }

    let reg =
        c.s.http
            .post(c.url("/oauth/register"))
            .json(&json!({"client_name": "Refusal Tests", "redirect_uris": [REDIRECT]}))
            .send()
            .await
            .unwrap();
    assert_eq!(reg.status(), 201);
    let client_id = reg.json::<Value>().await.unwrap()["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A non-loopback http redirect URI cannot be registered.
    let bad =
        c.s.http
            .post(c.url("/oauth/register"))
            .json(&json!({"redirect_uris": ["http://evil.example/cb"]}))
            .send()
            .await
            .unwrap();
    assert_eq!(bad.status(), 400);

    let resource = format!("{base}/mcp");
    let params = |redirect: &'static str| {
        vec![
            ("response_type", "code"),
            ("client_id", client_id.as_str()),
            ("redirect_uri", redirect),
            ("state", "st-1"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
            ("resource", resource.as_str()),
        ]
    };
    // Without a console session: to the sign-in, which comes back here.
    let anon = oidc::browser();
    let r = authorize(&c, &anon, &params(REDIRECT)).await;
    assert_eq!(r.status(), 303);
    assert!(location(&r).starts_with("/console/login?next=%2Fconsole%2Fauthorize"));

    let alice = c.signed_in("alice").await;
    // A redirect URI the client did not register: a page, never a redirect.
    let r = authorize(&c, &alice, &params("http://127.0.0.1:9/other")).await;
    assert_eq!(r.status(), 400);
    assert!(location(&r).is_empty());
    // PKCE plain is refused (back to the client with the error).
    let mut plain = params(REDIRECT);
    plain.retain(|(k, _)| *k != "code_challenge_method");
    plain.push(("code_challenge_method", "plain"));
    let r = authorize(&c, &alice, &plain).await;
    assert_eq!(
        query(&location(&r), "error").as_deref(),
        Some("invalid_request")
    );
    // A token for another resource cannot be asked for.
    let mut other = params(REDIRECT);
    other.retain(|(k, _)| *k != "resource");
    other.push(("resource", "https://other.example/mcp"));
    let r = authorize(&c, &alice, &other).await;
    let loc = location(&r);
    assert_eq!(query(&loc, "error").as_deref(), Some("invalid_target"));
    assert_eq!(query(&loc, "state").as_deref(), Some("st-1"));
    // Metadata documents at private addresses are never fetched.
    for url in [
        "https://10.0.0.1/client.json",
        "https://169.254.169.254/latest/client.json",
        "http://192.168.1.20/client.json",
    ] {
        let mut p = params(REDIRECT);
        p.retain(|(k, _)| *k != "client_id");
        p.push(("client_id", url));
        let r = authorize(&c, &alice, &p).await;
        assert_eq!(r.status(), 400, "{url}");
        let page = r.text().await.unwrap();
        assert!(
            page.contains("private, loopback or reserved"),
            "{url}: {page}"
        );
    }
    // Deny.
    let loc = consent(&c, &alice, &params(REDIRECT), "deny").await;
    assert_eq!(query(&loc, "error").as_deref(), Some("access_denied"));

    // Approve: a code bound to its verifier.
    let loc = consent(&c, &alice, &params(REDIRECT), "approve").await;
    assert_eq!(query(&loc, "iss").as_deref(), Some(base.as_str()));
    let code = query(&loc, "code").unwrap();
    let exchange = |verifier: &'static str| {
        vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.clone()),
            ("client_id", client_id.clone()),
            ("redirect_uri", REDIRECT.to_owned()),
            ("code_verifier", verifier.to_owned()),
            ("resource", resource.clone()),
        ]
    };
    let as_refs = |v: &Vec<(&'static str, String)>| -> Vec<(&'static str, String)> { v.clone() };
    let wrong = as_refs(&exchange("wrong-verifier-wrong-verifier-wrong-verifier-x"));
    let (st, body) = token(
        &c,
        &wrong
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(
        (st, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    let good = exchange(VERIFIER);
    let good: Vec<(&str, &str)> = good.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (st, tokens) = token(&c, &good).await;
    assert_eq!(st, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    latch_testkit::register_minted(&access);
    latch_testkit::register_minted(tokens["refresh_token"].as_str().unwrap());
    assert_eq!(mcp_status(&c, &access).await, 200);
    // The code again: refused, and what it gave is revoked.
    let (st, body) = token(&c, &good).await;
    assert_eq!(
        (st, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    assert_eq!(mcp_status(&c, &access).await, 401);

    // A human or an admin revokes a grant through the API; others do not see it.
    let loc = consent(&c, &alice, &params(REDIRECT), "approve").await;
    let code = query(&loc, "code").unwrap();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("client_id", client_id.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    let (st, tokens) = token(&c, &form).await;
    assert_eq!(st, 200, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    latch_testkit::register_minted(&access);
    latch_testkit::register_minted(&refresh);
    let grant = c.s.audit("kind=oauth.grant_issued").await.last().unwrap()["detail"]["grant_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let del = |tok: String| {
        let url = c.url(&format!("/v1/oauth/grants/{grant}"));
        let http = c.s.http.clone();
        async move { http.delete(url).bearer_auth(tok).send().await.unwrap() }
    };
    let r = del(c.s.human("mallory", &[]).await).await;
    assert_eq!(r.status(), 404);
    assert_eq!(mcp_status(&c, &access).await, 200);
    let r = del(c.s.human("carol", &["latch-admins"]).await).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["revoked_reason"], "admin");
    assert_eq!(mcp_status(&c, &access).await, 401);
    let (st, body) = token(
        &c,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!((st, body["error"].as_str()), (400, Some("invalid_grant")));
    c.stop().await;
}
