//! What Latch receives: a Security Event Token pushed by a configured transmitter (RFC 8935),
//! verified by a [`SetVerifier`] into a [`VerifiedSet`], and what each of its events asks
//! Latch to do ([`classify_event`]).

use async_trait::async_trait;
use aws_lc_rs::digest;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{
    ACCOUNT_CREDENTIAL_CHANGE_REQUIRED, ACCOUNT_DISABLED, ACCOUNT_PURGED, ASSURANCE_LEVEL_CHANGE,
    CREDENTIAL_CHANGE, CREDENTIAL_COMPROMISE, DEVICE_COMPLIANCE_CHANGE, IDENTIFIER_RECYCLED,
    RISK_LEVEL_CHANGE, SESSION_REVOKED, SESSIONS_REVOKED, TOKEN_CLAIMS_CHANGE, VERIFICATION,
};
use crate::error::ApiError;

/// The error codes of a refused push (RFC 8935 §2.4, the IANA "Security Event Token Error
/// Codes" registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushErrorCode {
    /// The body is not a SET, or an event in it does not follow its definition (also: a
    /// `jti` already received, a wrong `typ`, an `iat` out of bounds).
    InvalidRequest,
    /// The key that signed the SET is unknown or unacceptable, or the signature does not
    /// verify with it.
    InvalidKey,
    /// The SET's issuer is not a transmitter Latch is configured to trust.
    InvalidIssuer,
    /// The SET's audience is not Latch's.
    InvalidAudience,
    /// The push did not carry the authorization the transmitter was configured with.
    AuthenticationFailed,
    /// The transmitter may not send this SET to Latch.
    AccessDenied,
}

impl PushErrorCode {
    /// The registered string (`invalid_request`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidKey => "invalid_key",
            Self::InvalidIssuer => "invalid_issuer",
            Self::InvalidAudience => "invalid_audience",
            Self::AuthenticationFailed => "authentication_failed",
            Self::AccessDenied => "access_denied",
        }
    }
}

impl std::fmt::Display for PushErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a pushed SET was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// Refused for good (RFC 8935 §2.4: `400` with `{"err", "description"}`): sending the
    /// same SET again cannot succeed.
    #[error("{code}: {description}")]
    Refused {
        /// The registered code.
        code: PushErrorCode,
        /// Lowercase, secret-free, for the transmitter's operators.
        description: String,
    },
    /// Latch cannot decide now (the transmitter's keys or the store are unavailable): `503`,
    /// and the transmitter retries (RFC 8935 §2.3 reserves `400` for SETs that are wrong).
    #[error("{0}")]
    Unavailable(ApiError),
}

impl PushError {
    /// A refusal with `code`.
    pub fn refused(code: PushErrorCode, description: impl Into<String>) -> Self {
        Self::Refused {
            code,
            description: description.into(),
        }
    }
}

/// A SET whose signature (by one of the transmitter's keys), `typ`, issuer, audience, `iat`
/// and shape were verified; its `jti` is not yet checked against replay (the broker records it
/// in the same commit as what the SET causes).
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedSet {
    /// The transmitter's configured name (`[[ssf.transmitters]] name`).
    pub transmitter: String,
    /// `iss`, exactly as configured.
    pub issuer: String,
    /// `jti` (1–256 characters).
    pub jti: String,
    /// `iat` (Unix seconds).
    pub iat: i64,
    /// `txn`, if any.
    pub txn: Option<String>,
    /// `sub_id` (SSF 1.0 §3.1), if any.
    pub sub_id: Option<Value>,
    /// `events`: event type URI → event object (at least one).
    pub events: Map<String, Value>,
    /// Which of its subjects name humans, and which humans it may act for.
    pub subjects: super::subject::SubjectRules,
    /// Until when the `jti` must be remembered (Unix seconds): past it, the SET's `iat` is too
    /// old to be accepted anyway.
    pub replay_until_unix_secs: i64,
}

impl VerifiedSet {
    /// The subject to act on: the top-level `sub_id` (SSF 1.0 §3.1), else the `subject` of
    /// the first event that has one (CAEP and RISC events from before `sub_id`).
    pub fn subject(&self) -> Option<&Value> {
        self.sub_id
            .as_ref()
            .or_else(|| self.events.values().find_map(|e| e.get("subject")))
    }
}

