//! `latch bench`: a load driver for the grant path and for introspection, over HTTP on loopback.
//!
//! Each simulated client mints its own workload token from the development issuer, opens a
//! sandbox task, and then asks for `read` on `ci-cache` in a loop (every call verifies the token,
//! evaluates policy, mints a JWT, writes request, lease and audit durably, and answers 201).
//! Latencies go into an HDR histogram per client; levels run one after the other, each with a
//! warm-up whose calls are not counted. With `--introspect`, about a thousand granted tokens are
//! then introspected (RFC 7662) in a loop at the same concurrency levels.
//!
//! The driver is bounded: loopback servers only, at most [`MAX_CONCURRENCY`] clients, at most
//! [`MAX_DURATION`] per level, at most `--max-requests` counted calls per level.
//!
//! The driver runs on the same machine as the broker and takes part of its CPU; the report
//! shows how much (driver and, with `--server-pid`, server CPU per level).
//!
//! Replicas: `--server` repeated drives several brokers sharing one store at once. Client `k`
//! is set up against, and calls, replica `k mod n`; each level reports the total and, per
//! replica, its calls, rate and latency.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::Serialize;
use serde_json::{Value, json};

pub mod baseline;
mod report;
use report::{one_line, print_table, replica_results, summary};

/// Most concurrent clients one level may use.
pub const MAX_CONCURRENCY: usize = 1024;
/// Longest measured duration (and warm-up) of one level.
pub const MAX_DURATION: Duration = Duration::from_secs(600);
/// How many granted tokens introspection cycles through.
const INTROSPECT_TOKENS: usize = 1000;

const GRANT_BODY: &str = r#"{"resource":"ci-cache","actions":["read"]}"#;
const CLIENT_ID: &str = latch_server::examples::DEMO_CLIENT_ID;
const CLIENT_SECRET: &str = latch_server::examples::DEMO_CLIENT_SECRET;

/// Options of `latch bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// A running broker with the development issuer enabled (loopback only), e.g. one started
    /// with `latch serve --config examples/latch.toml`. Repeat it to drive several replicas of
    /// one store at once (clients are spread over them in turn).
    #[arg(long = "server", default_value = "http://127.0.0.1:8080")]
    servers: Vec<String>,
    /// Concurrency levels (simultaneous clients, each with its own token and task).
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,64")]
    concurrency: Vec<usize>,
    /// Measured duration of each level.
    #[arg(long, default_value = "10s")]
    duration: humantime::Duration,
    /// Warm-up before each level (calls made during it are not counted).
    #[arg(long, default_value = "2s")]
    warmup: humantime::Duration,
    /// Also benchmark introspection (`POST /v1/oauth/introspect`) at the same levels.
    #[arg(long)]
    introspect: bool,
    /// With `--introspect`: also drive an empty axum handler (a child process on loopback, the
    /// same HTTP stack and runtime as the broker) with the same introspection requests at the
    /// same levels, reported as `empty_handler`: the ceiling of HTTP on this machine.
    #[arg(long, requires = "introspect")]
    baseline: bool,
    /// Stop a level after this many counted calls.
    #[arg(long, default_value_t = 5_000_000)]
    max_requests: u64,
    /// Broker process id, to report its CPU time per level (Linux `/proc`); repeat it for
    /// replicas (their CPU is summed).
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

