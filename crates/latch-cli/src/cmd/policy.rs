//! `latch policy`: validate a configuration's policies, run a file of example requests
//! against them (offline: no broker is contacted).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use latch_core::policy::PolicyTestCase;
use serde_json::json;

/// Exit code when a policy test case did not get its expected decision.
const EXIT_TESTS_FAILED: u8 = 5;

#[derive(Subcommand)]
pub(crate) enum PolicyCmd {
    /// Validate the schema and policies of a configuration (file, line and column on error).
    Validate {
        /// Configuration file.
        #[arg(long, short, env = "LATCH_CONFIG", default_value = "latch.toml")]
        config: PathBuf,
    },
    /// Run a file of example requests against the policies and compare with expected decisions.
    Test {
        /// TOML file of `[[case]]`s.
        file: PathBuf,
        /// Configuration file.
        #[arg(long, short, env = "LATCH_CONFIG", default_value = "latch.toml")]
        config: PathBuf,
        /// Print the raw JSON results.
        #[arg(long)]
        json: bool,
    },
}

/// A `latch policy test` file: `[[case]]` tables.
#[derive(serde::Deserialize)]
struct CaseFile {
    #[serde(rename = "case")]
    cases: Vec<PolicyTestCase>,
}

/// Runs `latch policy …`.
///
/// # Errors
/// An unreadable or invalid configuration, policy or case file, or a case whose `expect` is
/// not `allow`, `deny` or `step_up`.
pub(crate) fn run(cmd: PolicyCmd) -> Result<ExitCode, String> {
    match cmd {
        PolicyCmd::Validate { config } => validate(&config),
        PolicyCmd::Test { file, config, json } => test(&file, &config, json),
    }
}

/// `latch policy validate`: the number of valid policies, the fingerprint, and their ids.
fn validate(config: &Path) -> Result<ExitCode, String> {
    let cfg = match crate::render::load_config(config) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let engine = latch_server::startup::load_policy(&cfg).map_err(|e| e.to_string())?;
    println!(
        "ok: {} policies valid against the schema (fingerprint {})",
        engine.policy_ids().len(),
        engine.fingerprint()
    );
    for id in engine.policy_ids() {
        println!("  {id}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `latch policy test`: one PASS/FAIL line per case and a total (or the JSON results);
/// exit code 5 when a case failed.
fn test(file: &Path, config: &Path, json: bool) -> Result<ExitCode, String> {
    let cfg = match crate::render::load_config(config) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let engine = latch_server::startup::load_policy(&cfg).map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read `{}`: {e}", file.display()))?;
    let cases: CaseFile = match toml::from_str(&text) {
        Ok(c) => c,
        Err(e) => {
            crate::render::print_error_lines(&format!("{}: {e}", file.display()));
            return Ok(ExitCode::from(1));
        }
    };
    let resources = cfg.domain_resources();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut failed = 0;
    let mut results = Vec::new();
    for case in &cases.cases {
        if !["allow", "deny", "step_up"].contains(&case.expect.as_str()) {
            return Err(format!(
                "case `{}`: `expect` must be allow, deny or step_up",
                case.name
            ));
        }
        let d = latch_core::broker::run_policy_case(
            &engine,
            &resources,
            &cfg.tasks.production_environments,
            case,
            now,
        )?;
        let pass = d.kind() == case.expect;
        if !pass {
            failed += 1;
        }
        results.push(json!({"name": case.name, "expect": case.expect, "got": d.kind(), "pass": pass, "decision": d}));
        if !json {
            println!(
                "{} {}  (expected {}, got {}; policies: {})",
                if pass { "PASS" } else { "FAIL" },
                case.name,
                case.expect,
                d.kind(),
                d.policy_ids().join(", ")
            );
        }
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&results).unwrap_or_default()
        );
    } else {
        println!("{} passed, {} failed", cases.cases.len() - failed, failed);
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_TESTS_FAILED)
    })
}
