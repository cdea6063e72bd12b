//! The console's operator side and its session authority (issue 15, items 2, 3, 5): operators'
//! pages (lists with filters, revoke, cancel, the kill switch) for admins only; a sign-in older
//! than `[console] authority_max_age` must sign in again before a vote or an operator action
//! counts (OIDC and development sign-in); the vote form only for those who may vote; admin API
//! routes that check the admin before the body; console errors with the console's headers;
//! rate-limited callback failures; the sign-out page and the provider's sign-out link.

use latch_testkit::oidc;
use latch_testkit::{TestOptions, TestServer};

use crate::console::{CACHE_STEP_UP, Console, field, page, pending_write};

/// A sandbox task of `agent` holding one live `ci-cache` credential: (task, lease).
async fn task_with_lease(s: &TestServer, agent: &str) -> (String, String) {
    let task = s.open_task(agent, "sandbox", 3600).await;
    let g = s
        .request(agent, &task, "ci-cache", &["read"], Some(300))
        .await;
    assert_eq!(g.status, 201, "{}", g.body);
    (task, g.body["lease"]["id"].as_str().unwrap().into())
}

async fn post_form(b: &reqwest::Client, url: &str, form: &[(&str, &str)]) -> (u16, String, String) {
    let r = b.post(url).form(form).send().await.unwrap();
    let status = r.status().as_u16();
    let loc = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, loc, r.text().await.unwrap())
}

