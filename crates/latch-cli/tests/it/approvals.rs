//! Step-up approvals: binding to the exact request, distinct approvers, quorum, self-approval,
//! eligibility, expiry, and re-evaluation before minting.

use latch_testkit::{TestOptions, TestServer};
use serde_json::{Value, json};

async fn pending_deploy(s: &TestServer, agent: &str) -> (String, String, String) {
    let prod = s.open_task(agent, "production", 3600).await;
    let p = s
        .request(agent, &prod, "deploy-pipeline", &["deploy"], Some(600))
        .await;
    assert_eq!(p.status, 202, "{}", p.body);
    (
        prod,
        p.body["request"]["id"].as_str().unwrap().into(),
        p.body["request"]["digest"].as_str().unwrap().into(),
    )
}

async fn vote(
    s: &TestServer,
    who: &str,
    rid: &str,
    digest: &str,
    verb: &str,
) -> latch_testkit::Resp {
    s.post(
        Some(who),
        &format!("/v1/approvals/{rid}/{verb}"),
        json!({"digest": digest, "reason": "r"}),
    )
    .await
}

#[tokio::test]
async fn approval_binds_to_the_exact_request() {
    let s = TestServer::start().await;
    let agent = s.agent("1").await;
    let bob = s.human("bob", &["prod-approvers"]).await;
    let (prod, r1, d1) = pending_deploy(&s, &agent).await;
    let p2 = s
        .request(&agent, &prod, "deploy-pipeline", &["deploy"], Some(300))
        .await;
    let r2 = p2.body["request"]["id"].as_str().unwrap().to_owned();
    let d2 = p2.body["request"]["digest"].as_str().unwrap().to_owned();
    assert_ne!(d1, d2, "each request has its own digest");
    // The digest of request 1 does not approve request 2.
    let x = vote(&s, &bob, &r2, &d1, "approve").await;
    assert_eq!(x.status, 422);
    assert_eq!(x.code(), Some("approval_digest_mismatch"));
    let ok = vote(&s, &bob, &r1, &d1, "approve").await;
    assert_eq!(ok.body["state"], "approved");
    let still = s
        .get(Some(&agent), &format!("/v1/tasks/{prod}/requests/{r2}"))
        .await;
    assert_eq!(
        still.body["state"], "pending",
        "approving one request approves nothing else"
    );
    // Approvals carry the digest in the audit trail.
    let ev = s.audit(&format!("task_id={prod}")).await;
    assert!(
        ev.iter()
            .any(|e| e["kind"] == "approval.recorded" && e["detail"]["digest"] == d1.as_str())
    );
    s.stop().await;
}

#[tokio::test]
async fn self_approval_ineligible_and_double_votes_are_refused() {
    let s = TestServer::start().await;
    let agent = s.agent("2").await; // acts for alice
    let alice = s.human("alice", &["prod-approvers"]).await;
    let alice_upper = s.human("ALICE", &["prod-approvers"]).await;
    let dave = s.human("dave", &["security"]).await;
    let bob = s.human("bob", &["prod-approvers"]).await;
    let (_prod, rid, digest) = pending_deploy(&s, &agent).await;
    let r = vote(&s, &alice, &rid, &digest, "approve").await;
    assert_eq!((r.status, r.code()), (403, Some("self_approval_forbidden")));
    let r = vote(&s, &alice_upper, &rid, &digest, "approve").await;
    assert_eq!(
        r.code(),
        Some("self_approval_forbidden"),
        "case does not disguise the same human"
    );
    let r = vote(&s, &dave, &rid, &digest, "approve").await;
    assert_eq!((r.status, r.code()), (403, Some("approver_not_eligible")));
    // A workload token cannot approve.
    let r = vote(&s, &agent, &rid, &digest, "approve").await;
    assert_eq!(r.code(), Some("wrong_principal_kind"));
    // dave does not even see it.
    let p = s.get(Some(&dave), "/v1/approvals/pending").await;
    assert_eq!(p.body, json!([]));
    let ok = vote(&s, &bob, &rid, &digest, "approve").await;
    assert_eq!(ok.status, 200);
    let r = vote(&s, &bob, &rid, &digest, "approve").await;
    assert_eq!(r.code(), Some("request_not_pending"));
    s.stop().await;
}

