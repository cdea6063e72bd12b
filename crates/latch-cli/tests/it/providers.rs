//! The credential providers against the real thing: PostgreSQL (127.0.0.1:5432, user
//! `postgres`), Redis (127.0.0.1:6379), a real `sshd` started on a free loopback port, and
//! `openssl verify`. Each test uses random names and cleans up after itself. Without the
//! service or tool a test prints a loud warning and returns; with `CI=true` it fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use latch_core::ports::CredentialProvider;
use latch_testkit::{TestOptions, TestServer, service_available, tool_available};
use serde_json::{Value, json};

const PG_ADDR: &str = "127.0.0.1:5432";
const REDIS_ADDR: &str = "127.0.0.1:6379";

pub(crate) fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

pub(crate) fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("latch-{tag}-{}", suffix()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub(crate) async fn pg_admin() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=postgres",
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect to postgres as postgres");
    tokio::spawn(conn);
    client
}

pub(crate) async fn pg_login(
    user: &str,
    password: &str,
    port: u16,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user={user} password={password} dbname=postgres connect_timeout=5"),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(conn);
    Ok(client)
}

pub(crate) fn pg_resource(id: &str, schema: &str, port: u16) -> String {
    format!(
        r#"
[[resources]]
id = "{id}"
kind = "postgres"
environment = "sandbox"
audience = "postgres"
actions = ["read", "write"]
max_ttl = "30m"
[resources.settings]
url = "host=127.0.0.1 port={port} user=postgres dbname=postgres"
connect_timeout_secs = 2
[resources.settings.grants]
read = ["GRANT USAGE ON SCHEMA {schema} TO {{role}}", "GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {{role}}"]
write = ["GRANT USAGE ON SCHEMA {schema} TO {{role}}", "GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA {schema} TO {{role}}"]
"#
    )
}

pub(crate) async fn grant(
    s: &TestServer,
    token: &str,
    task: &str,
    resource: &str,
    actions: &[&str],
    params: Value,
) -> Value {
    let r = s
        .post(
            Some(token),
            &format!("/v1/tasks/{task}/requests"),
            json!({"resource": resource, "actions": actions, "ttl_secs": 600, "justification": "test", "params": params}),
        )
        .await;
    assert_eq!(r.status, 201, "grant: {}", r.body);
    r.body
}

