//! `latch login`, `whoami`, `logout` against a real OpenID Provider (panva `oidc-provider`):
//! the loopback redirect with PKCE, the stored sign-in (mode 0600), refresh, revocation.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use latch_testkit::oidc::{OidcProvider, browser, provider_available, sign_in};
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

/// Runs `latch login --no-browser`, signs `user` in at the provider from the printed URL as a
/// browser would, and lets the provider's redirect reach the CLI's loopback listener.
async fn login_as(s: &TestServer, config_dir: &std::path::Path, user: &str) -> (i32, String) {
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
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.trim().starts_with("http").then(|| l.trim().to_owned()))
    })
    .await
    .unwrap()
    .expect("the sign-in URL on stderr");
    let auth = reqwest::Url::parse(&url).unwrap();
    let q: std::collections::HashMap<String, String> = auth.query_pairs().into_owned().collect();
    assert_eq!(q["code_challenge_method"], "S256", "{url}");
    assert_eq!(q["client_id"], "latch-cli");
    assert_eq!(q["resource"], RESOURCE);
    assert!(q.contains_key("state") && q.contains_key("nonce"), "{url}");
    let redirect = q["redirect_uri"].clone();
    assert!(redirect.starts_with("http://127.0.0.1:"), "{redirect}");
    let callback = sign_in(&browser(), &url, user, &redirect).await;
    let r = reqwest::get(&callback).await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
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
