//! `latch proxy`: a local HTTP proxy for one agent task that injects the task's credential into
//! requests to one configured upstream, so the agent's process never holds the credential.
//!
//! The proxy (run by the harness, with the workload token) asks the broker for access to the
//! resource in the task, keeps the credential in memory, and forwards every request it accepts
//! to `--upstream` with the credential added (`Authorization: Bearer`, another header, or HTTP
//! basic auth). The agent points at it as a base URL (`http://127.0.0.1:8787/v1/…`) or as
//! `HTTP_PROXY` with `http://<upstream host>/…` URLs. Requests for other hosts, and methods or
//! paths outside the resource's `[[proxy.rules]]` (from the broker) or the `--allow` flags, are
//! refused (403). Each call is recorded as a `tool.used`
//! event (method, host, path template, status, bytes, duration; never bodies, headers or
//! secrets). The proxy polls its task and stops serving (fails closed) the moment the task is no
//! longer open, its lease is no longer active, its workload token is refused (401/403), or three
//! checks in a row fail.
//!
//! HTTPS `CONNECT` tunnels are refused: a tunnelled request cannot have a credential injected.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::InvalidHeaderValue;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use clap::Args;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use latch_server::config::{ProxyRule, normalize_path};

use crate::client::Client;

/// Largest request body forwarded (bytes).
const MAX_BODY: usize = 16 << 20;

/// `latch proxy` arguments.
#[derive(Args)]
pub struct ProxyArgs {
    /// The open task the agent works in.
    #[arg(long)]
    pub task: String,
    /// Resource whose credential is injected.
    #[arg(long)]
    pub resource: String,
    /// Actions to ask for.
    #[arg(long, value_delimiter = ',', default_value = "read")]
    pub actions: Vec<String>,
    /// Upstream base URL, e.g. `https://api.internal`.
    #[arg(long)]
    pub upstream: String,
    /// Address to listen on; loopback only unless `--allow-remote`.
    #[arg(long, default_value = "127.0.0.1:8787")]
    pub listen: String,
    /// Allow a non-loopback `--listen` address (anyone who can reach it uses the credential).
    #[arg(long)]
    pub allow_remote: bool,
    /// How to inject: `bearer` (default), `header:<name>`, or `basic:<user>` (credential as the
    /// password).
    #[arg(long, default_value = "bearer")]
    pub inject: String,
    /// Allowed `METHOD:PATH` (repeat); `*` in the path matches the rest, `METHOD` may be `*`.
    /// These narrow the broker's `[[proxy.rules]]` for the resource (a request must pass both).
    /// Default: what the broker allows.
    #[arg(long = "allow")]
    pub allow: Vec<String>,
    /// How often the task's state is checked.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub poll: Duration,
}

enum Inject {
    Bearer,
    Header(HeaderName),
    Basic(String),
}

struct Proxy {
    upstream: reqwest::Url,
    http: reqwest::Client,
    credential: SecretString,
    inject: Inject,
    /// The broker's `[[proxy.rules]]` for the resource (`None`: not restricted by the broker).
    broker_rules: Option<Vec<ProxyRule>>,
    /// The `--allow` flags (may only narrow).
    rules: Vec<ProxyRule>,
    broker: Client,
    task: String,
    lease: String,
    stopped: AtomicBool,
}