async fn lease_state(s: &TestServer, token: &str, task: &str) -> Vec<Value> {
    let r = s
        .get(Some(token), &format!("/v1/tasks/{task}/leases"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body.as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn postgres_role_reads_cannot_write_and_dies_with_its_task() {
    if !service_available("PostgreSQL", PG_ADDR) {
        return;
    }
    let admin = pg_admin().await;
    let schema = format!("latch_it_{}", suffix());
    // Latch's admin is not a superuser: CREATEROLE and the owner of the schema (the README's
    // recipe).
    let latch_admin = format!("it_admin_{}", suffix());
    admin
        .batch_execute(&format!(
            "CREATE ROLE {latch_admin} LOGIN CREATEROLE; \
             CREATE SCHEMA {schema} AUTHORIZATION {latch_admin}; \
             CREATE TABLE {schema}.items (id int); INSERT INTO {schema}.items VALUES (7); \
             ALTER TABLE {schema}.items OWNER TO {latch_admin};"
        ))
        .await
        .unwrap();
    let resource = format!("pg-{}", suffix());
    let s = TestServer::start_with(TestOptions {
        extra_config: pg_resource(&resource, &schema, 5432)
            .replace("user=postgres", &format!("user={latch_admin}")),
        ..Default::default()
    })
    .await;
    let agent = s.agent("pg-1").await;
    let task = s.open_task(&agent, "sandbox", 3600).await;
    let g = grant(&s, &agent, &task, &resource, &["read"], Value::Null).await;
    let cred = &g["credential"];
    assert_eq!(cred["kind"], "postgres_password");
    let user = cred["metadata"]["username"].as_str().unwrap().to_owned();
    let password = cred["value"].as_str().unwrap().to_owned();
    assert!(user.starts_with("latch_") && user.len() <= 63, "{user}");
    assert!(
        user.contains(&task["task_".len()..]),
        "role {user} names task {task}"
    );
    // The role is valid until the lease end.
    let until: Option<String> = admin
        .query_one(
            "SELECT rolvaliduntil::text FROM pg_roles WHERE rolname = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    assert!(until.is_some(), "VALID UNTIL is set");

    // A real client logs in and reads; writing is refused.
    let session = pg_login(&user, &password, 5432)
        .await
        .expect("minted role logs in");
    let row = session
        .query_one(&format!("SELECT id FROM {schema}.items"), &[])
        .await
        .expect("read allowed");
    assert_eq!(row.get::<_, i32>(0), 7);
    let err = session
        .execute(&format!("INSERT INTO {schema}.items VALUES (8)"), &[])
        .await
        .expect_err("write refused");
    assert_eq!(
        err.as_db_error().map(|e| e.code().code()),
        Some("42501"),
        "insufficient_privilege: {err}"
    );

    // Renewal: same role, new password and VALID UNTIL.
    s.clock.advance(60);
    let lease_id = g["lease"]["id"].as_str().unwrap();
    let r = s
        .post(
            Some(&agent),
            &format!("/v1/leases/{lease_id}/renew"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "renew: {}", r.body);
    assert_eq!(r.body["credential"]["metadata"]["username"], user.as_str());
    assert_ne!(
        r.body["credential"]["value"], cred["value"],
        "a new password"
    );
    let renewed_until: Option<String> = admin
        .query_one(
            "SELECT rolvaliduntil::text FROM pg_roles WHERE rolname = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    assert_ne!(renewed_until, until, "VALID UNTIL moved with the lease");

    // Completing the task revokes: the open session is terminated, the role is gone.
    let r = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{task}/complete"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let leases = lease_state(&s, &agent, &task).await;
    assert_eq!(leases[0]["state"], "revoked", "{leases:?}");
    assert!(
        session.query_one("SELECT 1", &[]).await.is_err(),
        "the open session was terminated"
    );
    assert!(
        pg_login(&user, &password, 5432).await.is_err(),
        "cannot log in after revocation"
    );
    let left = admin
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&user])
        .await
        .unwrap();
    assert!(left.is_none(), "role dropped");
    let audit = s.audit(&format!("task_id={task}")).await;
    assert!(
        !audit.iter().any(|e| e.to_string().contains(&password)),
        "the password never reaches the audit log"
    );

    // Revocation is idempotent, and works from the ids alone (a lease left `issuing` by a crash
    // has no recorded handle).
    let mut lease: latch_core::model::Lease = serde_json::from_value(leases[0].clone()).unwrap();
    assert_eq!(
        latch_providers::postgres::role_name(&lease.task_id, &lease.id),
        lease.revocation_handle
    );
    let provider =
        latch_providers::postgres::PostgresProvider::new(&[domain_resource(&s, &resource)]);
    provider
        .revoke(&lease)
        .await
        .expect("revoking a dropped role succeeds");
    lease.revocation_handle.clear();
    provider
        .revoke(&lease)
        .await
        .expect("derived name, already gone: success");
    s.stop().await;
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
    admin
        .batch_execute(&format!("DROP ROLE {latch_admin}"))
        .await
        .unwrap();
}

/// A role with CREATE on a schema plants a `SECURITY DEFINER` function granted to PUBLIC. After
/// revocation it must not exist (by default everything the role created is dropped, never handed
/// to the admin); with `reassign_owned_to` (a NOLOGIN role) the function is dropped and PUBLIC
/// loses its privileges on the objects that are kept.
#[tokio::test]
async fn postgres_revocation_never_hands_agent_objects_to_the_admin() {
    if !service_available("PostgreSQL", PG_ADDR) {
        return;
    }
    let admin = pg_admin().await;
    let schema = format!("latch_it_{}", suffix());
    let other = format!("it_other_{}", suffix());
    let keeper = format!("it_keeper_{}", suffix());
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; CREATE ROLE {other} LOGIN; CREATE ROLE {keeper} NOLOGIN; \
             GRANT USAGE ON SCHEMA {schema} TO {other};"
        ))
        .await
        .unwrap();
    let dropping = format!("pg-{}", suffix());
    let keeping = format!("pg-{}", suffix());
    let with_create = |id: &str| {
        pg_resource(id, &schema, 5432).replace(
            &format!("\"GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA {schema} TO {{role}}\""),
            &format!("\"GRANT CREATE ON SCHEMA {schema} TO {{role}}\""),
        )
    };
    let s = TestServer::start_with(TestOptions {
        extra_config: format!(
            "{}{}",
            with_create(&dropping),
            with_create(&keeping).replace(
                "connect_timeout_secs = 2",
                &format!("connect_timeout_secs = 2\nreassign_owned_to = \"{keeper}\"")
            )
        ),
        ..Default::default()
    })
    .await;
    let agent = s.agent("pg-backdoor").await;
    let other_session = pg_login(&other, "unused", 5432).await.unwrap();
    for (resource, keeps) in [(&dropping, false), (&keeping, true)] {
        let task = s.open_task(&agent, "sandbox", 3600).await;
        let g = grant(&s, &agent, &task, resource, &["write"], Value::Null).await;
        let user = g["credential"]["metadata"]["username"]
            .as_str()
            .unwrap()
            .to_owned();
        let password = g["credential"]["value"].as_str().unwrap().to_owned();
        let session = pg_login(&user, &password, 5432).await.unwrap();
        let f = format!("{schema}.whoami_{}", suffix());
        let t = format!("{schema}.kept_{}", suffix());
        session
            .batch_execute(&format!(
                "CREATE FUNCTION {f}() RETURNS text LANGUAGE sql SECURITY DEFINER \
                 AS $$ SELECT current_user::text $$; \
                 GRANT EXECUTE ON FUNCTION {f}() TO PUBLIC; \
                 CREATE TABLE {t} (id int); GRANT SELECT ON {t} TO PUBLIC;"
            ))
            .await
            .expect("the agent creates objects");
        let row = other_session
            .query_one(&format!("SELECT {f}()"), &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), user, "runs as the agent's role");

        let r = s
            .post(
                Some(&agent),
                &format!("/v1/tasks/{task}/complete"),
                json!({}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let leases = lease_state(&s, &agent, &task).await;
        assert_eq!(leases[0]["state"], "revoked", "{leases:?}");
        let gone = admin
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&user])
            .await
            .unwrap();
        assert!(gone.is_none(), "role dropped");
        let func = admin
            .query_opt(
                "SELECT 1 FROM pg_proc WHERE proname = $1",
                &[&f.rsplit('.').next().unwrap()],
            )
            .await
            .unwrap();
        assert!(func.is_none(), "the SECURITY DEFINER function was dropped");
        let err = other_session
            .query_one(&format!("SELECT {f}()"), &[])
            .await
            .expect_err("nothing left to run as anyone");
        assert_eq!(
            err.as_db_error().map(|e| e.code().code()),
            Some("42883"),
            "{err}"
        );
        // No object in the schema belongs to the admin.
        let admin_owned: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relowner = (SELECT oid FROM pg_roles WHERE rolname = CURRENT_USER)",
                &[&schema],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(admin_owned, 0);
        let table = other_session
            .query_opt(&format!("SELECT * FROM {t}"), &[])
            .await;
        if keeps {
            let owner: String = admin
                .query_one(
                    &format!(
                        "SELECT relowner::regrole::text FROM pg_class WHERE oid = '{t}'::regclass"
                    ),
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(owner, keeper, "kept objects go to the NOLOGIN role");
            let err = table.expect_err("PUBLIC lost its privileges");
            assert_eq!(err.as_db_error().map(|e| e.code().code()), Some("42501"));
        } else {
            let err = table.expect_err("the table was dropped");
            assert_eq!(err.as_db_error().map(|e| e.code().code()), Some("42P01"));
        }
    }
    s.stop().await;
    drop(other_session);
    admin
        .batch_execute(&format!(
            "DROP SCHEMA {schema} CASCADE; DROP ROLE {other}; DROP OWNED BY {keeper}; DROP ROLE {keeper};"
        ))
        .await
        .unwrap();
}

/// The role leaves a default-privileges entry in another database (`postgres`, which it can
/// reach through PUBLIC's CONNECT): revocation cleans up there too and the role is dropped. The
/// role is minted with a connection limit and role-level timeouts.
#[tokio::test]
async fn postgres_objects_in_other_databases_do_not_block_revocation() {
    if !service_available("PostgreSQL", PG_ADDR) {
        return;
    }
    let admin = pg_admin().await;
    let db = format!("latch_it_db_{}", suffix());
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    let schema = format!("latch_it_{}", suffix());
    {
        let (c, conn) = tokio_postgres::connect(
            &format!("host=127.0.0.1 port=5432 user=postgres dbname={db}"),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        c.batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .unwrap();
    }
    let resource = format!("pg-{}", suffix());
    let s = TestServer::start_with(TestOptions {
        extra_config: pg_resource(&resource, &schema, 5432)
            .replace("dbname=postgres", &format!("dbname={db}"))
            .replace(
                "connect_timeout_secs = 2",
                "connect_timeout_secs = 2\nconnection_limit = 3\nstatement_timeout_secs = 120",
            ),
        ..Default::default()
    })
    .await;
    let agent = s.agent("pg-otherdb").await;
    let task = s.open_task(&agent, "sandbox", 3600).await;
    let g = grant(&s, &agent, &task, &resource, &["read"], Value::Null).await;
    let user = g["credential"]["metadata"]["username"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(g["credential"]["metadata"]["database"], db.as_str());
    let password = g["credential"]["value"].as_str().unwrap().to_owned();
    let row = admin
        .query_one(
            "SELECT rolconnlimit, array_to_string(rolconfig, ',') FROM pg_roles WHERE rolname = $1",
            &[&user],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 3);
    let config: String = row.get(1);
    assert!(config.contains("statement_timeout=120s"), "{config}");
    assert!(
        config.contains("idle_in_transaction_session_timeout=60s"),
        "{config}"
    );

    // pg_login connects to `postgres`, not the configured database.
    let session = pg_login(&user, &password, 5432).await.unwrap();
    let timeout: String = session
        .query_one("SHOW statement_timeout", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(timeout, "2min");
    session
        .batch_execute("ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC")
        .await
        .expect("the role leaves an entry in database postgres");
    drop(session);

    let r = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{task}/complete"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let leases = lease_state(&s, &agent, &task).await;
    assert_eq!(leases[0]["state"], "revoked", "{leases:?}");
    let left = admin
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&user])
        .await
        .unwrap();
    assert!(left.is_none(), "role dropped");
    s.stop().await;
    admin
        .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .await
        .unwrap();
}

#[tokio::test]
async fn postgres_reassign_target_must_be_a_nologin_role_other_than_the_admin() {
    if !service_available("PostgreSQL", PG_ADDR) {
        return;
    }
    let admin = pg_admin().await;
    let schema = format!("latch_it_{}", suffix());
    let login = format!("it_login_{}", suffix());
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; CREATE ROLE {login} LOGIN;"
        ))
        .await
        .unwrap();
    let resource = format!("pg-{}", suffix());
    let s = TestServer::start_with(TestOptions {
        extra_config: pg_resource(&resource, &schema, 5432).replace(
            "connect_timeout_secs = 2",
            &format!("connect_timeout_secs = 2\nreassign_owned_to = \"{login}\""),
        ),
        ..Default::default()
    })
    .await;
    let agent = s.agent("pg-keeper").await;
    let task = s.open_task(&agent, "sandbox", 3600).await;
    let r = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{task}/requests"),
            json!({"resource": resource, "actions": ["read"], "ttl_secs": 600, "justification": "t"}),
        )
        .await;
    assert_ne!(
        r.status, 201,
        "a LOGIN reassign target is refused: {}",
        r.body
    );
    assert!(r.body.to_string().contains("NOLOGIN"), "{}", r.body);
    s.stop().await;
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE; DROP ROLE {login};"))
        .await
        .unwrap();
}

