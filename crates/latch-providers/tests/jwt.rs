//! The `jwt` credential provider.

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
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use latch_core::model::{Lease, LeaseState, Resource, Task, TaskState, Workload, WorkloadClaims};
use latch_core::ports::{CredentialProvider, MintRequest};
use latch_providers::jwt::{AccessTokenClaims, JwtProvider};
use latch_providers::keyring::{SigningAlg, SigningKeys};
use secrecy::ExposeSecret;

const ISSUER: &str = "https://latch.example.test";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn task() -> Task {
    Task {
        id: "task_1".into(),
        owner: Workload {
            id: "https://token.actions.githubusercontent.com#repo:acme/app".into(),
            issuer: "https://token.actions.githubusercontent.com".into(),
            subject: "repo:acme/app".into(),
            preset: "github_actions".into(),
            run_binding: None,
            on_behalf_of: None,
            claims: WorkloadClaims::default(),
            token_expires_at_unix_secs: now() + 600,
        },
        purpose: "deploy".into(),
        repository: Some("acme/app".into()),
        branch: Some("main".into()),
        environment: "staging".into(),
        production: false,
        on_behalf_of: None,
        state: TaskState::Open,
        created_at_unix_secs: now(),
        expires_at_unix_secs: now() + 3600,
        ended_at_unix_secs: None,
        version: 1,
    }
}

fn resource(audience: &str) -> Resource {
    Resource {
        id: "payments-api".into(),
        kind: "jwt".into(),
        environment: "staging".into(),
        sensitivity: "confidential".into(),
        audience: audience.into(),
        actions: vec!["read".into(), "write".into()],
        max_ttl_secs: 900,
        max_lifetime_secs: 3600,
        default_ttl_secs: 300,
        owner: None,
        production: false,
        egress: false,
        end_task_on_budget_breach: false,
        settings: serde_json::Value::Null,
    }
}

fn lease() -> Lease {
    Lease {
        id: "lease_1".into(),
        task_id: "task_1".into(),
        request_id: "req_1".into(),
        resource_id: "payments-api".into(),
        provider: "jwt".into(),
        actions: vec!["read".into()],
        state: LeaseState::Active,
        issued_at_unix_secs: now(),
        expires_at_unix_secs: now() + 300,
        max_expires_at_unix_secs: now() + 300,
        renewals: 0,
        revocation_handle: "lease_1".into(),
        credential_hmac: None,
        revoke_reason: None,
        revoke_attempts: 0,
        next_revoke_at_unix_secs: None,
        last_revoke_error: None,
        revoked_at_unix_secs: None,
        revoke_requested_at_unix_millis: None,
        binding: Default::default(),
        version: 1,
    }
}

async fn provider(alg: SigningAlg) -> JwtProvider {
    let store = MemStore::new();
    let keys = SigningKeys::load_or_create(&store, &master(9), alg)
        .await
        .unwrap();
    JwtProvider::new(ISSUER.to_owned(), Arc::new(keys))
}

