//! `latch.toml`: the server's configuration. Relative paths are resolved against the directory
//! of the configuration file. Durations use humantime (`90s`, `15m`, `8h`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod budgets;
mod console;
mod gateway;
mod http;
mod login;
mod notify;
mod proxy;
#[cfg(test)]
mod reference_tests;
mod resources;
mod retention;
mod ssf;
mod targets;
mod telemetry;

pub use console::ConsoleConfig;
pub use gateway::{
    McpConfig, UpstreamConfig, UpstreamCredentialConfig, UpstreamSecret, UpstreamTransport,
};
pub use http::{AuthFailuresConfig, HttpConfig};
pub use login::{LoginConfig, LoginSettings};
pub use notify::{NotificationConfig, NotifyConfig, SmtpTls, read_secret};
pub use proxy::{ProxyConfig, ProxyResourceRules, ProxyRule, normalize_path};
pub use resources::{BreachAction, ResourceConfig};
pub use retention::RetentionConfig;
pub use ssf::{SsfConfig, SsfReceiverConfig, SsfTransmitterConfig};
pub use targets::TargetsConfig;
pub use telemetry::{TelemetryConfig, TelemetrySettings};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listener and public URL.
    #[serde(default)]
    pub server: ServerConfig,
    /// Durable store.
    #[serde(default)]
    pub store: StoreConfig,
    /// Key material at rest.
    #[serde(default)]
    pub keys: KeysConfig,
    /// Cedar policies.
    pub policy: PolicyConfig,
    /// Task rules.
    #[serde(default)]
    pub tasks: TasksConfig,
    /// Step-up approvals.
    #[serde(default)]
    pub approvals: ApprovalsConfig,
    /// Background revocation.
    #[serde(default)]
    pub reaper: ReaperConfig,
    /// Calls to targets (deadlines, per-target concurrency, health probes).
    #[serde(default)]
    pub targets: TargetsConfig,
    /// Trusted identity issuers (workload and human).
    #[serde(default)]
    pub issuers: Vec<latch_identity::IssuerConfig>,
    /// Development issuer (off unless configured).
    #[serde(default)]
    pub dev_issuer: DevIssuerConfig,
    /// Clients allowed to call introspection and revocation (RFC 7662 §2.1 client authentication).
    #[serde(default)]
    pub introspection_clients: Vec<IntrospectionClient>,
    /// Humans in these groups may read the audit log over the API.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Audit checkpoints and sinks.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Resources agents can ask for.
    #[serde(default)]
    pub resources: Vec<ResourceConfig>,
    /// OAuth token endpoint and DPoP (RFC 8693, RFC 9449).
    #[serde(default)]
    pub oauth: OAuthConfig,
    /// Leak scanning (`POST /v1/scan`, `latch scan`).
    #[serde(default)]
    pub scan: ScanConfig,
    /// What `latch proxy` may forward per resource.
    #[serde(default)]
    pub proxy: ProxyConfig,
    /// Limits of the HTTP listener (timeouts, connection caps, header size).
    #[serde(default)]
    pub http: HttpConfig,
    /// Aggregation and rate limit of failed authentications per source.
    #[serde(default)]
    pub auth_failures: AuthFailuresConfig,
    /// Terminal sign-in for humans (`latch login`); off unless configured.
    #[serde(default)]
    pub login: Option<LoginConfig>,
    /// Retries of approver notifications.
    #[serde(default)]
    pub notify: NotifyConfig,
    /// Channels that tell approvers a request waits (Slack, signed webhook, e-mail).
    #[serde(default)]
    pub notifications: Vec<NotificationConfig>,
    /// The approval console (`/console/`) and human sign-in.
    #[serde(default)]
    pub console: ConsoleConfig,
    /// The MCP gateway's upstream servers (`[[mcp.upstreams]]`).
    #[serde(default)]
    pub mcp: McpConfig,
    /// Budgets of tasks and workloads (`[budgets.task]`, `[budgets.workload]`).
    #[serde(default)]
    pub budgets: budgets::BudgetsConfig,
    /// OpenID Shared Signals: receivers of Latch's revocation events, transmitters whose
    /// events Latch acts on (`[ssf]`).
    #[serde(default)]
    pub ssf: SsfConfig,
    /// How long ended tasks are kept in the store (`[retention]`).
    #[serde(default)]
    pub retention: RetentionConfig,
    /// OpenTelemetry traces over OTLP/HTTP (`[telemetry]`); off unless an endpoint is set.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Directory of the configuration file (set by [`Config::load`]).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on (`127.0.0.1:8080`; port 0 picks a free port).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Public base URL: the `iss` of minted tokens. Default: `http://<bound address>`.
    pub public_url: Option<String>,
    /// Directory for the SQLite file and generated development keys.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Largest accepted request body, bytes.
    #[serde(default = "default_body_limit")]
    pub max_body_bytes: usize,
    /// HTTPS on the listener, and X.509-SVIDs as client certificates (`[server.tls]`).
    #[serde(default)]
    pub tls: Option<crate::tls::TlsConfig>,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_data_dir() -> PathBuf {
    PathBuf::from(".latch-data")
}
fn default_body_limit() -> usize {
    64 * 1024
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            public_url: None,
            data_dir: default_data_dir(),
            max_body_bytes: default_body_limit(),
            tls: None,
        }
    }
}