/// Results of one level.
#[derive(Debug, Clone, Serialize)]
pub struct LevelResult {
    /// `grant` or `introspect`.
    pub mode: &'static str,
    /// Simultaneous clients.
    pub concurrency: usize,
    /// Successful calls counted (201 for grants, 200 `active:true` for introspection).
    pub requests: u64,
    /// Counted calls that failed (other status, inactive token, transport error).
    pub errors: u64,
    /// Measured wall time, seconds.
    pub seconds: f64,
    /// Successful calls per second.
    pub rate_per_sec: f64,
    /// Latency of successful calls, milliseconds.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Maximum, ms.
    pub max_ms: f64,
    /// Mean, ms.
    pub mean_ms: f64,
    /// CPU seconds the driver used per measured second (of 1 core).
    pub driver_cpu: Option<f64>,
    /// CPU seconds the broker used per measured second, with `--server-pid`.
    pub server_cpu: Option<f64>,
    /// Broker CPU microseconds per successful call, with `--server-pid`.
    pub server_cpu_us_per_call: Option<f64>,
    /// First error seen, if any.
    pub first_error: Option<String>,
    /// Per replica, when more than one `--server` was driven (in `--server` order).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<ReplicaResult>,
}

/// One replica's share of a level.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaResult {
    /// Its base URL.
    pub server: String,
    /// Successful calls counted.
    pub requests: u64,
    /// Counted calls that failed.
    pub errors: u64,
    /// Successful calls per second.
    pub rate_per_sec: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
}

/// Runs the benchmark; returns the process exit code (0, or 1 when a level had errors).
///
/// # Errors
/// Bad options, a non-loopback server, or a broker that cannot be set up against.
pub async fn run(args: BenchArgs) -> Result<u8, String> {
    let (servers, levels, warmup, duration) = check_args(&args)?;
    let max_c = levels.iter().copied().max().unwrap_or(1);
    let http = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(max_c + 16)
        .pool_idle_timeout(Duration::from_secs(90))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("http client: {e}"))?;

    for base in &servers {
        let health = http
            .get(format!("{base}/healthz"))
            .send()
            .await
            .map_err(|e| format!("cannot reach {base}: {e} (start one with `latch serve`)"))?;
        if !health.status().is_success() {
            return Err(format!("{base}/healthz answered {}", health.status()));
        }
    }

    let log = |m: String| {
        if !args.json {
            eprintln!("{m}");
        }
    };
    log(format!(
        "latch bench: {}, levels {levels:?}, {}s per level after {}s warm-up{}",
        servers.join(" + "),
        duration.as_secs_f64(),
        warmup.as_secs_f64(),
        if args.introspect {
            ", then introspection"
        } else {
            ""
        }
    ));
    log(format!(
        "setting up {max_c} clients (token + sandbox task each)…"
    ));
    let clients = setup_clients(&http, &servers, max_c).await?;

    let mut results = Vec::new();
    let grant = Arc::new(Mode::Grant { body: GRANT_BODY });
    for &c in &levels {
        log(format!("grant, {c} clients…"));
        let specs: Vec<Call> = clients[..c]
            .iter()
            .map(|cl| Call {
                url: format!("{}/v1/tasks/{}/requests", cl.base, cl.task_id),
                auth: Some(cl.auth.clone()),
                replica: cl.replica,
            })
            .collect();
        let r = run_level(
            &http,
            grant.clone(),
            specs,
            &servers,
            (warmup, duration),
            &args,
        )
        .await;
        log(format!("  {}", one_line(&r)));
        results.push(r);
    }

    if args.introspect {
        log(format!(
            "collecting {INTROSPECT_TOKENS} granted tokens for introspection…"
        ));
        let tokens = collect_tokens(&http, &clients, INTROSPECT_TOKENS).await?;
        let mode = Arc::new(Mode::Introspect {
            tokens: tokens.clone(),
            label: "introspect",
        });
        for &c in &levels {
            log(format!("introspect, {c} clients…"));
            let specs: Vec<Call> = (0..c)
                .map(|i| Call {
                    url: format!("{}/v1/oauth/introspect", servers[i % servers.len()]),
                    auth: None,
                    replica: i % servers.len(),
                })
                .collect();
            let r = run_level(
                &http,
                mode.clone(),
                specs,
                &servers,
                (warmup, duration),
                &args,
            )
            .await;
            log(format!("  {}", one_line(&r)));
            results.push(r);
        }
        if args.baseline {
            log("empty axum handler (the ceiling of HTTP here), same requests…".to_owned());
            let base = baseline::levels(&http, tokens, &levels, (warmup, duration), &args).await?;
            for r in &base {
                log(format!("  c={}: {}", r.concurrency, one_line(r)));
            }
            results.extend(base);
        }
    }

    let errors: u64 = results.iter().map(|r| r.errors).sum();
    print_results(&servers, &results, (warmup, duration), args.json);
    Ok(if errors > 0 { 1 } else { 0 })
}

