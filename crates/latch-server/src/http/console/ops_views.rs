//! The operators' templates: open tasks and live leases across every workload (with their
//! filters, and a revoke / cancel form on each row), and the kill switch (engage a freeze,
//! lift one). Every form carries the session's CSRF token and a required reason.

use latch_core::broker::{FreezeReport, LeasePage, OperatorFilter, TaskPage};
use latch_core::console::Shown;
use latch_core::freeze::Freeze;
use maud::{Markup, html};

use crate::http::console::views::{Who, freeze_list, page, shown, when};

/// A reason field (required, one line, as the API's `reason`).
fn reason_field(id: &str, placeholder: &str) -> Markup {
    html! {
        input id=(id) type="text" name="reason" maxlength="1024" required placeholder=(placeholder);
    }
}

fn filter_value(v: Option<&String>) -> String {
    v.cloned().unwrap_or_default()
}

/// The filter form (GET, so a filtered list has a URL of its own).
fn filters(f: &OperatorFilter) -> Markup {
    html! {
        form.filters method="get" action="/console/operators" {
            label for="f-workload" { "Workload" }
            input #f-workload type="text" name="workload" value=(filter_value(f.workload.as_ref())) placeholder="iss#sub";
            label for="f-repository" { "Repository" }
            input #f-repository type="text" name="repository" value=(filter_value(f.repository.as_ref())) placeholder="owner/name";
            label for="f-resource" { "Resource" }
            input #f-resource type="text" name="resource" value=(filter_value(f.resource.as_ref()));
            label for="f-environment" { "Environment" }
            input #f-environment type="text" name="environment" value=(filter_value(f.environment.as_ref()));
            div.buttons { button type="submit" { "Filter" } " " a href="/console/operators" { "clear" } }
        }
    }
}

fn tasks_table(who: &Who<'_>, tasks: &TaskPage) -> Markup {
    html! {
        @if tasks.items.is_empty() { p.empty { "No open task matches." } }
        @else {
            table.ops {
                thead { tr { th { "Task" } th { "Workload" } th { "Repository · branch" } th { "Environment" } th { "Acting for" } th { "Purpose" } th { "Ends" } th { "Cancel" } } }
                tbody {
                    @for t in &tasks.items {
                        tr {
                            td { a href=(format!("/console/tasks/{}", t.id)) { code { (t.id) } } }
                            td { code { (shown(&Shown::of(&t.owner.id))) } }
                            td {
                                (shown(&Shown::of(t.repository.as_deref().unwrap_or("—"))))
                                " · " (shown(&Shown::of(t.branch.as_deref().unwrap_or("—"))))
                            }
                            td { (t.environment) }
                            td { (shown(&Shown::of(t.on_behalf_of.as_deref().unwrap_or("—")))) }
                            td { (shown(&Shown::of(&t.purpose))) }
                            td { (when(t.expires_at_unix_secs)) }
                            td {
                                form.act method="post" action=(format!("/console/operators/tasks/{}/cancel", t.id)) {
                                    input type="hidden" name="csrf" value=(who.csrf);
                                    (reason_field(&format!("cancel-{}", t.id), "why cancel"))
                                    button.deny type="submit" { "Cancel task" }
                                }
                            }
                        }
                    }
                }
            }
            @if tasks.next.is_some() { p.more { "More tasks match: narrow the filters." } }
        }
    }
}

