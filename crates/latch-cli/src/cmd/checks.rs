//! Checks the CLI makes around an API call so nothing surprising passes silently: an
//! `--environment` no resource is configured in, and a `--ttl` the broker cut down.

use serde_json::{Value, json};

use crate::client::Client;

/// Refuses `environment` when the broker's resource listing (`GET /v1/resources`) names other
/// environments only. When the listing cannot be read (an older broker, a refused token) the
/// check is skipped: the call that follows reports what is wrong.
///
/// # Errors
/// `environment` is not configured (one line naming the configured ones and `latch resources`).
pub(crate) async fn environment(c: &Client, environment: &str) -> Result<(), String> {
    let Ok(a) = c.get("/v1/resources").await else {
        return Ok(());
    };
    let Some(rows) = a.body.as_array().filter(|_| a.ok()) else {
        return Ok(());
    };
    let mut envs: Vec<&str> = rows
        .iter()
        .filter_map(|r| r["environment"].as_str())
        .collect();
    envs.sort_unstable();
    envs.dedup();
    if envs.is_empty() || envs.contains(&environment) {
        return Ok(());
    }
    Err(latch_core::audit::escape_text(&format!(
        "no resource is configured in environment `{environment}`; pass --environment with one \
         of {} (see `latch resources`)",
        envs.join(", ")
    ))
    .into_owned())
}

/// The TTL the broker gave, in seconds, when `body` is an access answer: the request's
/// `ttl_secs`, and no more than its lease's lifetime from issuance (a lease also ends with its
/// task). For a renewal, what is left of the renewed lease from `now` (the answer may carry
/// the original request, whose `ttl_secs` is not what the renewal gave).
fn granted_secs(body: &Value, now: i64, renewal: bool) -> Option<i64> {
    let lease = &body["lease"];
    if renewal {
        return lease["expires_at_unix_secs"].as_i64().map(|e| e - now);
    }
    let lease_secs = match (
        lease["expires_at_unix_secs"].as_i64(),
        lease["issued_at_unix_secs"].as_i64(),
    ) {
        (Some(e), _) if body["request"].is_null() => Some(e - now),
        (Some(e), Some(i)) => Some(e - i),
        _ => None,
    };
    match (body["request"]["ttl_secs"].as_i64(), lease_secs) {
        (Some(r), Some(l)) => Some(r.min(l)),
        (r, l) => r.or(l),
    }
}

/// When the broker granted less than `--ttl` asked for: prints a notice on stderr and adds it
/// to `body` (`"notice"` and `"ttl_clamped": {"requested_secs", "granted_secs"}`), so `--json`
/// carries it too. A renewal is allowed a few seconds of slack (its lifetime is measured from
/// `now`, after the call).
pub(crate) fn clamp_notice(asked: Option<i64>, body: &mut Value, now: i64, renewal: bool) {
    let (Some(asked), Some(granted)) = (asked, granted_secs(body, now, renewal)) else {
        return;
    };
    let slack = if renewal || body["request"].is_null() {
        5
    } else {
        0
    };
    if granted <= 0 || granted + slack >= asked || !body.is_object() {
        return;
    }
    let msg = format!(
        "--ttl {} was cut to {}: the most the resource, the policy or the task allows (`latch \
         resources` shows each resource's maximum)",
        crate::human::short_duration(asked),
        crate::human::short_duration(granted)
    );
    eprintln!("{} {msg}", crate::human::paint("notice:", 33, false));
    body["notice"] = Value::String(msg);
    body["ttl_clamped"] = json!({"requested_secs": asked, "granted_secs": granted});
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_ttl_is_reported_and_a_full_one_is_not() {
        let mut b = json!({"request": {"ttl_secs": 3600}, "lease": {
            "issued_at_unix_secs": 100, "expires_at_unix_secs": 3700}});
        clamp_notice(Some(7200), &mut b, 100, false);
        assert_eq!(b["ttl_clamped"]["granted_secs"], 3600);
        assert!(
            b["notice"]
                .as_str()
                .unwrap()
                .contains("--ttl 2h was cut to 1h")
        );
        let mut b = json!({"request": {"ttl_secs": 600}});
        clamp_notice(Some(600), &mut b, 0, false);
        assert!(b.get("notice").is_none());
        clamp_notice(None, &mut b, 0, false);
        assert!(b.get("notice").is_none());
        // A renewal: what the renewed lease has left, not the original request's TTL.
        let mut b = json!({"request": {"ttl_secs": 600}, "lease": {"expires_at_unix_secs": 1000}});
        clamp_notice(Some(3600), &mut b, 100, true);
        assert_eq!(b["ttl_clamped"]["granted_secs"], 900);
        let mut b = json!({"request": {"ttl_secs": 600}, "lease": {"expires_at_unix_secs": 1000}});
        clamp_notice(Some(900), &mut b, 100, true);
        assert!(b.get("notice").is_none(), "a full renewal is not reported");
    }
}
