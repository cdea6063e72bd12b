//! Operators (issue 15, item 5): humans in `[admin] groups` list every open task and live
//! lease, revoke a lease, cancel a task (each with a required reason, audited), and engage a
//! kill switch that revokes a scope's live credentials and freezes its grants until lifted.

use latch_testkit::TestServer;
use serde_json::{Value, json};

/// A sandbox task of `agent` holding one `ci-cache` credential: (task, lease, credential).
async fn task_with_lease(s: &TestServer, agent: &str) -> (String, String, String) {
    let task = s.open_task(agent, "sandbox", 3600).await;
    let g = s
        .request(agent, &task, "ci-cache", &["read"], Some(300))
        .await;
    assert_eq!(g.status, 201, "{}", g.body);
    (
        task,
        g.body["lease"]["id"].as_str().unwrap().into(),
        g.body["credential"]["value"].as_str().unwrap().into(),
    )
}

async fn other_repo_agent(s: &TestServer, run: &str) -> String {
    s.dev_token(
        json!({"kind": "workload", "repository": "acme/billing", "git_ref": "refs/heads/main",
        "actor": "carol", "run_id": run, "ttl_secs": 3600}),
    )
    .await
}

fn ids(v: &Value, path: &[&str]) -> Vec<String> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let mut x = i;
            for p in path {
                x = &x[*p];
            }
            x.as_str().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test]
