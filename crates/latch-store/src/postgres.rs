//! The PostgreSQL store, shared by broker replicas.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use latch_core::audit::{AuditCheckpoint, AuditRecord, chain_hash};
use latch_core::model::{AccessRequest, Approval, AuditEvent, AuditFilter, Lease, Task};
use latch_core::ports::{Store, StoreError, Write, WriteBatch};
use serde::de::DeserializeOwned;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{Postgres, SqlSafeStr, Transaction};
use tokio::sync::mpsc;

use crate::sqlite::{cas, encode};

/// Embedded migrations, in version order: `(version, description, sql)`.
///
/// Every file in `migrations/postgres/` must be listed here (a unit test checks it).
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "used_once",
        include_str!("../migrations/postgres/0002_used_once.sql"),
    ),
];

/// The notification channel of row changes (`LISTEN latch_changes`).
pub const CHANGE_CHANNEL: &str = "latch_changes";
/// Default connection-pool size.
const POOL_SIZE: u32 = 16;
/// How long a caller waits for a pooled connection (a restarting server makes this the wait).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default and maximum page sizes of [`Store::audit_events`].
const AUDIT_DEFAULT_LIMIT: u32 = 100;
const AUDIT_MAX_LIMIT: u32 = 1000;
/// First and longest wait between reconnection attempts of the change listener.
const LISTEN_RETRY_MIN: Duration = Duration::from_millis(100);
const LISTEN_RETRY_MAX: Duration = Duration::from_secs(2);
/// Longest wait for the listener to connect and `LISTEN`, or for one heartbeat to be sent.
const FEED_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How [`PgStore::watch_with`] proves its listener is current.
///
/// Every `heartbeat_every` the feed notes the instant, then sends a heartbeat notification
/// carrying a fresh random token through the pool (another connection); one is in flight at a
/// time. PostgreSQL delivers notifications in commit order, so when the listener receives that
/// token, every change committed before the noted instant has already been received: the feed
/// reports [`StoreChange::Fresh`] with that instant. A listener that has not received its own
/// heartbeat for `stall_after` is presumed silently stalled (a hung backend, a half-open TCP
/// connection, a middlebox that drops packets without a reset): the feed reports
/// [`StoreChange::Lost`], drops the connection and listens on a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedSettings {
    /// Interval between heartbeats (default 100 ms).
    pub heartbeat_every: Duration,
    /// Silence after which the listener is replaced (default 3 s).
    pub stall_after: Duration,
}

impl Default for FeedSettings {
    fn default() -> Self {
        Self {
            heartbeat_every: Duration::from_millis(100),
            stall_after: Duration::from_secs(3),
        }
    }
}

/// A change another writer (this process or another replica) committed, as seen by
/// [`PgStore::watch`]. Caches keyed by these rows must drop their copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChange {
    /// A lease was updated (revoked, renewed, …): forget any cached copy of it.
    Lease(String),
    /// A task was updated (ended, …): forget any cached copy of it.
    Task(String),
    /// The change feed was interrupted: notifications may have been missed, so caches must not
    /// be trusted until [`Resynced`](Self::Resynced).
    Lost,
    /// The change feed is (re)connected: drop every cached row. It is followed at once by a
    /// [`Fresh`](Self::Fresh) for the instant listening began.
    Resynced,
    /// A notification that names no rows (not one Latch sends: another client on the channel)
    /// arrived: drop every cached row, since it cannot be told which changed. The feed stays
    /// connected, and as current as before.
    Unknown,
    /// Every change committed before this instant has been reported (as `Lease`/`Task` items
    /// earlier in the feed). A cache is current as of the newest such instant; how stale it
    /// may become before it is bypassed is the consumer's bound.
    Fresh(tokio::time::Instant),
}

