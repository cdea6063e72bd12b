//! `latch login`, `whoami`, `logout` against a real OpenID Provider (panva `oidc-provider`):
//! the loopback redirect with PKCE, the device authorization grant (RFC 8628), the stored
//! sign-in (mode 0600), refresh, revocation.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use latch_testkit::oidc::{
    DeviceAnswer, OidcProvider, browser, device_sign_in, provider_available, sign_in,
};
use latch_testkit::{TestOptions, TestServer};
use serde_json::Value;

const RESOURCE: &str = "urn:latch";

fn latch(config_dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_latch"));
    c.env("LATCH_CONFIG_DIR", config_dir)
        .env_remove("LATCH_TOKEN")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("BROWSER");
    c
}

fn run(config_dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = latch(config_dir).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn stored(config_dir: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(config_dir.join("credentials.json")).unwrap()).unwrap()
}

/// Starts `latch login --no-browser` and answers the child and the authorization URL it
/// printed (checked: PKCE S256, `latch-cli`, the resource, `state`, `nonce`, a loopback redirect).
async fn start_login(
    s: &TestServer,
    config_dir: &std::path::Path,
) -> (std::process::Child, String) {
    let mut child = latch(config_dir)
        .args([
            "login",
            "--no-browser",
            "--timeout",
            "60s",
            "--server",
            &s.base,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let url = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stderr).lines().map_while(Result::ok);
        let url = lines.find_map(|l| l.trim().starts_with("http").then(|| l.trim().to_owned()));
        // Keep draining stderr so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        url
    })
    .await
    .unwrap()
    .expect("the sign-in URL on stderr");
    let q = query(&url);
    assert_eq!(q["code_challenge_method"], "S256", "{url}");
    assert_eq!(q["client_id"], "latch-cli");
    assert_eq!(q["resource"], RESOURCE);
    assert!(q.contains_key("state") && q.contains_key("nonce"), "{url}");
    assert!(q["scope"].split(' ').any(|s| s == "openid"), "{url}");
    assert!(
        q["redirect_uri"].starts_with("http://127.0.0.1:"),
        "{}",
        q["redirect_uri"]
    );
    (child, url)
}

