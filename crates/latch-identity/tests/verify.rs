//! End-to-end tests of `OidcVerifier`: real signatures (keys generated at test time), the shared
//! identity cases, every rejection, discovery and JWKS over real HTTP, and key rotation.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unimplemented,
    clippy::too_many_lines,
    reason = "test code: a failed step fails the test, and a scenario reads best in one piece"
)]
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256,
    RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latch_core::model::{Principal, Workload};
use latch_core::ports::IdentityVerifier;
use latch_core::{ApiError, ErrorCode, ManualClock};
use latch_identity::{
    ConfigError, IssuerConfig, IssuerKind, JwkSet, JwksSource, OidcVerifier, Preset,
    SigningAlgorithm, VerifierOptions,
};
use serde_json::{Value, json};

/// Inside the validity window of every payload in `testdata/identity-claims` (copied from the shared cases).
const NOW: i64 = 1_764_400_500;
const AUD: &str = "https://latch.acme.example";
const ISS: &str = "https://issuer.test.example";

// ---------------------------------------------------------------------------------------------
// Test keys and signing

enum Signer {
    Ed(Ed25519KeyPair),
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

struct TestKey {
    kid: String,
    signer: Signer,
}

impl TestKey {
    fn ed(kid: &str) -> Self {
        Self {
            kid: kid.into(),
            signer: Signer::Ed(Ed25519KeyPair::generate().expect("ed25519 key")),
        }
    }
    fn ec(kid: &str) -> Self {
        let kp = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("p-256 key");
        Self {
            kid: kid.into(),
            signer: Signer::Ec(kp),
        }
    }
    fn rsa(kid: &str) -> Self {
        let kp = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("rsa key");
        Self {
            kid: kid.into(),
            signer: Signer::Rsa(kp),
        }
    }

    fn alg(&self) -> &'static str {
        match self.signer {
            Signer::Ed(_) => "EdDSA",
            Signer::Ec(_) => "ES256",
            Signer::Rsa(_) => "RS256",
        }
    }

    /// The public JWK, built by hand from the raw public key.
    fn jwk(&self) -> Value {
        let b = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        match &self.signer {
            Signer::Ed(kp) => json!({
                "kty": "OKP", "crv": "Ed25519", "x": b(kp.public_key().as_ref()),
                "kid": self.kid, "use": "sig", "alg": "EdDSA"
            }),
            Signer::Ec(kp) => {
                let point = kp.public_key().as_ref();
                assert_eq!(point.len(), 65);
                json!({
                    "kty": "EC", "crv": "P-256", "x": b(&point[1..33]), "y": b(&point[33..]),
                    "kid": self.kid, "use": "sig", "alg": "ES256"
                })
            }
            Signer::Rsa(kp) => {
                let pk = kp.public_key();
                json!({
                    "kty": "RSA", "n": b(pk.modulus().big_endian_without_leading_zero()),
                    "e": b(pk.exponent().big_endian_without_leading_zero()),
                    "kid": self.kid, "use": "sig", "alg": "RS256"
                })
            }
        }
    }

    fn sign_bytes(&self, msg: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.signer {
            Signer::Ed(kp) => kp.sign(msg).as_ref().to_vec(),
            Signer::Ec(kp) => kp.sign(&rng, msg).expect("ecdsa sign").as_ref().to_vec(),
            Signer::Rsa(kp) => {
                let mut sig = vec![0; kp.public_modulus_len()];
                kp.sign(&RSA_PKCS1_SHA256, &rng, msg, &mut sig)
                    .expect("rsa sign");
                sig
            }
        }
    }

    /// A token with the usual header (`alg`, `kid`, `typ`).
    fn token(&self, claims: &Value) -> String {
        self.token_with_header(
            &json!({"alg": self.alg(), "kid": self.kid, "typ": "JWT"}),
            claims,
        )
    }

    fn token_with_header(&self, header: &Value, claims: &Value) -> String {
        let msg = format!("{}.{}", b64_json(header), b64_json(claims));
        let sig = self.sign_bytes(msg.as_bytes());
        format!("{msg}.{}", URL_SAFE_NO_PAD.encode(sig))
    }
}

fn b64_json(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"))
}

fn jwks_of(keys: &[&TestKey]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()})
}

fn jwk_set(keys: &[&TestKey]) -> JwkSet {
    serde_json::from_value(jwks_of(keys)).expect("jwk set")
}

// ---------------------------------------------------------------------------------------------
// Verifier helpers

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("http client")
}

fn verifier(issuers: Vec<IssuerConfig>, clock: &ManualClock) -> OidcVerifier {
    OidcVerifier::new(
        issuers,
        VerifierOptions::default(),
        Arc::new(clock.clone()),
        http(),
    )
    .expect("valid config")
}

fn generic_issuer(jwks: JwksSource, alg: SigningAlgorithm) -> IssuerConfig {
    IssuerConfig::new("test", ISS, IssuerKind::Workload, AUD, jwks)
        .with_preset(Preset::Generic)
        .with_algorithms([alg])
}

fn claims(now: i64) -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": "agent-1", "iat": now, "nbf": now, "exp": now + 600})
}

fn case(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/identity-claims")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("case json")
}

fn workload(p: Principal) -> Workload {
    match p {
        Principal::Workload(w) => *w,
        Principal::Human(h) => panic!("expected a workload, got human {h:?}"),
    }
}

async fn rejected(v: &OidcVerifier, token: &str, code: ErrorCode) -> ApiError {
    let err = v.verify(token).await.expect_err("token must be rejected");
    assert_eq!(err.code, code, "unexpected error: {err}");
    assert!(
        token.is_empty() || !err.message.contains(token),
        "message leaks the token"
    );
    assert!(
        err.message.chars().next().is_some_and(char::is_lowercase),
        "message not lowercase: {err}"
    );
    err
}

// ---------------------------------------------------------------------------------------------
// A JWKS / discovery server over real HTTP

#[derive(Default)]
struct Served {
    issuer: Mutex<String>,
    jwks: Mutex<Value>,
    discovery_hits: AtomicUsize,
    jwks_hits: AtomicUsize,
}

struct Server {
    base: String,
    state: Arc<Served>,
}

