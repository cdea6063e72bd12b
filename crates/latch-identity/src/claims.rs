//! Time and audience checks (RFC 7519 §4.1) with the injected clock, and the issuer presets that
//! map verified claims onto a principal.

use latch_core::error::quote;
use latch_core::model::{Human, Principal, Workload, WorkloadClaims};
use latch_core::{ApiError, ErrorCode};
use serde_json::{Map, Value};

use crate::config::Preset;

type Claims = Map<String, Value>;

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::ClaimsInvalid, msg)
}

/// A NumericDate (RFC 7519 §2): integer or fractional seconds, truncated towards negative
/// infinity.
fn numeric_date(c: &Claims, name: &str) -> Result<Option<i64>, ApiError> {
    match c.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                return Ok(Some(i));
            }
            match n.as_f64() {
                Some(f) if f.is_finite() && f.abs() < 1e15 => Ok(Some(f.floor() as i64)),
                _ => Err(invalid(format!("claim `{name}` is not a valid time"))),
            }
        }
        Some(_) => Err(invalid(format!("claim `{name}` is not a number"))),
    }
}

/// `kubernetes.io.warnafter`, if the token carries one.
fn kubernetes_warnafter(c: &Claims) -> Result<Option<i64>, ApiError> {
    match c.get("kubernetes.io").and_then(|k| k.get("warnafter")) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| invalid("claim `kubernetes.io.warnafter` is not an integer")),
        Some(_) => Err(invalid("claim `kubernetes.io.warnafter` is not a number")),
    }
}

/// What [`check_validity`] checks a token against.
pub(crate) struct Validity<'a> {
    /// Unix seconds, from the injected clock.
    pub now: i64,
    /// Tolerated clock skew, seconds.
    pub leeway: i64,
    /// `aud` must contain one of these (one for OIDC issuers, one or more for SPIFFE).
    pub audiences: &'a [String],
    /// Longest `exp - iat` (or `exp - now` without `iat`), seconds.
    pub max_lifetime: i64,
    /// The issuer's preset (Kubernetes: `warnafter` counts as expiry).
    pub preset: Preset,
}

/// Checks `exp`, `nbf`, `iat`, the token's lifetime and `aud`; returns the effective expiry
/// (`exp`, or for Kubernetes an earlier `kubernetes.io.warnafter`: the API server extends
/// kubelet-requested tokens to a year and records the intended expiry there, and the kubelet
/// refreshes the file well before it, so a token past it is one nobody refreshes).
///
/// # Errors
/// `claims_invalid`, `token_expired`, `token_not_yet_valid`, `token_lifetime_too_long`,
/// `audience_mismatch`.
pub(crate) fn check_validity(c: &Claims, v: &Validity<'_>) -> Result<i64, ApiError> {
    let (now, leeway) = (v.now, v.leeway);
    let wanted = |a: &String| v.audiences.contains(a);
    let exp = numeric_date(c, "exp")?.ok_or_else(|| invalid("claim `exp` is missing"))?;
    let exp = match v.preset {
        Preset::Kubernetes => match kubernetes_warnafter(c)? {
            Some(w) => exp.min(w),
            None => exp,
        },
        _ => exp,
    };
    let nbf = numeric_date(c, "nbf")?;
    let iat = numeric_date(c, "iat")?;
    if now > exp.saturating_add(leeway) {
        return Err(ApiError::new(ErrorCode::TokenExpired, "token has expired"));
    }
    let latest = now.saturating_add(leeway);
    if nbf.is_some_and(|t| t > latest) {
        return Err(ApiError::new(
            ErrorCode::TokenNotYetValid,
            "token is not valid yet (`nbf` is in the future)",
        ));
    }
    if iat.is_some_and(|t| t > latest) {
        return Err(ApiError::new(
            ErrorCode::TokenNotYetValid,
            "token is not valid yet (`iat` is in the future)",
        ));
    }
    // Without `iat` the remaining lifetime is measured from now, with no leeway: a token
    // whose issue time is unknown never lives longer than `max_lifetime` from here.
    let lifetime = match iat {
        Some(t) => exp.saturating_sub(t),
        None => exp.saturating_sub(now),
    };
    if lifetime > v.max_lifetime {
        return Err(ApiError::new(
            ErrorCode::TokenLifetimeTooLong,
            format!(
                "token lifetime of {lifetime}s exceeds the issuer's max_token_lifetime of {}s",
                v.max_lifetime
            ),
        ));
    }
    let contains = match c.get("aud") {
        None => false,
        Some(Value::String(a)) => wanted(a),
        Some(Value::Array(items)) => {
            let mut found = false;
            for item in items {
                match item {
                    Value::String(a) => found |= wanted(a),
                    _ => {
                        return Err(invalid(
                            "claim `aud` is not a string or an array of strings",
                        ));
                    }
                }
            }
            found
        }
        Some(_) => {
            return Err(invalid(
                "claim `aud` is not a string or an array of strings",
            ));
        }
    };
    if c.get("aud").is_none() {
        return Err(ApiError::new(
            ErrorCode::AudienceMismatch,
            "token has no `aud` claim",
        ));
    }
    if !contains {
        let shown = match v.audiences {
            [one] => quote(one),
            _ => "any of the issuer's audiences".to_owned(),
        };
        return Err(ApiError::new(
            ErrorCode::AudienceMismatch,
            format!("token audience does not contain {shown}"),
        ));
    }
    Ok(exp)
}