async fn operators_list_revoke_and_cancel_any_workloads_task() {
    let s = TestServer::start().await;
    let a = s.agent("op1").await;
    let b = other_repo_agent(&s, "op2").await;
    let ops = s.human("olga", &["latch-admins"]).await;
    let bob = s.human("bob", &["prod-approvers"]).await;
    let (ta, la, ca) = task_with_lease(&s, &a).await;
    let (tb, lb, cb) = task_with_lease(&s, &b).await;
    // Who may: operators only.
    let r = s.get(Some(&bob), "/v1/admin/tasks").await;
    assert_eq!((r.status, r.code()), (403, Some("not_admin")), "{}", r.body);
    let r = s.get(Some(&a), "/v1/admin/leases").await;
    assert_eq!((r.status, r.code()), (403, Some("wrong_principal_kind")));
    // Before this change an admin acting on an agent's task got `wrong_principal_kind`; the
    // agent routes still answer so, the admin routes act.
    let r = s.get(Some(&ops), "/v1/admin/tasks").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let all = ids(&r.body, &["id"]);
    assert!(all.contains(&ta) && all.contains(&tb), "{all:?}");
    let principal_a = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == ta.as_str())
        .unwrap()["owner"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Filters.
    let q = |query: &str| {
        let ops = ops.clone();
        let s = &s;
        let query = query.to_owned();
        async move { s.get(Some(&ops), &format!("/v1/admin/{query}")).await.body }
    };
    let enc = |v: &str| {
        v.replace('#', "%23")
            .replace('/', "%2F")
            .replace(':', "%3A")
    };
    assert_eq!(
        ids(
            &q(&format!("tasks?workload={}", enc(&principal_a))).await,
            &["id"]
        ),
        vec![ta.clone()]
    );
    assert_eq!(
        ids(&q("tasks?repository=ACME%2Fbilling").await, &["id"]),
        vec![tb.clone()]
    );
    assert!(ids(&q("tasks?environment=production").await, &["id"]).is_empty());
    assert_eq!(ids(&q("tasks?resource=ci-cache").await, &["id"]).len(), 2);
    assert!(ids(&q("tasks?resource=staging-db").await, &["id"]).is_empty());
    let p1 = q("tasks?limit=1").await;
    assert_eq!(ids(&p1, &["id"]), vec![ta.clone()]);
    let next = p1["next"].as_str().unwrap().to_owned();
    let p2 = q(&format!("tasks?limit=1&after={next}")).await;
    assert_eq!(ids(&p2, &["id"]), vec![tb.clone()]);
    let leases = q("leases").await;
    assert_eq!(ids(&leases, &["lease", "id"]), vec![la.clone(), lb.clone()]);
    assert_eq!(leases["items"][1]["repository"], "acme/billing");
    assert_eq!(
        ids(
            &q("leases?repository=acme%2Fpayments-api").await,
            &["lease", "id"]
        ),
        vec![la.clone()]
    );
    // Revoke: a reason is required, and checked like all free text.
    for bad in ["", "  ", "line\nbreak", "\u{202E}"] {
        let r = s
            .post(
                Some(&ops),
                &format!("/v1/admin/leases/{la}/revoke"),
                json!({"reason": bad}),
            )
            .await;
        assert_eq!(
            (r.status, r.code()),
            (400, Some("invalid_request")),
            "{bad:?}"
        );
    }
    let r = s
        .post(
            Some(&ops),
            &format!("/v1/admin/leases/{la}/revoke"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = s
        .post(
            Some(&ops),
            &format!("/v1/admin/leases/{la}/revoke"),
            json!({"reason": "incident 42"}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["state"].as_str()),
        (200, Some("revoked")),
        "{}",
        r.body
    );
    assert_eq!(s.introspect(&ca).await["active"], false);
    assert_eq!(s.introspect(&cb).await["active"], true);
    let r = s
        .post(
            Some(&ops),
            &format!("/v1/admin/leases/{la}/revoke"),
            json!({"reason": "again"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, Some("lease_not_active")));
    // Cancel another workload's task.
    let r = s
        .post(
            Some(&ops),
            &format!("/v1/admin/tasks/{tb}/cancel"),
            json!({"reason": "runaway agent"}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["state"].as_str()),
        (200, Some("cancelled")),
        "{}",
        r.body
    );
    assert_eq!(s.introspect(&cb).await["active"], false);
    let r = s
        .post(
            Some(&ops),
            &format!("/v1/admin/tasks/{tb}/cancel"),
            json!({"reason": "again"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, Some("task_not_open")));
    assert!(!ids(&q("tasks").await, &["id"]).contains(&tb));
    // Audited with the operator and the reason, in the change's batch.
    for (task, action, reason) in [
        (&ta, "revoke_lease", "incident 42"),
        (&tb, "cancel_task", "runaway agent"),
    ] {
        let ev = s.audit(&format!("task_id={task}")).await;
        let acted = ev
            .iter()
            .find(|e| e["kind"] == "operator.acted")
            .unwrap_or_else(|| panic!("{ev:?}"));
        assert_eq!(acted["actor"], "olga");
        assert_eq!(acted["detail"]["action"], action);
        assert_eq!(acted["detail"]["reason"], reason);
    }
    s.stop().await;
}

#[tokio::test]
async fn the_kill_switch_revokes_a_scope_and_freezes_it_until_lifted() {
    let s = TestServer::start().await;
    let a = s.agent("ks1").await;
    let b = other_repo_agent(&s, "ks2").await;
    let ops = s.human("olga", &["latch-admins"]).await;
    let (ta, _la, ca) = task_with_lease(&s, &a).await;
    let (tb, _lb, cb) = task_with_lease(&s, &b).await;
    // A scope must name its value (unless `all`), and a resource scope a configured resource.
    for (body, status) in [
        (json!({"scope": {"kind": "repository"}, "reason": "x"}), 400),
        (
            json!({"scope": {"kind": "all", "value": "x"}, "reason": "x"}),
            400,
        ),
        (json!({"scope": {"kind": "all"}, "reason": ""}), 400),
        (
            json!({"scope": {"kind": "resource", "value": "nope"}, "reason": "x"}),
            422,
        ),
    ] {
        let r = s.post(Some(&ops), "/v1/admin/freezes", body.clone()).await;
        assert_eq!(r.status, status, "{body}: {}", r.body);
    }
    let bob = s.human("bob", &["prod-approvers"]).await;
    let r = s
        .post(
            Some(&bob),
            "/v1/admin/freezes",
            json!({"scope": {"kind": "all"}, "reason": "x"}),
        )
        .await;
    assert_eq!(r.code(), Some("not_admin"));
    // Freeze one repository: its live credentials stop, the other repository's do not.
    let r = s
        .post(
            Some(&ops),
            "/v1/admin/freezes",
            json!({"scope": {"kind": "repository", "value": "acme/payments-api"}, "reason": "leaked token"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["leases_revoked"], 1);
    let fid = r.body["freeze"]["id"].as_str().unwrap().to_owned();
    assert_eq!(s.introspect(&ca).await["active"], false);
    assert_eq!(s.introspect(&cb).await["active"], true);
    // New grants in scope are refused, audited; out of scope they go on.
    let g = s.request(&a, &ta, "ci-cache", &["read"], Some(300)).await;
    assert_eq!((g.status, g.code()), (423, Some("frozen")), "{}", g.body);
    let g = s.request(&b, &tb, "ci-cache", &["read"], Some(300)).await;
    assert_eq!(g.status, 201, "{}", g.body);
    let ev = s.audit(&format!("task_id={ta}")).await;
    let frozen = ev.iter().find(|e| e["kind"] == "access.frozen").unwrap();
    assert_eq!(frozen["detail"]["engaged_by"], "olga");
    assert_eq!(frozen["detail"]["freeze_reason"], "leaked token");
    let l = s.get(Some(&ops), "/v1/admin/freezes").await;
    assert_eq!(l.body.as_array().unwrap().len(), 1, "{}", l.body);
    // The freeze is stored: it holds after a restart.
    let s = s.crash_and_restart().await;
    let ops = s.human("olga", &["latch-admins"]).await;
    let g = s.request(&a, &ta, "ci-cache", &["read"], Some(300)).await;
    assert_eq!(g.code(), Some("frozen"), "{}", g.body);
    // Lifting restores policy's decision; lifting twice is a conflict.
    let r = s
        .post(
            Some(&ops),
            &format!("/v1/admin/freezes/{fid}/lift"),
            json!({"reason": "rotated"}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["state"].as_str()),
        (200, Some("lifted")),
        "{}",
        r.body
    );
    let r = s
        .post(
            Some(&ops),
            &format!("/v1/admin/freezes/{fid}/lift"),
            json!({"reason": "rotated"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, Some("freeze_not_active")));
    let g = s.request(&a, &ta, "ci-cache", &["read"], Some(300)).await;
    assert_eq!(g.status, 201, "{}", g.body);
    let renewal_lease = g.body["lease"]["id"].as_str().unwrap().to_owned();
    // `all`: everything stops, including a claim of an approved request and a renewal.
    let prod = s.open_task(&a, "production", 3600).await;
    let p = s
        .request(&a, &prod, "deploy-pipeline", &["deploy"], Some(600))
        .await;
    let rid = p.body["request"]["id"].as_str().unwrap().to_owned();
    let approver = s.human("bob", &["prod-approvers"]).await;
    let v = s
        .post(
            Some(&approver),
            &format!("/v1/approvals/{rid}/approve"),
            json!({"digest": p.body["request"]["digest"], "reason": "ok"}),
        )
        .await;
    assert_eq!(v.body["state"], "approved", "{}", v.body);
    let r = s
        .post(
            Some(&ops),
            "/v1/admin/freezes",
            json!({"scope": {"kind": "all"}, "reason": "stop everything"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(
        r.body["leases_revoked"].as_u64().unwrap() >= 2,
        "{}",
        r.body
    );
    let all_id = r.body["freeze"]["id"].as_str().unwrap().to_owned();
    let c = s
        .post(
            Some(&a),
            &format!("/v1/tasks/{prod}/requests/{rid}/claim"),
            json!({}),
        )
        .await;
    assert_eq!((c.status, c.code()), (423, Some("frozen")), "{}", c.body);
    let g = s.request(&b, &tb, "ci-cache", &["read"], Some(300)).await;
    assert_eq!(g.code(), Some("frozen"));
    let rn = s
        .post(
            Some(&a),
            &format!("/v1/leases/{renewal_lease}/renew"),
            json!({}),
        )
        .await;
    assert_eq!(
        rn.status, 409,
        "a revoked lease is not renewed: {}",
        rn.body
    );
    let r = s
        .post(
            Some(&ops),
            &format!("/v1/admin/freezes/{all_id}/lift"),
            json!({"reason": "all clear"}),
        )
        .await;
    assert_eq!(r.status, 200);
    let c = s
        .post(
            Some(&a),
            &format!("/v1/tasks/{prod}/requests/{rid}/claim"),
            json!({}),
        )
        .await;
    assert_eq!(
        c.status, 201,
        "policy decides again after the lift: {}",
        c.body
    );
    let ev = s.audit("kind=freeze.").await;
    let kinds: Vec<&str> = ev.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "freeze.engaged",
            "freeze.lifted",
            "freeze.engaged",
            "freeze.lifted"
        ]
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latch_admin_drives_operators_from_the_cli() {
    let s = TestServer::start().await;
    let a = s.agent("cli-op").await;
    let ops = s.human("olga", &["latch-admins"]).await;
    let (task, lease, _c) = task_with_lease(&s, &a).await;
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_latch"))
            .args(args)
            .env("LATCH_SERVER", &s.base)
            .env("LATCH_TOKEN", &ops)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = tokio::task::block_in_place(|| run(&["admin", "tasks"]));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&task), "{out}");
    let (code, out, _) = tokio::task::block_in_place(|| {
        run(&["admin", "leases", "--resource", "ci-cache", "--json"])
    });
    assert_eq!(code, Some(0));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["items"][0]["lease"]["id"], lease.as_str());
    let (code, _, err) =
        tokio::task::block_in_place(|| run(&["admin", "revoke", &lease, "--reason", ""]));
    assert_eq!(code, Some(1));
    assert!(err.contains("invalid_request (400)"), "{err}");
    let (code, out, err) =
        tokio::task::block_in_place(|| run(&["admin", "revoke", &lease, "--reason", "incident"]));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("revoked"), "{out}");
    let (code, out, err) = tokio::task::block_in_place(|| {
        run(&[
            "admin",
            "freeze",
            "--resource",
            "ci-cache",
            "--reason",
            "drill",
            "--json",
        ])
    });
    assert_eq!(code, Some(0), "{err}");
    let fid = serde_json::from_str::<Value>(&out).unwrap()["freeze"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, out, _) = tokio::task::block_in_place(|| run(&["admin", "freezes"]));
    assert_eq!(code, Some(0));
    assert!(
        out.contains(&fid) && out.contains("resource:ci-cache"),
        "{out}"
    );
    let (code, _, err) = tokio::task::block_in_place(|| run(&["admin", "freeze", "--reason", "x"]));
    assert_eq!(code, Some(2), "a scope is required: {err}");
    let (code, _, err) =
        tokio::task::block_in_place(|| run(&["admin", "unfreeze", &fid, "--reason", "drill over"]));
    assert_eq!(code, Some(0), "{err}");
    let (code, out, err) =
        tokio::task::block_in_place(|| run(&["admin", "cancel", &task, "--reason", "done"]));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("cancelled"), "{out}");
    s.stop().await;
}

/// Property (issue 15, item 5), through the broker: a freeze on a scope refuses exactly the
/// grants whose workload, repository or resource falls in it (`all`: every grant), and lifting
/// it restores policy's decision. Two workloads of two repositories ask for two resources;
/// policy allows all four asks, so every refusal is the freeze's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_refuses_exactly_its_scope_and_lifting_restores_policy() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let s = TestServer::start().await;
    let ops = s.human("olga", &["latch-admins"]).await;
    let a = s.agent("prop-a").await;
    let b = other_repo_agent(&s, "prop-b").await;
    let mut who = Vec::new();
    for (token, repo) in [(&a, "acme/payments-api"), (&b, "acme/billing")] {
        let task = s.open_task(token, "sandbox", 3600).await;
        let t = s.get(Some(token), &format!("/v1/tasks/{task}")).await.body;
        who.push((
            token.clone(),
            task,
            t["owner"]["id"].as_str().unwrap().to_owned(),
            repo,
        ));
    }
    let resources = ["ci-cache", "staging-db"];
    let ask = |i: usize, res: &'static str| {
        let (token, task, _, _) = who[i].clone();
        let s = &s;
        async move {
            s.request(&token, &task, res, &["read"], Some(60))
                .await
                .status
        }
    };
    // Policy's decision without a freeze: every ask is granted.
    for i in 0..2 {
        for r in resources {
            assert_eq!(ask(i, r).await, 201);
        }
    }
    let scopes = prop_oneof![
        Just(("all", None)),
        (0..2usize).prop_map(|i| ("workload", Some(i))),
        (0..2usize).prop_map(|i| ("repository", Some(i))),
        (0..2usize).prop_map(|i| ("resource", Some(i))),
    ];
    let mut runner = TestRunner::new(Config {
        cases: 12,
        failure_persistence: None,
        ..Config::default()
    });
    let handle = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| {
        runner
            .run(&scopes, |(kind, pick)| {
                handle.block_on(async {
                    let value = pick.map(|i| match kind {
                        "workload" => who[i].2.clone(),
                        "repository" => who[i].3.to_owned(),
                        _ => resources[i].to_owned(),
                    });
                    let mut scope = json!({"kind": kind});
                    if let Some(v) = &value {
                        scope["value"] = json!(v);
                    }
                    let f = s
                        .post(
                            Some(&ops),
                            "/v1/admin/freezes",
                            json!({"scope": scope, "reason": "property"}),
                        )
                        .await;
                    assert_eq!(f.status, 201, "{}", f.body);
                    for (i, (_, _, principal, repo)) in who.iter().enumerate() {
                        for r in resources {
                            let covered = match kind {
                                "all" => true,
                                "workload" => value.as_deref() == Some(principal.as_str()),
                                "repository" => value.as_deref() == Some(*repo),
                                _ => value.as_deref() == Some(r),
                            };
                            let got = ask(i, r).await;
                            let want = if covered { 423 } else { 201 };
                            assert_eq!(got, want, "{kind} {value:?}: workload {i} asking {r}");
                        }
                    }
                    let id = f.body["freeze"]["id"].as_str().unwrap();
                    let l = s
                        .post(
                            Some(&ops),
                            &format!("/v1/admin/freezes/{id}/lift"),
                            json!({"reason": "done"}),
                        )
                        .await;
                    assert_eq!(l.status, 200);
                    for i in 0..2 {
                        for r in resources {
                            assert_eq!(ask(i, r).await, 201, "lifted: policy decides again");
                        }
                    }
                });
                Ok(())
            })
            .unwrap();
    });
    s.stop().await;
}
