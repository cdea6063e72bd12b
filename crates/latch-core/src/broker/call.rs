//! Per-call context: request id, source address and the audit events waiting for the call's
//! first commit.

use super::*;

/// Per-call context: HTTP request id, source address, and audit events (such as the caller's
/// authentication) waiting to be committed with the call's first state change.
#[derive(Debug, Default)]
pub struct CallCtx {
    /// HTTP request id.
    pub request_id: Option<String>,
    /// Caller's address.
    pub source_ip: Option<String>,
    /// The X.509-SVID of the caller's mutual-TLS connection, as the listener verified it.
    pub peer_svid: Option<PeerSvid>,
    /// The protected resource the call came through (Latch's own `/mcp` URL for REST calls an
    /// MCP tool makes in-process), `None` for the REST API itself. Access tokens Latch issued
    /// to MCP clients are accepted only where it equals their resource.
    pub resource: Option<String>,
    pub(super) pending: Mutex<Vec<AuditEvent>>,
}

/// A client certificate the listener verified as an X.509-SVID (SPIFFE X.509-SVID): chain to
/// its trust domain's authorities, one URI SAN, not a CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSvid {
    /// The SPIFFE ID of its URI SAN.
    pub spiffe_id: String,
    /// The leaf's `notAfter` (Unix seconds).
    pub not_after_unix_secs: i64,
}

impl CallCtx {
    /// A context for one call.
    pub fn new(request_id: Option<String>, source_ip: Option<String>) -> Self {
        Self {
            request_id,
            source_ip,
            peer_svid: None,
            resource: None,
            pending: Mutex::new(Vec::new()),
        }
    }

    /// This context, for a call that arrived over a mutual-TLS connection whose client
    /// certificate is `svid`.
    ///
    /// # Security
    /// Only the listener's verified certificate may be passed here (see
    /// [`IdentityVerifier::x509_svid_principal`](crate::ports::IdentityVerifier::x509_svid_principal)).
    #[must_use]
    pub fn with_peer_svid(mut self, svid: Option<PeerSvid>) -> Self {
        self.peer_svid = svid;
        self
    }

    /// This context, for a call that came through the protected `resource`.
    #[must_use]
    pub fn with_resource(mut self, resource: Option<String>) -> Self {
        self.resource = resource;
        self
    }
    pub(super) fn push(&self, e: AuditEvent) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(e);
    }
    pub(super) fn take(&self) -> Vec<AuditEvent> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }
    pub(super) fn restore(&self, mut events: Vec<AuditEvent>) {
        let mut g = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        events.append(&mut g);
        *g = events;
    }
}

/// The call's queued `auth.succeeded` events, merged with the events the call itself records: an
/// authentication whose actor also acts in one of `own` is folded into the first such event as
/// `detail.auth` (issuer, principal kind, source address) instead of taking a record of its own.
/// Every call stays attributable (a call that records nothing else still gets its
/// `auth.succeeded`), with one record fewer per state change.
pub(super) fn fold_authentication(
    pending: Vec<AuditEvent>,
    mut own: Vec<AuditEvent>,
) -> Vec<AuditEvent> {
    let mut out = Vec::with_capacity(pending.len() + own.len());
    for p in pending {
        if p.is(AuditKind::AuthSucceeded)
            && let Some(e) = own.iter_mut().find(|e| e.actor == p.actor)
        {
            match &mut e.detail {
                serde_json::Value::Object(m) if !m.contains_key("auth") => {
                    m.insert("auth".into(), p.detail);
                    continue;
                }
                serde_json::Value::Null => {
                    e.detail = json!({ "auth": p.detail });
                    continue;
                }
                _ => {}
            }
        }
        out.push(p);
    }
    out.append(&mut own);
    out
}

#[cfg(test)]
mod fold_tests {
    use super::*;

    fn auth(actor: &str) -> AuditEvent {
        AuditEvent::new(1, AuditKind::AuthSucceeded, actor, "ok")
            .detail(json!({"issuer": "https://ci", "principal_kind": "workload"}))
    }

    #[test]
    fn authentication_folds_into_the_callers_own_event_only() {
        let own = vec![
            AuditEvent::new(1, AuditKind::RequestDecided, "wl", "allow")
                .detail(json!({"resource": "r"})),
            AuditEvent::new(1, AuditKind::CredentialIssued, "wl", "ok"),
        ];
        let out = fold_authentication(vec![auth("wl")], own);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].detail["auth"]["issuer"], "https://ci");
        assert_eq!(out[0].detail["resource"], "r");
        assert!(out[1].detail.get("auth").is_none());
        // Another actor's event, or none at all: the authentication keeps its own record.
        let out = fold_authentication(
            vec![auth("wl")],
            vec![AuditEvent::new(1, AuditKind::TaskExpired, "latch", "ok")],
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].kind, "auth.succeeded");
        let out = fold_authentication(vec![auth("wl")], vec![]);
        assert_eq!(out[0].kind, "auth.succeeded");
        // A failure is never folded.
        let failed = AuditEvent::new(1, AuditKind::AuthFailed, "wl", "token_expired");
        let out = fold_authentication(
            vec![failed],
            vec![AuditEvent::new(1, AuditKind::ToolUsed, "wl", "ok")],
        );
        assert_eq!(out.len(), 2);
    }
}