/// A mapped claim's text: refused when it holds a control character or one that can rewrite
/// or hide what a human reads (bidi controls, zero-width and invisible characters:
/// [`latch_core::audit::is_deceptive`]). Such a claim would reach policies, audit records and
/// approvers' screens looking like another value (`acme/payments\u{200b}` for
/// `acme/payments`); no platform's repository, branch, namespace or account names need them.
fn plain_text(s: &str, shown: &str) -> Result<(), ApiError> {
    if s.chars()
        .any(|ch| ch.is_control() || latch_core::audit::is_deceptive(ch))
    {
        return Err(invalid(format!(
            "claim `{shown}` holds a control, bidi or zero-width character"
        )));
    }
    Ok(())
}

/// A claim that is a string, or an integer rendered as a string (issuers differ on ids).
///
/// # Errors
/// `claims_invalid` for another type, or text that fails [`plain_text`].
fn opt_str_in(c: &Claims, name: &str, shown: &str) -> Result<Option<String>, ApiError> {
    match c.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => plain_text(s, shown).map(|()| Some(s.clone())),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Some(n.to_string())),
        Some(_) => Err(invalid(format!("claim `{shown}` is not a string"))),
    }
}

fn opt_str(c: &Claims, name: &str) -> Result<Option<String>, ApiError> {
    opt_str_in(c, name, name)
}

fn req_str_in(c: &Claims, name: &str, shown: &str) -> Result<String, ApiError> {
    match opt_str_in(c, name, shown)? {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(invalid(format!("claim `{shown}` is missing or empty"))),
    }
}

fn req_str(c: &Claims, name: &str) -> Result<String, ApiError> {
    req_str_in(c, name, name)
}

/// A boolean claim; GitHub and GitLab send `"true"` / `"false"` strings.
fn opt_bool(c: &Claims, name: &str) -> Result<Option<bool>, ApiError> {
    match c.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s == "true" => Ok(Some(true)),
        Some(Value::String(s)) if s == "false" => Ok(Some(false)),
        Some(_) => Err(invalid(format!("claim `{name}` is not a boolean"))),
    }
}

fn opt_object<'a>(c: &'a Claims, name: &str, shown: &str) -> Result<Option<&'a Claims>, ApiError> {
    match c.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(invalid(format!("claim `{shown}` is not an object"))),
    }
}

/// What the preset needs besides the claims.
pub(crate) struct MapContext<'a> {
    pub issuer: &'a str,
    pub preset: Preset,
    pub subject_claim: &'a str,
    pub id_claim: &'a str,
    pub groups_claim: &'a str,
    pub exp: i64,
}

/// Maps verified claims onto a principal.
///
/// # Errors
/// `claims_invalid` when a claim the preset requires is missing or has the wrong type.
pub(crate) fn map_principal(c: &Claims, ctx: &MapContext<'_>) -> Result<Principal, ApiError> {
    match ctx.preset {
        Preset::GithubActions => github(c, ctx).map(|w| Principal::Workload(Box::new(w))),
        Preset::GitlabCi => gitlab(c, ctx).map(|w| Principal::Workload(Box::new(w))),
        Preset::Kubernetes => kubernetes(c, ctx).map(|w| Principal::Workload(Box::new(w))),
        Preset::Generic => generic(c, ctx).map(|w| Principal::Workload(Box::new(w))),
        Preset::Human => human(c, ctx).map(Principal::Human),
        // Mapped from the parsed SPIFFE ID by `spiffe::workload`, never from claims.
        Preset::Spiffe => Err(invalid("a JWT-SVID is mapped from its SPIFFE ID")),
    }
}

