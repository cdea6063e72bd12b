//! The configuration reference (`docs/src/reference/config.md`) checked against the types, so
//! the page cannot drift from them. serde itself is the oracle:
//!
//! - **Keys**: an unknown key `__probe__` in a table makes `deny_unknown_fields` answer
//!   "unknown field `__probe__`, expected one of `a`, `b`, …": that list must be the page's rows.
//! - **Defaults**: the table with every documented default written out must deserialize to the
//!   same value as the table with the defaults left out.
//! - **Required keys** must be required, and their examples valid; every row's type must accept
//!   a value of that type, and an enum's listed values must be exactly the variants.
//! - **Environment**: every variable the server reads is named in the page's `## Environment`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::Config;

const PAGE: &str = include_str!("../../../../docs/src/reference/config.md");

/// Sections whose table needs one of several optional keys to deserialize at all (the JWKS
/// sources: exactly one of `discovery`, `url`, `file`): that key is added to every test config.
const CHOICES: &[(&str, &str)] = &[
    (
        "issuers.jwks",
        "url = \"https://keys.example.com/jwks.json\"",
    ),
    (
        "ssf.transmitters.jwks",
        "url = \"https://keys.example.com/jwks.json\"",
    ),
];

/// What the default column says.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    /// A TOML literal equal to the serde default.
    Value(String),
    /// `—`: optional, no value by default.
    Absent,
    /// `required, e.g. <literal>`.
    Required(String),
}

#[derive(Debug, Clone)]
struct Row {
    key: String,
    ty: String,
    default: Cell,
}

#[derive(Debug, Clone)]
struct Section {
    /// Dotted TOML path; empty for the top level.
    path: String,
    /// `[[…]]`: an array of tables.
    array: bool,
    /// `for `kind = "x"``: the key and its TOML value.
    qualifier: Option<(String, String)>,
    rows: Vec<Row>,
}

impl Section {
    fn title(&self) -> String {
        let q = self
            .qualifier
            .as_ref()
            .map(|(k, v)| format!(" for {k} = {v}"));
        format!("[{}]{}", self.path, q.unwrap_or_default())
    }

    /// Provider settings: a free table in `Config`, checked by the providers.
    fn is_provider_settings(&self) -> bool {
        self.path == "resources.settings"
    }

    fn required(&self) -> impl Iterator<Item = (&str, &str)> {
        self.rows.iter().filter_map(|r| match &r.default {
            Cell::Required(e) => Some((r.key.as_str(), e.as_str())),
            _ => None,
        })
    }

    fn choice(&self) -> Option<&'static str> {
        CHOICES.iter().find(|(p, _)| *p == self.path).map(|c| c.1)
    }
}

/// Splits a table row on `|`, leaving `\|` (an escaped pipe inside a cell) in the cell as `|`.
fn cells(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                chars.next();
                out.last_mut().expect("cell").push('|');
            }
            '|' => out.push(String::new()),
            c => out.last_mut().expect("cell").push(c),
        }
    }
    out.into_iter().map(|c| c.trim().to_owned()).collect()
}

fn unquote(s: &str) -> &str {
    s.strip_prefix('`')
        .and_then(|s| s.strip_suffix('`'))
        .unwrap_or_else(|| panic!("expected `…`, got {s:?}"))
}

fn parse_default(cell: &str) -> Cell {
    if cell == "—" {
        Cell::Absent
    } else if let Some(e) = cell.strip_prefix("required, e.g. ") {
        Cell::Required(unquote(e).to_owned())
    } else {
        Cell::Value(unquote(cell).to_owned())
    }
}

/// `## `[a.b]`` / `## `[[a.b]]`` (optionally ``for `kind = "x"` ``), or `## Top level`.
fn parse_heading(h: &str) -> Option<Section> {
    let mut s = Section {
        path: String::new(),
        array: false,
        qualifier: None,
        rows: Vec::new(),
    };
    if h == "Top level" {
        return Some(s);
    }
    let rest = h.strip_prefix('`')?;
    let (table, rest) = rest.split_once('`')?;
    s.array = table.starts_with("[[");
    s.path = table.trim_matches(|c| c == '[' || c == ']').to_owned();
    if let Some(q) = rest.trim().strip_prefix("for `") {
        let (k, v) = q
            .trim_end_matches('`')
            .split_once(" = ")
            .expect("qualifier");
        s.qualifier = Some((k.to_owned(), v.to_owned()));
    }
    Some(s)
}

