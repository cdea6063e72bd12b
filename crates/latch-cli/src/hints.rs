//! The next step for an error: every error the CLI prints is one line that ends by naming what
//! to do (a flag, an environment variable or a command).

/// What to do after the broker answered error `code`: a flag, an environment variable or a
/// command; `None` when the message already says it or nothing better than the message exists.
pub(crate) fn next_step(code: &str) -> Option<&'static str> {
    Some(match code {
        "token_missing" => {
            "export LATCH_TOKEN=$(latch dev token --kind workload --repository OWNER/NAME) on a \
             development broker, pass --token, or sign in with `latch login`"
        }
        "token_expired" | "token_not_yet_valid" => {
            "get a fresh token: export LATCH_TOKEN=$(latch dev token …) again (the run id is \
             kept, so are your tasks), or `latch login`"
        }
        "token_malformed" | "unknown_issuer" | "unknown_kid" | "signature_invalid"
        | "audience_mismatch" | "alg_not_allowed" | "claims_invalid" | "token_too_large" => {
            "check that --token/LATCH_TOKEN holds a token for this broker (--server/LATCH_SERVER), \
             e.g. export LATCH_TOKEN=$(latch dev token …), or `latch login`"
        }
        "insufficient_user_authentication" => "sign in again with `latch login`",
        "wrong_principal_kind" => {
            "agent commands take a workload token, approvals a human one \
             (`latch dev token --kind human --subject ID --group GROUP`)"
        }
        "unknown_resource" => "run `latch resources` to see what may be requested",
        "unknown_action" => "run `latch resources` to see each resource's actions",
        "ttl_out_of_bounds" => "pass a smaller --ttl (`latch resources` shows each maximum)",
        "task_not_found" => {
            "run `latch task list` to see your tasks; tasks belong to the token's run, so mint \
             the next token in the same shell or with `latch dev token --run-id RUN`"
        }
        "task_not_open" | "task_ended" => {
            "open a new task with `latch task open --purpose … --environment ENV`"
        }
        "request_not_found" => "run `latch task show TASK --timeline` to see the task's requests",
        "lease_not_found" | "unknown_lease" => "run `latch lease list TASK` to see the leases",
        "request_not_pending" | "already_voted" | "request_expired" => {
            "run `latch pending` to see what is still open for your vote"
        }
        "approver_not_eligible" | "self_approval_forbidden" => {
            "ask an approver of the group named in `latch pending` to vote"
        }
        "not_admin" => "use a token of a member of the broker's admin group (--token/LATCH_TOKEN)",
        "frozen" => "an operator lifts the freeze with `latch admin unfreeze`",
        "environment_separation" | "policy_denied" => {
            "run `latch resources` to see each resource's environment, and open the task there"
        }
        "rate_limited" => "wait a moment and run the command again",
        "store_unavailable" | "provider_failed" | "target_unavailable" | "upstream_failed" => {
            "run the command again later; the broker's operator sees the cause in its log"
        }
        _ => return None,
    })
}

/// The broker's error message in the CLI's words: the API's `ttl_secs` is the `--ttl` flag.
pub(crate) fn in_cli_words(message: &str) -> String {
    message
        .replace("`ttl_secs`", "`--ttl`")
        .replace("task ttl", "task `--ttl`")
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
            "`--ttl` must be 1 to 3600"
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
}
