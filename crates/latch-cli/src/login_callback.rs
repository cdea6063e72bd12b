//! The loopback redirect receiver of `latch login` (RFC 8252 §7.3): one route,
//! `GET /callback`, served on `127.0.0.1` until the provider's redirect arrives or the wait ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::IntoResponse;

type Outcome = Result<(String, String), String>;
type Slot = Arc<Mutex<Option<tokio::sync::oneshot::Sender<Outcome>>>>;

async fn callback(
    State(slot): State<Slot>,
    Query(q): Query<HashMap<String, String>>,
) -> impl IntoResponse {
    let outcome = match (q.get("code"), q.get("state"), q.get("error")) {
        (_, _, Some(err)) => Err(format!(
            "the identity provider refused the sign-in: {}{}",
            latch_core::audit::escape_text(err),
            q.get("error_description")
                .map(|d| format!(" ({})", latch_core::audit::escape_text(d)))
                .unwrap_or_default()
        )),
        (Some(code), Some(state), None) => Ok((code.clone(), state.clone())),
        _ => Err("the sign-in redirect carried no code".to_owned()),
    };
    let ok = outcome.is_ok();
    let sender = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(tx) = sender {
        let _ = tx.send(outcome);
    }
    if ok {
        "Signed in to Latch. You can close this tab and return to the terminal.\n"
    } else {
        "The sign-in did not complete; see the terminal.\n"
    }
}

/// Serves `listener` until the first `GET /callback`, and answers its `code` and `state`.
///
/// # Errors
/// The provider's `error`, a redirect without a code, or no redirect within `timeout`.
pub async fn wait_for_code(
    listener: tokio::net::TcpListener,
    timeout: Duration,
) -> Result<(String, String), String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let slot: Slot = Arc::new(Mutex::new(Some(tx)));
    let app = axum::Router::new()
        .route("/callback", axum::routing::get(callback))
        .with_state(slot);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await;
    });
    let got = tokio::time::timeout(timeout, rx).await;
    let _ = stop_tx.send(());
    // Let the browser's answer go out before the listener closes.
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    match got {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err("the sign-in receiver stopped".to_owned()),
        Err(_) => Err(format!(
            "no sign-in within {}s; run `latch login` again (or `latch login --device`)",
            timeout.as_secs()
        )),
    }
}
