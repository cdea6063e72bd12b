//! The report as one HTML page: maud templates (every value HTML-escaped), a small inline
//! style sheet, no script and no external asset, so the page can be saved and opened anywhere.
//! Served with a Content-Security-Policy that allows exactly that style sheet ([`csp`]).

use base64::Engine as _;
use latch_core::audit::escape_text;
use latch_core::controls::{Control, ControlReport, Framework, Status};
use maud::{DOCTYPE, Markup, PreEscaped, html};

/// The page's whole style sheet (its hash is in [`csp`]).
const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:70rem;padding:0 1rem;color:#1b1b1b}\
h1{font-size:1.6rem}h2{margin-top:2rem;border-bottom:1px solid #ccc}h3{font-size:1rem;margin:1.2rem 0 .3rem}\
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:left}\
.st{font-weight:600;padding:0 .4rem;border-radius:3px}.pass{background:#d8f0d8}.partial{background:#fbeec4}\
.fail{background:#f7d0d0}.not_applicable{background:#e8e8e8}.manual{background:#dde6f5}\
.rule{color:#444}code{font-size:.9em}ul{margin:.3rem 0}";

/// The Content-Security-Policy of the page: nothing but its own inline style sheet.
pub fn csp() -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, STYLE.as_bytes());
    let hash = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
}

/// `s` with control, bidi and invisible characters made visible (`\u{…}`); maud escapes the
/// rest when it renders it.
fn t(s: &str) -> String {
    escape_text(s).into_owned()
}

fn badge(s: Status) -> Markup {
    html! { span class={ "st " (s.as_str()) } { (s.as_str()) } }
}

fn control(c: &Control) -> Markup {
    html! {
        h3 id=(anchor(&c.id)) { (t(&c.id)) " " (t(&c.title)) " " (badge(c.status)) }
        p { (t(&c.summary)) }
        p.rule { strong { "Rule: " } (t(&c.rule)) }
        ul { @for e in &c.evidence { li { (t(e)) } } }
    }
}

/// A fragment id for a control id (letters and digits kept, the rest `-`).
fn anchor(id: &str) -> String {
    let a: String = id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("c-{a}")
}

fn framework(r: &ControlReport, fw: Framework) -> Markup {
    let cs: Vec<&Control> = r.controls.iter().filter(|c| c.framework == fw).collect();
    html! {
        @if !cs.is_empty() {
            h2 { (fw.title()) }
            table {
                tr { th { "Id" } th { "Title" } th { "Status" } }
                @for c in &cs {
                    tr {
                        td { a href={ "#" (anchor(&c.id)) } { (t(&c.id)) } }
                        td { (t(&c.title)) }
                        td { (badge(c.status)) }
                    }
                }
            }
            @for c in &cs { (control(c)) }
        }
    }
}

fn header(r: &ControlReport) -> Markup {
    let s = &r.summary;
    html! {
        h1 { "Latch control evidence report" }
        table {
            tr { th { "Broker" } td { (t(&r.broker)) } }
            tr { th { "Generated" } td { (t(&r.generated_at)) } }
            tr { th { "Window" } td { (t(&r.window.from)) " to " (t(&r.window.to)) " (end excluded)" } }
            tr {
                th { "Audit checkpoint" }
                td {
                    @match &r.checkpoint {
                        Some(cp) => {
                            "seq " (cp.seq) ", chain hash " code { (t(&cp.hash)) }
                            ", signing key " code { (t(&cp.kid)) } ", signed " (t(&cp.signed_at))
                        }
                        None => "none (the audit trail is empty)",
                    }
                }
            }
            tr { th { "Schema" } td { (t(&r.schema_version)) } }
            tr {
                th { "Summary" }
                td {
                    (s.total) " controls: " (s.pass) " pass, " (s.partial) " partial, " (s.fail)
                    " fail, " (s.not_applicable) " not applicable, " (s.manual) " manual"
                }
            }
        }
        p {
            "Every status is computed from the live configuration, the loaded policies and the audit records of the window up to the checkpoint above; each control states the rule that computed it. To verify: export the trail (" code { "latch audit export" } "), check it against the broker's keys (" code { "latch audit verify" } "), and recount the figures from the records of the window whose seq is at most the checkpoint's."
        }
    }
}

/// `r` as a complete HTML page.
pub fn render(r: &ControlReport) -> Markup {
    let f = &r.figures;
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Latch control evidence report" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                (header(r))
                @for fw in Framework::ALL { (framework(r, fw)) }
                h2 { "Figures" }
                ul {
                    li { "records read: " (f.events_read) @if f.truncated { " (cut at the read cap)" } }
                    li { "tasks opened: " (f.tasks.opened) ", credentials granted: " (f.grants.total)
                         ", step-ups requested: " (f.step_ups.requested) ", approved: " (f.step_ups.approved)
                         ", denied: " (f.step_ups.denied) }
                    li { "refusals: " (f.denials.total) "; leak reports: " (f.leaks.reported)
                         "; revocations confirmed: " (f.revocations.revoked) "; tool calls: " (f.tools.calls) }
                    li { "policy: " (r.policy.policies) " policies, fingerprint " code { (t(&r.policy.fingerprint)) } }
                }
                @if !r.notes.is_empty() {
                    h2 { "Notes" }
                    ul { @for n in &r.notes { li { (t(n)) } } }
                }
            }
        }
    }
}