impl Server {
    async fn start(jwks: Value) -> Self {
        use axum::extract::State;
        use axum::routing::get;
        let state = Arc::new(Served::default());
        *state.jwks.lock().expect("lock") = jwks;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        *state.issuer.lock().expect("lock") = base.clone();
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(|State(s): State<Arc<Served>>| async move {
                    s.discovery_hits.fetch_add(1, Ordering::SeqCst);
                    let issuer = s.issuer.lock().expect("lock").clone();
                    axum::Json(json!({
                        "issuer": issuer,
                        "jwks_uri": format!("{issuer}/jwks.json"),
                        "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
                    }))
                }),
            )
            .route(
                "/jwks.json",
                get(|State(s): State<Arc<Served>>| async move {
                    s.jwks_hits.fetch_add(1, Ordering::SeqCst);
                    axum::Json(s.jwks.lock().expect("lock").clone())
                }),
            )
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { base, state }
    }

    fn jwks_hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }
    fn discovery_hits(&self) -> usize {
        self.state.discovery_hits.load(Ordering::SeqCst)
    }
    fn set_jwks(&self, v: Value) {
        *self.state.jwks.lock().expect("lock") = v;
    }
}

// ---------------------------------------------------------------------------------------------
// The shared identity cases

#[tokio::test]
async fn github_actions_environment_case() {
    let key = TestKey::rsa("gh-1");
    let clock = ManualClock::new(NOW);
    let payload = case("github-actions-environment.json");
    let cfg = IssuerConfig::new(
        "github",
        "https://token.actions.githubusercontent.com",
        IssuerKind::Workload,
        AUD,
        JwksSource::Static(jwk_set(&[&key])),
    )
    .with_preset(Preset::GithubActions);
    let v = verifier(vec![cfg], &clock);
    let w = workload(v.verify(&key.token(&payload)).await.expect("verifies"));

    assert_eq!(
        w.id,
        "https://token.actions.githubusercontent.com#repo:acme-corp/payments-api:environment:production"
    );
    assert_eq!(w.issuer, "https://token.actions.githubusercontent.com");
    assert_eq!(
        w.subject,
        "repo:acme-corp/payments-api:environment:production"
    );
    assert_eq!(w.preset, "github_actions");
    assert_eq!(w.run_binding.as_deref(), Some("gh-run:9120034411/1"));
    assert_eq!(w.on_behalf_of.as_deref(), Some("dev-one"));
    assert_eq!(w.token_expires_at_unix_secs, 1_764_400_900);
    let c = &w.claims;
    assert_eq!(c.repository.as_deref(), Some("acme-corp/payments-api"));
    assert_eq!(c.repository_id.as_deref(), Some("734001"));
    assert_eq!(c.repository_owner.as_deref(), Some("acme-corp"));
    assert_eq!(c.git_ref.as_deref(), Some("refs/heads/main"));
    assert_eq!(c.branch.as_deref(), Some("main"));
    assert_eq!(c.ref_protected, Some(true));
    assert_eq!(c.environment.as_deref(), Some("production"));
    assert_eq!(c.event_name.as_deref(), Some("push"));
    assert_eq!(c.runner_environment.as_deref(), Some("github-hosted"));
    assert_eq!(
        c.workflow_ref.as_deref(),
        Some("acme-corp/payments-api/.github/workflows/deploy.yml@refs/heads/main")
    );
    assert!(!c.untrusted_source);
    assert_eq!(c.namespace, None);
    assert_eq!(c.repository_owner_id.as_deref(), Some("1048576"));

    // GitHub compares owner and repository names case-insensitively: the same repository
    // spelled in another case is the same lowercase name to tasks and policies.
    let mut shouted = payload.clone();
    shouted["repository"] = json!("Acme-Corp/Payments-API");
    shouted["repository_owner"] = json!("ACME-corp");
    let w = workload(v.verify(&key.token(&shouted)).await.expect("verifies"));
    assert_eq!(
        w.claims.repository.as_deref(),
        Some("acme-corp/payments-api")
    );
    assert_eq!(w.claims.repository_owner.as_deref(), Some("acme-corp"));
    assert_eq!(w.claims.repository_id.as_deref(), Some("734001"));
    // Only ASCII is folded: U+212A KELVIN SIGN is not `k` (Unicode lowercasing said it was).
    let mut kelvin = payload.clone();
    kelvin["repository"] = json!("acme-corp/\u{212A}ube");
    let w = workload(v.verify(&key.token(&kelvin)).await.expect("verifies"));
    assert_eq!(
        w.claims.repository.as_deref(),
        Some("acme-corp/\u{212A}ube")
    );
}

/// A correctly signed token whose repository, ref or actor holds a control, bidi or zero-width
/// character is refused: `acme-corp/payments-api\u{200b}` would open a task that looks, to
/// approvers and audit readers, like the real repository's (an attacker opened one so).
#[tokio::test]
async fn claims_with_hidden_or_control_characters_are_refused() {
    let key = TestKey::rsa("gh-1");
    let clock = ManualClock::new(NOW);
    let payload = case("github-actions-environment.json");
    let cfg = IssuerConfig::new(
        "github",
        "https://token.actions.githubusercontent.com",
        IssuerKind::Workload,
        AUD,
        JwksSource::Static(jwk_set(&[&key])),
    )
    .with_preset(Preset::GithubActions);
    let v = verifier(vec![cfg], &clock);
    for (claim, value) in [
        ("repository", "acme-corp/payments-api\u{200b}"),
        ("repository", "acme-corp/\u{202e}ipa-stnemyap"),
        ("ref", "refs/heads/main\u{1b}[2K"),
        ("ref", "refs/heads/fix\nrefs/heads/main"),
        ("actor", "dev\u{2066}-one"),
        (
            "sub",
            "repo:acme-corp/payments-api:environment:production\u{feff}",
        ),
    ] {
        let mut p = payload.clone();
        p[claim] = json!(value);
        let e = rejected(&v, &key.token(&p), ErrorCode::ClaimsInvalid).await;
        assert!(e.message.contains(claim), "{claim}: {}", e.message);
    }
    // Ordinary non-ASCII text is not refused.
    let mut p = payload.clone();
    p["actor"] = json!("zoë");
    v.verify(&key.token(&p)).await.expect("verifies");
}

