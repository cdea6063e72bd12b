//! The crate's modules import each other in one direction only (issue 12): no top-level module
//! imports, directly or through others, a module that imports it back, and the same holds
//! between the submodules of `http`.
//!
//! The graph is read from the sources: every `crate::a::b…` path (including `use crate::{a, b}`
//! groups) and `super::…` path outside comments is an edge from the file's module to the module
//! it names. Simple text parsing, on purpose: it only has to see what a reader sees.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unimplemented,
    clippy::too_many_lines,
    reason = "test code: a failed step fails the test, and a scenario reads best in one piece"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read src dir") {
            let p = entry.expect("dir entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The module path of a source file: `src/http/routes/tasks.rs` is `["http", "routes", "tasks"]`,
/// `src/http/mod.rs` is `["http"]`, `src/lib.rs` is `[]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("file under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("file name");
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_owned());
    }
    parts
}

/// Identifiers separated by `::` at the start of `s` (`a::b::{c, d}` gives `[a, b]`).
fn leading_path(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        out.push(rest[..end].to_owned());
        match rest[end..].strip_prefix("::") {
            Some(r) => rest = r,
            None => break,
        }
    }
    out
}

/// The first identifier of each item in a `{a, b::c, d as e}` group starting at `s`.
fn group_heads(s: &str) -> Vec<Vec<String>> {
    let body = s
        .strip_prefix('{')
        .and_then(|b| b.split_once('}'))
        .map_or("", |(b, _)| b);
    body.split(',')
        .map(|item| leading_path(item.trim()))
        .filter(|p| !p.is_empty())
        .collect()
}

/// Module paths (absolute, from the crate root) that `text`, the source of module `module`,
/// refers to. `super::` counts from the file's module (in `a/b.rs` and `a/b/mod.rs` alike it is
/// `a`); inside a file's own `mod tests` it then names a sibling, which only adds edges.
fn references(module: &[String], text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        for (i, _) in code.match_indices("crate::") {
            if i > 0 && code[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                continue; // `latch_crate::`, not ours
            }
            let rest = &code[i + "crate::".len()..];
            if rest.starts_with('{') {
                out.extend(group_heads(rest));
            } else {
                out.push(leading_path(rest));
            }
        }
        for (i, _) in code.match_indices("super::") {
            if i > 0 && code[..i].ends_with("super::") {
                continue; // counted from the first `super::`
            }
            let mut base: Vec<String> = module.to_vec();
            let mut rest = &code[i..];
            while let Some(r) = rest.strip_prefix("super::") {
                base.pop();
                rest = r;
            }
            let tail = if rest.starts_with('{') {
                group_heads(rest).into_iter().next().unwrap_or_default()
            } else {
                leading_path(rest)
            };
            base.extend(tail);
            out.push(base);
        }
    }
    out
}

/// Edges between the children of `parent` (e.g. `[]` for top-level modules, `["http"]` for
/// `http`'s submodules): `a -> b` when a file inside `parent::a` names something in `parent::b`.
fn edges(src: &Path, parent: &[String]) -> BTreeMap<String, BTreeSet<String>> {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(src) {
        let module = module_of(src, &file);
        if module.len() <= parent.len() || module[..parent.len()] != *parent {
            continue;
        }
        let from = module[parent.len()].clone();
        let text = std::fs::read_to_string(&file).expect("read source");
        let node = g.entry(from.clone()).or_default();
        for target in references(&module, &text) {
            if target.len() > parent.len()
                && target[..parent.len()] == *parent
                && target[parent.len()] != from
            {
                node.insert(target[parent.len()].clone());
            }
        }
    }
    g
}

/// A cycle in `g`, as the list of modules along it, if there is one.
fn find_cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(n).copied().unwrap_or(Mark::New) {
            Mark::Done => return None,
            Mark::Open => {
                let start = path.iter().position(|p| p == n).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(n.to_owned());
                return Some(cycle);
            }
            Mark::New => {}
        }
        marks.insert(n.to_owned(), Mark::Open);
        path.push(n.to_owned());
        for next in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, g, marks, path) {
                return Some(c);
            }
        }
        path.pop();
        marks.insert(n.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for n in g.keys() {
        if let Some(c) = visit(n, g, &mut marks, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn assert_acyclic(parent: &[String]) {
    let g = edges(&src_dir(), parent);
    assert!(
        g.len() > 1,
        "expected several modules under {parent:?}, found {g:?}"
    );
    if let Some(cycle) = find_cycle(&g) {
        panic!(
            "modules under `crate::{}` import each other in a circle: {}\nwhole graph: {g:#?}",
            parent.join("::"),
            cycle.join(" -> ")
        );
    }
}

#[test]
fn top_level_modules_do_not_import_in_a_circle() {
    assert_acyclic(&[]);
}

#[test]
fn http_submodules_do_not_import_in_a_circle() {
    assert_acyclic(&["http".to_owned()]);
}

#[test]
fn the_checker_sees_a_circle() {
    let text_a = "use crate::b::X;\n// crate::c::ignored\n";
    let text_b = "use crate::{a::Y, d};\n";
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, text) in [("a", text_a), ("b", text_b)] {
        let refs = references(&[m.to_owned()], text);
        g.entry(m.to_owned())
            .or_default()
            .extend(refs.into_iter().map(|r| r[0].clone()).filter(|r| r != m));
    }
    assert_eq!(g["a"], BTreeSet::from(["b".to_owned()]));
    assert_eq!(g["b"], BTreeSet::from(["a".to_owned(), "d".to_owned()]));
    assert_eq!(
        find_cycle(&g),
        Some(vec!["a".to_owned(), "b".to_owned(), "a".to_owned()])
    );
    let sup = references(
        &["http".to_owned(), "routes".to_owned(), "x".to_owned()],
        "use super::super::state::S;",
    );
    // The path names the item too; the graph reads only its module prefix.
    assert_eq!(sup.len(), 1);
    assert_eq!(sup[0][..2], ["http".to_owned(), "state".to_owned()]);
}
