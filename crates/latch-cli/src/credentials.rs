//! The human's stored sign-in (`latch login`): one entry per broker URL in
//! `<config dir>/latch/credentials.json`, where the config dir is `$LATCH_CONFIG_DIR`, else
//! `$XDG_CONFIG_HOME`, else `~/.config`. Commands without `--token`/`LATCH_TOKEN` use it,
//! refreshing the access token shortly before it expires.
//!
//! # Security
//! The file holds bearer and refresh tokens: it is written with mode `0600` in a directory
//! of mode `0700` (a new file, then renamed over the old one, so a half-written file is never
//! read), and a file that others can read is refused, as OpenSSH refuses such keys. Tokens never
//! appear in `Debug` output or messages.

use std::io::Write;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Seconds before expiry at which the access token is refreshed.
const REFRESH_MARGIN_SECS: i64 = 60;

/// One broker's sign-in.
#[derive(Clone, Serialize, Deserialize)]
pub struct StoredLogin {
    /// The human issuer's URL.
    pub issuer: String,
    /// The public client id used.
    pub client_id: String,
    /// RFC 8707 resource indicator asked for.
    #[serde(default)]
    pub resource: Option<String>,
    /// The provider's token endpoint (refresh).
    pub token_endpoint: String,
    /// The provider's RFC 7009 revocation endpoint (logout), when it has one.
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    /// The bearer token presented to the broker.
    pub access_token: String,
    /// The refresh token, when the provider issued one.
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// When the access token expires (Unix seconds), when known.
    #[serde(default)]
    pub expires_at_unix_secs: Option<i64>,
    /// The human id the broker saw at sign-in.
    pub subject: String,
    /// The groups the broker saw at sign-in.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl std::fmt::Debug for StoredLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredLogin")
            .field("issuer", &self.issuer)
            .field("subject", &self.subject)
            .field("access_token", &"<redacted>")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expires_at_unix_secs", &self.expires_at_unix_secs)
            .finish_non_exhaustive()
    }
}

#[derive(Default, Serialize, Deserialize)]
struct File {
    version: u32,
    #[serde(default)]
    logins: std::collections::BTreeMap<String, StoredLogin>,
}

/// `<config dir>/latch`.
pub(crate) fn dir() -> Result<PathBuf, String> {
    if let Some(d) = std::env::var_os("LATCH_CONFIG_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok_or("cannot find a config directory: set LATCH_CONFIG_DIR or HOME")?;
    Ok(base.join("latch"))
}

/// The credentials file's path.
///
/// # Errors
/// No config directory can be found.
pub fn path() -> Result<PathBuf, String> {
    Ok(dir()?.join("credentials.json"))
}

/// The broker URL as a key: no trailing slash.
fn key(server: &str) -> String {
    server.trim_end_matches('/').to_owned()
}

fn read() -> Result<File, String> {
    let p = path()?;
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(File::default()),
        Err(e) => return Err(format!("cannot read {}: {e}", p.display())),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p)
            .map_err(|e| format!("cannot read {}: {e}", p.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "{} is readable by others (mode {:o}); it holds your sign-in: run `chmod 600 {}` \
                 or `latch login` again",
                p.display(),
                mode & 0o777,
                p.display()
            ));
        }
    }
    serde_json::from_str(&text).map_err(|e| {
        format!(
            "{} is damaged ({e}); run `latch logout` and `latch login`",
            p.display()
        )
    })
}

fn write(file: &File) -> Result<(), String> {
    let d = dir()?;
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(&d)
        .map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    let p = path()?;
    let tmp = d.join(format!(".credentials.{}.tmp", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let _ = std::fs::remove_file(&tmp);
    let body = serde_json::to_vec_pretty(file).map_err(|e| e.to_string())?;
    let mut f = opts
        .open(&tmp)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(&body)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &p).map_err(|e| format!("cannot write {}: {e}", p.display()))
}

/// The stored sign-in for `server`, if any.
///
/// # Errors
/// The file is unreadable, damaged, or readable by others.
pub fn load(server: &str) -> Result<Option<StoredLogin>, String> {
    Ok(read()?.logins.remove(&key(server)))
}

/// Stores (or replaces) the sign-in for `server`.
///
/// # Errors
/// The file cannot be read or written.
pub fn save(server: &str, login: &StoredLogin) -> Result<(), String> {
    let mut f = read().unwrap_or_default();
    f.version = 1;
    f.logins.insert(key(server), login.clone());
    write(&f)
}

/// Forgets the sign-in for `server`; answers what was stored.
///
/// # Errors
/// The file cannot be read or written.
pub fn remove(server: &str) -> Result<Option<StoredLogin>, String> {
    let mut f = read()?;
    let old = f.logins.remove(&key(server));
    if old.is_some() {
        f.version = 1;
        write(&f)?;
    }
    Ok(old)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The access token to present for `server`: the stored one, or, within a minute of its
/// expiry, a refreshed one (stored again, with the provider's new refresh token).
///
/// # Errors
/// The sign-in expired and cannot be refreshed: the message says to run `latch login`.
pub async fn current_token(server: &str, login: &mut StoredLogin) -> Result<String, String> {
    let fresh = login
        .expires_at_unix_secs
        .is_none_or(|exp| exp - REFRESH_MARGIN_SECS > now());
    if fresh {
        return Ok(login.access_token.clone());
    }
    let Some(rt) = login.refresh_token.clone() else {
        return Err("your sign-in expired: run `latch login`".to_owned());
    };
    let t = crate::oidc::refresh(
        &login.client_id,
        &login.token_endpoint,
        login.resource.as_deref(),
        &rt,
    )
    .await
    .map_err(|e| {
        format!("your sign-in expired and could not be renewed ({e}): run `latch login`")
    })?;
    login.access_token = t.access_token;
    login.refresh_token = t.refresh_token;
    login.expires_at_unix_secs = t.expires_in.map(|s| now() + s as i64);
    save(server, login)?;
    Ok(login.access_token.clone())
}