/// `[store]`.
///
/// # Security
/// A PostgreSQL URL may hold a password: `Debug` shows only the URL's scheme.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://path` (default: `<data_dir>/latch.db`), or `postgres://user@host:port/db`
    /// for several replicas sharing one PostgreSQL database.
    pub url: Option<String>,
    /// How long a replica's reaper claim on a due lease lasts before another replica may take
    /// the lease over (default 30 s; matters only with replicas).
    #[serde(default = "default_reaper_claim", with = "humantime_serde")]
    pub reaper_claim: Duration,
    /// With replicas: the longest a replica answers introspection from its cache without its
    /// change feed proving it has received every earlier change (default 500 ms, at most 1 s).
    /// This bounds how long a revocation on another replica can go unnoticed here, even when
    /// the feed's connection stalls silently; beyond it, lookups read the database.
    #[serde(default = "default_max_cache_staleness", with = "humantime_serde")]
    pub max_cache_staleness: Duration,
    /// The longest one store call may take, the wait for a connection included (default 2 s,
    /// 100 ms to 60 s). Past it the call answers 503 `store_unavailable`, so a store that is
    /// down or frozen makes writes fail fast instead of hanging. PostgreSQL connections also
    /// get it as `statement_timeout`; SQLite as its busy timeout.
    #[serde(default = "default_store_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// The longest a store call waits for a pooled connection, and startup for the first
    /// connection to PostgreSQL (default 2 s, 100 ms to `timeout`).
    #[serde(default = "default_store_timeout", with = "humantime_serde")]
    pub acquire_timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: None,
            reaper_claim: default_reaper_claim(),
            max_cache_staleness: default_max_cache_staleness(),
            timeout: default_store_timeout(),
            acquire_timeout: default_store_timeout(),
        }
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = self
            .url
            .as_deref()
            .map(|u| u.split_once(':').map_or("(path)", |(s, _)| s));
        f.debug_struct("StoreConfig")
            .field("url_scheme", &scheme)
            .field("reaper_claim", &self.reaper_claim)
            .field("max_cache_staleness", &self.max_cache_staleness)
            .field("timeout", &self.timeout)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish()
    }
}

fn default_store_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_max_cache_staleness() -> Duration {
    Duration::from_millis(500)
}

fn default_reaper_claim() -> Duration {
    Duration::from_secs(30)
}

/// `[keys]`: the operator's master key, which seals signing keys at rest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// File holding the base64 master key (mode 0600).
    pub master_key_file: Option<PathBuf>,
    /// Environment variable holding the base64 master key.
    pub master_key_env: Option<String>,
    /// Without either: generate `<data_dir>/master.key` on first start (development only;
    /// "built-in keys"). Set to false to require an operator-supplied key.
    #[serde(default = "yes")]
    pub generate_if_missing: bool,
    /// `EdDSA` (default) or `ES256`.
    #[serde(default = "default_alg")]
    pub signing_alg: String,
    /// Rotate the SSH and X.509 CA keys when they are this old (checked at start and on every
    /// reaper pass; default: never). Rotated-out public keys stay published until every
    /// certificate they signed has expired.
    /// At least [`MIN_CA_ROTATION_PERIOD`].
    #[serde(default, with = "humantime_serde")]
    pub ca_rotation_period: Option<Duration>,
}

// Not derived: a configuration without `[keys]` must get the same defaults as an empty
// `[keys]` table (a derived `Default` gave `signing_alg = ""`, which refused to start).
impl Default for KeysConfig {
    fn default() -> Self {
        Self {
            master_key_file: None,
            master_key_env: None,
            generate_if_missing: yes(),
            signing_alg: default_alg(),
            ca_rotation_period: None,
        }
    }
}