#[tokio::test]
async fn minted_token_verifies_against_jwks() {
    for alg in [SigningAlg::EdDsa, SigningAlg::Es256] {
        let provider = provider(alg).await;
        assert_eq!(provider.kind(), "jwt");
        assert!(!provider.has_external_state());
        let task = task();
        let resource = resource("https://payments.example.test");
        let actions = vec!["read".to_owned(), "write".to_owned()];
        let params = serde_json::json!({});
        let (iat, exp) = (now(), now() + 300);
        let req = MintRequest {
            lease_id: "lease_1",
            task: &task,
            principal_id: &task.owner.id,
            resource: &resource,
            actions: &actions,
            issued_at_unix_secs: iat,
            expires_at_unix_secs: exp,
            params: &params,
            binding: &Default::default(),
        };
        let minted = provider.mint(&req).await.unwrap();
        assert_eq!(minted.revocation_handle, "lease_1");
        assert_eq!(minted.credential.kind, "bearer_token");
        assert_eq!(
            minted.credential.metadata,
            serde_json::json!({
                "token_type": "Bearer",
                "expires_at_unix_secs": exp,
                "audience": "https://payments.example.test",
            })
        );
        let token = minted.credential.secret.expose_secret();

        let header = jsonwebtoken::decode_header(token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.alg, alg.jwt_algorithm());
        let kid = header.kid.unwrap();
        assert_eq!(kid, provider.keys().current_kid());

        let jwks: JwkSet = serde_json::from_value(provider.keys().jwks()).unwrap();
        let jwk = jwks.find(&kid).expect("kid in jwks");
        let key = DecodingKey::from_jwk(jwk).unwrap();
        let mut validation = Validation::new(alg.jwt_algorithm());
        validation.set_audience(&["https://payments.example.test"]);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<AccessTokenClaims>(token, &key, &validation).unwrap();
        assert_eq!(
            data.claims,
            AccessTokenClaims {
                iss: ISSUER.into(),
                sub: task.owner.id.clone(),
                aud: "https://payments.example.test".into(),
                client_id: task.owner.id.clone(),
                iat,
                nbf: iat,
                exp,
                jti: "lease_1".into(),
                task_id: "task_1".into(),
                scope: "read write".into(),
                resource: "payments-api".into(),
                environment: "staging".into(),
                cnf: None,
                act: None,
            }
        );

        // Raw claim names as RFC 9068 / the brief name them.
        let raw = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).unwrap();
        for claim in [
            "iss",
            "sub",
            "aud",
            "iat",
            "nbf",
            "exp",
            "jti",
            "task_id",
            "scope",
            "resource",
            "environment",
            "client_id",
        ] {
            assert!(raw.claims.get(claim).is_some(), "missing {claim}");
        }

        // Another broker's key does not verify it.
        let other = SigningKeys::generate_ephemeral(alg).unwrap();
        let other_key = other.published()[0].decoding_key().unwrap();
        assert!(jsonwebtoken::decode::<AccessTokenClaims>(token, &other_key, &validation).is_err());

        // Wrong audience fails validation.
        let mut wrong_aud = validation.clone();
        wrong_aud.set_audience(&["https://other.example.test"]);
        assert!(jsonwebtoken::decode::<AccessTokenClaims>(token, &key, &wrong_aud).is_err());

        // Revocation is a no-op that succeeds (idempotent).
        provider.revoke(&lease()).await.unwrap();
        provider.revoke(&lease()).await.unwrap();
    }
}

#[tokio::test]
async fn debug_of_minted_credential_hides_token() {
    let provider = provider(SigningAlg::EdDsa).await;
    let task = task();
    let resource = resource("aud-1");
    let actions = vec!["read".to_owned()];
    let params = serde_json::json!({});
    let req = MintRequest {
        lease_id: "lease_2",
        task: &task,
        principal_id: &task.owner.id,
        resource: &resource,
        actions: &actions,
        issued_at_unix_secs: now(),
        expires_at_unix_secs: now() + 60,
        params: &params,
        binding: &Default::default(),
    };
    let minted = provider.mint(&req).await.unwrap();
    let token = minted.credential.secret.expose_secret().to_owned();
    let dbg = format!("{minted:?} {minted:#?} {provider:?}");
    assert!(!dbg.contains(&token));
    for part in token.split('.') {
        assert!(!dbg.contains(part), "token segment in debug output: {dbg}");
    }
    assert!(dbg.contains("lease_2"));
}

#[tokio::test]
async fn check_resource_and_mint_require_audience() {
    let provider = provider(SigningAlg::EdDsa).await;
    assert!(provider.check_resource(&resource("aud")).is_ok());
    for aud in ["", "   "] {
        let err = provider.check_resource(&resource(aud)).unwrap_err();
        assert!(!err.retryable);
        assert!(err.message.contains("audience"), "{}", err.message);
    }
    let mut bad_action = resource("aud");
    bad_action.actions.push("two words".into());
    assert!(provider.check_resource(&bad_action).is_err());

    let task = task();
    let no_aud = resource("");
    let actions = vec!["read".to_owned()];
    let params = serde_json::json!({});
    let mut req = MintRequest {
        lease_id: "lease_3",
        task: &task,
        principal_id: &task.owner.id,
        resource: &no_aud,
        actions: &actions,
        issued_at_unix_secs: now(),
        expires_at_unix_secs: now() + 60,
        params: &params,
        binding: &Default::default(),
    };
    let err = provider.mint(&req).await.unwrap_err();
    assert!(!err.retryable);

    // Empty validity window.
    let with_aud = resource("aud");
    req.resource = &with_aud;
    req.expires_at_unix_secs = req.issued_at_unix_secs;
    assert!(provider.mint(&req).await.is_err());
}
