//! OpenID Shared Signals (issue 18, item 3), against independent code on both sides.
//!
//! * Transmitter: a Python receiver (`testdata/ssf/receiver.py`) verifies every pushed SET
//!   with PyJWT against Latch's published JWK Set (`typ`, signature, `iss`, `aud`, no `sub` or
//!   `exp`, one event). Revoking a credential, ending a task and engaging a freeze reach it as
//!   CAEP `credential-change` and `session-revoked`; a receiver answering `500` is retried
//!   (same `jti`) while the revocation itself was answered at once; a `400` drops that SET.
//! * Receiver: SETs built and signed with PyJWT (`testdata/ssf/transmitter.py`, its own P-256
//!   key, its JWK Set in a file Latch is configured with): `session-revoked` for a human ends
//!   their tasks (credentials revoked) and freezes their grants; replays, wrong audience,
//!   issuer, signature, `typ` are refused with RFC 8935 codes, and a replay stays refused after
//!   a restart on the same store.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use latch_core::Clock;
use latch_testkit::{TestOptions, TestServer, tool_available};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
const CREDENTIAL_CHANGE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/credential-change";
const ACCOUNT_DISABLED: &str =
    "https://schemas.openid.net/secevent/risc/event-type/account-disabled";
const TOKEN_CLAIMS_CHANGE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/token-claims-change";
const SIEM_AUDIENCE: &str = "https://siem.test";
const SIEM_AUTHORIZATION: &str = "Bearer siem-push-0123456789abcdef";
const IDP: &str = "https://idp.test";
const LATCH_AUDIENCE: &str = "https://latch.test/ssf";

fn python_ready() -> bool {
    tool_available("python3", &["-c", "import jwt, cryptography"])
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/ssf")
        .join(name)
}

