//! Typed vocabulary: the closed sets of names Latch writes into audit records, so call sites name
//! a variant instead of repeating a string literal. Each type has exactly ONE string mapping
//! (`as_str`), which `Display`, `FromStr` and serde all go through, so stored bodies, chain hashes
//! and exports stay byte-identical to the dotted strings used before.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::TaskState;

/// Declares a closed string-backed enum: the variants, their one string form each, `as_str`,
/// `ALL`, `Display`, `FromStr` and serde as that same string.
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $err:ident, $what:literal {
            $( $(#[$vmeta:meta])* $variant:ident => $s:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[ $( $name::$variant, )+ ];

            /// The one stable string form (what is stored, hashed and exported).
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $s, )+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = $err;

            /// Parses the exact string form (case-sensitive).
            ///
            /// # Errors
            /// The unknown string, for a message listing the allowed values.
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|k| k.as_str() == s)
                    .ok_or_else(|| $err(s.to_owned()))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = String::deserialize(deserializer)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        #[doc = concat!("An unknown ", $what, " (holds the string that was given).")]
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $err(pub String);

        impl fmt::Display for $err {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!("unknown ", $what, " `{}`; expected one of: "), self.0)?;
                for (i, k) in $name::ALL.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    f.write_str(k.as_str())?;
                }
                Ok(())
            }
        }

        impl std::error::Error for $err {}
    };
}

