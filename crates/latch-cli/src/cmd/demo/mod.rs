//! `latch demo`: starts the broker on the embedded default (SQLite, built-in keys, the example
//! policies) and drives a scripted agent through the main flow over real HTTP, printing each step
//! and failing (exit 1) if any step does not behave as described. The production approval is
//! given through the approval console's HTML forms ([`console`]).

mod console;
pub(crate) mod gateway;
mod history;
mod report;

use serde_json::{Value, json};

use crate::client::{Answer, Client};
use latch_server::examples::write_example;

const CLIENT_ID: &str = latch_server::examples::DEMO_CLIENT_ID;
const CLIENT_SECRET: &str = latch_server::examples::DEMO_CLIENT_SECRET;

struct Script {
    step: usize,
    failures: Vec<String>,
}

impl Script {
    fn step(&mut self, title: &str) {
        self.step += 1;
        println!("\n{:>2}. {title}", self.step);
    }
    fn say(&self, line: impl AsRef<str>) {
        println!("      {}", line.as_ref());
    }
    fn check(&mut self, ok: bool, what: &str) -> bool {
        if ok {
            println!("      ✔ {what}");
        } else {
            println!("      ✘ {what}");
            self.failures.push(format!("step {}: {what}", self.step));
        }
        ok
    }
}

fn short(v: &Value) -> String {
    v.as_str().unwrap_or("?").to_owned()
}

async fn token(c: &Client, body: Value) -> Result<String, String> {
    let a = c.post("/v1/dev/tokens", &body).await?;
    if !a.ok() {
        return Err(format!("dev token: {}", a.error_line()));
    }
    Ok(short(&a.body["token"]))
}

async fn introspect(c: &Client, tok: &str) -> Result<Answer, String> {
    c.post_form_basic(
        "/v1/oauth/introspect",
        &[("token", tok)],
        CLIENT_ID,
        CLIENT_SECRET,
    )
    .await
}