/// Checks the options: loopback servers, levels, durations. Answers the servers (base URLs),
/// the levels, the warm-up and the measured duration.
fn check_args(args: &BenchArgs) -> Result<(Vec<String>, Vec<usize>, Duration, Duration), String> {
    let servers = args
        .servers
        .iter()
        .map(|s| check_server(s))
        .collect::<Result<Vec<_>, _>>()?;
    if servers.is_empty() {
        return Err("--server is required".into());
    }
    let mut levels = args.concurrency.clone();
    levels.retain(|&c| c > 0);
    if levels.is_empty() {
        return Err("--concurrency needs at least one level above 0".into());
    }
    if let Some(&c) = levels.iter().find(|&&c| c > MAX_CONCURRENCY) {
        return Err(format!(
            "--concurrency {c} is above the limit of {MAX_CONCURRENCY}"
        ));
    }
    let duration: Duration = args.duration.into();
    let warmup: Duration = args.warmup.into();
    if duration.is_zero() || duration > MAX_DURATION || warmup > MAX_DURATION {
        return Err(format!(
            "--duration must be above 0 and, like --warmup, at most {}s",
            MAX_DURATION.as_secs()
        ));
    }
    Ok((servers, levels, warmup, duration))
}

/// Prints the results: one JSON document with `json`, else the table and the summary.
fn print_results(
    servers: &[String],
    results: &[LevelResult],
    (warmup, duration): (Duration, Duration),
    json: bool,
) {
    if json {
        let doc = json!({
            "server": servers.first(),
            "servers": servers,
            "duration_secs": duration.as_secs_f64(),
            "warmup_secs": warmup.as_secs_f64(),
            "cores": online_cpus(),
            "note": "driver and broker share this machine's cores",
            "levels": results,
            "summary": summary(results),
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        print_table(results);
        println!(
            "note: the driver and the broker share this machine's {} core(s); `drv cpu` and \
             `srv cpu` are cores used (1.0 = one core), `srv µs/op` broker CPU per call",
            online_cpus()
        );
        println!("{}", summary(results));
    }
}

/// CPUs of the machine (not only those this process may run on).
fn online_cpus() -> usize {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.lines().filter(|l| l.starts_with("processor")).count())
        .ok()
        .filter(|&n| n > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0)
        })
}

