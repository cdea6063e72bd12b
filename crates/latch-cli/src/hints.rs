//! The next step for an error: every error the CLI prints is one line that ends by naming what
//! to do (a flag, an environment variable or a command).

/// Who a command speaks for, so a hint names the right token: agent commands take a workload
/// token, `pending`/`approve`/`deny`/`login` a human one, `admin`/`audit`/`report` a human one in
/// the broker's admin group. Set once by `main` before the command runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Caller {
    Workload = 0,
    Human = 1,
    Admin = 2,
}

static CALLER: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Records who the running command speaks for ([`Caller`]).
pub(crate) fn set_caller(c: Caller) {
    CALLER.store(c as u8, std::sync::atomic::Ordering::Relaxed);
}

fn caller() -> Caller {
    match CALLER.load(std::sync::atomic::Ordering::Relaxed) {
        1 => Caller::Human,
        2 => Caller::Admin,
        _ => Caller::Workload,
    }
}

/// What to do after the broker answered error `code`, for the running command's caller.
pub(crate) fn next_step(code: &str) -> Option<&'static str> {
    next_step_for(code, caller())
}

/// Codes that have no next step beyond their message: the CLI never sends what causes them
/// (DPoP, the console's forms and sign-in, the MCP gateway's tools, the SSF stream API), or the
/// message already names the field to fix (`invalid_request`). Every other stable code has one.
#[cfg(test)]
const NO_NEXT_STEP: &[&str] = &[
    "dpop_proof_invalid",
    "dpop_required",
    "dpop_nonce_required",
    "csrf_token_invalid",
    "invalid_request",
    "unsupported_media_type",
    "unknown_tool",
    "task_required",
    "not_found",
    "method_not_allowed",
    "not_acceptable",
    "origin_not_allowed",
    "ssf_streams_read_only",
];

/// [`next_step`] for `who`: a flag, an environment variable or a command; `None` when the
/// message already says it or nothing better than the message exists.
pub(crate) fn next_step_for(code: &str, who: Caller) -> Option<&'static str> {
    sign_in_step(code, who).or_else(|| work_step(code, who))
}

/// [`next_step_for`] the codes of authentication: which token, from where.
fn sign_in_step(code: &str, who: Caller) -> Option<&'static str> {
    use Caller::{Admin, Human, Workload};
    Some(match (code, who) {
        ("token_missing", Workload) => {
            "export LATCH_TOKEN=$(latch dev token --kind workload --repository OWNER/NAME) on a \
             development broker, pass --token, or sign in with `latch login`"
        }
        ("token_missing", Human) => {
            "sign in with `latch login`, or on a development broker export LATCH_TOKEN=$(latch \
             dev token --kind human --subject ID --group GROUP), or pass --token"
        }
        ("token_missing", Admin) => {
            "sign in with `latch login` as a member of the broker's admin group, or on a \
             development broker export LATCH_TOKEN=$(latch dev token --kind human --subject ID \
             --group ADMIN_GROUP), or pass --token"
        }
        ("token_expired" | "token_not_yet_valid", Workload) => {
            "get a fresh token: export LATCH_TOKEN=$(latch dev token …) again (the run id is \
             kept, so are your tasks), or `latch login`"
        }
        ("token_expired" | "token_not_yet_valid", _) => {
            "sign in again with `latch login`, or mint a fresh development token: export \
             LATCH_TOKEN=$(latch dev token --kind human …)"
        }
        ("token_lifetime_too_long", _) => {
            "mint a shorter-lived token (`latch dev token --ttl 1h` or less), or ask the token's \
             issuer for one within the broker's bound"
        }
        (
            "token_malformed"
            | "unknown_issuer"
            | "unknown_kid"
            | "signature_invalid"
            | "alg_not_allowed"
            | "claims_invalid"
            | "token_too_large"
            | "header_key_forbidden",
            _,
        ) => {
            "check that --token/LATCH_TOKEN holds a token for this broker (--server/LATCH_SERVER), \
             e.g. export LATCH_TOKEN=$(latch dev token …), or `latch login`"
        }
        ("audience_mismatch", _) => {
            "ask for a token whose audience is this broker: --audience/LATCH_AUDIENCE must be the \
             `audience` of the broker's `[[issuers]]` entry (default: --server)"
        }
        ("spiffe_id_invalid", _) => {
            "check the workload's SPIFFE ID against the broker's `[[issuers]]` trust domain, or \
             pick another identity with --identity/LATCH_IDENTITY"
        }
        ("jwks_unavailable", _) => {
            "the broker cannot read the issuer's keys right now; run the command again later"
        }
        ("client_auth_failed", _) => "check the client id and secret the broker was given",
        ("sign_in_failed", _) => "sign in again with `latch login`",
        ("insufficient_user_authentication", _) => "sign in again with `latch login`",
        ("wrong_principal_kind", Workload) => {
            "this command takes a workload token: export LATCH_TOKEN=$(latch dev token --kind \
             workload --repository OWNER/NAME), --token, or --identity"
        }
        ("wrong_principal_kind", Human) => {
            "this command takes a human token: sign in with `latch login`, or export \
             LATCH_TOKEN=$(latch dev token --kind human --subject ID --group GROUP)"
        }
        ("wrong_principal_kind", Admin) => {
            "this command takes an operator's human token: sign in with `latch login`, or export \
             LATCH_TOKEN=$(latch dev token --kind human --subject ID --group ADMIN_GROUP)"
        }
        _ => return None,
    })
}

