//! The `postgres` credential provider: a dynamic PostgreSQL login role per lease.
//!
//! # Resource settings
//! ```toml
//! [[resources]]
//! id = "orders-db"
//! kind = "postgres"
//! # …
//! [resources.settings]
//! url = "postgres://latch_admin@db.internal:5432/orders"   # no password here
//! password_file = "/etc/latch/orders-db.password"            # or password_env = "ORDERS_DB_PW"
//! connect_timeout_secs = 5
//! connection_limit = 5                  # CONNECTION LIMIT of minted roles (default 5, -1: none)
//! statement_timeout_secs = 300          # role-level statement_timeout (default 300)
//! idle_in_transaction_timeout_secs = 60 # role-level idle_in_transaction_session_timeout (60)
//! # reassign_owned_to = "orders_owner" # optional; default: objects the role created are dropped
//! [resources.settings.grants]          # per action; `{role}` is the quoted role name
//! read = ["GRANT USAGE ON SCHEMA app TO {role}",
//!         "GRANT SELECT ON ALL TABLES IN SCHEMA app TO {role}"]
//! write = ["GRANT USAGE ON SCHEMA app TO {role}",
//!          "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA app TO {role}"]
//! ```
//!
//! # Mint
//! In one transaction: `CREATE ROLE … LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
//! NOBYPASSRLS CONNECTION LIMIT <connection_limit> PASSWORD '<SCRAM-SHA-256 verifier>' VALID UNTIL '<lease end>'`, `GRANT <role> TO
//! CURRENT_USER` (so a non-superuser admin with `CREATEROLE` may later end its sessions and
//! reassign what it owns), `ALTER ROLE … SET statement_timeout` and `SET
//! idle_in_transaction_session_timeout`, a `COMMENT ON ROLE` naming task and lease, and the grant statements of
//! every granted action.
//! The password is 256 bits from the OS generator; only its SCRAM-SHA-256 verifier (RFC 7677,
//! computed by `postgres-protocol`) is sent to the server, so the password cannot end up in
//! PostgreSQL's statement log. The role name is `latch_<task id>_<lease id tail>` (see
//! [`role_name`]), at most 63 bytes (PostgreSQL's `NAMEDATALEN - 1`).
//!
//! # Revoke
//! `ALTER ROLE … NOLOGIN`, `pg_terminate_backend` of every session of the role, `DROP OWNED BY …
//! CASCADE` (drops every object the role created and its privileges) in the configured database
//! and in every other database where `pg_shdepend` shows the role owning objects or holding
//! privileges (over an admin connection to each: same host, port, user), `DROP ROLE`. Objects the
//! agent created are never handed to the admin: a `SECURITY DEFINER` function it created would
//! otherwise run as the admin after revocation. With `reassign_owned_to`, which must name a
//! `NOLOGIN` role other than the admin (checked at start and at every mint and revocation),
//! the role's `SECURITY DEFINER` functions are dropped and `PUBLIC`'s privileges on its objects
//! are revoked first, then `REASSIGN OWNED BY … TO …`; if the target is no longer valid at
//! revocation, the objects are dropped instead. A role that does not exist
//! is already revoked. An unreachable server is a retryable error: the broker retries with
//! backoff (lease state `revoking` / `revoke_failed`), across restarts.
//!
//! # Security
//! The admin password is read from a file or environment variable at each connection (so it can
//! be rotated), held in a [`SecretString`], and never logged or put in an error. Role names come
//! from broker-generated ids only, and are checked against `^latch_[a-z0-9_]+$` before any
//! statement uses them. The connection to PostgreSQL is not encrypted by this provider
//! (`NoTls`): reach the server over loopback, a Unix socket or a private network.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use latch_core::model::{DeliveredCredential, Lease, Resource};
use latch_core::ports::{CredentialProvider, MintRequest, Minted, ProviderError};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use tokio_postgres::{Client, NoTls};

use crate::util::{self, SecretRef};