/// Shortest accepted `keys.ca_rotation_period` (one hour): shorter periods would rotate on
/// nearly every reaper pass and pile up published CA keys.
pub const MIN_CA_ROTATION_PERIOD: Duration = Duration::from_secs(3600);

fn yes() -> bool {
    true
}
fn default_alg() -> String {
    "EdDSA".into()
}

/// `[policy]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Cedar schema file.
    pub schema: PathBuf,
    /// Directory whose `*.cedar` files are the policy set (sorted by name).
    pub dir: PathBuf,
    /// Reload when a file changes (polled) and on SIGHUP.
    #[serde(default = "yes")]
    pub watch: bool,
    /// How often to poll for changes.
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub poll_interval: Duration,
}

fn default_poll() -> Duration {
    Duration::from_secs(2)
}

/// `[tasks]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TasksConfig {
    /// TTL when the opener names none.
    #[serde(default = "default_task_ttl", with = "humantime_serde")]
    pub default_ttl: Duration,
    /// Longest TTL.
    #[serde(default = "default_task_max", with = "humantime_serde")]
    pub max_ttl: Duration,
    /// Environments that are production (hard-separated from all others).
    #[serde(default = "default_prod")]
    pub production_environments: Vec<String>,
}

fn default_task_ttl() -> Duration {
    Duration::from_secs(3600)
}
fn default_task_max() -> Duration {
    Duration::from_secs(8 * 3600)
}
fn default_prod() -> Vec<String> {
    vec!["production".into(), "prod".into()]
}

impl Default for TasksConfig {
    fn default() -> Self {
        Self {
            default_ttl: default_task_ttl(),
            max_ttl: default_task_max(),
            production_environments: default_prod(),
        }
    }
}

/// `[approvals]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// How long a step-up request waits (and an approved one waits to be claimed).
    #[serde(default = "default_pending", with = "humantime_serde")]
    pub pending_ttl: Duration,
    /// How old a human's groups may be for a vote or an operator action to count: since the
    /// token's `iat` (API, CLI) or the console sign-in (default 10 min). Bounds how long a
    /// group removed at the identity provider keeps counting.
    #[serde(default = "default_authority", with = "humantime_serde")]
    pub authority_max_age: Duration,
}

fn default_pending() -> Duration {
    Duration::from_secs(15 * 60)
}

fn default_authority() -> Duration {
    Duration::from_secs(10 * 60)
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        Self {
            pending_ttl: default_pending(),
            authority_max_age: default_authority(),
        }
    }
}

/// `[audit]`: signed checkpoints of the hash chain, and where events are streamed besides the
/// store (which stays the record of truth).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// How often the chain head is signed when new events arrived (`0s` turns it off; exports
    /// always sign the head first).
    #[serde(default = "default_checkpoint", with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// How often sinks look for new events.
    #[serde(default = "default_sink_poll", with = "humantime_serde")]
    pub sink_poll_interval: Duration,
    /// Event streams (JSON lines in the export format).
    #[serde(default)]
    pub sinks: Vec<AuditSinkConfig>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            checkpoint_interval: default_checkpoint(),
            sink_poll_interval: default_sink_poll(),
            sinks: Vec::new(),
        }
    }
}

fn default_checkpoint() -> Duration {
    Duration::from_secs(60)
}
fn default_sink_poll() -> Duration {
    Duration::from_millis(500)
}

/// One `[[audit.sinks]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum AuditSinkConfig {
    /// Appends JSON lines to a file (created 0600 if missing).
    File {
        /// Sink name (its delivery cursor is kept in the store under this name).
        name: String,
        /// File path (relative to the configuration file).
        path: PathBuf,
    },
    /// Writes JSON lines to standard output.
    Stdout {
        /// Sink name.
        name: String,
    },
    /// POSTs batches of JSON lines (`application/x-ndjson`) to a URL; retried with backoff until
    /// a 2xx answer.
    Webhook {
        /// Sink name.
        name: String,
        /// Endpoint.
        url: String,
        /// Request timeout.
        #[serde(default = "default_webhook_timeout", with = "humantime_serde")]
        timeout: Duration,
    },
}

fn default_webhook_timeout() -> Duration {
    Duration::from_secs(5)
}