/// Verifies pushed SETs against the configured transmitters (signature with their published
/// keys, `typ`, `iss`, `aud`, `iat`, and the push's authorization when one is configured).
///
/// # Security
/// Implementations never put the token or the authorization value in an error or a log.
#[async_trait]
pub trait SetVerifier: Send + Sync + 'static {
    /// Verifies `token` (a compact JWS, the body of the push) sent with the `Authorization`
    /// header `authorization`.
    ///
    /// # Errors
    /// [`PushError::Refused`] with the RFC 8935 code; [`PushError::Unavailable`] when the
    /// transmitter's keys cannot be fetched.
    async fn verify(
        &self,
        token: &str,
        authorization: Option<&str>,
    ) -> Result<VerifiedSet, PushError>;
}

/// The row that remembers a received `jti` (per issuer) until it could no longer be
/// accepted: inserted in the commit of what the SET causes, so a replay, on any replica and
/// after a restart, conflicts with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedSetRecord {
    /// [`ReceivedSetRecord::key_for`] the issuer and `jti` (the unique key).
    pub key: String,
    /// The transmitter's configured name.
    pub transmitter: String,
    /// `iss`.
    pub issuer: String,
    /// `jti`.
    pub jti: String,
    /// When it was accepted (Unix seconds).
    pub received_at_unix_secs: i64,
    /// When the row may be forgotten (Unix seconds).
    pub expires_at_unix_secs: i64,
}

impl ReceivedSetRecord {
    /// The unique key of (`issuer`, `jti`): 64 hex digits of SHA-256 over a domain tag, the
    /// issuer's length and the issuer, then the `jti` (a `jti` is unique per issuer only,
    /// RFC 8417 §2.2; the length keeps every pair apart).
    pub fn key_for(issuer: &str, jti: &str) -> String {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"latch-ssf-received\n");
        ctx.update(issuer.len().to_string().as_bytes());
        ctx.update(b":");
        ctx.update(issuer.as_bytes());
        ctx.update(jti.as_bytes());
        hex::encode(ctx.finish())
    }
}

/// What an event in a received SET asks Latch to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetAction {
    /// End every task acting for the subject's human and freeze their grants.
    EndHumanTasks,
    /// An SSF verification event (SSF 1.0 §8.1.4): accepted, nothing to do.
    Verification,
    /// Accepted and recorded, not acted on (why).
    Ignore(&'static str),
}

