//! A real OpenID Provider for tests: panva's `oidc-provider` (npm), run by Node.js from
//! `testdata/oidc-provider/server.mjs` on a free loopback port, and a driver that signs a test
//! user in through its login (and consent) forms with an HTTP client, as a browser would.
//!
//! Users and groups (any password): `alice` (none), `bob` and `dave` (`prod-approvers`),
//! `carol` (`latch-admins`), `erin` (both). Clients: `latch-console` (confidential, code flow +
//! PKCE) and `latch-cli` (public native client: loopback redirect with PKCE, device
//! authorization grant, refresh tokens). See the script's header for the details.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// Secret of the `latch-console` client in tests.
pub const CONSOLE_CLIENT_SECRET: &str = "console-secret-for-tests";

/// The provider's directory (`testdata/oidc-provider` at the workspace root).
pub fn provider_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/oidc-provider")
}

/// A running `oidc-provider`; stopped (killed) on drop.
pub struct OidcProvider {
    child: Child,
    /// Its issuer URL, `http://127.0.0.1:<port>`.
    pub issuer: String,
}

/// A free loopback port (bound once, then released; another process could take it meanwhile,
/// which on a test machine does not happen in practice).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Whether Node.js and the installed provider (`npm ci` in its directory) are there. Missing:
/// under `CI=true` this panics; otherwise it prints a loud warning and returns false.
pub fn provider_available() -> bool {
    let node = crate::tool_available("node", &["--version"]);
    if !node {
        return false;
    }
    let installed = provider_dir()
        .join("node_modules/oidc-provider/package.json")
        .exists();
    if !installed {
        let msg =
            "testdata/oidc-provider is not installed (run `npm ci` there, as scripts/test.sh does)";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{msg}, and CI=true: this test needs it");
        }
        eprintln!("\n!!!!! SKIPPING: {msg} !!!!!\n");
    }
    installed
}

impl OidcProvider {
    /// Starts the provider with `redirect_uris` for `latch-console` and `resource` as the
    /// RFC 8707 resource whose access tokens are JWTs; waits until it prints its issuer.
    pub fn start(redirect_uris: &[String], resource: &str) -> Self {
        let mut child = Command::new("node")
            .arg("server.mjs")
            .arg("0")
            .current_dir(provider_dir())
            .env("LATCH_CONSOLE_REDIRECT_URI", redirect_uris.join(","))
            .env("LATCH_CONSOLE_SECRET", CONSOLE_CLIENT_SECRET)
            .env("LATCH_RESOURCE", resource)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start node testdata/oidc-provider/server.mjs");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let issuer = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(i) = line.strip_prefix("issuer=") {
                        break i.trim().to_owned();
                    }
                }
                _ => {
                    let _ = child.kill();
                    panic!("oidc-provider exited before printing its issuer");
                }
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self { child, issuer }
    }

    /// The `[[issuers]]` entry for this provider as Latch's human issuer named `name`, whose
    /// tokens (console ID tokens and CLI access tokens) are RS256 with `groups`.
    pub fn issuer_toml(&self, name: &str, audience: &str) -> String {
        format!(
            "\n[[issuers]]\nname = \"{name}\"\nissuer = \"{}\"\nkind = \"human\"\naudience = \"{audience}\"\n\
             algorithms = [\"RS256\"]\njwks = {{ discovery = true }}\ngroups_claim = \"groups\"\n",
            self.issuer
        )
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A browser-like HTTP client: a cookie jar, redirects not followed (the driver follows them
/// so it can stop at the relying party's callback).
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client")
}

/// Follows redirects from `start` (a URL at the relying party or the provider) and fills in
/// the provider's forms as `user` (login: any password; consent: continue) until a redirect
/// leads to a URL starting with `stop_at`; returns that URL (e.g. the callback with `code`
/// and `state`), not fetched.
///
/// # Panics
/// When a page is neither a redirect nor a provider form, after 20 steps, or on HTTP errors.
pub async fn sign_in(http: &reqwest::Client, start: &str, user: &str, stop_at: &str) -> String {
    let mut resp = http.get(start).send().await.expect("http");
    for _ in 0..20 {
        let url = resp.url().clone();
        if resp.status().is_redirection() {
            let loc = resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .expect("redirect location");
            let next = url.join(loc).expect("redirect url").to_string();
            if next.starts_with(stop_at) {
                return next;
            }
            resp = http.get(&next).send().await.expect("http");
            continue;
        }
        let status = resp.status();
        let body = resp.text().await.expect("body");
        let (action, mut fields) = parse_form(&body)
            .unwrap_or_else(|| panic!("page {url} ({status}) has no form: {body:.400}"));
        if body.contains("name=\"login\"") {
            fields.push(("login".into(), user.into()));
            fields.push(("password".into(), "any password".into()));
        }
        let target = url.join(&action).expect("form action");
        resp = http.post(target).form(&fields).send().await.expect("http");
    }
    panic!("sign-in did not reach {stop_at}");
}

/// The first form's action and its hidden inputs.
fn parse_form(html: &str) -> Option<(String, Vec<(String, String)>)> {
    let form_re = regex::Regex::new(r#"(?s)<form[^>]*action="([^"]*)"[^>]*>(.*?)</form>"#).ok()?;
    let input_re =
        regex::Regex::new(r#"<input type="hidden" name="([^"]+)" value="([^"]*)"\s*/?>"#).ok()?;
    let caps = form_re.captures(html)?;
    let action = caps.get(1)?.as_str().replace("&amp;", "&");
    let inner = caps.get(2)?.as_str();
    let fields = input_re
        .captures_iter(inner)
        .filter_map(|c| Some((c.get(1)?.as_str().to_owned(), c.get(2)?.as_str().to_owned())))
        .collect();
    Some((action, fields))
}
