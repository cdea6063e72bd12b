//! Startup: the one place that names concrete implementations (SQLite or PostgreSQL store, OIDC
//! verifier, credential providers — JWT, PostgreSQL, Redis, OpenSSH and X.509 certificates —
//! system clock) and wires them into the [`Broker`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use latch_core::broker::BrokerParts;
use latch_core::policy::{PolicyEngine, PolicyLoadError, PolicySource};
use latch_core::ports::{CredentialProvider, Store};
use latch_core::{Broker, BrokerSettings, Clock, SystemClock};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use latch_identity::{IssuerConfig, IssuerKind, JwksSource, Preset, SigningAlgorithm};

use crate::api::{AppState, router};
use crate::config::Config;
use crate::dev::{DEV_HUMAN_ISSUER, DEV_WORKLOAD_ISSUER, DevIssuer};

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

/// Reads the schema and every `*.cedar` file of the policy directory (sorted), and validates
/// them against the configured resources' actions.
///
/// # Errors
/// [`PolicyLoadError`] with file, line and column.
pub fn load_policy(config: &Config) -> Result<PolicyEngine, PolicyLoadError> {
    let (schema, files) = read_policy_sources(config)?;
    PolicyEngine::load(&schema, &files, &config.all_actions())
}

fn io_err(path: &Path, e: std::io::Error) -> PolicyLoadError {
    PolicyLoadError {
        file: path.display().to_string(),
        line: None,
        column: None,
        message: format!("cannot read: {e}"),
    }
}

fn policy_files(config: &Config) -> Result<Vec<PathBuf>, PolicyLoadError> {
    let dir = config.path(&config.policy.dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| io_err(&dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(PolicyLoadError {
            file: dir.display().to_string(),
            line: None,
            column: None,
            message: "no `*.cedar` policy files (everything would be denied)".into(),
        });
    }
    Ok(files)
}

fn read_policy_sources(
    config: &Config,
) -> Result<(PolicySource, Vec<PolicySource>), PolicyLoadError> {
    let schema_path = config.path(&config.policy.schema);
    let schema = PolicySource {
        name: schema_path.display().to_string(),
        text: std::fs::read_to_string(&schema_path).map_err(|e| io_err(&schema_path, e))?,
    };
    let mut out = Vec::new();
    for f in policy_files(config)? {
        out.push(PolicySource {
            name: f.display().to_string(),
            text: std::fs::read_to_string(&f).map_err(|e| io_err(&f, e))?,
        });
    }
    Ok((schema, out))
}

fn policy_stamp(config: &Config) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    let mut v = Vec::new();
    let schema = config.path(&config.policy.schema);
    let mut paths = vec![schema];
    if let Ok(files) = policy_files(config) {
        paths.extend(files);
    }
    for p in paths {
        let md = std::fs::metadata(&p).ok();
        v.push((
            p,
            md.as_ref().and_then(|m| m.modified().ok()),
            md.map(|m| m.len()).unwrap_or(0),
        ));
    }
    v
}

/// Installs the Prometheus recorder once per process and returns its handle.
pub fn metrics_handle() -> PrometheusHandle {
    static H: OnceLock<PrometheusHandle> = OnceLock::new();
    H.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
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
}

