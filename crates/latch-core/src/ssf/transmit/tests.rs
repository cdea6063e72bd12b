use serde_json::json;

use super::*;
use crate::model::{LeaseState, TaskState, TokenBinding, Workload, WorkloadClaims};

const OWNER: &str = "https://ci.example#repo:acme/api";

fn task() -> Task {
    Task {
        id: "task_1".into(),
        owner: Workload {
            id: OWNER.into(),
            issuer: "https://ci.example".into(),
            subject: "repo:acme/api".into(),
            preset: "github_actions".into(),
            run_binding: None,
            on_behalf_of: Some("alice".into()),
            claims: WorkloadClaims::default(),
            token_expires_at_unix_secs: 2_000,
        },
        purpose: "p".into(),
        repository: Some("acme/api".into()),
        branch: None,
        environment: "sandbox".into(),
        production: false,
        on_behalf_of: Some("alice".into()),
        state: TaskState::Cancelled,
        created_at_unix_secs: 1_000,
        expires_at_unix_secs: 5_000,
        ended_at_unix_secs: Some(1_500),
        version: 2,
    }
}

fn lease(provider: &str) -> Lease {
    Lease {
        id: "lease_1".into(),
        task_id: "task_1".into(),
        request_id: "req_1".into(),
        resource_id: "payments-db".into(),
        provider: provider.into(),
        actions: vec!["read".into()],
        state: LeaseState::Revoking,
        issued_at_unix_secs: 1_000,
        expires_at_unix_secs: 1_600,
        max_expires_at_unix_secs: 1_600,
        renewals: 0,
        revocation_handle: "h".into(),
        credential_hmac: None,
        revoke_reason: Some("revoked_by_operator".into()),
        revoke_attempts: 0,
        next_revoke_at_unix_secs: None,
        last_revoke_error: None,
        revoked_at_unix_secs: None,
        revoke_requested_at_unix_millis: None,
        binding: TokenBinding::default(),
        version: 2,
    }
}

fn event(kind: AuditKind, actor: &str) -> AuditEvent {
    AuditEvent::new(1_500, kind, actor, "ok").task("task_1")
}

#[test]
fn a_task_ended_by_its_workload_is_a_session_revoked_for_its_session_workload_and_human() {
    let ev = event(AuditKind::TaskCompleted, OWNER);
    let s = signal_for(7, &ev, Some(&task()), None).expect("a signal");
    assert_eq!(s.seq, 7);
    assert_eq!(s.event_type, SESSION_REVOKED);
    assert_eq!(
        s.sub_id,
        json!({"format": "complex",
               "session": {"format": "opaque", "id": "task_1"},
               "application": {"format": "iss_sub", "iss": "https://ci.example", "sub": "repo:acme/api"},
               "user": {"format": "opaque", "id": "alice"}})
    );
    assert_eq!(s.event["event_timestamp"], 1_500);
    assert_eq!(s.event["initiating_entity"], "user");
    assert_eq!(
        s.event["reason_admin"]["en"],
        format!("latch task task_1 completed (actor {OWNER})")
    );
}

#[test]
fn who_ended_a_task_sets_the_initiating_entity() {
    let t = task();
    let cases = [
        (AuditKind::TaskCancelled, "ops-alice", "admin"),
        (AuditKind::TaskExpired, "latch", "system"),
        (AuditKind::TaskCancelled, "ssf:corp-idp", "policy"),
        (AuditKind::TaskCompleted, OWNER, "user"),
    ];
    for (kind, actor, want) in cases {
        let s = signal_for(1, &event(kind, actor), Some(&t), None).expect("a signal");
        assert_eq!(s.event["initiating_entity"], want, "{kind} by {actor}");
    }
}

#[test]
fn a_revoked_credential_is_a_credential_change_of_type_revoke() {
    let ev = event(AuditKind::CredentialRevocationRequested, "ops-alice")
        .lease("lease_1")
        .detail(json!({"reason": "revoked_by_operator", "provider": "postgres"}));
    let s = signal_for(3, &ev, Some(&task()), Some(&lease("postgres"))).expect("a signal");
    assert_eq!(s.event_type, CREDENTIAL_CHANGE);
    assert_eq!(s.event["credential_type"], "password");
    assert_eq!(s.event["change_type"], "revoke");
    assert_eq!(s.event["friendly_name"], "payments-db lease lease_1");
    assert_eq!(s.event["initiating_entity"], "admin");
    assert_eq!(s.sub_id["session"]["id"], "task_1");
    let text = s.event["reason_admin"]["en"].as_str().unwrap();
    assert!(
        text.contains("lease_1") && text.contains("revoked_by_operator"),
        "{text}"
    );
}

