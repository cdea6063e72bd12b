//! The `[resources.settings]` sections of the configuration reference
//! (`docs/src/reference/config.md`) checked against the providers' settings types, as
//! `latch-server`'s `config::reference_tests` checks the rest of the page: serde's
//! unknown-field error lists the keys each type accepts, the documented defaults must change
//! nothing when written out, required keys must be required, and each type must accept a value
//! of the documented type (an enum exactly its documented values).

use std::collections::BTreeSet;
use std::fmt::Debug;

use serde::de::DeserializeOwned;

const PAGE: &str = include_str!("../../../docs/src/reference/config.md");

const HEADING: &str = "## `[resources.settings]` for `kind = \"";

/// One row: key, type, default cell.
type Row = (String, String, String);

/// Provider kind → the rows of its section.
fn sections() -> Vec<(String, Vec<Row>)> {
    let mut out: Vec<(String, Vec<Row>)> = Vec::new();
    let mut current: Option<(String, Vec<Row>)> = None;
    for line in PAGE.lines() {
        if line.starts_with("## ") {
            out.extend(current.take());
            current = (line.strip_prefix(HEADING))
                .and_then(|k| k.split('"').next())
                .map(|k| (k.to_owned(), Vec::new()));
            continue;
        }
        if let Some((_, rows)) = current.as_mut()
            && line.starts_with("| `")
        {
            let cells: Vec<String> = (line.replace("\\|", "\u{1}").split('|'))
                .map(|c| c.trim().replace('\u{1}', "|"))
                .collect();
            let key = cells[1].trim_matches('`').to_owned();
            rows.push((key, cells[2].replace('`', ""), cells[3].clone()));
        }
    }
    out.extend(current);
    out
}

fn de<T: DeserializeOwned + Debug>(v: serde_json::Value) -> Result<String, String> {
    serde_json::from_value::<T>(v)
        .map(|t| format!("{t:?}"))
        .map_err(|e| e.to_string())
}

/// Deserializes a settings table of `kind`, as the provider does (TOML → JSON → its type).
fn parse(kind: &str, text: &str) -> Result<String, String> {
    let v: serde_json::Value = toml::from_str(text).map_err(|e| e.to_string())?;
    match kind {
        #[cfg(feature = "jwt")]
        "jwt" => de::<crate::jwt::JwtSettings>(v),
        "postgres" => de::<crate::postgres::PgSettings>(v),
        "redis" => de::<crate::redis_acl::RedisSettings>(v),
        "ssh" => de::<crate::ssh::SshSettings>(v),
        "x509" => de::<crate::x509::X509Settings>(v),
        other => panic!("no settings type for kind `{other}`"),
    }
}

fn literal(cell: &str) -> &str {
    cell.trim_start_matches("required, e.g. ").trim_matches('`')
}

/// The required keys' examples (but `except`), as TOML lines.
fn required(rows: &[Row], except: &str) -> String {
    (rows.iter())
        .filter(|(k, _, d)| d.starts_with("required") && k != except)
        .map(|(k, _, d)| format!("{k} = {}\n", literal(d)))
        .collect()
}

fn kinds() -> Vec<(String, Vec<Row>)> {
    let s = sections();
    let kinds: BTreeSet<&str> = s.iter().map(|(k, _)| k.as_str()).collect();
    let mut all = BTreeSet::from(["postgres", "redis", "ssh", "x509"]);
    if cfg!(feature = "jwt") {
        all.insert("jwt");
    }
    assert!(all.is_subset(&kinds), "the page documents {kinds:?}");
    s.into_iter()
        .filter(|(k, _)| all.contains(k.as_str()))
        .collect()
}

#[test]
fn every_provider_documents_exactly_the_settings_serde_accepts() {
    for (kind, rows) in kinds() {
        let err = parse(&kind, &format!("__probe__ = 0\n{}", required(&rows, "")))
            .expect_err(&format!("{kind}: `__probe__` accepted"));
        let marker = "unknown field `__probe__`";
        let listed = err
            .split_once(marker)
            .unwrap_or_else(|| panic!("{kind}: {err}"))
            .1;
        let serde: BTreeSet<String> = listed
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        let documented: BTreeSet<String> = rows.iter().map(|r| r.0.clone()).collect();
        assert_eq!(documented, serde, "{kind}: page (left) and serde (right)");
    }
}

#[test]
fn provider_defaults_required_keys_and_types_are_as_documented() {
    for (kind, rows) in kinds() {
        let bare = required(&rows, "");
        let mut explicit = bare.clone();
        for (k, _, d) in &rows {
            if d.starts_with('`') {
                explicit.push_str(&format!("{k} = {}\n", literal(d)));
            }
        }
        let b = parse(&kind, &bare).unwrap_or_else(|e| panic!("{kind}: {e}"));
        let d = parse(&kind, &explicit).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(
            b, d,
            "{kind}: writing the documented defaults changes the settings"
        );
        for (k, ty, default) in &rows {
            if default.starts_with("required") {
                let e = parse(&kind, &required(&rows, k))
                    .expect_err(&format!("{kind}: `{k}` is not required"));
                assert!(e.contains(&format!("`{k}`")), "{kind}: {e}");
            }
            let samples: Vec<String> = match ty.as_str() {
                "string" | "path" => vec!["\"x\"".into()],
                "integer" => vec!["1".into()],
                "boolean" => vec!["true".into()],
                "array of string" => vec!["[\"x\"]".into()],
                "table of array of string" => vec!["{ k = [\"x\"] }".into()],
                e if e.starts_with('"') => e.split(" | ").map(str::to_owned).collect(),
                other => panic!("{kind}: unknown type {other:?}"),
            };
            for v in &samples {
                let text = format!("{}{k} = {v}\n", required(&rows, k));
                if let Err(e) = parse(&kind, &text) {
                    panic!("{kind}: `{k}` = {v} ({ty}) is refused: {e}");
                }
            }
            if ty.contains('|') {
                let e = parse(
                    &kind,
                    &format!("{}{k} = \"__probe__\"\n", required(&rows, k)),
                )
                .expect_err("an enum");
                let variants: BTreeSet<&str> = (e.split_once("unknown variant `__probe__`"))
                    .map(|(_, l)| l.split('`').skip(1).step_by(2).collect())
                    .unwrap_or_default();
                let values: BTreeSet<&str> = samples.iter().map(|v| v.trim_matches('"')).collect();
                assert_eq!(
                    values, variants,
                    "{kind}: `{k}` values (left), variants (right)"
                );
            }
        }
    }
}
