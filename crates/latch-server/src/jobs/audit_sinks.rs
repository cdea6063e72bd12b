//! Audit sinks (`[[audit.sinks]]`): follow the store from a cursor kept in the store and
//! deliver every record to a file, stdout or a webhook (at least once; consumers deduplicate by
//! `seq`). A failing sink is retried with backoff and never blocks the broker.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use latch_core::ports::Store;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::config::AuditSinkConfig;

/// Records per page delivered to a sink.
const PAGE: u32 = 500;

/// Follows the store from the sink's cursor and delivers every record to `sink`, until `stop`.
pub(crate) async fn run(
    store: Arc<dyn Store>,
    sink: AuditSinkConfig,
    base_dir: PathBuf,
    poll: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let name = sink.name().to_owned();
    // Every delivery is also bounded by the sink's own `timeout` (see `deliver_once`).
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    let mut backoff = poll;
    let mut failures: u32 = 0;
    loop {
        let delivered = deliver_once(store.as_ref(), &sink, &base_dir, &http).await;
        failures = if delivered.is_ok() {
            0
        } else {
            failures.saturating_add(1)
        };
        record_backlog(store.as_ref(), &name, failures).await;
        let delay = match delivered {
            Ok(true) => Duration::ZERO, // more may be waiting
            Ok(false) => {
                backoff = poll;
                poll
            }
            Err(e) => {
                metrics::counter!("latch_audit_sink_failures_total", "sink" => name.clone())
                    .increment(1);
                tracing::warn!(sink = %name, error = %e, "audit sink delivery failed; will retry");
                backoff = (backoff * 2).min(Duration::from_secs(60));
                backoff
            }
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            r = stop.changed() => if r.is_err() || *stop.borrow() { break },
        }
    }
}

/// Sets the sink's gauges: records past its cursor (the newest record's seq minus the cursor)
/// and `failures`. A store that cannot answer leaves the backlog as it was.
async fn record_backlog(store: &dyn Store, sink: &str, failures: u32) {
    let head = store
        .audit_head()
        .await
        .map(|h| h.map_or(0, |(seq, _)| seq));
    let cursor = store.sink_cursor(sink).await;
    match (head, cursor) {
        (Ok(head), Ok(cursor)) => {
            crate::metrics::audit_sink(sink, head.saturating_sub(cursor), failures);
        }
        _ => metrics::gauge!("latch_audit_sink_consecutive_failures", "sink" => sink.to_owned())
            .set(f64::from(failures)),
    }
}

/// Delivers one page; `Ok(true)` when a full page went out (call again at once).
async fn deliver_once(
    store: &dyn Store,
    sink: &AuditSinkConfig,
    base_dir: &std::path::Path,
    http: &reqwest::Client,
) -> Result<bool, String> {
    let name = sink.name();
    let cursor = store.sink_cursor(name).await.map_err(|e| e.to_string())?;
    let page = store
        .audit_records(cursor, PAGE)
        .await
        .map_err(|e| e.to_string())?;
    let Some(last) = page.last().map(|r| r.seq) else {
        return Ok(false);
    };
    let mut body = String::new();
    for r in &page {
        body.push_str(&r.export_line().map_err(|_| "a stored record is not JSON")?);
        body.push('\n');
    }
    match sink {
        AuditSinkConfig::File { path, .. } => {
            let path = if path.is_absolute() {
                path.clone()
            } else {
                base_dir.join(path)
            };
            let mut opts = tokio::fs::OpenOptions::new();
            opts.create(true).append(true);
            #[cfg(unix)]
            opts.mode(0o600);
            let mut f = opts
                .open(&path)
                .await
                .map_err(|e| format!("cannot open `{}`: {e}", path.display()))?;
            let before = f
                .metadata()
                .await
                .map_err(|e| format!("cannot stat `{}`: {e}", path.display()))?
                .len();
            let written = async {
                f.write_all(body.as_bytes()).await?;
                f.flush().await?;
                f.sync_data().await
            }
            .await;
            if let Err(e) = written {
                // Leave no partial line behind: the retry writes the whole page again.
                let _ = f.set_len(before).await;
                return Err(format!("cannot write `{}`: {e}", path.display()));
            }
        }
        AuditSinkConfig::Stdout { .. } => {
            let mut out = tokio::io::stdout();
            out.write_all(body.as_bytes())
                .await
                .map_err(|e| format!("cannot write stdout: {e}"))?;
            out.flush()
                .await
                .map_err(|e| format!("cannot flush stdout: {e}"))?;
        }
        AuditSinkConfig::Webhook { url, timeout, .. } => {
            let resp = http
                .post(url)
                .timeout(*timeout)
                .header("content-type", "application/x-ndjson")
                .body(body)
                .send()
                .await
                .map_err(|e| format!("webhook unreachable: {}", e.without_url()))?;
            if !resp.status().is_success() {
                return Err(format!("webhook answered {}", resp.status()));
            }
        }
    }
    store
        .set_sink_cursor(name, last)
        .await
        .map_err(|e| e.to_string())?;
    Ok(page.len() == PAGE as usize)
}
