//! The HTTP listener, served until shutdown, and the watcher that ends open MCP streams when
//! shutdown starts (so the graceful shutdown does not wait on them).
//!
//! Each accepted connection is served by hyper's HTTP/1 connection (with a header read
//! timeout and a bounded head) in a task of its own, which also closes it after `[http]
//! idle_timeout` without a byte moving, or at once when it is evicted. `conns::Conns` caps
//! the connections in total and per address; when a cap is reached the oldest connection with
//! no request in flight makes room — idle, half-sent, or still receiving a request body (its
//! bound: `[http] body_timeout`, in [`crate::http::body_guard`]) — so idle or slow connections
//! can never lock out a client with a request to send, and the process never runs out of file
//! descriptors.

mod conns;
mod io;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::config::HttpConfig;
use crate::jobs::serve::conns::{Busy, Conns, Slot};
use crate::jobs::serve::io::{Activity, CountedBody, ReceivedBody, TrackedIo};

/// File descriptors left to everything but client connections (store, outbound HTTP, logs).
const RESERVED_FDS: usize = 128;

/// The listener's limits, from `[http]`.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    header_read_timeout: Duration,
    idle_timeout: Duration,
    max_connections: usize,
    max_connections_per_address: usize,
    max_header_bytes: usize,
}

impl Limits {
    /// `[http]`, with `max_connections` lowered to leave [`RESERVED_FDS`] of the process's
    /// open-file limit (a warning says so).
    pub(crate) fn new(http: &HttpConfig) -> Self {
        let mut max = http.max_connections;
        if let Some(fds) = open_file_limit() {
            let room = fds.saturating_sub(RESERVED_FDS).max(16);
            if room < max {
                tracing::warn!(
                    configured = max,
                    open_file_limit = fds,
                    effective = room,
                    "http.max_connections lowered to fit the open-file limit (raise `ulimit -n`)"
                );
                max = room;
            }
        }
        Self {
            header_read_timeout: http.header_read_timeout,
            idle_timeout: http.idle_timeout,
            max_connections: max,
            max_connections_per_address: http.max_connections_per_address.min(max),
            max_header_bytes: http.max_header_bytes,
        }
    }
}

/// The soft limit on open files (Linux: `/proc/self/limits`; elsewhere unknown).
fn open_file_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Serves `app` on `listener` until `stop` turns true, then stops accepting and drains
/// in-flight requests (idle connections close at once).
pub(crate) async fn run(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    let conns = Conns::new(limits.max_connections, limits.max_connections_per_address);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes)
        .keep_alive(true);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.wait_for(|v| *v) => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                accept_failed(&e).await;
                continue;
            }
        };
        match conns.admit(peer.ip()) {
            Ok(slot) => {
                tokio::spawn(serve_connection(
                    stream,
                    Conn {
                        peer,
                        slot,
                        app: app.clone(),
                        builder: builder.clone(),
                        idle: limits.idle_timeout,
                        handshake: limits.header_read_timeout,
                        stop: stop.clone(),
                    },
                    tls.clone(),
                ));
            }
            Err(why) => {
                // Closed at once: the descriptor is returned before the next accept.
                drop(stream);
                metrics::counter!("latch_http_connections_refused_total", "reason" => why.as_str())
                    .increment(1);
            }
        }
    }
    drop(listener);
    conns.all_ended().await;
}

/// An accept error: per-connection ones are ignored; others (out of file descriptors) pause
/// accepting briefly instead of spinning.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %e, "accept failed; pausing 100ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// One accepted connection and what serving it needs.
struct Conn {
    peer: SocketAddr,
    slot: Slot,
    app: Router,
    builder: http1::Builder,
    idle: Duration,
    /// Bound on the TLS handshake (the header read timeout: a handshake is part of the head).
    handshake: Duration,
    stop: watch::Receiver<bool>,
}

/// Serves one connection, over TLS when `tls` is set (the client's X.509-SVID, if it presented
/// one, goes into every request as a [`latch_core::broker::PeerSvid`]).
async fn serve_connection(stream: TcpStream, c: Conn, tls: Option<tokio_rustls::TlsAcceptor>) {
    let activity = Activity::new();
    let tracked = TrackedIo::new(stream, activity.clone());
    let Some(acceptor) = tls else {
        return serve_io(TokioIo::new(tracked), None, activity, c).await;
    };
    match tokio::time::timeout(c.handshake, acceptor.accept(tracked)).await {
        Ok(Ok(tls_stream)) => {
            let svid = crate::tls::peer_svid(tls_stream.get_ref().1);
            serve_io(TokioIo::new(tls_stream), svid, activity, c).await;
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, peer = %c.peer, "tls handshake failed");
            metrics::counter!("latch_tls_handshakes_failed_total").increment(1);
        }
        Err(_) => {
            tracing::debug!(peer = %c.peer, "tls handshake timed out");
            metrics::counter!("latch_tls_handshakes_failed_total").increment(1);
        }
    }
}

/// Serves one connection's HTTP until it ends, is evicted, goes idle for `idle`, or (after
/// `stop`) has finished its in-flight request.
async fn serve_io<I>(
    io: I,
    svid: Option<latch_core::broker::PeerSvid>,
    activity: std::sync::Arc<Activity>,
    c: Conn,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let Conn {
        peer,
        slot,
        app,
        builder,
        idle,
        mut stop,
        ..
    } = c;
    let busy = slot.busy.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        if let Some(s) = &svid {
            req.extensions_mut().insert(s.clone());
        }
        // Busy (not evictable) once the body has arrived or the response has begun.
        let mark = Busy::new(&busy);
        let req = req.map(|b| ReceivedBody::new(b, mark.clone()));
        let app = app.clone();
        async move {
            let resp = app.oneshot(req).await?;
            Ok::<_, std::convert::Infallible>(resp.map(|b| CountedBody::new(b, mark)))
        }
    });
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let close: CancellationToken = slot.close.clone();
    let mut draining = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                }
                break;
            }
            () = close.cancelled() => {
                tracing::debug!(%peer, "connection closed to make room");
                break;
            }
            _ = stop.wait_for(|v| *v), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(activity.idle_at(idle)) => {
                if tokio::time::Instant::now() >= activity.idle_at(idle) {
                    tracing::debug!(%peer, "idle connection closed");
                    metrics::counter!("latch_http_idle_closed_total").increment(1);
                    break;
                }
            }
        }
    }
    drop(slot);
}

/// Cancels `cancel` (open MCP streams) as soon as `stop` turns true.
pub(crate) async fn cancel_on_stop(cancel: CancellationToken, mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|v| *v).await;
    cancel.cancel();
}

/// Runs `serve` to its end (the drain after `stop`), then writes the summaries of every open
/// failed-authentication window, so none is lost at shutdown.
pub(crate) async fn then_flush_auth_failures(
    serve: impl Future<Output = ()>,
    broker: Arc<latch_core::Broker>,
) {
    serve.await;
    if let Err(e) = broker.flush_auth_failures(true).await {
        tracing::warn!(error = %e, "failed-authentication summaries not written at shutdown");
    }
}

/// Writes the summaries of closed failed-authentication windows every second until `stop`.
pub(crate) async fn flush_auth_failures(
    broker: Arc<latch_core::Broker>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                if let Err(e) = broker.flush_auth_failures(false).await {
                    tracing::warn!(error = %e, "failed-authentication summaries not written; retrying");
                }
            }
            r = stop.changed() => if r.is_err() || *stop.borrow() { break },
        }
    }
}