fn fresh_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("latch-{tag}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The Python receiver, listening on 127.0.0.1.
struct Receiver {
    _child: tokio::process::Child,
    out: PathBuf,
    settings: PathBuf,
    url: String,
}

impl Receiver {
    async fn start(dir: &Path, extra: &[&str]) -> Self {
        let out = dir.join("received.jsonl");
        let settings = dir.join("receiver-settings.json");
        let mut child = tokio::process::Command::new("python3")
            .arg(script("receiver.py"))
            .arg("--out")
            .arg(&out)
            .arg("--settings")
            .arg(&settings)
            .args(["--authorization", SIEM_AUTHORIZATION])
            .args(extra)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 receiver");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("the receiver starts")
            .unwrap()
            .expect("a port line");
        let port = line
            .strip_prefix("PORT ")
            .expect("PORT <n>")
            .trim()
            .to_owned();
        Self {
            _child: child,
            out,
            settings,
            url: format!("http://127.0.0.1:{port}/events"),
        }
    }

    /// Tells the receiver whom to trust: Latch's issuer and JWK Set.
    fn trust(&self, s: &TestServer) {
        let settings = json!({"issuer": s.base, "jwks_url": format!("{}/.well-known/jwks.json", s.base),
            "audience": SIEM_AUDIENCE});
        std::fs::write(&self.settings, settings.to_string()).unwrap();
    }

    fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits (at most 20 s) until `done` holds for what was received.
    async fn wait_until(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let t0 = Instant::now();
        loop {
            let r = self.records();
            if done(&r) {
                return r;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "the receiver never got {what}; it got: {r:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn receivers_config(url: &str) -> String {
    format!(
        "\n[ssf]\npoll_interval = \"50ms\"\n\n[[ssf.receivers]]\nname = \"siem\"\nendpoint_url = \"{url}\"\n\
         audience = \"{SIEM_AUDIENCE}\"\ndescription = \"the security team's SIEM\"\n\
         authorization_header_file = \"siem-push.secret\"\n"
    )
}

/// A server in `dir` pushing to `r`.
async fn transmitting_server(dir: &Path, r: &Receiver) -> TestServer {
    std::fs::write(dir.join("siem-push.secret"), SIEM_AUTHORIZATION).unwrap();
    let s = TestServer::start_with(TestOptions {
        dir: Some(dir.to_path_buf()),
        extra_config: receivers_config(&r.url),
        ..Default::default()
    })
    .await;
    r.trust(&s);
    s
}

/// The verified SETs (status `status`) whose event is `event_type` and `pick` holds.
fn sets<'a>(
    records: &'a [Value],
    status: u64,
    event_type: &str,
    pick: impl Fn(&Value) -> bool,
) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["status"] == status && r["claims"]["events"].get(event_type).is_some())
        .filter(|r| pick(&r["claims"]))
        .collect()
}

async fn grant(s: &TestServer, agent: &str, task: &str) -> Value {
    let g = s.request(agent, task, "ci-cache", &["read"], None).await;
    assert_eq!(g.status, 201, "{}", g.body);
    g.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_reach_a_receiver_as_caep_sets_that_pyjwt_verifies() {
    if !python_ready() {
        return;
    }
    let dir = fresh_dir("ssf-tx");
    let r = Receiver::start(&dir, &["--fail-first", "1"]).await;
    let s = transmitting_server(&dir, &r).await;
    let agent = s.agent("ssf-tx-1").await;
    let ops = s.human("ops-carol", &["latch-admins"]).await;

    // 1. The owner revokes a credential: answered at once, although the receiver fails the
    //    first push.
    let t1 = s.open_task(&agent, "sandbox", 3600).await;
    let l1 = grant(&s, &agent, &t1).await["lease"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let t0 = Instant::now();
    let rv = s
        .post(Some(&agent), &format!("/v1/leases/{l1}/revoke"), json!({}))
        .await;
    assert_eq!(rv.status, 200, "{}", rv.body);
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "the revocation waits for no receiver"
    );
    // 2. A task ends (its credential with it). 3. An operator freezes a human.
    let t2 = s.open_task(&agent, "sandbox", 3600).await;
    let l2 = grant(&s, &agent, &t2).await["lease"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = s
        .post(Some(&agent), &format!("/v1/tasks/{t2}/complete"), json!({}))
        .await;
    assert_eq!(done.status, 200, "{}", done.body);
    let frz = s
        .post(
            Some(&ops),
            "/v1/admin/freezes",
            json!({"scope": {"kind": "human", "value": "bob"}, "reason": "laptop stolen"}),
        )
        .await;
    assert_eq!(frz.status, 201, "{}", frz.body);
    let frz_id = frz.body["freeze"]["id"].as_str().unwrap().to_owned();

    let lease_is = |id: &str| {
        let id = id.to_owned();
        move |c: &Value| {
            c["events"][CREDENTIAL_CHANGE]["friendly_name"]
                .as_str()
                .is_some_and(|n| n.ends_with(&id))
        }
    };
    let got = r
        .wait_until("the three revocations", |rs| {
            sets(rs, 202, CREDENTIAL_CHANGE, lease_is(&l1)).len() == 1
                && sets(rs, 202, CREDENTIAL_CHANGE, lease_is(&l2)).len() == 1
                && sets(rs, 202, SESSION_REVOKED, |c| {
                    c["sub_id"]["session"]["id"] == t2.as_str()
                })
                .len()
                    == 1
                && sets(rs, 202, SESSION_REVOKED, |c| {
                    c["sub_id"]["session"]["id"] == frz_id.as_str()
                })
                .len()
                    == 1
        })
        .await;
    assert_eq!(got[0]["status"], 500, "the first push failed on purpose");
    assert!(
        got.iter().all(|x| x["status"] == 202 || x["status"] == 500),
        "every SET verified with PyJWT: {got:#?}"
    );
    for x in got.iter().filter(|x| x["status"] == 202) {
        let (h, c) = (&x["header"], &x["claims"]);
        assert_eq!(h["typ"], "secevent+jwt");
        assert!(h["kid"].is_string());
        assert_eq!(c["iss"], s.base.as_str());
        assert_eq!(c["aud"], SIEM_AUDIENCE);
        assert_eq!(c["jti"].as_str().unwrap().len(), 32);
        assert!(c["txn"].as_str().unwrap().starts_with("evt_"));
        let ev = c["events"].as_object().unwrap().values().next().unwrap();
        assert!(ev["event_timestamp"].is_i64() && ev["reason_admin"]["en"].is_string());
    }
    let jtis: std::collections::HashSet<&str> = got
        .iter()
        .filter(|x| x["status"] == 202)
        .map(|x| x["claims"]["jti"].as_str().unwrap())
        .collect();
    assert_eq!(
        jtis.len(),
        got.iter().filter(|x| x["status"] == 202).count(),
        "each SET delivered once, the failed one retried"
    );

    let c1 = &sets(&got, 202, CREDENTIAL_CHANGE, lease_is(&l1))[0]["claims"];
    let e1 = &c1["events"][CREDENTIAL_CHANGE];
    assert_eq!(e1["change_type"], "revoke");
    assert_eq!(e1["credential_type"], "jwt");
    assert_eq!(e1["initiating_entity"], "user");
    assert_eq!(c1["sub_id"]["format"], "complex");
    assert_eq!(
        c1["sub_id"]["session"],
        json!({"format": "opaque", "id": t1})
    );
    assert_eq!(
        c1["sub_id"]["user"],
        json!({"format": "opaque", "id": "alice"})
    );
    assert_eq!(c1["sub_id"]["application"]["format"], "iss_sub");
    let c2 = &sets(&got, 202, SESSION_REVOKED, |c| {
        c["sub_id"]["session"]["id"] == t2.as_str()
    })[0]["claims"];
    assert_eq!(c2["events"][SESSION_REVOKED]["initiating_entity"], "user");
    let c3 = &sets(&got, 202, SESSION_REVOKED, |c| {
        c["sub_id"]["session"]["id"] == frz_id.as_str()
    })[0]["claims"];
    assert_eq!(
        c3["sub_id"]["user"],
        json!({"format": "opaque", "id": "bob"})
    );
    assert_eq!(c3["events"][SESSION_REVOKED]["initiating_entity"], "admin");
    assert_eq!(
        c3["events"][SESSION_REVOKED]["latch_scope"],
        json!({"kind": "human", "value": "bob"})
    );

    stream_endpoints(&s, &r, &ops, &agent).await;
    s.stop().await;
}

/// The metadata, the read-only stream configuration and the status, as SSF 1.0 describes
/// them; never the receiver's authorization header.
async fn stream_endpoints(s: &TestServer, r: &Receiver, ops: &str, agent: &str) {
    let meta = s.get(None, "/.well-known/ssf-configuration").await;
    assert_eq!(meta.status, 200, "{}", meta.body);
    assert_eq!(meta.body["spec_version"], "1_0");
    assert_eq!(meta.body["issuer"], s.base.as_str());
    assert_eq!(
        meta.body["jwks_uri"],
        format!("{}/.well-known/jwks.json", s.base)
    );
    assert_eq!(
        meta.body["delivery_methods_supported"],
        json!(["urn:ietf:rfc:8935"])
    );
    assert_eq!(
        meta.body["configuration_endpoint"],
        format!("{}/v1/ssf/stream", s.base)
    );
    let all = s.get(Some(ops), "/v1/ssf/stream").await;
    assert_eq!(all.status, 200, "{}", all.body);
    assert!(
        !all.body.to_string().contains("siem-push-"),
        "no secret shown"
    );
    let one = &all.body[0];
    assert_eq!(one["stream_id"], "siem");
    assert_eq!(one["iss"], s.base.as_str());
    assert_eq!(one["aud"], SIEM_AUDIENCE);
    assert_eq!(
        one["delivery"],
        json!({"method": "urn:ietf:rfc:8935", "endpoint_url": r.url})
    );
    assert_eq!(
        one["events_delivered"],
        json!([SESSION_REVOKED, CREDENTIAL_CHANGE])
    );
    let by_id = s.get(Some(ops), "/v1/ssf/stream?stream_id=siem").await;
    assert_eq!(by_id.body, *one);
    assert_eq!(
        s.get(Some(ops), "/v1/ssf/stream?stream_id=x").await.status,
        404
    );
    let st = s.get(Some(ops), "/v1/ssf/status?stream_id=siem").await;
    assert_eq!(st.body, json!({"stream_id": "siem", "status": "enabled"}));
    let create = s
        .post(
            Some(ops),
            "/v1/ssf/stream",
            json!({"delivery": {"method": "urn:ietf:rfc:8935"}}),
        )
        .await;
    assert_eq!(create.status, 403);
    assert_eq!(create.code(), Some("ssf_streams_read_only"));
    let human = s.human("dave", &["prod-approvers"]).await;
    assert_eq!(
        s.get(Some(&human), "/v1/ssf/stream").await.code(),
        Some("not_admin")
    );
    assert_eq!(s.get(Some(agent), "/v1/ssf/stream").await.status, 403);
    assert_eq!(s.get(None, "/v1/ssf/stream").await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_the_receiver_refuses_is_dropped_and_the_next_goes_out() {
    if !python_ready() {
        return;
    }
    let dir = fresh_dir("ssf-refused");
    let r = Receiver::start(&dir, &["--refuse-first", "1"]).await;
    let s = transmitting_server(&dir, &r).await;
    let agent = s.agent("ssf-refused").await;
    let t = s.open_task(&agent, "sandbox", 3600).await;
    for _ in 0..2 {
        let l = grant(&s, &agent, &t).await["lease"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let rv = s
            .post(Some(&agent), &format!("/v1/leases/{l}/revoke"), json!({}))
            .await;
        assert_eq!(rv.status, 200, "{}", rv.body);
    }
    let got = r
        .wait_until("a refused and an accepted SET", |rs| {
            sets(rs, 202, CREDENTIAL_CHANGE, |_| true).len() == 1
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got_after = r.records();
    assert_eq!(
        got_after.len(),
        got.len(),
        "the refused SET is not sent again"
    );
    assert_eq!(got[0]["status"], 400);
    assert_eq!(got[1]["status"], 202);
    assert_ne!(got[0]["claims"]["jti"], got[1]["claims"]["jti"]);
    s.stop().await;
}

// ------------------------------------------------------------------ receiver

fn transmitter_config() -> String {
    format!(
        "\n[[ssf.transmitters]]\nname = \"corp-idp\"\nissuer = \"{IDP}\"\naudience = \"{LATCH_AUDIENCE}\"\n\
         jwks = {{ file = \"idp/jwks.json\" }}\nalgorithms = [\"ES256\"]\nmax_age = \"10m\"\n"
    )
}

/// A SET made and signed by PyJWT with the key in `key_dir` (`typ` as given, `-`: none).
async fn pyjwt_set(key_dir: &Path, typ: &str, claims: &Value) -> String {
    let mut child = tokio::process::Command::new("python3")
        .arg(script("transmitter.py"))
        .arg("sign")
        .arg(key_dir)
        .args(["idp-1", typ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3");
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(claims.to_string().as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "transmitter.py sign failed");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

async fn keygen(dir: &Path) {
    let st = tokio::process::Command::new("python3")
        .arg(script("transmitter.py"))
        .arg("keygen")
        .arg(dir)
        .arg("idp-1")
        .status()
        .await
        .unwrap();
    assert!(st.success());
}

fn claims(s: &TestServer, jti: &str, sub_id: Value, event: &str, body: Value) -> Value {
    json!({"iss": IDP, "aud": LATCH_AUDIENCE, "iat": s.clock.now_unix_secs(), "jti": jti, "txn": "t-1",
           "sub_id": sub_id, "events": {event: body}})
}

/// POSTs a SET; answers the status and the body.
async fn push(s: &TestServer, token: &str, content_type: &str) -> (u16, Value) {
    let r = s
        .http
        .post(format!("{}/v1/ssf/events", s.base))
        .header("content-type", content_type)
        .body(token.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn task_state(s: &TestServer, token: &str, task: &str) -> String {
    let t = s.get(Some(token), &format!("/v1/tasks/{task}")).await;
    t.body["state"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_revoked_set_ends_the_humans_tasks_and_freezes_their_grants() {
    if !python_ready() {
        return;
    }
    let dir = fresh_dir("ssf-rx");
    keygen(&dir.join("idp")).await;
    keygen(&dir.join("impostor")).await;
    let s = TestServer::start_with(TestOptions {
        dir: Some(dir.clone()),
        extra_config: transmitter_config(),
        ..Default::default()
    })
    .await;
    let alice_agent = s.agent("ssf-rx-alice").await;
    let bob_agent = s
        .dev_token(json!({"kind": "workload", "repository": "acme/payments-api",
            "git_ref": "refs/heads/main", "actor": "bob", "run_id": "ssf-rx-bob", "ttl_secs": 3600}))
        .await;
    let (a1, a2) = (
        s.open_task(&alice_agent, "sandbox", 3600).await,
        s.open_task(&alice_agent, "sandbox", 3600).await,
    );
    let b1 = s.open_task(&bob_agent, "sandbox", 3600).await;
    let cred = grant(&s, &alice_agent, &a1).await["credential"]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    grant(&s, &alice_agent, &a2).await;
    grant(&s, &bob_agent, &b1).await;
    assert_eq!(s.introspect(&cred).await["active"], true);

    // The identity provider revokes alice's sessions.
    let alice = json!({"format": "iss_sub", "iss": IDP, "sub": "alice"});
    let set = pyjwt_set(
        &dir.join("idp"),
        "secevent+jwt",
        &claims(
            &s,
            "set-1",
            alice.clone(),
            SESSION_REVOKED,
            json!({"event_timestamp": s.clock.now_unix_secs(), "initiating_entity": "policy",
                   "reason_admin": {"en": "risk: impossible travel"}}),
        ),
    )
    .await;
    let (status, body) = push(&s, &set, "application/secevent+jwt").await;
    assert_eq!(status, 202, "{body}");
    for t in [&a1, &a2] {
        assert_eq!(task_state(&s, &alice_agent, t).await, "cancelled");
    }
    assert_eq!(
        s.introspect(&cred).await["active"],
        false,
        "credential revoked"
    );
    assert_eq!(
        task_state(&s, &bob_agent, &b1).await,
        "open",
        "bob's work goes on"
    );
    // No new grant for alice: a freeze of kind `human`, which operators see and lift.
    let a3 = s.open_task(&alice_agent, "sandbox", 3600).await;
    let refused = s
        .request(&alice_agent, &a3, "ci-cache", &["read"], None)
        .await;
    assert_eq!(refused.status, 423, "{}", refused.body);
    assert_eq!(refused.code(), Some("frozen"));
    let ops = s.human("ops-carol", &["latch-admins"]).await;
    let freezes = s.get(Some(&ops), "/v1/admin/freezes").await;
    let f = freezes.body.as_array().unwrap()[0].clone();
    assert_eq!(f["scope"], json!({"kind": "human", "value": "alice"}));
    assert_eq!(f["engaged_by"], "ssf:corp-idp");
    assert!(f["reason"].as_str().unwrap().contains("set-1"));
    // The audit trail names the SET.
    let received = s.audit("kind=ssf.received").await;
    assert_eq!(received.len(), 1, "{received:#?}");
    assert_eq!(received[0]["outcome"], "acted");
    assert_eq!(received[0]["detail"]["jti"], "set-1");
    assert_eq!(received[0]["detail"]["issuer"], IDP);
    assert_eq!(received[0]["detail"]["human"], "alice");
    let acted = s.audit("kind=ssf.acted").await;
    let ended: std::collections::BTreeSet<&str> = acted
        .iter()
        .map(|e| e["task_id"].as_str().unwrap())
        .collect();
    assert_eq!(ended, [a1.as_str(), a2.as_str()].into_iter().collect());
    assert!(
        acted
            .iter()
            .all(|e| e["detail"]["jti"] == "set-1" && e["detail"]["issuer"] == IDP)
    );

    // Refusals, each with its RFC 8935 code.
    let (status, body) = push(&s, &set, "application/secevent+jwt").await;
    assert_eq!(
        (status, &body["err"]),
        (400, &json!("invalid_request")),
        "replay: {body}"
    );
    let bob = json!({"format": "opaque", "id": "bob"});
    let mut wrong_aud = claims(&s, "set-2", bob.clone(), SESSION_REVOKED, json!({}));
    wrong_aud["aud"] = json!("https://someone-else.test");
    let mut wrong_iss = claims(&s, "set-3", bob.clone(), SESSION_REVOKED, json!({}));
    wrong_iss["iss"] = json!("https://evil.test");
    let mut stale = claims(&s, "set-4", bob.clone(), SESSION_REVOKED, json!({}));
    stale["iat"] = json!(s.clock.now_unix_secs() - 3600);
    let ok = claims(&s, "set-5", bob.clone(), SESSION_REVOKED, json!({}));
    let cases = [
        (
            pyjwt_set(&dir.join("idp"), "secevent+jwt", &wrong_aud).await,
            "invalid_audience",
        ),
        (
            pyjwt_set(&dir.join("idp"), "secevent+jwt", &wrong_iss).await,
            "invalid_issuer",
        ),
        (
            pyjwt_set(&dir.join("impostor"), "secevent+jwt", &ok).await,
            "invalid_key",
        ),
        (
            pyjwt_set(&dir.join("idp"), "JWT", &ok).await,
            "invalid_request",
        ),
        (
            pyjwt_set(&dir.join("idp"), "-", &ok).await,
            "invalid_request",
        ),
        (
            pyjwt_set(&dir.join("idp"), "secevent+jwt", &stale).await,
            "invalid_request",
        ),
        ("not a jws".to_owned(), "invalid_request"),
    ];
    for (token, err) in &cases {
        let (status, body) = push(&s, token, "application/secevent+jwt").await;
        assert_eq!((status, body["err"].as_str()), (400, Some(*err)), "{body}");
        assert!(body["description"].is_string());
    }
    let good_bob = pyjwt_set(&dir.join("idp"), "secevent+jwt", &ok).await;
    let (status, body) = push(&s, &good_bob, "application/json").await;
    assert_eq!(
        (status, body["err"].as_str()),
        (400, Some("invalid_request"))
    );
    assert_eq!(
        task_state(&s, &bob_agent, &b1).await,
        "open",
        "no refused SET acted"
    );

    // Accepted and ignored: a credential created; acted on: RISC account-disabled for bob.
    let created = claims(
        &s,
        "set-6",
        bob.clone(),
        CREDENTIAL_CHANGE,
        json!({"credential_type": "fido2-roaming", "change_type": "create"}),
    );
    let (status, _) = push(
        &s,
        &pyjwt_set(&dir.join("idp"), "secevent+jwt", &created).await,
        "application/secevent+jwt",
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(task_state(&s, &bob_agent, &b1).await, "open");
    let disabled = claims(
        &s,
        "set-7",
        bob.clone(),
        ACCOUNT_DISABLED,
        json!({"reason": "hijacking"}),
    );
    let (status, _) = push(
        &s,
        &pyjwt_set(&dir.join("idp"), "secevent+jwt", &disabled).await,
        "application/secevent+jwt",
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(task_state(&s, &bob_agent, &b1).await, "cancelled");
    let outcomes: Vec<String> = s
        .audit("kind=ssf.received")
        .await
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["detail"]["jti"].as_str().unwrap(),
                e["outcome"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(outcomes, ["set-1:acted", "set-6:ignored", "set-7:acted"]);

    // Operators lift the freeze the usual way: alice's agents get credentials again.
    let fid = f["id"].as_str().unwrap();
    let lift = s
        .post(
            Some(&ops),
            &format!("/v1/admin/freezes/{fid}/lift"),
            json!({"reason": "idp cleared"}),
        )
        .await;
    assert_eq!(lift.status, 200, "{}", lift.body);
    grant(&s, &alice_agent, &a3).await;

    // After a restart on the same store, the replay is still refused.
    let s = s.crash_and_restart().await;
    let (status, body) = push(&s, &set, "application/secevent+jwt").await;
    assert_eq!(
        (status, &body["err"]),
        (400, &json!("invalid_request")),
        "{body}"
    );
    assert_eq!(
        body["description"],
        "a set with this `jti` was already received from this issuer"
    );
    s.stop().await;
}

/// Two identity providers: each acts only for the humans its `humans` names (an `access_denied`
/// for another's human, nothing ends); a format left out of `subject_formats` names nobody;
/// CAEP `token-claims-change` acts; the push authorization's scheme is case-insensitive; the
/// HTTP layer's refusals (`413`) come in the RFC 8935 form, and unreachable keys are
/// `503 jwks_unavailable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_transmitter_acts_only_for_its_own_humans() {
    if !python_ready() {
        return;
    }
    const PARTNER: &str = "https://partner.test";
    const DOWN: &str = "https://down.test";
    let dir = fresh_dir("ssf-rules");
    keygen(&dir.join("idp")).await;
    keygen(&dir.join("partner")).await;
    std::fs::write(dir.join("idp-push.secret"), "Bearer idp-push-0123456789").unwrap();
    let config = format!(
        "\n[[ssf.transmitters]]\nname = \"corp-idp\"\nissuer = \"{IDP}\"\naudience = \"{LATCH_AUDIENCE}\"\n\
         jwks = {{ file = \"idp/jwks.json\" }}\nalgorithms = [\"ES256\"]\nhumans = \"alice|bob\"\n\
         subject_formats = [\"iss_sub\"]\nauthorization_header_file = \"idp-push.secret\"\n\
         \n[[ssf.transmitters]]\nname = \"partner-idp\"\nissuer = \"{PARTNER}\"\naudience = \"{LATCH_AUDIENCE}\"\n\
         jwks = {{ file = \"partner/jwks.json\" }}\nalgorithms = [\"ES256\"]\nhumans = \"p-.*\"\n\
         \n[[ssf.transmitters]]\nname = \"down-idp\"\nissuer = \"{DOWN}\"\naudience = \"{LATCH_AUDIENCE}\"\n\
         jwks = {{ url = \"http://127.0.0.1:9/jwks.json\" }}\nalgorithms = [\"ES256\"]\nhumans = \"d-.*\"\n"
    );
    let s = TestServer::start_with(TestOptions {
        dir: Some(dir.clone()),
        extra_config: config,
        ..Default::default()
    })
    .await;
    let alice_agent = s.agent("ssf-rules-alice").await;
    let task = s.open_task(&alice_agent, "sandbox", 3600).await;
    grant(&s, &alice_agent, &task).await;
    let push_as = |auth: Option<&'static str>, token: String| {
        let mut r = s
            .http
            .post(format!("{}/v1/ssf/events", s.base))
            .header("content-type", "application/secevent+jwt")
            .body(token);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        async move {
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let alice = json!({"format": "opaque", "id": "alice"});

    // The partner signs a revocation of corp's alice: refused, nothing ends.
    let mut c = claims(&s, "p-1", alice.clone(), SESSION_REVOKED, json!({}));
    c["iss"] = json!(PARTNER);
    let (status, body) = push_as(
        None,
        pyjwt_set(&dir.join("partner"), "secevent+jwt", &c).await,
    )
    .await;
    assert_eq!(
        (status, body["err"].as_str()),
        (400, Some("access_denied")),
        "{body}"
    );
    assert_eq!(task_state(&s, &alice_agent, &task).await, "open");
    let refusals = s.audit("kind=ssf.received").await;
    assert_eq!(refusals.len(), 1, "{refusals:#?}");
    assert_eq!(refusals[0]["outcome"], "refused");
    assert_eq!(refusals[0]["detail"]["transmitter"], "partner-idp");
    assert_eq!(refusals[0]["detail"]["human"], "alice");

    // corp-idp reads only `iss_sub`: an opaque alice names nobody (accepted, ignored).
    let c = claims(&s, "c-1", alice, SESSION_REVOKED, json!({}));
    let set = pyjwt_set(&dir.join("idp"), "secevent+jwt", &c).await;
    let (status, body) = push_as(None, set.clone()).await;
    assert_eq!(
        (status, body["err"].as_str()),
        (400, Some("authentication_failed")),
        "{body}"
    );
    let (status, body) = push_as(Some("bearer idp-push-0123456789"), set).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(task_state(&s, &alice_agent, &task).await, "open");

    // A change of alice's token claims (her groups) ends her tasks.
    let sub = json!({"format": "iss_sub", "iss": IDP, "sub": "alice"});
    let c = claims(
        &s,
        "c-2",
        sub,
        TOKEN_CLAIMS_CHANGE,
        json!({"claims": {"groups": []}}),
    );
    let set = pyjwt_set(&dir.join("idp"), "secevent+jwt", &c).await;
    let (status, body) = push_as(Some("Bearer idp-push-0123456789"), set).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(task_state(&s, &alice_agent, &task).await, "cancelled");
    let refused = s
        .request(
            &alice_agent,
            &s.open_task(&alice_agent, "sandbox", 3600).await,
            "ci-cache",
            &["read"],
            None,
        )
        .await;
    assert_eq!(refused.code(), Some("frozen"));
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("identity provider `corp-idp`"),
        "{}",
        refused.body
    );

    // Keys that cannot be fetched: 503 naming them, so the transmitter retries.
    let mut c = claims(
        &s,
        "d-1",
        json!({"format": "opaque", "id": "d-x"}),
        SESSION_REVOKED,
        json!({}),
    );
    c["iss"] = json!(DOWN);
    let (status, body) = push_as(
        None,
        pyjwt_set(&dir.join("partner"), "secevent+jwt", &c).await,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("jwks_unavailable")),
        "{body}"
    );

    // Too large for the push endpoint: 413 in the RFC 8935 form.
    let (status, body) = push_as(None, "a".repeat(80 * 1024)).await;
    assert_eq!(
        (status, body["err"].as_str()),
        (413, Some("invalid_request")),
        "{body}"
    );
    assert!(
        body["description"]
            .as_str()
            .unwrap()
            .contains("larger than"),
        "{body}"
    );
    s.stop().await;
}