/// What the event `event_type` with object `event` asks for.
///
/// Acted on (the human's tasks end, their grants freeze): CAEP `session-revoked`,
/// `credential-change` other than `create` (a new credential enrolled says nothing against the
/// human's sessions; a changed password or a removed authenticator is what a relying party ends
/// sessions for), `token-claims-change` (the roles or groups the tasks were granted under no
/// longer hold), `assurance-level-change` with `change_direction` `decrease`,
/// `device-compliance-change` to `not-compliant`, `risk-level-change` to `high`; RISC
/// `account-disabled`, `account-purged`, `credential-compromise`,
/// `account-credential-change-required`, `identifier-recycled` and the deprecated
/// `sessions-revoked`. Everything else is recorded and ignored.
pub fn classify_event(event_type: &str, event: &Value) -> SetAction {
    let field = |k: &str| event.get(k).and_then(Value::as_str);
    let when = |acts: bool, why: &'static str| {
        if acts {
            SetAction::EndHumanTasks
        } else {
            SetAction::Ignore(why)
        }
    };
    match event_type {
        SESSION_REVOKED
        | TOKEN_CLAIMS_CHANGE
        | ACCOUNT_DISABLED
        | ACCOUNT_PURGED
        | CREDENTIAL_COMPROMISE
        | ACCOUNT_CREDENTIAL_CHANGE_REQUIRED
        | IDENTIFIER_RECYCLED
        | SESSIONS_REVOKED => SetAction::EndHumanTasks,
        CREDENTIAL_CHANGE => when(
            field("change_type") != Some("create"),
            "a credential was created",
        ),
        ASSURANCE_LEVEL_CHANGE => when(
            field("change_direction") == Some("decrease"),
            "the assurance level did not decrease",
        ),
        DEVICE_COMPLIANCE_CHANGE => when(
            field("current_status") == Some("not-compliant"),
            "the device is compliant",
        ),
        RISK_LEVEL_CHANGE => when(
            field("current_level").is_some_and(|l| l.eq_ignore_ascii_case("high")),
            "the risk level is not high",
        ),
        VERIFICATION => SetAction::Verification,
        _ => SetAction::Ignore("an event type latch does not act on"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_are_classified_by_type_and_change() {
        use SetAction::*;
        let e = json!({});
        assert_eq!(classify_event(SESSION_REVOKED, &e), EndHumanTasks);
        assert_eq!(
            classify_event(ACCOUNT_DISABLED, &json!({"reason": "hijacking"})),
            EndHumanTasks
        );
        for change in ["revoke", "update", "delete"] {
            let ev = json!({"credential_type": "password", "change_type": change});
            assert_eq!(
                classify_event(CREDENTIAL_CHANGE, &ev),
                EndHumanTasks,
                "{change}"
            );
        }
        assert_eq!(classify_event(CREDENTIAL_CHANGE, &e), EndHumanTasks);
        assert!(matches!(
            classify_event(CREDENTIAL_CHANGE, &json!({"change_type": "create"})),
            Ignore(_)
        ));
        assert_eq!(
            classify_event(VERIFICATION, &json!({"state": "x"})),
            Verification
        );
        assert!(matches!(
            classify_event(
                "https://schemas.openid.net/secevent/risc/event-type/account-enabled",
                &e
            ),
            Ignore(_)
        ));
        for t in [
            TOKEN_CLAIMS_CHANGE,
            ACCOUNT_PURGED,
            CREDENTIAL_COMPROMISE,
            ACCOUNT_CREDENTIAL_CHANGE_REQUIRED,
            IDENTIFIER_RECYCLED,
            SESSIONS_REVOKED,
        ] {
            assert_eq!(classify_event(t, &e), EndHumanTasks, "{t}");
        }
        let cases = [
            (
                ASSURANCE_LEVEL_CHANGE,
                "change_direction",
                "decrease",
                "increase",
            ),
            (
                DEVICE_COMPLIANCE_CHANGE,
                "current_status",
                "not-compliant",
                "compliant",
            ),
            (RISK_LEVEL_CHANGE, "current_level", "HIGH", "low"),
        ];
        for (t, k, acts, not) in cases {
            assert_eq!(classify_event(t, &json!({ k: acts })), EndHumanTasks, "{t}");
            assert!(
                matches!(classify_event(t, &json!({ k: not })), Ignore(_)),
                "{t}"
            );
            assert!(matches!(classify_event(t, &e), Ignore(_)), "{t}");
        }
    }

    #[test]
    fn the_subject_is_sub_id_else_an_events_subject() {
        let mut set = VerifiedSet {
            transmitter: "idp".into(),
            issuer: "https://idp".into(),
            jti: "1".into(),
            iat: 0,
            txn: None,
            sub_id: None,
            events: Map::new(),
            subjects: super::super::subject::SubjectRules::any_human(vec![]),
            replay_until_unix_secs: 0,
        };
        set.events.insert(
            SESSION_REVOKED.into(),
            json!({"subject": {"format": "opaque", "id": "old"}}),
        );
        assert_eq!(set.subject().unwrap()["id"], "old");
        set.sub_id = Some(json!({"format": "opaque", "id": "new"}));
        assert_eq!(set.subject().unwrap()["id"], "new");
    }

    #[test]
    fn received_keys_separate_issuers_and_jtis() {
        let k = ReceivedSetRecord::key_for("https://a", "1");
        assert_eq!(k.len(), 64);
        assert_eq!(k, ReceivedSetRecord::key_for("https://a", "1"));
        assert_ne!(k, ReceivedSetRecord::key_for("https://b", "1"));
        assert_ne!(k, ReceivedSetRecord::key_for("https://a", "2"));
        assert_ne!(
            ReceivedSetRecord::key_for("https://a\n1", "2"),
            ReceivedSetRecord::key_for("https://a", "1\n2"),
            "no issuer and jti pair reads as another"
        );
        assert_eq!(PushErrorCode::InvalidAudience.as_str(), "invalid_audience");
        assert_eq!(
            serde_json::to_value(PushErrorCode::AuthenticationFailed).unwrap(),
            "authentication_failed"
        );
    }
}