fn query(url: &str) -> std::collections::HashMap<String, String> {
    reqwest::Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

async fn finished(child: std::process::Child) -> (i32, String) {
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Sends requests that are not the provider's redirect to the loopback callback: each gets a
/// 400 page saying it was ignored, and the sign-in goes on waiting.
async fn stray_requests(redirect: &str) {
    for stray in [
        redirect.to_owned(),
        format!("{redirect}?code=stolen-or-stale&state=not-this-attempt"),
        format!("{redirect}?code=no-state-at-all"),
        format!("{redirect}?error=access_denied&state=forged"),
        format!("{redirect}?error=access_denied"),
    ] {
        let r = reqwest::get(&stray).await.unwrap();
        assert_eq!(r.status(), 400, "{stray}");
        let body = r.text().await.unwrap();
        assert!(body.contains("ignored"), "{stray}: {body}");
        assert!(!body.contains("Signed in"), "{stray}: {body}");
    }
}

/// Runs `latch login --no-browser`, first sends stray requests to its loopback callback (which
/// must not end the sign-in), then signs `user` in at the provider from the printed URL as a
/// browser would, and lets the provider's redirect reach the CLI's loopback listener; the
/// browser's page says "Signed in" only once the sign-in is complete.
async fn login_as(s: &TestServer, config_dir: &std::path::Path, user: &str) -> (i32, String) {
    let (child, url) = start_login(s, config_dir).await;
    let redirect = query(&url)["redirect_uri"].clone();
    stray_requests(&redirect).await;
    let callback = sign_in(&browser(), &url, user, &redirect).await;
    let r = reqwest::get(&callback).await.unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(
        page.contains(&format!("Signed in to Latch as {user}")),
        "{page}"
    );
    // The redirect has been used: a replay of it ends nothing and shows no success.
    let again = reqwest::get(&callback).await;
    assert!(
        again.as_ref().map_or(true, |r| r.status() != 200),
        "a replayed redirect is not a second success"
    );
    finished(child).await
}

/// The redirect with this attempt's `state` ends the sign-in even when it fails: a code the
/// provider does not know gives a failure page (never "Signed in") and exit 1; so does the
/// provider's `error=` with the matching `state`. Nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latch_login_shows_failure_pages_for_a_failed_sign_in() {
    if !provider_available() {
        return;
    }
    let p = OidcProvider::start(
        &["http://127.0.0.1:9/console/callback".to_owned()],
        RESOURCE,
    );
    let s = TestServer::start_with(TestOptions {
        extra_config: format!(
            "{}\n[login]\nissuer = \"corp\"\nclient_id = \"latch-cli\"\nresource = \"{RESOURCE}\"\n",
            p.issuer_toml("corp", RESOURCE)
        ),
        ..Default::default()
    })
    .await;
    let dir = tempfile_dir().join("latch");

    let (child, url) = start_login(&s, &dir).await;
    let q = query(&url);
    stray_requests(&q["redirect_uri"]).await;
    let forged = format!(
        "{}?code=made-up-code&state={}",
        q["redirect_uri"], q["state"]
    );
    let r = reqwest::get(&forged).await.unwrap();
    assert_eq!(r.status(), 400);
    let page = r.text().await.unwrap();
    assert!(page.contains("The sign-in failed"), "{page}");
    assert!(!page.contains("Signed in"), "{page}");
    let (code, out) = finished(child).await;
    assert_eq!(code, 1, "{out}");
    assert!(!dir.join("credentials.json").exists());

    let (child, url) = start_login(&s, &dir).await;
    let q = query(&url);
    let refused = format!(
        "{}?error=access_denied&error_description=no&state={}",
        q["redirect_uri"], q["state"]
    );
    let r = reqwest::get(&refused).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("refused"));
    let (code, _) = finished(child).await;
    assert_eq!(code, 1);
    assert!(!dir.join("credentials.json").exists());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latch_login_signs_a_human_in_through_a_real_provider() {
    if !provider_available() {
        return;
    }
    let p = OidcProvider::start(
        &["http://127.0.0.1:9/console/callback".to_owned()],
        RESOURCE,
    );
    let s = TestServer::start_with(TestOptions {
        extra_config: format!(
            "{}\n[login]\nissuer = \"corp\"\nclient_id = \"latch-cli\"\nresource = \"{RESOURCE}\"\n",
            p.issuer_toml("corp", RESOURCE)
        ),
        ..Default::default()
    })
    .await;
    let home = tempfile_dir();
    let dir = home.join("latch");

    // Not signed in: whoami says what to do.
    let (code, _, err) = run(&dir, &["whoami", "--server", &s.base]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("latch login"), "{err}");

    let (code, out) = login_as(&s, &dir, "bob").await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("as bob (groups: prod-approvers)"), "{out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("credentials.json")), 0o600);
    }
    let first = stored(&dir)["logins"][&s.base].clone();
    assert_eq!(first["subject"], "bob");
    assert!(
        first["refresh_token"].is_string(),
        "offline_access gives a refresh token"
    );

    // The stored sign-in is a human token the broker verifies: whoami and pending use it.
    let (code, out, err) = run(&dir, &["whoami", "--server", &s.base]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("human bob (groups: prod-approvers)"),
        "{out}"
    );
    let (code, out, err) = run(&dir, &["pending", "--json", "--server", &s.base]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        Value::Array(vec![])
    );

    // Near expiry the access token is refreshed (RFC 6749 §6) and stored again.
    let mut file = stored(&dir);
    file["logins"][&s.base]["expires_at_unix_secs"] = Value::from(1);
    write_private(&dir.join("credentials.json"), &file);
    let (code, out, err) = run(&dir, &["whoami", "--json", "--server", &s.base]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["id"], "bob");
    let refreshed = stored(&dir)["logins"][&s.base].clone();
    assert_ne!(refreshed["access_token"], first["access_token"]);
    assert!(refreshed["expires_at_unix_secs"].as_i64().unwrap() > 1);

    // A vote with groups older than `[approvals] authority_max_age` is answered `401
    // insufficient_user_authentication` (RFC 9470): the CLI refreshes the sign-in once and
    // sends again. (The broker's clock runs ahead of the provider's here, so the refreshed
    // token is still too old for it, and the refusal is what the user finally sees.)
    let agent = s.agent("login-fresh").await;
    let task = s.open_task(&agent, "production", 3600).await;
    let p = s
        .request(&agent, &task, "deploy-pipeline", &["deploy"], Some(600))
        .await;
    let rid = p.body["request"]["id"].as_str().unwrap().to_owned();
    let digest = p.body["request"]["digest"].as_str().unwrap().to_owned();
    s.clock.advance(11 * 60);
    let before = stored(&dir)["logins"][&s.base]["access_token"].clone();
    let (code, _, err) = run(
        &dir,
        &[
            "approve", &rid, "--digest", &digest, "--reason", "ok", "--server", &s.base,
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("insufficient_user_authentication (401)"),
        "{err}"
    );
    let after = stored(&dir)["logins"][&s.base]["access_token"].clone();
    assert_ne!(
        before, after,
        "the CLI refreshed the sign-in before giving up"
    );
    let refreshed = stored(&dir)["logins"][&s.base].clone();

    // A credentials file others can read is refused, as OpenSSH refuses such keys.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let f = dir.join("credentials.json");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (code, _, err) = run(&dir, &["whoami", "--server", &s.base]);
        assert_eq!(code, 1);
        assert!(err.contains("readable by others"), "{err}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    // Logout forgets it and revokes the refresh token at the provider (RFC 7009).
    let (code, out, logout_err) = run(&dir, &["logout", "--server", &s.base]);
    assert_eq!(code, 0, "{logout_err}");
    assert!(out.contains("Signed out"), "{out}");
    assert!(stored(&dir)["logins"].get(&s.base).is_none());
    let token_endpoint = refreshed["token_endpoint"].as_str().unwrap();
    let r = reqwest::Client::new()
        .post(token_endpoint)
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", "latch-cli"),
            (
                "refresh_token",
                refreshed["refresh_token"].as_str().unwrap(),
            ),
            ("resource", RESOURCE),
        ])
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(
        status, 400,
        "the revoked refresh token is dead: {body} (logout: {logout_err})"
    );
    let (code, _, err) = run(&dir, &["whoami", "--server", &s.base]);
    assert_eq!(code, 1);
    assert!(err.contains("latch login"), "{err}");
    s.stop().await;
}