impl Server {
    /// Stops gracefully: stops accepting, finishes in-flight requests, stops background jobs.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
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

/// Builds everything and starts serving on the configured address.
///
/// # Errors
/// [`StartError`]: bad configuration, invalid policies (with file, line, column), unreachable
/// store, unusable keys, or the address is taken.
pub async fn start(config: Config, opts: StartOptions) -> Result<Server, StartError> {
    let clock: Arc<dyn Clock> = opts.clock.unwrap_or_else(|| Arc::new(SystemClock));
    let stamp = policy_stamp(&config);
    let policy = load_policy(&config)?;
    let data_dir = config.path(&config.server.data_dir);
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| StartError(format!("cannot create `{}`: {e}", data_dir.display())))?;
    restrict_data_dir(&data_dir)?;
    let url = config
        .store
        .url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("latch.db").display()));
    // PostgreSQL for replicas sharing one database; SQLite (embedded) otherwise.
    let pg = if is_postgres_url(&url) {
        // Opening waits up to the pool's acquire timeout (10 s) for an unreachable server.
        tracing::info!("connecting to the postgresql store");
        Some(
            latch_store::PgStore::open(&url)
                .await
                .map_err(|e| StartError(format!("store: {e}")))?,
        )
    } else {
        None
    };
    let store: Arc<dyn Store> = match &pg {
        Some(pg) => Arc::new(pg.clone()),
        None => Arc::new(
            latch_store::SqliteStore::open(&url)
                .await
                .map_err(|e| StartError(format!("store: {e}")))?,
        ),
    };
    let master = master_key(&config, &data_dir).await?;
    let alg = match config.keys.signing_alg.as_str() {
        "EdDSA" => latch_providers::keyring::SigningAlg::EdDsa,
        "ES256" => latch_providers::keyring::SigningAlg::Es256,
        other => {
            return Err(StartError(format!(
                "`keys.signing_alg` must be `EdDSA` or `ES256`, got `{other}`"
            )));
        }
    };
    let keys = Arc::new(
        latch_providers::keyring::SigningKeys::load_or_create(store.as_ref(), &master, alg)
            .await
            .map_err(|e| StartError(format!("signing keys: {e}")))?,
    );
    let listener = TcpListener::bind(&config.server.listen)
        .await
        .map_err(|e| StartError(format!("cannot listen on `{}`: {e}", config.server.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError(e.to_string()))?;
    let base_url = config
        .server
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));

    let mut issuers = config.issuers.clone();
    for i in &mut issuers {
        if let JwksSource::File(p) = &i.jwks {
            i.jwks = JwksSource::File(config.path(p));
        }
    }
    let dev = if config.dev_issuer.enabled {
        tracing::warn!(
            "the development issuer is enabled: anyone who can reach /v1/dev/tokens can mint identities"
        );
        let sealed_name = "dev-issuer-ed25519";
        let pkcs8 = match store
            .key_blob(sealed_name)
            .await
            .map_err(|e| StartError(e.to_string()))?
        {
            Some(blob) => master
                .open(sealed_name, &blob)
                .map_err(|e| StartError(format!("dev issuer key: {e}")))?
                .to_vec(),
            None => {
                let fresh = DevIssuer::generate_pkcs8().map_err(StartError)?;
                let blob = master.seal(sealed_name, &fresh);
                let stored = store
                    .put_key_blob_if_absent(sealed_name, &blob)
                    .await
                    .map_err(|e| StartError(e.to_string()))?;
                master
                    .open(sealed_name, &stored)
                    .map_err(|e| StartError(format!("dev issuer key: {e}")))?
                    .to_vec()
            }
        };
        let dev = Arc::new(
            DevIssuer::from_pkcs8(&pkcs8, config.dev_issuer.audience.clone())
                .map_err(StartError)?,
        );
        for (name, iss, kind, preset) in [
            (
                "dev-workload",
                DEV_WORKLOAD_ISSUER,
                IssuerKind::Workload,
                Preset::GithubActions,
            ),
            (
                "dev-human",
                DEV_HUMAN_ISSUER,
                IssuerKind::Human,
                Preset::Human,
            ),
        ] {
            issuers.push(
                IssuerConfig::new(
                    name,
                    iss,
                    kind,
                    dev.audience(),
                    JwksSource::Static(dev.jwks().clone()),
                )
                .with_preset(preset)
                .with_algorithms(vec![SigningAlgorithm::EdDSA]),
            );
        }
        Some(dev)
    } else {
        None
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| StartError(format!("http client: {e}")))?;
    let workload_issuers: Vec<String> = issuers
        .iter()
        .filter(|i| i.kind == IssuerKind::Workload)
        .map(|i| i.issuer.clone())
        .collect();
    let verifier = Arc::new(
        latch_identity::OidcVerifier::new(
            issuers,
            latch_identity::VerifierOptions::default(),
            clock.clone(),
            http,
        )
        .map_err(|e| StartError(format!("issuers: {e}")))?,
    );
    let jwt: Arc<dyn CredentialProvider> = Arc::new(latch_providers::jwt::JwtProvider::new(
        base_url.clone(),
        keys.clone(),
    ));
    let resources = config.domain_resources();
    let mut providers: Vec<Arc<dyn CredentialProvider>> = vec![
        jwt,
        Arc::new(latch_providers::postgres::PostgresProvider::new(&resources)),
        Arc::new(latch_providers::redis_acl::RedisProvider::new(&resources)),
    ];
    // The certificate authorities are generated (and sealed) only when a resource uses them.
    let ssh = if resources
        .iter()
        .any(|r| r.kind == latch_providers::ssh::KIND)
    {
        let p = Arc::new(
            latch_providers::ssh::SshProvider::load_or_create(
                store.clone(),
                &master,
                clock.clone(),
                &resources,
            )
            .await
            .map_err(|e| StartError(format!("ssh ca: {e}")))?,
        );
        providers.push(p.clone());
        Some(p)
    } else {
        None
    };
    let x509 = if resources
        .iter()
        .any(|r| r.kind == latch_providers::x509::KIND)
    {
        let p = Arc::new(
            latch_providers::x509::X509Provider::load_or_create(
                store.clone(),
                &master,
                clock.clone(),
                &resources,
            )
            .await
            .map_err(|e| StartError(format!("x509 ca: {e}")))?,
        );
        providers.push(p.clone());
        Some(p)
    } else {
        None
    };
    let master = Arc::new(master);
    let rotation = CaRotation {
        period_secs: config
            .keys
            .ca_rotation_period
            .map(|d| d.as_secs().max(1) as i64),
        master: master.clone(),
        ssh: ssh.clone(),
        x509: x509.clone(),
    };
    rotation.run().await;
    let settings = BrokerSettings {
        production_environments: config.tasks.production_environments.clone(),
        task_default_ttl_secs: config.tasks.default_ttl.as_secs() as i64,
        task_max_ttl_secs: config.tasks.max_ttl.as_secs() as i64,
        pending_ttl_secs: config.approvals.pending_ttl.as_secs().max(1) as i64,
        revoke_backoff_base_secs: config.reaper.revoke_backoff.as_secs().max(1) as i64,
        revoke_backoff_max_secs: config.reaper.revoke_backoff_max.as_secs().max(1) as i64,
        revoke_alert_after: config.reaper.alert_after_attempts.max(1),
        reaper_claim_secs: config.store.reaper_claim.as_secs().max(1) as i64,
        ..BrokerSettings::default()
    };
    let broker = Arc::new(
        Broker::new(BrokerParts {
            clock: clock.clone(),
            store: store.clone(),
            verifier,
            policy,
            providers,
            resources,
            hmac_key: master.hmac_key().to_vec(),
            settings,
        })
        .await
        .map_err(|e| StartError(format!("broker: {}", e.message)))?,
    );
    let mcp_cancel = tokio_util::sync::CancellationToken::new();
    // Other replicas change the shared store: follow their changes to keep the broker's caches
    // honest. Until the feed is connected (and whenever it drops) the caches are bypassed.
    let max_staleness = config.store.max_cache_staleness;
    let change_feed = pg.as_ref().map(|pg| {
        broker.set_cache_trusted(false);
        pg.watch_with(latch_store::FeedSettings {
            heartbeat_every: (max_staleness / 5).max(Duration::from_millis(10)),
            stall_after: (max_staleness * 4).max(Duration::from_secs(2)),
        })
    });
    let checkpointer = Arc::new(crate::audit::Checkpointer::new(
        store.clone(),
        keys.clone(),
        base_url.clone(),
        clock.clone(),
    ));
    let state = AppState {
        checkpointer: checkpointer.clone(),
        broker: broker.clone(),
        dev,
        jwks: {
            let keys = keys.clone();
            Arc::new(move || keys.jwks())
        },
        metrics: metrics_handle(),
        introspection_clients: Arc::new(config.introspection_clients.clone()),
        admin_groups: Arc::new(config.admin.groups.clone()),
        base_url: base_url.clone(),
        dpop: Arc::new({
            let v = crate::dpop::DpopVerifier::new(
                clock.clone(),
                crate::dpop::DpopSettings {
                    max_age_secs: config.oauth.dpop_max_age.as_secs() as i64,
                    require_nonce: config.oauth.dpop_require_nonce,
                    ..Default::default()
                },
            )
            // Every replica (and every restart) issues and accepts the same nonces.
            .with_nonce_key(&master.dpop_nonce_key());
            // Replicas share the proofs they accepted: a proof is good once, cluster-wide.
            match &pg {
                Some(pg) => v.with_shared_replay(Arc::new(pg.clone())),
                None => v,
            }
        }),
        workload_issuers: Arc::new(workload_issuers),
        mcp_cancel: mcp_cancel.clone(),
        ssh,
        x509,
        scan: Arc::new(crate::scan_api::ScanSettings {
            config: config.scan.clone(),
            issuer: base_url.clone(),
        }),
        proxy: Arc::new(config.proxy.clone()),
    };
    let app = router(state, config.server.max_body_bytes);
    let (tx, rx) = watch::channel(false);
    // Open MCP streams end when shutdown starts, so the graceful shutdown does not wait on them.
    {
        let mut rx = rx.clone();
        let cancel = mcp_cancel.clone();
        tokio::spawn(async move {
            let _ = rx.wait_for(|v| *v).await;
            cancel.cancel();
        });
    }
    let mut tasks = Vec::new();
    if let Some(feed) = change_feed {
        tasks.push(tokio::spawn(follow_changes(
            broker.clone(),
            max_staleness,
            feed,
            rx.clone(),
        )));
    }
    {
        let mut rx = rx.clone();
        tasks.push(tokio::spawn(async move {
            let serve = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = rx.wait_for(|v| *v).await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "server stopped");
            }
        }));
    }
    // Reaper: one pass at start (revokes what expired while we were down), then periodic.
    {
        let run = broker.reap().await;
        log_reap(run);
        if config.reaper.enabled {
            let b = broker.clone();
            let mut rx = rx.clone();
            let every = config.reaper.interval.max(Duration::from_millis(100));
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {
                            log_reap(b.reap().await);
                            rotation.run().await;
                        }
                        r = rx.changed() => if r.is_err() || *rx.borrow() { break },
                    }
                }
            }));
        }
    }
    // The shared store's upkeep: expired one-time values (DPoP proofs) once a minute, and the
    // notification queue watched every 10 s (when full, revocations cannot commit).
    if let Some(pg) = pg.clone() {
        if pg.public_may_connect().await.unwrap_or(false) {
            tracing::warn!(
                "any role may connect to the store's database (PUBLIC has CONNECT): such a role can pin \
                 PostgreSQL's notification queue and block revocations; run \
                 `REVOKE CONNECT ON DATABASE <name> FROM PUBLIC` and grant CONNECT to latch's role only"
            );
        }
        let mut rx = rx.clone();
        let clock = clock.clone();
        tasks.push(tokio::spawn(async move {
            let mut ticks: u64 = 0;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(10)) => {
                        ticks += 1;
                        watch_notification_queue(&pg).await;
                        if ticks.is_multiple_of(6)
                            && let Err(e) = pg.forget_expired_once(clock.now_unix_secs()).await
                        {
                            tracing::warn!(error = %e, "cannot purge expired dpop proofs; will retry");
                        }
                    }
                    r = rx.changed() => if r.is_err() || *rx.borrow() { break },
                }
            }
        }));
    }
    if !config.audit.checkpoint_interval.is_zero() {
        tasks.push(tokio::spawn(crate::audit::run_checkpoints(
            checkpointer.clone(),
            config.audit.checkpoint_interval,
            rx.clone(),
        )));
    }
    for sink in &config.audit.sinks {
        tasks.push(tokio::spawn(crate::audit::run_sink(
            store.clone(),
            sink.clone(),
            config.base_dir.clone(),
            config
                .audit
                .sink_poll_interval
                .max(Duration::from_millis(10)),
            rx.clone(),
        )));
    }
    if config.policy.watch {
        tasks.push(tokio::spawn(policy_watcher(
            config.clone(),
            broker.clone(),
            stamp,
            rx.clone(),
        )));
    }
    tracing::info!(%addr, %base_url, "latch is serving");
    Ok(Server {
        addr,
        base_url,
        broker,
        checkpointer,
        shutdown: tx,
        tasks,
    })
}