/// Provider kind as named in resource configuration.
pub const KIND: &str = latch_core::model::ProviderKind::Postgres.as_str();

/// Prefix of every role this provider creates.
pub const ROLE_PREFIX: &str = "latch_";

/// PostgreSQL's identifier limit in bytes (`NAMEDATALEN - 1`).
const MAX_IDENT: usize = 63;

/// The `settings` of a `postgres` resource.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PgSettings {
    /// libpq-style URL or key/value string, without a password.
    url: String,
    /// File holding the admin password (first line; optional: trust / peer authentication
    /// need none). Not `#[serde(flatten)]`ed from [`SecretRef`]: with a flattened field serde
    /// cannot list the accepted keys in its unknown-field error.
    #[serde(default)]
    password_file: Option<std::path::PathBuf>,
    /// Environment variable holding the admin password.
    #[serde(default)]
    password_env: Option<String>,
    /// Statements per action; `{role}` is replaced by the quoted role name.
    grants: BTreeMap<String, Vec<String>>,
    /// Who receives objects the role created (default: nobody, they are dropped). Must be a
    /// `NOLOGIN` role other than the admin user.
    #[serde(default)]
    reassign_owned_to: Option<String>,
    /// Connect timeout, seconds (default 5).
    #[serde(default = "default_timeout")]
    connect_timeout_secs: u64,
    /// `CONNECTION LIMIT` of minted roles (default 5; `-1` is unlimited).
    #[serde(default = "default_connection_limit")]
    connection_limit: i32,
    /// Role-level `statement_timeout` of minted roles, seconds (default 300).
    #[serde(default = "default_statement_timeout")]
    statement_timeout_secs: u64,
    /// Role-level `idle_in_transaction_session_timeout` of minted roles, seconds (default 60).
    #[serde(default = "default_idle_in_transaction_timeout")]
    idle_in_transaction_timeout_secs: u64,
}

fn default_timeout() -> u64 {
    5
}

fn default_connection_limit() -> i32 {
    5
}

fn default_statement_timeout() -> u64 {
    300
}

fn default_idle_in_transaction_timeout() -> u64 {
    60
}

/// Upper bound of the role-level timeouts, seconds (one day).
const MAX_ROLE_TIMEOUT_SECS: u64 = 86_400;

/// Mints PostgreSQL login roles (kind `"postgres"`). Every call opens one admin connection with
/// the settings of the lease's resource.
#[derive(Debug, Clone, Default)]
pub struct PostgresProvider {
    resources: HashMap<String, Resource>,
}

impl PostgresProvider {
    /// A provider for `resources` (those of another kind are ignored). Revocation looks the
    /// lease's resource up here, so it must be configured as long as leases of it may be live.
    pub fn new(resources: &[Resource]) -> Self {
        Self {
            resources: resources
                .iter()
                .filter(|r| r.kind == KIND)
                .map(|r| (r.id.clone(), r.clone()))
                .collect(),
        }
    }
}

/// The role name of a lease: `latch_` + the task id's hex (32) + `_` + the last 24 characters of
/// the lease id's hex (which hold all of a UUIDv7's random bits), 63 bytes for Latch ids.
/// Deterministic, so a lease whose mint was interrupted (still `issuing`, no handle recorded)
/// can be revoked.
pub fn role_name(task_id: &str, lease_id: &str) -> String {
    let mut name = format!(
        "{ROLE_PREFIX}{}_{}",
        util::id_tail(task_id, 32),
        util::id_tail(lease_id, 24)
    );
    name.truncate(MAX_IDENT);
    name
}

