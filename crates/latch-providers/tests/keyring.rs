//! Master key, sealing and signing-key persistence.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unimplemented,
    clippy::too_many_lines,
    reason = "test code: a failed step fails the test, and a scenario reads best in one piece"
)]
mod common;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::{MemStore, master, temp_dir};
use latch_providers::keyring::{KeyError, MasterKey, SigningAlg, SigningKeys};

#[test]
fn seal_open_round_trip() {
    let key = master(1);
    let blob = key.seal("name-a", b"top secret payload");
    assert_eq!(blob[0], 1, "version byte");
    assert_eq!(blob.len(), 1 + 12 + b"top secret payload".len() + 16);
    assert!(
        !blob.windows(6).any(|w| w == b"secret"),
        "plaintext visible in blob"
    );
    let opened = key.open("name-a", &blob).unwrap();
    assert_eq!(&opened[..], b"top secret payload");

    // Random nonces: sealing twice gives different blobs that both open.
    let again = key.seal("name-a", b"top secret payload");
    assert_ne!(blob, again);
    assert_eq!(
        &key.open("name-a", &again).unwrap()[..],
        b"top secret payload"
    );

    // Empty plaintext works too.
    let empty = key.seal("e", b"");
    assert!(key.open("e", &empty).unwrap().is_empty());
}

#[test]
fn tampering_is_detected() {
    let key = master(1);
    let blob = key.seal("name-a", b"payload");
    for i in 0..blob.len() {
        let mut tampered = blob.clone();
        tampered[i] ^= 0x01;
        let err = key.open("name-a", &tampered).unwrap_err();
        if i == 0 {
            assert!(
                matches!(err, KeyError::UnsupportedVersion { version: 0, .. }),
                "{err:?}"
            );
        } else {
            assert!(matches!(err, KeyError::Decrypt { .. }), "byte {i}: {err:?}");
        }
    }
    // Truncation.
    assert!(matches!(
        key.open("name-a", &blob[..blob.len() - 1]),
        Err(KeyError::Decrypt { .. })
    ));
    assert!(matches!(
        key.open("name-a", &blob[..28]),
        Err(KeyError::Malformed { len: 28, .. })
    ));
    assert!(matches!(
        key.open("name-a", &[]),
        Err(KeyError::Malformed { .. })
    ));
}

#[test]
fn wrong_name_is_rejected() {
    let key = master(1);
    let blob = key.seal("jwt-signing-eddsa-current", b"payload");
    let err = key.open("jwt-signing-es256-current", &blob).unwrap_err();
    assert!(matches!(err, KeyError::Decrypt { ref name } if name == "jwt-signing-es256-current"));
    assert!(err.to_string().contains("could not be opened"));
}

#[test]
fn wrong_master_key_is_rejected() {
    let blob = master(1).seal("name", b"payload");
    let err = master(2).open("name", &blob).unwrap_err();
    assert!(matches!(err, KeyError::Decrypt { .. }));
    assert!(!err.to_string().contains("payload"));
}

#[test]
fn hmac_key_is_derived_and_stable() {
    let a = master(1);
    assert_eq!(a.hmac_key().len(), 32);
    assert_eq!(*a.hmac_key(), *master(1).hmac_key());
    assert_ne!(*a.hmac_key(), *master(2).hmac_key());
    assert_ne!(
        &a.hmac_key()[..],
        &[1u8; 32][..],
        "hmac key must not be the master key"
    );
}

#[test]
fn from_base64_validates() {
    assert!(MasterKey::from_base64(&format!("  {}\n", STANDARD.encode([9u8; 32]))).is_ok());
    assert!(matches!(
        MasterKey::from_base64("%%%"),
        Err(KeyError::InvalidMasterKey(_))
    ));
    assert!(matches!(
        MasterKey::from_base64(&STANDARD.encode([9u8; 31])),
        Err(KeyError::InvalidMasterKey(_))
    ));
}

#[test]
fn from_env_missing_and_invalid() {
    let err = MasterKey::from_env("LATCH_PROVIDERS_TEST_SURELY_UNSET_VAR").unwrap_err();
    assert_eq!(
        err,
        KeyError::EnvMissing("LATCH_PROVIDERS_TEST_SURELY_UNSET_VAR".into())
    );
    if let Ok(path) = std::env::var("PATH") {
        let err = MasterKey::from_env("PATH").unwrap_err();
        assert!(matches!(err, KeyError::InvalidMasterKey(_)));
        assert!(path.len() < 4 || !err.to_string().contains(&path));
    }
}

