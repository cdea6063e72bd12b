//! Renderings under hostile values: every value a resource id, an approver's name or the
//! broker's URL can carry is escaped in HTML and Markdown; the page's CSP names its own style.

use base64::Engine as _;
use latch_core::controls::{ControlInputs, ControlReport, ResourceFact, compute};

use super::{ReportFormat, html, markdown};

const EVIL: &str = "</li><script>alert(1)</script>|x*y*_z_ [a](b) `c`\n# forged \u{202e}txt";

fn report() -> ControlReport {
    let mut i = ControlInputs {
        broker: format!("https://{EVIL}"),
        window: (0, 86_400),
        ..ControlInputs::default()
    };
    i.resources.push(ResourceFact {
        id: EVIL.into(),
        kind: "jwt".into(),
        environment: "prod".into(),
        production: true,
        sensitivity: "secret".into(),
        audience: "a".into(),
        actions: vec!["read".into()],
        max_ttl_secs: 60,
        max_lifetime_secs: 60,
        owner: None,
    });
    i.figures.step_ups.approvers.insert(EVIL.into(), 1);
    i.figures.grants.by_resource.insert(EVIL.into(), 2);
    compute(&i)
}

#[test]
fn html_escapes_every_value_and_names_its_style_in_the_csp() {
    let page = html::render(&report()).into_string();
    assert!(!page.contains("<script"), "{page}");
    assert!(!page.contains("</li><script"), "{page}");
    assert!(
        page.contains("&lt;/li&gt;&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(
        page.contains("\\u{202e}") && !page.contains('\u{202e}'),
        "bidi shown"
    );
    assert!(page.contains("\\u{000a}# forged"), "no line break smuggled");
    let style = page
        .split_once("<style>")
        .and_then(|(_, rest)| rest.split_once("</style>"))
        .map(|(s, _)| s)
        .unwrap();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, style.as_bytes());
    let hash = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
    assert!(html::csp().contains(&format!("style-src 'sha256-{hash}'")));
}

#[test]
fn markdown_escapes_markup_tables_and_line_breaks() {
    let md = markdown::render(&report());
    for line in md.lines().filter(|l| l.contains("forged")) {
        assert!(
            !line.starts_with('#'),
            "a value never starts a line: {line}"
        );
        assert!(!line.contains('<'), "{line}");
        assert!(line.contains("&lt;script&gt;"), "{line}");
        assert!(
            line.contains("\\|x\\*y\\*\\_z\\_ \\[a\\](b) \\`c\\`"),
            "{line}"
        );
        assert!(
            line.contains("\\\\u{000a}# forged \\\\u{202e}txt"),
            "{line}"
        );
    }
    assert!(md.lines().filter(|l| l.contains("forged")).count() >= 3);
    assert!(!md.contains('\u{202e}'));
    // Table rows keep their three cells whatever the values.
    for row in md.lines().filter(|l| l.starts_with("| ")) {
        let cells = row.matches(" | ").count();
        assert_eq!(cells, 2, "{row}");
    }
    assert_eq!(markdown::md("snake_case_word"), "snake_case_word");
    assert_eq!(markdown::md("_x_"), "\\_x\\_");
}

#[test]
fn json_is_the_report_itself() {
    let r = report();
    let text = ReportFormat::Json.render(&r).unwrap();
    let back: ControlReport = serde_json::from_str(&text).unwrap();
    assert_eq!(back, r);
    assert!(text.contains("\"schema_version\": \"latch-controls/1\""));
}