/// A path with its variable segments (numbers, UUIDs, long hex or mixed tokens) as `{id}`.
pub fn path_template(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            let digits = seg.bytes().filter(u8::is_ascii_digit).count();
            let variable = !seg.is_empty()
                && (seg.bytes().all(|b| b.is_ascii_digit())
                    || (seg.len() >= 16
                        && seg.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
                    || (seg.len() >= 8 && digits * 3 >= seg.len())
                    || (seg.len() >= 16
                        && digits > 0
                        && seg.bytes().any(|b| b.is_ascii_alphabetic())));
            if variable { "{id}" } else { seg }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

fn deny(status: StatusCode, msg: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": "proxy_refused", "message": msg}})),
    )
        .into_response()
}

async fn record(
    p: &Proxy,
    method: &Method,
    path: &str,
    status: u16,
    bytes: (usize, usize),
    started: Instant,
    outcome: &str,
) {
    let host = p.upstream.host_str().unwrap_or("");
    let template = path_template(path);
    let report = json!({
        "tool": "http",
        "target": format!("{method} {host}{template}"),
        "outcome": outcome,
        "lease_id": p.lease,
        "duration_ms": started.elapsed().as_millis() as u64,
        "attributes": {"method": method.as_str(), "host": host, "path": template, "status": status,
                       "request_bytes": bytes.0, "response_bytes": bytes.1, "via": "latch proxy"},
    });
    match p
        .broker
        .post(&format!("/v1/tasks/{}/events", p.task), &report)
        .await
    {
        Ok(a) if a.ok() => {}
        Ok(a) => eprintln!("latch proxy: tool-use event refused: {}", a.error_line()),
        Err(e) => eprintln!("latch proxy: tool-use event not recorded: {e}"),
    }
}

/// Serves one request: checks it ([`admit`]), injects the credential, forwards it upstream
/// and relays the answer, recording a `tool.used` event.
async fn handle(State(p): State<Arc<Proxy>>, req: Request) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let path = match admit(&p, &method, &uri, started).await {
        Ok(path) => path,
        Err(refused) => return refused,
    };
    let mut url = p.upstream.clone();
    let base = p.upstream.path().trim_end_matches('/');
    url.set_path(&format!("{base}{path}"));
    url.set_query(uri.query());
    let (parts, body) = req.into_parts();
    let body: Bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return deny(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
    };
    let mut headers = end_to_end(&parts.headers, true);
    if inject(&p, &mut headers).is_err() {
        return deny(
            StatusCode::INTERNAL_SERVER_ERROR,
            "credential cannot be sent as a header",
        );
    }
    let req_bytes = body.len();
    let answer = p
        .http
        .request(method.clone(), url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let resp = match answer {
        Ok(r) => r,
        Err(e) => {
            record(&p, &method, &path, 502, (req_bytes, 0), started, "error").await;
            return deny(
                StatusCode::BAD_GATEWAY,
                &format!("upstream unreachable: {}", e.without_url()),
            );
        }
    };
    let status = resp.status();
    let out_headers = end_to_end(resp.headers(), false);
    let bytes = resp.bytes().await.unwrap_or_default();
    let outcome = if status.is_success() || status.is_redirection() {
        "ok"
    } else {
        "error"
    };
    record(
        &p,
        &method,
        &path,
        status.as_u16(),
        (req_bytes, bytes.len()),
        started,
        outcome,
    )
    .await;
    let mut r = Response::new(Body::from(bytes));
    *r.status_mut() = status;
    *r.headers_mut() = out_headers;
    r
}

/// Whether the proxy forwards a request for `method` and `uri`: it is still serving, the request is no `CONNECT`, its
/// path normalises, it is for the upstream host, and the broker's rules and the `--allow`
/// flags both allow it. Answers the normalised path (what rules see and the upstream gets), or
/// the refusal to send (recorded as `denied` when it concerns a path).
async fn admit(
    p: &Proxy,
    method: &Method,
    uri: &axum::http::Uri,
    started: Instant,
) -> Result<String, Response> {
    if p.stopped.load(Ordering::SeqCst) {
        return Err(deny(StatusCode::SERVICE_UNAVAILABLE, "the task has ended"));
    }
    if method == Method::CONNECT {
        return Err(deny(
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT tunnels cannot carry an injected credential; use http:// URLs",
        ));
    }
    // Rules are checked against (and the upstream gets) the normalised path, never the raw one.
    let Some(path) = normalize_path(uri.path()) else {
        record(p, method, "/{refused}", 403, (0, 0), started, "denied").await;
        return Err(deny(
            StatusCode::FORBIDDEN,
            "path refused (encoded slash, backslash or .. above the root)",
        ));
    };
    // Absolute-form (HTTP_PROXY): only the configured upstream host.
    if let Some(auth) = uri.authority()
        && Some(auth.host()) != p.upstream.host_str()
    {
        record(p, method, &path, 403, (0, 0), started, "denied").await;
        return Err(deny(StatusCode::FORBIDDEN, "not the configured upstream"));
    }
    let allowed_by = |rules: &[ProxyRule]| rules.iter().any(|r| r.matches(method.as_str(), &path));
    let broker_ok = p.broker_rules.as_deref().is_none_or(allowed_by);
    let flags_ok = p.rules.is_empty() || allowed_by(&p.rules);
    if !(broker_ok && flags_ok) {
        record(p, method, &path, 403, (0, 0), started, "denied").await;
        return Err(deny(
            StatusCode::FORBIDDEN,
            "method or path not allowed for this resource",
        ));
    }
    Ok(path)
}

/// The end-to-end headers of `from` (hop-by-hop ones dropped); for a request
/// (`drop_authorization`) also without the agent's own `Authorization`: the agent cannot
/// choose the credential.
fn end_to_end(from: &HeaderMap, drop_authorization: bool) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (k, v) in from.iter() {
        let agent_credential = drop_authorization && k == header::AUTHORIZATION;
        if !hop_by_hop(k) && !agent_credential {
            headers.append(k.clone(), v.clone());
        }
    }
    headers
}