const QUORUM: &str = r#"
@id("payments-write-two-approvers")
@step_up("dba")
@quorum("2")
@reason("writing to the payments database needs two DBAs")
forbid (principal, action == Latch::Action::"write", resource)
when { resource.production }
unless { context.approval.groups.contains("dba") };

@id("prod-write-from-main")
@max_ttl("10m")
permit (principal, action == Latch::Action::"write", resource)
when { resource.production && context.task.production && principal has branch && principal.branch == "main" };
"#;

#[tokio::test]
async fn quorum_counts_distinct_approvers_once() {
    let s = TestServer::start_with(TestOptions {
        extra_policies: vec![("30-quorum.cedar".into(), QUORUM.into())],
        ..Default::default()
    })
    .await;
    let agent = s.agent("3").await;
    let d1 = s.human("dba-one", &["dba"]).await;
    let d1_again = s.human("DBA-ONE", &["dba"]).await;
    let d2 = s.human("dba-two", &["dba"]).await;
    let prod = s.open_task(&agent, "production", 3600).await;
    let p = s
        .request(&agent, &prod, "payments-db", &["write"], Some(300))
        .await;
    assert_eq!(p.status, 202, "{}", p.body);
    assert_eq!(
        p.body["request"]["decision"]["groups"],
        json!([{"group": "dba", "quorum": 2}])
    );
    let rid = p.body["request"]["id"].as_str().unwrap();
    let digest = p.body["request"]["digest"].as_str().unwrap();
    let r = vote(&s, &d1, rid, digest, "approve").await;
    assert_eq!(r.body["state"], "pending", "one of two");
    let r = vote(&s, &d1_again, rid, digest, "approve").await;
    assert_eq!(
        r.code(),
        Some("already_voted"),
        "the same approver counts once"
    );
    let claim = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{prod}/requests/{rid}/claim"),
            json!({}),
        )
        .await;
    assert_eq!(claim.status, 202, "still pending: nothing minted");
    let r = vote(&s, &d2, rid, digest, "approve").await;
    assert_eq!(r.body["state"], "approved");
    assert_eq!(r.body["approvers"], json!(["dba-one", "dba-two"]));
    let claim = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{prod}/requests/{rid}/claim"),
            json!({}),
        )
        .await;
    assert_eq!(claim.status, 201, "{}", claim.body);
    let l = &claim.body["lease"];
    assert_eq!(
        l["expires_at_unix_secs"].as_i64().unwrap() - l["issued_at_unix_secs"].as_i64().unwrap(),
        300
    );
    s.stop().await;
}

#[tokio::test]
async fn an_approver_can_deny() {
    let s = TestServer::start().await;
    let agent = s.agent("4").await;
    let bob = s.human("bob", &["prod-approvers"]).await;
    let (prod, rid, digest) = pending_deploy(&s, &agent).await;
    // A verdict needs a reason: missing, empty or blank is refused and changes nothing.
    for body in [
        json!({"digest": digest}),
        json!({"digest": digest, "reason": ""}),
        json!({"digest": digest, "reason": "  "}),
    ] {
        let r = s
            .post(Some(&bob), &format!("/v1/approvals/{rid}/deny"), body)
            .await;
        assert_eq!(
            (r.status, r.code()),
            (400, Some("invalid_request")),
            "{}",
            r.body
        );
    }
    let r = vote(&s, &bob, &rid, &digest, "deny").await;
    assert_eq!(r.body["state"], "denied");
    let c = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{prod}/requests/{rid}/claim"),
            json!({}),
        )
        .await;
    assert_eq!(c.status, 403);
    assert!(
        c.body["request"]["decision"]["reasons"][0]
            .as_str()
            .unwrap()
            .contains("bob")
    );
    s.stop().await;
}