/// The page's tables, and the text of its `## Environment` section.
fn page() -> (Vec<Section>, String) {
    let mut sections: Vec<Section> = Vec::new();
    let mut env = String::new();
    let mut in_env = false;
    let mut current: Option<Section> = None;
    for line in PAGE.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            sections.extend(current.take());
            in_env = h == "Environment";
            current = parse_heading(h);
            assert!(
                in_env || current.is_some(),
                "unexpected heading {h:?}: tables are `## `[path]`` headings"
            );
            continue;
        }
        if in_env {
            env.push_str(line);
            env.push('\n');
        }
        let Some(sec) = current.as_mut() else {
            continue;
        };
        if line.starts_with("| `") {
            let c = cells(line);
            assert_eq!(c.len(), 6, "{}: a row has 4 cells: {line}", sec.title());
            sec.rows.push(Row {
                key: unquote(&c[1]).to_owned(),
                ty: c[2].replace('`', ""),
                default: parse_default(&c[3]),
            });
        }
    }
    sections.extend(current);
    (sections, env)
}

/// A complete configuration putting `body` into `sec`'s table: the required keys of the top
/// level and of every enclosing table (from their `required, e.g.` examples) around it.
fn config(sections: &[Section], sec: &Section, body: &str) -> String {
    let find = |path: &str| {
        (sections.iter())
            .find(|s| s.path == path && s.qualifier.is_none())
            .unwrap_or_else(|| panic!("no section `[{path}]` on the page"))
    };
    let segs: Vec<&str> = if sec.path.is_empty() {
        Vec::new()
    } else {
        sec.path.split('.').collect()
    };
    let mut out = String::new();
    if segs.is_empty() {
        out.push_str(body);
    }
    for i in 0..segs.len() {
        let outer = find(&segs[..i].join("."));
        for (k, e) in outer.required().filter(|(k, _)| *k != segs[i]) {
            out.push_str(&format!("{k} = {e}\n"));
        }
        let path = segs[..=i].join(".");
        let array = if i + 1 == segs.len() {
            sec.array
        } else {
            find(&path).array
        };
        out.push_str(&if array {
            format!("[[{path}]]\n")
        } else {
            format!("[{path}]\n")
        });
    }
    if !segs.is_empty() {
        out.push_str(body);
    }
    out
}

/// `sec`'s required keys (but `except`) and its choice key, as TOML lines.
fn base(sec: &Section, except: &str) -> String {
    let mut out = String::new();
    for (k, e) in sec.required().filter(|(k, _)| *k != except) {
        out.push_str(&format!("{k} = {e}\n"));
    }
    if let Some(c) = sec.choice()
        && !c.starts_with(&format!("{except} "))
    {
        out.push_str(c);
        out.push('\n');
    }
    out
}

fn parse(text: &str) -> Result<Config, String> {
    toml::from_str::<Config>(text).map_err(|e| e.to_string())
}

/// The names serde lists after `marker` ("unknown field `__probe__`"): "expected `a`",
/// "expected `a` or `b`", "expected one of `a`, `b`", "there are no fields".
fn expected_names(err: &str, marker: &str) -> Option<BTreeSet<String>> {
    let line = err.lines().find(|l| l.contains(marker))?;
    let after = &line[line.find(marker)? + marker.len()..];
    Some(
        after
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect(),
    )
}

fn table_sections(sections: &[Section]) -> impl Iterator<Item = &Section> {
    sections.iter().filter(|s| !s.is_provider_settings())
}