/// Whether a `store.url` names PostgreSQL.
fn is_postgres_url(url: &str) -> bool {
    let u = url.trim_start();
    u.starts_with("postgres://") || u.starts_with("postgresql://")
}

/// Applies the shared store's change feed to the broker's caches until shutdown.
///
/// The caches answer only while the feed has proved, within `max_staleness`, that it delivered
/// every earlier change (see [`latch_store::FeedSettings`]).
async fn follow_changes(
    broker: Arc<Broker>,
    max_staleness: Duration,
    mut feed: tokio::sync::mpsc::Receiver<latch_store::StoreChange>,
    mut stop: watch::Receiver<bool>,
) {
    use latch_store::StoreChange;
    let mut connected_before = false;
    loop {
        let change = tokio::select! {
            c = feed.recv() => c,
            r = stop.changed() => if r.is_err() || *stop.borrow() { return } else { continue },
        };
        match change {
            Some(StoreChange::Lease(id)) => broker.invalidate_lease(&id),
            Some(StoreChange::Task(id)) => broker.invalidate_task(&id),
            Some(StoreChange::Lost) => {
                // The feed starts with `Lost` (not yet connected): that is no interruption.
                if connected_before {
                    metrics::counter!("latch_change_feed_interruptions_total").increment(1);
                }
                broker.set_cache_trusted(false);
            }
            Some(StoreChange::Resynced) => {
                connected_before = true;
                tracing::info!("store change feed connected; caches trusted again");
                broker.follow_change_feed(max_staleness);
            }
            Some(StoreChange::Unknown) => broker.clear_caches(),
            Some(StoreChange::Fresh(as_of)) => {
                // The feed's instant, on the broker's monotonic clock.
                let now = broker.clock().monotonic();
                broker.confirm_cache_fresh(now.saturating_sub(as_of.elapsed()));
            }
            None => {
                // The feed task ended: never trust the caches again (every call reads the store).
                broker.set_cache_trusted(false);
                return;
            }
        }
    }
}

