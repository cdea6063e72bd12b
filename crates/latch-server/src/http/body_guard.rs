//! [`body_guard`]: the request body's own bounds, before and while it is read. A declared
//! `Content-Length` above the route's limit is answered `413 body_too_large` before a byte of
//! the body is read, and a body not received in full within `[http] body_timeout` of the
//! request head gets `408 request_timeout` and the connection is closed. Both apply to every
//! route, `/mcp` included ("R-U-Dead-Yet": a client trickling a body a byte at a time would
//! otherwise hold its connection as long as it likes).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::{Body as _, Frame, SizeHint};
use latch_core::{ApiError, ErrorCode};

use crate::http::error::AppError;

/// The bounds of one route's request bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyGuard {
    /// Largest body, bytes (`server.max_body_bytes`, or the route's own bound).
    pub max_bytes: usize,
    /// Longest wait for the whole body, from the request head (`[http] body_timeout`).
    pub timeout: Duration,
}

/// Middleware (state: [`BodyGuard`]): `413 body_too_large` at once for a declared length
/// (`Content-Length`, RFC 9110 §8.6) above `max_bytes`; otherwise the request goes on, and if its
/// body has not been read to its end within `timeout` the answer is `408 request_timeout` with
/// `Connection: close` (RFC 9110 §15.5.9, RFC 9112 §9.6). A body read in time is not bounded
/// further: a long-running handler or a streamed response (MCP SSE) is not cut. A body of
/// unknown length (chunked) is still bounded by the route's `DefaultBodyLimit` as it is read.
///
/// # Security
/// Bounds what a slow or oversize upload can hold of a connection slot and of memory.
pub async fn body_guard(State(g): State<BodyGuard>, req: Request, next: Next) -> Response {
    // RFC 9110 §8.4: a body in a content coding the server does not decode is refused (`415`),
    // never read as if it were plain: what Latch parsed would not be what the client sent.
    // Likewise a text body declared in another charset than UTF-8 (RFC 8259 §8.1).
    if let Some(problem) = unreadable_encoding(req.headers()) {
        metrics::counter!("latch_http_body_refused_total", "reason" => "encoding").increment(1);
        return closing(AppError(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            problem,
        )));
    }
    let declared = req.body().size_hint().lower();
    if declared > u64::try_from(g.max_bytes).unwrap_or(u64::MAX) {
        metrics::counter!("latch_http_body_refused_total", "reason" => "too_large").increment(1);
        return closing(AppError(ApiError::new(
            ErrorCode::BodyTooLarge,
            format!("the request body is larger than {} bytes", g.max_bytes),
        )));
    }
    let done = Arc::new(AtomicBool::new(false));
    let deadline = tokio::time::Instant::now() + g.timeout;
    let req = req.map(|b| Body::new(WatchedBody::new(b, done.clone())));
    let run = next.run(req);
    tokio::pin!(run);
    tokio::select! {
        r = &mut run => r,
        () = unfinished_at(deadline, &done) => {
            metrics::counter!("latch_http_body_refused_total", "reason" => "timeout").increment(1);
            closing(AppError(ApiError::new(
                ErrorCode::RequestTimeout,
                "the request body was not received in time",
            )))
        }
    }
}

/// Why the body's declared encoding cannot be read, if it cannot: a `Content-Encoding` other
/// than `identity`, or a `charset` other than UTF-8 (ASCII is UTF-8).
fn unreadable_encoding(headers: &axum::http::HeaderMap) -> Option<&'static str> {
    for v in headers.get_all(axum::http::header::CONTENT_ENCODING) {
        let plain = v.to_str().is_ok_and(|v| {
            v.split(',')
                .all(|c| c.trim().is_empty() || c.trim().eq_ignore_ascii_case("identity"))
        });
        if !plain {
            return Some(
                "content codings (`Content-Encoding`) are not accepted: send the body as is",
            );
        }
    }
    let ct = headers
        .get(axum::http::header::CONTENT_TYPE)?
        .to_str()
        .ok()?;
    let charset = ct.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| v.trim().trim_matches('"').to_ascii_lowercase())
    })?;
    (!matches!(charset.as_str(), "utf-8" | "utf8" | "us-ascii"))
        .then_some("only utf-8 bodies are accepted (`charset`)")
}