string_enum! {
    /// What an [`crate::model::AuditEvent`] records: `<family>.<what happened>`. Filters such as
    /// `AuditFilter::kind_prefix` match on the string form (`credential.` selects every
    /// `credential.*` kind).
    ///
    /// The event's `kind` field stays a `String`: records read back from a store or an export
    /// may have been written by another Latch version, and the chain hash covers the exact
    /// string, so reading must never reject or rewrite a kind this build does not know. Writers
    /// go through [`crate::model::AuditEvent::new`], which only takes an `AuditKind`.
    AuditKind, UnknownAuditKind, "audit event kind" {
        /// A principal (workload or human) authenticated. Outcome `ok`.
        AuthSucceeded => "auth.succeeded",
        /// Authentication failed. Outcome: the error code.
        AuthFailed => "auth.failed",
        /// A task was opened.
        TaskOpened => "task.opened",
        /// Its owner completed a task (every lease revoked).
        TaskCompleted => "task.completed",
        /// Its owner cancelled a task (every lease revoked).
        TaskCancelled => "task.cancelled",
        /// A task reached its TTL (every lease revoked).
        TaskExpired => "task.expired",
        /// A denial ended its task: a budget breach configured to end it (`[budgets]`
        /// `end_task_on_breach`, a resource's `on_budget_breach = "end_task"`) or a forbid
        /// annotated `@end_task`. Outcome `end_task`; `task.cancelled` follows in the same
        /// commit.
        TaskEndedByDenial => "task.ended_by_denial",
        /// An agent reported a tool use in a task. Outcome: the reported outcome.
        ToolUsed => "tool.used",
        /// A tool call through the MCP gateway: decided, and forwarded when allowed. Outcome:
        /// the upstream's (`ok`, `error`, `timeout`) when forwarded, else the decision
        /// (`deny`, `step_up`) or the refusal's code (`task_not_open`, `frozen`).
        ToolCalled => "tool.called",
        /// Policy decided an access request. Outcome: `allow`, `deny` or `step_up`.
        RequestDecided => "request.decided",
        /// A pending access request expired undecided or unclaimed.
        RequestExpired => "request.expired",
        /// A pending or approved request was closed because its task ended. Outcome: the
        /// task's state (`completed`, `cancelled`, `expired`).
        RequestCancelled => "request.cancelled",
        /// A human approver voted on a pending request.
        ApprovalRecorded => "approval.recorded",
        /// A credential was minted and its lease recorded.
        CredentialIssued => "credential.issued",
        /// The provider failed to mint a credential.
        CredentialMintFailed => "credential.mint_failed",
        /// A lease was renewed.
        CredentialRenewed => "credential.renewed",
        /// A renewal was refused (policy or limits).
        CredentialRenewalDenied => "credential.renewal_denied",
        /// A credential was revoked at its provider.
        CredentialRevoked => "credential.revoked",
        /// Revocation was asked for and is pending at the provider.
        CredentialRevocationRequested => "credential.revocation_requested",
        /// Revoking at the provider failed; it will be retried. Outcome `retry`.
        CredentialRevocationFailed => "credential.revocation_failed",
        /// A policy reload no longer allows a live lease, so it was revoked.
        CredentialPolicyRevoked => "credential.policy_revoked",
        /// A leaked secret was reported (scanner or API).
        LeakDetected => "leak.detected",
        /// Policies were reloaded.
        PolicyReloaded => "policy.reloaded",
        /// A policy reload was refused because the new set is invalid. Outcome `invalid`.
        PolicyReloadRefused => "policy.reload_refused",
        /// An administrator exported the audit log.
        AuditExported => "audit.exported",
        /// An administrator searched the audit log.
        AuditSearched => "audit.searched",
        /// An operator acted on another principal's task or lease (`detail.action`:
        /// `revoke_lease`, `cancel_task`), with the reason they gave. Committed with the change.
        OperatorActed => "operator.acted",
        /// An operator engaged a kill switch: every live credential in a scope revoked and new
        /// grants there frozen (`detail`: scope, reason, leases revoked).
        FreezeEngaged => "freeze.engaged",
        /// An operator lifted a freeze (`detail`: scope, reason).
        FreezeLifted => "freeze.lifted",
        /// A grant, claim or renewal was refused because a freeze covers it. Outcome `frozen`.
        AccessFrozen => "access.frozen",
        /// A notification to approvers was delivered. Outcome `ok`.
        NotificationDelivered => "notification.delivered",
        /// Delivering a notification failed. Outcome `retry` (it will be tried again) or
        /// `gave_up` (after the configured number of attempts).
        NotificationFailed => "notification.failed",
        /// A human signed in to the approval console (a server-side session was opened).
        /// Outcome `ok`; detail: how (`oidc`, `dev`), the issuer and groups.
        ConsoleSignedIn => "console.signed_in",
        /// A console sign-in failed (the provider's error, a bad state, an ID token refused).
        /// Outcome: the error code.
        ConsoleSignInFailed => "console.sign_in_failed",
        /// A human signed out of the console (the session was deleted).
        ConsoleSignedOut => "console.signed_out",
        /// A client registered itself with the authorization server (RFC 7591). Outcome `ok`;
        /// detail: client id, name, redirect URIs.
        OAuthClientRegistered => "oauth.client_registered",
        /// A human consented to an MCP client on the consent page: a grant and its
        /// authorization code were stored. Outcome `ok`; detail: grant, client, redirect host,
        /// resource.
        OAuthConsented => "oauth.consented",
        /// A human consented to an MCP client and its first tokens were issued for the
        /// authorization code. Outcome `ok`; detail: grant, client, resource (never a token).
        OAuthGrantIssued => "oauth.grant_issued",
        /// A grant's refresh token was rotated (new access and refresh tokens). Outcome `ok`.
        OAuthGrantRefreshed => "oauth.grant_refreshed",
        /// A grant was revoked: by its client (RFC 7009), its human, an admin, or replay
        /// detection. Outcome: the reason (`client`, `human`, `admin`, `code_replay`,
        /// `refresh_replay`).
        OAuthGrantRevoked => "oauth.grant_revoked",
        /// A human refused an MCP client on the consent page. Outcome `denied`.
        OAuthConsentDenied => "oauth.consent_denied",
        /// An operator generated the control evidence report (`detail`: window, format).
        /// Recorded before the checkpoint the report cites, so the report is in the trail it
        /// covers. Outcome `ok`.
        ReportGenerated => "report.generated",
        /// A Security Event Token (RFC 8417) pushed by a configured Shared Signals transmitter
        /// was accepted (signature, issuer, audience, `iat` and `jti` checked). Outcome `acted`
        /// (its event ends the tasks of a human and freezes their grants), `ignored` (an
        /// event type or subject Latch does not act on) or `refused` (a verified SET about a
        /// human the transmitter may not act for, `access_denied`); detail: transmitter,
        /// issuer, `jti`, event types, the human, the freeze.
        SsfReceived => "ssf.received",
        /// Latch ended a task because of a received Security Event Token (in the task end's
        /// batch). Outcome `ok`; detail: transmitter, issuer, `jti`, event type, human.
        SsfActed => "ssf.acted",
        /// Ended tasks past the retention were deleted from the store with their requests and
        /// leases (the audit trail keeps their records). Outcome `ok`; detail: how many tasks,
        /// requests and leases, and the expiry cut-off.
        StorePruned => "store.pruned",
        /// The oldest records of the audit trail were deleted from the store (`[retention]
        /// audit`), every one of them delivered to each configured audit sink first. Outcome
        /// `ok`; detail: `before_seq` (the first record kept), `anchor_hash` (its hash),
        /// `first_seq` (the first record deleted), `records` (how many) and `cut` (the
        /// checkpoint of the first record kept, signed by the broker as the chain's start).
        AuditPruned => "audit.pruned",
    }
}

string_enum! {
    /// The credential providers built into Latch: the `kind` of a `[[resources]]` entry
    /// ([`crate::model::Resource::kind`]) and a lease's `provider`
    /// ([`crate::model::Lease::provider`]), and what each built-in
    /// [`crate::ports::CredentialProvider::kind`] returns.
    ///
    /// Those fields stay `String`s: the `CredentialProvider` port is open (an embedder or a
    /// test may register a provider of its own kind), and a resource naming a kind no
    /// registered provider serves is reported when access is requested, as before. This enum
    /// is the one place the built-in names are spelled.
    ProviderKind, UnknownProviderKind, "provider kind" {
        /// Signed JWT access tokens.
        Jwt => "jwt",
        /// PostgreSQL login roles.
        Postgres => "postgres",
        /// Redis ACL users.
        Redis => "redis",
        /// OpenSSH user certificates.
        Ssh => "ssh",
        /// X.509 client certificates.
        X509 => "x509",
    }
}