#[tokio::test]
async fn github_actions_fork_pull_request_is_never_the_trusted_branch() {
    let key = TestKey::rsa("gh-1");
    let clock = ManualClock::new(NOW);
    let payload = case("github-actions-pull-request-from-fork.json");
    let cfg = IssuerConfig::new(
        "github",
        "https://token.actions.githubusercontent.com",
        IssuerKind::Workload,
        AUD,
        JwksSource::Static(jwk_set(&[&key])),
    )
    .with_preset(Preset::GithubActions);
    let v = verifier(vec![cfg], &clock);
    let w = workload(v.verify(&key.token(&payload)).await.expect("verifies"));

    assert_eq!(
        w.id,
        "https://token.actions.githubusercontent.com#repo:acme-corp/payments-api:pull_request"
    );
    assert_eq!(w.run_binding.as_deref(), Some("gh-run:9120099001/1"));
    assert_eq!(w.on_behalf_of.as_deref(), Some("outside-contributor"));
    let c = &w.claims;
    assert!(c.untrusted_source);
    assert_eq!(c.branch, None);
    assert_eq!(c.git_ref.as_deref(), Some("refs/pull/1187/merge"));
    assert_eq!(c.event_name.as_deref(), Some("pull_request"));
    assert_eq!(c.ref_protected, None);
    assert_eq!(c.environment, None);

    // `pull_request_target` reports the base branch as `ref`; it still must not look trusted.
    let mut target = payload.clone();
    target["event_name"] = json!("pull_request_target");
    target["ref"] = json!("refs/heads/main");
    let w = workload(v.verify(&key.token(&target)).await.expect("verifies"));
    assert!(w.claims.untrusted_source);
    assert_eq!(w.claims.branch, None);
    assert_eq!(w.claims.git_ref.as_deref(), Some("refs/heads/main"));
}

#[tokio::test]
async fn gitlab_ci_branch_case() {
    let key = TestKey::ec("gl-1");
    let clock = ManualClock::new(NOW);
    let payload = case("gitlab-ci-branch.json");
    let cfg = IssuerConfig::new(
        "gitlab",
        "https://gitlab.acme.example",
        IssuerKind::Workload,
        AUD,
        JwksSource::Static(jwk_set(&[&key])),
    )
    .with_preset(Preset::GitlabCi)
    .with_algorithms([SigningAlgorithm::ES256]);
    let v = verifier(vec![cfg], &clock);
    let w = workload(v.verify(&key.token(&payload)).await.expect("verifies"));

    assert_eq!(
        w.id,
        "https://gitlab.acme.example#project_path:acme-corp/inventory:ref_type:branch:ref:feature-branch-1"
    );
    assert_eq!(w.preset, "gitlab_ci");
    assert_eq!(w.run_binding.as_deref(), Some("gl-job:302"));
    assert_eq!(w.on_behalf_of.as_deref(), Some("dev-two"));
    assert_eq!(w.token_expires_at_unix_secs, 1_764_403_900);
    let c = &w.claims;
    assert_eq!(c.repository.as_deref(), Some("acme-corp/inventory"));
    assert_eq!(c.repository_id.as_deref(), Some("20"));
    assert_eq!(c.repository_owner.as_deref(), Some("acme-corp"));
    assert_eq!(c.repository_owner_id.as_deref(), Some("72"));
    assert_eq!(c.git_ref.as_deref(), Some("refs/heads/feature-branch-1"));
    assert_eq!(c.branch.as_deref(), Some("feature-branch-1"));
    assert_eq!(c.ref_protected, Some(false));
    assert_eq!(c.environment.as_deref(), Some("staging"));
    assert_eq!(c.event_name.as_deref(), Some("push"));
    assert_eq!(c.runner_environment.as_deref(), Some("self-hosted"));
    assert_eq!(
        c.workflow_ref.as_deref(),
        Some("gitlab.acme.example/acme-corp/inventory//.gitlab-ci.yml@refs/heads/feature-branch-1")
    );
    assert!(!c.untrusted_source);

    // Numeric ids as numbers; no `ref_path`: the ref is rebuilt from `ref`.
    let mut numeric = payload.clone();
    numeric["project_id"] = json!(20);
    numeric["job_id"] = json!(302);
    numeric.as_object_mut().expect("object").remove("ref_path");
    let w = workload(v.verify(&key.token(&numeric)).await.expect("verifies"));
    assert_eq!(w.claims.repository_id.as_deref(), Some("20"));
    assert_eq!(w.run_binding.as_deref(), Some("gl-job:302"));
    assert_eq!(
        w.claims.git_ref.as_deref(),
        Some("refs/heads/feature-branch-1")
    );

    // A merge-request pipeline on an unprotected ref is untrusted and has no branch.
    let mut mr = payload.clone();
    mr["pipeline_source"] = json!("merge_request_event");
    let w = workload(v.verify(&key.token(&mr)).await.expect("verifies"));
    assert!(w.claims.untrusted_source);
    assert_eq!(w.claims.branch, None);
}

#[tokio::test]
async fn kubernetes_projected_service_account_case() {
    let key = TestKey::rsa("k8s-1");
    let clock = ManualClock::new(NOW);
    let payload = case("kubernetes-projected-service-account.json");
    let cfg = IssuerConfig::new(
        "cluster",
        "https://kubernetes.default.svc.cluster.local",
        IssuerKind::Workload,
        AUD,
        JwksSource::Static(jwk_set(&[&key])),
    )
    .with_preset(Preset::Kubernetes);
    let v = verifier(vec![cfg], &clock);
    let w = workload(v.verify(&key.token(&payload)).await.expect("verifies"));

    assert_eq!(
        w.id,
        "https://kubernetes.default.svc.cluster.local#sa:0a1b2c3d-4e5f-4a6b-9c8d-7e6f5a4b3c2d"
    );
    assert_eq!(w.subject, "system:serviceaccount:agents:coding-agent");
    assert_eq!(w.preset, "kubernetes");
    assert_eq!(
        w.run_binding.as_deref(),
        Some("pod:f1e2d3c4-b5a6-4978-8877-665544332211")
    );
    assert_eq!(w.on_behalf_of, None);
    assert_eq!(w.claims.namespace.as_deref(), Some("agents"));
    assert_eq!(w.claims.service_account.as_deref(), Some("coding-agent"));
    assert_eq!(
        w.claims.service_account_uid.as_deref(),
        Some("0a1b2c3d-4e5f-4a6b-9c8d-7e6f5a4b3c2d")
    );
    assert!(!w.claims.untrusted_source);

    // A missing service account UID is a claims error, never a fallback to the name.
    let mut no_uid = payload.clone();
    no_uid["kubernetes.io"]["serviceaccount"]
        .as_object_mut()
        .expect("object")
        .remove("uid");
    rejected(&v, &key.token(&no_uid), ErrorCode::ClaimsInvalid).await;

    // A correctly signed token whose service account carries `uid` twice: serde_json would keep
    // the second, another parser the first. Refused, whichever comes first.
    let text = serde_json::to_string(&payload).expect("json");
    let real = "\"uid\":\"0a1b2c3d-4e5f-4a6b-9c8d-7e6f5a4b3c2d\"";
    assert!(text.contains(real), "{text}");
    for twice in [
        format!("{real},\"uid\":\"ffffffff-0000-4000-8000-000000000000\""),
        format!("\"uid\":\"ffffffff-0000-4000-8000-000000000000\",{real}"),
    ] {
        let claims = text.replacen(real, &twice, 1);
        let msg = format!(
            "{}.{}",
            b64_json(&json!({"alg": key.alg(), "kid": key.kid, "typ": "JWT"})),
            URL_SAFE_NO_PAD.encode(claims.as_bytes())
        );
        let token = format!(
            "{msg}.{}",
            URL_SAFE_NO_PAD.encode(key.sign_bytes(msg.as_bytes()))
        );
        let e = rejected(&v, &token, ErrorCode::TokenMalformed).await;
        assert!(e.message.contains("uid"), "{e}");
    }
}