fn show_decision(s: &Script, a: &Answer) {
    let d = &a.body["request"]["decision"];
    s.say(format!(
        "decision: {}  policies: {}",
        short(&d["decision"]),
        d["policy_ids"]
            .as_array()
            .map(|v| v.iter().map(short).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    ));
    if let Some(r) = d["reasons"].as_array() {
        for r in r {
            s.say(format!("reason: {}", short(r)));
        }
    }
}

/// Runs the demo; returns the process exit code.
pub async fn run() -> i32 {
    let dir = std::env::temp_dir().join(format!("latch-demo-{}", uuid::Uuid::new_v4().simple()));
    let result = run_in(&dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(failures) if failures.is_empty() => {
            println!("\nAll steps behaved as described.");
            0
        }
        Ok(failures) => {
            println!("\n{} step(s) did not behave as described:", failures.len());
            for f in failures {
                println!("  - {f}");
            }
            1
        }
        Err(e) => {
            eprintln!("\ndemo failed: {e}");
            1
        }
    }
}

/// Where the demo looks for PostgreSQL (an admin connection string without password);
/// override with `LATCH_DEMO_PG`.
const DEFAULT_DEMO_PG: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";

/// The demo database: a scratch schema on a reachable PostgreSQL, dropped at the end.
struct DemoDb {
    admin: tokio_postgres::Client,
    url: String,
    schema: String,
}

impl DemoDb {
    /// Connects and creates the scratch schema, or says why the database step is skipped.
    async fn prepare() -> Result<DemoDb, String> {
        let url = std::env::var("LATCH_DEMO_PG").unwrap_or_else(|_| DEFAULT_DEMO_PG.to_owned());
        let mut cfg: tokio_postgres::Config = url
            .parse()
            .map_err(|_| "LATCH_DEMO_PG is not a valid connection string".to_owned())?;
        if cfg.get_password().is_some() {
            return Err("LATCH_DEMO_PG must not contain a password".to_owned());
        }
        cfg.connect_timeout(std::time::Duration::from_secs(2));
        let (admin, conn) = cfg
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("PostgreSQL is not reachable with `{url}` ({e})"))?;
        tokio::spawn(conn);
        let schema = format!(
            "latch_demo_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        admin
            .batch_execute(&format!(
                "CREATE SCHEMA {schema}; CREATE TABLE {schema}.orders (id int, item text); \
                 INSERT INTO {schema}.orders VALUES (1, 'coffee'), (2, 'tea');"
            ))
            .await
            .map_err(|e| format!("cannot create the demo schema ({e})"))?;
        Ok(DemoDb { admin, url, schema })
    }

    /// The `[[resources]]` entry of the demo database.
    fn resource(&self) -> String {
        format!(
            "\n[[resources]]\nid = \"demo-db\"\nkind = \"postgres\"\nenvironment = \"sandbox\"\n\
             audience = \"postgres\"\nactions = [\"read\", \"write\"]\nmax_ttl = \"15m\"\n\
             [resources.settings]\nurl = \"{url}\"\n[resources.settings.grants]\n\
             read = [\"GRANT USAGE ON SCHEMA {s} TO {{role}}\", \"GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO {{role}}\"]\n\
             write = [\"GRANT USAGE ON SCHEMA {s} TO {{role}}\", \"GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA {s} TO {{role}}\"]\n",
            url = self.url.replace('\\', "\\\\").replace('"', "\\\""),
            s = self.schema
        )
    }

    async fn drop_schema(&self) {
        let _ = self
            .admin
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
            .await;
    }
}

async fn run_in(dir: &std::path::Path) -> Result<Vec<String>, String> {
    let path = write_example(dir, "127.0.0.1:0").map_err(|e| e.to_string())?;
    let db = DemoDb::prepare().await;
    let mut text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
    // The approval console, with the development sign-in (no OpenID Provider configured).
    text.push_str("\n[console]\nenabled = true\n");
    // The MCP gateway fronts this binary's own tiny upstream (`latch demo-upstream`), with a
    // credential only Latch and the upstream see.
    let secret = format!("demo-upstream-{}", uuid::Uuid::new_v4().simple());
    std::fs::write(dir.join("demo-upstream-token"), &secret).map_err(|e| e.to_string())?;
    text.push_str(&gateway::upstream_config("demo-upstream-token")?);
    if let Ok(db) = &db {
        text.push_str(&db.resource());
    }
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    let config = latch_server::Config::load(&path).map_err(|e| e.to_string())?;
    let server = latch_server::start(config, Default::default())
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "Latch demo — broker on {} (SQLite in {}, built-in keys, example policies)",
        server.base_url,
        dir.display()
    );
    let anon = Client::new(&server.base_url, None);
    let mut s = Script {
        step: 0,
        failures: vec![],
    };
    let mut r = script(&mut s, &anon, &secret).await;
    if r.is_ok() {
        r = database_step(&mut s, &anon, &db).await;
    }
    if r.is_ok() {
        r = audit_step(&mut s, &anon).await;
    }
    if r.is_ok() {
        r = report::report_step(&mut s, &anon).await;
    }
    server.shutdown().await;
    if let Ok(db) = &db {
        db.drop_schema().await;
    }
    r?;
    Ok(s.failures)
}

/// The demo's principals, each a client with its own token.
struct Actors {
    /// The workload (CI job) acting for alice.
    agent: Client,
    /// A prod approver, and the human the agent works for.
    alice: Client,
    /// Another prod approver, who approves in the console with his development token.
    bob_token: String,
    /// An admin who reads the audit trail.
    auditor: Client,
}

/// The credentials minted along the way: all of them must be dead at the end.
struct Minted {
    cache: String,
    deploy: String,
    renewed: String,
}

/// The scripted main flow: identities, the sandbox, the production deploy with step-up
/// approval, renewal, a denial, the end of both tasks, and the audit trail.
async fn script(s: &mut Script, anon: &Client, upstream_secret: &str) -> Result<(), String> {
    let who = identities(s, anon).await?;
    let (sandbox, cache) = sandbox_steps(s, anon, &who.agent).await?;
    gateway::gateway_step(s, &who.agent, &who.auditor, &sandbox, upstream_secret).await?;
    history::history_step(s, anon, &who.agent).await?;
    let (prod, pending) = production_request(s, &who.agent).await?;
    approval_steps(s, anon, &who, &pending).await?;
    let rid = pending.id;
    let (deploy, renewed) = claim_and_renew(s, anon, &who.agent, &prod, &rid).await?;
    admin_denied(s, &who.agent, &prod).await?;
    let minted = Minted {
        cache,
        deploy,
        renewed,
    };
    end_steps(s, anon, &who.agent, &sandbox, &prod, &minted).await?;
    report::leak_step(s, &who.agent).await?;
    audit_trail_step(s, &who.auditor, &prod, &minted).await
}