/// Accepts `http://` URLs whose host is loopback (`localhost`, 127.0.0.0/8, `::1`).
fn check_server(url: &str) -> Result<String, String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("--server {url}: {e}"))?;
    if u.scheme() != "http" {
        return Err("--server must be an http:// URL on loopback".into());
    }
    let host = u.host_str().unwrap_or("");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(format!(
            "--server {url}: the benchmark only drives a broker on loopback"
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// One prepared client: its bearer header and task, on replica `replica` at `base`.
struct Prepared {
    auth: HeaderValue,
    task_id: String,
    base: String,
    replica: usize,
}

async fn post_json(
    http: &reqwest::Client,
    url: &str,
    auth: Option<&HeaderValue>,
    body: &Value,
) -> Result<(u16, Value), String> {
    let mut rb = http.post(url).json(body);
    if let Some(a) = auth {
        rb = rb.header(AUTHORIZATION, a.clone());
    }
    let resp = rb.send().await.map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(|e| format!("{url}: {e}"))?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

fn api_error(what: &str, status: u16, body: &Value) -> String {
    let e = &body["error"];
    format!(
        "{what}: http {status} {} {}",
        e["code"].as_str().unwrap_or(""),
        e["message"].as_str().unwrap_or("")
    )
}

async fn setup_one(
    http: &reqwest::Client,
    base: &str,
    replica: usize,
    n: usize,
) -> Result<Prepared, String> {
    let run_id = format!("bench-{}-{n}", uuid::Uuid::new_v4().simple());
    let (st, b) = post_json(
        http,
        &format!("{base}/v1/dev/tokens"),
        None,
        &json!({"kind": "workload", "repository": "acme/payments-api",
                "git_ref": "refs/heads/main", "run_id": run_id, "ttl_secs": 3600}),
    )
    .await?;
    if st != 200 {
        return Err(api_error("dev token (is [dev_issuer] enabled?)", st, &b));
    }
    let token = b["token"].as_str().ok_or("dev token: no token")?;
    let auth = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| "dev token: not a header value".to_string())?;
    let (st, b) = post_json(
        http,
        &format!("{base}/v1/tasks"),
        Some(&auth),
        &json!({"purpose": "bench", "environment": "sandbox", "ttl_secs": 28800}),
    )
    .await?;
    if st != 201 {
        return Err(api_error("open task", st, &b));
    }
    let task_id = b["id"].as_str().ok_or("open task: no id")?.to_owned();
    Ok(Prepared {
        auth,
        task_id,
        base: base.to_owned(),
        replica,
    })
}

async fn setup_clients(
    http: &reqwest::Client,
    servers: &[String],
    n: usize,
) -> Result<Vec<Prepared>, String> {
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        let batch: Vec<_> = (i..n.min(i + 16))
            .map(|k| {
                let http = http.clone();
                let replica = k % servers.len();
                let base = servers[replica].clone();
                tokio::spawn(async move { setup_one(&http, &base, replica, k).await })
            })
            .collect();
        for h in batch {
            out.push(h.await.map_err(|e| e.to_string())??);
        }
        i += 16;
    }
    Ok(out)
}

/// Grants `n` credentials across the clients and returns their token values.
async fn collect_tokens(
    http: &reqwest::Client,
    clients: &[Prepared],
    n: usize,
) -> Result<Arc<Vec<String>>, String> {
    let body: Value = serde_json::from_str(GRANT_BODY).unwrap_or(Value::Null);
    let lanes = clients.len().min(8);
    let per = n.div_ceil(lanes);
    let mut handles = Vec::new();
    for c in clients.iter().take(lanes) {
        let http = http.clone();
        let url = format!("{}/v1/tasks/{}/requests", c.base, c.task_id);
        let auth = c.auth.clone();
        let body = body.clone();
        handles.push(tokio::spawn(async move {
            let mut got = Vec::with_capacity(per);
            for _ in 0..per {
                let (st, b) = post_json(&http, &url, Some(&auth), &body).await?;
                if st != 201 {
                    return Err(api_error("grant", st, &b));
                }
                match b["credential"]["value"].as_str() {
                    Some(v) => got.push(v.to_owned()),
                    None => return Err("grant: no credential value".to_string()),
                }
            }
            Ok::<_, String>(got)
        }));
    }
    let mut all = Vec::with_capacity(n);
    for h in handles {
        all.extend(h.await.map_err(|e| e.to_string())??);
    }
    all.truncate(n);
    Ok(Arc::new(all))
}

/// What a level calls.
enum Mode {
    Grant {
        body: &'static str,
    },
    Introspect {
        tokens: Arc<Vec<String>>,
        /// `introspect`, or `empty_handler` for `--baseline`.
        label: &'static str,
    },
}

impl Mode {
    fn name(&self) -> &'static str {
        match self {
            Mode::Grant { .. } => "grant",
            Mode::Introspect { label, .. } => label,
        }
    }
}