/// `latch login --device` running as a child: its stderr, collected as it comes, and where
/// it sends the human (the verification URI, without the code) and the user code it prints.
struct DeviceLogin {
    child: std::process::Child,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    collector: std::thread::JoinHandle<()>,
    verification_uri: String,
    user_code: String,
}

impl DeviceLogin {
    /// Waits for `latch login` to exit and for its stderr to be read to the end (the collector
    /// thread sees EOF once the child is gone), so the last error line is never missed.
    async fn finish(self) -> (i32, String, String) {
        let (code, out) = finished(self.child).await;
        let collector = self.collector;
        tokio::task::spawn_blocking(move || collector.join().unwrap())
            .await
            .unwrap();
        let err = self.stderr.lock().unwrap().clone();
        (code, out, err)
    }
}

/// Starts `latch login --device` and reads the verification URI and user code it prints
/// (RFC 8628 §3.3: "open URI and check/enter the code").
async fn start_device_login(s: &TestServer, config_dir: &std::path::Path) -> DeviceLogin {
    let mut child = latch(config_dir)
        .args(["login", "--device", "--server", &s.base])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let keep = seen.clone();
    let (uri, code, collector) = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stderr).lines().map_while(Result::ok);
        let (mut uri, mut code) = (None, None);
        for l in lines.by_ref() {
            keep.lock().unwrap().push_str(&format!("{l}\n"));
            let t = l.trim();
            if t.starts_with("http") {
                uri = Some(t.to_owned());
            }
            if let Some((_, c)) = t.split_once("the code ") {
                code = Some(c.trim().to_owned());
                break;
            }
        }
        // Keep collecting stderr so the child never blocks on a full pipe.
        let collector = std::thread::spawn(move || {
            for l in lines {
                keep.lock().unwrap().push_str(&format!("{l}\n"));
            }
        });
        (uri, code, collector)
    })
    .await
    .unwrap();
    let printed = seen.lock().unwrap().clone();
    let uri = uri.unwrap_or_else(|| panic!("no verification URI on stderr: {printed}"));
    let user_code = code.unwrap_or_else(|| panic!("no user code on stderr: {printed}"));
    // The provider gives `verification_uri_complete`; the human here uses the plain URI and
    // types the code, as one on another device would.
    let mut url = reqwest::Url::parse(&uri).unwrap();
    assert!(
        url.query_pairs()
            .any(|(k, v)| k == "user_code" && v == user_code.as_str()),
        "the complete URI carries the code it shows: {printed}"
    );
    url.set_query(None);
    DeviceLogin {
        child,
        stderr: seen,
        collector,
        verification_uri: url.to_string(),
        user_code,
    }
}

