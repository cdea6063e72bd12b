//! Startup: the one place that names concrete implementations (SQLite or PostgreSQL store, OIDC
//! verifier, credential providers — JWT, PostgreSQL, Redis, OpenSSH and X.509 certificates —
//! system clock) and wires them into the [`Broker`], the HTTP state and the [`jobs`].
//!
//! [`start`] reads as its steps: `build_store`, `build_signing_keys`, `build_identity`,
//! `build_providers`, `build_broker`, `build_http_state`, `spawn_jobs`.

mod channels;
mod gateway;
mod identity;
mod ssf;

use channels::build_channels;
use identity::build_identity;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use latch_core::broker::BrokerParts;
use latch_core::model::ProviderKind;
use latch_core::notify::NotificationChannel;
use latch_core::policy::{PolicyEngine, PolicyLoadError};
use latch_core::ports::{
    CaPublisher, ChangeFeed, CredentialProvider, FeedSettings, IdentityVerifier, Store, UseOnce,
};
use latch_core::{Broker, BrokerSettings, Clock, SystemClock};
use latch_providers::jwt::JwtProvider;
use latch_providers::keyring::{KeyError, MasterKey, SigningAlg, SigningKeys};
use latch_providers::ssh::SshProvider;
use latch_providers::x509::X509Provider;
use latch_store::Opened;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::audit::Checkpointer;
use crate::config::Config;
use crate::console::ConsoleState;
use crate::dev::DevIssuer;
use crate::http::dpop::{DpopSettings, DpopVerifier};
use crate::http::router::router;
use crate::http::state::{AppState, ScanSettings};
use crate::jobs;
use crate::jobs::ca_rotation::{CaRotation, RotatingCa};
use crate::policy::{PolicyStamp, policy_stamp};

pub use crate::policy::{load_policy, reload_now};

/// A startup failure, with a message naming what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

impl From<PolicyLoadError> for StartError {
    fn from(e: PolicyLoadError) -> Self {
        StartError(format!("invalid policy set: {e}"))
    }
}

/// Options that tests and the demo set.
#[derive(Clone, Default)]
pub struct StartOptions {
    /// Time source (default: the system clock).
    pub clock: Option<Arc<dyn Clock>>,
}

/// Installs the Prometheus recorder once per process and returns its handle.
pub fn metrics_handle() -> PrometheusHandle {
    static H: OnceLock<PrometheusHandle> = OnceLock::new();
    H.get_or_init(|| {
        let builder = crate::metrics::with_buckets(PrometheusBuilder::new())
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (embedding); then ours only renders.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
    .clone()
}

/// A running server.
pub struct Server {
    /// Bound address.
    pub addr: SocketAddr,
    /// `http://addr` or the configured public URL.
    pub base_url: String,
    /// The broker (for in-process callers such as the demo and tests).
    pub broker: Arc<Broker>,
    /// Signs audit checkpoints and writes exports.
    pub checkpointer: Arc<crate::audit::Checkpointer>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    telemetry: Option<crate::telemetry::Telemetry>,
}

impl Server {
    /// Stops gracefully: stops accepting, finishes in-flight requests, stops background jobs.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        if let Some(t) = self.telemetry.take() {
            t.shutdown().await;
        }
    }

    /// Stops abruptly, as a crash would (for restart tests): no graceful drain.
    pub fn abort(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }

    /// Waits until the server stops (after a signal).
    pub async fn wait(mut self) {
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

async fn master_key(
    config: &Config,
    data_dir: &Path,
) -> Result<latch_providers::keyring::MasterKey, StartError> {
    use latch_providers::keyring::MasterKey;
    let k = &config.keys;
    if let Some(f) = &k.master_key_file {
        return MasterKey::from_file(config.path(f))
            .map_err(|e| StartError(format!("master key: {e}")));
    }
    if let Some(var) = &k.master_key_env {
        return MasterKey::from_env(var).map_err(|e| StartError(format!("master key: {e}")));
    }
    if !k.generate_if_missing {
        return Err(StartError(
            "no master key configured (`keys.master_key_file` or `keys.master_key_env`)".into(),
        ));
    }
    let path = data_dir.join("master.key");
    if path.exists() {
        MasterKey::from_file(&path).map_err(|e| StartError(format!("master key: {e}")))
    } else {
        tracing::warn!(path = %path.display(), "generating a development master key (built-in keys); configure `keys.master_key_file` in production");
        MasterKey::generate_to_file(&path).map_err(|e| StartError(format!("master key: {e}")))
    }
}

/// Creates the data directory (owner-only) and opens the configured store with its
/// capabilities (a change feed and a shared use-once cache when replicas share it).
async fn build_store(config: &Config, data_dir: &Path) -> Result<Opened, StartError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| StartError(format!("cannot create `{}`: {e}", data_dir.display())))?;
    restrict_data_dir(data_dir)?;
    let url = config
        .store
        .url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("latch.db").display()));
    // PostgreSQL for replicas sharing one database; SQLite (embedded) otherwise. Opening
    // PostgreSQL waits up to `store.acquire_timeout` for an unreachable server.
    let deadlines = latch_store::Deadlines {
        acquire: config.store.acquire_timeout,
        operation: config.store.timeout,
    };
    latch_store::open_with(&url, deadlines)
        .await
        .map_err(|e| StartError(format!("store: {e}")))
}

