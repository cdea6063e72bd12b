//! The loopback redirect receiver of `latch login` (RFC 8252 §7.3): one route,
//! `GET /callback`, served on `127.0.0.1` while the sign-in waits.
//!
//! Only the redirect that carries this attempt's `state` counts. A request with a missing or
//! different `state` (another tab, a stale bookmark, a local process probing the port) gets a
//! `400` page saying it was ignored, and the receiver keeps waiting. The matching redirect ends
//! the wait: with its `code`, or with the provider's `error`. The browser's page for a code is
//! held open until the terminal has redeemed it and checked the result ([`Arrived::finish`]),
//! so "Signed in" is never shown for a sign-in that then failed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use latch_core::audit::escape_text;
use tokio::sync::oneshot;

/// How long the browser's page waits for the terminal to finish the sign-in.
const PAGE_WAIT: Duration = Duration::from_secs(120);

/// The outcome of the sign-in as the browser's page shows it: `Ok(who)` or `Err(why)`.
type PageOutcome = Result<String, String>;

struct Shared {
    /// This attempt's `state` (RFC 6749 §10.12).
    state: String,
    /// Taken by the matching redirect: the one arrival that ends the wait.
    arrival: Mutex<Option<oneshot::Sender<Result<Arrived, String>>>>,
}

/// The matching redirect with a code; its browser page waits for [`Arrived::finish`].
pub struct Arrived {
    /// The authorization code.
    pub code: String,
    page: oneshot::Sender<PageOutcome>,
}

impl Arrived {
    /// Answers the browser that brought the code: success with `Ok(who)`, a failure page
    /// with `Err(why)` (text only; `why` must not carry a secret).
    pub fn finish(self, outcome: PageOutcome) {
        let _ = self.page.send(outcome);
    }
}

fn page(status: StatusCode, text: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response()
}

async fn callback(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if q.get("state").map(String::as_bytes) != Some(shared.state.as_bytes()) {
        return page(
            StatusCode::BAD_REQUEST,
            "This request does not belong to the sign-in in progress: its `state` is missing or \
             differs. It was ignored; the terminal keeps waiting for the identity provider's \
             redirect.\n"
                .to_owned(),
        );
    }
    let sender = shared
        .arrival
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let Some(tx) = sender else {
        return page(
            StatusCode::CONFLICT,
            "This sign-in has already received its answer; see the terminal.\n".to_owned(),
        );
    };
    if let Some(err) = q.get("error") {
        let _ = tx.send(Err(format!(
            "the identity provider refused the sign-in: {}{}",
            escape_text(err),
            q.get("error_description")
                .map(|d| format!(" ({})", escape_text(d)))
                .unwrap_or_default()
        )));
        return page(
            StatusCode::BAD_REQUEST,
            "The identity provider refused the sign-in; see the terminal.\n".to_owned(),
        );
    }
    let Some(code) = q.get("code").cloned() else {
        let _ = tx.send(Err("the sign-in redirect carried no code".to_owned()));
        return page(
            StatusCode::BAD_REQUEST,
            "The sign-in redirect carried no code; see the terminal.\n".to_owned(),
        );
    };
    let (page_tx, page_rx) = oneshot::channel();
    let _ = tx.send(Ok(Arrived {
        code,
        page: page_tx,
    }));
    match tokio::time::timeout(PAGE_WAIT, page_rx).await {
        Ok(Ok(Ok(who))) => page(
            StatusCode::OK,
            format!(
                "Signed in to Latch as {}. You can close this tab and return to the terminal.\n",
                escape_text(&who)
            ),
        ),
        Ok(Ok(Err(why))) => page(
            StatusCode::BAD_REQUEST,
            format!(
                "The sign-in failed: {}\nSee the terminal.\n",
                escape_text(&why)
            ),
        ),
        _ => page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The sign-in did not complete; see the terminal.\n".to_owned(),
        ),
    }
}

/// The running receiver: serves `GET /callback` until [`Receiver::close`].
pub struct Receiver {
    arrival: Option<oneshot::Receiver<Result<Arrived, String>>>,
    stop: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts serving `listener`, waiting for the redirect that carries `state`.
    pub fn start(listener: tokio::net::TcpListener, state: String) -> Self {
        let (tx, rx) = oneshot::channel();
        let shared = Arc::new(Shared {
            state,
            arrival: Mutex::new(Some(tx)),
        });
        let app = axum::Router::new()
            .route("/callback", axum::routing::get(callback))
            .with_state(shared);
        let (stop, stop_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stop_rx.await;
                })
                .await;
        });
        Self {
            arrival: Some(rx),
            stop,
            server,
        }
    }

    /// Waits up to `timeout` for the matching redirect; stray requests are answered and
    /// ignored meanwhile.
    ///
    /// # Errors
    /// The provider's `error` (with the matching `state`), a matching redirect without a code,
    /// no matching redirect within `timeout`, or a second call.
    pub async fn wait(&mut self, timeout: Duration) -> Result<Arrived, String> {
        let Some(rx) = self.arrival.take() else {
            return Err("the sign-in receiver has already answered".to_owned());
        };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("the sign-in receiver stopped".to_owned()),
            Err(_) => Err(format!(
                "no sign-in within {}s; run `latch login` again (or `latch login --device`)",
                timeout.as_secs()
            )),
        }
    }

    /// Stops listening, after letting the pages already being answered go out (up to 2 s).
    pub async fn close(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(2), self.server).await;
    }
}

/// A sign-in whose browser page still waits for the terminal's verdict.
pub struct PendingPage {
    arrived: Arrived,
    receiver: Receiver,
}

impl PendingPage {
    /// Pairs the arrived redirect with its receiver.
    pub fn new(arrived: Arrived, receiver: Receiver) -> Self {
        Self { arrived, receiver }
    }

    /// Shows `outcome` in the browser ([`Arrived::finish`]) and stops the receiver.
    pub async fn finish(self, outcome: PageOutcome) {
        self.arrived.finish(outcome);
        self.receiver.close().await;
    }
}