/// Publishes PostgreSQL's notification-queue usage (`latch_pg_notification_queue_usage`,
/// 0 to 1) and warns from half full: when it is full, no lease or task change can commit.
async fn watch_notification_queue(pg: &latch_store::PgStore) {
    match pg.notification_queue_usage().await {
        Ok(usage) => {
            metrics::gauge!("latch_pg_notification_queue_usage").set(usage);
            if usage >= 0.5 {
                tracing::warn!(
                    usage,
                    "postgres notification queue is filling: a session that LISTENs and stays in a \
                     transaction pins it (see pg_stat_activity); when full, revocations fail"
                );
            }
        }
        Err(e) => tracing::debug!(error = %e, "cannot read the notification queue usage"),
    }
}

/// Scheduled rotation of the certificate authorities (`keys.ca_rotation_period`).
#[derive(Clone)]
struct CaRotation {
    period_secs: Option<i64>,
    master: Arc<latch_providers::keyring::MasterKey>,
    ssh: Option<Arc<latch_providers::ssh::SshProvider>>,
    x509: Option<Arc<latch_providers::x509::X509Provider>>,
}

impl CaRotation {
    /// Rotates each CA whose current key is older than the period; failures are logged and
    /// the current key stays in use.
    async fn run(&self) {
        let Some(period) = self.period_secs else {
            return;
        };
        if let Some(p) = &self.ssh {
            match p.rotate_if_due(&self.master, period).await {
                Ok(true) => {
                    tracing::info!(generation = p.current_generation(), "rotated the ssh ca")
                }
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "ssh ca rotation failed"),
            }
        }
        if let Some(p) = &self.x509 {
            match p.rotate_if_due(&self.master, period).await {
                Ok(true) => {
                    tracing::info!(generation = p.current_generation(), "rotated the x509 ca")
                }
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "x509 ca rotation failed"),
            }
        }
    }
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

