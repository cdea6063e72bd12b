//! `latch man`: the manual pages (clap_mangen), with the root page's ENVIRONMENT and EXIT
//! STATUS sections, which clap cannot derive (a variable read outside an argument, an exit code
//! a verb chooses).

use std::io::Write;
use std::path::Path;

/// The environment variables the CLI reads, and what each one does.
pub(crate) const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "LATCH_SERVER",
        "Broker URL, as --server (default http://127.0.0.1:8080).",
    ),
    (
        "LATCH_TOKEN",
        "Bearer token, as --token (which wins): a workload token for agent commands, a human \
         one for approvals and operator commands.",
    ),
    (
        "LATCH_IDENTITY",
        "Where the workload identity comes from, as --identity: github, gitlab, kubernetes, \
         spiffe, file:PATH or env:VAR.",
    ),
    (
        "LATCH_AUDIENCE",
        "Audience of the identity token asked for, as --audience.",
    ),
    (
        "LATCH_GITLAB_TOKEN_VAR",
        "GitLab CI: the variable holding the job's ID token, as --gitlab-token-var (default \
         LATCH_ID_TOKEN).",
    ),
    (
        "LATCH_K8S_TOKEN_FILE",
        "Kubernetes: the projected service-account token file, as --k8s-token-file.",
    ),
    (
        "ACTIONS_ID_TOKEN_REQUEST_URL, ACTIONS_ID_TOKEN_REQUEST_TOKEN",
        "GitHub Actions: where the job's OIDC token is asked for (set by the runner).",
    ),
    (
        "SPIFFE_ENDPOINT_SOCKET",
        "SPIFFE: the Workload API socket the JWT-SVID is fetched from.",
    ),
    (
        "LATCH_CONFIG",
        "Configuration file of `latch serve` and `latch policy`, as --config (default \
         latch.toml).",
    ),
    (
        "LATCH_LISTEN",
        "Address `latch serve` listens on, as --listen.",
    ),
    (
        "LATCH_LOG",
        "Log filter (tracing's EnvFilter syntax, e.g. debug or latch=debug) of `latch serve`, \
         `latch demo` and `latch mcp`.",
    ),
    (
        "LATCH_CONFIG_DIR",
        "Where sign-ins (`latch login`) and the development run ids of `latch dev token` are \
         kept; else $XDG_CONFIG_HOME/latch, else $HOME/.config/latch.",
    ),
    (
        "XDG_CONFIG_HOME, HOME",
        "Locate the configuration directory (see LATCH_CONFIG_DIR).",
    ),
    (
        "NO_COLOR",
        "Any non-empty value turns colours off under --color auto (https://no-color.org).",
    ),
    (
        "BROWSER, DISPLAY, WAYLAND_DISPLAY",
        "`latch login`: the browser to open, and whether there is a desktop to open it on.",
    ),
    (
        "LATCH_DEMO_PG, LATCH_DEMO_REPORT_DIR",
        "`latch demo`: the PostgreSQL URL of its database resource, and a directory for its \
         report.",
    ),
];

/// The exit codes, as the verbs choose them.
pub(crate) const EXIT_STATUS: &[(&str, &str)] = &[
    ("0", "Success."),
    ("1", "An error (the message ends with the next step)."),
    ("2", "A usage error: an unknown flag or a malformed value."),
    ("3", "Access denied (request, claim, exec)."),
    (
        "4",
        "Access pending approval (request, claim, exec without --wait-approval).",
    ),
    ("5", "Policy tests failed (`latch policy test`)."),
    ("6", "The audit chain is damaged (`latch audit verify`)."),
    ("7", "Secrets found (`latch scan`)."),
    (
        "127, 128+N, other",
        "`latch exec`: the command's own exit status; 127 when it cannot be run, 128+N when \
         signal N ended it.",
    ),
    (
        "141",
        "The reader of the output went away (a closed pipe, as `| head`).",
    ),
];

/// Text as a roff line: backslashes and hyphens escaped, no line starting with a control
/// character.
fn roff(text: &str) -> String {
    let t = text.replace('\\', "\\e").replace('-', "\\-");
    if t.starts_with(['.', '\'']) {
        format!("\\&{t}")
    } else {
        t
    }
}

/// The ENVIRONMENT and EXIT STATUS sections, as roff.
pub(crate) fn extra_sections() -> String {
    let mut out = String::new();
    for (title, rows) in [("ENVIRONMENT", ENVIRONMENT), ("EXIT STATUS", EXIT_STATUS)] {
        out.push_str(&format!(".SH \"{title}\"\n"));
        for (name, text) in rows {
            out.push_str(&format!(".TP\n\\fB{}\\fR\n{}\n", roff(name), roff(text)));
        }
    }
    out
}

/// The ENVIRONMENT and EXIT STATUS sections as Markdown, for `latch man --markdown`.
pub(crate) fn markdown_sections() -> String {
    let mut out = String::new();
    for (title, head, rows) in [
        ("Environment", "Variable", ENVIRONMENT),
        ("Exit status", "Code", EXIT_STATUS),
    ] {
        out.push_str(&format!(
            "\n## {title}\n\n| {head} | Meaning |\n|---|---|\n"
        ));
        for (name, text) in rows {
            out.push_str(&format!("| `{name}` | {} |\n", text.replace('|', "\\|")));
        }
    }
    out
}

/// The root page: clap_mangen's sections, then [`extra_sections`] before VERSION.
pub(crate) fn root_page(cmd: clap::Command) -> std::io::Result<Vec<u8>> {
    let man = clap_mangen::Man::new(cmd);
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    man.render_subcommands_section(&mut out)?;
    out.write_all(extra_sections().as_bytes())?;
    man.render_version_section(&mut out)?;
    Ok(out)
}

/// `latch man --dir DIR`: a page per command, the root one with [`extra_sections`].
pub(crate) fn write_pages(cmd: clap::Command, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(cmd.clone(), dir)?;
    let mut root = cmd.disable_help_subcommand(true);
    root.build();
    let name = clap_mangen::Man::new(root.clone()).get_filename();
    std::fs::write(dir.join(name), root_page(root)?)
}