/// Step 1: development tokens for the workload and three humans; a malformed token is refused.
async fn identities(s: &mut Script, anon: &Client) -> Result<Actors, String> {
    // ---------------------------------------------------------------- identities
    s.step(
        "The agent proves what it is: a GitHub-Actions-shaped workload token (development issuer)",
    );
    let agent_tok = token(
        anon,
        json!({"kind": "workload", "repository": "acme/payments-api", "git_ref": "refs/heads/main",
               "actor": "alice", "run_id": "4242", "run_attempt": "1"}),
    )
    .await?;
    let agent = anon.with_token(&agent_tok);
    let alice = anon.with_token(
        &token(
            anon,
            json!({"kind": "human", "subject": "alice", "groups": ["prod-approvers"]}),
        )
        .await?,
    );
    let bob_token = token(
        anon,
        json!({"kind": "human", "subject": "bob", "groups": ["prod-approvers"]}),
    )
    .await?;
    let auditor = anon.with_token(
        &token(
            anon,
            json!({"kind": "human", "subject": "carol", "groups": ["latch-admins"]}),
        )
        .await?,
    );
    s.say("workload: repo acme/payments-api @ refs/heads/main, run 4242, acting for human `alice`");
    s.say("humans: alice and bob (prod-approvers), carol (latch-admins)");
    let bad = anon
        .with_token("not-a-token")
        .post(
            "/v1/tasks",
            &json!({"purpose": "x", "environment": "sandbox"}),
        )
        .await?;
    s.check(
        bad.status == 401 && bad.code() == Some("token_malformed"),
        "a malformed token is refused (401 token_malformed)",
    );

    Ok(Actors {
        agent,
        alice,
        bob_token,
        auditor,
    })
}

/// Steps 2–4: a sandbox task, a granted CI-cache credential, and the refused reach for
/// production. Answers the task id and the cache token.
async fn sandbox_steps(
    s: &mut Script,
    anon: &Client,
    agent: &Client,
) -> Result<(String, String), String> {
    // ---------------------------------------------------------------- sandbox
    s.step("Open a sandbox task");
    let a = agent
        .post("/v1/tasks", &json!({"purpose": "fix flaky integration test", "environment": "sandbox", "ttl_secs": 1800}))
        .await?;
    let sandbox = short(&a.body["id"]);
    s.check(
        a.status == 201,
        &format!("task {sandbox} opened (sandbox, 30 min)"),
    );

    s.step("In the sandbox task, read the CI cache: granted at once");
    let a = agent
        .post(
            &format!("/v1/tasks/{sandbox}/requests"),
            &json!({"resource": "ci-cache", "actions": ["read"],
        "justification": "restore build cache"}),
        )
        .await?;
    show_decision(s, &a);
    let cache_tok = short(&a.body["credential"]["value"]);
    s.check(
        a.status == 201 && a.body["status"] == "granted",
        "credential minted with a lease",
    );
    s.say(format!(
        "lease {} expires {} (ttl {}s)",
        short(&a.body["lease"]["id"]),
        crate::human::when(&a.body["lease"]["expires_at_unix_secs"], "?"),
        a.body["lease"]["expires_at_unix_secs"]
            .as_i64()
            .unwrap_or(0)
            - a.body["lease"]["issued_at_unix_secs"].as_i64().unwrap_or(0)
    ));
    let i = introspect(anon, &cache_tok).await?;
    s.check(
        i.body["active"] == true,
        "introspection (RFC 7662) says the token is active",
    );

    s.step("In the sandbox task, reach for the production payments database");
    let a = agent
        .post(
            &format!("/v1/tasks/{sandbox}/requests"),
            &json!({"resource": "payments-db", "actions": ["read"]}),
        )
        .await?;
    show_decision(s, &a);
    s.check(
        a.status == 403
            && a.body["code"] == "environment_separation"
            && a.body.get("credential").is_none(),
        "refused by the hard sandbox/production separation; nothing minted",
    );

    Ok((sandbox, cache_tok))
}

/// The request waiting for approval, as the agent's pending answer gives it.
struct Pending {
    id: String,
    digest: String,
    console_url: String,
}