impl AuditSinkConfig {
    /// The sink's name.
    pub fn name(&self) -> &str {
        match self {
            Self::File { name, .. } | Self::Stdout { name } | Self::Webhook { name, .. } => name,
        }
    }
}

/// `[reaper]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReaperConfig {
    /// Pass interval.
    #[serde(default = "default_reap", with = "humantime_serde")]
    pub interval: Duration,
    /// Whether the server runs the reaper (tests drive it by hand).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// First retry delay of a failed revocation (doubles per attempt).
    #[serde(default = "default_backoff", with = "humantime_serde")]
    pub revoke_backoff: Duration,
    /// Longest retry delay.
    #[serde(default = "default_backoff_max", with = "humantime_serde")]
    pub revoke_backoff_max: Duration,
    /// Attempts before a lease shows `revoke_failed` and is alerted.
    #[serde(default = "default_alert")]
    pub alert_after_attempts: u32,
}

fn default_reap() -> Duration {
    Duration::from_secs(5)
}
fn default_backoff() -> Duration {
    Duration::from_secs(2)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(300)
}
fn default_alert() -> u32 {
    5
}

impl Default for ReaperConfig {
    fn default() -> Self {
        Self {
            interval: default_reap(),
            enabled: true,
            revoke_backoff: default_backoff(),
            revoke_backoff_max: default_backoff_max(),
            alert_after_attempts: default_alert(),
        }
    }
}

/// `[dev_issuer]`: mints GitHub-Actions-shaped workload tokens and human tokens for local use.
///
/// # Security
/// Off unless `enabled = true`; anyone who can reach `POST /v1/dev/tokens` can then become any
/// workload or human. The server logs a warning at start when it is on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevIssuerConfig {
    /// Turn it on.
    #[serde(default)]
    pub enabled: bool,
    /// Audience of the tokens it mints (and that the broker accepts from it).
    #[serde(default = "default_dev_aud")]
    pub audience: String,
}

fn default_dev_aud() -> String {
    "latch".into()
}

// Not derived: without `[dev_issuer]` the audience is the documented `latch`, as in an empty table.
impl Default for DevIssuerConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            audience: default_dev_aud(),
        }
    }
}

/// One `[[introspection_clients]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionClient {
    /// Client id (HTTP Basic user name).
    pub id: String,
    /// Lowercase hex SHA-256 of the client secret (the secret itself is never configured).
    pub secret_sha256: String,
}

/// `[oauth]`: the token-exchange endpoint and sender-constrained tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    /// Require a server nonce (RFC 9449 §8) in every DPoP proof; clients get one from the
    /// `DPoP-Nonce` header of a `use_dpop_nonce` error and retry.
    #[serde(default)]
    pub dpop_require_nonce: bool,
    /// How old a DPoP proof's `iat` may be.
    #[serde(default = "default_dpop_max_age", with = "humantime_serde")]
    pub dpop_max_age: Duration,
}

fn default_dpop_max_age() -> Duration {
    Duration::from_secs(300)
}

impl Default for OAuthConfig {
    fn default() -> Self {
        Self {
            dpop_require_nonce: false,
            dpop_max_age: default_dpop_max_age(),
        }
    }
}

/// `[admin]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Human groups allowed to read the audit log and list all tasks.
    #[serde(default = "default_admin_groups")]
    pub groups: Vec<String>,
}

fn default_admin_groups() -> Vec<String> {
    vec!["latch-admins".into()]
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            groups: default_admin_groups(),
        }
    }
}

