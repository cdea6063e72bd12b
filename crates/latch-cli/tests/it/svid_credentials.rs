//! SVIDs as credentials Latch mints: a `jwt` resource with `format = "jwt_svid"` (SPIFFE
//! JWT-SVID: `sub` the SPIFFE ID, required `aud`, ES256) and an `x509` resource (X.509-SVID:
//! one URI SAN), each checked by the `spiffe` package (PyPI) against the bundle Latch serves
//! at `/v1/spiffe/bundle` — what a service already verifying SVIDs would do.

use latch_testkit::{TestOptions, TestServer, tool_available};
use serde_json::Value;

const CHECK: &str = r#"
import json, sys
from cryptography import x509
from spiffe.spiffe_id.spiffe_id import TrustDomain
from spiffe.bundle.jwt_bundle.jwt_bundle import JwtBundle
from spiffe.svid.jwt_svid import JwtSvid
from spiffe.svid.x509_svid import X509Svid
import base64
token, aud, cert_pem, key_pem, bundle = sys.argv[1:6]
bundle = json.loads(bundle)
out = {}
jwt_keys = [k for k in bundle["keys"] if k["use"] == "jwt-svid"]
jb = JwtBundle.parse(TrustDomain("latch.example"), json.dumps({"keys": jwt_keys}).encode())
out["jwt"] = str(JwtSvid.parse_and_validate(token, jb, {aud}).spiffe_id)
try:
    JwtSvid.parse_and_validate(token, jb, {"https://elsewhere"})
    out["jwt_other_aud"] = "accepted"
except Exception as e:
    out["jwt_other_aud"] = "refused " + type(e).__name__
svid = X509Svid.parse(cert_pem.encode(), key_pem.encode())
out["x509"] = str(svid.spiffe_id)
cas = [x509.load_der_x509_certificate(base64.b64decode(k["x5c"][0]))
       for k in bundle["keys"] if k["use"] == "x509-svid"]
ok = False
for ca in cas:
    try:
        svid.leaf.verify_directly_issued_by(ca)
        ok = True
    except Exception:
        pass
out["x509_chains_to_bundle"] = ok
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latch_minted_svids_verify_with_the_spiffe_package() {
    if !tool_available("python3", &["-c", "import spiffe.svid.x509_svid"]) {
        return; // `tool_available` fails the test under CI=true.
    }
    let s = TestServer::start_with(TestOptions {
        extra_config: r#"
[[resources]]
id = "ledger-svid"
kind = "jwt"
environment = "sandbox"
audience = "spiffe://example.org/ns/ledger/sa/api"
actions = ["read"]
max_ttl = "10m"
[resources.settings]
format = "jwt_svid"
trust_domain = "latch.example"
path_prefix = "/agents"

[[resources]]
id = "ledger-mtls"
kind = "x509"
environment = "sandbox"
audience = "mtls"
actions = ["read"]
max_ttl = "10m"
[resources.settings]
trust_domain = "latch.example"
"#
        .to_owned(),
        ..Default::default()
    })
    .await;
    let agent = s.agent("svid-1").await;
    let task = s.open_task(&agent, "sandbox", 600).await;

    let g = s
        .request(&agent, &task, "ledger-svid", &["read"], Some(300))
        .await;
    assert_eq!(g.status, 201, "{}", g.body);
    assert_eq!(g.body["credential"]["kind"], "jwt_svid", "{}", g.body);
    let token = g.body["credential"]["value"].as_str().unwrap().to_owned();
    let spiffe_id = format!("spiffe://latch.example/agents/task/{task}");
    assert_eq!(g.body["credential"]["metadata"]["spiffe_id"], spiffe_id);

    let key = rcgen::KeyPair::generate().unwrap();
    let r = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{task}/requests"),
            serde_json::json!({"resource": "ledger-mtls", "actions": ["read"], "ttl_secs": 300,
                "justification": "test", "params": {"public_key_pem": key.public_key_pem()}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let cert = r.body["credential"]["value"].as_str().unwrap().to_owned();

    let bundle = s.get(None, "/v1/spiffe/bundle").await;
    assert_eq!(bundle.status, 200, "{}", bundle.body);
    let uses: Vec<&str> = bundle.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["use"].as_str())
        .collect();
    assert!(
        uses.contains(&"jwt-svid") && uses.contains(&"x509-svid"),
        "{uses:?}"
    );

    let out = tokio::process::Command::new("python3")
        .args([
            "-c",
            CHECK,
            &token,
            "spiffe://example.org/ns/ledger/sa/api",
            &cert,
        ])
        .arg(key.serialize_pem())
        .arg(bundle.body.to_string())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["jwt"], spiffe_id, "{v}");
    assert!(
        v["jwt_other_aud"].as_str().unwrap().starts_with("refused"),
        "{v}"
    );
    assert_eq!(
        v["x509"],
        format!("spiffe://latch.example/task/{task}"),
        "{v}"
    );
    assert_eq!(v["x509_chains_to_bundle"], true, "{v}");
}