/// Adds the credential to `headers` as `--inject` says (marked sensitive).
///
/// # Errors
/// The credential cannot be a header value.
fn inject(p: &Proxy, headers: &mut HeaderMap) -> Result<(), InvalidHeaderValue> {
    let secret = p.credential.expose_secret();
    let (k, mut v) = match &p.inject {
        Inject::Bearer => (
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {secret}"))?,
        ),
        Inject::Header(name) => (name.clone(), HeaderValue::from_str(secret)?),
        Inject::Basic(user) => {
            let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"));
            (
                header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Basic {b}"))?,
            )
        }
    };
    v.set_sensitive(true);
    headers.insert(k, v);
    Ok(())
}

/// Consecutive failed task checks after which the proxy stops serving (fails closed).
const MAX_POLL_FAILURES: u32 = 3;

enum Poll {
    Serving,
    Failed(String),
    Stop(String),
}

/// One check that the proxy may keep serving: its workload token is still accepted, the task is
/// open and the lease whose credential it injects is active.
async fn poll_once(p: &Proxy) -> Poll {
    let t = match p.broker.get(&format!("/v1/tasks/{}", p.task)).await {
        Ok(a) => a,
        Err(e) => return Poll::Failed(e),
    };
    match t.status {
        401 | 403 => return Poll::Stop(format!("workload token refused ({})", t.error_line())),
        404 => return Poll::Stop("task not found".into()),
        _ if !t.ok() => return Poll::Failed(t.error_line()),
        _ if t.body["state"] != "open" => return Poll::Stop("task is no longer open".into()),
        _ => {}
    }
    let l = match p.broker.get(&format!("/v1/tasks/{}/leases", p.task)).await {
        Ok(a) => a,
        Err(e) => return Poll::Failed(e),
    };
    match l.status {
        401 | 403 => Poll::Stop(format!("workload token refused ({})", l.error_line())),
        _ if !l.ok() => Poll::Failed(l.error_line()),
        _ => {
            let active = l.body.as_array().is_some_and(|a| {
                a.iter()
                    .any(|x| x["id"] == p.lease.as_str() && x["state"] == "active")
            });
            if active {
                Poll::Serving
            } else {
                Poll::Stop(format!("lease {} is no longer active", p.lease))
            }
        }
    }
}

/// Runs `latch proxy` until the task ends (exit 0) or an error occurs.
///
/// # Errors
/// Bad arguments, a refused or pending grant, a listen failure.
///
/// # Security
/// The credential lives only in this process (a `SecretString`, never printed); the agent's
/// `Authorization` header is dropped, so it cannot swap credentials.
pub async fn run(args: ProxyArgs, broker: Client) -> Result<(), String> {
    let upstream = reqwest::Url::parse(&args.upstream).map_err(|e| format!("--upstream: {e}"))?;
    if !matches!(upstream.scheme(), "http" | "https") || upstream.host_str().is_none() {
        return Err("--upstream must be an http(s) URL with a host".into());
    }
    let inject = parse_inject(&args.inject)?;
    check_listen(&args).await?;
    let rules = args
        .allow
        .iter()
        .map(|r| ProxyRule::parse(r).map_err(|e| format!("--allow {r:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let broker_rules = broker_rules(&broker, &args.resource).await?;
    let (credential, lease) = grant(&broker, &args, &upstream).await?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("listen {}: {e}", args.listen))?;
    let addr: SocketAddr = listener.local_addr().map_err(|e| e.to_string())?;
    let proxy = Arc::new(Proxy {
        upstream,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?,
        credential,
        inject,
        broker_rules,
        rules,
        broker,
        task: args.task.clone(),
        lease: lease.clone(),
        stopped: AtomicBool::new(false),
    });
    println!(
        "latch proxy listening on http://{addr} for task {} (lease {lease})",
        args.task
    );
    let ended = watch(proxy.clone(), args.poll);
    let app = axum::Router::new().fallback(handle).with_state(proxy);
    axum::serve(listener, app)
        .with_graceful_shutdown(ended)
        .await
        .map_err(|e| e.to_string())
}

/// `--inject`: `bearer`, `header:<name>` or `basic:<user>`.
fn parse_inject(inject: &str) -> Result<Inject, String> {
    Ok(match inject.split_once(':') {
        None if inject == "bearer" => Inject::Bearer,
        Some(("header", name)) => Inject::Header(
            HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("--inject: {e}"))?,
        ),
        Some(("basic", user)) if !user.contains(':') => Inject::Basic(user.to_owned()),
        _ => return Err("--inject must be bearer, header:<name> or basic:<user>".into()),
    })
}

/// Anyone who can reach the proxy acts with the credential: `--listen` must resolve to
/// loopback addresses only, unless `--allow-remote`.
async fn check_listen(args: &ProxyArgs) -> Result<(), String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&args.listen)
        .await
        .map_err(|e| format!("--listen {}: {e}", args.listen))?
        .collect();
    if !args.allow_remote && (addrs.is_empty() || addrs.iter().any(|a| !a.ip().is_loopback())) {
        return Err(format!(
            "--listen {} is not a loopback address; add --allow-remote to expose the proxy",
            args.listen
        ));
    }
    Ok(())
}

