//! Errors with stable codes.
//!
//! Every error that leaves the broker carries an [`ErrorCode`] (a stable, snake_case string that
//! scripts may match on) and a lowercase message in the style of cedar-policy's error guide: user
//! input appears in backticks, and no message ever contains a secret or a raw token.

use std::fmt;

/// Stable error codes. The string form (`as_str`) is part of the public API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    // --- authentication (401) ---
    /// No bearer token was presented.
    TokenMissing,
    /// The token is larger than the configured bound; it was not parsed.
    TokenTooLarge,
    /// The token is not a well-formed compact JWS.
    TokenMalformed,
    /// `alg` is `none`, an HMAC algorithm, or not in the issuer's allow-list.
    AlgNotAllowed,
    /// The header carries key material or a key location (`jwk`, `jku`, `x5c`, `x5u`).
    HeaderKeyForbidden,
    /// `iss` names no configured issuer (for a JWT-SVID: its trust domain is not configured).
    UnknownIssuer,
    /// A JWT-SVID's `sub` is not a valid SPIFFE ID (SPIFFE-ID specification §2), or names a
    /// trust domain rather than a workload.
    SpiffeIdInvalid,
    /// `kid` is not in the issuer's JWKS, even after a (rate-limited) refresh.
    UnknownKid,
    /// The signature does not verify.
    SignatureInvalid,
    /// `aud` does not contain the issuer's configured audience.
    AudienceMismatch,
    /// `exp` is in the past beyond the leeway.
    TokenExpired,
    /// The human's groups were asserted longer ago than the authority bound
    /// (`[approvals] authority_max_age`): votes and operator actions need a recent sign-in, so
    /// a group removed at the identity provider stops counting soon (RFC 9470's
    /// `insufficient_user_authentication`).
    InsufficientUserAuthentication,
    /// `nbf` (or `iat`) is in the future beyond the leeway.
    TokenNotYetValid,
    /// The token lives longer than its issuer's `max_token_lifetime` (`exp - iat`, or
    /// `exp - now` without `iat`): a stolen long-lived token is worth too much.
    TokenLifetimeTooLong,
    /// A required claim is missing or has the wrong type.
    ClaimsInvalid,
    /// The issuer's JWKS could not be fetched or parsed.
    JwksUnavailable,
    /// A workload token was used where a human token is needed, or the reverse.
    WrongPrincipalKind,
    /// Bad client credentials for introspection or revocation.
    ClientAuthFailed,
    /// A DPoP proof (RFC 9449 §4.3) is malformed, badly signed, for another method or URL,
    /// stale, replayed, or does not match the token's key or hash.
    DpopProofInvalid,
    // --- request validation (400 / 413 / 415 / 422) ---
    /// The request body or a parameter is malformed or breaks a rule the API document states
    /// (types, lengths, patterns, bounds, duplicate JSON member names).
    InvalidRequest,
    /// The request body is larger than the server accepts.
    BodyTooLarge,
    /// The request body is not of the media type the endpoint reads (`application/json`, or
    /// `application/x-www-form-urlencoded` for the OAuth endpoints).
    UnsupportedMediaType,
    /// A TTL is zero, negative or above the bound the configuration sets.
    TtlOutOfBounds,
    /// The task's repository or branch does not match what the workload identity proves.
    TaskIdentityMismatch,
    /// The resource id names no configured resource.
    UnknownResource,
    /// The action is not offered by the resource.
    UnknownAction,
    /// The body names a lease that is not one of the task's (a tool-use report's `lease_id`).
    UnknownLease,
    /// The approval's digest is not the digest of the pending request.
    ApprovalDigestMismatch,
    /// The MCP gateway offers no tool by this name (`<upstream>__<tool>`, see
    /// `GET /v1/gateway/tools`).
    UnknownTool,
    /// A report's window is empty, reversed or longer than allowed (`from` must be before
    /// `to`, at most 366 days apart).
    InvalidWindow,
    /// A gateway tool call named no task: set one with `open_task` in the MCP session, or
    /// send `_meta["latch/task_id"]` with the call.
    TaskRequired,
    /// The resource only accepts sender-constrained credentials: send a DPoP proof
    /// (RFC 9449) with the request so the credential is bound to your key.
    DpopRequired,
    /// The server requires a fresh server nonce in the DPoP proof (RFC 9449 §8); retry with
    /// the nonce from the `DPoP-Nonce` response header.
    DpopNonceRequired,
    // --- authorization (403) ---
    /// Policy denied the request (see `reasons` and `policy_ids`).
    PolicyDenied,
    /// Sandbox and production are hard-separated: a non-production task asked for a production resource.
    EnvironmentSeparation,
    /// The approver is not a member of any group that must approve this request.
    ApproverNotEligible,
    /// The approver is the human the agent acts for, or the requester itself.
    SelfApprovalForbidden,
    /// The caller is not an operator: the route needs a human in one of `[admin] groups`.
    NotAdmin,
    /// The Shared Signals stream configuration is read-only: streams are the
    /// `[[ssf.receivers]]` of `latch.toml`, so receivers cannot create, change or delete them
    /// (OpenID Shared Signals Framework 1.0 §8.1.1.1: `403`).
    SsfStreamsReadOnly,
    /// An operator froze grants in a scope that covers this request (a kill switch): no
    /// credential is granted, claimed or renewed there until the freeze is lifted.
    Frozen,
    /// A budget of the task or of the workload (`[budgets]`: grants, live leases, renewals,
    /// grants per minute) is used up; the reason names which. A per-minute budget frees up in
    /// the next minute; the others only in a new task (or a new budget window).
    BudgetExceeded,
    /// The task's history changed (a new sensitivity, an egress grant, a leak) between the
    /// decision and its commit: nothing was granted; ask again and it is decided with the new
    /// history. The broker retries this itself a few times before answering it.
    HistoryChanged,
    // --- routing (404 / 405) ---
    /// No such endpoint, or an endpoint this server does not offer (a certificate authority or
    /// the development issuer that is not configured).
    NotFound,
    /// The endpoint exists but not for this HTTP method (the `Allow` header lists those it
    /// takes).
    MethodNotAllowed,
    /// The request's `Accept` header admits no media type the endpoint answers with (`/mcp`
    /// needs both `application/json` and `text/event-stream`).
    NotAcceptable,
    /// The request's `Origin` is not one the endpoint serves (`/mcp`: DNS-rebinding
    /// protection, MCP streamable HTTP transport).
    OriginNotAllowed,
    // --- state (404 / 409) ---
    /// No such task visible to the caller.
    TaskNotFound,
    /// No such access request visible to the caller.
    RequestNotFound,
    /// No such lease visible to the caller.
    LeaseNotFound,
    /// The task is no longer open.
    TaskNotOpen,
    /// The request's task has ended (completed, cancelled or expired): the request was closed
    /// with it and can no longer be approved, denied or claimed.
    TaskEnded,
    /// The freeze named is already lifted.
    FreezeNotActive,
    /// No such freeze.
    FreezeNotFound,
    /// The request is not pending (already decided, granted or expired).
    RequestNotPending,
    /// The approver already voted on this request.
    AlreadyVoted,
    /// The request expired before it was decided or claimed.
    RequestExpired,
    /// The lease is not active.
    LeaseNotActive,
    /// A concurrent change won; retry.
    Conflict,
    // --- limits (408 / 429) ---
    /// The request was not answered within the server's request timeout.
    RequestTimeout,
    /// A console form arrived without the signed-in session's CSRF token (or with another).
    CsrfTokenInvalid,
    /// A console sign-in could not complete (the provider's error, a login state that is
    /// missing, expired, replayed or does not match, an ID token refused).
    SignInFailed,
    /// Too many failed authentications came from the caller's address: requests carrying
    /// credentials are refused until the window ends (see the `Retry-After` header).
    RateLimited,
    // --- server (5xx) ---
    /// The credential provider failed.
    ProviderFailed,
    /// An MCP gateway upstream gave no result (unreachable, protocol error or timeout; the
    /// message and the audit record say which).
    UpstreamFailed,
    /// The target of the resource (its database, cache, …) is not answering; the broker sends
    /// it no work until a probe succeeds. Retry later.
    TargetUnavailable,
    /// The store failed; nothing was changed.
    StoreUnavailable,
    /// Unexpected internal error.
    Internal,
}