#[tokio::test]
async fn human_issuer_maps_id_and_groups() {
    let key = TestKey::ed("idp-1");
    let clock = ManualClock::new(NOW);
    let mut cfg = IssuerConfig::new(
        "idp",
        ISS,
        IssuerKind::Human,
        AUD,
        JwksSource::Static(jwk_set(&[&key])),
    )
    .with_algorithms([SigningAlgorithm::EdDSA]);
    cfg.id_claim = Some("preferred_username".into());
    let v = verifier(vec![cfg], &clock);

    let mut c = claims(NOW);
    c["preferred_username"] = json!("alice");
    c["groups"] = json!(["db-approvers", "oncall"]);
    match v.verify(&key.token(&c)).await.expect("verifies") {
        Principal::Human(h) => {
            assert_eq!(h.id, "alice");
            assert_eq!(h.issuer, ISS);
            assert_eq!(
                h.groups,
                vec!["db-approvers".to_owned(), "oncall".to_owned()]
            );
        }
        other => panic!("expected a human, got {other:?}"),
    }

    c.as_object_mut().expect("object").remove("groups");
    match v.verify(&key.token(&c)).await.expect("verifies") {
        Principal::Human(h) => assert!(h.groups.is_empty()),
        other => panic!("expected a human, got {other:?}"),
    }

    c["groups"] = json!("db-approvers");
    rejected(&v, &key.token(&c), ErrorCode::ClaimsInvalid).await;
    // A group name with a hidden character could pass for an approver group on screen.
    c["groups"] = json!(["prod-approvers\u{200d}"]);
    rejected(&v, &key.token(&c), ErrorCode::ClaimsInvalid).await;
    c["groups"] = json!(["db-approvers"]);
    c["preferred_username"] = json!("bob\u{202e}");
    rejected(&v, &key.token(&c), ErrorCode::ClaimsInvalid).await;
}

#[tokio::test]
async fn generic_preset_uses_subject_claim() {
    let key = TestKey::ed("g-1");
    let clock = ManualClock::new(NOW);
    let mut cfg = generic_issuer(
        JwksSource::Static(jwk_set(&[&key])),
        SigningAlgorithm::EdDSA,
    );
    cfg.subject_claim = Some("agent_id".into());
    let v = verifier(vec![cfg], &clock);
    let mut c = claims(NOW);
    c["agent_id"] = json!(4242);
    c["repository"] = json!("acme/app");
    let w = workload(v.verify(&key.token(&c)).await.expect("verifies"));
    assert_eq!(w.id, format!("{ISS}#4242"));
    assert_eq!(w.subject, "agent-1");
    assert_eq!(w.preset, "generic");
    assert_eq!(w.run_binding, None);
    assert_eq!(w.claims.repository.as_deref(), Some("acme/app"));

    c.as_object_mut().expect("object").remove("agent_id");
    rejected(&v, &key.token(&c), ErrorCode::ClaimsInvalid).await;
}

// ---------------------------------------------------------------------------------------------
// Rejections

fn static_verifier(key: &TestKey, clock: &ManualClock) -> OidcVerifier {
    let alg = SigningAlgorithm::from_jose(key.alg()).expect("alg");
    verifier(
        vec![generic_issuer(JwksSource::Static(jwk_set(&[key])), alg)],
        clock,
    )
}

/// A token whose signature part is arbitrary bytes.
fn unsigned_token(header: &Value, claims: &Value, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64_json(header),
        b64_json(claims),
        URL_SAFE_NO_PAD.encode(sig)
    )
}

#[tokio::test]
async fn rejects_alg_none() {
    let key = TestKey::ed("k1");
    let clock = ManualClock::new(NOW);
    let v = static_verifier(&key, &clock);
    let c = claims(NOW);
    rejected(
        &v,
        &unsigned_token(&json!({"alg": "none", "kid": "k1"}), &c, b""),
        ErrorCode::AlgNotAllowed,
    )
    .await;
    rejected(
        &v,
        &unsigned_token(&json!({"alg": "None"}), &c, b""),
        ErrorCode::AlgNotAllowed,
    )
    .await;
}

#[tokio::test]
async fn rejects_hs256() {
    let key = TestKey::ed("k1");
    let clock = ManualClock::new(NOW);
    let v = static_verifier(&key, &clock);
    let header = json!({"alg": "HS256", "kid": "k1", "typ": "JWT"});
    let msg = format!("{}.{}", b64_json(&header), b64_json(&claims(NOW)));
    let hkey = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, b"some shared secret");
    let tag = aws_lc_rs::hmac::sign(&hkey, msg.as_bytes());
    let token = format!("{msg}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
    rejected(&v, &token, ErrorCode::AlgNotAllowed).await;
}

#[tokio::test]
async fn rejects_key_material_in_header() {
    let key = TestKey::ed("k1");
    let attacker = TestKey::ed("k1");
    let clock = ManualClock::new(NOW);
    let v = static_verifier(&key, &clock);
    let c = claims(NOW);
    for (param, value) in [
        ("jwk", attacker.jwk()),
        ("jku", json!("https://attacker.example/jwks.json")),
        ("x5c", json!(["MIIBszCCAVmgAwIBAgIUdGVzdA=="])),
        ("x5u", json!("https://attacker.example/cert.pem")),
    ] {
        let mut header = json!({"alg": "EdDSA", "kid": "k1"});
        header[param] = value;
        let err = rejected(
            &v,
            &attacker.token_with_header(&header, &c),
            ErrorCode::HeaderKeyForbidden,
        )
        .await;
        assert!(err.message.contains(param), "{err}");
    }
}