fn valid_role(name: &str) -> bool {
    name.len() <= MAX_IDENT
        && name.len() > ROLE_PREFIX.len()
        && name.starts_with(ROLE_PREFIX)
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Quotes an SQL identifier (doubling embedded quotes).
fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes an SQL string literal (doubling embedded quotes); inputs never contain backslashes
/// that matter because `standard_conforming_strings` is on in every supported PostgreSQL.
fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn pg_err(what: &str, e: &tokio_postgres::Error) -> ProviderError {
    // Database errors (permission denied, syntax) are not fixed by retrying; connection and I/O
    // failures are. The message of a database error never contains the password (the password
    // is sent only as a SCRAM verifier, and errors do not echo statements).
    match e.as_db_error() {
        Some(db) => ProviderError::permanent(format!(
            "postgres {what}: {} ({})",
            db.message(),
            db.code().code()
        )),
        None => ProviderError::unreachable(format!("postgres {what}: {}", io_kind(e))),
    }
}

fn io_kind(e: &tokio_postgres::Error) -> String {
    // tokio-postgres' Display of connection errors names no secret; keep it short.
    let s = e.to_string();
    s.chars().take(200).collect()
}

impl PgSettings {
    /// Where the admin password comes from.
    fn secret(&self) -> SecretRef {
        SecretRef {
            password_file: self.password_file.clone(),
            password_env: self.password_env.clone(),
        }
    }

    fn load(resource: &Resource) -> Result<Self, ProviderError> {
        let s: PgSettings = util::settings(resource)?;
        s.secret().check(resource)?;
        let cfg = tokio_postgres::Config::from_str(&s.url).map_err(|_| {
            ProviderError::permanent(format!(
                "resource {}: `url` is not a valid postgres connection string",
                resource.id
            ))
        })?;
        if cfg.get_password().is_some() {
            return Err(ProviderError::permanent(format!(
                "resource {}: `url` must not contain a password; use `password_file` or `password_env`",
                resource.id
            )));
        }
        for action in &resource.actions {
            let Some(stmts) = s.grants.get(action) else {
                return Err(ProviderError::permanent(format!(
                    "resource {}: no `grants.{action}` statements for action {action}",
                    resource.id
                )));
            };
            if let Some(bad) = stmts.iter().find(|st| !st.contains("{role}")) {
                return Err(ProviderError::permanent(format!(
                    "resource {}: grant statement {bad:?} does not name {{role}}",
                    resource.id
                )));
            }
        }
        if s.connection_limit == 0 || s.connection_limit < -1 {
            return Err(ProviderError::permanent(format!(
                "resource {}: `connection_limit` must be at least 1 (or -1 for unlimited)",
                resource.id
            )));
        }
        for (name, v) in [
            ("statement_timeout_secs", s.statement_timeout_secs),
            (
                "idle_in_transaction_timeout_secs",
                s.idle_in_transaction_timeout_secs,
            ),
        ] {
            if v == 0 || v > MAX_ROLE_TIMEOUT_SECS {
                return Err(ProviderError::permanent(format!(
                    "resource {}: `{name}` must be between 1 and {MAX_ROLE_TIMEOUT_SECS}",
                    resource.id
                )));
            }
        }
        if let Some(to) = &s.reassign_owned_to {
            let admin = cfg.get_user().unwrap_or_default();
            if to.is_empty() || to == admin || to.eq_ignore_ascii_case("current_user") {
                return Err(ProviderError::permanent(format!(
                    "resource {}: `reassign_owned_to` must name a NOLOGIN role other than the admin user",
                    resource.id
                )));
            }
        }
        if let Some(extra) = s.grants.keys().find(|k| !resource.actions.contains(k)) {
            return Err(ProviderError::permanent(format!(
                "resource {}: `grants.{extra}` names an action the resource does not offer",
                resource.id
            )));
        }
        Ok(s)
    }

    async fn connect(&self) -> Result<Client, ProviderError> {
        self.connect_to(None).await
    }

    /// An admin connection to `dbname` (default: the configured database), with the same host,
    /// port, user and password.
    async fn connect_to(&self, dbname: Option<&str>) -> Result<Client, ProviderError> {
        let mut cfg = tokio_postgres::Config::from_str(&self.url)
            .map_err(|_| ProviderError::permanent("postgres url is invalid"))?;
        if let Some(db) = dbname {
            cfg.dbname(db);
        }
        cfg.connect_timeout(Duration::from_secs(self.connect_timeout_secs.max(1)));
        cfg.application_name("latch");
        let password: Option<SecretString> = self.secret().read()?;
        if let Some(p) = &password {
            cfg.password(p.expose_secret().as_bytes());
        }
        let (client, connection) = cfg
            .connect(NoTls)
            .await
            .map_err(|e| pg_err("connect", &e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %io_kind(&e), "postgres admin connection closed");
            }
        });
        Ok(client)
    }
}

