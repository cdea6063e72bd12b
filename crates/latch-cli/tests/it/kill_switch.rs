//! The kill switch measured against the real things (issue 15, item 5): one workload holds one
//! credential of each kind — a JWT, a PostgreSQL role with an open session, a Redis ACL user
//! with an open connection, an SSH certificate and an X.509 certificate. An operator freezes
//! the workload; from the moment the call returns, each credential must stop working within
//! [`BOUND`]: introspection inactive, the session terminated, the connection killed, the
//! certificate's key id in the KRL the broker serves (`ssh-keygen -Q`), its serial in the CRL
//! (`openssl verify -crl_check`). The measured times are printed (README, "Operators").

use std::process::Command;
use std::time::{Duration, Instant};

use latch_testkit::{TestOptions, TestServer, service_available, tool_available};
use serde_json::{Value, json};

use crate::providers::{
    binary_available, grant, openssl, pg_admin, pg_login, pg_resource, suffix, temp_dir,
};

/// Longest accepted time from the kill switch's answer to a credential that no longer works.
const BOUND: Duration = Duration::from_secs(5);

/// Polls `check` (true once the credential stopped working) every 5 ms until it holds or
/// [`BOUND`] passes; answers the time since `t0`.
async fn until_stopped<F, Fut>(what: &str, t0: Instant, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    loop {
        if check().await {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < BOUND,
            "{what} still works {BOUND:?} after the kill switch answered"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn fetch(s: &TestServer, path: &str) -> Vec<u8> {
    s.http
        .get(format!("{}{path}", s.base))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

fn resources(pg: &str, schema: &str, admin: &str, redis: &str, prefix: &str, me: &str) -> String {
    let pg_conf = pg_resource(pg, schema, 5432).replace("user=postgres", &format!("user={admin}"));
    format!(
        r#"{pg_conf}
[[resources]]
id = "{redis}"
kind = "redis"
environment = "sandbox"
audience = "redis"
actions = ["read"]
max_ttl = "30m"
[resources.settings]
url = "redis://127.0.0.1:6379/"
[resources.settings.rules]
read = ["~{prefix}:*", "+@read", "+@connection"]

[[resources]]
id = "ks-ssh"
kind = "ssh"
environment = "sandbox"
audience = "ssh"
actions = ["read"]
max_ttl = "30m"
[resources.settings]
principals = ["{me}"]

[[resources]]
id = "ks-mtls"
kind = "x509"
environment = "sandbox"
audience = "mtls"
actions = ["read"]
max_ttl = "30m"
[resources.settings]
trust_domain = "acme.example"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_stops_every_kind_of_credential_within_the_bound() {
    if !service_available("PostgreSQL", "127.0.0.1:5432")
        || !service_available("Redis", "127.0.0.1:6379")
        || !binary_available("/usr/bin/ssh-keygen")
        || !tool_available("openssl", &["version"])
    {
        return;
    }
    let pg = pg_admin().await;
    let schema = format!("latch_ks_{}", suffix());
    let latch_admin = format!("ks_admin_{}", suffix());
    pg.batch_execute(&format!(
        "CREATE ROLE {latch_admin} LOGIN CREATEROLE; \
         CREATE SCHEMA {schema} AUTHORIZATION {latch_admin}; \
         CREATE TABLE {schema}.items (id int); ALTER TABLE {schema}.items OWNER TO {latch_admin};"
    ))
    .await
    .unwrap();
    let prefix = format!("latch-ks-{}", suffix());
    let (pg_res, redis_res) = (format!("pg-{}", suffix()), format!("redis-{}", suffix()));
    let me = "deploy";
    let s = TestServer::start_with(TestOptions {
        extra_config: resources(&pg_res, &schema, &latch_admin, &redis_res, &prefix, me),
        ..Default::default()
    })
    .await;
    let dir = temp_dir("kill-switch");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(dir.join("agent_key"))
        .output()
        .unwrap();
    assert!(keygen.status.success());
    let ssh_pub = std::fs::read_to_string(dir.join("agent_key.pub")).unwrap();
    let genkey = openssl(
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "key.pem",
        ],
        &dir,
    );
    assert!(genkey.status.success());
    assert!(
        openssl(
            &["pkey", "-in", "key.pem", "-pubout", "-out", "pub.pem"],
            &dir
        )
        .status
        .success()
    );
    let x509_pub = std::fs::read_to_string(dir.join("pub.pem")).unwrap();

    // One workload, one credential of each kind.
    let agent = s.agent("kill-switch").await;
    let task = s.open_task(&agent, "sandbox", 3600).await;
    let jwt = grant(&s, &agent, &task, "ci-cache", &["read"], Value::Null).await;
    let pgc = grant(&s, &agent, &task, &pg_res, &["read"], Value::Null).await;
    let rdc = grant(&s, &agent, &task, &redis_res, &["read"], Value::Null).await;
    let sshc = grant(
        &s,
        &agent,
        &task,
        "ks-ssh",
        &["read"],
        json!({"public_key": ssh_pub}),
    )
    .await;
    let x509c = grant(
        &s,
        &agent,
        &task,
        "ks-mtls",
        &["read"],
        json!({"public_key_pem": x509_pub}),
    )
    .await;
    let value = |g: &Value| g["credential"]["value"].as_str().unwrap().to_owned();
    let jwt_value = value(&jwt);
    assert_eq!(s.introspect(&jwt_value).await["active"], true);
    let session = pg_login(
        pgc["credential"]["metadata"]["username"].as_str().unwrap(),
        &value(&pgc),
        5432,
    )
    .await
    .expect("the role logs in");
    session
        .simple_query("SELECT 1")
        .await
        .expect("the session works");
    let redis_user = rdc["credential"]["metadata"]["username"]
        .as_str()
        .unwrap()
        .to_owned();
    let client = redis::Client::open(format!(
        "redis://{redis_user}:{}@127.0.0.1:6379/",
        value(&rdc)
    ))
    .unwrap();
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("the user logs in");
    let _: String = redis::cmd("PING")
        .query_async(&mut con)
        .await
        .expect("the connection works");
    std::fs::write(dir.join("agent_key-cert.pub"), value(&sshc)).unwrap();
    std::fs::write(dir.join("leaf.pem"), value(&x509c)).unwrap();
    std::fs::write(dir.join("ca.pem"), fetch(&s, "/v1/x509/ca.pem").await).unwrap();
    let krl_lists_cert = |krl: &[u8]| {
        std::fs::write(dir.join("krl"), krl).unwrap();
        // `ssh-keygen -Q` exits non-zero when the certificate is revoked by the KRL.
        !Command::new("ssh-keygen")
            .args(["-Q", "-f"])
            .arg(dir.join("krl"))
            .arg(dir.join("agent_key-cert.pub"))
            .output()
            .unwrap()
            .status
            .success()
    };
    let crl_lists_leaf = |crl: &[u8]| {
        std::fs::write(dir.join("crl.pem"), crl).unwrap();
        !openssl(
            &[
                "verify",
                "-CAfile",
                "ca.pem",
                "-crl_check",
                "-CRLfile",
                "crl.pem",
                "leaf.pem",
            ],
            &dir,
        )
        .status
        .success()
    };
    assert!(
        !krl_lists_cert(&fetch(&s, "/v1/ssh/krl").await),
        "the certificate is not revoked yet"
    );
    assert!(
        !crl_lists_leaf(&fetch(&s, "/v1/x509/crl").await),
        "the leaf verifies before"
    );

    // The kill switch, over the workload.
    let task_body = s.get(Some(&agent), &format!("/v1/tasks/{task}")).await.body;
    let principal = task_body["owner"]["id"].as_str().unwrap().to_owned();
    let ops = s.human("olga", &["latch-admins"]).await;
    let called = Instant::now();
    let r = s
        .post(
            Some(&ops),
            "/v1/admin/freezes",
            json!({"scope": {"kind": "workload", "value": principal}, "reason": "measured drill"}),
        )
        .await;
    let t0 = Instant::now();
    let call = t0 - called;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["leases_revoked"], 5, "{}", r.body);
    assert_eq!(r.body["revocations_pending"], 0, "{}", r.body);

    // Each kind is probed on its own, concurrently, from the moment the call answered.
    let (jwt_t, pg_t, redis_t, ssh_t, x509_t) = tokio::join!(
        until_stopped("the JWT", t0, || async {
            s.introspect(&jwt_value).await["active"] == false
        }),
        until_stopped("the PostgreSQL session", t0, || async {
            session.simple_query("SELECT 1").await.is_err()
        }),
        until_stopped("the Redis connection", t0, || {
            let mut con = con.clone();
            async move {
                redis::cmd("PING")
                    .query_async::<String>(&mut con)
                    .await
                    .is_err()
            }
        }),
        until_stopped("the SSH certificate", t0, || async {
            krl_lists_cert(&fetch(&s, "/v1/ssh/krl").await)
        }),
        until_stopped("the X.509 certificate", t0, || async {
            crl_lists_leaf(&fetch(&s, "/v1/x509/crl").await)
        }),
    );
    // New credentials are refused while frozen.
    let g = s
        .request(&agent, &task, "ci-cache", &["read"], Some(300))
        .await;
    assert_eq!(g.code(), Some("frozen"), "{}", g.body);
    println!(
        "kill switch: the call took {:.1} ms; then, until each credential stopped working:",
        ms(call)
    );
    for (kind, t) in [
        ("JWT (introspection inactive)", jwt_t),
        ("PostgreSQL (open session terminated)", pg_t),
        ("Redis (open connection killed)", redis_t),
        ("SSH (key id in the broker's KRL)", ssh_t),
        ("X.509 (serial in the broker's CRL)", x509_t),
    ] {
        println!("  {kind:<40} {:>8.1} ms", ms(t));
    }
    s.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    pg.batch_execute(&format!(
        "DROP SCHEMA {schema} CASCADE; DROP ROLE IF EXISTS {latch_admin};"
    ))
    .await
    .ok();
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
