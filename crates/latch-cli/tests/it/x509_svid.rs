//! X.509-SVIDs over mutual TLS on the broker's listener (`[server.tls]`, SPIFFE X.509-SVID
//! specification). A test CA per trust domain makes SVIDs with rcgen; each is first parsed by
//! the `spiffe` package (PyPI, `X509Svid.parse`), then presented by Python's own TLS client
//! (`ssl` + `http.client`: an independent client) to a broker whose `kind = "spiffe"` issuer's
//! bundle holds the CA as its `x509-svid` authority.
//!
//! A valid SVID is the caller's identity (`GET /v1/whoami`, and a grant of the payments
//! database by the example policy matching its SPIFFE path); a bearer token on the same
//! connection still wins. Refused in the handshake: a leaf with a DNS SAN beside its URI SAN
//! (stricter than the specification, which the `spiffe` package follows), a CA certificate,
//! a leaf without a URI SAN, a leaf of the configured trust domain signed by another trust
//! domain's CA, and a leaf of a trust domain that is not configured.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use latch_testkit::{TestOptions, TestServer, tool_available};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use serde_json::{Value, json};

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    cert: rcgen::Certificate,
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}

fn ca(td: &str) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.subject_alt_names = vec![uri(&format!("spiffe://{td}"))];
    p.distinguished_name
        .push(DnType::CommonName, format!("{td} test ca"));
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    Ca {
        params: p,
        key,
        cert,
    }
}

/// A leaf signed by `ca`: (certificate PEM, key PEM).
fn leaf(ca: &Ca, sans: Vec<SanType>, leaf_is_ca: bool) -> (String, String) {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names = sans;
    p.is_ca = if leaf_is_ca {
        IsCa::Ca(BasicConstraints::Unconstrained)
    } else {
        IsCa::ExplicitNoCa
    };
    p.key_usages = if leaf_is_ca {
        vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ]
    } else {
        vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ]
    };
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.distinguished_name.push(DnType::CommonName, "workload");
    let key = KeyPair::generate().unwrap();
    let cert = p
        .signed_by(&key, &Issuer::from_params(&ca.params, &ca.key))
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

/// The SPIFFE bundle (JWK set) of `ca`'s trust domain: one `x509-svid` authority.
fn bundle(ca: &Ca) -> Value {
    let point = ca.key.public_key_raw();
    json!({"keys": [{"use": "x509-svid", "kty": "EC", "crv": "P-256",
                      "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                      "y": URL_SAFE_NO_PAD.encode(&point[33..]),
                      "x5c": [STANDARD.encode(ca.cert.der())]}],
           "spiffe_refresh_hint": 300})
}

const CLIENT: &str = r#"
import http.client, json, ssl, sys
from spiffe.svid.x509_svid import X509Svid
cert, key, server_ca, port, token = sys.argv[1:6]
out = {}
try:
    out["spiffe"] = str(X509Svid.parse(open(cert, "rb").read(), open(key, "rb").read()).spiffe_id)
except Exception as e:
    out["spiffe"] = "refused " + type(e).__name__
ctx = ssl.create_default_context(cafile=server_ca)
ctx.load_cert_chain(cert, key)
def call(method, path, body=None):
    c = http.client.HTTPSConnection("127.0.0.1", int(port), context=ctx, timeout=10)
    h = {"content-type": "application/json"}
    if token:
        h["authorization"] = "Bearer " + token
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
    r = c.getresponse()
    return {"status": r.status, "body": json.loads(r.read() or b"null")}
try:
    out["whoami"] = call("GET", "/v1/whoami")
    task = call("POST", "/v1/tasks", {"purpose": "settle payments", "environment": "production",
                                       "ttl_secs": 600})
    out["task"] = task
    if task["status"] == 201:
        out["grant"] = call("POST", "/v1/tasks/%s/requests" % task["body"]["id"],
                            {"resource": "payments-db", "actions": ["read"], "ttl_secs": 600,
                             "justification": "test"})
except (ssl.SSLError, OSError, http.client.HTTPException) as e:
    out["tls"] = "refused " + type(e).__name__
plain = ssl.create_default_context(cafile=server_ca)
c = http.client.HTTPSConnection("127.0.0.1", int(port), context=plain, timeout=10)
c.request("GET", "/metrics")
out["refused"] = {l.split('reason="')[1].split('"')[0]: float(l.rsplit(" ", 1)[1])
                  for l in c.getresponse().read().decode().splitlines()
                  if l.startswith("latch_tls_client_certificates_refused_total{")}
print(json.dumps(out))
"#;