#[tokio::test]
async fn rejects_unknown_kid_with_one_rate_limited_refresh() {
    let known = TestKey::ed("known");
    let unknown = TestKey::ed("rotated-in");
    let server = Server::start(jwks_of(&[&known])).await;
    let clock = ManualClock::new(NOW);
    let cfg = generic_issuer(
        JwksSource::Url(format!("{}/jwks.json", server.base)),
        SigningAlgorithm::EdDSA,
    );
    let v = verifier(vec![cfg], &clock);
    assert_eq!(server.jwks_hits(), 0, "construction must not fetch");

    v.verify(&known.token(&claims(NOW)))
        .await
        .expect("known kid verifies");
    assert_eq!(server.jwks_hits(), 1, "first use fetches once");
    v.verify(&known.token(&claims(NOW))).await.expect("cached");
    assert_eq!(server.jwks_hits(), 1, "cached keys are reused");

    clock.advance(31);
    let token = unknown.token(&claims(NOW));
    rejected(&v, &token, ErrorCode::UnknownKid).await;
    assert_eq!(
        server.jwks_hits(),
        2,
        "an unknown kid triggers exactly one refresh"
    );
    rejected(&v, &token, ErrorCode::UnknownKid).await;
    assert_eq!(
        server.jwks_hits(),
        2,
        "a second unknown kid right after does not fetch"
    );
    clock.advance(20);
    rejected(&v, &token, ErrorCode::UnknownKid).await;
    assert_eq!(server.jwks_hits(), 2, "still inside the minimum interval");
    clock.advance(11);
    rejected(&v, &token, ErrorCode::UnknownKid).await;
    assert_eq!(
        server.jwks_hits(),
        3,
        "past the minimum interval a refresh is allowed again"
    );

    // Once the issuer publishes the key, the next permitted refresh picks it up.
    server.set_jwks(jwks_of(&[&known, &unknown]));
    clock.advance(31);
    v.verify(&token).await.expect("published key verifies");
    assert_eq!(server.jwks_hits(), 4);
}

#[tokio::test]
async fn rejects_wrong_issuer() {
    let key = TestKey::ed("k1");
    let clock = ManualClock::new(NOW);
    let v = static_verifier(&key, &clock);
    let mut c = claims(NOW);
    c["iss"] = json!("https://evil.example");
    rejected(&v, &key.token(&c), ErrorCode::UnknownIssuer).await;
    c["iss"] = json!(format!("{ISS}/"));
    rejected(&v, &key.token(&c), ErrorCode::UnknownIssuer).await;
    c.as_object_mut().expect("object").remove("iss");
    rejected(&v, &key.token(&c), ErrorCode::ClaimsInvalid).await;
}

#[tokio::test]
async fn rejects_wrong_audience() {
    let key = TestKey::ed("k1");
    let clock = ManualClock::new(NOW);
    let v = static_verifier(&key, &clock);
    let mut c = claims(NOW);
    c["aud"] = json!("https://other.example");
    rejected(&v, &key.token(&c), ErrorCode::AudienceMismatch).await;
    c["aud"] = json!(["https://other.example", "sts.amazonaws.com"]);
    rejected(&v, &key.token(&c), ErrorCode::AudienceMismatch).await;
    c.as_object_mut().expect("object").remove("aud");
    rejected(&v, &key.token(&c), ErrorCode::AudienceMismatch).await;
    c["aud"] = json!(["https://other.example", AUD]);
    v.verify(&key.token(&c))
        .await
        .expect("array containing the audience verifies");
}

#[tokio::test]
async fn expiry_uses_the_injected_clock_and_leeway() {
    let key = TestKey::ed("k1");
    let clock = ManualClock::new(NOW);
    let v = static_verifier(&key, &clock);
    let mut c = claims(NOW - 3600);
    c["exp"] = json!(NOW - 61);
    rejected(&v, &key.token(&c), ErrorCode::TokenExpired).await;
    c["exp"] = json!(NOW - 59);
    let w = workload(v.verify(&key.token(&c)).await.expect("within leeway"));
    assert_eq!(w.token_expires_at_unix_secs, NOW - 59);
    // Moving the clock is what expires it, not the wall clock.
    clock.advance(2);
    rejected(&v, &key.token(&c), ErrorCode::TokenExpired).await;
    c.as_object_mut().expect("object").remove("exp");
    rejected(&v, &key.token(&c), ErrorCode::ClaimsInvalid).await;
    c["exp"] = json!("tomorrow");
    rejected(&v, &key.token(&c), ErrorCode::ClaimsInvalid).await;
}

#[tokio::test]
async fn rejects_not_yet_valid() {
    let key = TestKey::ed("k1");
    let clock = ManualClock::new(NOW);
    let v = static_verifier(&key, &clock);
    let mut c = claims(NOW);
    c["nbf"] = json!(NOW + 61);
    rejected(&v, &key.token(&c), ErrorCode::TokenNotYetValid).await;
    c["nbf"] = json!(NOW + 59);
    v.verify(&key.token(&c)).await.expect("within leeway");
    c["nbf"] = json!(NOW);
    c["iat"] = json!(NOW + 61);
    rejected(&v, &key.token(&c), ErrorCode::TokenNotYetValid).await;
}

#[tokio::test]
async fn rejects_malformed_tokens() {
    let key = TestKey::ed("k1");
    let clock = ManualClock::new(NOW);
    let v = static_verifier(&key, &clock);
    let good = key.token(&claims(NOW));
    let parts: Vec<&str> = good.split('.').collect();
    let h = b64_json(&json!({"alg": "EdDSA", "kid": "k1"}));
    let p = b64_json(&claims(NOW));
    let not_json = URL_SAFE_NO_PAD.encode(b"not json");
    let array = URL_SAFE_NO_PAD.encode(b"[1,2]");
    let dup = URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA","alg":"none","kid":"k1"}"#);
    for token in [
        "abc".to_owned(),
        format!("{}.{}", parts[0], parts[1]),
        format!("{good}.extra"),
        format!("!!!.{}.{}", parts[1], parts[2]),
        format!("{}.{}.%%%", parts[0], parts[1]),
        format!("{h}=.{p}.{}", parts[2]),
        format!("{not_json}.{p}.{}", parts[2]),
        format!("{h}.{not_json}.{}", parts[2]),
        format!("{array}.{p}.{}", parts[2]),
        format!("{h}.{array}.{}", parts[2]),
        format!("{dup}.{p}.{}", parts[2]),
        format!(".{p}.{}", parts[2]),
        format!("{}.{}.{}", b64_json(&json!({"kid": "k1"})), p, parts[2]),
    ] {
        rejected(&v, &token, ErrorCode::TokenMalformed).await;
    }
    rejected(&v, "", ErrorCode::TokenMalformed).await;
}