/// A configuration error, naming the file and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Reads and validates `path`.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file and the problem (TOML position included).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config `{}`: {e}", path.display())))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, &base).map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
    }

    /// Parses TOML text; relative paths resolve against `base_dir`.
    ///
    /// # Errors
    /// [`ConfigError`].
    pub fn parse(text: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        let mut c: Config = toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        c.base_dir = base_dir.to_path_buf();
        c.validate()?;
        (c.ssf.validate().and(c.telemetry.validate())).map_err(ConfigError)?;
        Ok(c)
    }

    /// Resolves a configured path against the config file's directory.
    pub fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// `[server.tls]` with its files resolved against the configuration's directory.
    pub fn resolve_tls(&self, t: &crate::tls::TlsConfig) -> crate::tls::TlsConfig {
        crate::tls::TlsConfig {
            cert_file: self.path(&t.cert_file),
            key_file: self.path(&t.key_file),
            client_certificates: t.client_certificates,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.proxy.validate().map_err(ConfigError)?;
        if let Some(l) = &self.login {
            l.settings(&self.issuers).map_err(ConfigError)?;
        }
        (self.http.validate())
            .and(self.mcp.validate(self.http.request_timeout))
            .and(self.auth_failures.validate())
            .and(self.budgets.validate())
            .and(self.retention.validate())
            .map_err(ConfigError)?;
        let mut channels = std::collections::HashSet::new();
        for c in &self.notifications {
            c.validate().map_err(ConfigError)?;
            if !channels.insert(&c.name) {
                return Err(ConfigError(format!(
                    "duplicate notification channel name `{}`",
                    c.name
                )));
            }
        }
        self.validate_sinks()?;
        (self.retention)
            .validate_audit(
                self.audit.sinks.len(),
                self.audit.checkpoint_interval,
                self.tasks.max_ttl,
            )
            .map_err(ConfigError)?;
        let mut seen = std::collections::HashSet::new();
        for r in &self.resources {
            if !seen.insert(&r.id) {
                return Err(ConfigError(format!("duplicate resource id `{}`", r.id)));
            }
            if r.actions.is_empty() {
                return Err(ConfigError(format!(
                    "resource `{}` offers no actions",
                    r.id
                )));
            }
            if r.max_ttl.as_secs() == 0 {
                return Err(ConfigError(format!(
                    "resource `{}`: `max_ttl` must be at least 1s",
                    r.id
                )));
            }
            if r.default_ttl
                .is_some_and(|d| d > r.max_ttl || d.as_secs() == 0)
            {
                return Err(ConfigError(format!(
                    "resource `{}`: `default_ttl` must be 1s to `max_ttl`",
                    r.id
                )));
            }
            if r.max_lifetime.is_some_and(|d| d < r.max_ttl) {
                return Err(ConfigError(format!(
                    "resource `{}`: `max_lifetime` must be at least `max_ttl`",
                    r.id
                )));
            }
        }
        if let Some(p) = self.keys.ca_rotation_period
            && p < MIN_CA_ROTATION_PERIOD
        {
            return Err(ConfigError(format!(
                "`keys.ca_rotation_period` must be at least 1h (got {}s)",
                p.as_secs()
            )));
        }
        let staleness = self.store.max_cache_staleness;
        if staleness < Duration::from_millis(50) || staleness > Duration::from_secs(1) {
            return Err(ConfigError(format!(
                "`store.max_cache_staleness` must be 50ms to 1s (got {}ms)",
                staleness.as_millis()
            )));
        }
        let (timeout, acquire) = (self.store.timeout, self.store.acquire_timeout);
        if timeout < Duration::from_millis(100) || timeout > Duration::from_secs(60) {
            return Err(ConfigError(format!(
                "`store.timeout` must be 100ms to 60s (got {}ms)",
                timeout.as_millis()
            )));
        }
        if acquire < Duration::from_millis(100) || acquire > timeout {
            return Err(ConfigError(format!(
                "`store.acquire_timeout` must be 100ms to `store.timeout` (got {}ms)",
                acquire.as_millis()
            )));
        }
        if self.tasks.default_ttl > self.tasks.max_ttl || self.tasks.default_ttl.as_secs() == 0 {
            return Err(ConfigError(
                "`tasks.default_ttl` must be 1s to `tasks.max_ttl`".into(),
            ));
        }
        self.console
            .validate(&self.issuers, self.dev_issuer.enabled)?;
        for c in &self.introspection_clients {
            if c.secret_sha256.len() != 64
                || !c.secret_sha256.chars().all(|c| c.is_ascii_hexdigit())
            {
                return Err(ConfigError(format!(
                    "introspection client `{}`: `secret_sha256` must be 64 hex characters",
                    c.id
                )));
            }
        }
        Ok(())
    }

    /// `[[audit.sinks]]`: names (letters, digits, `-`, `_`; unique) and webhook URLs.
    fn validate_sinks(&self) -> Result<(), ConfigError> {
        let mut sinks = std::collections::HashSet::new();
        for sink in &self.audit.sinks {
            let n = sink.name();
            if n.is_empty()
                || !n
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(ConfigError(format!(
                    "audit sink name `{n}` must be letters, digits, `-` or `_`"
                )));
            }
            if !sinks.insert(n) {
                return Err(ConfigError(format!("duplicate audit sink name `{n}`")));
            }
            if let AuditSinkConfig::Webhook { url, .. } = sink
                && !(url.starts_with("https://") || url.starts_with("http://"))
            {
                return Err(ConfigError(format!(
                    "audit sink `{n}`: `url` must be an http(s) URL"
                )));
            }
        }
        Ok(())
    }

    /// The resources as the domain sees them.
    pub fn domain_resources(&self) -> Vec<latch_core::model::Resource> {
        self.resources
            .iter()
            .map(|r| {
                let max = r.max_ttl.as_secs() as i64;
                latch_core::model::Resource {
                    id: r.id.clone(),
                    kind: r.kind.clone(),
                    production: latch_core::model::Environment::from(r.environment.as_str())
                        .is_production(&self.tasks.production_environments),
                    environment: r.environment.as_str().into(),
                    sensitivity: r.sensitivity.clone(),
                    audience: r.audience.clone(),
                    actions: r.actions.clone(),
                    max_ttl_secs: max,
                    max_lifetime_secs: r
                        .max_lifetime
                        .map(|d| d.as_secs() as i64)
                        .unwrap_or(max * 4),
                    default_ttl_secs: r.default_ttl.map(|d| d.as_secs() as i64).unwrap_or(max),
                    owner: r.owner.clone(),
                    egress: r.egress,
                    end_task_on_budget_breach: r.on_budget_breach == BreachAction::EndTask,
                    settings: serde_json::to_value(&r.settings).unwrap_or(serde_json::Value::Null),
                }
            })
            .collect()
    }

    /// Every action any resource offers (the schema must declare them all).
    pub fn all_actions(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .resources
            .iter()
            .flat_map(|r| r.actions.iter().cloned())
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// `[scan]` in `latch.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanConfig {
    /// What a leaked live Latch credential takes down: `credential` (its lease, default) or
    /// `task` (its whole task).
    #[serde(default)]
    pub on_leak: latch_core::broker::LeakScope,
    /// Largest `text` accepted by `POST /v1/scan`, bytes (default 1 MiB).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
}

