//! Beyond one request (issue 18): policy that reads the task's history (a task that held a
//! secret is tainted and its egress needs step-up; a leaked task gets nothing more; renewal
//! decides with the current history) and budgets kept in the store (denied `budget_exceeded`,
//! a breach that ends the task, counts that survive a restart, and two replicas granting at
//! once that never pass a budget).

use std::sync::Arc;

use latch_testkit::{PG_ADDR, TempPgDatabase, TestOptions, TestServer, service_available};
use serde_json::{Value, json};

use super::replicas::{Client, Replica, agent, config};

async fn approve(s: &TestServer, human: &str, pending: &Value) {
    let rid = pending["request"]["id"].as_str().unwrap();
    let digest = pending["request"]["digest"].as_str().unwrap();
    let a = s
        .post(
            Some(human),
            &format!("/v1/approvals/{rid}/approve"),
            json!({"digest": digest, "reason": "checked"}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
}

#[tokio::test]
async fn a_task_that_held_a_secret_needs_step_up_for_egress_and_renewal_sees_it() {
    let s = TestServer::start().await;
    let agent = s.agent("hist-1").await;
    let sec = s.human("sam", &["security"]).await;
    let task = s.open_task(&agent, "sandbox", 1800).await;

    // Clean task: publishing is granted at once.
    let p = s
        .request(&agent, &task, "package-registry", &["write"], None)
        .await;
    assert_eq!(p.status, 201, "{}", p.body);
    let publish_lease = p.body["lease"]["id"].as_str().unwrap().to_owned();

    // The secret needs security; once claimed, the task is tainted.
    let v = s
        .request(&agent, &task, "sandbox-vault", &["read"], None)
        .await;
    assert_eq!(v.status, 202, "{}", v.body);
    approve(&s, &sec, &v.body).await;
    let rid = v.body["request"]["id"].as_str().unwrap();
    let c = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{task}/requests/{rid}/claim"),
            json!({}),
        )
        .await;
    assert_eq!(c.status, 201, "{}", c.body);

    // Now the same publish needs step-up, named by the history-aware policy.
    let p2 = s
        .request(&agent, &task, "package-registry", &["write"], None)
        .await;
    assert_eq!(p2.status, 202, "{}", p2.body);
    assert_eq!(
        p2.body["request"]["decision"]["policy_ids"],
        json!(["tainted-egress-needs-security"])
    );
    // Non-egress resources are unaffected.
    let r = s.request(&agent, &task, "ci-cache", &["read"], None).await;
    assert_eq!(r.status, 201, "{}", r.body);

    // Continuous enforcement: the publish credential granted before the taint stopped working
    // when the secret was granted (not at its next renewal).
    let publish_value = p.body["credential"]["value"].as_str().unwrap();
    assert_eq!(s.introspect(publish_value).await["active"], false);
    let revoked = s.audit("kind=credential.policy_revoked").await;
    assert!(
        revoked
            .iter()
            .any(|e| e["lease_id"] == publish_lease.as_str()
                && e["detail"]["policy_ids"] == json!(["tainted-egress-needs-security"])),
        "{revoked:?}"
    );
    let rn = s
        .post(
            Some(&agent),
            &format!("/v1/leases/{publish_lease}/renew"),
            json!({}),
        )
        .await;
    assert_eq!(rn.code(), Some("lease_not_active"), "{}", rn.body);

    // What policy sees, over the API.
    let h = s
        .get(Some(&agent), &format!("/v1/tasks/{task}/history"))
        .await;
    assert_eq!(h.status, 200, "{}", h.body);
    assert_eq!(h.body["tainted"], true, "{}", h.body);
    assert_eq!(h.body["history"]["grant_counts"]["sandbox-vault:read"], 1);
    assert_eq!(h.body["history"]["egress"], true);

    // A fresh task is clean again: history belongs to the task.
    let t2 = s.open_task(&agent, "sandbox", 600).await;
    let p3 = s
        .request(&agent, &t2, "package-registry", &["write"], None)
        .await;
    assert_eq!(p3.status, 201, "{}", p3.body);
}

#[tokio::test]
async fn a_leaked_credential_marks_the_task_and_further_access_needs_security() {
    let s = TestServer::start().await;
    let agent = s.agent("hist-2").await;
    let task = s.open_task(&agent, "sandbox", 1800).await;
    let g = s.request(&agent, &task, "ci-cache", &["read"], None).await;
    assert_eq!(g.status, 201, "{}", g.body);
    let value = g.body["credential"]["value"].as_str().unwrap().to_owned();
    let r = s
        .post(
            Some(&agent),
            "/v1/scan",
            json!({"text": format!("debug: token {value}\n"), "source": "ci.log"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["findings"][0]["response"]["matched"], true,
        "{}",
        r.body
    );
    // Sensitive access now needs security; the sandbox cache does not.
    let d = s
        .request(&agent, &task, "package-registry", &["write"], None)
        .await;
    assert_eq!(d.status, 202, "{}", d.body);
    assert_eq!(
        d.body["request"]["decision"]["policy_ids"],
        json!(["leaked-task-needs-security"]),
        "{}",
        d.body
    );
    let c = s.request(&agent, &task, "ci-cache", &["read"], None).await;
    assert_eq!(c.status, 201, "{}", c.body);
}

/// A renewal is a fresh decision with the task's current history: a tool use reported after
/// the grant is in it.
#[tokio::test]
async fn renewal_decides_with_the_current_history() {
    let s = TestServer::start_with(TestOptions {
        extra_policies: vec![(
            "70-tools.cedar".into(),
            r#"@id("no-cache-after-psql")
@reason("this task ran psql: the CI cache is off limits")
forbid (principal, action, resource == Latch::Resource::"ci-cache")
when { context.history.tools.contains("psql") };"#
                .into(),
        )],
        ..TestOptions::default()
    })
    .await;
    let agent = s.agent("hist-3").await;
    let task = s.open_task(&agent, "sandbox", 1800).await;
    let g = s.request(&agent, &task, "ci-cache", &["read"], None).await;
    assert_eq!(g.status, 201, "{}", g.body);
    let lease = g.body["lease"]["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/leases/{lease}/renew");
    assert_eq!(s.post(Some(&agent), &path, json!({})).await.status, 200);
    let r = s
        .post(
            Some(&agent),
            &format!("/v1/tasks/{task}/events"),
            json!({"tool": "psql", "outcome": "ok"}),
        )
        .await;
    assert!(r.status < 300, "{}", r.body);
    let rn = s.post(Some(&agent), &path, json!({})).await;
    assert_eq!(rn.status, 403, "{}", rn.body);
    assert_eq!(rn.code(), Some("policy_denied"));
    assert!(
        rn.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no-cache-after-psql"),
        "{}",
        rn.body
    );
}

fn budgets(extra: &str) -> TestOptions {
    TestOptions {
        extra_config: extra.into(),
        ..TestOptions::default()
    }
}

#[tokio::test]
async fn task_budgets_deny_with_budget_exceeded_and_hold_across_a_restart() {
    let s = TestServer::start_with(budgets(
        "\n[budgets.task]\nmax_grants = 2\nmax_renewals = 1\n",
    ))
    .await;
    let agent = s.agent("budget-1").await;
    let task = s.open_task(&agent, "sandbox", 1800).await;
    let a = s.request(&agent, &task, "ci-cache", &["read"], None).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let lease = a.body["lease"]["id"].as_str().unwrap().to_owned();
    // One renewal fits; the second is refused, the lease keeps working.
    let path = format!("/v1/leases/{lease}/renew");
    let r1 = s.post(Some(&agent), &path, json!({})).await;
    assert_eq!(r1.status, 200, "{}", r1.body);
    let cred = r1.body["credential"]["value"].as_str().unwrap().to_owned();
    let r2 = s.post(Some(&agent), &path, json!({})).await;
    assert_eq!(r2.status, 429, "{}", r2.body);
    assert_eq!(r2.code(), Some("budget_exceeded"));
    assert_eq!(s.introspect(&cred).await["active"], true);

    let b = s.request(&agent, &task, "ci-cache", &["read"], None).await;
    assert_eq!(b.status, 201, "{}", b.body);
    let s = s.crash_and_restart().await;
    let c = s.request(&agent, &task, "ci-cache", &["read"], None).await;
    assert_eq!(c.status, 429, "{}", c.body);
    assert_eq!(c.body["request"]["decision"]["code"], "budget_exceeded");
    assert_eq!(
        c.body["request"]["decision"]["reasons"],
        json!(["task budget max_grants (2) reached"])
    );
    let h = s
        .get(Some(&agent), &format!("/v1/tasks/{task}/history"))
        .await;
    assert_eq!(h.body["budgets"]["task"]["max_grants"], 2, "{}", h.body);
    assert_eq!(h.body["history"]["usage"]["grants"], 2, "{}", h.body);
    assert_eq!(h.body["history"]["usage"]["renewals"], 1, "{}", h.body);
    let ev = s.audit("kind=request.decided&outcome=deny").await;
    assert!(!ev.is_empty(), "the budget denial is audited");
}

#[tokio::test]
async fn a_breach_configured_to_end_the_task_revokes_every_credential() {
    let s = TestServer::start_with(budgets(
        "\n[budgets.task]\ngrants_per_minute = 2\nend_task_on_breach = true\n",
    ))
    .await;
    let agent = s.agent("budget-2").await;
    let task = s.open_task(&agent, "sandbox", 1800).await;
    let mut creds = Vec::new();
    for _ in 0..2 {
        let g = s.request(&agent, &task, "ci-cache", &["read"], None).await;
        assert_eq!(g.status, 201, "{}", g.body);
        creds.push(g.body["credential"]["value"].as_str().unwrap().to_owned());
    }
    let third = s.request(&agent, &task, "ci-cache", &["read"], None).await;
    assert_eq!(third.status, 429, "{}", third.body);
    let t = s.get(Some(&agent), &format!("/v1/tasks/{task}")).await;
    assert_eq!(t.body["state"], "cancelled", "{}", t.body);
    for c in &creds {
        assert_eq!(s.introspect(c).await["active"], false);
    }
    assert_eq!(s.audit("kind=task.ended_by_denial").await.len(), 1);
}

/// Two replicas on one PostgreSQL database, granting in one task at the same instant, never
/// pass the live-lease or grant budgets: the store checks them inside each commit.
#[tokio::test]
async fn two_replicas_granting_at_once_never_pass_the_budget() {
    if !service_available("postgres", PG_ADDR) {
        return;
    }
    let db = TempPgDatabase::create("budgets").await;
    let (dir, path) = config(&db);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("\n[budgets.task]\nmax_grants = 6\n\n[budgets.workload]\nmax_live_leases = 4\n");
    std::fs::write(&path, text).unwrap();
    let (a, b) = (Replica::spawn(&path), Replica::spawn(&path));
    let c = Arc::new(Client {
        http: reqwest::Client::new(),
    });
    let agent = agent(&c, &a.base).await;
    let task = c.open_task(&a.base, &agent, "budgets", "sandbox").await;
    let mut calls = Vec::new();
    for i in 0..16 {
        let base = if i % 2 == 0 {
            a.base.clone()
        } else {
            b.base.clone()
        };
        let (c, agent, task) = (c.clone(), agent.clone(), task.clone());
        calls.push(tokio::spawn(async move {
            c.post(
                &base,
                &format!("/v1/tasks/{task}/requests"),
                Some(&agent),
                json!({"resource": "ci-cache", "actions": ["read"], "justification": "load"}),
            )
            .await
        }));
    }
    let mut granted = Vec::new();
    for call in calls {
        let (st, body) = call.await.unwrap();
        match st {
            201 => granted.push(body["lease"]["id"].as_str().unwrap().to_owned()),
            429 => assert_eq!(
                body["request"]["decision"]["code"], "budget_exceeded",
                "{body}"
            ),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(
        granted.len(),
        4,
        "exactly the live-lease budget: {granted:?}"
    );
    // Freeing live leases lets grants through until the task's max_grants (6).
    let mut total = granted.len();
    for lease in granted.iter().take(3) {
        let (st, r) = c
            .post(
                &b.base,
                &format!("/v1/leases/{lease}/revoke"),
                Some(&agent),
                json!({}),
            )
            .await;
        assert_eq!(st, 200, "{r}");
        let (st, body) = c
            .post(
                &a.base,
                &format!("/v1/tasks/{task}/requests"),
                Some(&agent),
                json!({"resource": "ci-cache", "actions": ["read"], "justification": "more"}),
            )
            .await;
        if total < 6 {
            assert_eq!(st, 201, "{body}");
            total += 1;
        } else {
            assert_eq!(st, 429, "{body}");
            assert!(
                body["request"]["decision"]["reasons"][0]
                    .as_str()
                    .unwrap()
                    .contains("max_grants (6)"),
                "{body}"
            );
        }
    }
    assert_eq!(total, 6);
    drop((a, b));
    db.drop_db().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// The taint never loses a race: a secret claimed on one replica while the same task asks for
/// an egress credential on the other, at the same instant, many times. Whatever the order, the
/// task never ends up tainted with a live egress credential it got without step-up (the grant
/// commits only if the history its decision read is still current; otherwise it is decided
/// again).
#[tokio::test]
async fn taint_and_egress_racing_on_two_replicas_never_leave_a_live_egress_credential() {
    if !service_available("postgres", PG_ADDR) {
        return;
    }
    let db = TempPgDatabase::create("taintrace").await;
    let (dir, path) = config(&db);
    let (a, b) = (Replica::spawn(&path), Replica::spawn(&path));
    let c = Arc::new(Client {
        http: reqwest::Client::new(),
    });
    let agent = agent(&c, &a.base).await;
    let (st, sam) = c
        .post(
            &a.base,
            "/v1/dev/tokens",
            None,
            json!({"kind": "human", "subject": "sam", "groups": ["security"], "ttl_secs": 3600}),
        )
        .await;
    assert_eq!(st, 200, "{sam}");
    let sam = sam["token"].as_str().unwrap().to_owned();
    for round in 0..12 {
        let task = c.open_task(&a.base, &agent, "race", "sandbox").await;
        let reqs = format!("/v1/tasks/{task}/requests");
        let (st, v) = c
            .post(
                &a.base,
                &reqs,
                Some(&agent),
                json!({"resource": "sandbox-vault", "actions": ["read"], "justification": "key"}),
            )
            .await;
        assert_eq!(st, 202, "{v}");
        let rid = v["request"]["id"].as_str().unwrap().to_owned();
        let (st, ok) = c
            .post(
                &b.base,
                &format!("/v1/approvals/{rid}/approve"),
                Some(&sam),
                json!({"digest": v["request"]["digest"], "reason": "ok"}),
            )
            .await;
        assert_eq!(st, 200, "{ok}");
        let claim = {
            let (c, base, agent, path) = (
                c.clone(),
                a.base.clone(),
                agent.clone(),
                format!("{reqs}/{rid}/claim"),
            );
            tokio::spawn(async move { c.post(&base, &path, Some(&agent), json!({})).await })
        };
        let egress = {
            let (c, base, agent, reqs) = (c.clone(), b.base.clone(), agent.clone(), reqs.clone());
            tokio::spawn(async move {
                c.post(&base, &reqs, Some(&agent),
                    json!({"resource": "package-registry", "actions": ["write"], "justification": "publish"}))
                    .await
            })
        };
        let (cs, cb) = claim.await.unwrap();
        assert_eq!(cs, 201, "round {round}: {cb}");
        let (es, eb) = egress.await.unwrap();
        if es == 201 {
            let value = eb["credential"]["value"].as_str().unwrap();
            assert!(
                !c.active(&a.base, value).await,
                "round {round}: a live egress credential in a tainted task: {eb}"
            );
        } else {
            assert_eq!(es, 202, "round {round}: {eb}");
        }
    }
    drop((a, b));
    db.drop_db().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// `end_task_on_breach` holds for renewal budgets too (found by the outside attack).
#[tokio::test]
async fn a_renewal_breach_ends_the_task_when_configured() {
    let s = TestServer::start_with(budgets(
        "\n[budgets.task]\nmax_renewals = 1\nend_task_on_breach = true\n",
    ))
    .await;
    let agent = s.agent("budget-3").await;
    let task = s.open_task(&agent, "sandbox", 1800).await;
    let g = s.request(&agent, &task, "ci-cache", &["read"], None).await;
    assert_eq!(g.status, 201, "{}", g.body);
    let path = format!(
        "/v1/leases/{}/renew",
        g.body["lease"]["id"].as_str().unwrap()
    );
    assert_eq!(s.post(Some(&agent), &path, json!({})).await.status, 200);
    let r = s.post(Some(&agent), &path, json!({})).await;
    assert_eq!(r.code(), Some("budget_exceeded"), "{}", r.body);
    let t = s.get(Some(&agent), &format!("/v1/tasks/{task}")).await;
    assert_eq!(t.body["state"], "cancelled", "{}", t.body);
}