/// A [`Store`] on PostgreSQL (13 or newer), for one broker or several replicas sharing it.
///
/// * Every [`apply`](Store::apply) is one `READ COMMITTED` transaction. Updates are
///   compare-and-set on `version` (a concurrent writer's update makes the row re-checked, so
///   exactly one of two racing writers wins); [`Write::RequireTaskOpen`] takes a `FOR SHARE`
///   lock on the task, so a task cannot end between the check and the commit.
/// * Audit events get their `seq`, `prev_hash` and `hash` under a row lock on the one-row
///   `audit_head` table (`SELECT … FOR UPDATE`), taken last in the transaction: appends are
///   serialised across every replica and the log stays one gapless chain.
/// * Lease and task updates send `NOTIFY latch_changes` in the same transaction (delivered at
///   commit), which [`watch`](Self::watch) turns into [`StoreChange`]s.
/// * Reaper claims ([`Store::claim_due_leases`]) use `FOR UPDATE SKIP LOCKED` and a claim
///   expiry, so replicas split the due leases and a dead replica's claims are taken over.
/// * Migrations embedded from `migrations/postgres/` run at [`open`](Self::open), under
///   sqlx's advisory lock (replicas starting together migrate once).
///
/// Cloning is cheap and shares the pool.
///
/// # Security
/// The connection URL may carry a password: it is never logged, and errors name only what
/// failed. Row bodies never appear in errors.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// How to open the change feed's own connections (outside the pool; carries the password).
    options: PgConnectOptions,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("connections", &self.pool.size())
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to the database named by `url` (`postgres://user@host:port/db?…`, as libpq
    /// accepts; TLS is not compiled in, so use a local socket, loopback or a private network)
    /// and brings its schema up to date.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the URL is malformed, the server is unreachable, or a
    /// migration fails (including an applied migration whose SQL has since changed).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url.trim()).map_err(|_| {
            // The sqlx error may quote the URL, password included.
            StoreError::Unavailable("postgres: invalid store url".into())
        })?;
        let options = options.application_name("latch");
        let listen_options = options.clone();
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A pooled connection is checked before use, so a restarted server costs one
            // failed check per stale connection, not a failed call.
            .test_before_acquire(true)
            .connect_with(options)
            .await
            .map_err(|e| unavailable("connect", &e))?;
        let store = Self {
            pool,
            options: listen_options,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Closes every connection, waiting for in-flight work to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let migrations = MIGRATIONS
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect();
        Migrator::with_migrations(migrations)
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("schema migration failed: {e}")))
    }

    /// Records `key` as used until `expires_at_unix_secs`, for every replica: `true` the first
    /// time (or once an earlier use expired before `now_unix_secs`), `false` for a replay.
    /// One statement (`INSERT … ON CONFLICT … WHERE expired`), so two replicas racing on one
    /// key cannot both get `true`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database cannot be reached; callers must then
    /// refuse (never accept a value unchecked).
    pub async fn use_once(
        &self,
        key: &str,
        expires_at_unix_secs: i64,
        now_unix_secs: i64,
    ) -> Result<bool, StoreError> {
        let first = sqlx::query_scalar::<_, i32>(
            "INSERT INTO used_once (key, expires_at) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET expires_at = EXCLUDED.expires_at \
             WHERE used_once.expires_at < $3 RETURNING 1",
        )
        .bind(key)
        .bind(expires_at_unix_secs)
        .bind(now_unix_secs)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| write_error("record one-time value", &e))?;
        Ok(first.is_some())
    }

    /// Deletes the one-time values that expired before `now_unix_secs`; returns how many.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database cannot be reached.
    pub async fn forget_expired_once(&self, now_unix_secs: i64) -> Result<u64, StoreError> {
        sqlx::query("DELETE FROM used_once WHERE expires_at < $1")
            .bind(now_unix_secs)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected())
            .map_err(|e| write_error("purge one-time values", &e))
    }

    /// The fraction (0 to 1) of PostgreSQL's notification queue in use
    /// (`pg_notification_queue_usage()`). When it is full every transaction that notifies
    /// fails at commit, revocations included: a session that `LISTEN`s and then stays in a
    /// transaction pins the queue, and anyone who can connect can do that.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database cannot be reached.
    pub async fn notification_queue_usage(&self) -> Result<f64, StoreError> {
        sqlx::query_scalar::<_, f64>("SELECT pg_notification_queue_usage()")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| unavailable("notification queue usage", &e))
    }

    /// Whether roles without a grant of their own may connect to this database (`PUBLIC` holds
    /// `CONNECT`, PostgreSQL's default). Any role that can connect can `LISTEN`/`NOTIFY` on the
    /// change channel, pin the notification queue and so block revocations: operators should
    /// `REVOKE CONNECT ON DATABASE … FROM PUBLIC`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database cannot be reached.
    pub async fn public_may_connect(&self) -> Result<bool, StoreError> {
        sqlx::query_scalar::<_, bool>(
            "SELECT has_database_privilege('public', current_database(), 'CONNECT')",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| unavailable("database privileges", &e))
    }

    /// Starts following the changes other writers commit, with [`FeedSettings::default`].
    /// See [`watch_with`](Self::watch_with).
    pub fn watch(&self) -> mpsc::Receiver<StoreChange> {
        self.watch_with(FeedSettings::default())
    }

    /// Starts following the changes other writers commit (`LISTEN latch_changes` on a
    /// dedicated connection) and returns them as a stream of [`StoreChange`]s.
    ///
    /// The feed starts with [`StoreChange::Lost`] until the first `LISTEN` succeeds, then sends
    /// [`StoreChange::Resynced`] and [`StoreChange::Fresh`], and a `Fresh` for every heartbeat
    /// that comes back (see [`FeedSettings`]). When the connection drops (server restart,
    /// network) or stalls without an error, it sends `Lost`, reconnects with backoff (100 ms
    /// doubling to 2 s) and sends `Resynced` again. The background task stops when the
    /// receiver is dropped.
    ///
    /// # Security
    /// Any role that can connect to the database can `NOTIFY` (and `LISTEN`) on the channel.
    /// Heartbeats therefore carry only a fresh random token; the send instant is what this
    /// process recorded for it, so a forged or copied heartbeat proves nothing (see
    /// `follow_listener`). Such a role can still make the replicas drop their caches (an
    /// unparsable payload) and read the database for every lookup, which is slower but never
    /// stale: revoke `CONNECT` on the database from `PUBLIC`.
    pub fn watch_with(&self, settings: FeedSettings) -> mpsc::Receiver<StoreChange> {
        let (tx, rx) = mpsc::channel(1024);
        let pool = self.pool.clone();
        let options = self.options.clone();
        tokio::spawn(async move {
            let mut wait = LISTEN_RETRY_MIN;
            loop {
                if tx.send(StoreChange::Lost).await.is_err() {
                    return;
                }
                // Its own one-connection pool, never the shared one: a stalled connection that
                // is given up on may hang forever (sqlx sends `UNLISTEN *` on drop, unbounded),
                // and must not keep a slot the broker's calls need.
                let listener = tokio::time::timeout(FEED_CALL_TIMEOUT, async {
                    let own = PgPoolOptions::new()
                        .max_connections(1)
                        .min_connections(0)
                        .max_lifetime(None)
                        .idle_timeout(None)
                        .acquire_timeout(FEED_CALL_TIMEOUT)
                        .connect_with(options.clone())
                        .await?;
                    let mut l = PgListener::connect_with(&own).await?;
                    // A lost connection ends this session (the caller reconnects and resyncs).
                    l.eager_reconnect(false);
                    l.listen(CHANGE_CHANNEL).await?;
                    Ok::<_, sqlx::Error>(l)
                })
                .await;
                let listener = match listener {
                    Ok(Ok(l)) => l,
                    failed => {
                        let why = match failed {
                            Ok(Err(e)) => describe(&e),
                            _ => "timed out".into(),
                        };
                        tracing::warn!(error = %why, "postgres change feed: cannot listen; retrying");
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            () = tx.closed() => return,
                        }
                        wait = (wait * 2).min(LISTEN_RETRY_MAX);
                        continue;
                    }
                };
                let listening_since = tokio::time::Instant::now();
                wait = LISTEN_RETRY_MIN;
                if tx.send(StoreChange::Resynced).await.is_err()
                    || tx.send(StoreChange::Fresh(listening_since)).await.is_err()
                {
                    return;
                }
                match follow_listener(&tx, &pool, listener, settings).await {
                    FeedEnd::ReceiverGone => return,
                    FeedEnd::Interrupted => {
                        tracing::warn!("postgres change feed interrupted; reconnecting");
                    }
                    FeedEnd::Stalled => tracing::warn!(
                        silent_ms = settings.stall_after.as_millis() as u64,
                        "postgres change feed stalled (no heartbeat came back); reconnecting"
                    ),
                }
            }
        });
        rx
    }
}