#[async_trait]
impl CredentialProvider for PostgresProvider {
    fn kind(&self) -> &str {
        KIND
    }

    fn has_external_state(&self) -> bool {
        true
    }

    /// Requires a password-free `url`, at most one admin password source, and `grants` for every
    /// action (each statement naming `{role}`) and for no other action.
    fn check_resource(&self, resource: &Resource) -> Result<(), ProviderError> {
        PgSettings::load(resource).map(|_| ())
    }

    /// Creates the login role (see the [module docs](self)).
    ///
    /// # Errors
    /// Retryable when PostgreSQL is unreachable; permanent for settings or SQL errors. The
    /// transaction is rolled back on any error, so nothing is left behind.
    async fn mint(&self, req: &MintRequest<'_>) -> Result<Minted, ProviderError> {
        util::no_params(KIND, req.params)?;
        util::check_window(req.issued_at_unix_secs, req.expires_at_unix_secs)?;
        let s = PgSettings::load(req.resource)?;
        let role = role_name(&req.task.id, req.lease_id);
        if !valid_role(&role) {
            return Err(ProviderError::permanent("cannot derive a role name"));
        }
        let password =
            util::random_password(latch_core::credential_format::CredentialKind::Postgres)?;
        let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
        let until = util::rfc3339(req.expires_at_unix_secs)?;
        let ident = quote_ident(&role);
        let mut stmts = vec![format!(
            "CREATE ROLE {ident} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION \
             NOBYPASSRLS INHERIT CONNECTION LIMIT {} PASSWORD {} VALID UNTIL {}",
            s.connection_limit,
            quote_literal(&verifier),
            quote_literal(&until)
        )];
        // The admin becomes a member of the role it created: PostgreSQL requires that (or
        // superuser) to terminate the role's sessions and to REASSIGN / DROP OWNED at revocation.
        stmts.push(format!("GRANT {ident} TO CURRENT_USER"));
        // Bound what a runaway or parked session can hold (locks, snapshots, a connection).
        stmts.push(format!(
            "ALTER ROLE {ident} SET statement_timeout = '{}s'",
            s.statement_timeout_secs
        ));
        stmts.push(format!(
            "ALTER ROLE {ident} SET idle_in_transaction_session_timeout = '{}s'",
            s.idle_in_transaction_timeout_secs
        ));
        stmts.push(format!(
            "COMMENT ON ROLE {ident} IS {}",
            quote_literal(&format!(
                "latch task={} lease={} resource={} expires={until}",
                req.task.id, req.lease_id, req.resource.id
            ))
        ));
        for action in req.actions {
            for g in s.grants.get(action).into_iter().flatten() {
                stmts.push(g.replace("{role}", &ident));
            }
        }
        let mut client = s.connect().await?;
        if let Some(to) = &s.reassign_owned_to {
            check_reassign_target(&client, to).await?;
        }
        let tx = client
            .transaction()
            .await
            .map_err(|e| pg_err("begin", &e))?;
        for st in &stmts {
            tx.batch_execute(st)
                .await
                .map_err(|e| pg_err("create role", &e))?;
        }
        tx.commit().await.map_err(|e| pg_err("commit", &e))?;
        let (host, port, dbname, _) = describe(&s.url);
        tracing::info!(lease_id = req.lease_id, role = %role, valid_until = %until, "created postgres role");
        Ok(Minted {
            credential: DeliveredCredential {
                kind: "postgres_password".to_owned(),
                secret: SecretString::from(password.to_string()),
                metadata: json!({
                    "username": role,
                    "host": host,
                    "port": port,
                    "database": dbname,
                    "valid_until": until,
                    "expires_at_unix_secs": req.expires_at_unix_secs,
                }),
            },
            revocation_handle: role,
        })
    }