#[tokio::test]
async fn rejects_oversized_token_before_parsing() {
    let key = TestKey::ed("k1");
    let clock = ManualClock::new(NOW);
    let v = static_verifier(&key, &clock);
    // 20 KB of garbage that would be `token_malformed` if it were parsed at all.
    let garbage = "@".repeat(20 * 1024);
    rejected(&v, &garbage, ErrorCode::TokenTooLarge).await;
    // A validly signed token over the bound is refused as well.
    let mut c = claims(NOW);
    c["padding"] = json!("x".repeat(17 * 1024));
    rejected(&v, &key.token(&c), ErrorCode::TokenTooLarge).await;
}

#[tokio::test]
async fn rejects_alg_outside_the_issuers_allow_list() {
    let ed = TestKey::ed("ed-1");
    let ec = TestKey::ec("ec-1");
    let clock = ManualClock::new(NOW);
    // The JWKS even holds the P-256 key: the allow-list still refuses ES256.
    let cfg = generic_issuer(
        JwksSource::Static(jwk_set(&[&ed, &ec])),
        SigningAlgorithm::EdDSA,
    );
    let v = verifier(vec![cfg], &clock);
    v.verify(&ed.token(&claims(NOW)))
        .await
        .expect("EdDSA verifies");
    rejected(&v, &ec.token(&claims(NOW)), ErrorCode::AlgNotAllowed).await;
    rejected(
        &v,
        &unsigned_token(
            &json!({"alg": "PS256", "kid": "ed-1"}),
            &claims(NOW),
            b"sig",
        ),
        ErrorCode::AlgNotAllowed,
    )
    .await;
}

#[tokio::test]
async fn rejects_bad_signatures() {
    let key = TestKey::ed("k1");
    let impostor = TestKey::ed("k1");
    let clock = ManualClock::new(NOW);
    let v = static_verifier(&key, &clock);
    rejected(
        &v,
        &impostor.token(&claims(NOW)),
        ErrorCode::SignatureInvalid,
    )
    .await;

    // A payload swapped under a valid signature.
    let good = key.token(&claims(NOW));
    let mut other = claims(NOW);
    other["sub"] = json!("admin");
    let parts: Vec<&str> = good.split('.').collect();
    let swapped = format!("{}.{}.{}", parts[0], b64_json(&other), parts[2]);
    rejected(&v, &swapped, ErrorCode::SignatureInvalid).await;
}

#[tokio::test]
async fn kid_is_optional_only_with_a_single_matching_key() {
    let a = TestKey::ed("a");
    let b = TestKey::ed("b");
    let clock = ManualClock::new(NOW);
    let header = json!({"alg": "EdDSA", "typ": "JWT"});

    let one = verifier(
        vec![generic_issuer(
            JwksSource::Static(jwk_set(&[&a])),
            SigningAlgorithm::EdDSA,
        )],
        &clock,
    );
    one.verify(&a.token_with_header(&header, &claims(NOW)))
        .await
        .expect("single key, no kid");

    let two = verifier(
        vec![generic_issuer(
            JwksSource::Static(jwk_set(&[&a, &b])),
            SigningAlgorithm::EdDSA,
        )],
        &clock,
    );
    rejected(
        &two,
        &a.token_with_header(&header, &claims(NOW)),
        ErrorCode::UnknownKid,
    )
    .await;
}

#[tokio::test]
async fn jwk_alg_must_match_header_alg() {
    let key = TestKey::ec("k1");
    let clock = ManualClock::new(NOW);
    let mut jwk = key.jwk();
    jwk["alg"] = json!("ES384");
    let set: JwkSet = serde_json::from_value(json!({"keys": [jwk]})).expect("set");
    let v = verifier(
        vec![generic_issuer(
            JwksSource::Static(set),
            SigningAlgorithm::ES256,
        )],
        &clock,
    );
    rejected(&v, &key.token(&claims(NOW)), ErrorCode::SignatureInvalid).await;
}

#[tokio::test]
async fn jwks_unavailable_when_the_issuer_cannot_be_reached() {
    let key = TestKey::ed("k1");
    // Bind and drop to get a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let clock = ManualClock::new(NOW);
    let cfg = generic_issuer(
        JwksSource::Url(format!("http://127.0.0.1:{port}/jwks.json")),
        SigningAlgorithm::EdDSA,
    );
    let v = verifier(vec![cfg], &clock);
    rejected(&v, &key.token(&claims(NOW)), ErrorCode::JwksUnavailable).await;
}

// ---------------------------------------------------------------------------------------------
// Discovery and rotation

#[tokio::test]
async fn oidc_discovery_over_http() {
    let key = TestKey::rsa("disc-1");
    let server = Server::start(jwks_of(&[&key])).await;
    let clock = ManualClock::new(NOW);
    let cfg = IssuerConfig::new(
        "disc",
        server.base.clone(),
        IssuerKind::Workload,
        AUD,
        JwksSource::Discovery,
    )
    .with_preset(Preset::Generic);
    let v = verifier(vec![cfg], &clock);
    assert_eq!(
        (server.discovery_hits(), server.jwks_hits()),
        (0, 0),
        "lazy"
    );

    let mut c = claims(NOW);
    c["iss"] = json!(server.base);
    let w = workload(
        v.verify(&key.token(&c))
            .await
            .expect("verifies via discovery"),
    );
    assert_eq!(w.id, format!("{}#agent-1", server.base));
    assert_eq!((server.discovery_hits(), server.jwks_hits()), (1, 1));

    v.verify(&key.token(&c)).await.expect("cached");
    assert_eq!((server.discovery_hits(), server.jwks_hits()), (1, 1));

    // After the cache TTL the keys are fetched again (discovery re-run).
    clock.advance(3601);
    let mut later = claims(NOW + 3601);
    later["iss"] = json!(server.base);
    v.verify(&key.token(&later))
        .await
        .expect("verifies after refresh");
    assert_eq!((server.discovery_hits(), server.jwks_hits()), (2, 2));
}

#[tokio::test]
async fn discovery_document_for_another_issuer_is_refused() {
    let key = TestKey::ed("k1");
    let server = Server::start(jwks_of(&[&key])).await;
    *server.state.issuer.lock().expect("lock") = "https://someone-else.example".into();
    let clock = ManualClock::new(NOW);
    let cfg = IssuerConfig::new(
        "disc",
        server.base.clone(),
        IssuerKind::Workload,
        AUD,
        JwksSource::Discovery,
    )
    .with_algorithms([SigningAlgorithm::EdDSA]);
    let v = verifier(vec![cfg], &clock);
    let mut c = claims(NOW);
    c["iss"] = json!(server.base);
    rejected(&v, &key.token(&c), ErrorCode::JwksUnavailable).await;
    assert_eq!(server.jwks_hits(), 0);
}