string_enum! {
    /// How sensitive a resource's data is ([`crate::model::Resource::sensitivity`], the Cedar
    /// attribute `resource.sensitivity`), least to most. Policies compare the string form
    /// (`resource.sensitivity == "secret"`).
    ///
    /// `Resource::sensitivity` stays a `String` for now: configuration has never rejected
    /// other values, so narrowing the field would change which configurations load.
    Sensitivity, UnknownSensitivity, "sensitivity" {
        /// Public data.
        Public => "public",
        /// Internal data (the default for a resource that names none).
        Internal => "internal",
        /// Confidential data.
        Confidential => "confidential",
        /// Secret data.
        Secret => "secret",
    }
}

/// A deployment environment name (`sandbox`, `staging`, `production`, …) as a task or a
/// resource states it; serialized as the bare string (TOML, JSON and the Cedar `environment`
/// attribute are unchanged).
///
/// A validated newtype rather than a closed enum: operators name their own environments, and
/// which of them are production is configuration (`tasks.production_environments`), not code.
/// What the type owns is the one comparison rule, ASCII case-insensitive, used both for the
/// production test and for matching an identity's proven environment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Environment(String);

impl Environment {
    /// The name as given (case preserved).
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when `other` names this environment (ASCII case-insensitive).
    #[must_use]
    pub fn is(&self, other: &str) -> bool {
        self.0.eq_ignore_ascii_case(other)
    }

    /// True when this is one of `production_environments` (the configured list).
    #[must_use]
    pub fn is_production(&self, production_environments: &[String]) -> bool {
        production_environments.iter().any(|p| self.is(p))
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for Environment {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for Environment {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl PartialEq<str> for Environment {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Environment {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl AuditKind {
    /// The event recording that a task entered `state` (`task.opened`, `task.completed`,
    /// `task.cancelled`, `task.expired`).
    #[must_use]
    pub const fn task_entered(state: TaskState) -> Self {
        match state {
            TaskState::Open => AuditKind::TaskOpened,
            TaskState::Completed => AuditKind::TaskCompleted,
            TaskState::Cancelled => AuditKind::TaskCancelled,
            TaskState::Expired => AuditKind::TaskExpired,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_kinds_round_trip_through_their_one_string() {
        for k in AuditKind::ALL {
            assert_eq!(k.as_str().parse::<AuditKind>(), Ok(*k));
            assert_eq!(
                serde_json::to_string(k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
            let back: AuditKind = serde_json::from_str(&format!("\"{k}\"")).unwrap();
            assert_eq!(back, *k);
            let (family, rest) = k.as_str().split_once('.').unwrap();
            assert!(!family.is_empty() && !rest.is_empty(), "{k} is dotted");
        }
        let err = "credential.rev".parse::<AuditKind>().unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown audit event kind `credential.rev`")
        );
        assert!(err.to_string().contains("credential.revoked"));
    }

    #[test]
    fn provider_kinds_and_sensitivities_keep_their_strings() {
        let kinds: Vec<_> = ProviderKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(kinds, ["jwt", "postgres", "redis", "ssh", "x509"]);
        let levels: Vec<_> = Sensitivity::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(levels, ["public", "internal", "confidential", "secret"]);
        assert_eq!("x509".parse::<ProviderKind>(), Ok(ProviderKind::X509));
        assert_eq!(
            serde_json::to_string(&Sensitivity::Secret).unwrap(),
            "\"secret\""
        );
        let err = "top_secret".parse::<Sensitivity>().unwrap_err().to_string();
        assert!(err.contains("unknown sensitivity `top_secret`"), "{err}");
        assert!(
            err.ends_with("public, internal, confidential, secret"),
            "{err}"
        );
    }

    #[test]
    fn environments_are_bare_strings_compared_without_case() {
        let e = Environment::from("Production");
        assert_eq!(serde_json::to_string(&e).unwrap(), "\"Production\"");
        assert!(e.is("production"));
        assert!(e.is_production(&["staging".into(), "PRODUCTION".into()]));
        assert!(!Environment::from("sandbox").is_production(&["production".into()]));
        assert_eq!(e, "Production");
    }

    #[test]
    fn task_states_map_to_the_kinds_written_before() {
        for s in [
            TaskState::Open,
            TaskState::Completed,
            TaskState::Cancelled,
            TaskState::Expired,
        ] {
            let legacy = if s == TaskState::Open {
                "task.opened".to_owned()
            } else {
                format!("task.{}", s.as_str())
            };
            assert_eq!(AuditKind::task_entered(s).as_str(), legacy);
        }
    }
}