/// Steps 5–6: a production task and a deploy request sent to step-up approval. Answers the
/// task id and the pending request.
async fn production_request(s: &mut Script, agent: &Client) -> Result<(String, Pending), String> {
    // ---------------------------------------------------------------- production
    s.step("Open a production task for a deploy");
    let a = agent
        .post(
            "/v1/tasks",
            &json!({"purpose": "deploy payments-api v2.3.1", "environment": "production",
        "ttl_secs": 3600}),
        )
        .await?;
    let prod = short(&a.body["id"]);
    s.check(
        a.status == 201 && a.body["production"] == true,
        &format!("task {prod} opened (production)"),
    );

    s.step("Ask to deploy: policy sends it to step-up approval");
    let a = agent
        .post(
            &format!("/v1/tasks/{prod}/requests"),
            &json!({"resource": "deploy-pipeline", "actions": ["deploy"],
        "ttl_secs": 600, "justification": "release v2.3.1 (tests green)"}),
        )
        .await?;
    show_decision(s, &a);
    let rid = short(&a.body["request"]["id"]);
    let digest = short(&a.body["request"]["digest"]);
    s.check(
        a.status == 202 && a.body["status"] == "pending",
        "pending approval by `prod-approvers`; nothing minted",
    );
    s.say(format!(
        "request {rid}, digest {}…",
        &digest[..16.min(digest.len())]
    ));

    let console_url = short(&a.body["console_url"]);
    Ok((
        prod,
        Pending {
            id: rid,
            digest,
            console_url,
        },
    ))
}

/// Steps 7–8: self-approval is refused; bob approves the exact request in the approval console
/// (its form carries the digest the page displayed).
async fn approval_steps(
    s: &mut Script,
    anon: &Client,
    who: &Actors,
    p: &Pending,
) -> Result<(), String> {
    let (rid, digest) = (&p.id, &p.digest);
    s.step("alice, the human the agent works for, tries to approve her own agent's request");
    let a = who
        .alice
        .post(
            &format!("/v1/approvals/{rid}/approve"),
            &json!({"digest": digest, "reason": "lgtm"}),
        )
        .await?;
    s.check(
        a.status == 403 && a.code() == Some("self_approval_forbidden"),
        "refused (self_approval_forbidden)",
    );

    s.step("bob opens the request in the approval console and approves what the page shows");
    console::approve_in_console(s, anon.base(), &who.bob_token, rid, digest, &p.console_url)
        .await?;
    Ok(())
}

/// Steps 9–10: the approved request is claimed once, then its lease renewed. Answers the
/// deploy token and its renewed replacement.
async fn claim_and_renew(
    s: &mut Script,
    anon: &Client,
    agent: &Client,
    prod: &str,
    rid: &str,
) -> Result<(String, String), String> {
    s.step("The agent claims its approved request: policy is evaluated again, then the token is minted");
    let a = agent
        .post(
            &format!("/v1/tasks/{prod}/requests/{rid}/claim"),
            &json!({}),
        )
        .await?;
    show_decision(s, &a);
    let deploy_tok = short(&a.body["credential"]["value"]);
    let deploy_lease = short(&a.body["lease"]["id"]);
    s.check(
        a.status == 201 && a.body["status"] == "granted",
        &format!("deploy credential minted (lease {deploy_lease})"),
    );
    let again = agent
        .post(
            &format!("/v1/tasks/{prod}/requests/{rid}/claim"),
            &json!({}),
        )
        .await?;
    s.check(
        again.code() == Some("request_not_pending"),
        "a second claim is refused: a credential is delivered once",
    );

    s.step("Renew the deploy lease: a fresh policy evaluation, bounded by the lease's max TTL");
    let a = agent
        .post(
            &format!("/v1/leases/{deploy_lease}/renew"),
            &json!({"ttl_secs": 900}),
        )
        .await?;
    let renewed_tok = short(&a.body["credential"]["value"]);
    s.check(
        a.ok() && a.body["lease"]["renewals"] == 1,
        "renewed (renewals = 1), new token issued",
    );
    s.say(format!(
        "lease now expires {}, never after {}",
        crate::human::when(&a.body["lease"]["expires_at_unix_secs"], "?"),
        crate::human::when(&a.body["lease"]["max_expires_at_unix_secs"], "?")
    ));
    let old = introspect(anon, &deploy_tok).await?;
    let new = introspect(anon, &renewed_tok).await?;
    s.check(
        old.body["active"] == false && new.body["active"] == true,
        "the replaced token is inactive, the renewed one active",
    );

    Ok((deploy_tok, renewed_tok))
}

