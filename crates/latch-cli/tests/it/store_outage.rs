//! A frozen store (issue 13): every process of a private PostgreSQL is stopped with SIGSTOP,
//! so connections are accepted and nothing ever answers. Writes must answer 503
//! `store_unavailable` within the store deadline (`[store] timeout`, 2 s) instead of hanging
//! past clients' own timeouts, and work again once the server is resumed; a completion retried
//! after the outage answers 200 even though it may have committed already.

use std::time::{Duration, Instant};

use latch_testkit::{FrozenBackends, TempPgDatabase};
use serde_json::{Value, json};

use crate::replicas::{Client, PrivatePg, Replica, agent, config};

/// The postmaster of the private server and every process it started (backends, checkpointer,
/// WAL writer …), postmaster first so it cannot start new ones while the rest are frozen.
fn cluster_pids(pg: &PrivatePg) -> Vec<i32> {
    let pidfile =
        std::fs::read_to_string(pg.dir.join("data/postmaster.pid")).expect("postmaster.pid");
    let postmaster: i32 = pidfile
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("postmaster pid");
    let mut pids = vec![postmaster];
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces, so parse after its last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if ppid == Some(postmaster) {
            pids.push(pid);
        }
    }
    pids
}

/// POSTs and checks the answer is 503 `store_unavailable` within the deadline plus slack.
async fn assert_fast_503(c: &Client, base: &str, path: &str, token: &str, body: Value) {
    let started = Instant::now();
    let (status, answer) = c.post(base, path, Some(token), body).await;
    let took = started.elapsed();
    eprintln!("{path} answered {status} after {took:?} while the store was frozen");
    assert_eq!(status, 503, "{path}: {answer}");
    assert_eq!(answer["error"]["code"], "store_unavailable", "{answer}");
    // The store deadline is 2 s; the slack covers a loaded test machine.
    assert!(
        took < Duration::from_millis(3500),
        "{path} took {took:?} to fail"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_answer_503_within_the_deadline_while_postgres_is_frozen() {
    let Some(pg) = PrivatePg::start() else {
        return;
    };
    if !latch_testkit::can_freeze_backends() {
        return;
    }
    let db = TempPgDatabase::create_at(&pg.addr(), "frozen").await;
    let (dir, path) = config(&db);
    let a = Replica::spawn(&path);
    let c = Client {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client"),
    };
    let agent = agent(&c, &a.base).await;
    let task = c.open_task(&a.base, &agent, "before", "sandbox").await;

    let mut frozen = FrozenBackends::default();
    frozen.freeze(&cluster_pids(&pg));
    for _ in 0..2 {
        assert_fast_503(
            &c,
            &a.base,
            "/v1/tasks",
            &agent,
            json!({"purpose": "during", "environment": "sandbox"}),
        )
        .await;
        assert_fast_503(
            &c,
            &a.base,
            &format!("/v1/tasks/{task}/complete"),
            &agent,
            json!({}),
        )
        .await;
        assert_fast_503(
            &c,
            &a.base,
            &format!("/v1/tasks/{task}/requests"),
            &agent,
            json!({"resource": "ci-cache", "actions": ["read"], "ttl_secs": 600, "justification": "j"}),
        )
        .await;
    }
    drop(frozen);

    // Resumed: writes work again without restarting the broker (stale pooled connections are
    // replaced as they are found).
    let resumed = Instant::now();
    let completed = loop {
        let (status, answer) = c
            .post(
                &a.base,
                &format!("/v1/tasks/{task}/complete"),
                Some(&agent),
                json!({}),
            )
            .await;
        if status == 200 {
            break answer;
        }
        assert_eq!(status, 503, "{answer}");
        assert!(
            resumed.elapsed() < Duration::from_secs(20),
            "writes did not recover: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("writes recovered {:?} after SIGCONT", resumed.elapsed());
    assert_eq!(completed["state"], "completed", "{completed}");
    // A retry of a completion that did commit answers the task again, not 409.
    let (status, again) = c
        .post(
            &a.base,
            &format!("/v1/tasks/{task}/complete"),
            Some(&agent),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["ended_at_unix_secs"], completed["ended_at_unix_secs"]);
    c.open_task(&a.base, &agent, "after", "sandbox").await;
    drop(a);
    db.drop_db().await;
    drop(pg);
    let _ = std::fs::remove_dir_all(dir);
}
