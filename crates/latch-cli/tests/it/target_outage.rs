//! A real target that stops answering, end to end (issue 13, items 1 and 6): PostgreSQL behind
//! a TCP relay that, when frozen, accepts connections and never answers (what a postmaster
//! stopped with SIGSTOP does), and a real Redis beside it. The server runs its own targets job
//! (probes every 250 ms); the reaper is driven by hand so the fake clock decides expiry.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use latch_testkit::{TestOptions, TestServer, service_available};
use serde_json::{Value, json};

const PG_ADDR: &str = "127.0.0.1:5432";
const REDIS_ADDR: &str = "127.0.0.1:6379";

fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// A TCP relay to PostgreSQL. While frozen, new connections are accepted and then left without
/// a byte of answer, and relayed connections stop moving data.
struct FreezableRelay {
    port: u16,
    frozen: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl FreezableRelay {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let f = frozen.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    break;
                };
                if f.load(Ordering::SeqCst) {
                    held.push(inbound); // accepted, never answered
                    continue;
                }
                let f = f.clone();
                tokio::spawn(async move {
                    let Ok(out) = tokio::net::TcpStream::connect(PG_ADDR).await else {
                        return;
                    };
                    relay(inbound, out, f).await;
                });
            }
        });
        Self { port, frozen, task }
    }
}

impl Drop for FreezableRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies both ways until either side closes; while `frozen`, stops copying (data waits).
async fn relay(a: tokio::net::TcpStream, b: tokio::net::TcpStream, frozen: Arc<AtomicBool>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (ar, aw) = a.into_split();
    let (br, bw) = b.into_split();
    let pump = |mut r: tokio::net::tcp::OwnedReadHalf,
                mut w: tokio::net::tcp::OwnedWriteHalf,
                frozen: Arc<AtomicBool>| async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            while frozen.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let n = match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            while frozen.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if w.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    let one = pump(ar, bw, frozen.clone());
    let two = pump(br, aw, frozen);
    tokio::join!(one, two);
}

async fn pg_admin() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=postgres",
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect to postgres as postgres");
    tokio::spawn(conn);
    client
}

async fn role_exists(admin: &tokio_postgres::Client, role: &str) -> bool {
    admin
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
        .await
        .unwrap()
        .is_some()
}

async fn redis_user_exists(admin: &mut redis::aio::MultiplexedConnection, user: &str) -> bool {
    let v: redis::Value = redis::cmd("ACL")
        .arg("GETUSER")
        .arg(user)
        .query_async(admin)
        .await
        .unwrap();
    v != redis::Value::Nil
}

fn config(pg: &str, relay_port: u16, redis: &str, schema: &str) -> String {
    format!(
        r#"
[targets]
call_timeout = "1s"
probe_interval = "250ms"

[[resources]]
id = "{pg}"
kind = "postgres"
environment = "sandbox"
audience = "postgres"
actions = ["read"]
max_ttl = "30m"
[resources.settings]
url = "host=127.0.0.1 port={relay_port} user=postgres dbname=postgres"
connect_timeout_secs = 5
[resources.settings.grants]
read = ["GRANT USAGE ON SCHEMA {schema} TO {{role}}"]

[[resources]]
id = "{redis}"
kind = "redis"
environment = "sandbox"
audience = "redis"
actions = ["read"]
max_ttl = "30m"
[resources.settings]
url = "redis://{REDIS_ADDR}/"
[resources.settings.rules]
read = ["~latch-outage:*", "+@read", "+@connection"]
"#
    )
}

async fn grant(s: &TestServer, token: &str, task: &str, resource: &str, ttl: i64) -> Value {
    let r = s
        .post(
            Some(token),
            &format!("/v1/tasks/{task}/requests"),
            json!({"resource": resource, "actions": ["read"], "ttl_secs": ttl, "justification": "outage test"}),
        )
        .await;
    assert_eq!(r.status, 201, "grant: {}", r.body);
    r.body
}

