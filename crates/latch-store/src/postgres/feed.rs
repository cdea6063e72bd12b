//! The PostgreSQL change feed: `LISTEN latch_changes` on a dedicated connection, heartbeats
//! that prove it current, and the payloads that [`apply`](latch_core::ports::Store::apply)
//! sends with `NOTIFY` (see [`PgStore`]).

use std::time::Duration;

use async_trait::async_trait;
use latch_core::ports::{ChangeFeed, FeedSettings, StoreChange, StoreError, Write};
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};
use tokio::sync::mpsc;

use super::{PgStore, describe, write_error};
use crate::codec::encode;

/// The notification channel of row changes (`LISTEN latch_changes`).
pub const CHANGE_CHANNEL: &str = "latch_changes";
/// First and longest wait between reconnection attempts of the change listener.
const LISTEN_RETRY_MIN: Duration = Duration::from_millis(100);
const LISTEN_RETRY_MAX: Duration = Duration::from_secs(2);
/// Longest wait for the listener to connect and `LISTEN`, or for one heartbeat to be sent.
const FEED_CALL_TIMEOUT: Duration = Duration::from_secs(5);

impl PgStore {
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
        let pool = self.writer.clone();
        let options = self.extra.options.clone();
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

    /// The fraction (0 to 1) of PostgreSQL's notification queue in use
    /// (`pg_notification_queue_usage()`). When it is full every transaction that notifies
    /// fails at commit, revocations included: a session that `LISTEN`s and then stays in a
    /// transaction pins the queue, and anyone who can connect can do that.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database cannot be reached.
    pub async fn notification_queue_usage(&self) -> Result<f64, StoreError> {
        self.bounded("notification queue usage", async {
            sqlx::query_scalar::<_, f64>("SELECT pg_notification_queue_usage()")
                .fetch_one(&self.writer)
                .await
                .map_err(|e| super::unavailable("notification queue usage", &e))
        })
        .await
    }

    /// Whether roles without a grant of their own may connect to this database (`PUBLIC` holds
    /// `CONNECT`, PostgreSQL's default). Any role that can connect can `LISTEN`/`NOTIFY` on the
    /// change channel, pin the notification queue and so block revocations: operators should
    /// `REVOKE CONNECT ON DATABASE … FROM PUBLIC`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database cannot be reached.
    pub async fn public_may_connect(&self) -> Result<bool, StoreError> {
        self.bounded("database privileges", async {
            sqlx::query_scalar::<_, bool>(
                "SELECT has_database_privilege('public', current_database(), 'CONNECT')",
            )
            .fetch_one(&self.writer)
            .await
            .map_err(|e| super::unavailable("database privileges", &e))
        })
        .await
    }
}

#[async_trait]
impl ChangeFeed for PgStore {
    fn watch(&self, settings: FeedSettings) -> mpsc::Receiver<StoreChange> {
        self.watch_with(settings)
    }

    async fn queue_usage(&self) -> Result<f64, StoreError> {
        self.notification_queue_usage().await
    }

    async fn public_may_connect(&self) -> Result<bool, StoreError> {
        PgStore::public_may_connect(self).await
    }
}

/// Notifies listeners of the leases and tasks `writes` updated (delivered at `COMMIT`, not at
/// all on rollback).
pub(super) async fn notify_changes(
    tx: &mut Transaction<'static, Postgres>,
    writes: &[Write],
) -> Result<(), StoreError> {
    let changed: Vec<String> = writes
        .iter()
        .filter_map(|w| match w {
            Write::UpdateTask(t) => Some(format!("t:{}", t.id)),
            Write::UpdateLease(l) => Some(format!("l:{}", l.id)),
            _ => None,
        })
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
        .bind(CHANGE_CHANNEL)
        .bind(change_payloads(&changed)?)
        .execute(&mut **tx)
        .await
        .map_err(|e| write_error("notify change", &e))?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
