//! `latch serve`: runs the broker until Ctrl-C or SIGTERM, then shuts it down gracefully.

use std::path::Path;
use std::process::ExitCode;

/// Loads `config`, starts the broker (on `listen` when given, else `[server] listen`) and
/// serves until a stop signal.
///
/// # Errors
/// An unreadable or invalid configuration, a broker that cannot start, or a signal handler
/// that cannot be installed.
pub(crate) async fn run(config: &Path, listen: Option<String>) -> Result<ExitCode, String> {
    let mut cfg = match crate::render::load_config(config) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    if let Some(l) = listen {
        cfg.server.listen = l;
    }
    let server = latch_server::start(cfg, Default::default())
        .await
        .map_err(|e| e.to_string())?;
    stop_signal().await?;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Waits for Ctrl-C (and, on Unix, SIGTERM).
async fn stop_signal() -> Result<(), String> {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| e.to_string())?;
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    Ok(())
}
