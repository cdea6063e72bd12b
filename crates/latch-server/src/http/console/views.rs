//! The console's templates (`maud`: every `(value)` is HTML-escaped). No inline script or
//! style: the look is in `console.css`, served by the broker. Texts from workloads and issuers
//! arrive as `Shown` (already escaped for control, bidi and zero-width characters) and are
//! marked when they held such characters. No credential, token or secret is ever passed here.

use latch_core::ApiError;
use latch_core::console::{ParamsView, RequestView, RunView, Shown, TaskTimeline, VoteStanding};
use latch_core::freeze::Freeze;
use latch_core::model::ConsoleSession;
use maud::{DOCTYPE, Markup, html};

/// Who is looking at a page: their session, the CSRF token of its forms, and whether they
/// are an operator (admins get the operator links).
pub struct Who<'a> {
    /// The session.
    pub session: &'a ConsoleSession,
    /// The session's CSRF token.
    pub csrf: &'a str,
    /// Whether the human is in one of the admin groups (`Broker::is_admin`).
    pub admin: bool,
}

/// `2026-12-03 15:31:38 UTC`.
pub(crate) fn when(unix: i64) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&f).ok())
        .unwrap_or_else(|| unix.to_string())
}

/// `1h 05m`, `4m 10s`, `12s`.
fn span(secs: i64) -> String {
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

pub(crate) fn shown(s: &Shown) -> Markup {
    html! {
        span.text { (s.text) }
        @if s.deceptive {
            " " span.warn title="This text held control, bidi or invisible characters; they are shown as \\u{…}" { "⚠ hidden characters shown" }
        }
    }
}

pub(crate) fn opt(s: Option<&Shown>) -> Markup {
    match s {
        Some(s) => shown(s),
        None => html! { span.none { "—" } },
    }
}

pub(crate) fn page(title: &str, who: Option<&Who<'_>>, body: &Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) " · Latch console" }
                link rel="stylesheet" href="/console/static/console.css";
            }
            body {
                header.top {
                    a.brand href="/console/" { "Latch" }
                    span.sub { "approval console" }
                    @if let Some(w) = who {
                        @if w.admin {
                            nav.ops {
                                a href="/console/operators" { "Operators" }
                                " · "
                                a href="/console/kill-switch" { "Kill switch" }
                            }
                        }
                        span.who {
                            "Signed in as " strong { (Shown::of(&w.session.human_id).text) }
                            @if !w.session.groups.is_empty() {
                                " (" (w.session.groups.iter().map(|g| Shown::of(g).text).collect::<Vec<_>>().join(", ")) ")"
                            }
                        }
                        form.inline method="post" action="/console/logout" {
                            input type="hidden" name="csrf" value=(w.csrf);
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

fn params(p: &ParamsView) -> Markup {
    html! {
        @match p {
            ParamsView::None => { span.none { "none" } }
            ParamsView::Ssh { algorithm, fingerprint, principals, comment } => {
                "SSH certificate for key " code { (algorithm) " " (fingerprint) }
                @if let Some(c) = comment { " (" (shown(c)) ")" }
                br;
                "principals: "
                @if principals.is_empty() { span.none { "the resource's defaults" } }
                @for (i, p) in principals.iter().enumerate() {
                    @if i > 0 { ", " }
                    code { (shown(p)) }
                }
            }
            ParamsView::Csr { subject, public_key_sha256 } => {
                "X.509 certificate for CSR subject " code { (shown(subject)) }
                br; "public key SHA-256 " code.hash { (public_key_sha256) }
            }
            ParamsView::PublicKey { public_key_sha256 } => {
                "X.509 certificate for public key SHA-256 " code.hash { (public_key_sha256) }
            }
            ParamsView::Other(s) => { code { (shown(s)) } }
        }
    }
}

fn run(r: &RunView) -> Markup {
    html! {
        dt { "Repository" } dd { (opt(r.repository.as_ref())) }
        dt { "Branch" } dd { (opt(r.branch.as_ref())) }
        dt { "Run" } dd {
            @if let Some(url) = &r.run_url {
                a href=(url) rel="noreferrer noopener" { (opt(r.run.as_ref())) }
            } @else { (opt(r.run.as_ref())) }
            @if r.untrusted_source { " " span.warn { "untrusted source (pull request)" } }
        }
        dt { "Workload" } dd { code { (shown(&r.workload)) } }
    }
}

/// What exactly a request asks for.
fn request_details(v: &RequestView) -> Markup {
    html! {
        dl.details {
            dt { "Resource" }
            dd {
                strong { (v.resource) }
                @if let Some(k) = &v.resource_kind { " (" (k) ")" }
                " in "
                @match &v.resource_environment {
                    Some(env) => { span class=(if v.resource_production { "env prod" } else { "env" }) { (env) } }
                    None => { span.none { "(no longer configured)" } }
                }
                @if let Some(sens) = &v.resource_sensitivity { " · sensitivity " span.sens { (sens) } }
            }
            dt { "Actions" } dd { @for a in &v.actions { code.action { (a) } " " } }
            dt { "TTL" } dd { (span(v.ttl_secs)) }
            dt { "Parameters" } dd { (params(&v.params)) }
            dt { "Task purpose" } dd { (shown(&v.purpose)) }
            dt { "Justification" } dd { (shown(&v.justification)) }
            dt { "Task environment" } dd { (v.task_environment) " · task " a href=(format!("/console/tasks/{}", v.task_id)) { code { (v.task_id) } } " (" (v.task_state) ")" }
            dt { "Acting for" } dd { (opt(v.on_behalf_of.as_ref())) }
            (run(&v.run))
            dt { "Step-up asked by" } dd {
                @if v.step_up_policies.is_empty() { span.none { "—" } }
                @for p in &v.step_up_policies { code { (p) } " " }
            }
            dt { "Approvals" } dd {
                @for q in &v.quorum { span.quorum { (q.group) ": " (q.approvals) " / " (q.quorum) } " " }
            }
            dt { "Time left" } dd {
                @if v.state == "pending" { (span(v.seconds_left)) " (until " (when(v.expires_at_unix_secs)) ")" }
                @else { "—" }
            }
        }
    }
}

/// The active freezes, for operators (each links to the kill-switch page).
pub(crate) fn freeze_list(freezes: &[Freeze]) -> Markup {
    html! {
        @if freezes.is_empty() {
            p.empty { "No freeze is active." }
        } @else {
            table.freezes {
                thead { tr { th { "Scope" } th { "Engaged by" } th { "Reason" } th { "Since" } } }
                tbody {
                    @for f in freezes {
                        tr {
                            td { code { (Shown::of(&f.scope.label()).text) } }
                            td { (shown(&Shown::of(&f.engaged_by))) }
                            td { (shown(&Shown::of(&f.reason))) }
                            td { (when(f.created_at_unix_secs)) }
                        }
                    }
                }
            }
        }
    }
}

/// The pending list; for operators, the active freezes above it (`freezes` is `None` for
/// everyone else).
pub fn pending(who: &Who<'_>, views: &[RequestView], freezes: Option<&[Freeze]>) -> Markup {
    let body = html! {
        @if let Some(freezes) = freezes {
            section.card.freezes {
                h2 { "Active freezes (kill switch)" }
                (freeze_list(freezes))
                p { a href="/console/kill-switch" { "Manage the kill switch" } " · " a href="/console/operators" { "Open tasks and live leases" } }
            }
        }
        h1 { "Waiting for your approval" }
        @if views.is_empty() {
            p.empty { "Nothing is waiting for you." }
        }
        @for v in views {
            section.card {
                h2 { a href=(format!("/console/requests/{}", v.id)) { (v.actions.join(", ")) " on " (v.resource) } }
                (request_details(v))
                p { a.button href=(format!("/console/requests/{}", v.id)) { "Review and decide" } }
            }
        }
    };
    page("Pending", Some(who), &body)
}

/// A request's page, with the approve / deny form when the viewer may vote on it, else why
/// they may not.
pub fn request(who: &Who<'_>, v: &RequestView) -> Markup {
    let body = html! {
        h1 { "Request " code { (v.id) } " · " span.state { (v.state) } }
        section.card {
            (request_details(v))
            @if !v.votes.is_empty() {
                h3 { "Votes" }
                ul.votes {
                    @for vote in &v.votes {
                        li { (shown(&vote.approver)) " — " strong { (vote.verdict) } " — " (shown(&vote.reason)) " (" (when(vote.at_unix_secs)) ")" }
                    }
                }
            }
        }
        @if v.standing == VoteStanding::May {
            form.vote method="post" action=(format!("/console/requests/{}", v.id)) {
                input type="hidden" name="csrf" value=(who.csrf);
                input type="hidden" name="digest" value=(v.digest);
                p.digest { "You decide on exactly what is shown above (digest " code.hash { (v.digest) } ")." }
                label for="reason" { "Reason" }
                input #reason type="text" name="reason" maxlength="1024" required placeholder="why you approve or deny";
                div.buttons {
                    button.approve type="submit" name="verdict" value="approve" { "Approve" }
                    button.deny type="submit" name="verdict" value="deny" { "Deny" }
                }
            }
        } @else if let Some(why) = v.standing.why_not() {
            @if v.state == "pending" {
                p.novote { "You cannot vote on this request: " strong { (why) } "." }
            }
        }
        p { a href="/console/" { "← all pending requests" } }
    };
    page("Request", Some(who), &body)
}

/// A task's timeline.
pub fn task(who: &Who<'_>, t: &TaskTimeline) -> Markup {
    let body = html! {
        h1 { "Task " code { (t.id) } " · " span.state { (t.state) } }
        section.card {
            dl.details {
                dt { "Purpose" } dd { (shown(&t.purpose)) }
                dt { "Environment" } dd { (t.environment) }
                dt { "Acting for" } dd { (opt(t.on_behalf_of.as_ref())) }
                (run(&t.run))
                dt { "Opened" } dd { (when(t.created_at_unix_secs)) }
                dt { "Hard end" } dd { (when(t.expires_at_unix_secs)) }
            }
        }
        h2 { "Timeline" }
        table.timeline {
            thead { tr { th { "When" } th { "Event" } th { "Actor" } th { "Outcome" } th { "Details" } } }
            tbody {
                @for e in &t.events {
                    tr {
                        td { (when(e.at_unix_secs)) }
                        td { code { (e.kind) } }
                        td { (shown(&e.actor)) }
                        td { (shown(&e.outcome)) }
                        td {
                            @if let Some(r) = &e.request_id { a href=(format!("/console/requests/{r}")) { code { (r) } } " " }
                            @if let Some(l) = &e.lease_id { code { (l) } " " }
                            (shown(&e.summary))
                        }
                    }
                }
            }
        }
        p { a href="/console/" { "← all pending requests" } }
    };
    page("Task", Some(who), &body)
}

/// A refusal or failure.
pub fn error(e: &ApiError) -> Markup {
    let headline = match e.code.as_str() {
        "request_not_pending" => "This request is no longer pending",
        "request_expired" => "This request has expired",
        "task_not_open" => "The task this request belongs to has ended",
        "approval_digest_mismatch" => "The request is not what the page showed",
        "csrf_token_invalid" => "This form was refused",
        "sign_in_failed" => "Sign-in failed",
        "already_voted" => "You already voted on this request",
        "self_approval_forbidden" => "You cannot approve your own agent's request",
        "approver_not_eligible" => "You are not an approver of this request",
        "not_admin" => "Operators only",
        "rate_limited" => "Too many failed sign-ins",
        "request_not_found" | "task_not_found" | "not_found" => "Not found",
        _ => "The request could not be completed",
    };
    let body = html! {
        h1 { (headline) }
        p.error { (Shown::of(&e.message).text) }
        p { "Code: " code.code { (e.code.as_str()) } }
        p { a href="/console/" { "Back to the console" } }
    };
    page(headline, None, &body)
}

/// After a successful sign-in: moves on to `back` (a checked console path), else the
/// console's front page (a meta refresh, no script).
pub fn signed_in(back: Option<&str>) -> Markup {
    let to = back.unwrap_or("/console/");
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content=(format!("0;url={to}"));
                title { "Signed in · Latch console" }
                link rel="stylesheet" href="/console/static/console.css";
            }
            body { main { p { "Signed in. " a href=(to) { "Continue to the console" } } } }
        }
    }
}

/// A vote or operator action refused because the sign-in is older than `max_age_secs`: nothing
/// was done; a link (not a redirect) leads through sign-in and back.
pub fn sign_in_again(to: &str, max_age_secs: i64) -> Markup {
    let body = html! {
        h1 { "Sign in again to act" }
        p.warn {
            "Your sign-in is older than " (span(max_age_secs)) ". Votes and operator actions need a recent sign-in, so that your groups are read afresh from the identity provider. Nothing was recorded."
        }
        p { a.button href=(to) { "Sign in again and come back" } }
    };
    page("Sign in again", None, &body)
}

/// After signing out. `provider`: the identity provider's name and, when it offers one, its
/// sign-out URL (RP-Initiated Logout).
pub fn signed_out(provider: Option<(&str, Option<String>)>) -> Markup {
    let body = html! {
        h1 { "Signed out" }
        p { "You are signed out of the Latch console." }
        @if let Some((name, end)) = provider {
            p.provider {
                "Your session at the identity provider " code { (name) } " is unchanged: signing in again may not ask for your password."
                @if let Some(url) = end {
                    " " a.button href=(url) rel="noreferrer" { "Sign out at the identity provider too" }
                }
            }
        }
        p { a href="/console/login" { "Sign in again" } }
    };
    page("Signed out", None, &body)
}

/// The development sign-in form (`[dev_issuer] enabled` only).
pub fn dev_login(login_id: &str) -> Markup {
    let body = html! {
        h1 { "Development sign-in" }
        p.warn { "The development issuer is enabled: anyone who can reach this broker can mint human tokens. Never enable it in production." }
        form.vote method="post" action="/console/login/dev" {
            input type="hidden" name="login" value=(login_id);
            label for="token" { "Development human token (" code { "latch dev token --kind human --subject you --group prod-approvers" } ")" }
            input #token type="password" name="token" required autocomplete="off";
            div.buttons { button.approve type="submit" { "Sign in" } }
        }
    };
    page("Sign in", None, &body)
}