#[tokio::test]
async fn pending_and_approved_requests_expire() {
    let s = TestServer::start_with(TestOptions {
        pending_ttl: Some("10m"),
        ..Default::default()
    })
    .await;
    let agent = s.agent("5").await;
    let bob = s.human("bob", &["prod-approvers"]).await;
    let (prod, rid, digest) = pending_deploy(&s, &agent).await;
    s.clock.advance(601);
    // Expired before quorum: every vote, first or later, approve or deny, is the same 409.
    for verb in ["approve", "approve", "deny"] {
        let r = vote(&s, &bob, &rid, &digest, verb).await;
        assert_eq!(
            (r.status, r.code()),
            (409, Some("request_expired")),
            "{verb}"
        );
    }
    let c = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{prod}/requests/{rid}/claim"),
            json!({}),
        )
        .await;
    assert_eq!(c.code(), Some("request_expired"));
    // Approved but never claimed (bob signs in again: his first token's groups are older
    // than `authority_max_age` by now).
    let bob = s.human("bob", &["prod-approvers"]).await;
    let p = s
        .request(&agent, &prod, "deploy-pipeline", &["deploy"], Some(600))
        .await;
    let rid2 = p.body["request"]["id"].as_str().unwrap().to_owned();
    let ok = vote(
        &s,
        &bob,
        &rid2,
        p.body["request"]["digest"].as_str().unwrap(),
        "approve",
    )
    .await;
    assert_eq!(ok.body["state"], "approved");
    s.clock.advance(601);
    let rep = s.broker().reap().await.unwrap();
    assert_eq!(rep.requests_expired, 1);
    let c = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{prod}/requests/{rid2}/claim"),
            json!({}),
        )
        .await;
    assert_eq!(c.code(), Some("request_expired"));
    s.stop().await;
}

#[tokio::test]
async fn claim_re_evaluates_policy_and_delivers_once() {
    let s = TestServer::start().await;
    let agent = s.agent("6").await;
    let bob = s.human("bob", &["prod-approvers"]).await;
    let (prod, rid, digest) = pending_deploy(&s, &agent).await;
    vote(&s, &bob, &rid, &digest, "approve").await;
    // Between approval and claim the task ends: nothing is minted.
    let other_task_claim = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{prod}/complete"),
            json!({}),
        )
        .await;
    assert_eq!(other_task_claim.status, 200);
    let c = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{prod}/requests/{rid}/claim"),
            json!({}),
        )
        .await;
    assert_eq!(c.code(), Some("task_not_open"));

    let (prod, rid, digest) = pending_deploy(&s, &agent).await;
    vote(&s, &bob, &rid, &digest, "approve").await;
    let c1 = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{prod}/requests/{rid}/claim"),
            json!({}),
        )
        .await;
    assert_eq!(c1.status, 201);
    let c2 = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{prod}/requests/{rid}/claim"),
            json!({}),
        )
        .await;
    assert_eq!(c2.code(), Some("request_not_pending"));
    // Concurrent claims mint at most once.
    let (prod, rid, digest) = pending_deploy(&s, &agent).await;
    vote(&s, &bob, &rid, &digest, "approve").await;
    let path = format!("/v1/tasks/{prod}/requests/{rid}/claim");
    let results: Vec<latch_testkit::Resp> = futures_join(&s, &agent, &path, 8).await;
    let minted = results.iter().filter(|r| r.status == 201).count();
    assert_eq!(
        minted,
        1,
        "{:?}",
        results
            .iter()
            .map(|r| (r.status, r.code().map(str::to_owned)))
            .collect::<Vec<_>>()
    );
    let leases = s
        .get(Some(&agent), &format!("/v1/tasks/{prod}/leases"))
        .await
        .body;
    assert_eq!(leases.as_array().unwrap().len(), 1);
    s.stop().await;
}