fn leases_table(who: &Who<'_>, leases: &LeasePage) -> Markup {
    html! {
        @if leases.items.is_empty() { p.empty { "No live lease matches." } }
        @else {
            table.ops {
                thead { tr { th { "Lease" } th { "Resource" } th { "Actions" } th { "Workload" } th { "Repository · branch" } th { "Environment" } th { "State" } th { "Expires" } th { "Revoke" } } }
                tbody {
                    @for l in &leases.items {
                        tr {
                            td { code { (l.lease.id) } }
                            td { strong { (l.lease.resource_id) } }
                            td { (l.lease.actions.join(", ")) }
                            td { code { (shown(&Shown::of(&l.principal_id))) } }
                            td {
                                (shown(&Shown::of(l.repository.as_deref().unwrap_or("—"))))
                                " · " (shown(&Shown::of(l.branch.as_deref().unwrap_or("—"))))
                            }
                            td { (l.environment) }
                            td { (l.lease.state.as_str()) }
                            td { (when(l.lease.expires_at_unix_secs)) }
                            td {
                                form.act method="post" action=(format!("/console/operators/leases/{}/revoke", l.lease.id)) {
                                    input type="hidden" name="csrf" value=(who.csrf);
                                    (reason_field(&format!("revoke-{}", l.lease.id), "why revoke"))
                                    button.deny type="submit" { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
            @if leases.next.is_some() { p.more { "More leases match: narrow the filters." } }
        }
    }
}

/// Open tasks and live leases of every workload, filtered by `f`.
pub fn operators(
    who: &Who<'_>,
    f: &OperatorFilter,
    tasks: &TaskPage,
    leases: &LeasePage,
) -> Markup {
    let body = html! {
        h1 { "Operators: open tasks and live leases" }
        p { "Every workload's open tasks and live credentials. Revoking or cancelling needs a reason; both are audited with your name." }
        (filters(f))
        h2 { "Live leases" }
        (leases_table(who, leases))
        h2 { "Open tasks" }
        (tasks_table(who, tasks))
    };
    page("Operators", Some(who), &body)
}

/// The kill switch: the active freezes (each with a lift form) and the form to engage one.
pub fn kill_switch(who: &Who<'_>, freezes: &[Freeze]) -> Markup {
    let body = html! {
        h1 { "Kill switch" }
        p { "Engaging a freeze revokes every live credential in its scope at once and refuses new grants, claims and renewals there until it is lifted. Both are audited with your name and reason." }
        section.card {
            h2 { "Active freezes" }
            (freeze_list(freezes))
            @for f in freezes {
                form.act method="post" action=(format!("/console/kill-switch/{}/lift", f.id)) {
                    input type="hidden" name="csrf" value=(who.csrf);
                    label for=(format!("lift-{}", f.id)) { "Lift " code { (Shown::of(&f.scope.label()).text) } }
                    (reason_field(&format!("lift-{}", f.id), "why lift"))
                    button.approve type="submit" { "Lift freeze" }
                }
            }
        }
        section.card {
            h2 { "Engage a freeze" }
            form.vote method="post" action="/console/kill-switch" {
                input type="hidden" name="csrf" value=(who.csrf);
                label for="kind" { "Scope" }
                select #kind name="kind" required {
                    option value="workload" { "workload (iss#sub)" }
                    option value="repository" { "repository (owner/name)" }
                    option value="resource" { "resource (id)" }
                    option value="human" { "human (tasks acting for them)" }
                    option value="all" { "everything" }
                }
                label for="value" { "Value (empty for everything)" }
                input #value type="text" name="value" maxlength="256";
                label for="reason" { "Reason" }
                (reason_field("reason", "why freeze"))
                div.buttons { button.deny type="submit" { "Revoke and freeze" } }
            }
        }
    };
    page("Kill switch", Some(who), &body)
}

/// What an engaged kill switch did.
pub fn engaged(who: &Who<'_>, r: &FreezeReport) -> Markup {
    let body = html! {
        h1 { "Kill switch engaged" }
        section.card {
            p { "Freeze " code { (r.freeze.id) } " on " code { (Shown::of(&r.freeze.scope.label()).text) } " is active." }
            p { (r.leases_revoked) " live lease(s) revoked"
                @if r.revocations_pending > 0 { "; " (r.revocations_pending) " revocation(s) at a target did not succeed yet and are retried" }
                "." }
        }
        p { a href="/console/kill-switch" { "← kill switch" } }
    };
    page("Kill switch engaged", Some(who), &body)
}