/// A TCP forwarder to PostgreSQL that the test can take down and bring back on the same port.
struct Proxy {
    port: u16,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    async fn start(port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut conns = Vec::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    break;
                };
                conns.push(tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(PG_ADDR).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                }));
                conns.retain(|c| !c.is_finished());
            }
        });
        Self {
            port,
            task: Some(task),
        }
    }

    fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

#[tokio::test]
async fn postgres_revocation_is_retried_while_unreachable_and_survives_a_restart() {
    if !service_available("PostgreSQL", PG_ADDR) {
        return;
    }
    let admin = pg_admin().await;
    let schema = format!("latch_it_{}", suffix());
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; CREATE TABLE {schema}.items (id int);"
        ))
        .await
        .unwrap();
    let mut proxy = Proxy::start(0).await;
    let port = proxy.port;
    let resource = format!("pg-{}", suffix());
    let s = TestServer::start_with(TestOptions {
        extra_config: pg_resource(&resource, &schema, port),
        ..Default::default()
    })
    .await;
    let agent = s.agent("pg-2").await;
    let task = s.open_task(&agent, "sandbox", 3600).await;
    let g = grant(&s, &agent, &task, &resource, &["read"], Value::Null).await;
    let user = g["credential"]["metadata"]["username"]
        .as_str()
        .unwrap()
        .to_owned();

    // PostgreSQL becomes unreachable: the revocation fails, stays visible, and is retried.
    proxy.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{task}/complete"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let leases = lease_state(&s, &agent, &task).await;
    assert!(
        matches!(
            leases[0]["state"].as_str(),
            Some("revoking" | "revoke_failed")
        ),
        "{leases:?}"
    );
    assert!(
        leases[0]["last_revoke_error"]
            .as_str()
            .is_some_and(|e| e.contains("postgres")),
        "{leases:?}"
    );
    assert!(
        admin
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&user])
            .await
            .unwrap()
            .is_some()
    );

    // The broker restarts; PostgreSQL comes back; the reaper finishes the job.
    let s = s.crash_and_restart().await;
    let _proxy = Proxy::start(port).await;
    s.clock.advance(3600);
    let report = s.broker().reap().await.unwrap();
    assert!(report.leases_revoked >= 1, "{report:?}");
    let agent = s.agent("pg-2").await;
    let leases = lease_state(&s, &agent, &task).await;
    assert_eq!(leases[0]["state"], "revoked", "{leases:?}");
    assert!(
        admin
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&user])
            .await
            .unwrap()
            .is_none()
    );
    s.stop().await;
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

/// `ACL DRYRUN <user> <command…>` as the admin: `None` if allowed, else Redis' reason.
async fn redis_dryrun(
    admin: &mut redis::aio::MultiplexedConnection,
    user: &str,
    args: &[&str],
) -> Option<String> {
    let v: redis::Value = redis::cmd("ACL")
        .arg("DRYRUN")
        .arg(user)
        .arg(args)
        .query_async(admin)
        .await
        .unwrap();
    match v {
        redis::Value::Okay => None,
        redis::Value::SimpleString(s) if s == "OK" => None,
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        other => Some(format!("{other:?}")),
    }
}