impl ErrorCode {
    /// The stable snake_case code.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            TokenMissing => "token_missing",
            TokenTooLarge => "token_too_large",
            TokenMalformed => "token_malformed",
            AlgNotAllowed => "alg_not_allowed",
            HeaderKeyForbidden => "header_key_forbidden",
            UnknownIssuer => "unknown_issuer",
            SpiffeIdInvalid => "spiffe_id_invalid",
            UnknownKid => "unknown_kid",
            SignatureInvalid => "signature_invalid",
            AudienceMismatch => "audience_mismatch",
            TokenExpired => "token_expired",
            InsufficientUserAuthentication => "insufficient_user_authentication",
            TokenNotYetValid => "token_not_yet_valid",
            TokenLifetimeTooLong => "token_lifetime_too_long",
            ClaimsInvalid => "claims_invalid",
            JwksUnavailable => "jwks_unavailable",
            WrongPrincipalKind => "wrong_principal_kind",
            ClientAuthFailed => "client_auth_failed",
            DpopProofInvalid => "dpop_proof_invalid",
            DpopRequired => "dpop_required",
            DpopNonceRequired => "dpop_nonce_required",
            CsrfTokenInvalid => "csrf_token_invalid",
            SignInFailed => "sign_in_failed",
            InvalidRequest => "invalid_request",
            BodyTooLarge => "body_too_large",
            UnsupportedMediaType => "unsupported_media_type",
            TtlOutOfBounds => "ttl_out_of_bounds",
            TaskIdentityMismatch => "task_identity_mismatch",
            UnknownResource => "unknown_resource",
            UnknownAction => "unknown_action",
            UnknownLease => "unknown_lease",
            ApprovalDigestMismatch => "approval_digest_mismatch",
            UnknownTool => "unknown_tool",
            InvalidWindow => "invalid_window",
            TaskRequired => "task_required",
            PolicyDenied => "policy_denied",
            EnvironmentSeparation => "environment_separation",
            ApproverNotEligible => "approver_not_eligible",
            SelfApprovalForbidden => "self_approval_forbidden",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            NotAcceptable => "not_acceptable",
            OriginNotAllowed => "origin_not_allowed",
            TaskNotFound => "task_not_found",
            RequestNotFound => "request_not_found",
            LeaseNotFound => "lease_not_found",
            TaskNotOpen => "task_not_open",
            TaskEnded => "task_ended",
            FreezeNotActive => "freeze_not_active",
            FreezeNotFound => "freeze_not_found",
            NotAdmin => "not_admin",
            SsfStreamsReadOnly => "ssf_streams_read_only",
            Frozen => "frozen",
            BudgetExceeded => "budget_exceeded",
            HistoryChanged => "history_changed",
            RequestNotPending => "request_not_pending",
            AlreadyVoted => "already_voted",
            RequestExpired => "request_expired",
            LeaseNotActive => "lease_not_active",
            Conflict => "conflict",
            RequestTimeout => "request_timeout",
            RateLimited => "rate_limited",
            ProviderFailed => "provider_failed",
            UpstreamFailed => "upstream_failed",
            TargetUnavailable => "target_unavailable",
            StoreUnavailable => "store_unavailable",
            Internal => "internal",
        }
    }

    /// The HTTP status this code maps to.
    pub fn http_status(self) -> u16 {
        use ErrorCode::*;
        match self {
            TokenMissing
            | TokenTooLarge
            | TokenMalformed
            | AlgNotAllowed
            | HeaderKeyForbidden
            | UnknownIssuer
            | SpiffeIdInvalid
            | UnknownKid
            | SignatureInvalid
            | AudienceMismatch
            | TokenExpired
            | TokenNotYetValid
            | TokenLifetimeTooLong
            | ClaimsInvalid
            | JwksUnavailable
            | ClientAuthFailed
            | DpopProofInvalid
            | InsufficientUserAuthentication => 401,
            DpopRequired | DpopNonceRequired => 400,
            WrongPrincipalKind | CsrfTokenInvalid => 403,
            SignInFailed => 400,
            InvalidRequest => 400,
            BodyTooLarge => 413,
            UnsupportedMediaType => 415,
            // Well-formed requests the configuration refuses: the API document can state the
            // shape of a request, not which resources, actions and TTLs this broker offers.
            TtlOutOfBounds
            | UnknownResource
            | UnknownAction
            | UnknownLease
            | TaskIdentityMismatch
            | ApprovalDigestMismatch
            | UnknownTool
            | InvalidWindow => 422,
            TaskRequired => 400,
            PolicyDenied
            | EnvironmentSeparation
            | ApproverNotEligible
            | SelfApprovalForbidden
            | NotAdmin
            | SsfStreamsReadOnly => 403,
            // RFC 4918 `423 Locked`: the request is fine, the scope is locked until lifted.
            Frozen => 423,
            NotFound | TaskNotFound | RequestNotFound | LeaseNotFound | FreezeNotFound => 404,
            MethodNotAllowed => 405,
            NotAcceptable => 406,
            OriginNotAllowed => 403,
            TaskNotOpen | TaskEnded | RequestNotPending | AlreadyVoted | LeaseNotActive
            | FreezeNotActive | Conflict | HistoryChanged => 409,
            RequestExpired => 409,
            RequestTimeout => 408,
            RateLimited | BudgetExceeded => 429,
            ProviderFailed | UpstreamFailed => 502,
            StoreUnavailable | TargetUnavailable => 503,
            Internal => 500,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from a broker operation: a stable code and a lowercase, secret-free message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// Stable code.
    pub code: ErrorCode,
    /// Human-readable, lowercase message; user input in backticks; never a secret.
    pub message: String,
}

impl ApiError {
    /// Builds an error from a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Shorthand for `Result<T, ApiError>`.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// Quotes user input for an error message: backticks, at most 80 characters, control
/// characters escaped, so hostile input cannot forge lines or flood logs.
///
/// # Security
/// Input shaped like a credential ([`looks_like_credential`]), e.g. a token sent as a lease
/// id or a password as a resource name, is not repeated: it reads `` `[credential]` ``.
pub fn quote(input: &str) -> String {
    if looks_like_credential(input) {
        return "`[credential]`".to_owned();
    }
    let mut out = String::with_capacity(input.len().min(84) + 2);
    out.push('`');
    for (i, c) in input.chars().enumerate() {
        if i >= 80 {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out.push('`');
    out
}

/// Whether `input` (trimmed) has the shape of a credential the broker or an identity provider
/// issues: a Latch-format secret with a valid checksum ([`crate::credential_format`]) or a
/// compact JWS or JWE (three or five base64url segments, the first a JSON object, `eyJ…`).
/// Error messages and the access log never repeat such a value.
pub fn looks_like_credential(input: &str) -> bool {
    let t = input.trim();
    if crate::credential_format::parse(t).is_some() {
        return true;
    }
    let segments = t.split('.').count();
    t.starts_with("eyJ")
        && (segments == 3 || segments == 5)
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// `text` with every credential-shaped word ([`looks_like_credential`]) replaced by
/// `[credential]`. A word is a maximal run of `A-Z a-z 0-9 _ - .` (the alphabet of Latch secrets
/// and compact JWS/JWE), trailing dots trimmed (sentence punctuation).
///
/// # Security
/// The last line of defence for text that leaves the broker (error bodies) or is kept (audit
/// details): whatever path put a caller's credential into a message (an unknown JSON member
/// name, a library's error text), it is not repeated.
pub fn redact_credentials(text: &str) -> std::borrow::Cow<'_, str> {
    let is_word = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    // Byte spans of the credential-shaped words.
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut consider = |from: usize, to: usize| {
        let word = text[from..to].trim_end_matches('.');
        if word.len() >= 16 && looks_like_credential(word) {
            spans.push((from, from + word.len()));
        }
    };
    let mut start: Option<usize> = None;
    for (i, c) in text.char_indices() {
        match (is_word(c), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                consider(s, i);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        consider(s, text.len());
    }
    if spans.is_empty() {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (from, to) in spans {
        out.push_str(&text[at..from]);
        out.push_str("[credential]");
        at = to;
    }
    out.push_str(&text[at..]);
    std::borrow::Cow::Owned(out)
}

/// `value` with [`redact_credentials`] applied to every string in it (object keys included).
pub fn redact_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => {
            if let std::borrow::Cow::Owned(r) = redact_credentials(s) {
                *s = r;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_json),
        serde_json::Value::Object(map) => {
            let keys: Vec<String> = map
                .keys()
                .filter(|k| matches!(redact_credentials(k), std::borrow::Cow::Owned(_)))
                .cloned()
                .collect();
            for k in keys {
                if let Some(v) = map.remove(&k) {
                    map.insert(redact_credentials(&k).into_owned(), v);
                }
            }
            map.values_mut().for_each(redact_json);
        }
        _ => {}
    }
}

/// A (de)serialisation error message (serde_json, serde_urlencoded, axum's rejections)
/// without the input values it quotes: serde's `string "…"` becomes `a string` and
/// `unknown variant `…`` loses its value, so `invalid type: string "eyJ…", expected i64`
/// reads `invalid type: a string, expected i64`. Field names, expected types and positions
/// stay, so the message still says what to fix.
///
/// # Security
/// A caller that puts a credential in the wrong field must not get it echoed into an error
/// body (and from there into its own logs and transcripts); the broker never repeats a value.
pub fn without_input_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    loop {
        let string = rest.find("string \"").map(|i| (i, "string \""));
        let variant = rest
            .find("unknown variant `")
            .map(|i| (i, "unknown variant `"));
        let next = match (string, variant) {
            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
            (a, b) => a.or(b),
        };
        let Some((at, marker)) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..at]);
        let value = &rest[at + marker.len()..];
        let (replacement, end) = if marker.ends_with('"') {
            ("a string", closing_quote(value))
        } else {
            ("unknown variant", value.find('`'))
        };
        out.push_str(replacement);
        match end {
            Some(e) => rest = &value[e + 1..],
            // Unterminated: drop the remainder rather than risk echoing it.
            None => return out,
        }
    }
}

/// The byte index of the `"` closing a Rust-`Debug`-escaped string whose opening quote came
/// just before `s`.
fn closing_quote(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod input_value_tests {
    use super::without_input_values;

    #[test]
    fn credential_shaped_words_are_redacted_anywhere_in_a_text() {
        use super::redact_credentials;
        let secret =
            crate::credential_format::generate(crate::credential_format::CredentialKind::Postgres)
                .unwrap();
        let secret: &str = &secret;
        let jwt = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2lnbmF0dXJl";
        for (text, want) in [
            (
                format!("Failed to deserialize: `{secret}`: unknown field `{secret}`, expected one of"),
                "Failed to deserialize: `[credential]`: unknown field `[credential]`, expected one of".to_owned(),
            ),
            (format!("token {jwt}."), "token [credential].".to_owned()),
            (format!("a={jwt}&b=1"), "a=[credential]&b=1".to_owned()),
        ] {
            assert_eq!(redact_credentials(&text), want);
        }
        let plain = "no resource `build-hosts` in environment `prod.eu-1`";
        assert!(matches!(
            redact_credentials(plain),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn credentials_are_never_quoted() {
        use super::{looks_like_credential, quote};
        let secret =
            crate::credential_format::generate(crate::credential_format::CredentialKind::Postgres)
                .unwrap();
        assert!(looks_like_credential(&secret));
        assert_eq!(quote(&secret), "`[credential]`");
        assert_eq!(
            quote(" eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln "),
            "`[credential]`"
        );
        // Ids, names and almost-tokens are quoted as before.
        for plain in [
            "lease_01a23beb358074b8",
            "ci-cache",
            "eyJ.only-two",
            "a.b.c",
        ] {
            assert!(!looks_like_credential(plain), "{plain}");
            assert_eq!(quote(plain), format!("`{plain}`"));
        }
    }

    #[test]
    fn serde_messages_keep_their_shape_but_lose_the_values() {
        assert_eq!(
            without_input_values(
                "ttl_secs: invalid type: string \"eyJ.a\\\"b.c\", expected i64 at line 1 column 9"
            ),
            "ttl_secs: invalid type: a string, expected i64 at line 1 column 9"
        );
        assert_eq!(
            without_input_values("unknown variant `ltcpg_x`, expected `workload` or `human`"),
            "unknown variant, expected `workload` or `human`"
        );
        assert_eq!(
            without_input_values("unknown field `ttl`, expected `ttl_secs`"),
            "unknown field `ttl`, expected `ttl_secs`"
        );
        assert_eq!(
            without_input_values("invalid value: string \"unterminated"),
            "invalid value: a string"
        );
        // A serde_json message really has this shape.
        let e = serde_json::from_str::<i64>("\"secret-value\"").unwrap_err();
        let m = without_input_values(&e.to_string());
        assert!(!m.contains("secret-value") && m.contains("a string"), "{m}");
    }
}