async fn futures_join(
    s: &TestServer,
    token: &str,
    path: &str,
    n: usize,
) -> Vec<latch_testkit::Resp> {
    let mut handles = Vec::new();
    for _ in 0..n {
        let http = s.http.clone();
        let url = format!("{}{path}", s.base);
        let token = token.to_owned();
        handles.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(token)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            latch_testkit::Resp {
                status,
                body,
                request_id: None,
            }
        }));
    }
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn look_alike_human_ids_cannot_self_approve_or_stuff_a_quorum() {
    let s = TestServer::start().await;
    let agent = s.agent("7").await; // acts for alice
    let (_prod, rid, digest) = pending_deploy(&s, &agent).await;
    for spoof in [
        " alice",
        "alice\t",
        "\u{430}lice",
        "\u{ff41}lice",
        "alice\u{200b}",
        "ALI\u{130}E",
    ] {
        let r = s
            .post(
                None,
                "/v1/dev/tokens",
                json!({"kind": "human", "subject": spoof, "groups": ["prod-approvers"]}),
            )
            .await;
        let tok = r.body["token"].as_str().unwrap();
        let v = vote(&s, tok, &rid, &digest, "approve").await;
        assert_eq!(v.code(), Some("claims_invalid"), "{spoof:?}: {}", v.body);
    }
    // A workload acting for a look-alike human is refused too.
    let r = s
        .post(
            None,
            "/v1/dev/tokens",
            json!({"kind": "workload", "actor": "alice ", "run_id": "8"}),
        )
        .await;
    let w = r.body["token"].as_str().unwrap();
    let t = s
        .post(
            Some(w),
            "/v1/tasks",
            json!({"purpose": "x", "environment": "sandbox"}),
        )
        .await;
    assert_eq!(t.code(), Some("claims_invalid"));
    s.stop().await;
}

#[tokio::test]
async fn text_shown_to_approvers_cannot_carry_control_or_bidi_characters() {
    let s = TestServer::start().await;
    let agent = s.agent("9").await;
    for bad in [
        "x\u{1b}[1A\u{1b}[2Kdigest: 000",
        "x\r\nneeds: nothing",
        "evil\u{202e}txt.exe",
        "a\u{0}b",
    ] {
        let r = s
            .post(
                Some(&agent),
                "/v1/tasks",
                json!({"purpose": bad, "environment": "sandbox"}),
            )
            .await;
        assert_eq!(r.code(), Some("invalid_request"), "{bad:?}");
    }
    let t = s.open_task(&agent, "production", 600).await;
    let r = s.post(Some(&agent), &format!("/v1/tasks/{t}/requests"),
        json!({"resource": "deploy-pipeline", "actions": ["deploy"], "justification": "ok\nneeds: nothing"})).await;
    assert_eq!(r.code(), Some("invalid_request"));
    s.stop().await;
}

/// An approver's groups count only while recent (`[approvals] authority_max_age`, 10 min by
/// default): a token older than that cannot vote or act as an operator, whatever its own
/// lifetime, so a removal from a group at the identity provider stops counting soon.
#[tokio::test]
async fn votes_and_operator_actions_need_recent_groups() {
    let s = TestServer::start().await;
    let agent = s.agent("fresh-1").await;
    let bob = s.human("bob", &["prod-approvers"]).await;
    let carol = s.human("carol", &["latch-admins"]).await;
    let (_prod, rid, digest) = pending_deploy(&s, &agent).await;
    s.clock.advance(11 * 60);
    let r = s
        .http
        .post(format!("{}/v1/approvals/{rid}/approve", s.base))
        .bearer_auth(&bob)
        .json(&json!({"digest": digest, "reason": "late"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // RFC 9470 §3: the token is good, its sign-in too old for this call.
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer realm=\"latch\", error=\"insufficient_user_authentication\", error_description=\"a more recent sign-in is needed\""
    );
    let b: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        b["error"]["code"], "insufficient_user_authentication",
        "{b}"
    );
    assert!(s.broker().approvals(&rid).await.unwrap().is_empty());
    // An operator may still read with it, but not act.
    let list = s.get(Some(&carol), "/v1/admin/tasks").await;
    assert_eq!(list.status, 200, "{}", list.body);
    let freeze = s
        .post(
            Some(&carol),
            "/v1/admin/freezes",
            json!({"scope": {"kind": "all"}, "reason": "drill"}),
        )
        .await;
    assert_eq!(freeze.code(), Some("insufficient_user_authentication"));
    // Signed in again (a fresh token): the vote counts.
    let bob = s.human("bob", &["prod-approvers"]).await;
    let r = vote(&s, &bob, &rid, &digest, "approve").await;
    assert_eq!(r.body["state"], "approved", "{}", r.body);
    s.stop().await;
}
