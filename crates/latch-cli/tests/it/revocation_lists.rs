//! The revocation lists as relying parties fetch them (issue 13): the CRL's validity window
//! (`nextUpdate − thisUpdate`) is no longer than the shortest `max_ttl` among the X.509 CA's
//! resources, and neither list may be cached by HTTP caches (`Cache-Control: no-cache`), so a
//! relying party never holds one longer than that window.

use latch_testkit::{TestOptions, TestServer};
use x509_parser::prelude::FromDer;

#[tokio::test]
async fn crl_and_krl_are_never_cached_beyond_the_shortest_certificate_life() {
    let s = TestServer::start_with(TestOptions {
        extra_config: r#"
[[resources]]
id = "crl-long"
kind = "x509"
environment = "sandbox"
audience = "mtls"
actions = ["read"]
max_ttl = "30m"

[[resources]]
id = "crl-short"
kind = "x509"
environment = "sandbox"
audience = "mtls"
actions = ["read"]
max_ttl = "10m"

[[resources]]
id = "krl-host"
kind = "ssh"
environment = "sandbox"
audience = "ssh"
actions = ["read"]
max_ttl = "45s"
[resources.settings]
principals = ["deploy"]
"#
        .into(),
        ..Default::default()
    })
    .await;
    let fetch = async |path: &str| {
        let r = s
            .http
            .get(format!("{}{path}", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let cache = r
            .headers()
            .get("cache-control")
            .map(|v| v.to_str().unwrap().to_owned());
        (cache, r.bytes().await.unwrap())
    };

    let (cache, crl) = fetch("/v1/x509/crl").await;
    assert_eq!(cache.as_deref(), Some("no-cache"));
    let mut windows = Vec::new();
    for pem in x509_parser::pem::Pem::iter_from_buffer(&crl) {
        let pem = pem.unwrap();
        let (_, crl) =
            x509_parser::revocation_list::CertificateRevocationList::from_der(&pem.contents)
                .unwrap();
        let next = crl.next_update().expect("nextUpdate").timestamp();
        windows.push(next - crl.last_update().timestamp());
    }
    // The shortest max_ttl of the x509 resources (10 min), not the ssh one's.
    assert_eq!(windows, vec![600]);

    let (cache, krl) = fetch("/v1/ssh/krl").await;
    assert_eq!(cache.as_deref(), Some("no-cache"));
    assert_eq!(&krl[..8], b"SSHKRL\n\0");
    s.stop().await;
}