/// [`next_step_for`] the codes of tasks, requests, leases, approvals and the broker's state.
fn work_step(code: &str, who: Caller) -> Option<&'static str> {
    use Caller::Workload;
    Some(match (code, who) {
        ("body_too_large", _) => "send less: split the input and run the command once per part",
        ("unknown_resource", _) => "run `latch resources` to see what may be requested",
        ("unknown_action", _) => "run `latch resources` to see each resource's actions",
        ("ttl_out_of_bounds", _) => "pass a smaller --ttl (`latch resources` shows each maximum)",
        ("task_identity_mismatch", _) => {
            "a task is used with the identity that opened it: use that token, or open a task \
             with this one (`latch task open --purpose … --environment ENV`)"
        }
        ("invalid_window", _) => {
            "pass a --from before --to, at most 366 days apart (or --since DURATION)"
        }
        ("task_not_found", Workload) => {
            "run `latch task list` to see your tasks; tasks belong to the token's run, so mint \
             the next token in the same shell or with `latch dev token --run-id RUN`"
        }
        ("task_not_found", _) => "run `latch admin tasks` to see the open tasks",
        ("task_not_open" | "task_ended", _) => {
            "open a new task with `latch task open --purpose … --environment ENV`"
        }
        ("request_not_found", _) => {
            "run `latch task show TASK --timeline` to see the task's requests"
        }
        ("lease_not_found" | "unknown_lease", Workload) => {
            "run `latch lease list TASK` to see the leases"
        }
        ("lease_not_found" | "unknown_lease", _) => {
            "run `latch admin leases` to see the live leases"
        }
        ("lease_not_active", Workload) => {
            "the lease was revoked or has expired and cannot be renewed; `latch lease list TASK` \
             shows its state: ask again with `latch request TASK --resource R --action A`"
        }
        ("lease_not_active", _) => {
            "the lease is already revoked or expired; `latch admin leases` shows the live ones"
        }
        ("approval_digest_mismatch", _) => {
            "the request changed since that digest was shown: run `latch approve REQ --reason …` \
             (or `latch deny`) without --digest to see the current one and vote on it, or \
             `latch pending`"
        }
        ("request_expired", Workload) => {
            "the request was not decided or claimed in time: ask again with `latch request TASK \
             --resource R --action A`"
        }
        ("request_not_pending", Workload) => {
            "run `latch task show TASK --timeline` to see how the request was decided"
        }
        ("request_not_pending" | "already_voted" | "request_expired", _) => {
            "run `latch pending` to see what is still open for your vote"
        }
        ("approver_not_eligible" | "self_approval_forbidden", _) => {
            "ask an approver of the group named in `latch pending` to vote"
        }
        ("not_admin", _) => {
            "use a token of a member of the broker's admin group (--token/LATCH_TOKEN, or \
             `latch login` as one)"
        }
        ("frozen", _) => {
            "an operator lifts the freeze with `latch admin unfreeze` (`latch admin freezes` \
             lists them)"
        }
        ("freeze_not_active" | "freeze_not_found", _) => {
            "run `latch admin freezes` to see the freezes in force"
        }
        ("environment_separation" | "policy_denied", _) => {
            "run `latch resources` to see each resource's environment, and open the task there"
        }
        ("budget_exceeded", _) => {
            "a per-minute budget frees up in the next minute, wait and run the command again; \
             the others only in a new task (`latch task open`)"
        }
        ("history_changed", _) => {
            "run the command again: the task's history changed meanwhile, and it is decided anew"
        }
        ("conflict", _) => "run the command again: a concurrent change won",
        ("rate_limited", _) => "wait a moment and run the command again",
        ("request_timeout", _) => "run the command again; the broker was slow to answer",
        (
            "store_unavailable" | "provider_failed" | "target_unavailable" | "upstream_failed"
            | "internal",
            _,
        ) => "run the command again later; the broker's operator sees the cause in its log",
        _ => return None,
    })
}