/// Loads (or creates and seals) the token signing keys with the configured algorithm.
async fn build_signing_keys(
    config: &Config,
    store: &dyn Store,
    master: &MasterKey,
) -> Result<Arc<SigningKeys>, StartError> {
    let alg = match config.keys.signing_alg.as_str() {
        "EdDSA" => latch_providers::keyring::SigningAlg::EdDsa,
        "ES256" => latch_providers::keyring::SigningAlg::Es256,
        other => {
            return Err(StartError(format!(
                "`keys.signing_alg` must be `EdDSA` or `ES256`, got `{other}`"
            )));
        }
    };
    Ok(Arc::new(
        SigningKeys::load_or_create(store, master, alg)
            .await
            .map_err(|e| StartError(format!("signing keys: {e}")))?,
    ))
}

/// Binds the listener; returns it, its address and the public base URL.
async fn bind(config: &Config) -> Result<(TcpListener, SocketAddr, String), StartError> {
    let listener = TcpListener::bind(&config.server.listen)
        .await
        .map_err(|e| StartError(format!("cannot listen on `{}`: {e}", config.server.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError(e.to_string()))?;
    let base_url = config.server.public_url.clone().unwrap_or_else(|| {
        let scheme = if config.server.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{addr}")
    });
    Ok((listener, addr, base_url))
}

/// The credential providers, and the certificate authorities among them (published over HTTP,
/// rotated by the reaper).
struct Providers {
    all: Vec<Arc<dyn CredentialProvider>>,
    resources: Vec<latch_core::model::Resource>,
    ssh: Option<Arc<SshProvider>>,
    x509: Option<Arc<X509Provider>>,
    /// The JWT-SVID keys, when a `jwt` resource mints JWT-SVIDs.
    svid_keys: Option<Arc<SigningKeys>>,
}

/// The approval console's state when `[console] enabled`: its sign-in at the configured human
/// issuer (redirect URI `{public_url}/console/callback`), the development sign-in when the
/// development issuer is on, the login-state key from the master key.
fn build_console(
    config: &Config,
    base_url: &str,
    master: &MasterKey,
    oidc: Arc<latch_identity::OidcVerifier>,
    once: Option<Arc<dyn UseOnce>>,
) -> Result<Option<Arc<ConsoleState>>, StartError> {
    let c = &config.console;
    if !c.enabled {
        return Ok(None);
    }
    let base = base_url.trim_end_matches('/');
    let rp = match &c.issuer {
        Some(name) => {
            let issuer = config
                .issuers
                .iter()
                .find(|i| &i.name == name)
                .ok_or_else(|| StartError(format!("[console]: no issuer `{name}`")))?;
            let secret = c
                .client_secret(|p| config.path(p))
                .map_err(|e| StartError(e.to_string()))?;
            let http = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| StartError(format!("http client: {e}")))?;
            Some(
                crate::console::oidc::RelyingParty::new(
                    name,
                    &issuer.issuer,
                    c.client_id.as_deref().unwrap_or_default(),
                    secret,
                    &format!("{base}/console/callback"),
                    &c.scopes,
                    http,
                    oidc,
                )
                .with_post_logout_redirect_uri(&format!("{base}/console/logout")),
            )
        }
        None => None,
    };
    let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    // The development sign-in only stands in for a missing provider: with a real issuer
    // configured, humans sign in there and nowhere else.
    let dev_login = config.dev_issuer.enabled && rp.is_none();
    let state = ConsoleState::new(
        base,
        secs(c.session_ttl),
        secs(c.login_ttl),
        rp,
        dev_login,
        &master.console_login_key(),
        once,
    )
    .map_err(StartError)?
    .with_authority_max_age(secs(c.authority_max_age));
    tracing::info!(console = %format!("{base}/console/"), "approval console enabled");
    Ok(Some(Arc::new(state)))
}

/// Every provider; the certificate authorities are generated (and sealed) only when a
/// resource uses them.
async fn build_providers(
    config: &Config,
    store: &Arc<dyn Store>,
    master: &MasterKey,
    keys: &Arc<SigningKeys>,
    clock: &Arc<dyn Clock>,
    base_url: &str,
) -> Result<Providers, StartError> {
    let resources = config.domain_resources();
    let named: Vec<(String, String)> = resources
        .iter()
        .map(|r| (r.id.clone(), r.kind.clone()))
        .collect();
    // The recorder first: what is described or zeroed before it exists is lost.
    let _ = metrics_handle();
    crate::metrics::describe_and_zero(&named);
    let sinks: Vec<String> = config
        .audit
        .sinks
        .iter()
        .map(|s| s.name().to_owned())
        .collect();
    let channels: Vec<(String, String)> = (config.notifications.iter())
        .map(|c| (c.name.clone(), c.kind.clone()))
        .collect();
    let upstreams: Vec<String> = (config.mcp.upstreams.iter())
        .map(|u| u.name.clone())
        .collect();
    let receivers: Vec<String> = (config.ssf.receivers.iter())
        .map(|r| r.name.clone())
        .collect();
    crate::metrics::zero_sinks_and_channels(&sinks, &channels, &upstreams, &receivers);
    let jwt = JwtProvider::new(base_url.to_owned(), keys.clone());
    // JWT-SVIDs are ES256 (EdDSA is not a JWT-SVID algorithm): a key of their own unless the
    // broker already signs with ES256.
    let svid_keys = if JwtProvider::any_jwt_svid(&resources) {
        Some(if keys.alg() == SigningAlg::Es256 {
            keys.clone()
        } else {
            Arc::new(
                SigningKeys::load_or_create(store.as_ref(), master, SigningAlg::Es256)
                    .await
                    .map_err(|e| StartError(format!("jwt-svid keys: {e}")))?,
            )
        })
    } else {
        None
    };
    let jwt = match &svid_keys {
        Some(k) => jwt
            .with_svid_keys(k.clone())
            .map_err(|e| StartError(e.message))?,
        None => jwt,
    };
    let mut all: Vec<Arc<dyn CredentialProvider>> = vec![
        Arc::new(jwt),
        Arc::new(latch_providers::postgres::PostgresProvider::new(&resources)),
        Arc::new(latch_providers::redis_acl::RedisProvider::new(&resources)),
    ];
    let uses = |kind: &str| resources.iter().any(|r| r.kind == kind);
    let ssh = if uses(latch_providers::ssh::KIND) {
        let p = Arc::new(
            SshProvider::load_or_create(store.clone(), master, clock.clone(), &resources)
                .await
                .map_err(|e| StartError(format!("ssh ca: {e}")))?,
        );
        tracing::info!(
            refresh_secs = p.krl_refresh_secs(),
            "ssh: hosts must fetch /v1/ssh/krl at least this often (a revoked certificate is accepted up to this long)"
        );
        all.push(p.clone());
        Some(p)
    } else {
        None
    };
    let x509 = if uses(latch_providers::x509::KIND) {
        let p = Arc::new(
            X509Provider::load_or_create(store.clone(), master, clock.clone(), &resources)
                .await
                .map_err(|e| StartError(format!("x509 ca: {e}")))?,
        );
        tracing::info!(
            validity_secs = p.crl_validity_secs(),
            "x509: each crl is valid this long (a relying party caching it accepts a revoked certificate up to this long)"
        );
        all.push(p.clone());
        Some(p)
    } else {
        None
    };
    Ok(Providers {
        all,
        resources,
        ssh,
        x509,
        svid_keys,
    })
}

/// The scheduled CA rotation over the configured certificate authorities.
fn build_rotation(config: &Config, master: &Arc<MasterKey>, providers: &Providers) -> CaRotation {
    let mut cas: Vec<Arc<dyn RotatingCa>> = Vec::new();
    if let Some(p) = &providers.ssh {
        cas.push(p.clone());
    }
    if let Some(p) = &providers.x509 {
        cas.push(p.clone());
    }
    CaRotation {
        period_secs: config
            .keys
            .ca_rotation_period
            .map(|d| d.as_secs().max(1) as i64),
        master: master.clone(),
        cas,
    }
}

/// The broker's settings from `[tasks]`, `[approvals]`, `[reaper]`, `[store]` and
/// `[auth_failures]`.
fn broker_settings(config: &Config) -> BrokerSettings {
    BrokerSettings {
        production_environments: config.tasks.production_environments.clone(),
        task_default_ttl_secs: config.tasks.default_ttl.as_secs() as i64,
        task_max_ttl_secs: config.tasks.max_ttl.as_secs() as i64,
        pending_ttl_secs: config.approvals.pending_ttl.as_secs().max(1) as i64,
        authority_max_age_secs: i64::try_from(config.approvals.authority_max_age.as_secs())
            .unwrap_or(i64::MAX)
            .max(1),
        revoke_backoff_base_secs: config.reaper.revoke_backoff.as_secs().max(1) as i64,
        revoke_backoff_max_secs: config.reaper.revoke_backoff_max.as_secs().max(1) as i64,
        revoke_alert_after: config.reaper.alert_after_attempts.max(1),
        reaper_claim_secs: config.store.reaper_claim.as_secs().max(1) as i64,
        admin_groups: config.admin.groups.clone(),
        target_call_timeout: config.targets.call_timeout(),
        target_concurrency: config.targets.concurrency.max(1),
        auth_failures: config.auth_failures.settings(),
        notify: config.notify.settings(&config.notifications),
        console_enabled: config.console.enabled,
        budgets: config.budgets.budgets(),
        controls: crate::report::control_config(config),
        ..BrokerSettings::default()
    }
}

/// The broker over the store, verifier, policies and providers.
async fn build_broker(
    settings: BrokerSettings,
    clock: Arc<dyn Clock>,
    store: Arc<dyn Store>,
    verifier: Arc<dyn IdentityVerifier>,
    policy: PolicyEngine,
    providers: Providers,
    master: &MasterKey,
) -> Result<Arc<Broker>, StartError> {
    let broker = Broker::new(BrokerParts {
        clock,
        store,
        verifier,
        policy,
        providers: providers.all,
        resources: providers.resources,
        hmac_key: master.hmac_key().to_vec(),
        settings,
    })
    .await
    .map_err(|e| StartError(format!("broker: {}", e.message)))?;
    Ok(Arc::new(broker))
}

/// The DPoP verifier: nonces every replica (and every restart) issues and accepts, and with
/// PostgreSQL the proofs replicas accepted shared, so a proof is good once, cluster-wide.
fn build_dpop(
    config: &Config,
    clock: Arc<dyn Clock>,
    master: &MasterKey,
    once: Option<Arc<dyn UseOnce>>,
) -> DpopVerifier {
    let v = DpopVerifier::new(
        clock,
        DpopSettings {
            max_age_secs: config.oauth.dpop_max_age.as_secs() as i64,
            require_nonce: config.oauth.dpop_require_nonce,
            ..Default::default()
        },
    )
    .with_nonce_key(&master.dpop_nonce_key());
    match once {
        Some(once) => v.with_shared_replay(once),
        None => v,
    }
}

/// Everything [`build_http_state`] wires into [`AppState`] besides the configuration.
struct HttpParts {
    broker: Arc<Broker>,
    dev: Option<Arc<DevIssuer>>,
    keys: Arc<SigningKeys>,
    base_url: String,
    dpop: DpopVerifier,
    workload_issuers: Vec<String>,
    mcp_cancel: CancellationToken,
    checkpointer: Arc<Checkpointer>,
    ssh: Option<Arc<SshProvider>>,
    x509: Option<Arc<X509Provider>>,
    svid_keys: Option<Arc<SigningKeys>>,
    console: Option<Arc<ConsoleState>>,
    ssf: Option<Arc<crate::ssf::SsfState>>,
}

/// The HTTP layer's state: ports and settings only.
fn build_http_state(config: &Config, p: HttpParts) -> AppState {
    let ssh_ca: Option<Arc<dyn CaPublisher>> = p.ssh.map(|p| p as Arc<dyn CaPublisher>);
    let x509_ca: Option<Arc<dyn CaPublisher>> = p.x509.map(|p| p as Arc<dyn CaPublisher>);
    let keys = p.keys;
    let (svid, ca) = (p.svid_keys, x509_ca.clone());
    let spiffe_bundle = Arc::new(move || {
        crate::http::routes::ca::build_spiffe_bundle(
            ca.as_ref().map(|c| c.ca_public()).as_deref(),
            svid.as_ref().map(|k| k.jwks()).as_ref(),
        )
    });
    AppState {
        spiffe_bundle,
        checkpointer: p.checkpointer,
        broker: p.broker,
        dev: p.dev,
        jwks: Arc::new(move || keys.jwks()),
        metrics: metrics_handle(),
        census: Arc::default(),
        introspection_clients: Arc::new(config.introspection_clients.clone()),
        base_url: p.base_url.clone(),
        dpop: Arc::new(p.dpop),
        workload_issuers: Arc::new(p.workload_issuers),
        mcp_cancel: p.mcp_cancel,
        ssh_ca,
        x509_ca,
        scan: Arc::new(ScanSettings {
            config: config.scan.clone(),
            issuer: p.base_url,
        }),
        proxy: Arc::new(config.proxy.clone()),
        ready_requires_targets: config.targets.ready_requires_targets,
        // Checked when the configuration was loaded.
        login: config
            .login
            .as_ref()
            .and_then(|l| l.settings(&config.issuers).ok())
            .map(Arc::new),
        console: p.console,
        ssf: p.ssf,
    }
}

/// Other replicas change the shared store: follow their changes to keep the broker's caches
/// honest. Until the feed is connected (and whenever it drops) the caches are bypassed.
fn watch_changes(
    config: &Config,
    broker: &Broker,
    feed: &dyn ChangeFeed,
) -> tokio::sync::mpsc::Receiver<latch_core::ports::StoreChange> {
    let max_staleness = config.store.max_cache_staleness;
    broker.set_cache_trusted(false);
    feed.watch(FeedSettings {
        heartbeat_every: (max_staleness / 5).max(Duration::from_millis(10)),
        stall_after: (max_staleness * 4).max(Duration::from_secs(2)),
    })
}

/// Builds everything and starts serving on the configured address.
///
/// # Errors
/// [`StartError`]: bad configuration, invalid policies (with file, line, column), unreachable
/// store, unusable keys, or the address is taken.
pub async fn start(config: Config, opts: StartOptions) -> Result<Server, StartError> {
    let clock: Arc<dyn Clock> = opts.clock.unwrap_or_else(|| Arc::new(SystemClock));
    let telemetry = start_telemetry(&config)?;
    let stamp = policy_stamp(&config);
    let policy = load_policy(&config)?;
    let data_dir = config.path(&config.server.data_dir);
    let Opened {
        store, feed, once, ..
    } = build_store(&config, &data_dir).await?;
    let master = master_key(&config, &data_dir).await?;
    let keys = build_signing_keys(&config, store.as_ref(), &master).await?;
    let (listener, addr, base_url) = bind(&config).await?;
    let identity = build_identity(&config, store.as_ref(), &master, clock.clone()).await?;
    let tls = identity::listener_tls(&config, &identity).await?;
    let providers = build_providers(&config, &store, &master, &keys, &clock, &base_url).await?;
    let master = Arc::new(master);
    let rotation = build_rotation(&config, &master, &providers);
    rotation.run().await;
    let (ssh, x509) = (providers.ssh.clone(), providers.x509.clone());
    let svid_keys = providers.svid_keys.clone();
    let settings = BrokerSettings {
        public_url: base_url.clone(),
        ..broker_settings(&config)
    };
    let broker = build_broker(
        settings,
        clock.clone(),
        store.clone(),
        identity.verifier,
        policy,
        providers,
        &master,
    )
    .await?;
    gateway::build_gateway(&config, &broker)?;
    let channels = build_channels(&config, &clock)?;
    let change_feed = feed
        .as_ref()
        .map(|f| watch_changes(&config, &broker, f.as_ref()));
    let checkpointer = Arc::new(Checkpointer::new(
        store.clone(),
        keys.clone(),
        base_url.clone(),
        clock.clone(),
    ));
    let mcp_cancel = CancellationToken::new();
    let console = build_console(&config, &base_url, &master, identity.oidc, once.clone())?;
    let ssf = ssf::build_ssf(&config, &base_url, &clock, &store, keys.clone()).await?;
    let state = build_http_state(
        &config,
        HttpParts {
            broker: broker.clone(),
            dev: identity.dev,
            keys,
            base_url: base_url.clone(),
            dpop: build_dpop(&config, clock.clone(), &master, once.clone()),
            workload_issuers: identity.workload_issuers,
            mcp_cancel: mcp_cancel.clone(),
            checkpointer: checkpointer.clone(),
            ssh,
            x509,
            svid_keys,
            console,
            ssf: ssf.state.clone(),
        },
    );
    let app = router(
        state,
        config.server.max_body_bytes,
        config.http.request_timeout,
        config.http.body_timeout,
    );
    let (tx, rx) = watch::channel(false);
    tokio::spawn(jobs::serve::cancel_on_stop(mcp_cancel, rx.clone()));
    let mut tasks = Vec::new();
    if let Some(feed) = change_feed {
        tasks.push(tokio::spawn(jobs::change_feed::run(
            broker.clone(),
            config.store.max_cache_staleness,
            feed,
            rx.clone(),
        )));
    }
    tasks.push(tokio::spawn(jobs::serve::then_flush_auth_failures(
        jobs::serve::run(
            listener,
            app,
            jobs::serve::Limits::new(&config.http),
            tls,
            rx.clone(),
        ),
        broker.clone(),
    )));
    tasks.push(tokio::spawn(jobs::serve::flush_auth_failures(
        broker.clone(),
        rx.clone(),
    )));
    let background = Background {
        channels,
        broker: broker.clone(),
        store,
        shared: feed.map(|feed| (feed, once)),
        clock,
        checkpointer: checkpointer.clone(),
        rotation,
        stamp,
        ssf,
    };
    tasks.extend(spawn_jobs(&config, background, &rx).await);
    tracing::info!(%addr, %base_url, "latch is serving");
    Ok(Server {
        addr,
        base_url,
        broker,
        checkpointer,
        shutdown: tx,
        tasks,
        telemetry,
    })
}

/// Starts exporting traces when `[telemetry]` or the `OTEL_*` environment names a collector
/// (see [`crate::config::TelemetryConfig::resolve`]).
///
/// # Errors
/// An invalid override in the environment, or an exporter that cannot be built.
fn start_telemetry(config: &Config) -> Result<Option<crate::telemetry::Telemetry>, StartError> {
    let settings = config
        .telemetry
        .resolve(|k| std::env::var(k).ok())
        .map_err(StartError)?;
    match settings {
        Some(s) => crate::telemetry::start(&s, crate::logging::is_latch_target).map_err(StartError),
        None => Ok(None),
    }
}

/// The capabilities of a store replicas share: its change feed and use-once cache.
type SharedStore = (Arc<dyn ChangeFeed>, Option<Arc<dyn UseOnce>>);

/// What the background jobs run on.
struct Background {
    /// Approver-notification channels (`[[notifications]]`).
    channels: Vec<Arc<dyn NotificationChannel>>,
    broker: Arc<Broker>,
    store: Arc<dyn Store>,
    /// The change feed and use-once cache of a store replicas share.
    shared: Option<SharedStore>,
    clock: Arc<dyn Clock>,
    checkpointer: Arc<Checkpointer>,
    rotation: CaRotation,
    stamp: PolicyStamp,
    /// Shared Signals deliveries (`[[ssf.receivers]]`).
    ssf: ssf::Ssf,
}

/// The notification job, the reaper (one pass now, then periodic), the shared store's upkeep,
/// checkpoints, audit sinks and the policy watcher, as configured.
async fn spawn_jobs(
    config: &Config,
    b: Background,
    rx: &watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    if !b.channels.is_empty() {
        tasks.push(tokio::spawn(jobs::notify::run(
            jobs::notify::NotifyJob {
                broker: b.broker.clone(),
                channels: b.channels,
                poll: config.notify.poll_interval(),
                attempt_timeout: config
                    .notify
                    .attempt_timeout
                    .max(Duration::from_millis(100)),
            },
            rx.clone(),
        )));
    }
    // Reaper: one pass at start (revokes what expired while we were down), then periodic.
    jobs::reaper::reap_at_start(b.broker.clone()).await;
    tasks.push(tokio::spawn(jobs::targets::run(
        b.broker.clone(),
        config.targets.probe_interval(),
        rx.clone(),
    )));
    if config.reaper.enabled {
        let every = config.reaper.interval.max(Duration::from_millis(100));
        tasks.push(tokio::spawn(jobs::reaper::run(
            b.broker.clone(),
            every,
            b.rotation,
            rx.clone(),
        )));
    }
    if config.retention.enabled {
        let readers = jobs::retention::Readers {
            streams: (config.ssf.receivers.iter())
                .map(|r| jobs::ssf::cursor_name(&r.name))
                .collect(),
            sinks: (config.audit.sinks.iter())
                .map(|s| s.name().to_owned())
                .collect(),
        };
        let retention = (config.retention.clone(), readers);
        tasks.push(tokio::spawn(jobs::retention::run(
            b.broker.clone(),
            retention,
            b.checkpointer.clone(),
            rx.clone(),
        )));
    }
    if let Some((feed, once)) = b.shared {
        jobs::store_upkeep::warn_if_public(feed.as_ref()).await;
        tasks.push(tokio::spawn(jobs::store_upkeep::run(
            feed,
            once,
            b.clock,
            rx.clone(),
        )));
    }
    if !config.audit.checkpoint_interval.is_zero() {
        tasks.push(tokio::spawn(jobs::checkpoints::run(
            b.checkpointer,
            config.audit.checkpoint_interval,
            rx.clone(),
        )));
    }
    for sink in &config.audit.sinks {
        tasks.push(tokio::spawn(jobs::audit_sinks::run(
            b.store.clone(),
            sink.clone(),
            config.base_dir.clone(),
            config
                .audit
                .sink_poll_interval
                .max(Duration::from_millis(10)),
            rx.clone(),
        )));
    }
    tasks.extend(ssf::spawn_deliveries(b.ssf, &b.broker, &b.store, rx));
    if config.policy.watch {
        tasks.push(tokio::spawn(jobs::policy_watch::run(
            config.clone(),
            b.broker,
            b.stamp,
            rx.clone(),
        )));
    }
    tasks
}

/// The data directory holds the database (token HMACs, audit trail) and possibly the generated
/// master key: owner-only (0700), and a fresh database file is created 0600 before SQLite opens it.
fn restrict_data_dir(dir: &Path) -> Result<(), StartError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| StartError(format!("cannot restrict `{}`: {e}", dir.display())))?;
        let db = dir.join("latch.db");
        if !db.exists() {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&db)
                .map_err(|e| StartError(format!("cannot create `{}`: {e}", db.display())))?;
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[async_trait]
impl RotatingCa for SshProvider {
    fn label(&self) -> &'static str {
        ProviderKind::Ssh.as_str()
    }

    async fn rotate_if_due(&self, master: &MasterKey, max_age_secs: i64) -> Result<bool, KeyError> {
        SshProvider::rotate_if_due(self, master, max_age_secs).await
    }

    fn current_generation(&self) -> u32 {
        SshProvider::current_generation(self)
    }
}

#[async_trait]
impl RotatingCa for X509Provider {
    fn label(&self) -> &'static str {
        ProviderKind::X509.as_str()
    }

    async fn rotate_if_due(&self, master: &MasterKey, max_age_secs: i64) -> Result<bool, KeyError> {
        X509Provider::rotate_if_due(self, master, max_age_secs).await
    }

    fn current_generation(&self) -> u32 {
        X509Provider::current_generation(self)
    }
}
