//! `latch bench --baseline`: the ceiling of HTTP on this machine, to hold introspection against
//! (issue 19: introspections at least half of what the same driver gets from an empty axum
//! handler, in the same run). The handler runs in a child process (`latch bench-empty-server`),
//! as the broker does, with the same HTTP stack (hyper through axum) and runtime, and none of
//! the broker's work; it is driven with the very requests introspection gets.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use axum::http::header::CONTENT_TYPE;

/// `latch bench-empty-server --listen ADDR`: answers `POST /v1/oauth/introspect` with
/// `{"active":true}`, reading nothing of the request.
///
/// # Errors
/// The address cannot be bound, or serving fails.
pub async fn serve_empty(listen: &str) -> Result<(), String> {
    let app = axum::Router::new().route(
        "/v1/oauth/introspect",
        axum::routing::post(|| async {
            ([(CONTENT_TYPE, "application/json")], r#"{"active":true}"#)
        }),
    );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    axum::serve(listener, app)
        .await
        .map_err(|e| format!("serving failed: {e}"))
}

/// A child `latch bench-empty-server` on a free loopback port, killed when dropped.
pub struct EmptyServer {
    child: tokio::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl EmptyServer {
    /// Starts the child and waits (up to 10 s) until it accepts connections.
    ///
    /// # Errors
    /// No free port, the executable cannot be found or started, or it never listens.
    pub async fn start() -> Result<Self, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free loopback port: {e}"))?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let exe = std::env::current_exe().map_err(|e| format!("cannot find latch itself: {e}"))?;
        let child = tokio::process::Command::new(exe)
            .args(["bench-empty-server", "--listen", &addr])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start the empty server: {e}"))?;
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return Ok(Self {
                    child,
                    base: format!("http://{addr}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!(
            "the empty server did not listen on {addr} within 10 s"
        ))
    }

    /// Its process id, for its CPU time per level.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

/// Drives a fresh [`EmptyServer`] with introspection requests for `tokens` at each level;
/// results are labelled `empty_handler`, with the child's CPU time per call.
///
/// # Errors
/// The empty server cannot be started.
pub(super) async fn levels(
    http: &reqwest::Client,
    tokens: Arc<Vec<String>>,
    levels: &[usize],
    window: (Duration, Duration),
    args: &super::BenchArgs,
) -> Result<Vec<super::LevelResult>, String> {
    let server = EmptyServer::start().await?;
    let mut args = args.clone();
    args.server_pids = server.pid().into_iter().collect();
    let mode = Arc::new(super::Mode::Introspect {
        tokens,
        label: "empty_handler",
    });
    let servers = [server.base.clone()];
    let mut out = Vec::new();
    for &c in levels {
        let calls = (0..c)
            .map(|_| super::Call {
                url: format!("{}/v1/oauth/introspect", server.base),
                auth: None,
                replica: 0,
            })
            .collect();
        out.push(super::run_level(http, mode.clone(), calls, &servers, window, &args).await);
    }
    Ok(out)
}