    /// Renews in place: a new password (delivered like a fresh credential) and a new
    /// `VALID UNTIL`. Sessions already open stay open.
    ///
    /// # Errors
    /// As [`mint`](Self::mint); a role that no longer exists is a permanent error.
    async fn renew(&self, lease: &Lease, req: &MintRequest<'_>) -> Result<Minted, ProviderError> {
        util::no_params(KIND, req.params)?;
        util::check_window(req.issued_at_unix_secs, req.expires_at_unix_secs)?;
        let s = PgSettings::load(req.resource)?;
        let role = handle_or_derived(lease);
        if !valid_role(&role) {
            return Err(ProviderError::permanent("lease has an invalid role name"));
        }
        let password =
            util::random_password(latch_core::credential_format::CredentialKind::Postgres)?;
        let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
        let until = util::rfc3339(req.expires_at_unix_secs)?;
        let client = s.connect().await?;
        client
            .batch_execute(&format!(
                "ALTER ROLE {} PASSWORD {} VALID UNTIL {}",
                quote_ident(&role),
                quote_literal(&verifier),
                quote_literal(&until)
            ))
            .await
            .map_err(|e| pg_err("renew role", &e))?;
        let (host, port, dbname, _) = describe(&s.url);
        Ok(Minted {
            credential: DeliveredCredential {
                kind: "postgres_password".to_owned(),
                secret: SecretString::from(password.to_string()),
                metadata: json!({
                    "username": role, "host": host, "port": port, "database": dbname,
                    "valid_until": until, "expires_at_unix_secs": req.expires_at_unix_secs,
                }),
            },
            revocation_handle: role,
        })
    }

    /// Disables the role, terminates its sessions, reassigns and drops what it owns, drops the
    /// role. Succeeds if the role does not exist.
    ///
    /// # Errors
    /// Retryable when PostgreSQL is unreachable or a statement fails (the broker retries with
    /// backoff); permanent when the resource is no longer configured correctly.
    /// Connects as the admin and runs `SELECT 1`.
    ///
    /// # Errors
    /// Unreachable while PostgreSQL does not answer.
    async fn probe(&self, resource: &Resource) -> Result<(), ProviderError> {
        Self::ping(resource).await
    }

    async fn revoke(&self, lease: &Lease) -> Result<(), ProviderError> {
        let role = handle_or_derived(lease);
        if !valid_role(&role) {
            return Err(ProviderError::permanent("lease has an invalid role name"));
        }
        let resource = self.resource_for(lease)?;
        let s = PgSettings::load(&resource)?;
        let client = s.connect().await?;
        // Revocations of one database run concurrently (one lane per target); catalog updates
        // of `DROP OWNED` / `REVOKE` on shared objects can then collide ("tuple concurrently
        // updated", serialization failures, deadlocks). Those are retried here at once, so a
        // healthy database never shows a revocation failure for them.
        let mut attempt = 0u64;
        loop {
            match revoke_role(&s, &client, &role).await {
                Ok(()) => break,
                Err(e) if attempt < 4 && is_catalog_race(&e) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(25 * attempt)).await;
                }
                Err(e) => {
                    return Err(ProviderError {
                        retryable: true,
                        ..e
                    });
                }
            }
        }
        tracing::info!(lease_id = %lease.id, role = %role, "dropped postgres role");
        Ok(())
    }
}

