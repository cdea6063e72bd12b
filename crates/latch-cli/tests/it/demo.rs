//! `latch demo` end to end, as a newcomer runs it: every step behaves as described, and the
//! production approval is given through the approval console's HTML forms.

use std::process::Command;

#[test]
fn latch_demo_runs_every_step_and_approves_through_the_console() {
    let out = Command::new(env!("CARGO_BIN_EXE_latch"))
        .arg("demo")
        .env_remove("LATCH_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("All steps behaved as described."),
        "{stdout}"
    );
    assert!(!stdout.contains('✘'), "{stdout}");
    for line in [
        "bob opens the request in the approval console and approves what the page shows",
        "/console/requests/req_",
        "✔ bob signs in to the console (development sign-in",
        "✔ his pending list links the request",
        "✔ a vote without the page's CSRF token is refused (csrf_token_invalid)",
        "✔ a vote for another digest than the page showed is refused",
        "✔ bob approves with a reason through the page's form",
        "✔ deploy credential minted",
        "approval.recorded            approve    by bob",
    ] {
        assert!(stdout.contains(line), "missing `{line}` in:\n{stdout}");
    }
}