/// Per-worker URL and bearer authorization (introspection uses HTTP Basic client credentials),
/// and the replica (index of `--server`) it calls.
struct Call {
    url: String,
    auth: Option<HeaderValue>,
    replica: usize,
}

#[derive(Default)]
struct WorkerOut {
    replica: usize,
    hist: Option<Histogram<u64>>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    last_done: Option<Instant>,
}

#[expect(
    clippy::expect_used,
    reason = "constant bounds hdrhistogram accepts (1 <= low, high >= 2 * low, sigfig <= 5)"
)]
fn new_hist() -> Histogram<u64> {
    // Microseconds, 1 µs to 60 s, 3 significant figures.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

#[expect(
    clippy::too_many_arguments,
    reason = "one worker's whole configuration; a struct would only be built to be taken apart"
)]
async fn worker(
    http: reqwest::Client,
    mode: Arc<Mode>,
    call: Call,
    index: usize,
    concurrency: usize,
    measure_start: Instant,
    end: Instant,
    counted: Arc<AtomicU64>,
    max_requests: u64,
) -> WorkerOut {
    let mut out = WorkerOut {
        replica: call.replica,
        ..WorkerOut::default()
    };
    let mut hist = new_hist();
    // Worker i introspects tokens i, i + c, i + 2c, … (c = concurrency), cycling.
    let mut k = index;
    let mut consecutive_transport_errors = 0u32;
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        let rb = match &*mode {
            Mode::Grant { body } => {
                let rb = http
                    .post(&call.url)
                    .header(CONTENT_TYPE, "application/json")
                    .body(*body);
                match &call.auth {
                    Some(a) => rb.header(AUTHORIZATION, a.clone()),
                    None => rb,
                }
            }
            Mode::Introspect { tokens, .. } if !tokens.is_empty() => {
                let body = format!("token={}", tokens[k % tokens.len()]);
                k = k.wrapping_add(concurrency);
                http.post(&call.url)
                    .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
                    .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(body)
            }
            Mode::Introspect { .. } => {
                out.errors += 1;
                out.first_error
                    .get_or_insert_with(|| "no tokens to introspect".into());
                break;
            }
        };
        let r = async {
            let resp = rb.send().await.map_err(|e| format!("transport: {e}"))?;
            let status = resp.status().as_u16();
            let body = resp.bytes().await.map_err(|e| format!("transport: {e}"))?;
            Ok::<_, String>((status, body))
        }
        .await;
        let dt = t0.elapsed();
        let measured = t0 >= measure_start;
        let verdict = match (&r, &*mode) {
            (Ok((201, _)), Mode::Grant { .. }) => Ok(()),
            (Ok((200, b)), Mode::Introspect { .. }) => {
                if memfind(b, b"\"active\":true") {
                    Ok(())
                } else {
                    Err("introspection answered active:false".to_string())
                }
            }
            (Ok((st, b)), _) => Err(format!(
                "http {st}: {}",
                String::from_utf8_lossy(&b[..b.len().min(200)])
            )),
            (Err(e), _) => Err(e.clone()),
        };
        match verdict {
            Ok(()) => {
                consecutive_transport_errors = 0;
                if measured {
                    hist.saturating_record(dt.as_micros().max(1) as u64);
                    out.ok += 1;
                }
            }
            Err(e) => {
                if measured {
                    out.errors += 1;
                    out.first_error.get_or_insert(e);
                }
                if r.is_err() {
                    consecutive_transport_errors += 1;
                    if consecutive_transport_errors > 100 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        if measured {
            out.last_done = Some(Instant::now());
            if counted.fetch_add(1, Ordering::Relaxed) + 1 >= max_requests {
                break;
            }
        }
    }
    out.hist = Some(hist);
    out
}

fn memfind(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// CPU seconds (user + system) of a process, from `/proc/<pid>/stat` (Linux).
fn cpu_secs(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".into(),
    };
    let s = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every mainstream Linux configuration.
    Some((utime + stime) / 100.0)
}

async fn run_level(
    http: &reqwest::Client,
    mode: Arc<Mode>,
    calls: Vec<Call>,
    servers: &[String],
    (warmup, duration): (Duration, Duration),
    args: &BenchArgs,
) -> LevelResult {
    let concurrency = calls.len();
    let start = Instant::now();
    let measure_start = start + warmup;
    let end = measure_start + duration;
    let counted = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = calls
        .into_iter()
        .enumerate()
        .map(|(i, call)| {
            tokio::spawn(worker(
                http.clone(),
                mode.clone(),
                call,
                i,
                concurrency,
                measure_start,
                end,
                counted.clone(),
                args.max_requests,
            ))
        })
        .collect();
    // CPU counters at the start of the measured window.
    tokio::time::sleep_until(measure_start.into()).await;
    let d0 = cpu_secs(None);
    let s0 = servers_cpu(&args.server_pids);
    let mut hist = new_hist();
    let mut per: Vec<(Histogram<u64>, u64, u64)> =
        servers.iter().map(|_| (new_hist(), 0, 0)).collect();
    let (mut ok, mut errors, mut first_error, mut last) = (0, 0, None, measure_start);
    for h in handles {
        match h.await {
            Ok(w) => {
                if let Some(wh) = &w.hist {
                    let _ = hist.add(wh);
                    if let Some(p) = per.get_mut(w.replica) {
                        let _ = p.0.add(wh);
                    }
                }
                if let Some(p) = per.get_mut(w.replica) {
                    p.1 += w.ok;
                    p.2 += w.errors;
                }
                ok += w.ok;
                errors += w.errors;
                if first_error.is_none() {
                    first_error = w.first_error;
                }
                if let Some(t) = w.last_done {
                    last = last.max(t);
                }
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(format!("worker panicked: {e}"));
            }
        }
    }
    let d1 = cpu_secs(None);
    let s1 = servers_cpu(&args.server_pids);
    let secs = last
        .saturating_duration_since(measure_start)
        .as_secs_f64()
        .max(1e-3);
    let ms = |v: u64| v as f64 / 1000.0;
    let q = |p: f64| {
        if hist.is_empty() {
            0.0
        } else {
            ms(hist.value_at_quantile(p))
        }
    };
    let server_cpu = match (s0, s1) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    LevelResult {
        mode: mode.name(),
        concurrency,
        requests: ok,
        errors,
        seconds: secs,
        rate_per_sec: ok as f64 / secs,
        p50_ms: q(0.50),
        p90_ms: q(0.90),
        p99_ms: q(0.99),
        max_ms: if hist.is_empty() { 0.0 } else { ms(hist.max()) },
        mean_ms: if hist.is_empty() {
            0.0
        } else {
            hist.mean() / 1000.0
        },
        driver_cpu: match (d0, d1) {
            (Some(a), Some(b)) => Some((b - a) / secs),
            _ => None,
        },
        server_cpu: server_cpu.map(|c| c / secs),
        server_cpu_us_per_call: server_cpu.filter(|_| ok > 0).map(|c| c * 1e6 / ok as f64),
        first_error,
        replicas: replica_results(servers, &per, secs),
    }
}

/// The broker CPU seconds of every `--server-pid`, summed (`None` without one, or when one
/// cannot be read).
fn servers_cpu(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| cpu_secs(Some(p))).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_servers() {
        assert!(check_server("http://127.0.0.1:8080").is_ok());
        assert!(check_server("http://localhost:8080/").is_ok());
        assert!(check_server("http://[::1]:8080").is_ok());
        assert!(check_server("http://10.0.0.1:8080").is_err());
        assert!(check_server("http://example.com").is_err());
        assert!(check_server("https://127.0.0.1:8080").is_err());
    }

    #[test]
    fn proc_stat_parses() {
        assert!(cpu_secs(None).is_some_and(|s| s >= 0.0));
    }
}
