//! Certificate-authority keys: generated on first start, sealed at rest, reloaded after a
//! restart, rotated with the old public keys published until what they signed has expired.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unimplemented,
    clippy::too_many_lines,
    reason = "test code: a failed step fails the test, and a scenario reads best in one piece"
)]
mod common;

use std::sync::Arc;

use common::{MemStore, master};
use latch_core::ManualClock;
use latch_core::model::Resource;
use latch_core::ports::Store;
use latch_providers::keyring::{CaKeyring, KeyError};
use latch_providers::ssh::SshProvider;
use latch_providers::x509::X509Provider;
use zeroize::Zeroizing;

fn gen_fn(tag: u8) -> impl Fn() -> Result<(Zeroizing<Vec<u8>>, Vec<u8>), KeyError> + Send + Sync {
    move || Ok((Zeroizing::new(vec![tag; 32]), vec![tag, tag]))
}

#[tokio::test]
async fn keyring_seals_reloads_and_rotates() {
    let store = MemStore::new();
    let m = master(1);
    let ring = CaKeyring::load_or_create(&store, &m, "test-ca", 1000, gen_fn(7))
        .await
        .unwrap();
    assert_eq!(ring.current().generation, 0);
    assert_eq!(&ring.current().secret[..], &[7u8; 32][..]);
    let blob = store.raw("test-ca-0000").expect("stored");
    assert!(
        !blob.windows(8).any(|w| w == [7u8; 8]),
        "private key stored in clear"
    );
    assert!(
        !format!("{ring:?}").contains("7, 7, 7"),
        "Debug shows no key"
    );

    // A restart loads the same key (the generator is not called again).
    let again = CaKeyring::load_or_create(&store, &m, "test-ca", 2000, gen_fn(9))
        .await
        .unwrap();
    assert_eq!(&again.current().secret[..], &[7u8; 32][..]);
    assert_eq!(again.current().created_at_unix_secs, 1000);

    // Another master key cannot open it.
    let err = CaKeyring::load_or_create(&store, &master(2), "test-ca", 2000, gen_fn(9))
        .await
        .unwrap_err();
    assert!(matches!(err, KeyError::Decrypt { .. }), "{err:?}");

    // Rotation: generation 1 signs; generation 0 stays published for `retain` seconds.
    let mut ring = again;
    ring.rotate(&store, &m, 5000, gen_fn(8)).await.unwrap();
    assert_eq!(ring.current().generation, 1);
    assert_eq!(&ring.current().secret[..], &[8u8; 32][..]);
    let published = |now| {
        ring.published(now, 600)
            .iter()
            .map(|g| g.generation)
            .collect::<Vec<_>>()
    };
    assert_eq!(published(5000), vec![1, 0]);
    assert_eq!(published(5599), vec![1, 0]);
    assert_eq!(
        published(5600),
        vec![1],
        "retired once its certificates have expired"
    );
    let reloaded = CaKeyring::load_or_create(&store, &m, "test-ca", 6000, gen_fn(1))
        .await
        .unwrap();
    assert_eq!(reloaded.generations().len(), 2);
}

fn resource(kind: &str, settings: serde_json::Value) -> Resource {
    Resource {
        id: format!("{kind}-res"),
        kind: kind.into(),
        environment: "sandbox".into(),
        sensitivity: "internal".into(),
        audience: "x".into(),
        actions: vec!["read".into()],
        max_ttl_secs: 600,
        max_lifetime_secs: 1800,
        default_ttl_secs: 600,
        owner: None,
        production: false,
        egress: false,
        end_task_on_budget_breach: false,
        settings,
    }
}