/// Why [`follow_listener`] returned.
enum FeedEnd {
    ReceiverGone,
    Interrupted,
    Stalled,
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Most heartbeats awaited at once (older ones are forgotten; they could only prove less).
const MAX_PENDING_HEARTBEATS: usize = 4096;

/// Forwards one listener connection's notifications to `tx` and sends its heartbeats, until
/// the connection fails, stalls or the receiver is dropped. The connection is dropped on return.
///
/// # Security
/// Every role that can connect to the database can `LISTEN` and `NOTIFY` on the channel, so a
/// heartbeat proves nothing by its content: each carries a fresh random token, and its send
/// instant is what this process recorded under that token *before* sending it. A forged
/// heartbeat (unknown token) is ignored; a copy of a real one is committed after the original,
/// which is received first and retires the token.
async fn follow_listener(
    tx: &mpsc::Sender<StoreChange>,
    pool: &PgPool,
    mut listener: PgListener,
    settings: FeedSettings,
) -> FeedEnd {
    // The listener is read in its own task (ended on return), so that waiting for a
    // notification is never cancelled halfway through a message.
    let (ntx, mut nrx) = mpsc::channel::<String>(1024);
    let _reader = AbortOnDrop(tokio::spawn(async move {
        while let Ok(Some(n)) = listener.try_recv().await {
            if ntx.send(n.payload().to_owned()).await.is_err() {
                return;
            }
        }
    }));
    let mut ticker = tokio::time::interval(settings.heartbeat_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_beat = tokio::time::Instant::now();
    // Token → the instant just before its heartbeat was sent, oldest first.
    let mut pending: std::collections::VecDeque<(String, tokio::time::Instant)> =
        std::collections::VecDeque::new();
    let mut sending: Option<AbortOnDrop> = None;
    loop {
        tokio::select! {
            payload = nrx.recv() => {
                let Some(payload) = payload else { return FeedEnd::Interrupted };
                if let Some(token) = parse_heartbeat(&payload) {
                    if let Some(i) = pending.iter().position(|(t, _)| *t == token) {
                        // Heartbeats arrive in send order: earlier ones still pending were lost
                        // (a failed send), and could only prove less.
                        let sent = pending[i].1;
                        pending.drain(..=i);
                        last_beat = tokio::time::Instant::now();
                        if tx.send(StoreChange::Fresh(sent)).await.is_err() {
                            return FeedEnd::ReceiverGone;
                        }
                    }
                    continue;
                }
                let changes = parse_changes(&payload).unwrap_or_else(|| vec![StoreChange::Unknown]);
                for change in changes {
                    if tx.send(change).await.is_err() {
                        return FeedEnd::ReceiverGone;
                    }
                }
            }
            _ = ticker.tick() => {
                if last_beat.elapsed() >= settings.stall_after {
                    return FeedEnd::Stalled;
                }
                // One heartbeat in flight at a time: a slow server must not eat the pool.
                if sending.as_ref().is_none_or(|s| s.0.is_finished()) {
                    let token = uuid::Uuid::new_v4().simple().to_string();
                    if pending.len() >= MAX_PENDING_HEARTBEATS {
                        pending.pop_front();
                    }
                    pending.push_back((token.clone(), tokio::time::Instant::now()));
                    let pool = pool.clone();
                    sending = Some(AbortOnDrop(tokio::spawn(async move {
                        let sent = tokio::time::timeout(
                            FEED_CALL_TIMEOUT,
                            sqlx::query("SELECT pg_notify($1, $2)")
                                .bind(CHANGE_CHANNEL)
                                .bind(heartbeat_payload(&token))
                                .execute(&pool),
                        )
                        .await;
                        if !matches!(sent, Ok(Ok(_))) {
                            tracing::debug!("postgres change feed: heartbeat not sent");
                        }
                    })));
                }
            }
            () = tx.closed() => return FeedEnd::ReceiverGone,
        }
    }
}

/// `["h:<random token>"]`: a change list whose one item older replicas ignore (they know only
/// `l:` and `t:` items).
fn heartbeat_payload(token: &str) -> String {
    serde_json::json!([format!("h:{token}")]).to_string()
}

/// The token of a heartbeat payload; `None` for anything else.
fn parse_heartbeat(payload: &str) -> Option<String> {
    if !payload.starts_with("[\"h:") {
        return None;
    }
    let [item] =
        <[String; 1]>::try_from(serde_json::from_str::<Vec<String>>(payload).ok()?).ok()?;
    item.strip_prefix("h:").map(str::to_owned)
}

/// Longest notification payload sent (PostgreSQL refuses 8000 bytes and more).
const MAX_PAYLOAD: usize = 7000;

/// Encodes `l:<lease id>` / `t:<task id>` items as JSON arrays of at most [`MAX_PAYLOAD`]
/// bytes each (a task ended with hundreds of leases takes several notifications).
fn change_payloads(items: &[String]) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    let mut chunk: Vec<&str> = Vec::new();
    let mut size = 2;
    for item in items {
        let len = encode("change", item)?.len() + 1;
        if !chunk.is_empty() && size + len > MAX_PAYLOAD {
            out.push(encode("change", &chunk)?);
            chunk.clear();
            size = 2;
        }
        if len + 2 > MAX_PAYLOAD {
            return Err(StoreError::Unavailable(
                "an id is too long to notify".into(),
            ));
        }
        chunk.push(item);
        size += len;
    }
    if !chunk.is_empty() {
        out.push(encode("change", &chunk)?);
    }
    Ok(out)
}

/// Parses a notification payload (a JSON array of `l:<lease id>` / `t:<task id>` items; other
/// items are ignored). A payload that is not such an array yields `None`: the caller must then
/// drop every cached row, since it cannot tell which changed.
fn parse_changes(payload: &str) -> Option<Vec<StoreChange>> {
    let items = serde_json::from_str::<Vec<String>>(payload).ok()?;
    Some(
        items
            .into_iter()
            .filter_map(|item| {
                if let Some(id) = item.strip_prefix("l:") {
                    Some(StoreChange::Lease(id.to_owned()))
                } else {
                    item.strip_prefix("t:")
                        .map(|id| StoreChange::Task(id.to_owned()))
                }
            })
            .collect(),
    )
}

/// Maps a sqlx error onto [`StoreError::Unavailable`]. Messages name tables, columns and
/// constraints, never row values (the server's `DETAIL`, which can quote values, is dropped).
fn unavailable(what: &str, e: &sqlx::Error) -> StoreError {
    StoreError::Unavailable(format!("postgres: {what}: {}", describe(e)))
}

fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("{} (code {code})", db.message()),
            None => db.message().to_owned(),
        },
        sqlx::Error::Configuration(_) => "invalid configuration".to_owned(),
        other => other.to_string(),
    }
}

