//! A real OpenID Provider for tests: panva's `oidc-provider` (npm), run by Node.js from
//! `testdata/oidc-provider/server.mjs` on a free loopback port, and a driver that signs a test
//! user in through its login (and consent) forms with an HTTP client, as a browser would
//! (`sign_in` for redirect flows, `device_sign_in` for the device authorization grant).
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
    let resp = http.get(start).send().await.expect("http");
    match drive(http, resp, user, Some(stop_at), false).await {
        Ok(url) => url,
        Err(page) => panic!("sign-in did not reach {stop_at}; last page: {page:.400}"),
    }
}

/// What the human does on the provider's device confirmation page (RFC 8628 §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceAnswer {
    /// Confirms the code, then signs in (login, consent).
    Confirm,
    /// Aborts at the confirmation step: the device is refused (`access_denied`).
    Abort,
}

/// Plays the human of a device authorization grant (RFC 8628 §3.3) with a cookie-keeping
/// client: opens `verification_uri`, types `user_code` into the provider's user-code form,
/// then confirms (and signs `user` in through the login and consent forms) or aborts.
/// Returns the provider's last page (its "success" page, or the page after the abort).
///
/// # Panics
/// When a page is neither a redirect nor a provider form before the end, after 20 steps, or
/// on HTTP errors.
pub async fn device_sign_in(
    http: &reqwest::Client,
    verification_uri: &str,
    user_code: &str,
    user: &str,
    answer: DeviceAnswer,
) -> String {
    let page = http.get(verification_uri).send().await.expect("http");
    let url = page.url().clone();
    let body = page.text().await.expect("body");
    let (action, mut fields) =
        parse_form(&body).unwrap_or_else(|| panic!("no user-code form at {url}: {body:.400}"));
    assert!(
        body.contains("name=\"user_code\""),
        "not the user-code form: {body:.400}"
    );
    fields.push(("user_code".into(), user_code.into()));
    let target = url.join(&action).expect("form action");
    let resp = http.post(target).form(&fields).send().await.expect("http");
    // The walk ends on the success page (no form), or back at the user-code form with the
    // provider's message after an abort.
    match drive(http, resp, user, None, answer == DeviceAnswer::Abort).await {
        Ok(url) => panic!("unexpected redirect out of the provider: {url}"),
        Err(page) => page,
    }
}

/// Follows redirects and fills in the provider's forms (login as `user`, consent, the device
/// confirmation — with `abort`, its abort button instead) until a redirect leads to a URL
/// starting with `stop_at` (`Ok`, that URL) or a page has no form, or is the device user-code
/// form again (`Err`, that page).
async fn drive(
    http: &reqwest::Client,
    mut resp: reqwest::Response,
    user: &str,
    stop_at: Option<&str>,
    abort: bool,
) -> Result<String, String> {
    for _ in 0..20 {
        let url = resp.url().clone();
        if resp.status().is_redirection() {
            let loc = resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .expect("redirect location");
            let next = url.join(loc).expect("redirect url").to_string();
            if stop_at.is_some_and(|s| next.starts_with(s)) {
                return Ok(next);
            }
            resp = http.get(&next).send().await.expect("http");
            continue;
        }
        let status = resp.status();
        let body = resp.text().await.expect("body");
        let form = parse_form(&body).filter(|_| !body.contains("op.deviceInputForm"));
        let Some((action, mut fields)) = form else {
            return Err(format!("page {url} ({status}): {body}"));
        };
        if body.contains("name=\"login\"") {
            fields.push(("login".into(), user.into()));
            fields.push(("password".into(), "any password".into()));
        }
        if abort && fields.iter().any(|(k, _)| k == "confirm") {
            fields.retain(|(k, _)| k != "confirm");
            fields.push(("abort".into(), "yes".into()));
        }
        let target = url.join(&action).expect("form action");
        resp = http.post(target).form(&fields).send().await.expect("http");
    }
    panic!("the provider's pages did not end within 20 steps");
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