#[test]
fn credential_types_follow_caep_where_a_type_fits() {
    for (provider, want) in [
        ("postgres", "password"),
        ("redis", "password"),
        ("x509", "x509"),
        ("ssh", "ssh-certificate"),
        ("jwt", "jwt"),
        ("vault-kv", "vault-kv"),
    ] {
        let ev = event(AuditKind::CredentialRevoked, "latch")
            .lease("lease_1")
            .detail(json!({"reason": "expired", "provider": provider}));
        let s = signal_for(1, &ev, None, Some(&lease(provider))).expect("a signal");
        assert_eq!(s.event["credential_type"], want, "{provider}");
        assert_eq!(s.event["initiating_entity"], "system");
    }
}

#[test]
fn the_confirmation_of_a_requested_revocation_sends_nothing_new() {
    let ev = event(AuditKind::CredentialRevoked, "latch")
        .lease("lease_1")
        .detail(json!({"reason": "task_cancelled", "provider": "postgres", "attempts": 1}));
    assert_eq!(
        signal_for(1, &ev, Some(&task()), Some(&lease("postgres"))),
        None
    );
}

#[test]
fn a_freeze_names_its_scope() {
    let ev = AuditEvent::new(1_500, AuditKind::FreezeEngaged, "ops-alice", "ok").detail(json!({
        "freeze_id": "frz_1", "scope": {"kind": "human", "value": "bob"}, "reason": "stolen laptop",
    }));
    let s = signal_for(9, &ev, None, None).expect("a signal");
    assert_eq!(s.event_type, SESSION_REVOKED);
    assert_eq!(
        s.sub_id,
        json!({"format": "complex", "session": {"format": "opaque", "id": "frz_1"},
               "user": {"format": "opaque", "id": "bob"}})
    );
    assert_eq!(
        s.event["latch_scope"],
        json!({"kind": "human", "value": "bob"})
    );
    assert_eq!(s.event["initiating_entity"], "admin");
    assert_eq!(
        s.event["reason_admin"]["en"],
        "latch kill switch frz_1 engaged on human:bob by ops-alice: stolen laptop"
    );

    let ev = AuditEvent::new(1, AuditKind::FreezeEngaged, "ops", "ok").detail(json!({
        "freeze_id": "frz_2", "scope": {"kind": "workload", "value": OWNER}, "reason": "r"}));
    let s = signal_for(1, &ev, None, None).expect("a signal");
    assert_eq!(
        s.sub_id["application"],
        json!({"format": "iss_sub", "iss": "https://ci.example", "sub": "repo:acme/api"})
    );
    let ev = AuditEvent::new(1, AuditKind::FreezeEngaged, "ops", "ok")
        .detail(json!({"freeze_id": "frz_3", "scope": {"kind": "all"}, "reason": "r"}));
    let s = signal_for(1, &ev, None, None).expect("a signal");
    assert_eq!(
        s.sub_id,
        json!({"format": "complex", "session": {"format": "opaque", "id": "frz_3"}})
    );
}

#[test]
fn other_events_send_nothing() {
    for kind in [
        AuditKind::TaskOpened,
        AuditKind::CredentialIssued,
        AuditKind::FreezeLifted,
        AuditKind::CredentialRevocationFailed,
        AuditKind::SsfReceived,
    ] {
        assert_eq!(
            signal_for(1, &event(kind, OWNER), Some(&task()), None),
            None
        );
        assert_eq!(needs(kind.as_str()), None);
    }
    let failed = AuditEvent::new(1, AuditKind::TaskCancelled, OWNER, "conflict").task("task_1");
    assert_eq!(signal_for(1, &failed, Some(&task()), None), None);
    assert_eq!(needs("not.a.kind"), None);
}

#[test]
fn set_claims_follow_ssf_and_the_jti_is_stable_per_stream_and_event() {
    let ev = event(AuditKind::TaskCancelled, "ops-alice");
    let s = signal_for(2, &ev, Some(&task()), None).expect("a signal");
    let jti = set_jti(&s.event_id, "siem");
    assert_eq!(jti.len(), 32);
    assert_eq!(
        jti,
        set_jti(&s.event_id, "siem"),
        "a retry resends the same jti"
    );
    assert_ne!(
        jti,
        set_jti(&s.event_id, "other"),
        "each stream its own jti"
    );
    assert_ne!(jti, set_jti("evt_other", "siem"), "each event its own jti");
    let c = s.claims("https://latch.example", "https://siem.example", &jti, 1_600);
    assert_eq!(c["iss"], "https://latch.example");
    assert_eq!(c["aud"], "https://siem.example");
    assert_eq!(c["iat"], 1_600);
    assert_eq!(c["jti"], jti.as_str());
    assert_eq!(c["txn"], s.event_id.as_str());
    assert_eq!(c["sub_id"], s.sub_id);
    assert_eq!(c["events"][SESSION_REVOKED], s.event);
    assert_eq!(
        c["events"].as_object().unwrap().len(),
        1,
        "one event per SET"
    );
    assert!(
        c.get("sub").is_none() && c.get("exp").is_none(),
        "SSF 1.0 §4.1"
    );
}