fn workload(ctx: &MapContext<'_>, id_suffix: &str, subject: String) -> Workload {
    Workload {
        id: format!("{}#{id_suffix}", ctx.issuer),
        issuer: ctx.issuer.to_owned(),
        subject,
        preset: ctx.preset.as_str().to_owned(),
        run_binding: None,
        on_behalf_of: None,
        claims: WorkloadClaims::default(),
        token_expires_at_unix_secs: ctx.exp,
    }
}

/// GitHub Actions: <https://docs.github.com/en/actions/reference/security/oidc>.
/// GitHub events whose runs count as the repository's own branch workflow.
const TRUSTED_GITHUB_EVENTS: &[&str] = &[
    "push",
    "workflow_dispatch",
    "schedule",
    "release",
    "deployment",
    "repository_dispatch",
];

fn github(c: &Claims, ctx: &MapContext<'_>) -> Result<Workload, ApiError> {
    let sub = req_str(c, "sub")?;
    let git_ref = req_str(c, "ref")?;
    let event_name = req_str(c, "event_name")?;
    let run_id = req_str(c, "run_id")?;
    let run_attempt = req_str(c, "run_attempt")?;
    // Allow-list, not deny-list: only events that run code already on a branch, started by
    // someone with write access, are trusted. Everything else (`pull_request*`, `issue_comment`,
    // `workflow_run`, `merge_group`, …) can be triggered from a fork or runs unmerged code.
    let untrusted_source =
        !TRUSTED_GITHUB_EVENTS.contains(&event_name.as_str()) || git_ref.starts_with("refs/pull/");
    // A pull-request run must never look like the trusted branch workflow, even when GitHub
    // reports the base branch as its ref (`pull_request_target`).
    let branch = if untrusted_source {
        None
    } else {
        git_ref
            .strip_prefix("refs/heads/")
            .filter(|b| !b.is_empty())
            .map(str::to_owned)
    };
    let workflow_ref = match opt_str(c, "job_workflow_ref")? {
        Some(w) => Some(w),
        None => opt_str(c, "workflow_ref")?,
    };
    let mut w = workload(ctx, &sub, sub.clone());
    w.run_binding = Some(format!("gh-run:{run_id}/{run_attempt}"));
    w.on_behalf_of = opt_str(c, "actor")?;
    let canonical = |n: String| WorkloadClaims::canonical_name(Preset::GithubActions.as_str(), &n);
    w.claims = WorkloadClaims {
        repository: Some(canonical(req_str(c, "repository")?)),
        repository_id: opt_str(c, "repository_id")?,
        repository_owner: opt_str(c, "repository_owner")?.map(canonical),
        repository_owner_id: opt_str(c, "repository_owner_id")?,
        git_ref: Some(git_ref),
        branch,
        ref_protected: opt_bool(c, "ref_protected")?,
        environment: opt_str(c, "environment")?,
        event_name: Some(event_name),
        untrusted_source,
        runner_environment: opt_str(c, "runner_environment")?,
        workflow_ref,
        run_id: Some(run_id),
        run_attempt: Some(run_attempt),
        ..WorkloadClaims::default()
    };
    Ok(w)
}

/// GitLab CI: <https://docs.gitlab.com/ci/secrets/id_token_authentication/>.
fn gitlab(c: &Claims, ctx: &MapContext<'_>) -> Result<Workload, ApiError> {
    let sub = req_str(c, "sub")?;
    let job_id = req_str(c, "job_id")?;
    let short_ref = req_str(c, "ref")?;
    let ref_type = req_str(c, "ref_type")?;
    let pipeline_source = req_str(c, "pipeline_source")?;
    let ref_protected = opt_bool(c, "ref_protected")?;
    let untrusted_source = pipeline_source == "merge_request_event" && ref_protected != Some(true);
    let git_ref = match opt_str(c, "ref_path")? {
        Some(p) => Some(p),
        None if ref_type == "branch" => Some(format!("refs/heads/{short_ref}")),
        None => None,
    };
    let branch = (ref_type == "branch" && !untrusted_source).then_some(short_ref);
    let mut w = workload(ctx, &sub, sub.clone());
    w.run_binding = Some(format!("gl-job:{job_id}"));
    w.on_behalf_of = opt_str(c, "user_login")?;
    let canonical = |n: String| WorkloadClaims::canonical_name(Preset::GitlabCi.as_str(), &n);
    w.claims = WorkloadClaims {
        repository: Some(canonical(req_str(c, "project_path")?)),
        repository_id: opt_str(c, "project_id")?,
        repository_owner: opt_str(c, "namespace_path")?.map(canonical),
        repository_owner_id: opt_str(c, "namespace_id")?,
        git_ref,
        branch,
        ref_protected,
        environment: opt_str(c, "environment")?,
        event_name: Some(pipeline_source),
        untrusted_source,
        runner_environment: opt_str(c, "runner_environment")?,
        workflow_ref: opt_str(c, "ci_config_ref_uri")?,
        pipeline_id: opt_str(c, "pipeline_id")?,
        job_id: Some(job_id),
        ..WorkloadClaims::default()
    };
    Ok(w)
}

