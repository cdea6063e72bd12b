//! The `redis` credential provider: a Redis ACL user per lease (Redis ≥ 6.2).
//!
//! # Resource settings
//! ```toml
//! [[resources]]
//! id = "sessions-cache"
//! kind = "redis"
//! # …
//! [resources.settings]
//! url = "redis://127.0.0.1:6379/"          # no password here
//! username = "latch-admin"                  # admin ACL user (default: `default`)
//! password_file = "/etc/latch/redis.password" # or password_env = "REDIS_ADMIN_PW"
//! timeout_secs = 5
//! [resources.settings.rules]                # ACL rules per action
//! read = ["~sessions:*", "+@read", "+@connection"]
//! write = ["~sessions:*", "+@read", "+@write", "+@connection"]
//! ```
//! Rules are limited to key patterns (`~…`, `%R~…`, `%W~…`, `%RW~…`, `allkeys`, `resetkeys`),
//! channel patterns (`&…`, `allchannels`, `resetchannels`) and command rules (`+@cat`, `-@cat`,
//! `+cmd`, `-cmd`, `allcommands`, `nocommands`); password, `on`/`off`, `reset` and selector rules
//! are refused so a template cannot weaken authentication.
//!
//! Key patterns do not constrain keyless commands, so after the template's rules every user also
//! gets [`SERVER_WIDE_DENY`] (`-@dangerous -@admin -flushall -flushdb -swapdb -select -move
//! -migrate -keys -scan -randomkey -client -debug -config -shutdown -monitor -acl -function
//! -script|flush -script|kill -script|debug -dbsize -pubsub -memory -cluster -copy`); if a rule
//! grants `@connection` (or all commands), only `CLIENT SETNAME`, `GETNAME` and `ID` are allowed
//! back. No template can undo this.
//!
//! # Mint
//! `ACL SETUSER <name> reset on #<sha256 of password> <rules of every granted action>
//! <SERVER_WIDE_DENY> [<CONNECTION_ALLOW>]`. The
//! password is 256 bits from the OS generator and only its SHA-256 (the `#<hash>` ACL form) is
//! sent, so it does not show up in `MONITOR` or the slow log. The user name is
//! `latch_<task id>_<lease id tail>` like the PostgreSQL role names.
//!
//! # Revoke
//! `ACL SETUSER <name> off` (no new authentications), `CLIENT KILL USER <name>` (closes its open
//! connections), `ACL DELUSER <name>`. A user that does not exist is already revoked.
//!
//! Redis ACL users have no expiry of their own: the broker's reaper revokes the lease when it
//! ends.
//!
//! # Security
//! The admin password is read from a file or environment variable per connection, held in a
//! [`SecretString`], and never logged. The connection is plain TCP (`redis://`); use a loopback
//! or private network.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use latch_core::model::{DeliveredCredential, Lease, Resource};
use latch_core::ports::{CredentialProvider, MintRequest, Minted, ProviderError};
use redis::IntoConnectionInfo;
use redis::aio::MultiplexedConnection;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

use crate::util::{self, SecretRef};

/// Provider kind as named in resource configuration.
pub const KIND: &str = latch_core::model::ProviderKind::Redis.as_str();

/// Prefix of every ACL user this provider creates.
pub const USER_PREFIX: &str = "latch_";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RedisSettings {
    url: String,
    #[serde(default)]
    username: Option<String>,
    /// File holding the admin password (first line; optional: trust / peer authentication
    /// need none). Not `#[serde(flatten)]`ed from [`SecretRef`]: with a flattened field serde
    /// cannot list the accepted keys in its unknown-field error.
    #[serde(default)]
    password_file: Option<std::path::PathBuf>,
    /// Environment variable holding the admin password.
    #[serde(default)]
    password_env: Option<String>,
    rules: BTreeMap<String, Vec<String>>,
    #[serde(default = "default_timeout")]
    timeout_secs: u64,
}

fn default_timeout() -> u64 {
    5
}

