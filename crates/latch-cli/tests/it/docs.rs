//! The book (`docs/`, mdBook) cannot go stale: every `sh`/`bash` block of every page, and of the
//! README, is run against a broker started for it (`scripts/doc_blocks.py`, which also checks
//! relative links); the CLI reference is what `latch man --markdown` prints; the API reference
//! is what `scripts/api_reference.py` renders from the live OpenAPI document; the book builds
//! with mdBook. `LATCH_BLESS=1` rewrites the two generated references instead of comparing them.
//! Without python3 or mdbook the tests that need them skip loudly, and fail under `CI=true`
//! (`scripts/test.sh` installs both).

use std::path::{Path, PathBuf};
use std::process::Command;

use latch_testkit::{TestServer, tool_available};

/// The repository's root (two levels above this crate).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// Every Markdown page of the book, in a stable order.
fn pages(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("docs/src")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            pages(&p, out);
        } else if p.extension().is_some_and(|e| e == "md") {
            out.push(p);
        }
    }
}

/// Compares a generated reference page with the committed one, or rewrites it under
/// `LATCH_BLESS=1`.
fn compare_or_bless(path: &Path, generated: &str, how: &str) {
    if std::env::var_os("LATCH_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(path, generated).expect("write the reference");
        return;
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    if committed != generated {
        let first = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()));
        panic!(
            "{} is stale (first difference at line {}): regenerate it with \
             `LATCH_BLESS=1 cargo test -p latch-cli --test it docs::` ({how})",
            path.display(),
            first + 1
        );
    }
}

#[test]
fn every_shell_block_of_the_book_and_the_readme_runs() {
    if !tool_available("python3", &["--version"]) {
        return;
    }
    let root = repo();
    let mut all = vec![root.join("README.md")];
    pages(&root.join("docs/src"), &mut all);
    let out = Command::new("python3")
        .arg(root.join("scripts/doc_blocks.py"))
        .args(["--latch", env!("CARGO_BIN_EXE_latch"), "--jobs", "2"])
        .arg("--repo")
        .arg(&root)
        .args(&all)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "a block of the book failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_cli_reference_is_what_latch_man_markdown_prints() {
    let out = Command::new(env!("CARGO_BIN_EXE_latch"))
        .args(["man", "--markdown"])
        .output()
        .expect("latch man --markdown");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated = String::from_utf8(out.stdout).expect("UTF-8");
    compare_or_bless(
        &repo().join("docs/src/reference/cli.md"),
        &generated,
        "from `latch man --markdown`",
    );
}

#[tokio::test]
async fn the_api_reference_is_rendered_from_the_openapi_document() {
    if !tool_available("python3", &["--version"]) {
        return;
    }
    let s = TestServer::start().await;
    let doc = s.get(None, "/v1/openapi.json").await;
    assert_eq!(doc.status, 200);
    let file = s.dir.join("openapi.json");
    std::fs::write(&file, doc.body.to_string()).expect("write openapi.json");
    let root = repo();
    let out = tokio::process::Command::new("python3")
        .arg(root.join("scripts/api_reference.py"))
        .arg(&file)
        .output()
        .await
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated = String::from_utf8(out.stdout).expect("UTF-8");
    compare_or_bless(
        &root.join("docs/src/reference/api.md"),
        &generated,
        "from /v1/openapi.json by scripts/api_reference.py",
    );
}

#[test]
fn the_book_builds_with_mdbook() {
    if !tool_available("mdbook", &["--version"]) {
        return;
    }
    let out_dir = std::env::temp_dir().join(format!("latch-book-{}", std::process::id()));
    let out = Command::new("mdbook")
        .arg("build")
        .arg(repo().join("docs"))
        .arg("--dest-dir")
        .arg(&out_dir)
        .output()
        .expect("mdbook");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    let _ = std::fs::remove_dir_all(&out_dir);
    assert!(out.status.success(), "mdbook build failed:\n{log}");
    assert!(
        !log.contains("WARN") && !log.contains("ERROR"),
        "mdbook warned:\n{log}"
    );
}