/// Runs [`CLIENT`] with a leaf (and optionally a bearer token); its JSON verdict. The client
/// runs as a child process awaited by tokio: the broker serves on this test's runtime.
async fn present(
    dir: &std::path::Path,
    name: &str,
    chain: &(String, String),
    port: u16,
    token: &str,
) -> Value {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
    );
    std::fs::write(&cert, &chain.0).unwrap();
    std::fs::write(&key, &chain.1).unwrap();
    let out = tokio::process::Command::new("python3")
        .args(["-c", CLIENT])
        .arg(&cert)
        .arg(&key)
        .arg(dir.join("server-ca.pem"))
        .arg(port.to_string())
        .arg(token)
        .output()
        .await
        .expect("python3");
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn x509_svids_authenticate_over_mutual_tls() {
    if !tool_available("python3", &["-c", "import spiffe.svid.x509_svid"]) {
        return; // `tool_available` fails the test under CI=true.
    }
    let dir = std::env::temp_dir().join(format!("latch-x509svid-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let mesh = ca("example.org");
    let other = ca("other.example");
    // The broker's own server certificate, from a CA of its own.
    let server_ca = ca("server.test");
    let mut sp = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    sp.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let server_key = KeyPair::generate().unwrap();
    let server_cert = sp
        .signed_by(
            &server_key,
            &Issuer::from_params(&server_ca.params, &server_ca.key),
        )
        .unwrap();
    std::fs::write(dir.join("server.pem"), server_cert.pem()).unwrap();
    std::fs::write(dir.join("server-key.pem"), server_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("server-ca.pem"), server_ca.cert.pem()).unwrap();
    std::fs::write(dir.join("bundle.json"), bundle(&mesh).to_string()).unwrap();

    let s = TestServer::start_with(TestOptions {
        extra_config: format!(
            "\n[server.tls]\ncert_file = \"{d}/server.pem\"\nkey_file = \"{d}/server-key.pem\"\n\
             client_certificates = \"optional\"\n\n[[issuers]]\nname = \"mesh\"\nkind = \"spiffe\"\n\
             trust_domain = \"example.org\"\naudience = [\"https://latch.example\"]\n\
             bundle_file = \"{d}/bundle.json\"\n",
            d = dir.display()
        ),
        ..Default::default()
    })
    .await;
    let port: u16 = s.base.rsplit(':').next().unwrap().parse().unwrap();

    // A valid SVID: the spiffe package accepts it, and it is the caller.
    let id = "spiffe://example.org/ns/payments/sa/api";
    let good = leaf(&mesh, vec![uri(id)], false);
    let v = present(&dir, "good", &good, port, "").await;
    assert_eq!(v["spiffe"], id, "{v}");
    assert_eq!(v["whoami"]["status"], 200, "{v}");
    assert_eq!(v["whoami"]["body"]["kind"], "workload", "{v}");
    assert_eq!(v["whoami"]["body"]["id"], id, "{v}");
    assert_eq!(v["whoami"]["body"]["issuer"], "spiffe://example.org", "{v}");
    assert_eq!(v["task"]["status"], 201, "{v}");
    assert_eq!(v["grant"]["status"], 201, "policy by spiffe path: {v}");

    // A bearer token on the same connection still names the caller.
    let token = s.issuer.sign(&latch_testkit::TestIssuer::github_claims(
        latch_core::clock::Clock::now_unix_secs(&s.clock),
        "700",
    ));
    let v = present(&dir, "good-with-token", &good, port, &token).await;
    assert_ne!(v["whoami"]["body"]["id"], id, "{v}");
    assert_eq!(v["whoami"]["body"]["kind"], "workload", "{v}");

    // Refused in the handshake.
    for (name, chain, spiffe_accepts, reason) in [
        (
            "dns-san-beside-uri",
            leaf(
                &mesh,
                vec![
                    uri(id),
                    SanType::DnsName("api.example.org".try_into().unwrap()),
                ],
                false,
            ),
            true,
            "not_an_svid",
        ),
        (
            "ca-certificate",
            leaf(&mesh, vec![uri(id)], true),
            false,
            "not_an_svid",
        ),
        (
            "no-uri-san",
            leaf(
                &mesh,
                vec![SanType::DnsName("api.example.org".try_into().unwrap())],
                false,
            ),
            false,
            "not_an_svid",
        ),
        (
            "signed-by-another-domain",
            leaf(&other, vec![uri(id)], false),
            true,
            "chain",
        ),
        (
            "unconfigured-domain",
            leaf(
                &other,
                vec![uri("spiffe://other.example/ns/payments/sa/api")],
                false,
            ),
            true,
            "unknown_trust_domain",
        ),
    ] {
        let before = present(&dir, "good", &good, port, "").await["refused"].clone();
        let v = present(&dir, name, &chain, port, "").await;
        let grew: Vec<&String> = v["refused"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, n)| n.as_f64() > before[k.as_str()].as_f64())
            .map(|(k, _)| k)
            .collect();
        assert_eq!(grew, vec![reason], "{name}: {v} (before: {before})");
        let parsed = !v["spiffe"].as_str().unwrap_or("").starts_with("refused");
        assert_eq!(
            parsed, spiffe_accepts,
            "{name}: the spiffe package says {v}"
        );
        assert!(
            v["tls"].as_str().is_some_and(|t| t.starts_with("refused")),
            "{name} must be refused in the handshake: {v}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
