//! OpenID Shared Signals: Latch as a transmitter and as a receiver of Security Event Tokens.
//!
//! * **Transmitter** ([`transmit`]): revocations Latch records in its audit trail (a task
//!   ended, a credential revoked, a kill switch engaged) become CAEP 1.0 `session-revoked` and
//!   `credential-change` events, as SET claims (RFC 8417) with an RFC 9493 `sub_id`, which the
//!   server signs and pushes (RFC 8935) to the `[[ssf.receivers]]` of `latch.toml`.
//! * **Receiver** ([`receive`]): a SET pushed by a configured identity provider, once its
//!   signature, issuer, audience, `iat` and `typ` are verified ([`receive::SetVerifier`]), is
//!   classified here ([`receive::classify_event`]: session and credential revocations, claim
//!   changes, lowered assurance, raised risk, compromised, disabled, purged or recycled
//!   accounts) and, about a human the transmitter may speak for, ends the tasks acting for
//!   that human and freezes their grants (`crate::broker::Broker::receive_security_event`).
//! * [`subject`]: subject identifiers (RFC 9493, and the complex subjects of SSF 1.0 §3.3),
//!   built for what Latch sends and read for what it receives.
//!
//! Specifications followed: OpenID Shared Signals Framework 1.0 (final, 2025), OpenID CAEP 1.0,
//! OpenID RISC 1.0, RFC 8417 (SET), RFC 8935 (push delivery), RFC 9493 (subject identifiers).

pub mod receive;
pub mod subject;
pub mod transmit;

pub use receive::{
    PushError, PushErrorCode, ReceivedSetRecord, SetAction, SetVerifier, VerifiedSet,
    classify_event,
};
pub use transmit::{Signal, set_jti, signal_for};

/// The JWS `typ` of a SET (RFC 8417 §2.3, required by SSF 1.0 §4.1.1).
pub const SET_TYP: &str = "secevent+jwt";
/// The media type of a pushed SET (RFC 8935 §2).
pub const SET_MEDIA_TYPE: &str = "application/secevent+jwt";
/// The delivery method URI of push delivery (SSF 1.0 §6.1.1: RFC 8935).
pub const PUSH_DELIVERY: &str = "urn:ietf:rfc:8935";
/// `spec_version` of the transmitter metadata (SSF 1.0 §7.1: the final 1.0 specification).
pub const SPEC_VERSION: &str = "1_0";

/// CAEP 1.0 §3.1: a session was revoked.
pub const SESSION_REVOKED: &str =
    "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
/// CAEP 1.0 §3.3: a credential was created, changed, revoked or deleted.
pub const CREDENTIAL_CHANGE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/credential-change";
/// CAEP 1.0 §3.2: claims of the subject's tokens changed (its roles, groups or entitlements).
pub const TOKEN_CLAIMS_CHANGE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/token-claims-change";
/// CAEP 1.0 §3.4: the subject's authentication assurance level changed.
pub const ASSURANCE_LEVEL_CHANGE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/assurance-level-change";
/// CAEP 1.0 §3.5: the subject's device became compliant or not.
pub const DEVICE_COMPLIANCE_CHANGE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/device-compliance-change";
/// CAEP 1.0 §3.8: the risk level of the subject changed.
pub const RISK_LEVEL_CHANGE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/risk-level-change";
/// RISC 1.0 §2.1: the account must change its credential (it may be compromised).
pub const ACCOUNT_CREDENTIAL_CHANGE_REQUIRED: &str =
    "https://schemas.openid.net/secevent/risc/event-type/account-credential-change-required";
/// RISC 1.0 §2.2: an account was deleted for good.
pub const ACCOUNT_PURGED: &str =
    "https://schemas.openid.net/secevent/risc/event-type/account-purged";
/// RISC 1.0 §2.3: an account was disabled.
pub const ACCOUNT_DISABLED: &str =
    "https://schemas.openid.net/secevent/risc/event-type/account-disabled";
/// RISC 1.0 §2.6: the identifier now names another account (the old holder's sessions end).
pub const IDENTIFIER_RECYCLED: &str =
    "https://schemas.openid.net/secevent/risc/event-type/identifier-recycled";
/// RISC 1.0 §2.7: a credential of the subject was compromised.
pub const CREDENTIAL_COMPROMISE: &str =
    "https://schemas.openid.net/secevent/risc/event-type/credential-compromise";
/// RISC 1.0 §2.11 (deprecated for CAEP `session-revoked`, still sent): all sessions revoked.
pub const SESSIONS_REVOKED: &str =
    "https://schemas.openid.net/secevent/risc/event-type/sessions-revoked";
/// SSF 1.0 §8.1.4.1: a verification event (answers a receiver's verification request).
pub const VERIFICATION: &str = "https://schemas.openid.net/secevent/ssf/event-type/verification";

/// The event types Latch transmits, in the order the metadata lists them.
pub const EVENTS_SUPPORTED: [&str; 2] = [SESSION_REVOKED, CREDENTIAL_CHANGE];
