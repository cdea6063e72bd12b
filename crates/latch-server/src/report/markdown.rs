//! The report as Markdown (CommonMark with GitHub tables): a summary table per catalogue, each
//! control with its rule and evidence, the figures, and how to verify the report.

use std::fmt::Write as _;

use latch_core::audit::escape_text;
use latch_core::controls::{Control, ControlReport, Framework, Status};

/// `s` safe inside a Markdown paragraph, list item, heading or table cell (never at the start
/// of a line): control, bidi and invisible characters made visible (`\u{…}`), HTML's `&`, `<`,
/// `>` written as entities, and every character that can start inline markup backslash-escaped
/// (`\`, `` ` ``, `*`, `[`, `]`, `|`, `~`, and `_` unless between two letters or digits, where
/// CommonMark never reads it as emphasis), so a value can neither start markup, a link or an
/// HTML tag, nor break out of its table cell.
pub fn md(s: &str) -> String {
    let visible: Vec<char> = escape_text(s).chars().collect();
    let mut out = String::with_capacity(visible.len() + 8);
    for (i, &c) in visible.iter().enumerate() {
        let word = |j: Option<usize>| {
            j.and_then(|j| visible.get(j))
                .is_some_and(|c| c.is_alphanumeric())
        };
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '_' if word(i.checked_sub(1)) && word(Some(i + 1)) => out.push('_'),
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '~' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// The status as shown: a word in bold (tables keep plain words for sorting tools).
fn status_word(s: Status) -> &'static str {
    match s {
        Status::Pass => "PASS",
        Status::Partial => "PARTIAL",
        Status::Fail => "FAIL",
        Status::NotApplicable => "N/A",
        Status::Manual => "MANUAL",
    }
}

/// `r` as a Markdown document.
pub fn render(r: &ControlReport) -> String {
    let mut o = String::new();
    header(&mut o, r);
    for fw in Framework::ALL {
        let cs: Vec<&Control> = r.controls.iter().filter(|c| c.framework == fw).collect();
        if cs.is_empty() {
            continue;
        }
        let _ = writeln!(o, "## {}\n", md(fw.title()));
        o.push_str("| Id | Title | Status |\n|---|---|---|\n");
        for c in &cs {
            let _ = writeln!(
                o,
                "| {} | {} | {} |",
                md(&c.id),
                md(&c.title),
                status_word(c.status)
            );
        }
        o.push('\n');
        for c in cs {
            control(&mut o, c);
        }
    }
    figures(&mut o, r);
    if !r.notes.is_empty() {
        o.push_str("## Notes\n\n");
        for n in &r.notes {
            let _ = writeln!(o, "- {}", md(n));
        }
        o.push('\n');
    }
    o
}

fn header(o: &mut String, r: &ControlReport) {
    let s = &r.summary;
    o.push_str("# Latch control evidence report\n\n");
    let _ = writeln!(o, "- Broker: {}", md(&r.broker));
    let _ = writeln!(o, "- Generated: {}", md(&r.generated_at));
    let _ = writeln!(
        o,
        "- Window: {} to {} (end excluded; Unix {} to {})",
        md(&r.window.from),
        md(&r.window.to),
        r.window.from_unix_secs,
        r.window.to_unix_secs
    );
    match &r.checkpoint {
        Some(cp) => {
            let _ = writeln!(
                o,
                "- Audit checkpoint: seq {}, chain hash {}, signing key {}, signed {}",
                cp.seq,
                md(&cp.hash),
                md(&cp.kid),
                md(&cp.signed_at)
            );
        }
        None => o.push_str("- Audit checkpoint: none (the audit trail is empty)\n"),
    }
    let _ = writeln!(o, "- Schema: {}", md(&r.schema_version));
    let _ = writeln!(
        o,
        "- Summary: {} controls: {} pass, {} partial, {} fail, {} not applicable, {} manual\n",
        s.total, s.pass, s.partial, s.fail, s.not_applicable, s.manual
    );
    o.push_str(
        "Every status is computed from the live configuration, the loaded policies and the audit records of the window up to the checkpoint above; each control states the rule that computed it. To verify: export the trail (`latch audit export`), check it against the broker's keys (`latch audit verify`), and recount the figures from the records of the window whose seq is at most the checkpoint's.\n\n",
    );
}

fn control(o: &mut String, c: &Control) {
    let _ = writeln!(
        o,
        "### {} {}: **{}**\n",
        md(&c.id),
        md(&c.title),
        status_word(c.status)
    );
    let _ = writeln!(o, "{}\n", md(&c.summary));
    let _ = writeln!(o, "*Rule:* {}\n", md(&c.rule));
    for e in &c.evidence {
        let _ = writeln!(o, "- {}", md(e));
    }
    o.push('\n');
}

fn figures(o: &mut String, r: &ControlReport) {
    let f = &r.figures;
    o.push_str("## Figures\n\n");
    let lines = [
        format!(
            "records read: {} (seq {} to {}){}",
            f.events_read,
            f.first_seq.map_or_else(|| "-".into(), |s| s.to_string()),
            f.last_seq.map_or_else(|| "-".into(), |s| s.to_string()),
            if f.truncated {
                ", cut at the read cap"
            } else {
                ""
            }
        ),
        format!(
            "tasks opened: {}, credentials granted: {}, step-ups requested: {}, approved: {}, denied: {}",
            f.tasks.opened,
            f.grants.total,
            f.step_ups.requested,
            f.step_ups.approved,
            f.step_ups.denied
        ),
        format!(
            "refusals: {}; leak reports: {}; revocations confirmed: {}; tool calls: {}",
            f.denials.total, f.leaks.reported, f.revocations.revoked, f.tools.calls
        ),
        format!(
            "policy: {} policies, fingerprint {}, {} probes",
            r.policy.policies,
            r.policy.fingerprint,
            r.policy.probes.len()
        ),
    ];
    for l in lines {
        let _ = writeln!(o, "- {}", md(&l));
    }
    o.push_str("\nThe JSON form of this report (`--format json`) holds every figure, the configuration facts and each probe's answer.\n\n");
}