/// Key patterns do not constrain keyless commands: no template lets a user wipe, switch or list
/// the whole keyspace or touch other clients.
#[tokio::test]
async fn redis_users_cannot_run_server_wide_commands() {
    if !service_available("Redis", REDIS_ADDR) {
        return;
    }
    let prefix = format!("latch-it-{}", suffix());
    let admin_client = redis::Client::open(format!("redis://{REDIS_ADDR}/")).unwrap();
    let mut admin = admin_client
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let resource = format!("redis-{}", suffix());
    let s = TestServer::start_with(TestOptions {
        extra_config: format!(
            r#"
[[resources]]
id = "{resource}"
kind = "redis"
environment = "sandbox"
audience = "redis"
actions = ["read", "write"]
max_ttl = "30m"
[resources.settings]
url = "redis://{REDIS_ADDR}/"
[resources.settings.rules]
read = ["~{prefix}:*", "+@read", "+@connection"]
write = ["~{prefix}:*", "+@read", "+@write", "+@keyspace", "+@connection", "+@scripting"]
"#
        ),
        ..Default::default()
    })
    .await;
    let agent = s.agent("redis-wide").await;
    let task = s.open_task(&agent, "sandbox", 3600).await;
    let reader = grant(&s, &agent, &task, &resource, &["read"], Value::Null).await;
    let writer = grant(&s, &agent, &task, &resource, &["write"], Value::Null).await;
    let name = |g: &Value| {
        g["credential"]["metadata"]["username"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (ru, wu) = (name(&reader), name(&writer));
    let key = format!("{prefix}:k");

    // What the templates grant still works.
    assert_eq!(redis_dryrun(&mut admin, &ru, &["GET", &key]).await, None);
    assert_eq!(
        redis_dryrun(&mut admin, &wu, &["SET", &key, "1"]).await,
        None
    );
    assert_eq!(redis_dryrun(&mut admin, &ru, &["PING"]).await, None);
    assert_eq!(
        redis_dryrun(&mut admin, &ru, &["CLIENT", "SETNAME", "x"]).await,
        None
    );
    assert_eq!(redis_dryrun(&mut admin, &ru, &["CLIENT", "ID"]).await, None);

    for cmd in [
        &["FLUSHALL"][..],
        &["FLUSHDB"],
        &["SWAPDB", "0", "1"],
        &["SELECT", "1"],
        &["MOVE", key.as_str(), "1"],
        &["KEYS", "*"],
        &["SCAN", "0"],
        &["RANDOMKEY"],
        &["CLIENT", "LIST"],
        &["CLIENT", "KILL", "ID", "1"],
        &["CLIENT", "PAUSE", "1000"],
        &["CONFIG", "GET", "*"],
        &["DEBUG", "SLEEP", "0"],
        &["MONITOR"],
        &["ACL", "LIST"],
        &["FUNCTION", "FLUSH"],
        &["FUNCTION", "DELETE", "lib"],
        &[
            "FUNCTION",
            "LOAD",
            "#!lua name=x\nredis.register_function('f', function() return 1 end)",
        ],
        &["FUNCTION", "RESTORE", "payload"],
        &["FUNCTION", "KILL"],
        &["FUNCTION", "DUMP"],
        &["FUNCTION", "LIST"],
        &["SCRIPT", "FLUSH"],
        &["SCRIPT", "KILL"],
        // The Lua debugger in sync mode stops the whole server while it lasts.
        &["SCRIPT", "DEBUG", "SYNC"],
        &["DBSIZE"],
        &["PUBSUB", "CHANNELS"],
        &["MEMORY", "STATS"],
        &["MEMORY", "PURGE"],
        &["CLUSTER", "INFO"],
        &["COPY", key.as_str(), key.as_str(), "DB", "1"],
        &["INFO"],
        &["SLOWLOG", "GET"],
        &["LATENCY", "LATEST"],
        &["LASTSAVE"],
        &["SHUTDOWN"],
        &["SAVE"],
        &["BGSAVE"],
        &["REPLICAOF", "NO", "ONE"],
        &["FAILOVER"],
        &["MODULE", "LIST"],
    ] {
        for user in [&ru, &wu] {
            let denied = redis_dryrun(&mut admin, user, cmd).await;
            assert!(denied.is_some(), "{user} may run {cmd:?}");
        }
    }

    // And for real: the write user's FLUSHALL / SELECT and the read user's KEYS are refused.
    let password = writer["credential"]["value"].as_str().unwrap();
    let client = redis::Client::open(format!("redis://{wu}:{password}@{REDIS_ADDR}/")).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    for cmd in [
        &["FLUSHALL"][..],
        &["FLUSHDB"],
        &["SELECT", "1"],
        &["SWAPDB", "0", "1"],
    ] {
        let e = redis::cmd(cmd[0])
            .arg(&cmd[1..])
            .query_async::<redis::Value>(&mut con)
            .await
            .expect_err("refused");
        assert!(
            e.to_string().to_lowercase().contains("noperm"),
            "{cmd:?}: {e}"
        );
    }
    let password = reader["credential"]["value"].as_str().unwrap();
    let client = redis::Client::open(format!("redis://{ru}:{password}@{REDIS_ADDR}/")).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    for cmd in [
        &["KEYS", "*"][..],
        &["SCAN", "0"],
        &["CLIENT", "LIST"],
        &["CLIENT", "KILL", "ID", "1"],
    ] {
        let e = redis::cmd(cmd[0])
            .arg(&cmd[1..])
            .query_async::<redis::Value>(&mut con)
            .await
            .expect_err("refused");
        assert!(
            e.to_string().to_lowercase().contains("noperm"),
            "{cmd:?}: {e}"
        );
    }
    let r = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{task}/complete"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    s.stop().await;
}

#[tokio::test]
async fn redis_user_sees_only_its_keys_and_is_cut_off_on_revocation() {
    if !service_available("Redis", REDIS_ADDR) {
        return;
    }
    let prefix = format!("latch-it-{}", suffix());
    let admin_client = redis::Client::open(format!("redis://{REDIS_ADDR}/")).unwrap();
    let mut admin = admin_client
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}:a"))
        .arg("1")
        .query_async(&mut admin)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("other-{prefix}"))
        .arg("2")
        .query_async(&mut admin)
        .await
        .unwrap();
    let resource = format!("redis-{}", suffix());
    let s = TestServer::start_with(TestOptions {
        extra_config: format!(
            r#"
[[resources]]
id = "{resource}"
kind = "redis"
environment = "sandbox"
audience = "redis"
actions = ["read", "write"]
max_ttl = "30m"
[resources.settings]
url = "redis://{REDIS_ADDR}/"
[resources.settings.rules]
read = ["~{prefix}:*", "+@read", "+@connection"]
write = ["~{prefix}:*", "+@read", "+@write", "+@connection"]
"#
        ),
        ..Default::default()
    })
    .await;
    let agent = s.agent("redis-1").await;
    let task = s.open_task(&agent, "sandbox", 3600).await;
    let g = grant(&s, &agent, &task, &resource, &["read"], Value::Null).await;
    assert_eq!(g["credential"]["kind"], "redis_acl_user");
    let user = g["credential"]["metadata"]["username"]
        .as_str()
        .unwrap()
        .to_owned();
    let password = g["credential"]["value"].as_str().unwrap().to_owned();

    // A connection authenticated as the user (multiplexed connections do not reconnect).
    let client = redis::Client::open(format!("redis://{user}:{password}@{REDIS_ADDR}/")).unwrap();
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("minted user authenticates");
    let v: String = redis::cmd("GET")
        .arg(format!("{prefix}:a"))
        .query_async(&mut con)
        .await
        .expect("allowed key");
    assert_eq!(v, "1");
    let e = redis::cmd("GET")
        .arg(format!("other-{prefix}"))
        .query_async::<Option<String>>(&mut con)
        .await
        .expect_err("other keys refused");
    assert!(e.to_string().to_lowercase().contains("noperm"), "{e}");
    let e = redis::cmd("SET")
        .arg(format!("{prefix}:b"))
        .arg("x")
        .query_async::<()>(&mut con)
        .await
        .expect_err("writes refused for a read grant");
    assert!(e.to_string().to_lowercase().contains("noperm"), "{e}");
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(
        clients.contains(&format!("user={user}")),
        "the agent's connection is open"
    );

    let r = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{task}/complete"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(lease_state(&s, &agent, &task).await[0]["state"], "revoked");
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(
        !clients.contains(&format!("user={user}")),
        "open connections closed: {clients}"
    );
    assert!(
        redis::cmd("PING")
            .query_async::<String>(&mut con)
            .await
            .is_err(),
        "the agent's open connection is dead"
    );
    let gone: redis::Value = redis::cmd("ACL")
        .arg("GETUSER")
        .arg(&user)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(gone, redis::Value::Nil, "user deleted");
    let fresh = redis::Client::open(format!("redis://{user}:{password}@{REDIS_ADDR}/")).unwrap();
    assert!(
        fresh.get_multiplexed_async_connection().await.is_err(),
        "auth fails after revocation"
    );
    let leases = lease_state(&s, &agent, &task).await;
    let lease: latch_core::model::Lease = serde_json::from_value(leases[0].clone()).unwrap();
    let provider =
        latch_providers::redis_acl::RedisProvider::new(&[domain_resource(&s, &resource)]);
    provider
        .revoke(&lease)
        .await
        .expect("revoking a deleted user succeeds");
    s.stop().await;
    let _: () = redis::cmd("DEL")
        .arg(format!("{prefix}:a"))
        .arg(format!("other-{prefix}"))
        .query_async(&mut admin)
        .await
        .unwrap();
}

/// The configured resource `id` as the domain sees it.
fn domain_resource(s: &TestServer, id: &str) -> latch_core::model::Resource {
    let config = latch_server::Config::load(&s.config_path()).unwrap();
    config
        .domain_resources()
        .into_iter()
        .find(|r| r.id == id)
        .unwrap()
}

// ------------------------------------------------------------------------------------ ssh

const SSHD: &str = "/usr/sbin/sshd";