#[test]
fn every_table_documents_exactly_the_keys_serde_accepts() {
    let (sections, _) = page();
    assert!(sections.len() > 30, "the page's tables were not found");
    for sec in table_sections(&sections) {
        let text = config(&sections, sec, &format!("__probe__ = 0\n{}", base(sec, "")));
        let err = parse(&text).expect_err(&format!("{}: `__probe__` accepted", sec.title()));
        let serde = expected_names(&err, "unknown field `__probe__`").unwrap_or_else(|| {
            panic!("{}: not an unknown-field error: {err}\n{text}", sec.title())
        });
        let mut documented: BTreeSet<String> = sec.rows.iter().map(|r| r.key.clone()).collect();
        if let Some((k, _)) = &sec.qualifier
            && !serde.contains(k)
        {
            documented.remove(k);
        }
        assert_eq!(
            documented,
            serde,
            "{}: the page's keys (left) are not the keys serde accepts (right)",
            sec.title()
        );
        for r in &sec.rows {
            if r.ty == "table" || r.ty == "array of tables" {
                let nested = if sec.path.is_empty() {
                    r.key.clone()
                } else {
                    format!("{}.{}", sec.path, r.key)
                };
                assert!(
                    sections.iter().any(|s| s.path == nested),
                    "{}: `{}` is a table but `[{nested}]` has no section",
                    sec.title(),
                    r.key
                );
            }
        }
    }
}

#[test]
fn documented_defaults_are_the_defaults_and_required_keys_are_required() {
    let (sections, _) = page();
    for sec in table_sections(&sections) {
        let bare = config(&sections, sec, &base(sec, ""));
        let mut explicit = base(sec, "");
        for r in &sec.rows {
            if let Cell::Value(v) = &r.default {
                explicit.push_str(&format!("{} = {v}\n", r.key));
            }
        }
        let explicit = config(&sections, sec, &explicit);
        let b = parse(&bare).unwrap_or_else(|e| panic!("{}: {e}\n{bare}", sec.title()));
        let d = parse(&explicit).unwrap_or_else(|e| panic!("{}: {e}\n{explicit}", sec.title()));
        assert_eq!(
            format!("{b:?}"),
            format!("{d:?}"),
            "{}: writing the documented defaults changes the configuration",
            sec.title()
        );
        for (k, _) in sec.required() {
            let without = config(&sections, sec, &base(sec, k));
            let e = parse(&without).expect_err(&format!(
                "{}: `{k}` is documented as required, but the table parses without it",
                sec.title()
            ));
            assert!(e.contains(&format!("`{k}`")), "{}: {e}", sec.title());
        }
    }
}

/// Values of a row's type, as TOML: one per alternative (`string or array of string`) and per
/// enum value. `None` for `table` (its own section is tested).
fn samples(ty: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for alt in ty.split(" or ") {
        let (array, t) = match alt.strip_prefix("array of ") {
            Some(t) if t != "tables" => (true, t),
            _ => (false, alt),
        };
        let values: Vec<String> = match t {
            "table" => return None,
            "array of tables" => vec!["[]".into()],
            "string" | "path" => vec!["\"x\"".into()],
            "integer" => vec!["1".into()],
            "float" => vec!["0.5".into()],
            "boolean" => vec!["true".into()],
            "duration" => vec!["\"1h\"".into()],
            "table of string" => vec!["{ k = \"x\" }".into()],
            "table of array of string" => vec!["{ k = [\"x\"] }".into()],
            e if e.starts_with('"') => e.split(" | ").map(str::to_owned).collect(),
            other => panic!("unknown type {other:?} (see the type vocabulary of the page)"),
        };
        out.extend(
            values
                .into_iter()
                .map(|v| if array { format!("[{v}]") } else { v }),
        );
    }
    Some(out)
}

/// Errors that say the value has the wrong type (not a cross-key check of a `try_from`).
fn type_error(e: &str) -> bool {
    [
        "invalid type",
        "invalid value",
        "unknown variant",
        "invalid length",
    ]
    .iter()
    .any(|m| e.contains(m))
}