/// The broker's error message in the CLI's words: the API's `ttl_secs` is the `--ttl` flag,
/// and its bounds and value, given in seconds, read as durations (`--ttl` must be between 1s
/// and 8h, got 9h).
pub(crate) fn in_cli_words(message: &str) -> String {
    let m = message
        .replace("`ttl_secs`", "`--ttl`")
        .replace("task ttl", "`--ttl`");
    let Some(at) = m.find("`--ttl` must be ") else {
        return m;
    };
    let (head, rest) = m.split_at(at + "`--ttl` must be ".len());
    let secs = |s: &str| s.trim().parse::<i64>().ok();
    let d = crate::human::short_duration;
    let (bounds, got) = match rest.split_once(", got ") {
        Some((b, g)) => (b, secs(g).map(|g| format!(", got {}", d(g)))),
        None => (rest, Some(String::new())),
    };
    let bounds = bounds.trim_end_matches(" seconds");
    let said = if let Some((lo, hi)) = bounds.split_once(" to ") {
        secs(lo)
            .zip(secs(hi))
            .map(|(lo, hi)| format!("between {} and {}", d(lo), d(hi)))
    } else {
        bounds
            .strip_prefix("at least ")
            .and_then(secs)
            .map(|lo| format!("at least {}", d(lo)))
    };
    match (said, got) {
        (Some(said), Some(got)) => format!("{head}{said}{got}"),
        _ => m,
    }
}

/// `cannot reach URL`, with the reason and what to do: start a broker or point at one.
pub(crate) fn unreachable(base: &str, e: &reqwest::Error) -> String {
    let why = if e.is_connect() {
        "connection refused or no route"
    } else if e.is_timeout() {
        "timed out"
    } else {
        "no answer"
    };
    format!(
        "cannot reach {base} ({why}): start a broker with `latch serve`, or point at yours with \
         --server URL or LATCH_SERVER=URL"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ttl_is_the_flag() {
        assert_eq!(
            in_cli_words("`ttl_secs` must be 1 to 3600"),
            "`--ttl` must be between 1s and 1h"
        );
        assert_eq!(
            in_cli_words("task ttl must be 1 to 28800 seconds, got 32400"),
            "`--ttl` must be between 1s and 8h, got 9h"
        );
        assert_eq!(
            in_cli_words("`ttl_secs` must be at least 1, got 0"),
            "`--ttl` must be at least 1s, got 0s"
        );
        assert_eq!(
            in_cli_words("lease `l` reached its max ttl"),
            "lease `l` reached its max ttl"
        );
    }

    #[test]
    fn reported_errors_name_their_next_step() {
        for (code, needle) in [
            ("token_missing", "latch dev token"),
            ("unknown_resource", "latch resources"),
            ("task_not_found", "--run-id"),
        ] {
            assert!(next_step(code).unwrap().contains(needle), "{code}");
        }
    }

    /// Every stable error code of the API (its OpenAPI document's `ErrorCode`) names a next
    /// step for every caller, but the few listed in `NO_NEXT_STEP`.
    #[test]
    fn every_stable_code_has_a_next_step() {
        use utoipa::OpenApi;
        let doc = serde_json::to_value(latch_server::http::openapi::ApiDoc::openapi()).unwrap();
        let codes = doc["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .expect("ErrorCode enum in the API document");
        assert!(codes.len() > 40);
        for code in codes.iter().filter_map(serde_json::Value::as_str) {
            for who in [Caller::Workload, Caller::Human, Caller::Admin] {
                assert_eq!(
                    next_step_for(code, who).is_some(),
                    !NO_NEXT_STEP.contains(&code),
                    "{code} for {who:?}"
                );
            }
        }
    }

    #[test]
    fn hints_name_the_callers_token() {
        assert!(
            next_step_for("token_missing", Caller::Human)
                .unwrap()
                .contains("--kind human")
        );
        assert!(
            next_step_for("wrong_principal_kind", Caller::Human)
                .unwrap()
                .contains("human")
        );
        assert!(
            !next_step_for("token_missing", Caller::Human)
                .unwrap()
                .contains("workload")
        );
        assert!(
            next_step_for("lease_not_active", Caller::Workload)
                .unwrap()
                .contains("latch lease list")
        );
    }
}
