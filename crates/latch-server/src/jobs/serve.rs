//! The HTTP listener itself, served until shutdown, and the watcher that ends open MCP streams
//! when shutdown starts (so the graceful shutdown does not wait on them).

use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Serves `app` on `listener` until `stop` turns true, then drains in-flight requests.
pub(crate) async fn run(listener: TcpListener, app: Router, mut stop: watch::Receiver<bool>) {
    let serve = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = stop.wait_for(|v| *v).await;
    });
    if let Err(e) = serve.await {
        tracing::error!(error = %e, "server stopped");
    }
}

/// Cancels `cancel` (open MCP streams) as soon as `stop` turns true.
pub(crate) async fn cancel_on_stop(cancel: CancellationToken, mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|v| *v).await;
    cancel.cancel();
}
