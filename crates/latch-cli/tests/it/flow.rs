//! The main flow and the lease/task invariants, over HTTP.

use latch_testkit::TestServer;
use serde_json::json;

#[tokio::test]
async fn full_flow_grant_separation_step_up_renew_deny_complete() {
    let s = TestServer::start().await;
    let agent = s.agent("100").await;
    let bob = s.human("bob", &["prod-approvers"]).await;

    let sandbox = s.open_task(&agent, "sandbox", 1800).await;
    let g = s
        .request(&agent, &sandbox, "ci-cache", &["read"], None)
        .await;
    assert_eq!(g.status, 201, "{}", g.body);
    assert_eq!(
        g.body["request"]["decision"]["policy_ids"],
        json!(["nonprod-read-write"])
    );
    let t1 = g.body["credential"]["value"].as_str().unwrap().to_owned();
    let i = s.introspect(&t1).await;
    assert_eq!(i["active"], true);
    assert_eq!(i["jti"], g.body["lease"]["id"]);
    assert_eq!(i["scope"], "read");
    assert_eq!(i["aud"], "https://ci-cache.acme.example");
    assert_eq!(i["task_id"], sandbox.as_str());

    // Hard separation: nothing minted, whatever the policies say.
    let d = s
        .request(&agent, &sandbox, "payments-db", &["read"], None)
        .await;
    assert_eq!(d.status, 403);
    assert_eq!(d.code(), Some("environment_separation"));
    assert!(d.body.get("credential").is_none());

    let prod = s.open_task(&agent, "production", 3600).await;
    let p = s
        .request(&agent, &prod, "deploy-pipeline", &["deploy"], Some(600))
        .await;
    assert_eq!(p.status, 202, "{}", p.body);
    assert_eq!(
        p.body["request"]["decision"]["groups"],
        json!([{"group": "prod-approvers", "quorum": 1}])
    );
    let rid = p.body["request"]["id"].as_str().unwrap().to_owned();
    let digest = p.body["request"]["digest"].as_str().unwrap().to_owned();
    let a = s
        .post(
            Some(&bob),
            &format!("/v1/approvals/{rid}/approve"),
            json!({"digest": digest, "reason": "ok"}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["state"], "approved");
    let c = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{prod}/requests/{rid}/claim"),
            json!({}),
        )
        .await;
    assert_eq!(c.status, 201, "{}", c.body);
    let t2 = c.body["credential"]["value"].as_str().unwrap().to_owned();
    let lease = c.body["lease"]["id"].as_str().unwrap().to_owned();

    s.clock.advance(60);
    let r = s
        .post(
            Some(&agent),
            &format!("/v1/leases/{lease}/renew"),
            json!({"ttl_secs": 600}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["lease"]["renewals"], 1);
    let t3 = r.body["credential"]["value"].as_str().unwrap().to_owned();
    assert_eq!(
        s.introspect(&t2).await["active"],
        false,
        "the replaced token is inactive"
    );
    assert_eq!(s.introspect(&t3).await["active"], true);

    let d = s
        .request(&agent, &prod, "payments-db", &["admin"], None)
        .await;
    assert_eq!(d.status, 403);
    assert_eq!(d.code(), Some("policy_denied"));
    assert_eq!(
        d.body["request"]["decision"]["policy_ids"],
        json!(["no-agent-admin"])
    );
    assert_eq!(
        d.body["request"]["decision"]["reasons"],
        json!(["agents never receive admin access; ask a human operator"])
    );

    for t in [&sandbox, &prod] {
        let r = s
            .post(Some(&agent), &format!("/v1/tasks/{t}/complete"), json!({}))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    for t in [&t1, &t2, &t3] {
        assert_eq!(s.introspect(t).await["active"], false);
    }
    // Completing again is idempotent (a retry after a lost answer); cancelling it is not.
    let again = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{prod}/complete"),
            json!({}),
        )
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["state"], "completed");
    let cancel = s
        .post(Some(&agent), &format!("/v1/tasks/{prod}/cancel"), json!({}))
        .await;
    assert_eq!(cancel.code(), Some("task_not_open"));
    let after = s
        .request(&agent, &prod, "payments-db", &["read"], None)
        .await;
    assert_eq!(after.code(), Some("task_not_open"));

    // The audit trail has the story and no credential.
    let events = s.audit("").await;
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
    for k in [
        "auth.succeeded",
        "task.opened",
        "request.decided",
        "approval.recorded",
        "credential.issued",
        "credential.renewed",
        "credential.revoked",
        "task.completed",
    ] {
        assert!(kinds.contains(&k), "missing audit kind {k}");
    }
    let text = serde_json::to_string(&events).unwrap();
    for t in [&t1, &t2, &t3, &agent, &bob] {
        assert!(
            !text.contains(t.as_str()),
            "a credential leaked into the audit log"
        );
        // Not even the signature part.
        assert!(!text.contains(t.rsplit('.').next().unwrap()));
    }
    s.stop().await;
}