impl PostgresProvider {
    /// Opens an admin connection to `resource` and runs `SELECT 1`.
    async fn ping(resource: &Resource) -> Result<(), ProviderError> {
        let s = PgSettings::load(resource)?;
        let client = s.connect().await?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| pg_err("probe", &e))?;
        Ok(())
    }

    fn resource_for(&self, lease: &Lease) -> Result<Resource, ProviderError> {
        self.resources
            .get(&lease.resource_id)
            .cloned()
            .ok_or_else(|| {
                ProviderError::retryable(format!(
                    "resource {} is not configured for the postgres provider",
                    lease.resource_id
                ))
            })
    }
}

/// A statement that lost a race with a concurrent catalog change (SQLSTATE `XX000` "tuple
/// concurrently updated", `40001` serialization failure, `40P01` deadlock): retrying succeeds.
fn is_catalog_race(e: &ProviderError) -> bool {
    ["(XX000)", "(40001)", "(40P01)"]
        .iter()
        .any(|c| e.message.contains(c))
}

fn handle_or_derived(lease: &Lease) -> String {
    if lease.revocation_handle.is_empty() {
        role_name(&lease.task_id, &lease.id)
    } else {
        lease.revocation_handle.clone()
    }
}

/// Drops `role` and everything it holds (see the [module docs](self)). Idempotent.
async fn revoke_role(s: &PgSettings, client: &Client, role: &str) -> Result<(), ProviderError> {
    let reassign_to = s.reassign_owned_to.as_deref();
    let exists = client
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
        .await
        .map_err(|e| pg_err("look up role", &e))?
        .is_some();
    if !exists {
        return Ok(());
    }
    let ident = quote_ident(role);
    // No new sessions from here on; then end the open ones.
    client
        .batch_execute(&format!("ALTER ROLE {ident} NOLOGIN"))
        .await
        .map_err(|e| pg_err("disable role", &e))?;
    client
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
            &[&role],
        )
        .await
        .map_err(|e| pg_err("terminate sessions", &e))?;
    let target = match reassign_to {
        Some(to) => match check_reassign_target(client, to).await {
            Ok(()) => Some(to),
            Err(e) => {
                tracing::warn!(role = %role, error = %e.message,
                    "reassign_owned_to is not a valid target; dropping the role's objects instead");
                None
            }
        },
        None => None,
    };
    // Objects and privileges in other databases block DROP ROLE: clean up there first, over an
    // admin connection to each.
    let others = client
        .query(
            "SELECT DISTINCT d.datname FROM pg_shdepend sd \
               JOIN pg_database d ON d.oid = sd.dbid \
              WHERE sd.refclassid = 'pg_authid'::regclass \
                AND sd.refobjid = (SELECT oid FROM pg_roles WHERE rolname = $1) \
                AND d.datname <> current_database() AND d.datallowconn",
            &[&role],
        )
        .await
        .map_err(|e| pg_err("find databases of the role", &e))?;
    for row in others {
        let db: String = row.get(0);
        let other = s.connect_to(Some(&db)).await?;
        clear_owned(&other, role, target)
            .await
            .map_err(|e| ProviderError::retryable(format!("database {db}: {}", e.message)))?;
    }
    clear_owned(client, role, target).await?;
    client
        .batch_execute(&format!("DROP ROLE IF EXISTS {ident}"))
        .await
        .map_err(|e| pg_err("drop role", &e))?;
    Ok(())
}

/// In the connection's database: optionally hands the role's objects to `target` (after
/// [`neutralize_owned`]), then drops what is left and the role's privileges.
async fn clear_owned(
    client: &Client,
    role: &str,
    target: Option<&str>,
) -> Result<(), ProviderError> {
    let ident = quote_ident(role);
    if let Some(to) = target {
        neutralize_owned(client, role).await?;
        client
            .batch_execute(&format!("REASSIGN OWNED BY {ident} TO {}", quote_ident(to)))
            .await
            .map_err(|e| pg_err("reassign owned", &e))?;
    }
    client
        .batch_execute(&format!("DROP OWNED BY {ident} CASCADE"))
        .await
        .map_err(|e| pg_err("drop owned", &e))?;
    Ok(())
}