fn log_reap(r: latch_core::error::Result<latch_core::broker::ReapReport>) {
    match r {
        Ok(r) => {
            if r.revocations_failed > 0 {
                metrics::counter!("latch_revocation_failures_total")
                    .increment(r.revocations_failed as u64);
            }
            metrics::counter!("latch_leases_reaped_total").increment(r.leases_revoked as u64);
            if r != latch_core::broker::ReapReport::default() {
                tracing::info!(
                    tasks_expired = r.tasks_expired,
                    requests_expired = r.requests_expired,
                    leases_revoked = r.leases_revoked,
                    revocations_failed = r.revocations_failed,
                    "reaper pass"
                );
            }
        }
        Err(e) => tracing::error!(code = %e.code, error = %e.message, "reaper pass failed"),
    }
}

/// Reloads policies now: validates the new set first, swaps it atomically, then re-evaluates
/// every live lease. An invalid set is refused (the old one stays), logged and audited.
///
/// # Errors
/// The refusal reason.
pub async fn reload_now(
    config: &Config,
    broker: &Broker,
    source: &str,
) -> Result<latch_core::broker::ReloadReport, String> {
    match load_policy(config) {
        Ok(engine) => {
            if engine.fingerprint() == broker.policy().fingerprint() {
                return Ok(latch_core::broker::ReloadReport {
                    fingerprint: engine.fingerprint().to_owned(),
                    ..Default::default()
                });
            }
            let r = broker
                .reload_policies(engine, source)
                .await
                .map_err(|e| e.message)?;
            tracing::info!(fingerprint = %r.fingerprint, checked = r.leases_checked, revoked = r.leases_revoked.len(), "policies reloaded");
            Ok(r)
        }
        Err(e) => {
            let msg = e.to_string();
            tracing::error!(error = %msg, "policy reload refused; the previous policies stay in force");
            let _ = broker.record_reload_refused(source, &msg).await;
            metrics::counter!("latch_policy_reload_refused_total").increment(1);
            Err(msg)
        }
    }
}

/// Polls the policy files (and listens for SIGHUP). `last` is the snapshot taken before the
/// running policies were loaded, so a change made at any time after that load is seen.
async fn policy_watcher(
    config: Config,
    broker: Arc<Broker>,
    mut last: Vec<(PathBuf, Option<SystemTime>, u64)>,
    mut stop: watch::Receiver<bool>,
) {
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let sighup = async {
            match hup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let sighup = std::future::pending::<()>();
        tokio::select! {
            _ = tokio::time::sleep(config.policy.poll_interval) => {
                let now = policy_stamp(&config);
                if now != last {
                    last = now;
                    let _ = reload_now(&config, &broker, "file_change").await;
                }
            }
            _ = sighup => {
                last = policy_stamp(&config);
                let _ = reload_now(&config, &broker, "sighup").await;
            }
            r = stop.changed() => if r.is_err() || *stop.borrow() { break },
        }
    }
}