fn default_max_bytes() -> usize {
    1 << 20
}

impl Default for ScanConfig {
    fn default() -> Self {
        Self {
            on_leak: latch_core::broker::LeakScope::default(),
            max_bytes: default_max_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_store(extra: &str) -> Result<Config, ConfigError> {
        let dir =
            std::env::temp_dir().join(format!("latch-config-{}", uuid::Uuid::new_v4().simple()));
        let path = crate::examples::write_example(&dir, "127.0.0.1:0").expect("example");
        let text = std::fs::read_to_string(&path).expect("read example");
        let text = text.replacen("[store]\n", &format!("[store]\n{extra}\n"), 1);
        let parsed = Config::parse(&text, &dir);
        let _ = std::fs::remove_dir_all(&dir);
        parsed
    }

    #[test]
    fn store_deadlines_default_to_two_seconds_and_are_bounded() {
        let c = with_store("").expect("defaults");
        assert_eq!(c.store.timeout, Duration::from_secs(2));
        assert_eq!(c.store.acquire_timeout, Duration::from_secs(2));
        let c = with_store("timeout = \"5s\"\nacquire_timeout = \"500ms\"").expect("set");
        assert_eq!(c.store.timeout, Duration::from_secs(5));
        assert_eq!(c.store.acquire_timeout, Duration::from_millis(500));
        for (extra, message) in [
            ("timeout = \"50ms\"", "`store.timeout` must be 100ms to 60s"),
            ("timeout = \"2m\"", "`store.timeout` must be 100ms to 60s"),
            (
                "acquire_timeout = \"3s\"",
                "`store.acquire_timeout` must be 100ms to `store.timeout`",
            ),
        ] {
            let e = with_store(extra).unwrap_err();
            assert!(e.to_string().contains(message), "{extra}: {e}");
        }
    }

    #[test]
    fn cache_staleness_is_bounded_to_keep_the_one_second_promise() {
        let c = with_store("").expect("defaults");
        assert_eq!(c.store.max_cache_staleness, Duration::from_millis(500));
        assert_eq!(
            with_store("max_cache_staleness = \"1s\"")
                .expect("1s")
                .store
                .max_cache_staleness,
            Duration::from_secs(1)
        );
        for bad in ["2s", "10ms", "0s"] {
            let e = with_store(&format!("max_cache_staleness = \"{bad}\"")).unwrap_err();
            assert!(
                e.to_string()
                    .contains("`store.max_cache_staleness` must be 50ms to 1s"),
                "{bad}: {e}"
            );
        }
    }
}