/// Refuses a `reassign_owned_to` target that is missing, the admin itself, or able to log in.
async fn check_reassign_target(client: &Client, to: &str) -> Result<(), ProviderError> {
    let row = client
        .query_opt(
            "SELECT rolcanlogin, rolname = CURRENT_USER, rolsuper FROM pg_roles WHERE rolname = $1",
            &[&to],
        )
        .await
        .map_err(|e| pg_err("look up reassign_owned_to", &e))?;
    match row {
        None => Err(ProviderError::permanent(format!(
            "reassign_owned_to role {to:?} does not exist"
        ))),
        Some(r) if r.get::<_, bool>(1) => Err(ProviderError::permanent(
            "reassign_owned_to must not be the admin user",
        )),
        Some(r) if r.get::<_, bool>(0) || r.get::<_, bool>(2) => Err(ProviderError::permanent(
            format!("reassign_owned_to role {to:?} must be NOLOGIN and not a superuser"),
        )),
        Some(_) => Ok(()),
    }
}

/// Before objects change owner: drops the role's `SECURITY DEFINER` functions and revokes
/// `PUBLIC`'s privileges on its relations, routines and schemas, so nothing the agent set up
/// runs with, or is exposed by, the new owner's rights.
async fn neutralize_owned(client: &Client, role: &str) -> Result<(), ProviderError> {
    let rows = client
        .query(
            "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner \
             WHERE r.rolname = $1 AND p.prosecdef",
            &[&role],
        )
        .await
        .map_err(|e| pg_err("list security definer functions", &e))?;
    for r in rows {
        let f: String = r.get(0);
        client
            .batch_execute(&format!("DROP ROUTINE IF EXISTS {f} CASCADE"))
            .await
            .map_err(|e| pg_err("drop security definer function", &e))?;
    }
    let rows = client
        .query(
            "SELECT 'REVOKE ALL ON ' || CASE WHEN c.relkind = 'S' THEN 'SEQUENCE ' ELSE 'TABLE ' END \
                    || c.oid::regclass::text || ' FROM PUBLIC' \
               FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner \
              WHERE r.rolname = $1 AND c.relkind IN ('r','v','m','S','f','p') \
             UNION ALL \
             SELECT 'REVOKE ALL ON ROUTINE ' || p.oid::regprocedure::text || ' FROM PUBLIC' \
               FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner WHERE r.rolname = $1 \
             UNION ALL \
             SELECT 'REVOKE ALL ON SCHEMA ' || quote_ident(n.nspname) || ' FROM PUBLIC' \
               FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner WHERE r.rolname = $1",
            &[&role],
        )
        .await
        .map_err(|e| pg_err("list owned objects", &e))?;
    for r in rows {
        let st: String = r.get(0);
        client
            .batch_execute(&st)
            .await
            .map_err(|e| pg_err("revoke public privileges", &e))?;
    }
    Ok(())
}