/// The error as a response that closes the connection after it (the rest of the body is not
/// read, so the connection cannot carry another request).
fn closing(e: AppError) -> Response {
    let mut r = e.into_response();
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Resolves at `deadline` if `done` is still false then; never otherwise.
async fn unfinished_at(deadline: tokio::time::Instant, done: &AtomicBool) {
    tokio::time::sleep_until(deadline).await;
    if done.load(Ordering::Acquire) {
        std::future::pending::<()>().await;
    }
}

/// A request body that sets `done` once it has been read to its end (at once if it is empty).
struct WatchedBody {
    inner: Body,
    done: Arc<AtomicBool>,
}

impl WatchedBody {
    fn new(inner: Body, done: Arc<AtomicBool>) -> Self {
        if inner.is_end_stream() {
            done.store(true, Ordering::Release);
        }
        Self { inner, done }
    }
}

impl hyper::body::Body for WatchedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None)) || this.inner.is_end_stream() {
            this.done.store(true, Ordering::Release);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::post;
    use tokio::sync::mpsc;
    use tower::ServiceExt;

    fn app(max_bytes: usize, timeout: Duration) -> Router {
        Router::new()
            .route(
                "/",
                post(|b: Bytes| async move {
                    // A slow handler after its body: never cut.
                    tokio::time::sleep(Duration::from_millis(600)).await;
                    b.len().to_string()
                }),
            )
            .layer(axum::middleware::from_fn_with_state(
                BodyGuard { max_bytes, timeout },
                body_guard,
            ))
    }

    async fn json(r: Response) -> serde_json::Value {
        let b = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        serde_json::from_slice(&b).unwrap()
    }

    /// A body of declared length `len` (as hyper gives one with `Content-Length`) whose bytes
    /// arrive when sent on the channel.
    fn sized(len: u64) -> (mpsc::Sender<Bytes>, Body) {
        let (tx, rx) = mpsc::channel(4);
        (tx, Body::new(ChanBody(rx, len)))
    }

    struct ChanBody(mpsc::Receiver<Bytes>, u64);

    impl hyper::body::Body for ChanBody {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.1)
        }
    }

    #[tokio::test]
    async fn a_declared_length_above_the_limit_is_refused_before_the_body_is_read() {
        // A body that never arrives: the answer cannot wait on it.
        let (_tx, body) = sized(100_000_000);
        let req = Request::post("/").body(body).unwrap();
        let t = tokio::time::Instant::now();
        let r = app(1024, Duration::from_secs(10))
            .oneshot(req)
            .await
            .unwrap();
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(r.headers()[header::CONNECTION], "close");
        assert_eq!(json(r).await["error"]["code"], "body_too_large");
    }

    #[tokio::test]
    async fn a_body_not_received_in_time_gets_408_and_one_received_in_time_is_not_cut() {
        let (tx, body) = sized(100);
        let trickle = tokio::spawn(async move {
            for _ in 0..99 {
                if tx.send(Bytes::from_static(b"a")).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let t = tokio::time::Instant::now();
        let req = Request::post("/").body(body).unwrap();
        let r = app(1024, Duration::from_millis(300))
            .oneshot(req)
            .await
            .unwrap();
        let e = t.elapsed();
        assert!(
            e >= Duration::from_millis(300) && e < Duration::from_millis(550),
            "{e:?}"
        );
        assert_eq!(r.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(r.headers()[header::CONNECTION], "close");
        assert_eq!(json(r).await["error"]["code"], "request_timeout");
        trickle.abort();

        // A whole body in time: the handler after it, slower than the body timeout, runs to
        // its end.
        let (tx, body) = sized(3);
        tx.send(Bytes::from_static(b"abc")).await.unwrap();
        drop(tx);
        let t = tokio::time::Instant::now();
        let r = app(1024, Duration::from_millis(300))
            .oneshot(Request::post("/").body(body).unwrap())
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(t.elapsed() >= Duration::from_millis(600));
        // No body at all (a GET, `Content-Length: 0`) is complete at once.
        let r = app(1024, Duration::from_millis(300))
            .oneshot(Request::post("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
}