/// The device authorization grant end to end against the real provider: the human enters the
/// code, signs in and consents in a cookie-keeping HTTP client; the CLI (polling) stores the
/// sign-in with mode 0600 and `whoami` shows the user and groups. A human who aborts at the
/// confirmation step makes the CLI exit 1 with one clear error line, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latch_login_device_grant_signs_in_and_a_refusal_exits_1() {
    if !provider_available() {
        return;
    }
    let p = OidcProvider::start(
        &["http://127.0.0.1:9/console/callback".to_owned()],
        RESOURCE,
    );
    let s = TestServer::start_with(TestOptions {
        extra_config: format!(
            "{}\n[login]\nissuer = \"corp\"\nclient_id = \"latch-cli\"\nresource = \"{RESOURCE}\"\n",
            p.issuer_toml("corp", RESOURCE)
        ),
        ..Default::default()
    })
    .await;

    // Confirmed: signed in.
    let dir = tempfile_dir().join("latch");
    let d = start_device_login(&s, &dir).await;
    assert!(
        !dir.join("credentials.json").exists(),
        "nothing before the human acts"
    );
    let page = device_sign_in(
        &browser(),
        &d.verification_uri,
        &d.user_code,
        "dave",
        DeviceAnswer::Confirm,
    )
    .await;
    assert!(page.contains("Sign-in Success"), "{page:.600}");
    let (code, out, err) = d.finish().await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("as dave (groups: prod-approvers)"), "{out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("credentials.json")), 0o600);
    }
    assert_eq!(stored(&dir)["logins"][&s.base]["subject"], "dave");
    let (code, out, err) = run(&dir, &["whoami", "--server", &s.base]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("human dave (groups: prod-approvers)"),
        "{out}"
    );

    // Aborted at the confirmation: exit 1, one line naming the refusal, nothing stored.
    let dir = tempfile_dir().join("latch");
    let d = start_device_login(&s, &dir).await;
    let page = device_sign_in(
        &browser(),
        &d.verification_uri,
        &d.user_code,
        "erin",
        DeviceAnswer::Abort,
    )
    .await;
    assert!(page.contains("interrupted"), "{page:.600}");
    let (code, out, err) = d.finish().await;
    assert_eq!(code, 1, "{out}{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains("access_denied"), "{err}");
    assert!(!dir.join("credentials.json").exists());
    s.stop().await;
}

/// A broker without `[login]` says so, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latch_login_without_login_configured_says_so() {
    let s = TestServer::start().await;
    let dir = tempfile_dir().join("latch");
    let (code, _, err) = run(&dir, &["login", "--no-browser", "--server", &s.base]);
    assert_eq!(code, 1);
    assert!(err.contains("does not offer terminal sign-in"), "{err}");
    assert!(!dir.join("credentials.json").exists());
    // The same dev-token human is who `whoami --token` reports.
    let human = s.human("erin", &["prod-approvers", "latch-admins"]).await;
    let (code, out, err) = run(
        &dir,
        &["whoami", "--server", &s.base, "--token", human.as_str()],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("erin") && out.contains("admin"), "{out}");
    s.stop().await;
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("latch-login-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_private(path: &std::path::Path, v: &Value) {
    std::fs::write(path, serde_json::to_vec(v).unwrap()).unwrap();
}