/// Step 11: admin on the payments database is denied by `no-agent-admin`.
async fn admin_denied(s: &mut Script, agent: &Client, prod: &str) -> Result<(), String> {
    s.step(
        "Ask for admin on the payments database: denied, with the deciding policy and its reason",
    );
    let a = agent
        .post(
            &format!("/v1/tasks/{prod}/requests"),
            &json!({"resource": "payments-db", "actions": ["admin"]}),
        )
        .await?;
    show_decision(s, &a);
    let ids_ok = a.body["request"]["decision"]["policy_ids"]
        .as_array()
        .is_some_and(|v| v.iter().any(|x| x == "no-agent-admin"));
    s.check(
        a.status == 403 && a.body["code"] == "policy_denied" && ids_ok,
        "denied by `no-agent-admin`",
    );

    Ok(())
}

/// Step 12: both tasks completed; every token is dead and every lease revoked.
async fn end_steps(
    s: &mut Script,
    anon: &Client,
    agent: &Client,
    sandbox: &str,
    prod: &str,
    minted: &Minted,
) -> Result<(), String> {
    // ---------------------------------------------------------------- end
    s.step("Complete both tasks: every lease is revoked");
    for t in [sandbox, prod] {
        let a = agent
            .post(&format!("/v1/tasks/{t}/complete"), &json!({}))
            .await?;
        s.check(
            a.ok() && a.body["state"] == "completed",
            &format!("task {t} completed"),
        );
    }
    let mut all_dead = true;
    for tok in [&minted.cache, &minted.deploy, &minted.renewed] {
        all_dead &= introspect(anon, tok).await?.body["active"] == false;
    }
    s.check(
        all_dead,
        "every token of both tasks now fails introspection (active: false)",
    );
    let a = agent.get(&format!("/v1/tasks/{prod}/leases")).await?;
    let revoked = a
        .body
        .as_array()
        .is_some_and(|v| !v.is_empty() && v.iter().all(|l| l["state"] == "revoked"));
    s.check(revoked, "the production task's leases show `revoked`");

    Ok(())
}

/// Step 13: the production task's audit events, with no token in them.
async fn audit_trail_step(
    s: &mut Script,
    auditor: &Client,
    prod: &str,
    minted: &Minted,
) -> Result<(), String> {
    s.step("The audit trail recorded every step (never a secret)");
    let a = auditor
        .get(&format!("/v1/audit?task_id={prod}&limit=1000"))
        .await?;
    let events = a.body.as_array().cloned().unwrap_or_default();
    for e in &events {
        s.say(format!(
            "#{:<4} {:<28} {:<10} by {}",
            e["seq"],
            short(&e["kind"]),
            short(&e["outcome"]),
            short(&e["actor"])
        ));
    }
    let text = a.body.to_string();
    let leaked = [&minted.cache, &minted.deploy, &minted.renewed]
        .iter()
        .any(|t| text.contains(t.as_str()));
    s.check(
        a.ok() && events.len() >= 8 && !leaked,
        "task, decisions, approvals, issue, renewal, revocation recorded; no token in the log",
    );
    Ok(())
}