#[tokio::test]
async fn operators_list_revoke_cancel_and_freeze_from_the_console() {
    let Some(c) = Console::start().await else {
        return;
    };
    let agent = c.s.agent("ops-c1").await;
    let (task, lease) = task_with_lease(&c.s, &agent).await;
    let (task2, lease2) = task_with_lease(&c.s, &agent).await;

    // Not an operator: no links, and a 403 page.
    let bob = c.signed_in("bob").await;
    let (_, html) = page(&bob, &c.url("/console/")).await;
    assert!(!html.contains("/console/operators") && !html.contains("Kill switch"));
    for p in ["/console/operators", "/console/kill-switch"] {
        let r = bob.get(c.url(p)).send().await.unwrap();
        assert_eq!(r.status(), 403, "{p}");
        assert_eq!(r.headers()["x-latch-error"], "not_admin");
    }
    let bob_csrf = field(&html, "csrf");
    let (status, _, _) = post_form(
        &bob,
        &c.url(&format!("/console/operators/leases/{lease}/revoke")),
        &[("csrf", &bob_csrf), ("reason", "not mine to revoke")],
    )
    .await;
    assert_eq!(status, 403);

    // An operator: links, the front page's freezes, the lists with filters.
    let carol = c.signed_in("carol").await; // latch-admins
    let (_, html) = page(&carol, &c.url("/console/")).await;
    assert!(html.contains("href=\"/console/operators\"") && html.contains("No freeze is active"));
    let csrf = field(&html, "csrf");
    let (status, html) = page(&carol, &c.url("/console/operators")).await;
    assert_eq!(status, 200);
    for id in [&task, &task2, &lease, &lease2] {
        assert!(html.contains(id.as_str()), "{id} not listed");
    }
    let (_, html) = page(
        &carol,
        &c.url("/console/operators?repository=acme%2Fbilling"),
    )
    .await;
    assert!(!html.contains(&lease) && html.contains("No live lease matches"));
    let (_, html) = page(
        &carol,
        &c.url("/console/operators?resource=ci-cache&environment=sandbox&repository=acme%2Fpayments-api"),
    )
    .await;
    assert!(html.contains(&lease));

    // Revoke: a reason is required; without the token the form is a forgery.
    let revoke = c.url(&format!("/console/operators/leases/{lease}/revoke"));
    let (status, _, _) = post_form(&carol, &revoke, &[("reason", "leaked")]).await;
    assert_eq!(status, 403);
    let (status, _, body) = post_form(&carol, &revoke, &[("csrf", &csrf), ("reason", " ")]).await;
    assert_eq!(status, 400, "{body}");
    let (status, loc, _) = post_form(
        &carol,
        &revoke,
        &[("csrf", &csrf), ("reason", "credential pasted in a ticket")],
    )
    .await;
    assert_eq!((status, loc.as_str()), (303, "/console/operators"));
    let (_, html) = page(&carol, &c.url("/console/operators")).await;
    assert!(
        !html.contains(&lease),
        "the revoked lease is no longer live"
    );
    let acted = c.s.audit("kind=operator.acted").await;
    assert_eq!(acted.len(), 1, "{acted:?}");
    assert_eq!(acted[0]["actor"], "carol");
    assert_eq!(acted[0]["detail"]["action"], "revoke_lease");
    assert_eq!(
        acted[0]["detail"]["reason"],
        "credential pasted in a ticket"
    );

    // Cancel a task.
    let (status, loc, _) = post_form(
        &carol,
        &c.url(&format!("/console/operators/tasks/{task}/cancel")),
        &[("csrf", &csrf), ("reason", "runaway agent")],
    )
    .await;
    assert_eq!((status, loc.as_str()), (303, "/console/operators"));
    let r = c.s.get(Some(&agent), &format!("/v1/tasks/{task}")).await;
    assert_eq!(r.body["state"], "cancelled", "{}", r.body);

    // The kill switch: engage on the resource (its live lease is revoked), shown on the front
    // page; grants there are refused until it is lifted.
    let (status, _, body) = post_form(
        &carol,
        &c.url("/console/kill-switch"),
        &[
            ("csrf", &csrf),
            ("kind", "resource"),
            ("value", "ci-cache"),
            ("reason", ""),
        ],
    )
    .await;
    assert_eq!(status, 400, "a reason is required: {body}");
    let (status, _, body) = post_form(
        &carol,
        &c.url("/console/kill-switch"),
        &[
            ("csrf", &csrf),
            ("kind", "resource"),
            ("value", "ci-cache"),
            ("reason", "incident 42"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("1 live lease(s) revoked"), "{body}");
    let (_, html) = page(&carol, &c.url("/console/")).await;
    assert!(
        html.contains("resource:ci-cache") && html.contains("incident 42"),
        "{html}"
    );
    let t3 = c.s.open_task(&agent, "sandbox", 3600).await;
    let g =
        c.s.request(&agent, &t3, "ci-cache", &["read"], Some(300))
            .await;
    assert_eq!(g.status, 423, "{}", g.body);
    let (_, html) = page(&carol, &c.url("/console/kill-switch")).await;
    let frz = html
        .split("/console/kill-switch/")
        .nth(1)
        .and_then(|t| t.split('/').next())
        .unwrap()
        .to_owned();
    let (status, loc, _) = post_form(
        &carol,
        &c.url(&format!("/console/kill-switch/{frz}/lift")),
        &[("csrf", &csrf), ("reason", "incident 42 closed")],
    )
    .await;
    assert_eq!((status, loc.as_str()), (303, "/console/kill-switch"));
    let g =
        c.s.request(&agent, &t3, "ci-cache", &["read"], Some(300))
            .await;
    assert_eq!(g.status, 201, "{}", g.body);
    let ev = c.s.audit("kind=freeze.").await;
    assert!(
        ev.iter()
            .any(|e| e["kind"] == "freeze.engaged" && e["actor"] == "carol")
    );
    assert!(
        ev.iter()
            .any(|e| e["kind"] == "freeze.lifted" && e["detail"]["reason"] == "incident 42 closed")
    );
    c.stop().await;
}

#[tokio::test]
async fn a_stale_sign_in_must_sign_in_again_before_its_vote_counts() {
    let Some(c) = Console::start().await else {
        return;
    };
    let (_agent, _task, rid, digest) = pending_write(&c.s, "refs/heads/main", "ops-c2").await;
    let bob = c.signed_in("bob").await;
    let path = format!("/console/requests/{rid}");
    let (_, html) = page(&bob, &c.url(&path)).await;
    let csrf = field(&html, "csrf");
    // Past `authority_max_age` (default 10 min): the page stays readable, the vote is not
    // counted, and the browser is sent through sign-in back to this page.
    c.s.clock.advance(11 * 60);
    let (status, _) = page(&bob, &c.url(&path)).await;
    assert_eq!(status, 200);
    let vote = [
        ("csrf", csrf.as_str()),
        ("digest", digest.as_str()),
        ("verdict", "approve"),
        ("reason", "looks right"),
    ];
    // A page with a link, not a redirect: a POST redirected on to the provider would be
    // blocked by the console's `form-action 'self'` and the click would do nothing.
    let (status, loc, body) = post_form(&bob, &c.url(&path), &vote).await;
    assert_eq!((status, loc.as_str()), (403, ""));
    let loc = format!("/console/login?next=%2Fconsole%2Frequests%2F{rid}");
    assert!(body.contains(&format!("href=\"{loc}\"")), "{body}");
    assert!(body.contains("Nothing was recorded"), "{body}");
    assert!(c.s.broker().approvals(&rid).await.unwrap().is_empty());
    // Sign-in again: the provider's session lives, so no form; the groups come from the new ID
    // token; the answer leads back to the request.
    let callback = oidc::sign_in(&bob, &c.url(&loc), "bob", &c.url("/console/callback")).await;
    let r = bob.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains(&format!("url={path}")));
    let (_, html) = page(&bob, &c.url(&path)).await;
    let csrf = field(&html, "csrf");
    let vote = [
        ("csrf", csrf.as_str()),
        ("digest", digest.as_str()),
        ("verdict", "approve"),
        ("reason", "looks right"),
    ];
    let (status, loc, _) = post_form(&bob, &c.url(&path), &vote).await;
    assert_eq!((status, loc.as_str()), (303, path.as_str()));
    assert_eq!(c.s.broker().approvals(&rid).await.unwrap().len(), 1);

    // An operator's action on a stale session is not taken either.
    let agent = c.s.agent("ops-c3").await;
    let (_, lease) = task_with_lease(&c.s, &agent).await;
    let carol = c.signed_in("carol").await;
    let (_, html) = page(&carol, &c.url("/console/operators")).await;
    let csrf = field(&html, "csrf");
    c.s.clock.advance(11 * 60);
    let (status, loc, body) = post_form(
        &carol,
        &c.url(&format!("/console/operators/leases/{lease}/revoke")),
        &[("csrf", &csrf), ("reason", "stale")],
    )
    .await;
    assert_eq!((status, loc.as_str()), (403, ""));
    assert!(
        body.contains("href=\"/console/login?next=%2Fconsole%2Foperators\""),
        "{body}"
    );
    assert!(c.s.audit("kind=operator.acted").await.is_empty());
    c.stop().await;
}

#[tokio::test]
async fn a_stale_development_sign_in_signs_in_again_and_returns() {
    let s = TestServer::start_with(TestOptions {
        extra_config: "\n[console]\nenabled = true\nauthority_max_age = \"2m\"\n".into(),
        extra_policies: vec![("30-console-test.cedar".into(), CACHE_STEP_UP.into())],
        ..Default::default()
    })
    .await;
    let (_agent, _task, rid, digest) = pending_write(&s, "refs/heads/main", "ops-d1").await;
    let b = oidc::browser();
    let dev_sign_in = async |next: &str| {
        let html = b
            .get(format!("{}{next}", s.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let login = field(&html, "login");
        let token = s.human("bob", &["prod-approvers"]).await;
        let r = b
            .post(format!("{}/console/login/dev", s.base))
            .form(&[("login", login.as_str()), ("token", token.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        r.headers()["location"].to_str().unwrap().to_owned()
    };
    assert_eq!(dev_sign_in("/console/login").await, "/console/");
    let path = format!("/console/requests/{rid}");
    let (_, html) = page(&b, &format!("{}{path}", s.base)).await;
    let csrf = field(&html, "csrf");
    s.clock.advance(3 * 60);
    let vote = [
        ("csrf", csrf.as_str()),
        ("digest", digest.as_str()),
        ("verdict", "approve"),
        ("reason", "ok"),
    ];
    let (status, _, body) = post_form(&b, &format!("{}{path}", s.base), &vote).await;
    assert_eq!(status, 403);
    let loc = format!("/console/login?next=%2Fconsole%2Frequests%2F{rid}");
    assert!(body.contains(&format!("href=\"{loc}\"")), "{body}");
    assert!(s.broker().approvals(&rid).await.unwrap().is_empty());
    // The development form, and back to the request.
    assert_eq!(dev_sign_in(&loc).await, path);
    let (_, html) = page(&b, &format!("{}{path}", s.base)).await;
    let csrf = field(&html, "csrf");
    let vote = [
        ("csrf", csrf.as_str()),
        ("digest", digest.as_str()),
        ("verdict", "approve"),
        ("reason", "ok"),
    ];
    let (status, loc, _) = post_form(&b, &format!("{}{path}", s.base), &vote).await;
    assert_eq!((status, loc.as_str()), (303, path.as_str()));
    assert_eq!(s.broker().approvals(&rid).await.unwrap().len(), 1);
    // A return path off the console is ignored.
    let html = b
        .get(format!(
            "{}/console/login?next=https://evil.example/",
            s.base
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!html.contains("evil.example"));
    s.stop().await;
}

#[tokio::test]
async fn the_vote_form_is_shown_only_to_who_may_vote() {
    let Some(c) = Console::start().await else {
        return;
    };
    let (_agent, _task, rid, _) = pending_write(&c.s, "refs/heads/main", "ops-c4").await;
    let path = c.url(&format!("/console/requests/{rid}"));
    let bob = c.signed_in("bob").await;
    let (_, html) = page(&bob, &path).await;
    assert!(html.contains("name=\"verdict\""), "bob may vote");
    // alice is the human the agent acts for; carol (an admin) reads it but is no approver.
    let alice = c.signed_in("alice").await;
    let (status, html) = page(&alice, &path).await;
    assert_eq!(status, 200);
    assert!(!html.contains("name=\"verdict\""));
    assert!(
        html.contains("you are the human this agent acts for"),
        "{html}"
    );
    let carol = c.signed_in("carol").await;
    let (_, html) = page(&carol, &path).await;
    assert!(!html.contains("name=\"verdict\""));
    assert!(html.contains("needs prod-approvers"), "{html}");
    c.stop().await;
}

#[tokio::test]
async fn admin_routes_check_the_admin_before_the_body() {
    let s = TestServer::start().await;
    let bob = s.human("bob", &["prod-approvers"]).await;
    let id = "00000000000000000000000000000000";
    for path in [
        format!("/v1/admin/leases/lease_{id}/revoke"),
        format!("/v1/admin/tasks/task_{id}/cancel"),
        "/v1/admin/freezes".to_owned(),
        format!("/v1/admin/freezes/frz_{id}/lift"),
    ] {
        for (ctype, body) in [
            ("application/json", "{not json"),
            ("application/json", "{\"reason\": 5, \"extra\": true}"),
            ("text/plain", "reason"),
        ] {
            let r = s
                .http
                .post(format!("{}{path}", s.base))
                .bearer_auth(&bob)
                .header("content-type", ctype)
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 403, "{path} {ctype} {body}");
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["error"]["code"], "not_admin", "{path}: {v}");
        }
    }
    for path in ["/v1/admin/tasks?limit=many", "/v1/admin/leases?limit=-1"] {
        let r = s.get(Some(&bob), path).await;
        assert_eq!((r.status, r.code()), (403, Some("not_admin")), "{path}");
    }
    // An admin still gets the body's errors.
    let ops = s.human("olga", &["latch-admins"]).await;
    let r = s
        .http
        .post(format!("{}/v1/admin/freezes", s.base))
        .bearer_auth(&ops)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = s.get(Some(&ops), "/v1/admin/tasks?limit=many").await;
    assert_eq!(r.status, 400);
    s.stop().await;
}

#[tokio::test]
async fn console_errors_carry_the_consoles_security_headers_and_bad_callbacks_are_limited() {
    let s = TestServer::start_with(TestOptions {
        extra_config: "\n[console]\nenabled = true\n".into(),
        ..Default::default()
    })
    .await;
    let b = oidc::browser();
    for (method, path, status) in [
        ("GET", "/console/nope", 404),
        ("GET", "/console/requests/x/y", 404),
        ("DELETE", "/console/", 405),
        ("POST", "/console/static/console.css", 405),
    ] {
        let r = b
            .request(method.parse().unwrap(), format!("{}{path}", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{method} {path}");
        let h = r.headers();
        assert!(
            h["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'"),
            "{path}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["cache-control"], "no-store");
    }
    let r = b
        .get(format!("{}/console/nope", s.base))
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );

    // A flood of bad callbacks: refused at the limit, and a bounded number of audit rows.
    let mut limited = 0;
    for i in 0..80 {
        let r = b
            .get(format!("{}/console/callback?code=c{i}&state=s{i}", s.base))
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            limited += 1;
        } else {
            assert_eq!(r.status(), 400);
        }
    }
    assert!(limited >= 40, "{limited} of 80 refused");
    // After the window (so this test's own audit reads are not limited).
    s.clock.advance(120);
    let _ = s.broker().flush_auth_failures(true).await;
    let failed = s.audit("kind=console.sign_in_failed").await;
    assert_eq!(
        failed.len(),
        1,
        "the first is written at once; the rest are counted"
    );
    let summaries = s.audit("kind=auth.failed").await;
    assert!(summaries.len() <= 2, "{summaries:?}");
    assert!(
        summaries
            .iter()
            .any(|e| e["outcome"] == "repeated" && e["detail"]["count"].as_u64() >= Some(30)),
        "{summaries:?}"
    );
    s.stop().await;
}

#[tokio::test]
async fn sign_out_says_the_providers_session_is_unchanged_and_links_to_its_sign_out() {
    let Some(c) = Console::start().await else {
        return;
    };
    let bob = c.signed_in("bob").await;
    let (_, html) = page(&bob, &c.url("/console/")).await;
    let csrf = field(&html, "csrf");
    let (status, _, html) = post_form(&bob, &c.url("/console/logout"), &[("csrf", &csrf)]).await;
    assert_eq!(status, 200);
    assert!(html.contains("is unchanged"), "{html}");
    let end = format!(
        "{}/session/end?client_id=latch-console&amp;post_logout_redirect_uri=",
        c.op.issuer
    );
    assert!(html.contains(&end), "{html}");
    let link = html
        .split("href=\"")
        .find(|p| p.starts_with(&c.op.issuer))
        .and_then(|p| p.split('"').next())
        .unwrap()
        .replace("&amp;", "&");
    assert!(
        link.contains("post_logout_redirect_uri=http%3A%2F%2F127.0.0.1"),
        "{link}"
    );
    // The provider accepts the link (the client and its post-logout URI are registered).
    let r = bob.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // Where the provider sends the browser back.
    let (status, html) = page(&bob, &c.url("/console/logout")).await;
    assert_eq!(status, 200);
    assert!(html.contains("Signed out"));
    c.stop().await;
}