/// Maps an error from a write: unique and foreign-key violations, serialisation failures and
/// deadlocks (nothing was written; another writer won) are conflicts.
fn write_error(what: &str, e: &sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = e {
        if db.is_unique_violation() {
            return StoreError::Conflict(format!("{what}: already exists"));
        }
        if db.is_foreign_key_violation() {
            return StoreError::Conflict(format!("{what}: refers to a row that does not exist"));
        }
        if matches!(db.code().as_deref(), Some("40001" | "40P01")) {
            return StoreError::Conflict(format!("{what}: concurrent update, try again"));
        }
    }
    unavailable(what, e)
}

fn decode<T: DeserializeOwned>(what: &str, body: &str) -> Result<T, StoreError> {
    serde_json::from_str(body)
        .map_err(|_| StoreError::Unavailable(format!("stored {what} row cannot be decoded")))
}

fn decode_all<T: DeserializeOwned>(what: &str, bodies: Vec<String>) -> Result<Vec<T>, StoreError> {
    bodies.iter().map(|b| decode(what, b)).collect()
}

fn limit(n: u32) -> i64 {
    i64::from(n)
}

/// Escapes `%`, `_` and `\` for `LIKE … ESCAPE '\'` and appends `%`.
fn like_prefix(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

const UPDATE_LEASE: &str = "UPDATE leases SET task_id = $2, request_id = $3, state = $4, \
     issued_at = $5, expires_at = $6, next_revoke_at = $7, credential_hmac = $8, version = $9, \
     body = $10, claim_owner = NULL, claim_until = NULL WHERE id = $1 AND version = $11";

async fn apply_write(
    tx: &mut Transaction<'static, Postgres>,
    w: &Write,
    changed: &mut Vec<String>,
) -> Result<(), StoreError> {
    match w {
        Write::InsertTask(t) => {
            sqlx::query(
                "INSERT INTO tasks (id, owner_id, state, created_at, expires_at, version, body) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&t.id)
            .bind(&t.owner.id)
            .bind(t.state.as_str())
            .bind(t.created_at_unix_secs)
            .bind(t.expires_at_unix_secs)
            .bind(t.version)
            .bind(encode("task", t)?)
            .execute(&mut **tx)
            .await
            .map_err(|e| write_error("insert task", &e))?;
        }
        Write::UpdateTask(t) => {
            let r = sqlx::query(
                "UPDATE tasks SET owner_id = $2, state = $3, created_at = $4, expires_at = $5, \
                 version = $6, body = $7 WHERE id = $1 AND version = $8",
            )
            .bind(&t.id)
            .bind(&t.owner.id)
            .bind(t.state.as_str())
            .bind(t.created_at_unix_secs)
            .bind(t.expires_at_unix_secs)
            .bind(t.version)
            .bind(encode("task", t)?)
            .bind(t.version - 1)
            .execute(&mut **tx)
            .await
            .map_err(|e| write_error("update task", &e))?;
            cas("task", &t.id, r.rows_affected())?;
            changed.push(format!("t:{}", t.id));
        }
        Write::RequireTaskOpen { task_id, version } => {
            // FOR SHARE: a concurrent end of the task waits for this transaction, and one that
            // committed first makes the row re-checked (and fail) here.
            let n = sqlx::query_scalar::<_, i32>(
                "SELECT 1 FROM tasks WHERE id = $1 AND version = $2 AND state = 'open' FOR SHARE",
            )
            .bind(task_id)
            .bind(version)
            .fetch_optional(&mut **tx)
            .await
            .map_err(|e| write_error("check task", &e))?;
            cas("task", task_id, u64::from(n.is_some()))?;
        }
        Write::InsertRequest(r) => {
            sqlx::query(
                "INSERT INTO requests (id, task_id, state, created_at, expires_at, version, body) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&r.id)
            .bind(&r.task_id)
            .bind(r.state.as_str())
            .bind(r.created_at_unix_secs)
            .bind(r.expires_at_unix_secs)
            .bind(r.version)
            .bind(encode("request", r)?)
            .execute(&mut **tx)
            .await
            .map_err(|e| write_error("insert request", &e))?;
        }
        Write::UpdateRequest(r) => {
            let res = sqlx::query(
                "UPDATE requests SET task_id = $2, state = $3, created_at = $4, expires_at = $5, \
                 version = $6, body = $7 WHERE id = $1 AND version = $8",
            )
            .bind(&r.id)
            .bind(&r.task_id)
            .bind(r.state.as_str())
            .bind(r.created_at_unix_secs)
            .bind(r.expires_at_unix_secs)
            .bind(r.version)
            .bind(encode("request", r)?)
            .bind(r.version - 1)
            .execute(&mut **tx)
            .await
            .map_err(|e| write_error("update request", &e))?;
            cas("request", &r.id, res.rows_affected())?;
        }
        Write::InsertApproval(a) => {
            sqlx::query(
                "INSERT INTO approvals (id, request_id, approver, created_at, body) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&a.id)
            .bind(&a.request_id)
            .bind(&a.approver)
            .bind(a.created_at_unix_secs)
            .bind(encode("approval", a)?)
            .execute(&mut **tx)
            .await
            .map_err(|e| write_error("insert approval", &e))?;
        }
        Write::InsertLease(l) => {
            sqlx::query(
                "INSERT INTO leases (id, task_id, request_id, state, issued_at, expires_at, \
                 next_revoke_at, credential_hmac, version, body) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(&l.id)
            .bind(&l.task_id)
            .bind(&l.request_id)
            .bind(l.state.as_str())
            .bind(l.issued_at_unix_secs)
            .bind(l.expires_at_unix_secs)
            .bind(l.next_revoke_at_unix_secs)
            .bind(l.credential_hmac.as_deref())
            .bind(l.version)
            .bind(encode("lease", l)?)
            .execute(&mut **tx)
            .await
            .map_err(|e| write_error("insert lease", &e))?;
        }
        Write::UpdateLease(l) => {
            let res = sqlx::query(UPDATE_LEASE)
                .bind(&l.id)
                .bind(&l.task_id)
                .bind(&l.request_id)
                .bind(l.state.as_str())
                .bind(l.issued_at_unix_secs)
                .bind(l.expires_at_unix_secs)
                .bind(l.next_revoke_at_unix_secs)
                .bind(l.credential_hmac.as_deref())
                .bind(l.version)
                .bind(encode("lease", l)?)
                .bind(l.version - 1)
                .execute(&mut **tx)
                .await
                .map_err(|e| write_error("update lease", &e))?;
            cas("lease", &l.id, res.rows_affected())?;
            changed.push(format!("l:{}", l.id));
        }
    }
    Ok(())
}

/// Appends `events` to the chain under the `audit_head` row lock; returns their seqs.
async fn append_events(
    tx: &mut Transaction<'static, Postgres>,
    events: &[AuditEvent],
) -> Result<Vec<i64>, StoreError> {
    let bodies = events
        .iter()
        .map(|e| {
            latch_core::audit::encode_event(e)
                .map_err(|_| StoreError::Unavailable("could not encode audit event".into()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (mut seq, mut prev) =
        sqlx::query_as::<_, (i64, String)>("SELECT seq, hash FROM audit_head WHERE one FOR UPDATE")
            .fetch_one(&mut **tx)
            .await
            .map_err(|e| write_error("lock audit chain head", &e))?;
    let mut seqs = Vec::with_capacity(events.len());
    for body in bodies {
        seq += 1;
        let hash = chain_hash(&prev, seq, &body);
        sqlx::query(
            "INSERT INTO audit_events (seq, body, prev_hash, hash) VALUES ($1, $2, $3, $4)",
        )
        .bind(seq)
        .bind(body)
        .bind(&prev)
        .bind(&hash)
        .execute(&mut **tx)
        .await
        .map_err(|err| write_error("append audit event", &err))?;
        prev = hash;
        seqs.push(seq);
    }
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE one")
        .bind(seq)
        .bind(&prev)
        .execute(&mut **tx)
        .await
        .map_err(|e| write_error("move audit chain head", &e))?;
    Ok(seqs)
}

/// Decodes `(seq, body, prev_hash, hash)` audit rows, filling the chain fields from the columns.
fn decode_events(rows: Vec<(i64, String, String, String)>) -> Result<Vec<AuditEvent>, StoreError> {
    rows.into_iter()
        .map(|(seq, body, prev_hash, hash)| {
            let mut e: AuditEvent = decode("audit event", &body)?;
            e.seq = seq;
            e.prev_hash = Some(prev_hash);
            e.hash = Some(hash);
            Ok(e)
        })
        .collect()
}

/// The due-lease predicate (`$1` now, `$2` issuing grace) shared by listing and claiming.
const DUE: &str = "((state = 'active' AND expires_at <= $1) \
     OR (state = 'issuing' AND issued_at <= $1 - $2) \
     OR (state IN ('revoking', 'revoke_failed') AND next_revoke_at <= $1))";
/// Oldest-due-first order of due leases.
const DUE_ORDER: &str = "CASE state WHEN 'active' THEN expires_at \
     WHEN 'issuing' THEN issued_at + $2 ELSE next_revoke_at END, id";

#[async_trait]
impl Store for PgStore {
    async fn apply(&self, batch: WriteBatch) -> Result<Vec<i64>, StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| unavailable("begin transaction", &e))?;
        let result = async {
            let mut changed = Vec::new();
            for w in &batch.writes {
                apply_write(&mut tx, w, &mut changed).await?;
            }
            if !changed.is_empty() {
                // Delivered to listeners at COMMIT, not at all on rollback.
                sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
                    .bind(CHANGE_CHANNEL)
                    .bind(change_payloads(&changed)?)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| write_error("notify change", &e))?;
            }
            // Last, so the chain lock is held only for the appends and the commit.
            if batch.audit.is_empty() {
                Ok(Vec::new())
            } else {
                append_events(&mut tx, &batch.audit).await
            }
        }
        .await;
        match result {
            Ok(seqs) => {
                tx.commit().await.map_err(|e| write_error("commit", &e))?;
                Ok(seqs)
            }
            Err(err) => {
                let _ = tx.rollback().await;
                Err(err)
            }
        }
    }

    async fn task(&self, id: &str) -> Result<Option<Task>, StoreError> {
        let body = sqlx::query_scalar::<_, String>("SELECT body FROM tasks WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| unavailable("read task", &e))?;
        body.map(|b| decode("task", &b)).transpose()
    }

    async fn tasks_by_owner(&self, owner_id: &str, n: u32) -> Result<Vec<Task>, StoreError> {
        let bodies = sqlx::query_scalar::<_, String>(
            "SELECT body FROM tasks WHERE owner_id = $1 \
             ORDER BY created_at DESC, id DESC LIMIT $2",
        )
        .bind(owner_id)
        .bind(limit(n))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| unavailable("list tasks by owner", &e))?;
        decode_all("task", bodies)
    }

    async fn expired_open_tasks(&self, now: i64, n: u32) -> Result<Vec<Task>, StoreError> {
        let bodies = sqlx::query_scalar::<_, String>(
            "SELECT body FROM tasks WHERE state = 'open' AND expires_at <= $1 \
             ORDER BY expires_at, id LIMIT $2",
        )
        .bind(now)
        .bind(limit(n))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| unavailable("list expired tasks", &e))?;
        decode_all("task", bodies)
    }

    async fn request(&self, id: &str) -> Result<Option<AccessRequest>, StoreError> {
        let body = sqlx::query_scalar::<_, String>("SELECT body FROM requests WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| unavailable("read request", &e))?;
        body.map(|b| decode("request", &b)).transpose()
    }

    async fn pending_requests(&self, n: u32) -> Result<Vec<AccessRequest>, StoreError> {
        let bodies = sqlx::query_scalar::<_, String>(
            "SELECT body FROM requests WHERE state = 'pending' \
             ORDER BY created_at, id LIMIT $1",
        )
        .bind(limit(n))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| unavailable("list pending requests", &e))?;
        decode_all("request", bodies)
    }

    async fn expired_requests(&self, now: i64, n: u32) -> Result<Vec<AccessRequest>, StoreError> {
        let bodies = sqlx::query_scalar::<_, String>(
            "SELECT body FROM requests WHERE state IN ('pending', 'approved') \
             AND expires_at <= $1 ORDER BY expires_at, id LIMIT $2",
        )
        .bind(now)
        .bind(limit(n))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| unavailable("list expired requests", &e))?;
        decode_all("request", bodies)
    }

    async fn approvals(&self, request_id: &str) -> Result<Vec<Approval>, StoreError> {
        let bodies = sqlx::query_scalar::<_, String>(
            "SELECT body FROM approvals WHERE request_id = $1 ORDER BY seq",
        )
        .bind(request_id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| unavailable("list approvals", &e))?;
        decode_all("approval", bodies)
    }

    async fn lease(&self, id: &str) -> Result<Option<Lease>, StoreError> {
        let body = sqlx::query_scalar::<_, String>("SELECT body FROM leases WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| unavailable("read lease", &e))?;
        body.map(|b| decode("lease", &b)).transpose()
    }

    async fn leases_by_task(&self, task_id: &str) -> Result<Vec<Lease>, StoreError> {
        let bodies = sqlx::query_scalar::<_, String>(
            "SELECT body FROM leases WHERE task_id = $1 ORDER BY issued_at, id",
        )
        .bind(task_id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| unavailable("list leases by task", &e))?;
        decode_all("lease", bodies)
    }

    async fn active_leases(&self, after_id: &str, n: u32) -> Result<Vec<Lease>, StoreError> {
        let bodies = sqlx::query_scalar::<_, String>(
            "SELECT body FROM leases WHERE state = 'active' AND id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after_id)
        .bind(limit(n))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| unavailable("list active leases", &e))?;
        decode_all("lease", bodies)
    }

    async fn due_leases(
        &self,
        now: i64,
        issuing_grace_secs: i64,
        n: u32,
    ) -> Result<Vec<Lease>, StoreError> {
        let sql = format!("SELECT body FROM leases WHERE {DUE} ORDER BY {DUE_ORDER} LIMIT $3");
        let bodies = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(issuing_grace_secs)
            .bind(limit(n))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| unavailable("list due leases", &e))?;
        decode_all("lease", bodies)
    }

    async fn claim_due_leases(
        &self,
        now: i64,
        issuing_grace_secs: i64,
        owner: &str,
        claim_until_unix_secs: i64,
        n: u32,
    ) -> Result<Vec<Lease>, StoreError> {
        // SKIP LOCKED: rows another replica is claiming right now are left to it; rows it
        // claimed earlier stay its own until their claim expires (a dead replica's claims are
        // then taken over).
        let sql = format!(
            "WITH due AS (SELECT id FROM leases WHERE {DUE} \
                 AND (claim_until IS NULL OR claim_until <= $1) \
                 ORDER BY {DUE_ORDER} LIMIT $3 FOR UPDATE SKIP LOCKED) \
             UPDATE leases l SET claim_owner = $4, claim_until = $5 FROM due \
             WHERE l.id = due.id RETURNING l.body"
        );
        let bodies = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(issuing_grace_secs)
            .bind(limit(n))
            .bind(owner)
            .bind(claim_until_unix_secs)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| write_error("claim due leases", &e))?;
        decode_all("lease", bodies)
    }

    async fn revoked_unexpired_leases(
        &self,
        now: i64,
        after_id: &str,
        n: u32,
    ) -> Result<Vec<Lease>, StoreError> {
        let bodies = sqlx::query_scalar::<_, String>(
            "SELECT body FROM leases WHERE state IN ('revoking', 'revoke_failed', 'revoked') \
             AND expires_at > $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(now)
        .bind(after_id)
        .bind(limit(n))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| unavailable("list revoked leases", &e))?;
        decode_all("lease", bodies)
    }

    async fn lease_by_credential_hmac(&self, hmac_hex: &str) -> Result<Option<Lease>, StoreError> {
        let body = sqlx::query_scalar::<_, String>(
            "SELECT body FROM leases WHERE credential_hmac = $1 \
             ORDER BY issued_at DESC, id LIMIT 1",
        )
        .bind(hmac_hex)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| unavailable("find lease by credential", &e))?;
        body.map(|b| decode("lease", &b)).transpose()
    }

    async fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        let n = filter
            .limit
            .unwrap_or(AUDIT_DEFAULT_LIMIT)
            .min(AUDIT_MAX_LIMIT);
        let after = filter.after_seq.unwrap_or(0);
        let like = filter.kind_prefix.as_deref().map(like_prefix);
        let hmac = filter
            .credential_hmac
            .as_deref()
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_ascii_lowercase);
        if filter.credential_hmac.is_some() && hmac.is_none() {
            return Ok(Vec::new());
        }
        // Static statements, each led by a predicate an index serves; PostgreSQL's LIKE is
        // case-sensitive, so the kind prefix needs no second comparison.
        const REST: &str = "AND ($3::text IS NULL OR kind LIKE $3 ESCAPE '\\') \
             AND ($6::text IS NULL OR actor = $6) AND ($7::bigint IS NULL OR at_unix_secs >= $7) \
             AND ($8::bigint IS NULL OR at_unix_secs < $8) AND ($9::text IS NULL OR credential_hmac = $9) \
             AND seq > $4 ORDER BY seq LIMIT $5";
        let lead = if filter.task_id.is_some() {
            "SELECT seq, body, prev_hash, hash FROM audit_events WHERE task_id = $1 \
             AND ($2::text IS NULL OR lease_id = $2) "
        } else if filter.lease_id.is_some() {
            "SELECT seq, body, prev_hash, hash FROM audit_events WHERE lease_id = $2 \
             AND ($1::text IS NULL OR task_id = $1) "
        } else {
            "SELECT seq, body, prev_hash, hash FROM audit_events \
             WHERE ($1::text IS NULL OR task_id = $1) AND ($2::text IS NULL OR lease_id = $2) "
        };
        let sql = format!("{lead}{REST}");
        let rows = sqlx::query_as::<_, (i64, String, String, String)>(sqlx::AssertSqlSafe(sql))
            .bind(filter.task_id.as_deref())
            .bind(filter.lease_id.as_deref())
            .bind(like)
            .bind(after)
            .bind(limit(n))
            .bind(filter.actor.as_deref())
            .bind(filter.since_unix_secs)
            .bind(filter.until_unix_secs)
            .bind(hmac)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| unavailable("list audit events", &e))?;
        decode_events(rows)
    }

    async fn audit_records(
        &self,
        after_seq: i64,
        limit_n: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query_as::<_, (i64, String, String, String)>(
            "SELECT seq, prev_hash, hash, body FROM audit_events WHERE seq > $1 \
             ORDER BY seq LIMIT $2",
        )
        .bind(after_seq)
        .bind(limit(limit_n.clamp(1, 10_000)))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| unavailable("read audit records", &e))?;
        Ok(rows
            .into_iter()
            .map(|(seq, prev_hash, hash, body)| AuditRecord {
                seq,
                prev_hash,
                hash,
                body,
            })
            .collect())
    }

    async fn audit_head(&self) -> Result<Option<(i64, String)>, StoreError> {
        sqlx::query_as::<_, (i64, String)>("SELECT seq, hash FROM audit_head WHERE one AND seq > 0")
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| unavailable("read audit head", &e))
    }

    async fn put_checkpoint(&self, cp: &AuditCheckpoint) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_checkpoints (seq, hash, at_unix_secs, kid, jws) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (seq) DO NOTHING",
        )
        .bind(cp.seq)
        .bind(&cp.hash)
        .bind(cp.at_unix_secs)
        .bind(&cp.kid)
        .bind(&cp.jws)
        .execute(&self.pool)
        .await
        .map_err(|e| write_error("store checkpoint", &e))?;
        Ok(())
    }

    async fn checkpoints(
        &self,
        after_seq: i64,
        limit_n: u32,
    ) -> Result<Vec<AuditCheckpoint>, StoreError> {
        let rows = sqlx::query_as::<_, crate::rows::CheckpointRow>(
            "SELECT seq, hash, at_unix_secs, kid, jws FROM audit_checkpoints WHERE seq > $1 \
             ORDER BY seq LIMIT $2",
        )
        .bind(after_seq)
        .bind(limit(limit_n.clamp(1, 10_000)))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| unavailable("read checkpoints", &e))?;
        Ok(rows.into_iter().map(crate::rows::checkpoint).collect())
    }

    async fn last_checkpoint(&self) -> Result<Option<AuditCheckpoint>, StoreError> {
        let row = sqlx::query_as::<_, crate::rows::CheckpointRow>(
            "SELECT seq, hash, at_unix_secs, kid, jws FROM audit_checkpoints \
             ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| unavailable("read checkpoints", &e))?;
        Ok(row.map(crate::rows::checkpoint))
    }

    async fn sink_cursor(&self, sink: &str) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar::<_, i64>("SELECT seq FROM audit_sink_cursors WHERE name = $1")
                .bind(sink)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| unavailable("read sink cursor", &e))?
                .unwrap_or(0),
        )
    }

    async fn set_sink_cursor(&self, sink: &str, seq: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_sink_cursors (name, seq) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET seq = GREATEST(audit_sink_cursors.seq, excluded.seq)",
        )
        .bind(sink)
        .bind(seq)
        .execute(&self.pool)
        .await
        .map_err(|e| write_error("store sink cursor", &e))?;
        Ok(())
    }

    async fn key_blob(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        sqlx::query_scalar::<_, Vec<u8>>("SELECT blob FROM key_blobs WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| unavailable("read key blob", &e))
    }

    async fn put_key_blob_if_absent(&self, name: &str, blob: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| unavailable("begin transaction", &e))?;
        // A concurrent insert of the same name makes this one wait for it, then do nothing;
        // the SELECT (a new snapshot under READ COMMITTED) then sees the winner's blob.
        sqlx::query("INSERT INTO key_blobs (name, blob) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(name)
            .bind(blob)
            .execute(&mut *tx)
            .await
            .map_err(|e| write_error("store key blob", &e))?;
        let stored = sqlx::query_scalar::<_, Vec<u8>>("SELECT blob FROM key_blobs WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| unavailable("read key blob", &e))?;
        tx.commit().await.map_err(|e| write_error("commit", &e))?;
        Ok(stored)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query_scalar::<_, i32>("SELECT 1")
            .fetch_one(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| unavailable("ping", &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_file_is_embedded() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .expect("migrations dir")
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let embedded: Vec<String> = MIGRATIONS
            .iter()
            .map(|(v, d, _)| format!("{v:04}_{d}.sql"))
            .collect();
        assert_eq!(files, embedded, "list each migrations/postgres/*.sql file");
    }

    #[test]
    fn heartbeats_round_trip_and_are_ignored_as_changes() {
        let p = heartbeat_payload("3f2a");
        assert_eq!(parse_heartbeat(&p).as_deref(), Some("3f2a"));
        // A replica that predates heartbeats sees an empty change list, not "drop everything".
        assert_eq!(parse_changes(&p), Some(vec![]));
        assert_eq!(parse_heartbeat(r#"["l:lease_1"]"#), None);
        assert_eq!(parse_heartbeat(r#"["h:1","l:x"]"#), None);
        assert_eq!(parse_heartbeat("nonsense"), None);
    }

    #[test]
    fn change_payloads_parse() {
        assert_eq!(
            parse_changes(r#"["l:lease_1","t:task 2","x:ignored"]"#),
            Some(vec![
                StoreChange::Lease("lease_1".into()),
                StoreChange::Task("task 2".into())
            ])
        );
        assert_eq!(
            parse_changes("not json"),
            None,
            "unparsable: drop everything"
        );
    }

    proptest::proptest! {
        /// Any list of changed rows, however long or oddly named, arrives whole and in order,
        /// in payloads PostgreSQL accepts.
        #[test]
        fn change_payloads_round_trip(
            ids in proptest::collection::vec(("[lt]", "\\PC{0,60}"), 0..400)
        ) {
            let items: Vec<String> = ids.iter().map(|(k, id)| format!("{k}:{id}")).collect();
            let payloads = change_payloads(&items).expect("encode");
            let mut got = Vec::new();
            for p in &payloads {
                proptest::prop_assert!(p.len() < 8000, "payload of {} bytes", p.len());
                got.extend(parse_changes(p).expect("parse"));
            }
            let want: Vec<StoreChange> = ids
                .iter()
                .map(|(k, id)| if k == "l" {
                    StoreChange::Lease(id.clone())
                } else {
                    StoreChange::Task(id.clone())
                })
                .collect();
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn genesis_matches_the_migration() {
        assert_eq!(latch_core::audit::GENESIS_HASH, "0".repeat(64));
    }
}