/// Rules appended after every template: server-wide and keyless commands that key patterns do
/// not constrain (wiping or switching databases, listing all keys, other clients, admin).
pub const SERVER_WIDE_DENY: &[&str] = &[
    "-@dangerous",
    "-@admin",
    "-flushall",
    "-flushdb",
    "-swapdb",
    "-select",
    "-move",
    "-migrate",
    "-keys",
    "-scan",
    "-randomkey",
    "-client",
    "-debug",
    "-config",
    "-shutdown",
    "-monitor",
    "-acl",
    // Server-wide code and caches: functions are shared by every client (`FUNCTION FLUSH`,
    // `DELETE`, `LOAD`, `RESTORE` change them for everyone; `FCALL` of a loaded one stays
    // allowed), and `SCRIPT FLUSH` / `KILL` act on other clients' scripts. `SCRIPT DEBUG SYNC`
    // stops the whole server while its debugging session lasts.
    "-function",
    "-script|flush",
    "-script|kill",
    "-script|debug",
    // Whole-server views: key counts, channel names, allocator state.
    "-dbsize",
    "-pubsub",
    "-memory",
    "-cluster",
    // `COPY … DB n` writes into another database; ACLs cannot refuse one option.
    "-copy",
];

/// Harmless `CLIENT` subcommands allowed back when a template grants `@connection`.
const CONNECTION_ALLOW: &[&str] = &["+client|setname", "+client|getname", "+client|id"];

/// The command rules that end every minted user's rule list (see [`SERVER_WIDE_DENY`]).
fn closing_rules<'a>(rules: impl IntoIterator<Item = &'a String>) -> Vec<&'static str> {
    let grants_connection = rules.into_iter().any(|r| {
        let r = r.to_ascii_lowercase();
        r == "+@connection" || r == "+@all" || r == "allcommands"
    });
    let mut out = SERVER_WIDE_DENY.to_vec();
    if grants_connection {
        out.extend_from_slice(CONNECTION_ALLOW);
    }
    out
}

/// Whether an ACL rule is one a template may use (see the [module docs](self)).
fn allowed_rule(rule: &str) -> bool {
    let keyword = matches!(
        rule,
        "allkeys" | "resetkeys" | "allchannels" | "resetchannels" | "allcommands" | "nocommands"
    );
    let prefixed = ["~", "%R~", "%W~", "%RW~", "&", "+", "-"]
        .iter()
        .any(|p| rule.len() > p.len() && rule.starts_with(p));
    (keyword || prefixed) && !rule.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl RedisSettings {
    /// Where the admin password comes from.
    fn secret(&self) -> SecretRef {
        SecretRef {
            password_file: self.password_file.clone(),
            password_env: self.password_env.clone(),
        }
    }

    fn load(resource: &Resource) -> Result<Self, ProviderError> {
        let s: RedisSettings = util::settings(resource)?;
        s.secret().check(resource)?;
        let info = s.url.as_str().into_connection_info().map_err(|_| {
            ProviderError::permanent(format!(
                "resource {}: `url` is not a valid redis url",
                resource.id
            ))
        })?;
        if info.redis_settings().password().is_some() {
            return Err(ProviderError::permanent(format!(
                "resource {}: `url` must not contain a password; use `password_file` or `password_env`",
                resource.id
            )));
        }
        for action in &resource.actions {
            let Some(rules) = s.rules.get(action) else {
                return Err(ProviderError::permanent(format!(
                    "resource {}: no `rules.{action}` for action {action}",
                    resource.id
                )));
            };
            if let Some(bad) = rules.iter().find(|r| !allowed_rule(r)) {
                return Err(ProviderError::permanent(format!(
                    "resource {}: acl rule {bad:?} is not allowed in a template",
                    resource.id
                )));
            }
        }
        if let Some(extra) = s.rules.keys().find(|k| !resource.actions.contains(k)) {
            return Err(ProviderError::permanent(format!(
                "resource {}: `rules.{extra}` names an action the resource does not offer",
                resource.id
            )));
        }
        Ok(s)
    }

    async fn connect(&self) -> Result<MultiplexedConnection, ProviderError> {
        let mut info = self
            .url
            .as_str()
            .into_connection_info()
            .map_err(|_| ProviderError::permanent("redis url is invalid"))?;
        let password: Option<SecretString> = self.secret().read()?;
        if let Some(p) = &password {
            let mut r = info
                .redis_settings()
                .clone()
                .set_password(p.expose_secret());
            if let Some(u) = &self.username {
                r = r.set_username(u);
            }
            info = info.set_redis_settings(r);
        } else if let Some(u) = &self.username {
            let r = info.redis_settings().clone().set_username(u);
            info = info.set_redis_settings(r);
        }
        let client = redis::Client::open(info).map_err(|e| redis_err("connect", &e))?;
        let t = Duration::from_secs(self.timeout_secs.max(1));
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(t))
            .set_response_timeout(Some(t));
        client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map_err(|e| redis_err("connect", &e))
    }
}