#[tokio::test]
async fn a_frozen_postgres_stalls_nothing_and_its_revocation_lands_within_a_second_of_recovery() {
    if !service_available("PostgreSQL", PG_ADDR) || !service_available("Redis", REDIS_ADDR) {
        return;
    }
    let admin = pg_admin().await;
    let schema = format!("latch_outage_{}", suffix());
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let mut redis_admin = redis::Client::open(format!("redis://{REDIS_ADDR}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let relay = FreezableRelay::start().await;
    let (pg, rd) = (format!("pg-{}", suffix()), format!("redis-{}", suffix()));
    let s = TestServer::start_with(TestOptions {
        extra_config: config(&pg, relay.port, &rd, &schema),
        ..Default::default()
    })
    .await;
    let agent = s.agent("outage-1").await;
    let t1 = s.open_task(&agent, "sandbox", 3600).await;
    let t2 = s.open_task(&agent, "sandbox", 3600).await;
    let g = grant(&s, &agent, &t1, &pg, 600).await;
    let role = g["credential"]["metadata"]["username"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = grant(&s, &agent, &t2, &rd, 60).await;
    let ruser = r["credential"]["metadata"]["username"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(role_exists(&admin, &role).await);
    assert!(redis_user_exists(&mut redis_admin, &ruser).await);

    // PostgreSQL freezes. Completing the task answers within the call deadline (1 s).
    relay.frozen.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let done = s
        .post(Some(&agent), &format!("/v1/tasks/{t1}/complete"), json!({}))
        .await;
    let took = started.elapsed();
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(
        took < Duration::from_millis(2500),
        "completion took {took:?}"
    );
    let leases = s
        .get(Some(&agent), &format!("/v1/tasks/{t1}/leases"))
        .await
        .body;
    assert_eq!(leases[0]["state"], "revoking", "{leases}");
    assert_eq!(leases[0]["revoke_attempts"], 1, "{leases}");
    assert!(
        leases[0]["last_revoke_error"]
            .as_str()
            .is_some_and(|e| e.contains("did not answer")),
        "{leases}"
    );
    assert!(role_exists(&admin, &role).await, "the role is still there");

    // /readyz and /metrics name the dead target.
    let ready = s.get(None, "/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.body["status"], "degraded", "{}", ready.body);
    let t = ready.body["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["resource_id"] == pg.as_str())
        .cloned()
        .unwrap();
    assert_eq!(t["healthy"], false, "{t}");
    assert!(t["last_error"].as_str().is_some(), "{t}");
    let metrics = s.metrics_text().await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("latch_target_up") && l.contains(&pg))
        .unwrap_or_else(|| panic!("no latch_target_up for {pg}:\n{metrics}"));
    assert!(line.ends_with(" 0"), "{line}");

    // A grant for the frozen target fails at once, 503 target_unavailable.
    let t3 = s.open_task(&agent, "sandbox", 3600).await;
    let started = Instant::now();
    let e = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{t3}/requests"),
            json!({"resource": pg, "actions": ["read"], "ttl_secs": 60, "justification": "x"}),
        )
        .await;
    assert_eq!(e.status, 503, "{}", e.body);
    assert_eq!(e.code(), Some("target_unavailable"), "{}", e.body);
    assert!(started.elapsed() < Duration::from_millis(500));

    // The Redis lease expires: revoked on time by a reaper pass that is not held up by
    // PostgreSQL (whose lease is due as well).
    s.clock.advance(61);
    let started = Instant::now();
    let report = s.broker().reap().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "{:?} {report:?}",
        started.elapsed()
    );
    assert!(
        !redis_user_exists(&mut redis_admin, &ruser).await,
        "{report:?}"
    );

    // A restart during the freeze does not hang on the target (its startup reaper pass waits
    // at most 2 s, and each call at most the 1 s deadline).
    let started = Instant::now();
    let s = s.crash_and_restart().await;
    assert!(
        started.elapsed() < Duration::from_millis(3500),
        "restart took {:?}",
        started.elapsed()
    );
    let agent = s.agent("outage-1").await;
    // The new process learns of the outage from its own first attempt.
    for _ in 0..100 {
        let ready = s.get(None, "/readyz").await;
        if ready.body["status"] == "degraded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // PostgreSQL answers again: the role is gone within a second.
    relay.frozen.store(false, Ordering::SeqCst);
    let back = Instant::now();
    while role_exists(&admin, &role).await {
        assert!(
            back.elapsed() < Duration::from_secs(1),
            "the role outlived recovery by more than a second"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let gone_after = back.elapsed();
    eprintln!("revoked {gone_after:?} after the target answered again");
    for _ in 0..40 {
        if s.get(Some(&agent), &format!("/v1/tasks/{t1}/leases"))
            .await
            .body[0]["state"]
            == "revoked"
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let leases = s
        .get(Some(&agent), &format!("/v1/tasks/{t1}/leases"))
        .await
        .body;
    assert_eq!(leases[0]["state"], "revoked", "{leases}");
    let ready = s.get(None, "/readyz").await;
    assert_eq!(ready.body["status"], "ready", "{}", ready.body);

    // Nothing spurious in the trail: one failed attempt for PostgreSQL, none for Redis.
    let audit = s.audit("").await;
    let count = |lease: &str, kind: &str| {
        audit
            .iter()
            .filter(|e| e["lease_id"] == lease && e["kind"] == kind)
            .count()
    };
    let pg_lease = leases[0]["id"].as_str().unwrap();
    let rd_lease = r["lease"]["id"].as_str().unwrap();
    // One failed attempt before the restart, one by the restarted process's first pass.
    assert!(
        (1..=2).contains(&count(pg_lease, "credential.revocation_failed")),
        "{audit:?}"
    );
    assert_eq!(count(pg_lease, "credential.revoked"), 1);
    assert_eq!(count(rd_lease, "credential.revocation_failed"), 0);
    assert_eq!(count(rd_lease, "credential.revoked"), 1);
    s.stop().await;
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}