#[test]
fn documented_types_and_enum_values_are_what_serde_accepts() {
    let (sections, _) = page();
    for sec in table_sections(&sections) {
        for r in &sec.rows {
            let Some(values) = samples(&r.ty) else {
                continue;
            };
            let qualifier = sec.qualifier.as_ref().is_some_and(|(k, _)| *k == r.key);
            for v in &values {
                let text = config(
                    &sections,
                    sec,
                    &format!("{}{} = {v}\n", base(sec, &r.key), r.key),
                );
                if let Err(e) = parse(&text)
                    && type_error(&e)
                {
                    panic!(
                        "{}: `{}` = {v} ({}) is refused: {e}",
                        sec.title(),
                        r.key,
                        r.ty
                    );
                }
            }
            let enum_values: BTreeSet<String> = (values.iter())
                .filter(|v| v.trim_matches(['[', ']']).starts_with('"'))
                .map(|v| v.trim_matches(['[', ']', '"']).to_owned())
                .collect();
            if qualifier || !r.ty.contains('|') {
                continue;
            }
            let probe = if r.ty.starts_with("array of") {
                "[\"__probe__\"]"
            } else {
                "\"__probe__\""
            };
            let text = config(
                &sections,
                sec,
                &format!("{}{} = {probe}\n", base(sec, &r.key), r.key),
            );
            if let Err(e) = parse(&text)
                && let Some(variants) = expected_names(&e, "unknown variant `__probe__`")
            {
                assert_eq!(
                    enum_values,
                    variants,
                    "{}: `{}`: the page's values (left) are not the variants (right)",
                    sec.title(),
                    r.key
                );
            }
        }
    }
}

/// Files that read the environment, and what the page must say about each.
const ENV_READERS: &[(&str, &[&str])] = &[
    ("latch-server/src/logging.rs", &["LATCH_LOG"]),
    (
        "latch-server/src/startup/mod.rs",
        &["OTEL_SDK_DISABLED", "master_key_env"],
    ),
    ("latch-server/src/config/console.rs", &["client_secret_env"]),
    (
        "latch-server/src/config/notify.rs",
        &[
            "url_env",
            "secret_env",
            "password_env",
            "authorization_header_env",
        ],
    ),
    ("latch-server/src/gateway.rs", &["PATH", "HOME", "LANG"]),
    ("latch-providers/src/util.rs", &["password_env"]),
    ("latch-providers/src/keyring/master.rs", &["master_key_env"]),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = entry.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn the_environment_section_names_every_variable_the_server_reads() {
    let (_, env) = page();
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for c in [
        "latch-server/src",
        "latch-identity/src",
        "latch-providers/src",
    ] {
        rust_files(&crates.join(c), &mut files);
    }
    for f in &files {
        let rel = f
            .strip_prefix(&crates)
            .expect("under crates")
            .to_string_lossy();
        if rel.ends_with("config/reference_tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(f).expect("read");
        let code = text.lines().filter(|l| !l.trim_start().starts_with("//"));
        for line in code {
            if line.contains("env::var") || line.contains("from_env(") {
                let known = ENV_READERS.iter().find(|(p, _)| rel.ends_with(p));
                assert!(
                    known.is_some(),
                    "{rel} reads the environment: document it in `## Environment` of the \
                     configuration reference and add the file to ENV_READERS: {line}"
                );
            }
            for literal in line.split('"').skip(1).step_by(2) {
                let name = literal
                    .split(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                    .next()
                    .unwrap_or_default();
                if name.starts_with("LATCH_") || name.starts_with("OTEL_") {
                    assert!(
                        env.contains(&format!("`{name}`")),
                        "{rel} names `{name}`, which `## Environment` does not list"
                    );
                }
            }
        }
    }
    for (file, names) in ENV_READERS {
        for n in *names {
            assert!(
                env.contains(n),
                "`## Environment` does not mention {n} ({file})"
            );
        }
    }
    for var in ["LATCH_CONFIG", "LATCH_LISTEN"] {
        assert!(env.contains(&format!("`{var}`")), "{var}");
    }
}