fn temp_path(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "latch-identity-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ))
}

#[tokio::test]
async fn pinned_file_key_rotation_without_restart() {
    let old = TestKey::ed("2025-old");
    let new = TestKey::ed("2026-new");
    let path = temp_path("jwks.json");
    std::fs::write(&path, serde_json::to_vec(&jwks_of(&[&old])).expect("json")).expect("write");
    let clock = ManualClock::new(NOW);
    let v = verifier(
        vec![generic_issuer(
            JwksSource::File(path.clone()),
            SigningAlgorithm::EdDSA,
        )],
        &clock,
    );

    v.verify(&old.token(&claims(NOW)))
        .await
        .expect("old key verifies");
    let token = new.token(&claims(NOW));
    rejected(&v, &token, ErrorCode::UnknownKid).await;

    std::fs::write(
        &path,
        serde_json::to_vec(&jwks_of(&[&old, &new])).expect("json"),
    )
    .expect("rewrite");
    rejected(&v, &token, ErrorCode::UnknownKid).await; // refreshed too recently
    clock.advance(31);
    v.verify(&token)
        .await
        .expect("rotated key verifies after the file is re-read");
    v.verify(&old.token(&claims(NOW)))
        .await
        .expect("old key still verifies");
    let _ = std::fs::remove_file(&path);
}

// ---------------------------------------------------------------------------------------------
// Configuration

#[derive(serde::Deserialize)]
struct Doc {
    issuers: Vec<IssuerConfig>,
}

#[test]
fn issuers_parse_from_toml() {
    let doc: Doc = toml::from_str(
        r#"
        [[issuers]]
        name = "github"
        issuer = "https://token.actions.githubusercontent.com"
        kind = "workload"
        preset = "github_actions"
        audience = "https://latch.example"
        algorithms = ["RS256"]
        jwks = { discovery = true }
        leeway = "60s"

        [[issuers]]
        name = "gitlab"
        issuer = "https://gitlab.example"
        kind = "workload"
        preset = "gitlab_ci"
        audience = "https://latch.example"
        jwks = { url = "https://gitlab.example/oauth/discovery/keys" }

        [[issuers]]
        name = "cluster"
        issuer = "https://kubernetes.default.svc.cluster.local"
        kind = "workload"
        preset = "kubernetes"
        audience = "https://latch.example"
        algorithms = ["RS256", "ES256"]
        jwks = { file = "keys/cluster-jwks.json" }
        leeway = "2m"

        [[issuers]]
        name = "sso"
        issuer = "https://sso.example"
        kind = "human"
        audience = "latch"
        algorithms = ["EdDSA"]
        id_claim = "preferred_username"
        groups_claim = "roles"
        "#,
    )
    .expect("parses");
    let i = &doc.issuers;
    assert_eq!(i[0].jwks, JwksSource::Discovery);
    assert_eq!(i[0].preset, Some(Preset::GithubActions));
    assert_eq!(i[0].leeway, Duration::from_secs(60));
    assert_eq!(
        i[1].jwks,
        JwksSource::Url("https://gitlab.example/oauth/discovery/keys".into())
    );
    assert_eq!(i[1].algorithms, vec![SigningAlgorithm::RS256]);
    assert_eq!(i[2].jwks, JwksSource::File("keys/cluster-jwks.json".into()));
    assert_eq!(i[2].leeway, Duration::from_secs(120));
    assert_eq!(i[3].effective_preset(), Preset::Human);
    assert_eq!(i[3].jwks, JwksSource::Discovery);
    let clock = ManualClock::new(NOW);
    OidcVerifier::new(
        doc.issuers,
        VerifierOptions::default(),
        Arc::new(clock),
        http(),
    )
    .expect("valid");
}

#[test]
fn bad_toml_is_refused() {
    for bad in [
        // unknown field
        r#"[[issuers]]
           name = "x"
           issuer = "https://x.example"
           kind = "workload"
           audience = "a"
           audiences = ["b"]"#,
        // HS256 is not an algorithm Latch accepts
        r#"[[issuers]]
           name = "x"
           issuer = "https://x.example"
           kind = "workload"
           audience = "a"
           algorithms = ["HS256"]"#,
        // two key sources
        r#"[[issuers]]
           name = "x"
           issuer = "https://x.example"
           kind = "workload"
           audience = "a"
           jwks = { discovery = true, url = "https://x.example/keys" }"#,
        // no audience
        r#"[[issuers]]
           name = "x"
           issuer = "https://x.example"
           kind = "workload""#,
    ] {
        assert!(toml::from_str::<Doc>(bad).is_err(), "accepted: {bad}");
    }
}

#[test]
fn invalid_configurations_are_config_errors() {
    let clock = ManualClock::new(NOW);
    let build = |issuers: Vec<IssuerConfig>| {
        OidcVerifier::new(
            issuers,
            VerifierOptions::default(),
            Arc::new(clock.clone()),
            http(),
        )
        .expect_err("must be refused")
    };
    let base = || {
        IssuerConfig::new(
            "x",
            "https://x.example",
            IssuerKind::Workload,
            AUD,
            JwksSource::Discovery,
        )
    };

    assert!(matches!(
        build(vec![base().with_leeway(Duration::from_secs(301))]),
        ConfigError::LeewayTooLarge { .. }
    ));
    assert!(matches!(
        build(vec![base().with_algorithms([])]),
        ConfigError::EmptyField {
            field: "algorithms",
            ..
        }
    ));
    let mut no_aud = base();
    no_aud.audience.clear();
    assert!(matches!(
        build(vec![no_aud]),
        ConfigError::EmptyField {
            field: "audience",
            ..
        }
    ));
    assert!(matches!(
        build(vec![base().with_preset(Preset::Human)]),
        ConfigError::PresetKindMismatch { .. }
    ));
    let mut human_with_preset = base().with_preset(Preset::GithubActions);
    human_with_preset.kind = IssuerKind::Human;
    assert!(matches!(
        build(vec![human_with_preset]),
        ConfigError::PresetKindMismatch { .. }
    ));
    let mut misplaced = base().with_preset(Preset::GithubActions);
    misplaced.groups_claim = Some("roles".into());
    assert!(matches!(
        build(vec![misplaced]),
        ConfigError::OptionNotApplicable { .. }
    ));
    let mut other = base();
    other.name = "y".into();
    assert!(matches!(
        build(vec![base(), other]),
        ConfigError::DuplicateIssuer { .. }
    ));
    let mut other = base();
    other.issuer = "https://y.example".into();
    assert!(matches!(
        build(vec![base(), other]),
        ConfigError::DuplicateName { .. }
    ));
    let plain_http = IssuerConfig::new(
        "x",
        "http://x.example",
        IssuerKind::Workload,
        AUD,
        JwksSource::Discovery,
    );
    let err = build(vec![plain_http]);
    assert!(matches!(err, ConfigError::BadUrl { .. }));
    assert!(err.to_string().starts_with("issuer `x`:"), "{err}");
    let url = base();
    let url = IssuerConfig {
        jwks: JwksSource::Url("http://keys.example/jwks".into()),
        ..url
    };
    assert!(matches!(build(vec![url]), ConfigError::BadUrl { .. }));
    // A non-URL issuer is fine with in-process keys (the development issuer).
    let dev = IssuerConfig::new(
        "dev",
        "latch-dev://workload",
        IssuerKind::Workload,
        AUD,
        JwksSource::Static(JwkSet { keys: vec![] }),
    );
    OidcVerifier::new(
        vec![dev],
        VerifierOptions::default(),
        Arc::new(clock.clone()),
        http(),
    )
    .expect("valid");
}

