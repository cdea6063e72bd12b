//! What Latch transmits: revocations in its audit trail as CAEP 1.0 events ([`Signal`]), and
//! the claims of the Security Event Token that carries one to a receiver ([`Signal::claims`]).
//!
//! | audit event | CAEP event | `sub_id` |
//! |---|---|---|
//! | `task.completed`, `task.cancelled`, `task.expired` | `session-revoked` | complex: `session` (the task), `application` (its workload), `user` (its human, when known) |
//! | `credential.revocation_requested`, `credential.revoked` (revoked in place) | `credential-change` (`change_type` `revoke`) | complex, as for the lease's task |
//! | `freeze.engaged` | `session-revoked` | complex: `session` (the freeze) and, for a human or workload scope, `user` or `application` |
//!
//! A `credential.revoked` that confirms an earlier `credential.revocation_requested` (the
//! provider answered a later attempt: its detail counts `attempts`) sends nothing new: the
//! receiver already heard of that revocation.

use aws_lc_rs::digest;
use serde_json::{Value, json};

use super::subject::{complex, iss_sub, opaque};
use super::{CREDENTIAL_CHANGE, SESSION_REVOKED};
use crate::freeze::{FreezeScope, ScopeKind};
use crate::kinds::{AuditKind, ProviderKind};
use crate::model::{AuditEvent, Lease, Task};

/// The actor Latch itself writes in the audit trail (reaper, expiry, policy reloads).
const BROKER: &str = "latch";

/// One event to transmit, from one audit record; signed per receiver with
/// [`claims`](Self::claims).
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    /// The audit record's sequence number (the delivery cursor of each receiver).
    pub seq: i64,
    /// The audit event's id (`evt_…`): the SET's `txn` (SSF 1.0 §4.1.9) and the seed of its
    /// `jti` ([`set_jti`]).
    pub event_id: String,
    /// The event type URI ([`SESSION_REVOKED`] or [`CREDENTIAL_CHANGE`]).
    pub event_type: &'static str,
    /// The subject (SSF 1.0 §3: RFC 9493 identifiers in a complex subject).
    pub sub_id: Value,
    /// The event object: `event_timestamp` (the audit event's time, Unix seconds),
    /// `initiating_entity` (`admin`, `user`, `policy` or `system`), `reason_admin` (`{"en":
    /// …}`, ids and reason codes only: never a secret) and the type's own claims.
    pub event: Value,
}

impl Signal {
    /// The claims of the SET carrying this event to one receiver (RFC 8417 §2.2, SSF 1.0
    /// §4.1): `iss` (Latch's issuer), `aud` (the receiver's audience), `iat` (when signed, Unix
    /// seconds), `jti`, `txn`, `sub_id` and `events` with this one event. No `sub` and no
    /// `exp` (SSF 1.0 §4.1.2, §4.1.7).
    pub fn claims(&self, issuer: &str, audience: &str, jti: &str, iat: i64) -> Value {
        let mut events = serde_json::Map::new();
        events.insert(self.event_type.to_owned(), self.event.clone());
        json!({
            "iss": issuer, "aud": audience, "iat": iat, "jti": jti, "txn": self.event_id,
            "sub_id": self.sub_id, "events": events,
        })
    }
}

/// The `jti` of the SET carrying the audit event `event_id` on stream `stream_id`: 32 hex
/// digits of SHA-256 over a domain tag, the stream and the event id. The same on every retry
/// and every replica (receivers drop duplicates by it, RFC 8417 §2.2), and different per
/// stream and per event, as RFC 8417 requires of `jti`.
pub fn set_jti(event_id: &str, stream_id: &str) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"latch-ssf-jti\n");
    ctx.update(stream_id.as_bytes());
    ctx.update(b"\n");
    ctx.update(event_id.as_bytes());
    let mut h = hex::encode(ctx.finish());
    h.truncate(32);
    h
}

/// What [`signal_for`] needs read for an audit event of `kind` besides the event: its task,
/// its lease. `None`: the event is not transmitted.
pub fn needs(kind: &str) -> Option<(bool, bool)> {
    match kind.parse::<AuditKind>().ok()? {
        AuditKind::TaskCompleted | AuditKind::TaskCancelled | AuditKind::TaskExpired => {
            Some((true, false))
        }
        AuditKind::CredentialRevoked | AuditKind::CredentialRevocationRequested => {
            Some((true, true))
        }
        AuditKind::FreezeEngaged => Some((false, false)),
        _ => None,
    }
}

/// The event to transmit for the audit event `ev` (record `seq`), with its task and lease as
/// stored (when [`needs`] asks for them), or `None` when it is not a revocation Latch tells
/// receivers about.
pub fn signal_for(
    seq: i64,
    ev: &AuditEvent,
    task: Option<&Task>,
    lease: Option<&Lease>,
) -> Option<Signal> {
    if ev.outcome != "ok" {
        return None;
    }
    let kind: AuditKind = ev.kind.parse().ok()?;
    let (event_type, sub_id, event) = match kind {
        AuditKind::TaskCompleted | AuditKind::TaskCancelled | AuditKind::TaskExpired => {
            task_ended(ev, kind, task)?
        }
        AuditKind::CredentialRevoked if ev.detail.get("attempts").is_some() => return None,
        AuditKind::CredentialRevoked | AuditKind::CredentialRevocationRequested => {
            credential_revoked(ev, task, lease)?
        }
        AuditKind::FreezeEngaged => freeze_engaged(ev)?,
        _ => return None,
    };
    Some(Signal {
        seq,
        event_id: ev.id.clone(),
        event_type,
        sub_id,
        event,
    })
}