struct Sshd {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn start_sshd(dir: &Path, ca_pub: &str, krl: &[u8]) -> Sshd {
    // sshd insists on its privilege separation directory.
    let _ = std::fs::create_dir_all("/run/sshd");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(dir.join("host_key")));
    std::fs::write(dir.join("ca.pub"), ca_pub).unwrap();
    std::fs::write(dir.join("revoked.krl"), krl).unwrap();
    let port = free_port();
    let config = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\nUsePAM no\n\
         StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
         AuthorizedKeysFile none\nTrustedUserCAKeys {d}/ca.pub\nRevokedKeys {d}/revoked.krl\n\
         PermitRootLogin prohibit-password\nLogLevel VERBOSE\n",
        d = dir.display()
    );
    std::fs::write(dir.join("sshd_config"), config).unwrap();
    run(Command::new(SSHD)
        .arg("-t")
        .arg("-f")
        .arg(dir.join("sshd_config")));
    let child = Command::new(SSHD)
        .args(["-D", "-e", "-f"])
        .arg(dir.join("sshd_config"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sshd");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Sshd {
        child,
        port,
        dir: dir.to_path_buf(),
    }
}

/// Whether `ssh` logs in as `user` with `key` + `cert` and runs `true`.
fn ssh_login(sshd: &Sshd, key: &Path, cert: &str, user: &str) -> bool {
    let cert_path = sshd.dir.join(format!("cert-{}.pub", suffix()));
    std::fs::write(&cert_path, cert).unwrap();
    let out = Command::new("ssh")
        .arg("-i")
        .arg(key)
        .arg("-o")
        .arg(format!("CertificateFile={}", cert_path.display()))
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "LogLevel=ERROR",
            "-p",
        ])
        .arg(sshd.port.to_string())
        .arg(format!("{user}@127.0.0.1"))
        .arg("true")
        .stdin(Stdio::null())
        .output()
        .expect("run ssh");
    out.status.success()
}

/// Like [`tool_available`] for programs without a harmless probe flag: checks the path.
pub(crate) fn binary_available(path: &str) -> bool {
    let ok = Path::new(path).exists();
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "`{path}` is not installed, and CI=true: this test needs it (scripts/test.sh installs it)"
            );
        }
        eprintln!(
            "\n!!!!! SKIPPING: `{path}` is not installed (scripts/test.sh installs it; CI=true makes this a failure) !!!!!\n"
        );
    }
    ok
}

