//! No secret at any log level (issue 13): `latch serve` runs as a real process with
//! `LATCH_LOG=trace`, and so does `latch mcp` (stdio). The whole flow runs against them: REST
//! grants for every provider kind (jwt, postgres, redis, ssh, x509), renewals, revocations
//! (by lease, RFC 7009, task end, leak scan), a step-up approval and its claim, token exchange
//! (RFC 8693), introspection, error paths (several carrying a secret where it does not
//! belong), and MCP over streamable HTTP and over stdio. Every credential and identity token
//! handed out is collected; none may appear, in any usual encoding, in the broker's log, the
//! stdio process's log, the audit records (API, export, and the SQLite files themselves) or any
//! answer other than the one delivering it.
//!
//! Needs PostgreSQL and Redis like the provider tests: it skips loudly without them and fails
//! under `CI=true`. SSH and X.509 certificates are minted for an Ed25519 key made here, so no
//! `sshd` or `openssl` is needed (the agent's private key never reaches the broker).

mod harness;
mod needles;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use latch_server::examples::{DEMO_CLIENT_ID, DEMO_CLIENT_SECRET};
use latch_testkit::{PG_ADDR, service_available};
use serde_json::{Value, json};

use harness::{Api, Broker, MCP_VERSION, McpStdio};

const REDIS_ADDR: &str = "127.0.0.1:6379";
const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// An Ed25519 key as an OpenSSH public key line and as a PEM SubjectPublicKeyInfo.
fn agent_keys() -> (String, String) {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).unwrap();
    let kp = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let public = kp.public_key().as_ref();
    let mut wire = Vec::new();
    for part in [b"ssh-ed25519".as_slice(), public] {
        wire.extend_from_slice(&(part.len() as u32).to_be_bytes());
        wire.extend_from_slice(part);
    }
    let openssh = format!("ssh-ed25519 {} agent@log-secrets", STANDARD.encode(&wire));
    // SEQUENCE { SEQUENCE { OID 1.3.101.112 (Ed25519) }, BIT STRING key } (RFC 8410).
    let mut spki = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    spki.extend_from_slice(public);
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        STANDARD.encode(&spki)
    );
    (openssh, pem)
}

/// The example configuration plus a resource of every other provider kind.
fn config(dir: &Path, tag: &str) -> PathBuf {
    let path = latch_server::examples::write_example(dir, "127.0.0.1:0").unwrap();
    let extra = format!(
        r#"
[[resources]]
id = "pg-{tag}"
kind = "postgres"
environment = "sandbox"
audience = "postgres"
actions = ["read"]
max_ttl = "30m"
[resources.settings]
url = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
connect_timeout_secs = 5
[resources.settings.grants]
read = ["GRANT CONNECT ON DATABASE postgres TO {{role}}"]

[[resources]]
id = "redis-{tag}"
kind = "redis"
environment = "sandbox"
audience = "redis"
actions = ["read"]
max_ttl = "30m"
[resources.settings]
url = "redis://{REDIS_ADDR}/"
[resources.settings.rules]
read = ["~log-secrets-{tag}:*", "+@read", "+@connection"]

[[resources]]
id = "ssh-{tag}"
kind = "ssh"
environment = "sandbox"
audience = "ssh"
actions = ["read"]
max_ttl = "30m"
[resources.settings]
principals = ["deploy"]

[[resources]]
id = "x509-{tag}"
kind = "x509"
environment = "sandbox"
audience = "mtls"
actions = ["read"]
max_ttl = "30m"
[resources.settings]
trust_domain = "acme.example"
"#
    );
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&extra);
    std::fs::write(&path, text).unwrap();
    path
}

async fn dev_token(api: &Api, what: &str, body: Value) -> String {
    let v = api.deliver(what, "/v1/dev/tokens", None, body, 200).await;
    v["token"].as_str().unwrap().to_owned()
}

async fn workload_token(api: &Api, run: &str) -> String {
    let body = json!({"kind": "workload", "repository": "acme/payments-api",
        "git_ref": "refs/heads/main", "actor": "alice", "run_id": run, "ttl_secs": 3600});
    dev_token(api, &format!("workload token {run}"), body).await
}

