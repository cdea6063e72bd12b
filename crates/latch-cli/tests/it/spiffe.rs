//! SPIFFE JWT-SVIDs through the API: a trust domain (`kind = "spiffe"`, bundle file) whose
//! authority mints SVIDs here, each checked first by the `spiffe` package (PyPI); a good SVID
//! opens a production task and is granted the payments database by the example policy
//! `spiffe-payments-read`, matching its path; other SVIDs are refused with their codes.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latch_core::clock::Clock;
use latch_testkit::{TestOptions, TestServer, tool_available};
use serde_json::{Value, json};

pub(crate) const AUD: &str = "https://latch.example";

/// A SPIFFE trust domain's JWT authority (P-256), for minting JWT-SVIDs.
pub(crate) struct Authority(EcdsaKeyPair);

impl Authority {
    /// A fresh authority.
    pub(crate) fn generate() -> Self {
        Self(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap())
    }

    /// Its JWT bundle (a JWKS with `spiffe_refresh_hint`).
    pub(crate) fn bundle(&self) -> Value {
        let point = self.0.public_key().as_ref();
        let b = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        json!({"keys": [{"kty": "EC", "crv": "P-256", "x": b(&point[1..33]), "y": b(&point[33..]),
                          "kid": "mesh-1", "use": "jwt-svid"}],
               "spiffe_refresh_hint": 300})
    }

    /// A JWT-SVID for `sub`.
    pub(crate) fn svid(&self, sub: &str, aud: &str, exp: i64) -> String {
        let enc = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
        let msg = format!(
            "{}.{}",
            enc(&json!({"alg": "ES256", "kid": "mesh-1", "typ": "JWT"})),
            enc(&json!({"sub": sub, "aud": [aud], "exp": exp, "iat": exp - 600}))
        );
        let sig = self.0.sign(&SystemRandom::new(), msg.as_bytes()).unwrap();
        format!("{msg}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }
}

/// The `spiffe` package's verdict: `ok <spiffe id>` or `refused <error class>`.
fn py_verdict(token: &str, bundle: &Value) -> String {
    let script = r#"
import sys
from spiffe.spiffe_id.spiffe_id import TrustDomain
from spiffe.bundle.jwt_bundle.jwt_bundle import JwtBundle
from spiffe.svid.jwt_svid import JwtSvid
try:
    b = JwtBundle.parse(TrustDomain(sys.argv[3]), sys.argv[2].encode())
    print("ok " + str(JwtSvid.parse_and_validate(sys.argv[1], b, {sys.argv[4]}).spiffe_id))
except Exception as e:
    print("refused " + type(e).__name__)
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, token, &bundle.to_string(), "example.org", AUD])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn a_jwt_svid_is_granted_access_by_its_spiffe_path() {
    let py = tool_available("python3", &["-c", "import spiffe.svid.jwt_svid"]);
    let ca = Authority(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap());
    let bundle = ca.bundle();
    let dir = std::env::temp_dir().join(format!("latch-spiffe-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let bundle_file = dir.join("example.org.bundle.json");
    std::fs::write(&bundle_file, bundle.to_string()).unwrap();
    let s = TestServer::start_with(TestOptions {
        extra_config: format!(
            "\n[[issuers]]\nname = \"mesh\"\nkind = \"spiffe\"\ntrust_domain = \"example.org\"\n\
             audience = [\"{AUD}\"]\nbundle_file = \"{}\"\n",
            bundle_file.display()
        ),
        ..Default::default()
    })
    .await;
    let exp = s.clock.now_unix_secs() + 600;
    let api = ca.svid("spiffe://example.org/ns/payments/sa/api", AUD, exp);
    if py {
        assert_eq!(
            py_verdict(&api, &bundle),
            "ok spiffe://example.org/ns/payments/sa/api"
        );
    }

    // Granted: the example policy matches the path prefix `/ns/payments`.
    let task = s.open_task(&api, "production", 600).await;
    let g = s
        .request(&api, &task, "payments-db", &["read"], Some(600))
        .await;
    assert_eq!(g.status, 201, "{}", g.body);
    assert!(g.body["credential"]["value"].is_string(), "{}", g.body);

    // `payments` further down the path is not the payments namespace.
    let web = ca.svid("spiffe://example.org/ns/web/sa/payments", AUD, exp);
    let task = s.open_task(&web, "production", 600).await;
    let d = s
        .request(&web, &task, "payments-db", &["read"], Some(600))
        .await;
    assert_eq!(d.code(), Some("policy_denied"), "{}", d.body);

    // Refused at authentication, each with its code.
    for (what, token, code, py_ok) in [
        (
            "wrong trust domain",
            ca.svid("spiffe://evil.example/ns/payments/sa/api", AUD, exp),
            "unknown_issuer",
            false,
        ),
        (
            "wrong audience",
            ca.svid(
                "spiffe://example.org/ns/payments/sa/api",
                "https://elsewhere",
                exp,
            ),
            "audience_mismatch",
            false,
        ),
        (
            "dot-dot segment",
            ca.svid("spiffe://example.org/ns/../payments", AUD, exp),
            "spiffe_id_invalid",
            false,
        ),
    ] {
        if py {
            let verdict = py_verdict(&token, &bundle);
            assert_eq!(verdict.starts_with("ok "), py_ok, "{what}: {verdict}");
        }
        let r = s
            .post(
                Some(&token),
                "/v1/tasks",
                json!({"purpose": "p", "environment": "sandbox", "ttl_secs": 60}),
            )
            .await;
        assert_eq!(r.status, 401, "{what}: {}", r.body);
        assert_eq!(r.code(), Some(code), "{what}: {}", r.body);
    }
    std::fs::remove_dir_all(&dir).ok();
}