/// Kubernetes projected service-account tokens: the service account's UID is the identity
/// (a deleted and re-created account of the same name is a different principal).
fn kubernetes(c: &Claims, ctx: &MapContext<'_>) -> Result<Workload, ApiError> {
    let sub = req_str(c, "sub")?;
    let k8s = opt_object(c, "kubernetes.io", "kubernetes.io")?
        .ok_or_else(|| invalid("claim `kubernetes.io` is missing"))?;
    let sa = opt_object(k8s, "serviceaccount", "kubernetes.io.serviceaccount")?
        .ok_or_else(|| invalid("claim `kubernetes.io.serviceaccount` is missing"))?;
    let sa_uid = req_str_in(sa, "uid", "kubernetes.io.serviceaccount.uid")?;
    let namespace = req_str_in(k8s, "namespace", "kubernetes.io.namespace")?;
    let pod_uid = match opt_object(k8s, "pod", "kubernetes.io.pod")? {
        Some(pod) => opt_str_in(pod, "uid", "kubernetes.io.pod.uid")?,
        None => None,
    };
    let mut w = workload(ctx, &format!("sa:{sa_uid}"), sub);
    let pod_uid = pod_uid.filter(|u| !u.is_empty());
    w.run_binding = pod_uid.as_ref().map(|u| format!("pod:{u}"));
    w.claims = WorkloadClaims {
        namespace: Some(namespace),
        service_account: opt_str_in(sa, "name", "kubernetes.io.serviceaccount.name")?,
        service_account_uid: Some(sa_uid),
        pod_uid,
        ..WorkloadClaims::default()
    };
    Ok(w)
}

/// Any other workload issuer: identity from `subject_claim`; the [`WorkloadClaims`] fields from
/// same-named claims when present.
fn generic(c: &Claims, ctx: &MapContext<'_>) -> Result<Workload, ApiError> {
    let stable = req_str(c, ctx.subject_claim)?;
    let subject = opt_str(c, "sub")?.unwrap_or_else(|| stable.clone());
    let untrusted_source = match c.get("untrusted_source") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("claim `untrusted_source` is not a boolean")),
    };
    let mut w = workload(ctx, &stable, subject);
    w.claims = WorkloadClaims {
        repository: opt_str(c, "repository")?,
        repository_id: opt_str(c, "repository_id")?,
        repository_owner: opt_str(c, "repository_owner")?,
        repository_owner_id: opt_str(c, "repository_owner_id")?,
        git_ref: opt_str(c, "git_ref")?,
        branch: if untrusted_source {
            None
        } else {
            opt_str(c, "branch")?
        },
        ref_protected: opt_bool(c, "ref_protected")?,
        environment: opt_str(c, "environment")?,
        event_name: opt_str(c, "event_name")?,
        untrusted_source,
        runner_environment: opt_str(c, "runner_environment")?,
        workflow_ref: opt_str(c, "workflow_ref")?,
        namespace: opt_str(c, "namespace")?,
        service_account: opt_str(c, "service_account")?,
        service_account_uid: opt_str(c, "service_account_uid")?,
        ..WorkloadClaims::default()
    };
    Ok(w)
}

fn human(c: &Claims, ctx: &MapContext<'_>) -> Result<Human, ApiError> {
    let id = req_str(c, ctx.id_claim)?;
    let groups = match c.get(ctx.groups_claim) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|g| match g {
                Value::String(s) => plain_text(s, ctx.groups_claim).map(|()| s.clone()),
                _ => Err(invalid(format!(
                    "claim {} is not an array of strings",
                    quote(ctx.groups_claim)
                ))),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(invalid(format!(
                "claim {} is not an array of strings",
                quote(ctx.groups_claim)
            )));
        }
    };
    Ok(Human {
        id,
        issuer: ctx.issuer.to_owned(),
        groups,
        // When the issuer asserted these groups (RFC 7519 §4.1.6 `iat`).
        groups_asserted_at_unix_secs: c.get("iat").and_then(Value::as_i64),
    })
}
