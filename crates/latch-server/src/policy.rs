//! The policy files on disk: loading and validating them ([`load_policy`]), the stamp a watcher
//! compares, and [`reload_now`] (validate, swap atomically, re-evaluate live leases).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use latch_core::Broker;
use latch_core::policy::{PolicyEngine, PolicyLoadError, PolicySource};

use crate::config::Config;

/// Reads the schema and every `*.cedar` file of the policy directory (sorted), and validates
/// them against the configured resources' actions.
///
/// # Errors
/// [`PolicyLoadError`] with file, line and column.
pub fn load_policy(config: &Config) -> Result<PolicyEngine, PolicyLoadError> {
    let (schema, files) = read_policy_sources(config)?;
    PolicyEngine::load(&schema, &files, &config.all_actions())
}

fn io_err(path: &Path, e: std::io::Error) -> PolicyLoadError {
    PolicyLoadError {
        file: path.display().to_string(),
        line: None,
        column: None,
        message: format!("cannot read: {e}"),
    }
}

fn policy_files(config: &Config) -> Result<Vec<PathBuf>, PolicyLoadError> {
    let dir = config.path(&config.policy.dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| io_err(&dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(PolicyLoadError {
            file: dir.display().to_string(),
            line: None,
            column: None,
            message: "no `*.cedar` policy files (everything would be denied)".into(),
        });
    }
    Ok(files)
}

fn read_policy_sources(
    config: &Config,
) -> Result<(PolicySource, Vec<PolicySource>), PolicyLoadError> {
    let schema_path = config.path(&config.policy.schema);
    let schema = PolicySource {
        name: schema_path.display().to_string(),
        text: std::fs::read_to_string(&schema_path).map_err(|e| io_err(&schema_path, e))?,
    };
    let mut out = Vec::new();
    for f in policy_files(config)? {
        out.push(PolicySource {
            name: f.display().to_string(),
            text: std::fs::read_to_string(&f).map_err(|e| io_err(&f, e))?,
        });
    }
    Ok((schema, out))
}

/// What a policy watcher compares: path, modification time and length of the schema and every
/// policy file.
pub(crate) type PolicyStamp = Vec<(PathBuf, Option<SystemTime>, u64)>;

/// The current [`PolicyStamp`] of the configured policy files (unreadable ones have no time).
pub(crate) fn policy_stamp(config: &Config) -> PolicyStamp {
    let mut v = Vec::new();
    let schema = config.path(&config.policy.schema);
    let mut paths = vec![schema];
    if let Ok(files) = policy_files(config) {
        paths.extend(files);
    }
    for p in paths {
        let md = std::fs::metadata(&p).ok();
        v.push((
            p,
            md.as_ref().and_then(|m| m.modified().ok()),
            md.map(|m| m.len()).unwrap_or(0),
        ));
    }
    v
}

/// Reloads policies now: validates the new set first, swaps it atomically, then re-evaluates
/// every live lease. An invalid set is refused (the old one stays), logged and audited.
///
/// # Errors
/// The refusal reason.
pub async fn reload_now(
    config: &Config,
    broker: &Broker,
    source: &str,
) -> Result<latch_core::broker::ReloadReport, String> {
    match load_policy(config) {
        Ok(engine) => {
            if engine.fingerprint() == broker.policy().fingerprint() {
                return Ok(latch_core::broker::ReloadReport {
                    fingerprint: engine.fingerprint().to_owned(),
                    ..Default::default()
                });
            }
            let r = broker
                .reload_policies(engine, source)
                .await
                .map_err(|e| e.message)?;
            tracing::info!(fingerprint = %r.fingerprint, checked = r.leases_checked, revoked = r.leases_revoked.len(), "policies reloaded");
            Ok(r)
        }
        Err(e) => {
            let msg = e.to_string();
            tracing::error!(error = %msg, "policy reload refused; the previous policies stay in force");
            let _ = broker.record_reload_refused(source, &msg).await;
            metrics::counter!("latch_policy_reload_refused_total").increment(1);
            Err(msg)
        }
    }
}