#[tokio::test]
async fn token_lifetimes_are_bounded_per_issuer() {
    let key = TestKey::ed("k1");
    let clock = ManualClock::new(NOW);
    let v = static_verifier(&key, &clock);
    // Generic issuers: one hour by default.
    let mut c = claims(NOW);
    c["exp"] = json!(NOW + 3600);
    v.verify(&key.token(&c)).await.expect("one hour is fine");
    c["exp"] = json!(NOW + 3601);
    let e = rejected(&v, &key.token(&c), ErrorCode::TokenLifetimeTooLong).await;
    assert!(e.message.contains("3601"), "{e}");
    // The year 3000.
    c["exp"] = json!(32_503_680_000_i64);
    rejected(&v, &key.token(&c), ErrorCode::TokenLifetimeTooLong).await;
    // Without `iat`, measured from now.
    c.as_object_mut().expect("object").remove("iat");
    rejected(&v, &key.token(&c), ErrorCode::TokenLifetimeTooLong).await;
    c["exp"] = json!(NOW + 3000);
    v.verify(&key.token(&c)).await.expect("no iat, short");
    // Exactly the bound from now, and a leeway's worth past it (an attacker got 3660 s).
    c["exp"] = json!(NOW + 3600);
    v.verify(&key.token(&c)).await.expect("no iat, the bound");
    c["exp"] = json!(NOW + 3630);
    rejected(&v, &key.token(&c), ErrorCode::TokenLifetimeTooLong).await;
    // A backdated `iat` does not buy time: exp - iat is what counts.
    let mut c = claims(NOW);
    c["iat"] = json!(NOW - 86_400);
    c["exp"] = json!(NOW + 600);
    rejected(&v, &key.token(&c), ErrorCode::TokenLifetimeTooLong).await;

    // Configured per issuer.
    let alg = SigningAlgorithm::from_jose(key.alg()).expect("alg");
    let v = verifier(
        vec![
            generic_issuer(JwksSource::Static(jwk_set(&[&key])), alg)
                .with_max_token_lifetime(Duration::from_secs(3 * 3600)),
        ],
        &clock,
    );
    let mut c = claims(NOW);
    c["exp"] = json!(NOW + 3 * 3600);
    v.verify(&key.token(&c)).await.expect("configured 3h");

    // Out-of-range settings do not start.
    for bad in [Duration::from_secs(30), Duration::from_secs(31 * 86_400)] {
        let cfg =
            generic_issuer(JwksSource::Static(jwk_set(&[&key])), alg).with_max_token_lifetime(bad);
        let r = OidcVerifier::new(
            vec![cfg],
            VerifierOptions::default(),
            Arc::new(clock.clone()),
            http(),
        );
        assert!(
            matches!(
                r,
                Err(latch_identity::ConfigError::TokenLifetimeOutOfRange { .. })
            ),
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn github_tokens_live_at_most_fifteen_minutes() {
    let key = TestKey::rsa("gh-1");
    let clock = ManualClock::new(NOW);
    let cfg = IssuerConfig::new(
        "github",
        "https://token.actions.githubusercontent.com",
        IssuerKind::Workload,
        AUD,
        JwksSource::Static(jwk_set(&[&key])),
    )
    .with_preset(Preset::GithubActions);
    let v = verifier(vec![cfg], &clock);
    let mut payload = case("github-actions-environment.json");
    payload["aud"] = json!(AUD);
    let iat = payload["iat"].as_i64().expect("iat");
    clock.set(iat + 10);
    payload["exp"] = json!(iat + 900);
    v.verify(&key.token(&payload)).await.expect("15 minutes");
    payload["exp"] = json!(iat + 901);
    rejected(&v, &key.token(&payload), ErrorCode::TokenLifetimeTooLong).await;
}

#[tokio::test]
async fn an_extended_kubernetes_token_expires_at_warnafter() {
    let key = TestKey::rsa("k8s-1");
    let clock = ManualClock::new(NOW);
    let cfg = IssuerConfig::new(
        "cluster",
        "https://kubernetes.default.svc.cluster.local",
        IssuerKind::Workload,
        AUD,
        JwksSource::Static(jwk_set(&[&key])),
    )
    .with_preset(Preset::Kubernetes);
    let v = verifier(vec![cfg], &clock);
    let mut payload = case("kubernetes-projected-service-account.json");
    let iat = payload["iat"].as_i64().expect("iat");
    clock.set(iat + 60);
    // The API server extended a kubelet token to a year and kept the intended expiry.
    payload["exp"] = json!(iat + 365 * 86_400);
    rejected(&v, &key.token(&payload), ErrorCode::TokenLifetimeTooLong).await;
    payload["kubernetes.io"]["warnafter"] = json!(iat + 3607);
    let w = workload(v.verify(&key.token(&payload)).await.expect("verifies"));
    assert_eq!(w.token_expires_at_unix_secs, iat + 3607);
    clock.set(iat + 3607 + 61);
    rejected(&v, &key.token(&payload), ErrorCode::TokenExpired).await;
    payload["kubernetes.io"]["warnafter"] = json!("soon");
    clock.set(iat + 60);
    rejected(&v, &key.token(&payload), ErrorCode::ClaimsInvalid).await;
}