#[test]
fn generate_to_file_then_from_file() {
    let dir = temp_dir("genkey");
    let path = dir.join("master.key");
    let generated = MasterKey::generate_to_file(&path).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let loaded = MasterKey::from_file(&path).unwrap();
    let blob = generated.seal("n", b"x");
    assert_eq!(&loaded.open("n", &blob).unwrap()[..], b"x");

    // Never overwrites.
    let err = MasterKey::generate_to_file(&path).unwrap_err();
    assert!(
        matches!(
            err,
            KeyError::Io {
                kind: std::io::ErrorKind::AlreadyExists,
                ..
            }
        ),
        "{err:?}"
    );
    // from_file_or_generate reads the existing key.
    let again = MasterKey::from_file_or_generate(&path).unwrap();
    assert_eq!(&again.open("n", &blob).unwrap()[..], b"x");
    // ... and creates a missing one.
    let other = dir.join("other.key");
    let created = MasterKey::from_file_or_generate(&other).unwrap();
    assert_ne!(*created.hmac_key(), *generated.hmac_key());
    assert_eq!(
        *MasterKey::from_file(&other).unwrap().hmac_key(),
        *created.hmac_key()
    );

    // Missing file.
    let err = MasterKey::from_file(dir.join("absent.key")).unwrap_err();
    assert!(matches!(
        err,
        KeyError::Io {
            kind: std::io::ErrorKind::NotFound,
            ..
        }
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(unix)]
#[test]
fn from_file_refuses_group_or_world_access() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("perms");
    let path = dir.join("master.key");
    let text = STANDARD.encode([5u8; 32]);
    std::fs::write(&path, &text).unwrap();
    for mode in [0o644, 0o640, 0o604, 0o660] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = MasterKey::from_file(&path).unwrap_err();
        assert!(
            matches!(err, KeyError::InsecurePermissions { mode: m, .. } if m == mode),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("chmod 600") && msg.contains("master.key"),
            "{msg}"
        );
        assert!(!msg.contains(&text));
    }
    for mode in [0o600, 0o400] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        MasterKey::from_file(&path).unwrap();
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn signing_keys_persist_through_store() {
    for alg in [SigningAlg::EdDsa, SigningAlg::Es256] {
        let store = MemStore::new();
        let key = master(3);
        let first = SigningKeys::load_or_create(&store, &key, alg)
            .await
            .unwrap();
        let blob = store.raw(&alg.current_blob_name()).expect("blob stored");
        let second = SigningKeys::load_or_create(&store, &key, alg)
            .await
            .unwrap();
        assert_eq!(first.current_kid(), second.current_kid());
        assert_eq!(first.jwks(), second.jwks());
        assert_eq!(
            store.raw(&alg.current_blob_name()).unwrap(),
            blob,
            "blob unchanged"
        );
        assert_eq!(first.alg(), alg);

        // The stored blob is sealed: it opens only with the master key, under its name.
        let pkcs8 = key.open(&alg.current_blob_name(), &blob).unwrap();
        assert!(!blob.windows(16).any(|w| pkcs8.windows(16).any(|p| p == w)));

        // A different master key cannot load it.
        let err = SigningKeys::load_or_create(&store, &master(4), alg)
            .await
            .unwrap_err();
        assert!(matches!(err, KeyError::Decrypt { .. }), "{err:?}");
    }
}

#[tokio::test]
async fn algorithms_use_separate_keys() {
    let store = MemStore::new();
    let key = master(3);
    let ed = SigningKeys::load_or_create(&store, &key, SigningAlg::EdDsa)
        .await
        .unwrap();
    let ec = SigningKeys::load_or_create(&store, &key, SigningAlg::Es256)
        .await
        .unwrap();
    assert_ne!(ed.current_kid(), ec.current_kid());
    assert!(store.raw("jwt-signing-eddsa-current").is_some());
    assert!(store.raw("jwt-signing-es256-current").is_some());
}

#[tokio::test]
async fn racing_creator_wins() {
    let store = MemStore::new();
    let key = master(3);
    let winner = SigningKeys::load_or_create(&store, &key, SigningAlg::EdDsa)
        .await
        .unwrap();
    // The next instance does not see the blob when reading, generates its own key, and loses the
    // insert: it must adopt the stored key.
    store.hide_reads();
    let loser = SigningKeys::load_or_create(&store, &key, SigningAlg::EdDsa)
        .await
        .unwrap();
    assert_eq!(winner.current_kid(), loser.current_kid());
}

#[tokio::test]
async fn garbage_blob_is_an_error() {
    let store = MemStore::new();
    let key = master(3);
    // Sealed correctly, but not a PKCS#8 key.
    let name = SigningAlg::Es256.current_blob_name();
    store.set_raw(&name, key.seal(&name, b"not a key"));
    let err = SigningKeys::load_or_create(&store, &key, SigningAlg::Es256)
        .await
        .unwrap_err();
    assert!(
        matches!(err, KeyError::InvalidSigningKey { alg: "ES256", .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn jwks_shape_and_thumbprint_kid() {
    let store = MemStore::new();
    let key = master(3);
    let ed = SigningKeys::load_or_create(&store, &key, SigningAlg::EdDsa)
        .await
        .unwrap();
    let jwks = ed.jwks();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let jwk = &keys[0];
    assert_eq!(jwk["kty"], "OKP");
    assert_eq!(jwk["crv"], "Ed25519");
    assert_eq!(jwk["alg"], "EdDSA");
    assert_eq!(jwk["use"], "sig");
    assert_eq!(jwk["kid"], ed.current_kid());
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(jwk["x"].as_str().unwrap())
            .unwrap()
            .len(),
        32
    );
    assert!(jwk.get("d").is_none(), "private member published");
    // RFC 7638 thumbprint, recomputed independently.
    let canonical = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        jwk["x"].as_str().unwrap()
    );
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    assert_eq!(ed.current_kid(), URL_SAFE_NO_PAD.encode(digest));

    let ec = SigningKeys::load_or_create(&store, &key, SigningAlg::Es256)
        .await
        .unwrap();
    let jwk = &ec.jwks()["keys"][0];
    assert_eq!(jwk["kty"], "EC");
    assert_eq!(jwk["crv"], "P-256");
    assert_eq!(jwk["alg"], "ES256");
    assert_eq!(jwk["use"], "sig");
    assert!(jwk.get("d").is_none());
    let canonical = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        jwk["x"].as_str().unwrap(),
        jwk["y"].as_str().unwrap()
    );
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    assert_eq!(ec.current_kid(), URL_SAFE_NO_PAD.encode(digest));
    assert_eq!(ec.published().len(), 1);
    assert!(ec.published_key(ec.current_kid()).is_some());
    assert!(ec.published_key("nope").is_none());
}

/// All the ways a byte string might be rendered in text.
fn renderings(bytes: &[u8]) -> Vec<String> {
    vec![
        STANDARD.encode(bytes),
        URL_SAFE_NO_PAD.encode(bytes),
        bytes.iter().map(|b| format!("{b:02x}")).collect(),
        format!("{:?}", &bytes[..8])
            .trim_end_matches(']')
            .to_owned(),
    ]
}

#[tokio::test]
async fn debug_output_has_no_key_material() {
    let key_text = STANDARD.encode([7u8; 32]);
    let key = MasterKey::from_base64(&key_text).unwrap();
    let dbg = format!("{key:?} {key:#?}");
    assert!(!dbg.contains(&key_text));
    assert!(!dbg.contains("7, 7, 7"));
    for r in renderings(&key.hmac_key()) {
        assert!(!dbg.contains(&r));
    }

    for alg in [SigningAlg::EdDsa, SigningAlg::Es256] {
        let store = MemStore::new();
        let keys = SigningKeys::load_or_create(&store, &key, alg)
            .await
            .unwrap();
        let pkcs8 = key
            .open(
                &alg.current_blob_name(),
                &store.raw(&alg.current_blob_name()).unwrap(),
            )
            .unwrap();
        let dbg = format!("{keys:?} {keys:#?} {:?}", keys.encoding_key());
        assert!(dbg.contains(keys.current_kid()));
        for r in renderings(&pkcs8) {
            assert!(!dbg.contains(&r), "{dbg}");
        }
        // Nor any 12-byte window of the PKCS#8 (the private scalar lives somewhere inside).
        for w in pkcs8.windows(12) {
            for r in renderings(w).into_iter().take(3) {
                assert!(!dbg.contains(&r), "{dbg}");
            }
        }
    }
}

#[test]
fn ephemeral_keys_differ() {
    let a = SigningKeys::generate_ephemeral(SigningAlg::EdDsa).unwrap();
    let b = SigningKeys::generate_ephemeral(SigningAlg::EdDsa).unwrap();
    assert_ne!(a.current_kid(), b.current_kid());
}
