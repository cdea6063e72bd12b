//! OAuth 2.0 for agents and CI over real HTTP: token exchange (RFC 8693) with authorization
//! details (RFC 9396), authorization server metadata (RFC 8414), and DPoP-bound tokens
//! (RFC 9449) that are useless without their key.

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use latch_core::Clock;
use latch_testkit::{Resp, TestOptions, TestServer};
use serde_json::{Value, json};

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// A client's DPoP key (Ed25519), signing proofs with the `jsonwebtoken` library.
pub struct DpopKey {
    pkcs8: Vec<u8>,
    jwk: Jwk,
}

impl DpopKey {
    pub fn generate() -> Self {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .unwrap()
            .as_ref()
            .to_vec();
        let kp = Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap();
        let jwk: Jwk = serde_json::from_value(json!({"kty": "OKP", "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(kp.public_key().as_ref())}))
        .unwrap();
        Self { pkcs8, jwk }
    }

    /// RFC 7638 thumbprint.
    pub fn jkt(&self) -> String {
        self.jwk.thumbprint(ThumbprintHash::SHA256).unwrap()
    }

    /// A proof for `htm htu`, with `ath` of `token` and a server `nonce` when given.
    pub fn proof(
        &self,
        htm: &str,
        htu: &str,
        iat: i64,
        token: Option<&str>,
        nonce: Option<&str>,
    ) -> String {
        let mut h = Header::new(Algorithm::EdDSA);
        h.typ = Some("dpop+jwt".into());
        h.jwk = Some(self.jwk.clone());
        let mut c =
            json!({"jti": uuid::Uuid::new_v4().to_string(), "htm": htm, "htu": htu, "iat": iat});
        if let Some(t) = token {
            let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, t.as_bytes());
            c["ath"] = json!(URL_SAFE_NO_PAD.encode(d.as_ref()));
        }
        if let Some(n) = nonce {
            c["nonce"] = json!(n);
        }
        jsonwebtoken::encode(&h, &c, &EncodingKey::from_ed_der(&self.pkcs8)).unwrap()
    }

    /// A proof of this key over a header and claims given as text (so they can repeat a
    /// member name).
    pub fn raw_proof(&self, header: &str, claims: &str) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let sig = jsonwebtoken::crypto::sign(
            input.as_bytes(),
            &EncodingKey::from_ed_der(&self.pkcs8),
            Algorithm::EdDSA,
        )
        .unwrap();
        format!("{input}.{sig}")
    }
}

/// `POST /oauth/token` with a form and an optional DPoP proof; also returns `DPoP-Nonce`.
pub async fn token_request(
    s: &TestServer,
    form: &[(&str, &str)],
    dpop: Option<&str>,
) -> (Resp, Option<String>) {
    let mut rb = s.http.post(format!("{}/oauth/token", s.base)).form(form);
    if let Some(p) = dpop {
        rb = rb.header("DPoP", p);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let nonce = r
        .headers()
        .get("dpop-nonce")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(
        r.headers()
            .get("cache-control")
            .map(|v| v.to_str().unwrap()),
        Some("no-store")
    );
    let body: Value = r.json().await.unwrap();
    (
        Resp {
            status,
            body,
            request_id: None,
        },
        nonce,
    )
}

fn details(resource: &str, actions: &[&str], environment: &str) -> String {
    json!([{"type": "latch_access", "resource": resource, "actions": actions,
            "environment": environment, "purpose": "ci job via token exchange"}])
    .to_string()
}

fn claims(token: &str) -> Value {
    jsonwebtoken::dangerous::insecure_decode_claims::<Value>(token).unwrap()
}

/// Introspection as a resource server that forwards the DPoP proof it received.
async fn introspect_with_proof(s: &TestServer, token: &str, proof: &str, htu: &str) -> Value {
    let r = s
        .http
        .post(format!("{}/v1/oauth/introspect", s.base))
        .basic_auth(
            latch_server::examples::DEMO_CLIENT_ID,
            Some(latch_server::examples::DEMO_CLIENT_SECRET),
        )
        .form(&[
            ("token", token),
            ("dpop_proof", proof),
            ("htm", "GET"),
            ("htu", htu),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn metadata_and_token_exchange_for_a_task_scoped_token() {
    let s = TestServer::start().await;
    let m = s.get(None, "/.well-known/oauth-authorization-server").await;
    assert_eq!(m.status, 200);
    assert_eq!(m.body["issuer"], s.base.as_str());
    assert_eq!(m.body["token_endpoint"], format!("{}/oauth/token", s.base));
    assert_eq!(m.body["grant_types_supported"], json!([EXCHANGE]));
    assert_eq!(
        m.body["authorization_details_types_supported"],
        json!(["latch_access"])
    );
    assert!(
        m.body["dpop_signing_alg_values_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("EdDSA"))
    );

    let agent = s.agent("700").await;
    let d = details("ci-cache", &["read"], "sandbox");
    let (r, _) = token_request(
        &s,
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", &agent),
            ("subject_token_type", JWT),
            ("authorization_details", &d),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["scope"], "read");
    assert_eq!(r.body["expires_in"], 600);
    assert_eq!(r.body["authorization_details"][0]["resource"], "ci-cache");
    // The granted ttl (the resource's default here), not the (absent) requested one.
    assert_eq!(r.body["authorization_details"][0]["ttl_secs"], 600);
    assert_eq!(
        r.body["authorization_details"][0]["repository"],
        "acme/payments-api"
    );
    let tok = r.body["access_token"].as_str().unwrap();
    let c = claims(tok);
    assert_eq!(c["aud"], "https://ci-cache.acme.example");
    assert_eq!(c["task_id"], r.body["task_id"]);
    assert!(c.get("act").is_none() && c.get("cnf").is_none());
    let i = s.introspect(tok).await;
    assert_eq!(i["active"], true);
    assert_eq!(i["token_type"], "Bearer");
    // The task it opened is the agent's, with the purpose from the details; completing it
    // revokes the exchanged token like any other credential.
    let task = r.body["task_id"].as_str().unwrap();
    let t = s.get(Some(&agent), &format!("/v1/tasks/{task}")).await;
    assert_eq!(t.body["purpose"], "ci job via token exchange");
    let done = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{task}/complete"),
            json!({}),
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(s.introspect(tok).await["active"], false);

    // Malformed requests get RFC 6749 errors.
    let (r, _) = token_request(&s, &[("grant_type", "client_credentials")], None).await;
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    let (r, _) = token_request(
        &s,
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", "not-a-jwt"),
            ("subject_token_type", JWT),
            ("authorization_details", &d),
        ],
        None,
    )
    .await;
    assert_eq!(r.body["error"], "invalid_grant", "{}", r.body);
    assert_eq!(r.body["latch_code"], "token_malformed");
    let two = json!([{"type": "latch_access", "resource": "ci-cache", "actions": ["read"]},
                     {"type": "latch_access", "resource": "staging-db", "actions": ["read"]}])
    .to_string();
    let (r, _) = token_request(
        &s,
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", &agent),
            ("subject_token_type", JWT),
            ("authorization_details", &two),
        ],
        None,
    )
    .await;
    assert_eq!(r.body["error"], "invalid_authorization_details");
    s.stop().await;
}

#[tokio::test]
async fn token_exchange_with_actor_token_carries_act_both_ways() {
    let s = TestServer::start().await;
    let agent = s.agent("701").await;
    let alice = s.human("alice", &[]).await;
    let d = details("ci-cache", &["read", "write"], "sandbox");
    // Workload subject, human actor.
    let (r, _) = token_request(
        &s,
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", &agent),
            ("subject_token_type", JWT),
            ("actor_token", &alice),
            ("actor_token_type", JWT),
            ("authorization_details", &d),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let c = claims(r.body["access_token"].as_str().unwrap());
    assert_eq!(c["act"]["sub"], "alice");
    assert_ne!(c["sub"], "alice");
    let i = s.introspect(r.body["access_token"].as_str().unwrap()).await;
    assert_eq!(i["act"]["sub"], "alice");
    let issued = s
        .audit(&format!(
            "task_id={}&kind=credential.issued",
            r.body["task_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(issued.len(), 1);
    assert_eq!(
        issued[0]["detail"]["act"]["sub"], "alice",
        "the audit names the actor"
    );

    // On behalf of: the human is the subject and the workload acts.
    let (r, _) = token_request(
        &s,
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", &alice),
            ("subject_token_type", JWT),
            ("actor_token", &agent),
            ("actor_token_type", JWT),
            ("authorization_details", &d),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let c = claims(r.body["access_token"].as_str().unwrap());
    assert_eq!(c["sub"], "alice");
    let i = s.introspect(r.body["access_token"].as_str().unwrap()).await;
    assert_eq!(i["sub"], "alice", "introspection agrees with the token");
    assert_eq!(i["act"]["sub"], c["act"]["sub"]);
    let workload = c["act"]["sub"].as_str().unwrap().to_owned();
    assert_ne!(workload, "alice");
    let task = r.body["task_id"].as_str().unwrap();
    let t = s.get(Some(&agent), &format!("/v1/tasks/{task}")).await;
    assert_eq!(t.body["on_behalf_of"], "alice");
    assert_eq!(t.body["owner"]["id"], workload.as_str());

    // A human the workload's identity does not name cannot be put on its task.
    let mallory = s.human("mallory", &[]).await;
    let (r, _) = token_request(
        &s,
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", &mallory),
            ("subject_token_type", JWT),
            ("actor_token", &agent),
            ("actor_token_type", JWT),
            ("authorization_details", &d),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["latch_code"], "task_identity_mismatch", "{}", r.body);
    s.stop().await;
}

#[tokio::test]
async fn token_exchange_denial_and_step_up_are_standard_errors() {
    let s = TestServer::start().await;
    let agent = s.agent("702").await;
    let base = |d: &str| -> Vec<(&'static str, String)> {
        vec![
            ("grant_type", EXCHANGE.into()),
            ("subject_token", agent.clone()),
            ("subject_token_type", JWT.into()),
            ("authorization_details", d.into()),
        ]
    };
    let form = |v: &Vec<(&'static str, String)>| -> Vec<(&str, String)> { v.clone() };
    // Denied by policy: agents never get admin.
    let f = form(&base(&details("payments-db", &["admin"], "production")));
    let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (r, _) = token_request(&s, &f, None).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"], "access_denied", "{}", r.body);
    assert_eq!(r.body["latch_code"], "policy_denied");
    assert!(
        r.body["policy_ids"]
            .as_array()
            .unwrap()
            .contains(&json!("no-agent-admin"))
    );

    // Step-up: `authorization_pending` with an `auth_req_id` to poll with.
    let f = form(&base(&details(
        "deploy-pipeline",
        &["deploy"],
        "production",
    )));
    let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (r, _) = token_request(&s, &f, None).await;
    assert_eq!(r.body["error"], "authorization_pending", "{}", r.body);
    let auth_req_id = r.body["auth_req_id"].as_str().unwrap().to_owned();
    let poll = [
        ("grant_type", EXCHANGE),
        ("subject_token", agent.as_str()),
        ("subject_token_type", JWT),
        ("auth_req_id", auth_req_id.as_str()),
    ];
    let (r2, _) = token_request(&s, &poll, None).await;
    assert_eq!(r2.body["error"], "authorization_pending");
    // Another human cannot collect it as actor.
    let mallory = s.human("mallory", &[]).await;
    let mut as_mallory = poll.to_vec();
    as_mallory.push(("actor_token", mallory.as_str()));
    as_mallory.push(("actor_token_type", JWT));
    let (rm, _) = token_request(&s, &as_mallory, None).await;
    assert_eq!(
        rm.body["latch_code"], "task_identity_mismatch",
        "{}",
        rm.body
    );
    let (_, rid) = auth_req_id.split_once('.').unwrap();
    let bob = s.human("bob", &["prod-approvers"]).await;
    let a = s
        .post(
            Some(&bob),
            &format!("/v1/approvals/{rid}/approve"),
            json!({"digest": r.body["request_digest"], "reason": "ok"}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let (r3, _) = token_request(&s, &poll, None).await;
    assert_eq!(r3.status, 200, "{}", r3.body);
    assert_eq!(r3.body["scope"], "deploy");
    assert_eq!(
        r3.body["authorization_details"][0]["resource"],
        "deploy-pipeline"
    );
    let (r4, _) = token_request(&s, &poll, None).await;
    assert_eq!(
        r4.body["latch_code"], "request_not_pending",
        "delivered once: {}",
        r4.body
    );
    s.stop().await;
}

fn dpop_options(extra: &str) -> TestOptions {
    TestOptions {
        extra_config: format!(
            "{extra}\n[[resources]]\nid = \"bound-api\"\nkind = \"jwt\"\nenvironment = \"sandbox\"\n\
             sensitivity = \"internal\"\naudience = \"https://bound-api.acme.example\"\n\
             actions = [\"read\"]\nmax_ttl = \"10m\"\ndefault_ttl = \"5m\"\n\
             settings = {{ require_dpop = true }}\n"
        ),
        ..Default::default()
    }
}

#[tokio::test]
async fn dpop_bound_token_is_useless_when_copied_without_the_key() {
    let s = TestServer::start_with(dpop_options("")).await;
    let agent = s.agent("703").await;
    let key = DpopKey::generate();
    let d = details("bound-api", &["read"], "sandbox");
    let form = [
        ("grant_type", EXCHANGE),
        ("subject_token", agent.as_str()),
        ("subject_token_type", JWT),
        ("authorization_details", d.as_str()),
    ];
    // The resource requires binding: no proof, no token.
    let (r, _) = token_request(&s, &form, None).await;
    assert_eq!(r.body["latch_code"], "dpop_required", "{}", r.body);
    assert_eq!(r.body["error"], "invalid_request", "{}", r.body);
    // A proof for another endpoint is refused.
    let now = s.clock.now_unix_secs();
    let wrong = key.proof("POST", &format!("{}/v1/tasks", s.base), now, None, None);
    let (r, _) = token_request(&s, &form, Some(&wrong)).await;
    assert_eq!(r.body["error"], "invalid_dpop_proof", "{}", r.body);

    let htu_token = format!("{}/oauth/token", s.base);
    let p = key.proof("POST", &htu_token, now, None, None);
    let (r, _) = token_request(&s, &form, Some(&p)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["token_type"], "DPoP");
    let tok = r.body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(claims(&tok)["cnf"]["jkt"], key.jkt());
    // The same proof again is a replay.
    let (r, _) = token_request(&s, &form, Some(&p)).await;
    assert_eq!(r.body["error"], "invalid_dpop_proof", "{}", r.body);

    // The resource server forwards the token and the proof it got to introspection.
    let api = "https://bound-api.acme.example/items";
    let good = key.proof("GET", api, now, Some(&tok), None);
    let i = introspect_with_proof(&s, &tok, &good, api).await;
    assert_eq!(i["active"], true, "{i}");
    assert_eq!(i["token_type"], "DPoP");
    assert_eq!(i["cnf"]["jkt"], key.jkt());
    // Replayed proof: refused.
    assert_eq!(
        introspect_with_proof(&s, &tok, &good, api).await["active"],
        false
    );
    // A copied token used with the thief's own key: refused.
    let thief = DpopKey::generate();
    let stolen = thief.proof("GET", api, now, Some(&tok), None);
    assert_eq!(
        introspect_with_proof(&s, &tok, &stolen, api).await["active"],
        false
    );
    // A copied token without any proof: refused (the resource requires binding).
    assert_eq!(s.introspect(&tok).await["active"], false);
    // A proof of the right key but for another token (`ath`), method or URL: refused.
    let other_ath = key.proof("GET", api, now, Some("another-token"), None);
    assert_eq!(
        introspect_with_proof(&s, &tok, &other_ath, api).await["active"],
        false
    );
    let other_url = key.proof("GET", "https://evil.example/items", now, Some(&tok), None);
    assert_eq!(
        introspect_with_proof(&s, &tok, &other_url, api).await["active"],
        false
    );
    // A stale proof: refused (iat checked on the injected clock).
    let stale = key.proof("GET", api, now - 3600, Some(&tok), None);
    assert_eq!(
        introspect_with_proof(&s, &tok, &stale, api).await["active"],
        false
    );
    // And a fresh proof of the holder still works.
    s.clock.advance(10);
    let again = key.proof("GET", api, s.clock.now_unix_secs(), Some(&tok), None);
    assert_eq!(
        introspect_with_proof(&s, &tok, &again, api).await["active"],
        true
    );

    // The REST API binds too: a DPoP header on a request binds the minted credential.
    let task = s.open_task(&agent, "sandbox", 600).await;
    let path = format!("/v1/tasks/{task}/requests");
    let plain = s.request(&agent, &task, "bound-api", &["read"], None).await;
    assert_eq!(plain.code(), Some("dpop_required"), "{}", plain.body);
    let p = key.proof(
        "POST",
        &format!("{}{path}", s.base),
        s.clock.now_unix_secs(),
        None,
        None,
    );
    let r = s
        .http
        .post(format!("{}{path}", s.base))
        .bearer_auth(&agent)
        .header("DPoP", p)
        .json(&json!({"resource": "ci-cache", "actions": ["read"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["lease"]["binding"]["jkt"], key.jkt());
    let rest_tok = body["credential"]["value"].as_str().unwrap();
    assert_eq!(body["credential"]["metadata"]["token_type"], "DPoP");
    assert_eq!(body["credential"]["kind"], "dpop_token");
    // ci-cache does not require binding, but a bound token is only active with its proof.
    assert_eq!(s.introspect(rest_tok).await["active"], false);
    let url = "https://ci-cache.acme.example/objects/1";
    let proof = key.proof("GET", url, s.clock.now_unix_secs(), Some(rest_tok), None);
    let i = introspect_with_proof(&s, rest_tok, &proof, url).await;
    assert_eq!(i["active"], true, "{i}");
    assert_eq!(i["cnf"]["jkt"], key.jkt());
    s.stop().await;
}

#[tokio::test]
async fn dpop_server_nonce_is_required_when_configured() {
    let s = TestServer::start_with(dpop_options("[oauth]\ndpop_require_nonce = true\n")).await;
    let agent = s.agent("704").await;
    let key = DpopKey::generate();
    let d = details("bound-api", &["read"], "sandbox");
    let form = [
        ("grant_type", EXCHANGE),
        ("subject_token", agent.as_str()),
        ("subject_token_type", JWT),
        ("authorization_details", d.as_str()),
    ];
    let htu = format!("{}/oauth/token", s.base);
    let now = s.clock.now_unix_secs();
    let (r, nonce) =
        token_request(&s, &form, Some(&key.proof("POST", &htu, now, None, None))).await;
    assert_eq!(r.body["error"], "use_dpop_nonce", "{}", r.body);
    let nonce = nonce.expect("DPoP-Nonce header");
    let (r, _) = token_request(
        &s,
        &form,
        Some(&key.proof("POST", &htu, now, None, Some("made-up"))),
    )
    .await;
    assert_eq!(r.body["error"], "use_dpop_nonce");
    let (r, _) = token_request(
        &s,
        &form,
        Some(&key.proof("POST", &htu, now, None, Some(&nonce))),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["token_type"], "DPoP");
    s.stop().await;
}

#[tokio::test]
async fn token_exchange_cannot_open_a_task_outside_the_identity_environment() {
    let s = TestServer::start().await;
    let sandbox = s
        .dev_token(
            json!({"kind": "workload", "repository": "acme/payments-api",
            "git_ref": "refs/heads/main", "environment": "sandbox", "actor": "alice",
            "run_id": "720", "ttl_secs": 3600}),
        )
        .await;
    let d = details("payments-db", &["read"], "production");
    let (r, _) = token_request(
        &s,
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", &sandbox),
            ("subject_token_type", JWT),
            ("authorization_details", &d),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["error"], "invalid_request", "{}", r.body);
    assert_eq!(r.body["latch_code"], "task_identity_mismatch", "{}", r.body);
    s.stop().await;
}

/// Unauthenticated callers cannot exhaust nonces or the replay cache: they get no nonce, their
/// proofs are not even looked at, and nonces are stateless (checked by key and clock alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpop_nonces_survive_a_flood_of_unauthenticated_token_requests() {
    let s = TestServer::start_with(dpop_options("[oauth]\ndpop_require_nonce = true\n")).await;
    let htu = format!("{}/oauth/token", s.base);
    let now = s.clock.now_unix_secs();
    let d = details("bound-api", &["read"], "sandbox");
    // A legitimate client got its nonce before the flood.
    let agent = s.agent("705").await;
    let key = DpopKey::generate();
    let form = [
        ("grant_type", EXCHANGE),
        ("subject_token", agent.as_str()),
        ("subject_token_type", JWT),
        ("authorization_details", d.as_str()),
    ];
    let (r, nonce) =
        token_request(&s, &form, Some(&key.proof("POST", &htu, now, None, None))).await;
    assert_eq!(r.body["error"], "use_dpop_nonce", "{}", r.body);
    let nonce = nonce.expect("DPoP-Nonce header");

    const FLOOD: usize = 10_000;
    let mut set = tokio::task::JoinSet::new();
    // The flood comes from another address (127.0.0.0/8 is loopback): after
    // `[auth_failures] max_failures` bad tokens it is refused with 429 before any work, which
    // must not lock out the legitimate client.
    let flooder = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    for w in 0..8 {
        let http = flooder.clone();
        let htu = htu.clone();
        let d = d.clone();
        let attacker = DpopKey::generate();
        set.spawn(async move {
            let mut nonces = 0;
            for _ in 0..FLOOD / 8 {
                let r = http
                    .post(&htu)
                    .header("DPoP", attacker.proof("POST", &htu, now, None, None))
                    .form(&[
                        ("grant_type", EXCHANGE),
                        ("subject_token", "not-a-token"),
                        ("subject_token_type", JWT),
                        ("authorization_details", d.as_str()),
                    ])
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                assert!(matches!(status, 400 | 429), "worker {w}: {status}");
                nonces += usize::from(r.headers().contains_key("dpop-nonce"));
            }
            nonces
        });
    }
    let mut handed_out = 0;
    while let Some(n) = set.join_next().await {
        handed_out += n.unwrap();
    }
    assert_eq!(handed_out, 0, "unauthenticated callers get no nonces");

    let (r, _) = token_request(
        &s,
        &form,
        Some(&key.proof("POST", &htu, now, None, Some(&nonce))),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["token_type"], "DPoP");
    s.stop().await;
}

/// A DPoP-bound token introspects as inactive without a relayed proof; a proof needs `htm`
/// and `htu`; relayed proofs are exempt from the token endpoint's nonce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_of_a_bound_token_needs_a_complete_relayed_proof() {
    let s = TestServer::start_with(dpop_options("[oauth]\ndpop_require_nonce = true\n")).await;
    let agent = s.agent("706").await;
    let key = DpopKey::generate();
    let d = details("bound-api", &["read"], "sandbox");
    let form = [
        ("grant_type", EXCHANGE),
        ("subject_token", agent.as_str()),
        ("subject_token_type", JWT),
        ("authorization_details", d.as_str()),
    ];
    let htu = format!("{}/oauth/token", s.base);
    let now = s.clock.now_unix_secs();
    let (_, nonce) =
        token_request(&s, &form, Some(&key.proof("POST", &htu, now, None, None))).await;
    let nonce = nonce.expect("nonce");
    let (r, _) = token_request(
        &s,
        &form,
        Some(&key.proof("POST", &htu, now, None, Some(&nonce))),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let tok = r.body["access_token"].as_str().unwrap().to_owned();
    // No proof: inactive.
    assert_eq!(s.introspect(&tok).await["active"], false);
    // A proof without htm/htu: refused as a malformed request.
    let api = "https://bound-api.acme.example/things";
    let proof = key.proof("GET", api, now, Some(&tok), None);
    for missing in ["htm", "htu"] {
        let mut f = vec![("token", tok.as_str()), ("dpop_proof", proof.as_str())];
        if missing != "htm" {
            f.push(("htm", "GET"));
        }
        if missing != "htu" {
            f.push(("htu", api));
        }
        let r = s
            .http
            .post(format!("{}/v1/oauth/introspect", s.base))
            .basic_auth(
                latch_server::examples::DEMO_CLIENT_ID,
                Some(latch_server::examples::DEMO_CLIENT_SECRET),
            )
            .form(&f)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "without {missing}");
    }
    // The complete relayed proof, without a nonce even though the token endpoint needs one.
    let i = introspect_with_proof(&s, &tok, &proof, api).await;
    assert_eq!(i["active"], true, "{i}");
    assert_eq!(i["cnf"]["jkt"], key.jkt());
    s.stop().await;
}

/// A proof whose header or claims repeat a member name is refused although its signature
/// verifies: with "last one wins" (what a lenient parser does) each of these would pass, and
/// the same bytes would mean something else to a party that keeps the first one.
#[tokio::test]
async fn a_dpop_proof_repeating_a_member_name_is_refused() {
    let s = TestServer::start_with(dpop_options("")).await;
    let agent = s.agent("707").await;
    let key = DpopKey::generate();
    let d = details("bound-api", &["read"], "sandbox");
    let form = [
        ("grant_type", EXCHANGE),
        ("subject_token", agent.as_str()),
        ("subject_token_type", JWT),
        ("authorization_details", d.as_str()),
    ];
    let htu = format!("{}/oauth/token", s.base);
    let now = s.clock.now_unix_secs();
    let jwk = serde_json::to_string(&key.jwk).unwrap();
    let header = format!(r#"{{"typ":"dpop+jwt","alg":"EdDSA","jwk":{jwk}}}"#);
    let claims = |extra: &str| {
        format!(
            r#"{{"jti":"{}","htm":"POST"{extra},"htu":"{htu}","iat":{now}}}"#,
            uuid::Uuid::new_v4()
        )
    };
    for (h, c) in [
        (
            format!(r#"{{"typ":"dpop+jwt","alg":"HS256","alg":"EdDSA","jwk":{jwk}}}"#),
            claims(""),
        ),
        (
            header.clone(),
            claims(r#","htu":"https://elsewhere.example/oauth/token""#),
        ),
    ] {
        let (r, _) = token_request(&s, &form, Some(&key.raw_proof(&h, &c))).await;
        assert_eq!(r.body["error"], "invalid_dpop_proof", "{}", r.body);
        assert!(
            r.body["error_description"]
                .as_str()
                .unwrap()
                .contains("appears twice"),
            "{}",
            r.body
        );
    }
    // The same proof without the duplicate is good.
    let (r, _) = token_request(&s, &form, Some(&key.raw_proof(&header, &claims("")))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["token_type"], "DPoP");
    s.stop().await;
}

/// RFC 9449 §4.3 check 1: a request carries at most one `DPoP` header. A tester bound a token
/// with a valid proof followed by `DPoP: garbage` (only the first was checked).
#[tokio::test]
async fn a_request_with_two_dpop_headers_is_refused() {
    let s = TestServer::start().await;
    let agent = s.agent("two-proofs").await;
    let task = s.open_task(&agent, "sandbox", 3600).await;
    let key = DpopKey::generate();
    let path = format!("/v1/tasks/{task}/requests");
    let now = s.clock.now_unix_secs();
    let r = s
        .http
        .post(format!("{}{path}", s.base))
        .bearer_auth(&agent)
        .header(
            "DPoP",
            key.proof("POST", &format!("{}{path}", s.base), now, None, None),
        )
        .header("DPoP", "garbage")
        .json(&json!({"resource": "ci-cache", "actions": ["read"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "dpop_proof_invalid", "{body}");
    let htu = format!("{}/oauth/token", s.base);
    let r = s
        .http
        .post(&htu)
        .header("DPoP", key.proof("POST", &htu, now, None, None))
        .header("DPoP", key.proof("POST", &htu, now, None, None))
        .form(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", agent.as_str()),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_dpop_proof", "{body}");
    s.stop().await;
}

/// RFC 9449 §8: with `dpop_require_nonce`, the REST grant's `dpop_nonce_required` answer
/// carries the nonce to use (an attacker found it only on `/oauth/token`), and a successful
/// answer carries the next one.
#[tokio::test]
async fn rest_grant_nonce_challenge_carries_the_nonce() {
    let s = TestServer::start_with(dpop_options("[oauth]\ndpop_require_nonce = true\n")).await;
    let agent = s.agent("rest-nonce").await;
    let task = s.open_task(&agent, "sandbox", 3600).await;
    let key = DpopKey::generate();
    let url = format!("{}/v1/tasks/{task}/requests", s.base);
    let now = s.clock.now_unix_secs();
    let send = |proof: String| {
        s.http
            .post(&url)
            .bearer_auth(&agent)
            .header("DPoP", proof)
            .json(&json!({"resource": "ci-cache", "actions": ["read"]}))
            .send()
    };
    let r = send(key.proof("POST", &url, now, None, None))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let nonce = r
        .headers()
        .get("dpop-nonce")
        .expect("DPoP-Nonce header on the challenge")
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "dpop_nonce_required", "{body}");
    let r = send(key.proof("POST", &url, now, None, Some(&nonce)))
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert!(r.headers().contains_key("dpop-nonce"), "next nonce");
    // A request without a proof gets no nonce: nothing to bind.
    let plain = s.request(&agent, &task, "ci-cache", &["read"], None).await;
    assert_eq!(plain.status, 201, "{}", plain.body);
    s.stop().await;
}