/// Host, port and database of a connection string, for the credential's metadata.
fn describe(url: &str) -> (String, u16, String, String) {
    let cfg = tokio_postgres::Config::from_str(url).ok();
    let host = cfg
        .as_ref()
        .and_then(|c| c.get_hosts().first().cloned())
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h,
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".to_owned());
    let port = cfg
        .as_ref()
        .and_then(|c| c.get_ports().first().copied())
        .unwrap_or(5432);
    let user = cfg
        .as_ref()
        .and_then(|c| c.get_user().map(str::to_owned))
        .unwrap_or_default();
    let db = cfg
        .as_ref()
        .and_then(|c| c.get_dbname().map(str::to_owned))
        .unwrap_or_else(|| user.clone());
    (host, port, db, user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_fit_and_are_deterministic() {
        let t = "task_019acb2f8e9a7c3d8e1f2a3b4c5d6e7f";
        let l = "lease_019acb2f8e9b7aaa9bbbcccdddeeefff";
        let n = role_name(t, l);
        assert!(n.len() <= 63, "{n} is {} bytes", n.len());
        assert_eq!(n, role_name(t, l));
        assert!(valid_role(&n));
        assert!(n.contains("019acb2f8e9a7c3d8e1f2a3b4c5d6e7f"));
        assert!(n.ends_with("8e9b7aaa9bbbcccdddeeefff"));
        assert_ne!(n, role_name(t, "lease_019acb2f8e9b7aaa9bbbcccdddeeeff0"));
    }

    #[test]
    fn refuses_foreign_role_names() {
        assert!(!valid_role("postgres"));
        assert!(!valid_role("latch_"));
        assert!(!valid_role("latch_x\"; drop"));
        assert!(!valid_role(&format!("latch_{}", "a".repeat(60))));
    }

    fn resource(settings: serde_json::Value) -> Resource {
        Resource {
            id: "db".into(),
            kind: KIND.into(),
            environment: "sandbox".into(),
            sensitivity: "internal".into(),
            audience: "db".into(),
            actions: vec!["read".into()],
            max_ttl_secs: 60,
            max_lifetime_secs: 240,
            default_ttl_secs: 60,
            owner: None,
            production: false,
            egress: false,
            end_task_on_budget_breach: false,
            settings,
        }
    }

    #[test]
    fn settings_are_checked_at_start_without_echoing_secrets() {
        let p = PostgresProvider::new(&[]);
        let ok = serde_json::json!({"url": "host=h user=u dbname=d",
            "grants": {"read": ["GRANT SELECT ON t TO {role}"]}});
        assert!(p.check_resource(&resource(ok)).is_ok());
        let with_pw = serde_json::json!({"url": "postgres://u:hunter2@h/d",
            "grants": {"read": ["GRANT SELECT ON t TO {role}"]}});
        let e = p.check_resource(&resource(with_pw)).unwrap_err();
        assert!(
            e.message.contains("must not contain a password"),
            "{}",
            e.message
        );
        assert!(!e.message.contains("hunter2"));
        let missing = serde_json::json!({"url": "host=h", "grants": {}});
        assert!(
            p.check_resource(&resource(missing)).is_err(),
            "grants for every action"
        );
        let no_role = serde_json::json!({"url": "host=h", "grants": {"read": ["GRANT SELECT ON t TO public"]}});
        assert!(
            p.check_resource(&resource(no_role)).is_err(),
            "statements name {{role}}"
        );
        let extra = serde_json::json!({"url": "host=h", "grants": {"read": ["GRANT x TO {role}"], "drop": ["GRANT y TO {role}"]}});
        assert!(
            p.check_resource(&resource(extra)).is_err(),
            "no grants for unknown actions"
        );
        let both = serde_json::json!({"url": "host=h", "password_file": "/x", "password_env": "X",
            "grants": {"read": ["GRANT x TO {role}"]}});
        assert!(p.check_resource(&resource(both)).is_err());
        for to in ["u", "CURRENT_USER", ""] {
            let admin_target = serde_json::json!({"url": "host=h user=u dbname=d",
                "reassign_owned_to": to, "grants": {"read": ["GRANT x TO {role}"]}});
            let e = p.check_resource(&resource(admin_target)).unwrap_err();
            assert!(e.message.contains("reassign_owned_to"), "{}", e.message);
        }
        let keeper = serde_json::json!({"url": "host=h user=u dbname=d",
            "reassign_owned_to": "keeper", "grants": {"read": ["GRANT x TO {role}"]}});
        assert!(p.check_resource(&resource(keeper)).is_ok());
        for (k, v) in [
            ("connection_limit", 0i64),
            ("connection_limit", -2),
            ("statement_timeout_secs", 0),
            ("idle_in_transaction_timeout_secs", 86_401),
        ] {
            let mut bad = serde_json::json!({"url": "host=h user=u dbname=d",
                "grants": {"read": ["GRANT x TO {role}"]}});
            bad[k] = serde_json::json!(v);
            let e = p.check_resource(&resource(bad)).unwrap_err();
            assert!(e.message.contains(k), "{}", e.message);
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