fn local_user() -> String {
    let out = run(Command::new("id").arg("-un"));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn ssh_certificate_is_accepted_by_sshd_and_refused_after_expiry_and_krl_revocation() {
    if !tool_available("ssh", &["-V"])
        || !binary_available(SSHD)
        || !binary_available("/usr/bin/ssh-keygen")
    {
        return;
    }
    let me = local_user();
    let resource = format!("ssh-{}", suffix());
    let s = TestServer::start_with(TestOptions {
        extra_config: format!(
            r#"
[[resources]]
id = "{resource}"
kind = "ssh"
environment = "sandbox"
audience = "ssh"
actions = ["read", "write"]
max_ttl = "30m"
[resources.settings]
principals = ["{me}", "someone-else"]
backdate_secs = 30
extensions = ["permit-pty"]
"#
        ),
        ..Default::default()
    })
    .await;
    let dir = temp_dir("sshd");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(dir.join("agent_key")));
    let agent_pub = std::fs::read_to_string(dir.join("agent_key.pub")).unwrap();
    let ca = s.get(None, "/v1/ssh/ca.pub").await;
    assert_eq!(ca.status, 200);
    let ca_pub = ca.body.as_str().unwrap().to_owned();
    assert!(ca_pub.starts_with("ssh-ed25519 "), "{ca_pub}");
    let krl = s
        .http
        .get(format!("{}/v1/ssh/krl", s.base))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&krl[..8], b"SSHKRL\n\0");
    let sshd = start_sshd(&dir, &ca_pub, &krl);
    let key = dir.join("agent_key");

    // Expired: a certificate issued two hours ago for ten minutes (the broker's clock is set
    // back; sshd judges with the real time).
    let real_now = latch_core::Clock::now_unix_secs(&s.clock);
    s.clock.set(real_now - 7200);
    let agent = s.agent("ssh-old").await;
    let old_task = s.open_task(&agent, "sandbox", 3600).await;
    let old = grant(
        &s,
        &agent,
        &old_task,
        &resource,
        &["read"],
        json!({"public_key": agent_pub}),
    )
    .await;
    let old_cert = old["credential"]["value"].as_str().unwrap().to_owned();
    s.clock.set(real_now);
    assert!(
        !ssh_login(&sshd, &key, &old_cert, &me),
        "expired certificate refused"
    );

    let agent = s.agent("ssh-1").await;
    let task = s.open_task(&agent, "sandbox", 3600).await;
    // Never an empty principal list, and only allowed principals.
    let r = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{task}/requests"),
            json!({"resource": resource, "actions": ["read"], "params": {"public_key": agent_pub, "principals": []}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.to_string().contains("empty principal list"),
        "{}",
        r.body
    );
    let r = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{task}/requests"),
            json!({"resource": resource, "actions": ["read"], "params": {"public_key": agent_pub, "principals": ["root-of-all"]}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);

    // Weak keys are refused.
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "1024", "-N", "", "-f"])
        .arg(dir.join("weak_key")));
    let weak = std::fs::read_to_string(dir.join("weak_key.pub")).unwrap();
    let r = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{task}/requests"),
            json!({"resource": resource, "actions": ["read"], "params": {"public_key": weak}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.to_string().contains("2048"), "{}", r.body);

    // Another principal only: sshd refuses the login as the local user.
    let other = grant(
        &s,
        &agent,
        &task,
        &resource,
        &["read"],
        json!({"public_key": agent_pub, "principals": ["someone-else"]}),
    )
    .await;
    assert!(
        !ssh_login(
            &sshd,
            &key,
            other["credential"]["value"].as_str().unwrap(),
            &me
        ),
        "wrong principal refused"
    );

    let g = grant(
        &s,
        &agent,
        &task,
        &resource,
        &["read"],
        json!({"public_key": agent_pub, "principals": [me]}),
    )
    .await;
    assert_eq!(g["credential"]["kind"], "ssh_certificate");
    let cert = g["credential"]["value"].as_str().unwrap().to_owned();
    let lease = g["lease"]["id"].as_str().unwrap().to_owned();
    let key_id = g["credential"]["metadata"]["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        key_id.contains(&task) && key_id.contains(&lease),
        "{key_id}"
    );
    // ssh-keygen reads the certificate back: principals, key id, validity.
    let cert_path = dir.join("check-cert.pub");
    std::fs::write(&cert_path, &cert).unwrap();
    let shown = String::from_utf8(
        run(Command::new("ssh-keygen")
            .arg("-L")
            .arg("-f")
            .arg(&cert_path))
        .stdout,
    )
    .unwrap();
    assert!(shown.contains(&format!("Key ID: \"{key_id}\"")), "{shown}");
    assert!(shown.contains("permit-pty"), "{shown}");
    assert!(
        ssh_login(&sshd, &key, &cert, &me),
        "valid certificate accepted by sshd"
    );

    // Renewal re-signs the same key (kept on the request) under the same key id.
    let r = s
        .post(
            Some(&agent),
            &format!("/v1/leases/{lease}/renew"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "renew: {}", r.body);
    let renewed = r.body["credential"]["value"].as_str().unwrap().to_owned();
    assert_ne!(renewed, cert);
    assert_eq!(r.body["credential"]["metadata"]["key_id"], key_id.as_str());
    assert!(
        ssh_login(&sshd, &key, &renewed, &me),
        "renewed certificate accepted"
    );

    // Revoke the lease; the served KRL now lists it; sshd reads the new KRL and refuses.
    let r = s
        .post(
            Some(&agent),
            &format!("/v1/leases/{lease}/revoke"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let krl = s
        .http
        .get(format!("{}/v1/ssh/krl", s.base))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    std::fs::write(sshd.dir.join("revoked.krl"), &krl).unwrap();
    // ssh-keygen agrees the certificate is revoked by this KRL.
    let q = Command::new("ssh-keygen")
        .arg("-Q")
        .arg("-f")
        .arg(sshd.dir.join("revoked.krl"))
        .arg(&cert_path)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&q.stdout).contains("REVOKED"),
        "{}",
        String::from_utf8_lossy(&q.stdout)
    );
    assert!(
        !ssh_login(&sshd, &key, &cert, &me),
        "revoked certificate refused"
    );
    assert!(
        !ssh_login(&sshd, &key, &renewed, &me),
        "its renewal is refused too"
    );
    drop(sshd);
    s.stop().await;
}

// ------------------------------------------------------------------------------------ x509

pub(crate) fn openssl(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl")
}

/// `latch request --public-key FILE --param principals=[…]` gets an SSH certificate for that
/// key through the CLI binary; postgres and redis resources refuse params they do not take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_request_sends_params_and_providers_without_params_refuse_them() {
    if !binary_available("/usr/bin/ssh-keygen") {
        return;
    }
    let ssh = format!("ssh-{}", suffix());
    let rd = format!("redis-{}", suffix());
    let pg = format!("pg-{}", suffix());
    let x509 = format!("mtls-{}", suffix());
    let s = TestServer::start_with(TestOptions {
        extra_config: format!(
            r#"
[[resources]]
id = "{ssh}"
kind = "ssh"
environment = "sandbox"
audience = "ssh"
actions = ["read"]
max_ttl = "30m"
[resources.settings]
principals = ["deploy", "other"]

[[resources]]
id = "{x509}"
kind = "x509"
environment = "sandbox"
audience = "mtls"
actions = ["read"]
max_ttl = "30m"
[resources.settings]
backdate_secs = 90

[[resources]]
id = "{rd}"
kind = "redis"
environment = "sandbox"
audience = "redis"
actions = ["read"]
max_ttl = "30m"
[resources.settings]
url = "redis://{REDIS_ADDR}/"
[resources.settings.rules]
read = ["~x:*", "+@read"]
{}"#,
            pg_resource(&pg, "public", 5432)
        ),
        ..Default::default()
    })
    .await;
    let dir = temp_dir("cli-ssh");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(dir.join("k")));
    let agent = s.agent("cli-params").await;
    let task = s.open_task(&agent, "sandbox", 3600).await;
    let latch = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_latch"))
            .args(args)
            .env("LATCH_SERVER", &s.base)
            .env("LATCH_TOKEN", &agent)
            .arg("--json")
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (
            out.status.code(),
            v,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let key = dir.join("k.pub");
    let (code, g, err) = tokio::task::block_in_place(|| {
        latch(&[
            "request",
            &task,
            "--resource",
            &ssh,
            "--action",
            "read",
            "--public-key",
            key.to_str().unwrap(),
            "--param",
            r#"principals=["deploy"]"#,
        ])
    });
    assert_eq!(code, Some(0), "{g} {err}");
    assert_eq!(g["credential"]["kind"], "ssh_certificate", "{g}");
    std::fs::write(
        dir.join("k-cert.pub"),
        g["credential"]["value"].as_str().unwrap(),
    )
    .unwrap();
    let out = run(Command::new("ssh-keygen")
        .args(["-L", "-f"])
        .arg(dir.join("k-cert.pub")));
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("deploy") && !listing.contains("other"),
        "{listing}"
    );
    let fp = |f: &Path| {
        let o = run(Command::new("ssh-keygen").arg("-lf").arg(f));
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        fp(&key),
        fp(&dir.join("k-cert.pub")),
        "certifies the file's key"
    );
    // The serial is a string (u64 exceeds JSON's exact integers) and is the certificate's.
    let serial = g["credential"]["metadata"]["serial"]
        .as_str()
        .expect("serial is a string");
    let serial: u64 = serial.parse().unwrap();
    assert!(listing.contains(&format!("Serial: {serial}")), "{listing}");

    // A PEM public key goes to an x509 resource as `public_key_pem`; notBefore is back-dated by
    // the resource's `backdate_secs`.
    if tool_available("openssl", &["version"]) {
        for args in [
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                "x.pem",
            ][..],
            &["pkey", "-in", "x.pem", "-pubout", "-out", "xpub.pem"],
        ] {
            assert!(openssl(args, &dir).status.success());
        }
        let pem = dir.join("xpub.pem");
        let (code, g, err) = tokio::task::block_in_place(|| {
            latch(&[
                "request",
                &task,
                "--resource",
                &x509,
                "--action",
                "read",
                "--ttl",
                "10m",
                "--public-key",
                pem.to_str().unwrap(),
            ])
        });
        assert_eq!(code, Some(0), "{g} {err}");
        assert_eq!(g["credential"]["kind"], "x509_certificate", "{g}");
        let m = &g["credential"]["metadata"];
        let nb = m["not_before_unix_secs"].as_i64().unwrap();
        let na = m["not_after_unix_secs"].as_i64().unwrap();
        assert_eq!(na - nb, 600 + 90, "{m}");
        std::fs::write(
            dir.join("leaf.pem"),
            g["credential"]["value"].as_str().unwrap(),
        )
        .unwrap();
        let o = openssl(
            &["x509", "-in", "leaf.pem", "-noout", "-checkend", "0"],
            &dir,
        );
        assert!(o.status.success(), "valid now");
    }
    // A malformed --param is refused locally.
    let (code, _, err) = tokio::task::block_in_place(|| {
        latch(&[
            "request",
            &task,
            "--resource",
            &ssh,
            "--action",
            "read",
            "--param",
            "novalue",
        ])
    });
    assert_ne!(code, Some(0));
    assert!(err.contains("KEY=VALUE"), "{err}");

    // postgres / redis take no params: 400, not silently ignored.
    for (resource, available) in [
        (&rd, service_available("Redis", REDIS_ADDR)),
        (&pg, service_available("PostgreSQL", PG_ADDR)),
    ] {
        if !available {
            continue;
        }
        let r = s
            .post(
                Some(&agent),
                &format!("/v1/tasks/{task}/requests"),
                json!({"resource": resource, "actions": ["read"], "ttl_secs": 600,
                       "justification": "t", "params": {"databse": "other"}}),
            )
            .await;
        assert_eq!(r.status, 400, "{resource}: {}", r.body);
        assert_eq!(r.body["error"]["code"], "invalid_request");
        assert!(r.body.to_string().contains("databse"), "{}", r.body);
    }
    s.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ca_rotation_period_under_an_hour_is_a_config_error() {
    let dir = temp_dir("rotation-cfg");
    let path = latch_server::examples::write_example(&dir, "127.0.0.1:0").unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("# ca_rotation_period = \"90d\""));
    for (period, ok) in [
        ("30m", false),
        ("59m 59s", false),
        ("1h", true),
        ("90d", true),
    ] {
        std::fs::write(
            &path,
            text.replace(
                "# ca_rotation_period = \"90d\"",
                &format!("ca_rotation_period = \"{period}\""),
            ),
        )
        .unwrap();
        match latch_server::Config::load(&path) {
            Ok(_) => assert!(ok, "{period} accepted"),
            Err(e) => {
                assert!(!ok, "{period}: {}", e.0);
                assert!(e.0.contains("ca_rotation_period"), "{}", e.0);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Weak leaf keys and malformed or missing params are the request's fault: 400
/// `invalid_request`, not 502 `provider_failed`.
#[tokio::test]
async fn weak_keys_and_bad_params_are_invalid_requests() {
    if !tool_available("openssl", &["version"]) {
        return;
    }
    let x509 = format!("mtls-{}", suffix());
    let ssh = format!("ssh-{}", suffix());
    let s = TestServer::start_with(TestOptions {
        extra_config: format!(
            r#"
[[resources]]
id = "{x509}"
kind = "x509"
environment = "sandbox"
audience = "mtls"
actions = ["read"]
max_ttl = "30m"
[resources.settings]
trust_domain = "acme.example"

[[resources]]
id = "{ssh}"
kind = "ssh"
environment = "sandbox"
audience = "ssh"
actions = ["read"]
max_ttl = "30m"
[resources.settings]
principals = ["deploy"]
"#
        ),
        ..Default::default()
    })
    .await;
    let dir = temp_dir("x509-weak");
    for args in [
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:512",
            "-out",
            "key.pem",
        ][..],
        &["pkey", "-in", "key.pem", "-pubout", "-out", "pub.pem"],
        &[
            "req", "-new", "-key", "key.pem", "-subj", "/CN=weak", "-out", "csr.pem",
        ],
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:1024",
            "-out",
            "k1024.pem",
        ],
        &[
            "req",
            "-new",
            "-key",
            "k1024.pem",
            "-subj",
            "/CN=weak",
            "-out",
            "csr1024.pem",
        ],
    ] {
        let o = openssl(args, &dir);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let public_key_pem = std::fs::read_to_string(dir.join("pub.pem")).unwrap();
    let csr_pem = std::fs::read_to_string(dir.join("csr.pem")).unwrap();
    let csr1024 = std::fs::read_to_string(dir.join("csr1024.pem")).unwrap();
    let agent = s.agent("weak-1").await;
    let task = s.open_task(&agent, "sandbox", 3600).await;
    let cases = [
        (&x509, json!({"public_key_pem": public_key_pem}), "got 512"),
        // RSA CSRs under 2048 bits fail signature verification already (the strength check
        // runs after it too).
        (&x509, json!({"csr_pem": csr_pem}), "csr_pem"),
        (&x509, json!({"csr_pem": csr1024}), "csr_pem"),
        (&x509, Value::Null, "params"),
        (
            &x509,
            json!({"public_key_pem": "not a key"}),
            "public_key_pem",
        ),
        (&ssh, Value::Null, "params"),
        (
            &ssh,
            json!({"public_key": "ssh-ed25519 garbage"}),
            "public_key",
        ),
        (
            &ssh,
            json!({"public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl", "principals": ["root"]}),
            "root",
        ),
    ];
    for (resource, params, needle) in cases {
        let r = s
            .post(
                Some(&agent),
                &format!("/v1/tasks/{task}/requests"),
                json!({"resource": resource, "actions": ["read"], "ttl_secs": 600,
                       "justification": "test", "params": params}),
            )
            .await;
        assert_eq!(r.status, 400, "{resource} {params}: {}", r.body);
        assert_eq!(r.body["error"]["code"], "invalid_request", "{}", r.body);
        assert!(r.body.to_string().contains(needle), "{needle}: {}", r.body);
    }
    s.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn x509_leaf_verifies_against_the_ca_until_listed_in_the_crl() {
    if !tool_available("openssl", &["version"]) {
        return;
    }
    let resource = format!("mtls-{}", suffix());
    let s = TestServer::start_with(TestOptions {
        extra_config: format!(
            r#"
[[resources]]
id = "{resource}"
kind = "x509"
environment = "sandbox"
audience = "mtls"
actions = ["read", "write"]
max_ttl = "30m"
[resources.settings]
trust_domain = "acme.example"
"#
        ),
        ..Default::default()
    })
    .await;
    let dir = temp_dir("x509");
    let o = openssl(
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
    assert!(o.status.success());
    assert!(
        openssl(
            &["pkey", "-in", "key.pem", "-pubout", "-out", "pub.pem"],
            &dir
        )
        .status
        .success()
    );
    assert!(
        openssl(
            &[
                "req",
                "-new",
                "-key",
                "key.pem",
                "-subj",
                "/CN=ignored",
                "-out",
                "csr.pem"
            ],
            &dir
        )
        .status
        .success()
    );
    let agent = s.agent("x509-1").await;
    let task = s.open_task(&agent, "sandbox", 3600).await;
    let public_key_pem = std::fs::read_to_string(dir.join("pub.pem")).unwrap();
    let g = grant(
        &s,
        &agent,
        &task,
        &resource,
        &["read"],
        json!({"public_key_pem": public_key_pem}),
    )
    .await;
    assert_eq!(g["credential"]["kind"], "x509_certificate");
    std::fs::write(
        dir.join("leaf.pem"),
        g["credential"]["value"].as_str().unwrap(),
    )
    .unwrap();
    let lease = g["lease"]["id"].as_str().unwrap().to_owned();
    // From a CSR too.
    let csr_pem = std::fs::read_to_string(dir.join("csr.pem")).unwrap();
    let g2 = grant(
        &s,
        &agent,
        &task,
        &resource,
        &["read"],
        json!({"csr_pem": csr_pem}),
    )
    .await;
    std::fs::write(
        dir.join("leaf2.pem"),
        g2["credential"]["value"].as_str().unwrap(),
    )
    .unwrap();

    let ca = s.get(None, "/v1/x509/ca.pem").await;
    assert_eq!(ca.status, 200);
    std::fs::write(dir.join("ca.pem"), ca.body.as_str().unwrap()).unwrap();
    let crl = s.get(None, "/v1/x509/crl").await;
    assert_eq!(crl.status, 200);
    std::fs::write(dir.join("crl.pem"), crl.body.as_str().unwrap()).unwrap();

    let text =
        String::from_utf8(openssl(&["x509", "-in", "leaf.pem", "-noout", "-text"], &dir).stdout)
            .unwrap();
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(
        text.contains(&format!("URI:spiffe://acme.example/task/{task}")),
        "{text}"
    );
    let public_of_leaf =
        String::from_utf8(openssl(&["x509", "-in", "leaf.pem", "-noout", "-pubkey"], &dir).stdout)
            .unwrap();
    assert_eq!(
        public_of_leaf.trim(),
        public_key_pem.trim(),
        "the leaf certifies the agent's key"
    );
    let verify = |leaf: &str| {
        openssl(
            &[
                "verify",
                "-CAfile",
                "ca.pem",
                "-crl_check",
                "-CRLfile",
                "crl.pem",
                "-purpose",
                "sslclient",
                leaf,
            ],
            &dir,
        )
    };
    for leaf in ["leaf.pem", "leaf2.pem"] {
        let v = verify(leaf);
        assert!(
            v.status.success(),
            "openssl verify {leaf}: {}{}",
            String::from_utf8_lossy(&v.stdout),
            String::from_utf8_lossy(&v.stderr)
        );
    }

    // Renewal: a new certificate for the same key with the lease's next serial.
    let r = s
        .post(
            Some(&agent),
            &format!("/v1/leases/{lease}/renew"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "renew: {}", r.body);
    assert_ne!(
        r.body["credential"]["metadata"]["serial"],
        g["credential"]["metadata"]["serial"]
    );
    std::fs::write(
        dir.join("renewed.pem"),
        r.body["credential"]["value"].as_str().unwrap(),
    )
    .unwrap();
    assert!(
        verify("renewed.pem").status.success(),
        "renewed leaf verifies"
    );

    let r = s
        .post(
            Some(&agent),
            &format!("/v1/leases/{lease}/revoke"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let crl = s.get(None, "/v1/x509/crl").await;
    std::fs::write(dir.join("crl.pem"), crl.body.as_str().unwrap()).unwrap();
    let v = verify("leaf.pem");
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    assert!(
        !v.status.success() && out.contains("revoked"),
        "revoked leaf refused: {out}"
    );
    assert!(
        !verify("renewed.pem").status.success(),
        "its renewal is revoked too"
    );
    assert!(
        verify("leaf2.pem").status.success(),
        "the other lease's certificate still verifies"
    );
    s.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn ssh_step_up_approves_the_exact_public_key_and_the_claim_certifies_it() {
    if !binary_available("/usr/bin/ssh-keygen") {
        return;
    }
    let resource = format!("ssh-secret-{}", suffix());
    let s = TestServer::start_with(TestOptions {
        extra_config: format!(
            r#"
[[resources]]
id = "{resource}"
kind = "ssh"
environment = "sandbox"
sensitivity = "secret"
audience = "ssh"
actions = ["read"]
max_ttl = "30m"
[resources.settings]
principals = ["deploy"]
"#
        ),
        ..Default::default()
    })
    .await;
    let dir = temp_dir("ssh-stepup");
    let mut keys = Vec::new();
    for name in ["k1", "k2"] {
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(dir.join(name)));
        keys.push(std::fs::read_to_string(dir.join(format!("{name}.pub"))).unwrap());
    }
    let agent = s.agent("ssh-stepup").await;
    let task = s.open_task(&agent, "sandbox", 3600).await;
    let mut pending = Vec::new();
    for k in &keys {
        let r = s
            .post(
                Some(&agent),
                &format!("/v1/tasks/{task}/requests"),
                json!({"resource": resource, "actions": ["read"], "ttl_secs": 600, "justification": "same",
                       "params": {"public_key": k}}),
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.body);
        pending.push(r.body["request"].clone());
    }
    // Same request, another key: another digest (the approval binds the key).
    assert_ne!(pending[0]["digest"], pending[1]["digest"]);
    let rid = pending[0]["id"].as_str().unwrap();
    let digest = pending[0]["digest"].as_str().unwrap();
    let approver = s.human("sec-1", &["security"]).await;
    let a = s
        .post(
            Some(&approver),
            &format!("/v1/approvals/{rid}/approve"),
            json!({"digest": digest, "reason": "ok"}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let c = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{task}/requests/{rid}/claim"),
            json!({}),
        )
        .await;
    assert_eq!(c.status, 201, "{}", c.body);
    let cert_path = dir.join("claimed-cert.pub");
    std::fs::write(&cert_path, c.body["credential"]["value"].as_str().unwrap()).unwrap();
    let shown = String::from_utf8(
        run(Command::new("ssh-keygen")
            .arg("-L")
            .arg("-f")
            .arg(&cert_path))
        .stdout,
    )
    .unwrap();
    let fp = String::from_utf8(
        run(Command::new("ssh-keygen")
            .arg("-l")
            .arg("-f")
            .arg(dir.join("k1.pub")))
        .stdout,
    )
    .unwrap();
    let fp = fp.split_whitespace().nth(1).unwrap().to_owned();
    assert!(
        shown.contains(&fp),
        "the claimed certificate certifies the approved key {fp}: {shown}"
    );
    assert!(shown.contains("deploy"), "{shown}");
    s.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn ca_rotation_period_rotates_at_start_and_keeps_the_old_key_published_until_expiry() {
    let dir = temp_dir("rotation");
    let path = latch_server::examples::write_example(&dir, "127.0.0.1:0").unwrap();
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "signing_alg = \"EdDSA\"",
        "ca_rotation_period = \"1d\"\nsigning_alg = \"EdDSA\"",
        1,
    ) + r#"
[[resources]]
id = "hosts"
kind = "ssh"
environment = "sandbox"
audience = "ssh"
actions = ["read"]
max_ttl = "15m"
max_lifetime = "1h"
[resources.settings]
principals = ["deploy"]
"#;
    std::fs::write(&path, text).unwrap();
    let clock = latch_core::ManualClock::new(1_900_000_000);
    let http = reqwest::Client::new();
    let serve = || async {
        latch_server::start(
            latch_server::Config::load(&path).unwrap(),
            latch_server::StartOptions {
                clock: Some(std::sync::Arc::new(clock.clone())),
            },
        )
        .await
        .expect("server starts")
    };
    let ca_keys = |base: String| {
        let http = http.clone();
        async move {
            let text = http
                .get(format!("{base}/v1/ssh/ca.pub"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            text.lines().map(str::to_owned).collect::<Vec<_>>()
        }
    };

    let server = serve().await;
    let first = ca_keys(server.base_url.clone()).await;
    assert_eq!(first.len(), 1, "{first:?}");
    server.shutdown().await;

    // A day later the next start rotates; the old key stays published for the longest
    // certificate life (max_lifetime 1 h + 10 min back-dating bound).
    clock.advance(86_400);
    let server = serve().await;
    let rotated = ca_keys(server.base_url.clone()).await;
    assert_eq!(rotated.len(), 2, "{rotated:?}");
    assert_ne!(rotated[0], first[0], "a new current key");
    assert_eq!(rotated[1], first[0], "the old key is still published");
    clock.advance(3600 + 600);
    let later = ca_keys(server.base_url.clone()).await;
    assert_eq!(later, vec![rotated[0].clone()], "the old key retired");
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The principals an SSH certificate would carry reach policy as `context.principals`: what the
/// request names, or every principal the resource allows when it names none. A guard (as in the
/// README) refuses `root` either way; other principals pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_principals_are_decided_by_policy() {
    if !binary_available("/usr/bin/ssh-keygen") {
        return;
    }
    let resource = format!("ssh-hosts-{}", suffix());
    let s = TestServer::start_with(TestOptions {
        extra_config: format!(
            r#"
[[resources]]
id = "{resource}"
kind = "ssh"
environment = "sandbox"
audience = "ssh"
actions = ["read"]
max_ttl = "30m"
[resources.settings]
principals = ["deploy", "root"]
"#
        ),
        extra_policies: vec![(
            "30-ssh.cedar".into(),
            "@id(\"ssh-no-root-login\")\n@reason(\"certificates are never issued for the root login\")\n\
             forbid (principal, action, resource)\n\
             when { context has principals && context.principals.contains(\"root\") };\n"
                .into(),
        )],
        ..Default::default()
    })
    .await;
    let dir = temp_dir("ssh-policy");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(dir.join("k")));
    let key = std::fs::read_to_string(dir.join("k.pub")).unwrap();
    let agent = s.agent("ssh-policy").await;
    let task = s.open_task(&agent, "sandbox", 3600).await;
    let ask = |params: Value| {
        let s = &s;
        let agent = agent.clone();
        let task = task.clone();
        let resource = resource.clone();
        async move {
            s.post(
                Some(&agent),
                &format!("/v1/tasks/{task}/requests"),
                json!({"resource": resource, "actions": ["read"], "justification": "j", "params": params}),
            )
            .await
        }
    };
    let r = ask(json!({"public_key": key, "principals": ["root"]})).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        r.body["request"]["decision"]["policy_ids"],
        json!(["ssh-no-root-login"])
    );
    // Naming none means every allowed principal, root included: refused too.
    let r = ask(json!({"public_key": key})).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = ask(json!({"public_key": key, "principals": ["deploy"]})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    s.stop().await;
}