type Parts = (&'static str, Value, Value);

fn task_ended(ev: &AuditEvent, kind: AuditKind, task: Option<&Task>) -> Option<Parts> {
    let task_id = ev.task_id.as_deref()?;
    let state = kind.as_str().trim_start_matches("task.");
    let reason = (kind == AuditKind::TaskExpired).then_some("task_expired");
    let who = initiator(&ev.actor, task.map(|t| t.owner.id.as_str()), reason);
    let text = format!("latch task {task_id} {state} (actor {})", ev.actor);
    Some((
        SESSION_REVOKED,
        task_subject(task_id, task),
        event_object(ev, who, &text),
    ))
}

fn credential_revoked(
    ev: &AuditEvent,
    task: Option<&Task>,
    lease: Option<&Lease>,
) -> Option<Parts> {
    let lease_id = ev.lease_id.as_deref()?;
    let task_id = ev.task_id.as_deref()?;
    let reason = ev.detail.get("reason").and_then(Value::as_str);
    let provider = ev
        .detail
        .get("provider")
        .and_then(Value::as_str)
        .or(lease.map(|l| l.provider.as_str()))
        .unwrap_or_default();
    let resource = lease.map_or("", |l| l.resource_id.as_str());
    let who = initiator(&ev.actor, task.map(|t| t.owner.id.as_str()), reason);
    let text = format!(
        "latch lease {lease_id} of resource {resource} revoked ({})",
        reason.unwrap_or("revoked")
    );
    let mut event = event_object(ev, who, &text);
    event["credential_type"] = Value::String(credential_type(provider).to_owned());
    event["change_type"] = Value::String("revoke".to_owned());
    event["friendly_name"] = Value::String(format!("{resource} lease {lease_id}"));
    Some((CREDENTIAL_CHANGE, task_subject(task_id, task), event))
}

fn freeze_engaged(ev: &AuditEvent) -> Option<Parts> {
    let freeze_id = ev.detail.get("freeze_id")?.as_str()?;
    let scope: FreezeScope = serde_json::from_value(ev.detail.get("scope")?.clone()).ok()?;
    let reason = ev
        .detail
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut members = vec![("session", opaque(freeze_id))];
    match (scope.kind, scope.value.as_deref()) {
        (ScopeKind::Human, Some(h)) => members.push(("user", opaque(h))),
        (ScopeKind::Workload, Some(w)) => members.push(("application", workload(w))),
        _ => {}
    }
    let who = if ev.actor.starts_with("ssf:") {
        "policy"
    } else {
        "admin"
    };
    let text = format!(
        "latch kill switch {freeze_id} engaged on {} by {}: {reason}",
        scope.label(),
        ev.actor
    );
    let mut event = event_object(ev, who, &text);
    event["latch_scope"] = serde_json::to_value(&scope).ok()?;
    Some((SESSION_REVOKED, complex(&members), event))
}

/// `session` (the task), `application` (its workload, `iss_sub` of its identity token) and
/// `user` (the human it acts for, when known).
fn task_subject(task_id: &str, task: Option<&Task>) -> Value {
    let mut members = vec![("session", opaque(task_id))];
    if let Some(t) = task {
        members.push(("application", iss_sub(&t.owner.issuer, &t.owner.subject)));
        if let Some(h) = &t.on_behalf_of {
            members.push(("user", opaque(h)));
        }
    }
    complex(&members)
}

/// A workload principal id (`iss#sub`) as `iss_sub`, else opaque.
fn workload(id: &str) -> Value {
    match id.split_once('#') {
        Some((iss, sub)) if !iss.is_empty() && !sub.is_empty() => iss_sub(iss, sub),
        _ => opaque(id),
    }
}

fn event_object(ev: &AuditEvent, initiating_entity: &str, reason: &str) -> Value {
    json!({
        "event_timestamp": ev.at_unix_secs,
        "initiating_entity": initiating_entity,
        "reason_admin": {"en": reason},
    })
}

/// CAEP 1.0 §2 `initiating_entity`: a revocation reason decides when it says (a leak, a
/// policy change or refused renewal: `policy`; an operator or a freeze: `admin`; an expiry or
/// failed mint: `system`), else who acted: Latch itself `system`, a Shared Signals event
/// `policy`, the task's own workload `user`, anyone else (an operator) `admin`.
fn initiator(actor: &str, owner: Option<&str>, reason: Option<&str>) -> &'static str {
    match reason {
        Some("leaked" | "policy_changed" | "renewal_denied") => return "policy",
        Some("revoked_by_operator") => return "admin",
        Some(r) if r.starts_with("frozen") => return "admin",
        Some("expired" | "mint_failed" | "mint_interrupted" | "task_expired") => return "system",
        _ => {}
    }
    if actor == BROKER {
        "system"
    } else if actor.starts_with("ssf:") {
        "policy"
    } else if Some(actor) == owner {
        "user"
    } else {
        "admin"
    }
}

/// CAEP 1.0 §3.3 `credential_type` of a provider's credentials: `password` (PostgreSQL roles,
/// Redis ACL users), `x509` (client certificates); the others are types "supported mutually
/// by the transmitter and the receiver": `jwt` (access tokens), `ssh-certificate`, or the
/// provider kind of an embedder's provider.
fn credential_type(provider: &str) -> &str {
    match provider.parse::<ProviderKind>() {
        Ok(ProviderKind::Postgres | ProviderKind::Redis) => "password",
        Ok(ProviderKind::X509) => "x509",
        Ok(ProviderKind::Ssh) => "ssh-certificate",
        Ok(ProviderKind::Jwt) => "jwt",
        Err(_) => provider,
    }
}

#[cfg(test)]
mod tests;
