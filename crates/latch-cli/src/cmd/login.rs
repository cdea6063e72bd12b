//! `latch login`, `latch whoami`, `latch logout`: a human's sign-in from a terminal, against
//! the human issuer the broker names (`GET /v1/login/config`), stored per broker URL
//! ([`crate::credentials`]).

use std::process::ExitCode;
use std::time::Duration;

use latch_core::audit::escape_text;

use crate::client::Client;
use crate::cmd::Conn;
use crate::credentials::{self, StoredLogin};
use crate::oidc;

/// `latch login`.
#[derive(clap::Args)]
pub(crate) struct LoginArgs {
    /// Use the device authorization grant (RFC 8628): sign in on any device with a browser,
    /// e.g. when this terminal is on a remote machine.
    #[arg(long)]
    pub(crate) device: bool,
    /// Do not try to open a browser; only print the sign-in URL.
    #[arg(long)]
    pub(crate) no_browser: bool,
    /// How long to wait for the browser's redirect.
    #[arg(long, default_value = "5m")]
    pub(crate) timeout: humantime::Duration,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// An error for `main` to print (`error: …`, exit 1), its text made safe for a terminal.
fn fail(msg: &str) -> Result<ExitCode, String> {
    Err(escape_text(msg).into_owned())
}

/// Signs in and stores the result for `--server`.
pub(crate) async fn login(args: &LoginArgs, conn: &Conn) -> Result<ExitCode, String> {
    let broker = Client::new(&conn.server, None);
    let settings = match broker.get("/v1/login/config").await {
        Ok(a) if a.ok() => match serde_json::from_value::<oidc::LoginSettings>(a.body) {
            Ok(s) => s,
            Err(e) => {
                return fail(&format!(
                    "the broker's sign-in settings are not usable: {e}"
                ));
            }
        },
        Ok(a) if a.status == 404 => {
            return fail(&format!(
                "{} does not offer terminal sign-in (`[login]` is not configured); ask its \
                 operator, or use a token (`--token`)",
                conn.server
            ));
        }
        Ok(a) => return fail(&a.error_line()),
        Err(e) => return fail(&e),
    };
    let meta = match oidc::discover(&settings.issuer).await {
        Ok(m) => m,
        Err(e) => return fail(&e),
    };
    let (tokens, page) = if args.device {
        (oidc::sign_in_device(&settings, &meta).await, None)
    } else {
        match oidc::sign_in_loopback(
            &settings,
            &meta,
            args.no_browser,
            Duration::from(args.timeout),
        )
        .await
        {
            Ok((t, page)) => (Ok(t), Some(page)),
            Err(e) => (Err(e), None),
        }
    };
    let tokens = match tokens {
        Ok(t) => t,
        Err(e) => return fail(&e),
    };
    let stored = accept(&broker, &settings, &meta, tokens, &conn.server).await;
    // The browser's page says "Signed in" only now: after the code exchange, the ID token's
    // checks, the broker's acceptance and the stored sign-in.
    if let Some(page) = page {
        let outcome = match &stored {
            Ok((login, _)) => Ok(login.subject.clone()),
            Err(e) => Err(e.clone()),
        };
        page.finish(outcome).await;
    }
    let (login, who) = match stored {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    if conn.json {
        println!("{who}");
    } else {
        println!(
            "Signed in to {} as {}{}.",
            conn.server,
            escape_text(&login.subject),
            groups_line(&login.groups)
        );
        if login.refresh_token.is_none() {
            println!(
                "The provider gave no refresh token: run `latch login` again when it expires."
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Checks that the broker takes `tokens` for a human (`GET /v1/whoami`) and stores the sign-in
/// for `server`; answers it and the broker's `whoami`.
async fn accept(
    broker: &Client,
    settings: &oidc::LoginSettings,
    meta: &oidc::ProviderMetadata,
    tokens: oidc::Tokens,
    server: &str,
) -> Result<(StoredLogin, serde_json::Value), String> {
    let who = match broker
        .with_token(&tokens.access_token)
        .get("/v1/whoami")
        .await?
    {
        a if a.ok() && a.body["kind"] == "human" => a.body,
        a if a.ok() => {
            return Err(
                "the broker took the signed-in token for a workload, not a human".to_owned(),
            );
        }
        a => {
            return Err(format!(
                "the broker refused the token from {}: {}",
                settings.issuer,
                a.error_line()
            ));
        }
    };
    let login = StoredLogin {
        issuer: settings.issuer.clone(),
        client_id: settings.client_id.clone(),
        resource: settings.resource.clone(),
        token_endpoint: meta.token_endpoint.clone(),
        revocation_endpoint: meta.revocation_endpoint.clone(),
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        expires_at_unix_secs: tokens.expires_in.map(|s| now() + s as i64),
        subject: who["id"].as_str().unwrap_or_default().to_owned(),
        groups: strings(&who["groups"]),
    };
    credentials::save(server, &login)?;
    Ok((login, who))
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|g| g.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn groups_line(groups: &[String]) -> String {
    if groups.is_empty() {
        " (no groups)".to_owned()
    } else {
        let g: Vec<String> = groups.iter().map(|g| escape_text(g).into_owned()).collect();
        format!(" (groups: {})", g.join(", "))
    }
}

/// Prints who the broker takes the caller for.
pub(crate) async fn whoami(conn: &Conn) -> Result<ExitCode, String> {
    let client = conn.client();
    let a = match client.get("/v1/whoami").await {
        Ok(a) => a,
        Err(e) => return fail(&e),
    };
    if !a.ok() {
        if a.status == 401 && conn.plain_token().is_none() {
            return fail(&format!(
                "{}; sign in with `latch login` or pass a token (`--token`)",
                a.error_line()
            ));
        }
        return fail(&a.error_line());
    }
    if conn.json {
        println!("{}", a.body);
        return Ok(ExitCode::SUCCESS);
    }
    let b = &a.body;
    let text = |k: &str| escape_text(b[k].as_str().unwrap_or("")).into_owned();
    match b["kind"].as_str() {
        Some("human") => {
            println!(
                "human {}{}{}",
                text("id"),
                groups_line(&strings(&b["groups"])),
                if b["admin"] == true { ", admin" } else { "" }
            );
            println!("issuer {}", text("issuer"));
        }
        _ => {
            println!("workload {}", text("id"));
            if b["repository"].is_string() {
                println!("repository {} at {}", text("repository"), text("git_ref"));
            }
            if b["run"].is_string() {
                println!("run {}", text("run"));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Forgets the stored sign-in for `--server`, revoking its refresh token at the provider first
/// (RFC 7009) when the provider offers revocation.
pub(crate) async fn logout(conn: &Conn) -> Result<ExitCode, String> {
    let old = match credentials::remove(&conn.server) {
        Ok(o) => o,
        Err(e) => return fail(&e),
    };
    let Some(old) = old else {
        println!("Not signed in to {}.", conn.server);
        return Ok(ExitCode::SUCCESS);
    };
    if let (Some(rt), Some(endpoint)) = (&old.refresh_token, &old.revocation_endpoint)
        && let Err(e) = oidc::revoke(&old.client_id, endpoint, rt).await
    {
        eprintln!(
            "warning: the identity provider did not revoke the sign-in ({}); it ends when it expires",
            escape_text(&e)
        );
    }
    println!(
        "Signed out of {} ({}).",
        conn.server,
        escape_text(&old.subject)
    );
    Ok(ExitCode::SUCCESS)
}