/// The audit step: export the whole hash-chained log with its signed checkpoints, verify it
/// against the published keys as an auditor would offline, and show that an edit is caught.
async fn audit_step(s: &mut Script, anon: &Client) -> Result<(), String> {
    use latch_core::audit::verify_export;
    s.step("Export the audit chain and verify it offline with the broker's public key");
    let auditor = anon.with_token(
        &token(
            anon,
            json!({"kind": "human", "subject": "carol", "groups": ["latch-admins"]}),
        )
        .await?,
    );
    let (status, text) = auditor.get_text("/v1/audit/export").await?;
    let jwks = anon.get("/.well-known/jwks.json").await?.body;
    let verifier = latch_server::audit::JwksCheckpointVerifier::from_jwks(&jwks)?;
    let report = verify_export(
        std::io::BufReader::new(text.as_bytes()),
        &verifier,
        &[],
        &Default::default(),
    )
    .map_err(|e| e.to_string())?;
    s.say(format!(
        "{} records, {} signed checkpoint(s), sealed through seq {}",
        report.records,
        report.checkpoints_verified,
        report.sealed_through.unwrap_or_default()
    ));
    s.check(
        status == 200 && report.problem.is_none() && report.unsealed() == 0,
        "the chain is intact and sealed by a signature over its head",
    );
    // An insider rewrites one decision in a copy of the export.
    let tampered = text.replacen("\"outcome\":\"deny\"", "\"outcome\":\"allow\"", 1);
    let report = verify_export(
        std::io::BufReader::new(tampered.as_bytes()),
        &verifier,
        &[],
        &Default::default(),
    )
    .map_err(|e| e.to_string())?;
    match &report.problem {
        Some(p) => s.say(format!("after editing one record: {}", p.message)),
        None => s.say("after editing one record: no problem found"),
    }
    s.check(
        tampered != text && report.problem.is_some(),
        "an edited record is caught and named by its sequence number",
    );
    Ok(())
}

/// The database step: a per-task PostgreSQL role that reads but cannot write, and is dropped
/// (its open session terminated) when the task completes. Skipped, and said so, without
/// PostgreSQL.
async fn database_step(
    s: &mut Script,
    anon: &Client,
    db: &Result<DemoDb, String>,
) -> Result<(), String> {
    s.step("Database: a PostgreSQL role of its own for one task");
    let db = match db {
        Ok(db) => db,
        Err(why) => {
            s.say(format!("SKIPPED: {why}."));
            s.say("Set LATCH_DEMO_PG (e.g. \"host=127.0.0.1 user=postgres dbname=postgres\") to run it.");
            return Ok(());
        }
    };
    let agent = anon.with_token(
        &token(
            anon,
            json!({"kind": "workload", "repository": "acme/payments-api", "git_ref": "refs/heads/main",
                   "actor": "alice", "run_id": "4343", "run_attempt": "1"}),
        )
        .await?,
    );
    let a = agent
        .post("/v1/tasks", &json!({"purpose": "report on yesterday's orders", "environment": "sandbox", "ttl_secs": 900}))
        .await?;
    let task = short(&a.body["id"]);
    let a = agent
        .post(
            &format!("/v1/tasks/{task}/requests"),
            &json!({"resource": "demo-db", "actions": ["read"], "ttl_secs": 300, "justification": "read orders"}),
        )
        .await?;
    let user = short(&a.body["credential"]["metadata"]["username"]);
    let password = short(&a.body["credential"]["value"]);
    if !s.check(
        a.status == 201 && user.starts_with("latch_"),
        &format!(
            "role {user} created: random password, VALID UNTIL the lease end, read grants only"
        ),
    ) {
        return Ok(());
    }
    let mut cfg: tokio_postgres::Config = db.url.parse().map_err(|_| "bad url".to_owned())?;
    cfg.user(&user).password(password.as_bytes());
    let session = match cfg.connect(tokio_postgres::NoTls).await {
        Ok((client, conn)) => {
            tokio::spawn(conn);
            Some(client)
        }
        Err(_) => None,
    };
    s.check(session.is_some(), "the agent logs in with it");
    let Some(session) = session else {
        return Ok(());
    };
    let rows = session
        .query(
            &format!("SELECT item FROM {}.orders ORDER BY id", db.schema),
            &[],
        )
        .await;
    s.check(
        rows.as_ref().is_ok_and(|r| r.len() == 2),
        "it reads the orders table",
    );
    let write = session
        .execute(
            &format!("INSERT INTO {}.orders VALUES (3, 'cake')", db.schema),
            &[],
        )
        .await;
    s.check(
        write.is_err_and(|e| e.as_db_error().is_some_and(|d| d.code().code() == "42501")),
        "it cannot write (permission denied)",
    );
    let a = agent
        .post(&format!("/v1/tasks/{task}/complete"), &json!({}))
        .await?;
    s.check(a.ok(), &format!("task {task} completed"));
    s.check(
        session.query_one("SELECT 1", &[]).await.is_err(),
        "its open session was terminated",
    );
    s.check(
        cfg.connect(tokio_postgres::NoTls).await.is_err(),
        "it can no longer log in: the role was dropped",
    );
    Ok(())
}