#[tokio::test]
async fn ssh_and_x509_rotation_keeps_old_keys_published_until_expiry() {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let m = master(3);
    let clock = ManualClock::new(1_800_000_000);
    let resources = vec![
        resource("ssh", serde_json::json!({"principals": ["deploy"]})),
        resource("x509", serde_json::json!({})),
    ];
    let ssh = SshProvider::load_or_create(store.clone(), &m, Arc::new(clock.clone()), &resources)
        .await
        .unwrap();
    let x509 = X509Provider::load_or_create(store.clone(), &m, Arc::new(clock.clone()), &resources)
        .await
        .unwrap();
    let first_ssh = ssh.ca_public_keys();
    let first_x509 = x509.ca_pem();
    assert_eq!(first_ssh.lines().count(), 1);
    assert!(first_ssh.starts_with("ssh-ed25519 "));
    assert_eq!(first_x509.matches("BEGIN CERTIFICATE").count(), 1);

    // Not due yet.
    assert!(!ssh.rotate_if_due(&m, 86_400).await.unwrap());
    clock.advance(86_400);
    assert!(ssh.rotate_if_due(&m, 86_400).await.unwrap());
    assert!(x509.rotate_if_due(&m, 86_400).await.unwrap());
    assert_eq!(ssh.current_generation(), 1);
    let both = ssh.ca_public_keys();
    assert_eq!(both.lines().count(), 2, "{both}");
    assert_eq!(
        both.lines().nth(1).unwrap(),
        first_ssh.trim(),
        "old key still published"
    );
    assert_eq!(x509.ca_pem().matches("BEGIN CERTIFICATE").count(), 2);

    // A replica started now sees the rotated keys (sealed in the store).
    let replica =
        SshProvider::load_or_create(store.clone(), &m, Arc::new(clock.clone()), &resources)
            .await
            .unwrap();
    assert_eq!(replica.current_generation(), 1);

    // Longest certificate life (max_lifetime 1800 s + 600 s back-dating for ssh) later, the old
    // keys are gone from what is served.
    clock.advance(2400);
    assert_eq!(ssh.ca_public_keys().lines().count(), 1);
    assert_ne!(ssh.ca_public_keys(), first_ssh);
    assert_eq!(x509.ca_pem().matches("BEGIN CERTIFICATE").count(), 1);
}

/// `nextUpdate − thisUpdate` of every served CRL is the shortest `max_ttl` among the CA's
/// resources (capped at one hour), so no certificate outlives one CRL validity window; a
/// CRL is signed afresh for each fetch.
#[tokio::test]
async fn crl_validity_is_the_shortest_max_ttl_of_the_cas_resources() {
    use x509_parser::prelude::FromDer;
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let m = master(4);
    let clock = ManualClock::new(1_800_000_000);
    let mut short = resource("x509", serde_json::json!({}));
    short.id = "x509-short".into();
    short.max_ttl_secs = 300;
    let mut ssh_shorter = resource("ssh", serde_json::json!({"principals": ["deploy"]}));
    ssh_shorter.max_ttl_secs = 30;
    let resources = vec![resource("x509", serde_json::json!({})), short, ssh_shorter];
    let x509 = X509Provider::load_or_create(store.clone(), &m, Arc::new(clock.clone()), &resources)
        .await
        .unwrap();
    // Only the CA's own resources count (the ssh one signs with another CA).
    assert_eq!(x509.crl_validity_secs(), 300);
    let windows = |pem_text: String| -> Vec<(i64, i64)> {
        x509_parser::pem::Pem::iter_from_buffer(pem_text.as_bytes())
            .map(|p| {
                let p = p.unwrap();
                assert_eq!(p.label, "X509 CRL");
                let (_, crl) =
                    x509_parser::revocation_list::CertificateRevocationList::from_der(&p.contents)
                        .unwrap();
                let this = crl.last_update().timestamp();
                let next = crl.next_update().expect("nextUpdate").timestamp();
                (this, next)
            })
            .collect()
    };
    let first = windows(x509.crl_pem().await.unwrap());
    assert_eq!(first, vec![(1_800_000_000, 1_800_000_300)]);
    // Fetched again later: signed for that moment, not replayed from a cache.
    clock.advance(200);
    let again = windows(x509.crl_pem().await.unwrap());
    assert_eq!(again, vec![(1_800_000_200, 1_800_000_500)]);

    // Long-lived resources only: one hour at most.
    let mut long = resource("x509", serde_json::json!({}));
    long.max_ttl_secs = 86_400;
    assert_eq!(latch_providers::x509::crl_validity_secs([&long]), 3600);
    assert_eq!(
        latch_providers::x509::crl_validity_secs(std::iter::empty()),
        3600
    );
}

/// The KRL's refresh interval is the shortest `max_ttl` among the SSH CA's resources, at most
/// one minute.
#[tokio::test]
async fn krl_refresh_interval_is_the_shortest_max_ttl_at_most_a_minute() {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let m = master(5);
    let clock = ManualClock::new(1_800_000_000);
    let ssh_res = resource("ssh", serde_json::json!({"principals": ["deploy"]}));
    let ssh = SshProvider::load_or_create(
        store.clone(),
        &m,
        Arc::new(clock.clone()),
        std::slice::from_ref(&ssh_res),
    )
    .await
    .unwrap();
    assert_eq!(ssh.krl_refresh_secs(), 60);
    let mut quick = ssh_res;
    quick.max_ttl_secs = 20;
    let mut x509_quicker = resource("x509", serde_json::json!({}));
    x509_quicker.max_ttl_secs = 5;
    assert_eq!(
        latch_providers::ssh::krl_refresh_secs([&quick, &x509_quicker]),
        20
    );
}