#[tokio::test]
async fn task_is_bound_to_its_workload_run() {
    let s = TestServer::start().await;
    let run1 = s.agent("201").await;
    let run2 = s.agent("202").await; // same repository, same branch, another job run
    let task = s.open_task(&run1, "sandbox", 600).await;
    let other = s.get(Some(&run2), &format!("/v1/tasks/{task}")).await;
    assert_eq!(other.status, 404);
    assert_eq!(other.code(), Some("task_not_found"));
    let req = s.request(&run2, &task, "ci-cache", &["read"], None).await;
    assert_eq!(req.code(), Some("task_not_found"));
    let end = s
        .post(
            Some(&run2),
            &format!("/v1/tasks/{task}/complete"),
            json!({}),
        )
        .await;
    assert_eq!(end.code(), Some("task_not_found"));
    let g = s.request(&run1, &task, "ci-cache", &["read"], None).await;
    let lease = g.body["lease"]["id"].as_str().unwrap().to_owned();
    let renew = s
        .post(Some(&run2), &format!("/v1/leases/{lease}/renew"), json!({}))
        .await;
    assert_eq!(renew.code(), Some("lease_not_found"));
    let revoke = s
        .post(
            Some(&run2),
            &format!("/v1/leases/{lease}/revoke"),
            json!({}),
        )
        .await;
    assert_eq!(revoke.code(), Some("lease_not_found"));
    let list = s.get(Some(&run2), "/v1/tasks").await;
    assert_eq!(list.body, json!([]));
    // A human token cannot act as a workload.
    let human = s.human("alice", &[]).await;
    let h = s
        .post(
            Some(&human),
            "/v1/tasks",
            json!({"purpose": "x", "environment": "sandbox"}),
        )
        .await;
    assert_eq!(h.code(), Some("wrong_principal_kind"));
    // And the owner still can.
    let own = s.get(Some(&run1), &format!("/v1/tasks/{task}")).await;
    assert_eq!(own.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn task_fields_must_match_the_identity_and_bounds() {
    let s = TestServer::start().await;
    let agent = s.agent("300").await;
    let r = s
        .post(
            Some(&agent),
            "/v1/tasks",
            json!({"purpose": "x", "environment": "sandbox", "repository": "acme/other"}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.code(), Some("task_identity_mismatch"));
    let r = s
        .post(
            Some(&agent),
            "/v1/tasks",
            json!({"purpose": "x", "environment": "sandbox", "branch": "release"}),
        )
        .await;
    assert_eq!(r.code(), Some("task_identity_mismatch"));
    let r = s
        .post(
            Some(&agent),
            "/v1/tasks",
            json!({"purpose": "x", "environment": "sandbox", "on_behalf_of": "mallory"}),
        )
        .await;
    assert_eq!(r.code(), Some("task_identity_mismatch"));
    // Below the schema's `minimum: 1`: malformed (400); above the configured bound: 422.
    for (ttl, code) in [
        (0, "invalid_request"),
        (-5, "invalid_request"),
        (8 * 3600 + 1, "ttl_out_of_bounds"),
    ] {
        let r = s
            .post(
                Some(&agent),
                "/v1/tasks",
                json!({"purpose": "x", "environment": "sandbox", "ttl_secs": ttl}),
            )
            .await;
        assert_eq!(r.code(), Some(code), "ttl {ttl}");
    }
    let r = s
        .post(
            Some(&agent),
            "/v1/tasks",
            json!({"purpose": "", "environment": "sandbox"}),
        )
        .await;
    assert_eq!(r.code(), Some("invalid_request"));
    let r = s
        .post(
            Some(&agent),
            "/v1/tasks",
            json!({"purpose": "x".repeat(5000), "environment": "sandbox"}),
        )
        .await;
    assert_eq!(r.code(), Some("invalid_request"));
    let r = s
        .post(
            Some(&agent),
            "/v1/tasks",
            json!({"purpose": "x", "environment": "sand box\n"}),
        )
        .await;
    assert_eq!(r.code(), Some("invalid_request"));
    let ok = s
        .post(
            Some(&agent),
            "/v1/tasks",
            json!({"purpose": "x", "environment": "sandbox", "branch": "main"}),
        )
        .await;
    assert_eq!(ok.status, 201);
    assert_eq!(ok.body["repository"], "acme/payments-api");
    assert_eq!(ok.body["branch"], "main");
    assert_eq!(ok.body["on_behalf_of"], "alice");
    let task = ok.body["id"].as_str().unwrap();
    let r = s.request(&agent, task, "nope", &["read"], None).await;
    assert_eq!(r.code(), Some("unknown_resource"));
    let r = s.request(&agent, task, "ci-cache", &["deploy"], None).await;
    assert_eq!(r.code(), Some("unknown_action"));
    let r = s.request(&agent, task, "ci-cache", &[], None).await;
    assert_eq!(r.code(), Some("invalid_request"));
    let r = s
        .request(&agent, task, "ci-cache", &["read"], Some(0))
        .await;
    assert_eq!(r.code(), Some("invalid_request"));
    s.stop().await;
}

#[tokio::test]
async fn ttl_is_the_minimum_of_every_bound_and_never_outlives_the_task() {
    let s = TestServer::start().await;
    let agent = s.agent("400").await;
    // Task of 120 s; the resource allows 30 min; policy max 30 min; requested 10 min.
    let task = s.open_task(&agent, "sandbox", 120).await;
    let g = s
        .request(&agent, &task, "ci-cache", &["read"], Some(600))
        .await;
    let l = &g.body["lease"];
    let t = s.get(Some(&agent), &format!("/v1/tasks/{task}")).await.body;
    assert_eq!(
        l["expires_at_unix_secs"], t["expires_at_unix_secs"],
        "lease capped at the task's end"
    );
    assert!(l["max_expires_at_unix_secs"].as_i64() <= t["expires_at_unix_secs"].as_i64());
    // Requested above the resource max: clamped to 30 min.
    let task2 = s.open_task(&agent, "sandbox", 7200).await;
    let g = s
        .request(&agent, &task2, "ci-cache", &["read"], Some(99_999))
        .await;
    let l = &g.body["lease"];
    assert_eq!(
        l["expires_at_unix_secs"].as_i64().unwrap() - l["issued_at_unix_secs"].as_i64().unwrap(),
        1800
    );
    // Policy max (@max_ttl 10m on untrusted reads) is exercised in cases.rs; production 15 min:
    let prod = s.open_task(&agent, "production", 7200).await;
    let g = s
        .request(&agent, &prod, "payments-db", &["read"], Some(3600))
        .await;
    assert_eq!(g.status, 201, "{}", g.body);
    let l = &g.body["lease"];
    assert_eq!(
        l["expires_at_unix_secs"].as_i64().unwrap() - l["issued_at_unix_secs"].as_i64().unwrap(),
        900
    );
    s.stop().await;
}

#[tokio::test]
async fn renewal_is_a_fresh_evaluation_bounded_by_the_lease_max() {
    let s = TestServer::start().await;
    let agent = s.agent("500").await;
    let prod = s.open_task(&agent, "production", 8 * 3600).await;
    // payments-db: max_ttl 15m, max_lifetime 1h.
    let g = s
        .request(&agent, &prod, "payments-db", &["read"], Some(900))
        .await;
    let lease = g.body["lease"]["id"].as_str().unwrap().to_owned();
    let max = g.body["lease"]["max_expires_at_unix_secs"]
        .as_i64()
        .unwrap();
    let issued = g.body["lease"]["issued_at_unix_secs"].as_i64().unwrap();
    assert_eq!(max - issued, 3600);
    let mut renewals = 0;
    loop {
        s.clock.advance(800);
        let agent = s.agent("500").await; // a fresh token of the same run
        let r = s
            .post(
                Some(&agent),
                &format!("/v1/leases/{lease}/renew"),
                json!({"ttl_secs": 900}),
            )
            .await;
        if r.status != 200 {
            assert!(
                matches!(
                    r.code(),
                    Some("lease_not_active") | Some("ttl_out_of_bounds")
                ),
                "{}",
                r.body
            );
            break;
        }
        renewals += 1;
        let exp = r.body["lease"]["expires_at_unix_secs"].as_i64().unwrap();
        assert!(exp <= max, "renewal passed the lease's max ttl");
        assert!(exp - s.clock_now() <= 900);
        assert_eq!(
            r.body["lease"]["max_expires_at_unix_secs"]
                .as_i64()
                .unwrap(),
            max,
            "max never moves"
        );
        assert!(renewals < 10);
    }
    assert!(renewals >= 3, "renewed {renewals} times within the hour");
    // A renewal asking for more than the resource's max is clamped (not judged at face value).
    let g = s
        .request(
            &s.agent("500").await,
            &prod,
            "payments-db",
            &["read"],
            Some(900),
        )
        .await;
    let l2 = g.body["lease"]["id"].as_str().unwrap().to_owned();
    let r = s
        .post(
            Some(&s.agent("500").await),
            &format!("/v1/leases/{l2}/renew"),
            json!({"ttl_secs": 3600}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let l = &r.body["lease"];
    assert_eq!(
        l["expires_at_unix_secs"].as_i64().unwrap() - s.clock_now(),
        900
    );
    s.stop().await;
}

trait ClockNow {
    fn clock_now(&self) -> i64;
}
impl ClockNow for TestServer {
    fn clock_now(&self) -> i64 {
        use latch_core::Clock;
        self.clock.now_unix_secs()
    }
}

#[tokio::test]
async fn renewal_after_max_ttl_is_refused() {
    let s = TestServer::start().await;
    let agent = s.agent("501").await;
    let prod = s.open_task(&agent, "production", 8 * 3600).await;
    let g = s
        .request(&agent, &prod, "payments-db", &["read"], Some(900))
        .await;
    let lease = g.body["lease"]["id"].as_str().unwrap().to_owned();
    // Renew to just before the hard end, then one more renewal has no room left.
    for _ in 0..4 {
        s.clock.advance(890);
        let agent = s.agent("501").await;
        let r = s
            .post(
                Some(&agent),
                &format!("/v1/leases/{lease}/renew"),
                json!({}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    s.clock.advance(45 * 60);
    let agent = s.agent("501").await;
    let r = s
        .post(
            Some(&agent),
            &format!("/v1/leases/{lease}/renew"),
            json!({}),
        )
        .await;
    assert!(
        matches!(
            r.code(),
            Some("lease_not_active") | Some("ttl_out_of_bounds")
        ),
        "{}",
        r.body
    );
    s.stop().await;
}

#[tokio::test]
async fn ending_or_expiring_a_task_revokes_everything() {
    let s = TestServer::start().await;
    let agent = s.agent("600").await;
    // Cancel.
    let t = s.open_task(&agent, "sandbox", 600).await;
    let a = s
        .request(&agent, &t, "ci-cache", &["read"], None)
        .await
        .body["credential"]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = s
        .request(&agent, &t, "staging-db", &["read", "write"], None)
        .await
        .body["credential"]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = s
        .post(Some(&agent), &format!("/v1/tasks/{t}/cancel"), json!({}))
        .await;
    assert_eq!(r.body["state"], "cancelled");
    assert_eq!(s.introspect(&a).await["active"], false);
    assert_eq!(s.introspect(&b).await["active"], false);
    let leases = s
        .get(Some(&agent), &format!("/v1/tasks/{t}/leases"))
        .await
        .body;
    assert!(
        leases
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["state"] == "revoked" && l["revoke_reason"] == "task_cancelled")
    );

    // Expire: the reaper revokes without the agent.
    let t = s.open_task(&agent, "sandbox", 300).await;
    let c = s
        .request(&agent, &t, "ci-cache", &["read"], Some(300))
        .await
        .body["credential"]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(s.introspect(&c).await["active"], true);
    s.clock.advance(301);
    assert_eq!(
        s.introspect(&c).await["active"],
        false,
        "an expired token is inactive at once"
    );
    let report = s.broker().reap().await.unwrap();
    assert_eq!(report.tasks_expired, 1);
    let task = s.get(Some(&agent), &format!("/v1/tasks/{t}")).await.body;
    assert_eq!(task["state"], "expired");
    let leases = s
        .get(Some(&agent), &format!("/v1/tasks/{t}/leases"))
        .await
        .body;
    assert!(
        leases
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["state"] == "revoked")
    );
    let events = s.audit(&format!("task_id={t}")).await;
    assert!(events.iter().any(|e| e["kind"] == "task.expired"));
    s.stop().await;
}

#[tokio::test]
async fn expired_leases_are_reaped_and_revocation_is_idempotent() {
    let s = TestServer::start().await;
    let agent = s.agent("700").await;
    let t = s.open_task(&agent, "sandbox", 3600).await;
    let g = s.request(&agent, &t, "ci-cache", &["read"], Some(60)).await;
    let lease = g.body["lease"]["id"].as_str().unwrap().to_owned();
    s.clock.advance(61);
    let r = s.broker().reap().await.unwrap();
    assert_eq!(r.leases_revoked, 1);
    let l = s
        .get(Some(&agent), &format!("/v1/tasks/{t}/leases"))
        .await
        .body[0]
        .clone();
    assert_eq!(l["state"], "revoked");
    assert_eq!(l["revoke_reason"], "expired");
    let again = s
        .post(
            Some(&agent),
            &format!("/v1/leases/{lease}/revoke"),
            json!({}),
        )
        .await;
    assert_eq!(again.code(), Some("lease_not_active"));
    assert_eq!(
        s.broker().reap().await.unwrap().leases_revoked,
        0,
        "nothing left to reap"
    );
    s.stop().await;
}

#[tokio::test]
async fn rfc7009_revocation_and_explicit_revoke() {
    let s = TestServer::start().await;
    let agent = s.agent("800").await;
    let other = s.agent("801").await;
    let t = s.open_task(&agent, "sandbox", 600).await;
    let tok = s
        .request(&agent, &t, "ci-cache", &["read"], None)
        .await
        .body["credential"]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    // Another workload cannot revoke it (silently ignored, RFC 7009 §2.2).
    let r = s
        .http
        .post(format!("{}/v1/oauth/revoke", s.base))
        .bearer_auth(&other)
        .form(&[("token", tok.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.introspect(&tok).await["active"], true);
    // Bad client credentials.
    let r = s
        .http
        .post(format!("{}/v1/oauth/introspect", s.base))
        .basic_auth("demo-resource-server", Some("wrong"))
        .form(&[("token", tok.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The owner revokes by value.
    let r = s
        .http
        .post(format!("{}/v1/oauth/revoke", s.base))
        .bearer_auth(&agent)
        .form(&[("token", tok.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.introspect(&tok).await["active"], false);
    // Unknown token: 200.
    let r = s
        .http
        .post(format!("{}/v1/oauth/revoke", s.base))
        .basic_auth("demo-resource-server", Some("demo-secret"))
        .form(&[("token", "unknown")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Explicit lease revoke.
    let g = s.request(&agent, &t, "ci-cache", &["read"], None).await;
    let lease = g.body["lease"]["id"].as_str().unwrap();
    let r = s
        .post(
            Some(&agent),
            &format!("/v1/leases/{lease}/revoke"),
            json!({}),
        )
        .await;
    assert_eq!(r.body["state"], "revoked");
    assert_eq!(
        s.introspect(g.body["credential"]["value"].as_str().unwrap())
            .await["active"],
        false
    );
    s.stop().await;
}

#[tokio::test]
async fn task_environment_must_match_the_identity_environment_claim() {
    let s = TestServer::start().await;
    let sandbox = s
        .dev_token(
            json!({"kind": "workload", "repository": "acme/payments-api",
            "git_ref": "refs/heads/main", "environment": "sandbox", "actor": "alice",
            "run_id": "310", "ttl_secs": 3600}),
        )
        .await;
    let r = s
        .post(
            Some(&sandbox),
            "/v1/tasks",
            json!({"purpose": "x", "environment": "production"}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.code(), Some("task_identity_mismatch"));
    let msg = r.body["message"].as_str().unwrap_or_default().to_owned()
        + r.body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("production") && msg.contains("sandbox"),
        "{}",
        r.body
    );
    // The claimed environment itself, in any case, is fine.
    let r = s
        .post(
            Some(&sandbox),
            "/v1/tasks",
            json!({"purpose": "x", "environment": "Sandbox"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    // Without an environment claim, policy decides: a production task can be opened.
    let agent = s.agent("311").await;
    let r = s
        .post(
            Some(&agent),
            "/v1/tasks",
            json!({"purpose": "x", "environment": "production"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    s.stop().await;
}