/// Redis's answer to `CLIENT KILL USER` for a user that does not exist.
fn no_such_user(e: &redis::RedisError) -> bool {
    e.to_string().to_ascii_lowercase().contains("no such user")
}

fn redis_err(what: &str, e: &redis::RedisError) -> ProviderError {
    let transient =
        e.is_io_error() || e.is_connection_refusal() || e.is_timeout() || e.is_connection_dropped();
    let msg = format!(
        "redis {what}: {}",
        e.to_string().chars().take(200).collect::<String>()
    );
    if transient {
        ProviderError::unreachable(msg)
    } else {
        ProviderError::permanent(msg)
    }
}

/// The ACL user name of a lease (deterministic, like [`crate::postgres::role_name`]).
pub fn user_name(task_id: &str, lease_id: &str) -> String {
    format!(
        "{USER_PREFIX}{}_{}",
        util::id_tail(task_id, 32),
        util::id_tail(lease_id, 24)
    )
}

fn valid_user(name: &str) -> bool {
    name.len() > USER_PREFIX.len()
        && name.len() <= 128
        && name.starts_with(USER_PREFIX)
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn sha256_hex(s: &str) -> String {
    hex_lower(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes()).as_ref())
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Mints Redis ACL users (kind `"redis"`).
#[derive(Debug, Clone, Default)]
pub struct RedisProvider {
    resources: HashMap<String, Resource>,
}

impl RedisProvider {
    /// A provider for `resources` (others are ignored); revocation looks the lease's resource up
    /// here.
    pub fn new(resources: &[Resource]) -> Self {
        Self {
            resources: resources
                .iter()
                .filter(|r| r.kind == KIND)
                .map(|r| (r.id.clone(), r.clone()))
                .collect(),
        }
    }

    async fn set_user(&self, req: &MintRequest<'_>, user: &str) -> Result<Minted, ProviderError> {
        util::check_window(req.issued_at_unix_secs, req.expires_at_unix_secs)?;
        let s = RedisSettings::load(req.resource)?;
        let password = util::random_password(latch_core::credential_format::CredentialKind::Redis)?;
        let mut cmd = redis::cmd("ACL");
        cmd.arg("SETUSER")
            .arg(user)
            .arg("reset")
            .arg("on")
            .arg(format!("#{}", sha256_hex(&password)));
        let granted: Vec<&String> = req
            .actions
            .iter()
            .flat_map(|a| s.rules.get(a).into_iter().flatten())
            .collect();
        for r in &granted {
            cmd.arg(*r);
        }
        for r in closing_rules(granted.iter().copied()) {
            cmd.arg(r);
        }
        let mut con = s.connect().await?;
        cmd.query_async::<()>(&mut con)
            .await
            .map_err(|e| redis_err("acl setuser", &e))?;
        tracing::info!(lease_id = req.lease_id, user = %user, "created redis acl user");
        let info = s.url.as_str().into_connection_info().ok();
        let (host, port) = match info.as_ref().map(|i| i.addr()) {
            Some(redis::ConnectionAddr::Tcp(h, p)) => (h.clone(), *p),
            _ => (String::new(), 6379),
        };
        Ok(Minted {
            credential: DeliveredCredential {
                kind: "redis_acl_user".to_owned(),
                secret: SecretString::from(password.to_string()),
                metadata: json!({
                    "username": user,
                    "host": host,
                    "port": port,
                    "expires_at_unix_secs": req.expires_at_unix_secs,
                }),
            },
            revocation_handle: user.to_owned(),
        })
    }
}

fn handle_or_derived(lease: &Lease) -> String {
    if lease.revocation_handle.is_empty() {
        user_name(&lease.task_id, &lease.id)
    } else {
        lease.revocation_handle.clone()
    }
}

#[async_trait]
impl CredentialProvider for RedisProvider {
    fn kind(&self) -> &str {
        KIND
    }

    fn has_external_state(&self) -> bool {
        true
    }

    /// Requires a password-free `url`, at most one admin password source, and allowed ACL rules
    /// for every action and no other.
    fn check_resource(&self, resource: &Resource) -> Result<(), ProviderError> {
        RedisSettings::load(resource).map(|_| ())
    }

    /// Creates the ACL user.
    ///
    /// # Errors
    /// Retryable when Redis is unreachable, permanent for settings or ACL errors.
    async fn mint(&self, req: &MintRequest<'_>) -> Result<Minted, ProviderError> {
        util::no_params(KIND, req.params)?;
        let user = user_name(&req.task.id, req.lease_id);
        if !valid_user(&user) {
            return Err(ProviderError::permanent("cannot derive an acl user name"));
        }
        self.set_user(req, &user).await
    }

    /// Renews in place: the same user gets a new password (old authenticated connections stay).
    ///
    /// # Errors
    /// As [`mint`](Self::mint).
    async fn renew(&self, lease: &Lease, req: &MintRequest<'_>) -> Result<Minted, ProviderError> {
        util::no_params(KIND, req.params)?;
        let user = handle_or_derived(lease);
        if !valid_user(&user) {
            return Err(ProviderError::permanent(
                "lease has an invalid acl user name",
            ));
        }
        self.set_user(req, &user).await
    }

    /// Disables the user, closes its connections, deletes it. Succeeds if it does not exist.
    ///
    /// # Errors
    /// Retryable on any Redis failure (the broker retries with backoff).
    /// Connects as the admin and sends `PING`.
    ///
    /// # Errors
    /// Unreachable while Redis does not answer.
    async fn probe(&self, resource: &Resource) -> Result<(), ProviderError> {
        let s = RedisSettings::load(resource)?;
        let mut con = s.connect().await?;
        redis::cmd("PING")
            .query_async::<redis::Value>(&mut con)
            .await
            .map_err(|e| redis_err("probe", &e))?;
        Ok(())
    }

    async fn revoke(&self, lease: &Lease) -> Result<(), ProviderError> {
        let user = handle_or_derived(lease);
        if !valid_user(&user) {
            return Err(ProviderError::permanent(
                "lease has an invalid acl user name",
            ));
        }
        let resource = self.resources.get(&lease.resource_id).ok_or_else(|| {
            ProviderError::retryable(format!(
                "resource {} is not configured for the redis provider",
                lease.resource_id
            ))
        })?;
        let s = RedisSettings::load(resource)?;
        let retry = |what: &str, e: redis::RedisError| ProviderError {
            retryable: true,
            ..redis_err(what, &e)
        };
        let mut con = s.connect().await.map_err(|e| ProviderError {
            retryable: true,
            ..e
        })?;
        let exists: redis::Value = redis::cmd("ACL")
            .arg("GETUSER")
            .arg(&user)
            .query_async(&mut con)
            .await
            .map_err(|e| retry("acl getuser", e))?;
        if matches!(exists, redis::Value::Nil) {
            return Ok(());
        }
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg(&user)
            .arg("off")
            .query_async::<()>(&mut con)
            .await
            .map_err(|e| retry("acl setuser off", e))?;
        // Another worker may have deleted the user since ACL GETUSER: "No such user" means
        // there is nothing left to disconnect, not a failure.
        match redis::cmd("CLIENT")
            .arg("KILL")
            .arg("USER")
            .arg(&user)
            .query_async::<redis::Value>(&mut con)
            .await
        {
            Ok(_) => {}
            Err(e) if no_such_user(&e) => return Ok(()),
            Err(e) => return Err(retry("client kill", e)),
        }
        redis::cmd("ACL")
            .arg("DELUSER")
            .arg(&user)
            .query_async::<i64>(&mut con)
            .await
            .map_err(|e| retry("acl deluser", e))?;
        tracing::info!(lease_id = %lease.id, user = %user, "deleted redis acl user");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_rules_cannot_touch_authentication() {
        for ok in ["~app:*", "%R~x", "+@read", "-flushall", "&news", "allkeys"] {
            assert!(allowed_rule(ok), "{ok}");
        }
        for bad in [
            "nopass",
            ">pw",
            "<pw",
            "#abc",
            "on",
            "off",
            "reset",
            "~",
            "+",
            "~a b",
            "(~x +get)",
            "resetpass",
            "!abc",
        ] {
            assert!(!allowed_rule(bad), "{bad}");
        }
    }

    #[test]
    fn user_names_are_checked() {
        let u = user_name("task_0123", "lease_abcd");
        assert_eq!(u, "latch_0123_abcd");
        assert!(valid_user(&u));
        assert!(!valid_user("default"));
    }

    #[test]
    fn sha256_matches_known_vector() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