/// The broker's `[[proxy.rules]]` for `resource` (`None`: the broker does not restrict it).
async fn broker_rules(broker: &Client, resource: &str) -> Result<Option<Vec<ProxyRule>>, String> {
    let r = broker.get(&format!("/v1/proxy/rules/{resource}")).await?;
    if !r.ok() {
        return Err(format!("cannot read the proxy rules: {}", r.error_line()));
    }
    if r.body["restricted"].as_bool() != Some(true) {
        return Ok(None);
    }
    let rules = r.body["allow"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str())
                .map(|r| {
                    ProxyRule::parse(r).map_err(|e| format!("the broker's proxy rule {r:?}: {e}"))
                })
                .collect()
        })
        .unwrap_or_else(|| Ok(Vec::new()))?;
    Ok(Some(rules))
}

/// Asks for access to the resource in the task; answers the credential and its lease id (a
/// denial or a pending approval is an error).
async fn grant(
    broker: &Client,
    args: &ProxyArgs,
    upstream: &reqwest::Url,
) -> Result<(SecretString, String), String> {
    let a = broker
        .post(
            &format!("/v1/tasks/{}/requests", args.task),
            &json!({"resource": args.resource, "actions": args.actions,
                    "justification": format!("latch proxy to {}", upstream.host_str().unwrap_or(""))}),
        )
        .await?;
    if a.status != 201 {
        return Err(format!("no credential for the proxy: {}", a.error_line()));
    }
    let credential = SecretString::from(
        a.body["credential"]["value"]
            .as_str()
            .ok_or("grant without a credential")?
            .to_owned(),
    );
    let lease = a.body["lease"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Ok((credential, lease))
}

/// Checks the task every `poll`; completes (and marks the proxy stopped) when it must stop
/// serving: at once on a [`Poll::Stop`], after [`MAX_POLL_FAILURES`] failed checks in a row.
async fn watch(watcher: Arc<Proxy>, poll: Duration) {
    let mut failures = 0u32;
    loop {
        tokio::time::sleep(poll).await;
        match poll_once(&watcher).await {
            Poll::Serving => failures = 0,
            Poll::Failed(why) => {
                failures += 1;
                eprintln!(
                    "latch proxy: task check failed ({failures}/{MAX_POLL_FAILURES}): {}",
                    latch_core::audit::escape_text(&why)
                );
                if failures >= MAX_POLL_FAILURES {
                    watcher.stopped.store(true, Ordering::SeqCst);
                    println!(
                        "latch proxy: cannot confirm task {} is open; stopping",
                        watcher.task
                    );
                    return;
                }
            }
            Poll::Stop(why) => {
                watcher.stopped.store(true, Ordering::SeqCst);
                println!(
                    "latch proxy: task {}: {}; stopping",
                    watcher.task,
                    latch_core::audit::escape_text(&why)
                );
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_hide_ids() {
        assert_eq!(path_template("/v1/orders/12345"), "/v1/orders/{id}");
        assert_eq!(
            path_template("/v1/runs/0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b/logs"),
            "/v1/runs/{id}/logs"
        );
        assert_eq!(path_template("/v1/orders"), "/v1/orders");
        assert_eq!(
            path_template("/v1/files/abcdefghijklmnop1qrs"),
            "/v1/files/{id}"
        );
        assert_eq!(
            path_template("/v1/sessions/Zq9xLmRtYuIoPaSd"),
            "/v1/sessions/{id}"
        );
        assert_eq!(path_template("/v1/organizations"), "/v1/organizations");
        assert_eq!(path_template("/"), "/");
    }
}
