//! The processes under test (`latch serve`, `latch mcp`) and an HTTP client that records every
//! answer and collects every secret delivered.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use latch_server::examples::DEMO_CLIENT_ID;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};

/// The MCP protocol version the test speaks.
pub const MCP_VERSION: &str = "2025-06-18";

/// `latch serve` at `LATCH_LOG=trace`, stdout and stderr into one file; killed on drop.
pub struct Broker {
    child: Child,
    pub base: String,
    pub log: PathBuf,
}

impl Broker {
    pub fn spawn(dir: &Path, config: &Path) -> Self {
        let log = dir.join("serve.log");
        let out = File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_latch"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("LATCH_LOG", "trace")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn latch serve");
        let start = Instant::now();
        let base = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let serving = text
                .lines()
                .filter(|l| l.contains("latch is serving"))
                .find_map(|l| serde_json::from_str::<Value>(l).ok());
            if let Some(v) = serving {
                break format!("http://{}", v["fields"]["addr"].as_str().unwrap());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "latch serve did not start:\n{}",
                text.lines().rev().take(5).collect::<Vec<_>>().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Self { child, base, log }
    }

    /// SIGTERM (a graceful shutdown, so every line is written), then waits.
    pub fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(15) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `latch mcp` at `LATCH_LOG=trace` (stderr into a file), spoken to one JSON line at a time.
pub struct McpStdio {
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    stdout: Lines<BufReader<tokio::process::ChildStdout>>,
    next_id: u64,
}

impl McpStdio {
    pub fn spawn(base: &str, token: &str, log: &Path) -> Self {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_latch"))
            .arg("mcp")
            .env("LATCH_SERVER", base)
            .env("LATCH_TOKEN", token)
            .env("LATCH_LOG", "trace")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(File::create(log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn latch mcp");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Self {
            child,
            stdin,
            stdout,
            next_id: 1,
        }
    }

    pub async fn send(&mut self, msg: &Value) {
        let w = self.stdin.as_mut().unwrap();
        w.write_all(format!("{msg}\n").as_bytes()).await.unwrap();
        w.flush().await.unwrap();
    }

    /// Sends a request and returns the answer with its id (skipping anything else).
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        loop {
            let line = tokio::time::timeout(Duration::from_secs(20), self.stdout.next_line())
                .await
                .expect("latch mcp answers")
                .unwrap()
                .expect("latch mcp closed stdout");
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["id"] == id {
                return v;
            }
        }
    }

    /// Closes stdin (the client goes away) and waits for the process to end.
    pub async fn finish(mut self) {
        drop(self.stdin.take());
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// What the flow collected: the secrets handed out, and everything else the broker answered.
#[derive(Default)]
pub struct Seen {
    /// (what, value) of every credential and identity token handed out.
    pub secrets: Vec<(String, String)>,
    /// (where, text) of every answer that is not a delivery, error bodies included.
    pub said: Vec<(String, String)>,
}

impl Seen {
    pub fn secret(&mut self, what: &str, value: &str) {
        assert!(!value.is_empty(), "{what}: empty secret");
        self.secrets.push((what.to_owned(), value.to_owned()));
    }

    /// Collects the secrets of a delivery (REST grant, renewal or claim, token exchange, dev
    /// token, MCP tool result).
    pub fn harvest(&mut self, what: &str, v: &Value) {
        let mut n = 0;
        for (key, val) in [
            ("credential", &v["credential"]["value"]),
            ("access_token", &v["access_token"]),
            ("token", &v["token"]),
        ] {
            if let Some(s) = val.as_str() {
                self.secret(&format!("{what} {key}"), s);
                n += 1;
            }
        }
        assert!(n > 0, "{what}: nothing delivered in {v}");
    }

    pub fn record(&mut self, place: String, text: String) {
        self.said.push((place, text));
    }
}

/// The broker's HTTP API; every answer lands in [`Seen`].
pub struct Api {
    http: reqwest::Client,
    pub base: String,
    pub seen: Mutex<Seen>,
}

impl Api {
    pub fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.to_owned(),
            seen: Mutex::default(),
        }
    }

    pub fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap()
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> (u16, Value, String) {
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()));
        (status, v, text)
    }

    fn rb(&self, path: &str, token: Option<&str>, body: Option<&Value>) -> reqwest::RequestBuilder {
        let url = format!("{}{path}", self.base);
        let mut rb = match body {
            Some(b) => self.http.post(url).json(b),
            None => self.http.get(url),
        };
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        rb
    }

    async fn recorded(&self, what: String, rb: reqwest::RequestBuilder) -> (u16, Value) {
        let (s, v, text) = self.send(rb).await;
        self.seen().record(format!("answer to {what} ({s})"), text);
        (s, v)
    }

    /// `GET path`; the answer must hold no secret.
    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.recorded(format!("GET {path}"), self.rb(path, Some(token), None))
            .await
    }

    /// `POST path` with a JSON body; the answer must hold no secret.
    pub async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.recorded(
            format!("POST {path}"),
            self.rb(path, Some(token), Some(&body)),
        )
        .await
    }

    /// `POST path` delivering secrets (status `want` asserted): harvested, not recorded.
    pub async fn deliver(
        &self,
        what: &str,
        path: &str,
        token: Option<&str>,
        body: Value,
        want: u16,
    ) -> Value {
        let (s, v, _) = self.send(self.rb(path, token, Some(&body))).await;
        assert_eq!(s, want, "{what}: {v}");
        self.seen().harvest(what, &v);
        v
    }

    /// A form post as the example introspection client (with `secret`); recorded.
    pub async fn client_form(
        &self,
        path: &str,
        secret: &str,
        form: &[(&str, &str)],
    ) -> (u16, Value) {
        let rb = self
            .http
            .post(format!("{}{path}", self.base))
            .basic_auth(DEMO_CLIENT_ID, Some(secret))
            .form(form);
        self.recorded(format!("POST {path}"), rb).await
    }

    /// `POST /oauth/token` (RFC 8693): a 200 answer is harvested, any other recorded.
    pub async fn token_exchange(&self, form: &[(&str, &str)]) -> (u16, Value) {
        let rb = self
            .http
            .post(format!("{}/oauth/token", self.base))
            .form(form);
        let (s, v, text) = self.send(rb).await;
        if s == 200 {
            self.seen().harvest("token exchange", &v);
        } else {
            self.seen()
                .record(format!("token exchange error ({s})"), text);
        }
        (s, v)
    }

    /// One JSON-RPC message to `/mcp`; returns status, session id and the JSON answer (plain
    /// or the last `data:` of an SSE stream).
    pub async fn mcp(
        &self,
        token: &str,
        session: Option<&str>,
        msg: Value,
    ) -> (u16, Option<String>, Value) {
        let mut rb = self
            .http
            .post(format!("{}/mcp", self.base))
            .bearer_auth(token)
            .header("Accept", "application/json, text/event-stream")
            .json(&msg);
        if let Some(id) = session {
            rb = rb
                .header("Mcp-Session-Id", id)
                .header("MCP-Protocol-Version", MCP_VERSION);
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let sid = r
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = r.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or_else(|_| {
            text.lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
                .next_back()
                .unwrap_or(Value::Null)
        });
        (status, sid, body)
    }
}