async fn human_token(api: &Api, who: &str, group: &str) -> String {
    let body = json!({"kind": "human", "subject": who, "groups": [group], "ttl_secs": 3600});
    dev_token(api, &format!("human token {who}"), body).await
}

async fn open_task(api: &Api, token: &str, environment: &str) -> String {
    let body = json!({"purpose": "log secrets", "environment": environment});
    let (s, t) = api.post("/v1/tasks", token, body).await;
    assert_eq!(s, 201, "{t}");
    t["id"].as_str().unwrap().to_owned()
}

/// Grants on every provider, their renewals, introspection, two revocations. Returns the
/// task, the current ci-cache token and the current postgres password.
async fn rest_flow(api: &Api, agent: &str, tag: &str) -> (String, String, String) {
    let (openssh, pem) = agent_keys();
    let task = open_task(api, agent, "sandbox").await;
    let mut granted = Vec::new();
    for (resource, params) in [
        ("ci-cache".to_owned(), Value::Null),
        (format!("pg-{tag}"), Value::Null),
        (format!("redis-{tag}"), Value::Null),
        (format!("ssh-{tag}"), json!({"public_key": openssh})),
        (format!("x509-{tag}"), json!({"public_key_pem": pem})),
    ] {
        let body = json!({"resource": resource, "actions": ["read"], "ttl_secs": 600,
            "justification": "log secrets", "params": params});
        let path = format!("/v1/tasks/{task}/requests");
        let g = api
            .deliver(&format!("grant {resource}"), &path, Some(agent), body, 201)
            .await;
        granted.push(g);
    }
    let mut current = Vec::new();
    for g in &granted {
        let lease = g["lease"]["id"].as_str().unwrap();
        let path = format!("/v1/leases/{lease}/renew");
        let what = format!("renewal of {lease}");
        let r = api
            .deliver(&what, &path, Some(agent), json!({"ttl_secs": 300}), 200)
            .await;
        current.push(r["credential"]["value"].as_str().unwrap().to_owned());
    }
    let old_jwt = granted[0]["credential"]["value"].as_str().unwrap();
    let (jwt, password) = (current[0].clone(), current[1].clone());
    for t in [old_jwt, &jwt, &password] {
        let (s, v) = api
            .client_form("/v1/oauth/introspect", DEMO_CLIENT_SECRET, &[("token", t)])
            .await;
        assert_eq!(s, 200, "{v}");
    }
    // One revocation by lease id (the postgres role is dropped), one by RFC 7009.
    let pg_lease = granted[1]["lease"]["id"].as_str().unwrap();
    let (s, v) = api
        .post(&format!("/v1/leases/{pg_lease}/revoke"), agent, json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = api
        .client_form("/v1/oauth/revoke", DEMO_CLIENT_SECRET, &[("token", &jwt)])
        .await;
    assert_eq!(s, 200, "{v}");
    (task, jwt, password)
}

/// Token exchange, a step-up approval and its claim, a leak scan, an audit search by value.
async fn oauth_and_approval_flow(api: &Api, agent: &str) {
    let details = json!([{"type": "latch_access", "resource": "ci-cache", "actions": ["read"],
        "environment": "sandbox", "purpose": "log secrets exchange"}])
    .to_string();
    let (s, v) = api
        .token_exchange(&[
            ("grant_type", EXCHANGE),
            ("subject_token", agent),
            ("subject_token_type", JWT),
            ("authorization_details", &details),
        ])
        .await;
    assert_eq!(s, 200, "{v}");
    let exchanged = v["access_token"].as_str().unwrap().to_owned();
    let (s, i) = api
        .client_form(
            "/v1/oauth/introspect",
            DEMO_CLIENT_SECRET,
            &[("token", &exchanged)],
        )
        .await;
    assert_eq!((s, &i["active"]), (200, &json!(true)), "{i}");

    // Step-up: pending, approved by a human, claimed.
    let approver = human_token(api, "bob", "prod-approvers").await;
    let prod = open_task(api, agent, "production").await;
    let body = json!({"resource": "deploy-pipeline", "actions": ["deploy"], "ttl_secs": 600,
        "justification": "ship it"});
    let (s, p) = api
        .post(&format!("/v1/tasks/{prod}/requests"), agent, body)
        .await;
    assert_eq!(s, 202, "{p}");
    let rid = p["request"]["id"].as_str().unwrap();
    let body = json!({"digest": p["request"]["digest"], "reason": "ok"});
    let (s, a) = api
        .post(&format!("/v1/approvals/{rid}/approve"), &approver, body)
        .await;
    assert_eq!(s, 200, "{a}");
    let path = format!("/v1/tasks/{prod}/requests/{rid}/claim");
    api.deliver("claim", &path, Some(agent), json!({}), 201)
        .await;

    // A leaked value reported by a scan is revoked; the answer names it by kind only.
    let text = format!("oops: Authorization: Bearer {exchanged}\n");
    let (s, v) = api
        .post("/v1/scan", agent, json!({"text": text, "source": "ci.log"}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["findings"][0]["response"]["matched"], true, "{v}");
    let admin = human_token(api, "auditor", "latch-admins").await;
    let (s, v) = api
        .post("/v1/audit/find", &admin, json!({"value": exchanged}))
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = api
        .post(&format!("/v1/tasks/{prod}/complete"), agent, json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
}

/// Error paths, several of them carrying a secret where it does not belong.
async fn error_paths(api: &Api, agent: &str, task: &str, jwt: &str, password: &str) {
    // An access token or a password presented as an identity; a tampered identity token.
    let mut tampered = agent.to_owned();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    for bad in [jwt, password, tampered.as_str()] {
        let (s, _) = api.get("/v1/tasks", bad).await;
        assert_eq!(s, 401);
    }
    // An unknown resource; renewals of an unknown lease, with a negative ttl or after
    // revocation; secrets in fields of the wrong type.
    let requests = format!("/v1/tasks/{task}/requests");
    let body = json!({"resource": "no-such-resource", "actions": ["read"]});
    let (s, v) = api.post(&requests, agent, body).await;
    assert!(s >= 400, "{v}");
    let (s, _) = api
        .post("/v1/leases/lease_0000/renew", agent, json!({}))
        .await;
    assert!(s >= 400);
    let (_, leases) = api.get(&format!("/v1/tasks/{task}/leases"), agent).await;
    for l in leases.as_array().unwrap() {
        let path = format!("/v1/leases/{}/renew", l["id"].as_str().unwrap());
        let (s, v) = api.post(&path, agent, json!({"ttl_secs": -1})).await;
        assert!(s >= 400, "{v}");
    }
    let path = format!("/v1/leases/{}/renew", leases[0]["id"].as_str().unwrap());
    let (s, _) = api.post(&path, agent, json!({"ttl_secs": password})).await;
    assert_eq!(s, 400);
    let body = json!({"resource": "ci-cache", "actions": ["read"], "ttl_secs": jwt});
    let (s, _) = api.post(&requests, agent, body).await;
    assert_eq!(s, 400);
    // Credentials where ids and names belong (path segments, a resource name).
    let (s, _) = api
        .post(&format!("/v1/leases/{jwt}/renew"), agent, json!({}))
        .await;
    assert_eq!(s, 404);
    let (s, _) = api.get(&format!("/v1/tasks/{password}"), agent).await;
    assert_eq!(s, 404);
    let body = json!({"resource": password, "actions": ["read"], "justification": "j"});
    let (s, _) = api.post(&requests, agent, body).await;
    assert!(s >= 400);
    let admin = human_token(api, "auditor", "latch-admins").await;
    let (s, _) = api
        .get(&format!("/v1/audit?limit={password}"), &admin)
        .await;
    assert_eq!(s, 400);
    let (s, _) = api.get(&format!("/v1/audit?kind={jwt}"), &admin).await;
    assert!(s == 400 || s == 200, "{s}");
    let (s, _) = api
        .post("/v1/dev/tokens", "", json!({"kind": password}))
        .await;
    assert_eq!(s, 400);
    // Introspection with a wrong client secret; token exchange with a credential as subject
    // or inside the authorization details.
    let (s, _) = api
        .client_form("/v1/oauth/introspect", "not-the-secret", &[("token", jwt)])
        .await;
    assert_eq!(s, 401);
    for subject in [jwt, password] {
        let (s, v) = api
            .token_exchange(&[
                ("grant_type", EXCHANGE),
                ("subject_token", subject),
                ("subject_token_type", JWT),
                ("authorization_details", "[]"),
            ])
            .await;
        assert!(s >= 400, "{v}");
    }
    let details = json!([{"type": "latch_access", "resource": "ci-cache", "actions": ["read"],
        "environment": "sandbox", "ttl_secs": password}])
    .to_string();
    let (s, v) = api
        .token_exchange(&[
            ("grant_type", EXCHANGE),
            ("subject_token", agent),
            ("subject_token_type", JWT),
            ("authorization_details", &details),
        ])
        .await;
    assert_eq!(s, 400, "{v}");
}

/// The tool calls both MCP transports make: grants (jwt, redis), a renewal, a denial, errors,
/// the end of the task. `tool` answers the JSON-RPC response of one `tools/call`.
async fn mcp_flow(
    api: &Api,
    via: &str,
    tag: &str,
    tool: &mut impl AsyncFnMut(&str, Value) -> Value,
) {
    let args = json!({"purpose": "log secrets over mcp", "environment": "sandbox"});
    let t = tool("open_task", args).await;
    api.seen().record(format!("{via} open_task"), t.to_string());
    let task = t["result"]["structuredContent"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut lease = String::new();
    for resource in ["ci-cache".to_owned(), format!("redis-{tag}")] {
        let args = json!({"task_id": task, "resource": resource, "actions": ["read"],
            "justification": "log secrets"});
        let g = tool("request_access", args).await;
        let r = &g["result"]["structuredContent"];
        api.seen()
            .harvest(&format!("{via} request_access {resource}"), r);
        lease = r["lease_id"].as_str().unwrap().to_owned();
    }
    let r = tool("renew_lease", json!({"lease_id": lease})).await;
    api.seen().harvest(
        &format!("{via} renew_lease"),
        &r["result"]["structuredContent"],
    );
    for (name, args) in [
        (
            "request_access",
            json!({"task_id": task, "resource": "payments-db",
            "actions": ["read"], "justification": "j"}),
        ),
        (
            "request_access",
            json!({"task_id": task, "resource": "no-such-resource",
            "actions": ["read"], "justification": "j"}),
        ),
        ("renew_lease", json!({"lease_id": "lease_0000"})),
        ("list_leases", json!({"task_id": task})),
        ("complete_task", json!({"task_id": task})),
    ] {
        let b = tool(name, args).await;
        api.seen().record(format!("{via} {name}"), b.to_string());
    }
}

/// MCP over streamable HTTP (`/mcp`).
async fn mcp_http(api: &Api, token: &str, tag: &str) {
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": MCP_VERSION, "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"}}});
    let (s, sid, b) = api.mcp(token, None, init).await;
    assert_eq!(s, 200, "{b}");
    let sid = sid.unwrap();
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let (s, _, _) = api.mcp(token, Some(&sid), note).await;
    assert!(s == 200 || s == 202, "{s}");
    let mut id = 1;
    let mut tool = async |name: &str, args: Value| {
        id += 1;
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": name, "arguments": args}});
        let (s, _, b) = api.mcp(token, Some(&sid), msg).await;
        assert_eq!(s, 200, "{b}");
        b
    };
    mcp_flow(api, "mcp over http", tag, &mut tool).await;
}

/// MCP over stdio (`latch mcp`, its log in `log`).
async fn mcp_stdio(api: &Api, token: &str, tag: &str, log: &Path) {
    let mut p = McpStdio::spawn(&api.base, token, log);
    let init = p
        .request(
            "initialize",
            json!({"protocolVersion": MCP_VERSION, "capabilities": {},
            "clientInfo": {"name": "t", "version": "0"}}),
        )
        .await;
    assert!(init["result"].is_object(), "{init}");
    p.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await;
    let mut tool = async |name: &str, args: Value| {
        p.request("tools/call", json!({"name": name, "arguments": args}))
            .await
    };
    mcp_flow(api, "mcp over stdio", tag, &mut tool).await;
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_minted_value_in_any_log_line_audit_record_or_error_body_at_trace() {
    if !service_available("PostgreSQL", PG_ADDR) || !service_available("Redis", REDIS_ADDR) {
        return;
    }
    let started = Instant::now();
    let tag = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let dir = std::env::temp_dir().join(format!("latch-log-secrets-{tag}"));
    let config = config(&dir, &tag);
    let mut broker = Broker::spawn(&dir, &config);
    let api = Api::new(&broker.base);
    let basic = format!("{DEMO_CLIENT_ID}:{DEMO_CLIENT_SECRET}");
    api.seen()
        .secret("introspection client secret", DEMO_CLIENT_SECRET);
    api.seen()
        .secret("introspection client credentials", &basic);

    let agent = workload_token(&api, "log-secrets-1").await;
    let (task, jwt, password) = rest_flow(&api, &agent, &tag).await;
    oauth_and_approval_flow(&api, &agent).await;
    error_paths(&api, &agent, &task, &jwt, &password).await;
    let (s, v) = api
        .post(&format!("/v1/tasks/{task}/complete"), &agent, json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    let http_agent = workload_token(&api, "log-secrets-2").await;
    mcp_http(&api, &http_agent, &tag).await;
    let stdio_agent = workload_token(&api, "log-secrets-3").await;
    let stdio_log = dir.join("mcp-stdio.log");
    mcp_stdio(&api, &stdio_agent, &tag, &stdio_log).await;

    // The audit trail, through the API and as the export (both recorded by `get`).
    let admin = human_token(&api, "auditor", "latch-admins").await;
    let (s, events) = api.get("/v1/audit?limit=1000", &admin).await;
    assert_eq!(s, 200, "{events}");
    assert!(
        events.as_array().unwrap().len() > 40,
        "the flow was audited"
    );
    let (s, export) = api.get("/v1/audit/export", &admin).await;
    assert_eq!(s, 200, "{export}");
    broker.stop();

    let serve_log = needles::strip_ansi(&std::fs::read_to_string(&broker.log).unwrap());
    let stdio_text = needles::strip_ansi(&std::fs::read_to_string(&stdio_log).unwrap());
    // The levels really were on: Latch's debug lines, one access log line per request, and
    // the stdio process wrote its log too.
    assert!(
        serve_log.contains("minted jwt access token"),
        "debug lines are written"
    );
    let requests = serve_log.matches("\"target\":\"latch::http\"").count();
    assert!(requests > 50, "{requests} access log lines");
    assert!(!stdio_text.trim().is_empty(), "latch mcp logged nothing");
    let seen = std::mem::take(&mut *api.seen());
    assert!(seen.secrets.len() >= 25, "{} secrets", seen.secrets.len());

    let mut corpora = vec![
        ("the broker's log".to_owned(), serve_log.clone()),
        ("the latch mcp log".to_owned(), stdio_text),
    ];
    for f in ["latch.db", "latch.db-wal"] {
        if let Ok(b) = std::fs::read(dir.join("data").join(f)) {
            let text = String::from_utf8_lossy(&b).into_owned();
            corpora.push((format!("the sqlite file {f}"), text));
        }
    }
    corpora.extend(seen.said);
    needles::assert_absent(&seen.secrets, &corpora);
    // A minted postgres role's SCRAM verifier (enough for offline guessing) is in the CREATE
    // ROLE and ALTER ROLE statements, which PostgreSQL drivers log below info: never written.
    assert!(
        !serve_log.contains("SCRAM-SHA-256$"),
        "a scram verifier was logged"
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(60), "took {took:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
