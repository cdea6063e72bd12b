//! The approval console against a real OpenID Provider: panva's `oidc-provider` (npm, started
//! by `latch_testkit::oidc` on a free loopback port) is the broker's human issuer. A browser-
//! like HTTP client (cookie jar, the provider's login form) signs in with the code flow + PKCE;
//! the tests check the session cookie's attributes, the security headers, CSRF refusals, the
//! escaping of hostile claim text, digest-bound votes, sign-out, and the audit trail. The last
//! test drives Debian's headless Chromium with Python's playwright end to end.
//!
//! `scripts/test.sh` installs Node.js, the pinned provider (`npm ci` in
//! `testdata/oidc-provider`), chromium and playwright; without them these tests skip loudly, and
//! fail with `CI=true`.

use latch_testkit::oidc::{self, CONSOLE_CLIENT_SECRET, OidcProvider};
use latch_testkit::{TestOptions, TestServer};
use serde_json::json;

/// The RFC 8707 resource whose access tokens the provider issues as JWTs for Latch.
pub(crate) const RESOURCE: &str = "urn:latch";

/// A step-up for writes to `ci-cache` (a sandbox resource, so any branch may ask), approved by
/// `prod-approvers`: lets a task from a hostile branch reach the pending list.
pub(crate) const CACHE_STEP_UP: &str = r#"
@id("console-test-cache-writes")
@step_up("prod-approvers")
@reason("writes to the ci cache need approval in this test")
forbid (principal, action == Latch::Action::"write", resource)
when { resource.sensitivity == "internal" && !resource.production }
unless { context.approval.groups.contains("prod-approvers") };
"#;

/// A broker on a fixed free port whose console signs in at `op`.
pub(crate) struct Console {
    pub(crate) s: TestServer,
    pub(crate) op: OidcProvider,
}

impl Console {
    pub(crate) async fn start() -> Option<Self> {
        Self::start_with("").await
    }

    /// [`Console::start`] with `console_extra` appended to its `[console]` section.
    pub(crate) async fn start_with(console_extra: &str) -> Option<Self> {
        if !oidc::provider_available() {
            return None;
        }
        let port = oidc::free_port();
        let base = format!("http://127.0.0.1:{port}");
        let op = OidcProvider::start(&[format!("{base}/console/callback")], RESOURCE);
        let secret_dir =
            std::env::temp_dir().join(format!("latch-console-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&secret_dir).unwrap();
        let secret_file = secret_dir.join("console-secret");
        std::fs::write(&secret_file, CONSOLE_CLIENT_SECRET).unwrap();
        let s = TestServer::start_with(TestOptions {
            replace: vec![(
                "listen = \"127.0.0.1:0\"".into(),
                format!("listen = \"127.0.0.1:{port}\""),
            )],
            extra_policies: vec![("30-console-test.cedar".into(), CACHE_STEP_UP.into())],
            extra_config: format!(
                "{}\n[console]\nenabled = true\nissuer = \"test-sso\"\nclient_id = \"latch-console\"\n\
                 client_secret_file = \"{}\"\nsession_ttl = \"1h\"\n{console_extra}\n",
                op.issuer_toml("test-sso", RESOURCE),
                secret_file.display()
            ),
            ..Default::default()
        })
        .await;
        assert_eq!(s.base, base);
        Some(Self { s, op })
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.s.base)
    }

    /// Signs `user` in through the provider; returns the browser and the callback's answer.
    pub(crate) async fn sign_in(&self, user: &str) -> (reqwest::Client, reqwest::Response) {
        let browser = oidc::browser();
        let callback = oidc::sign_in(
            &browser,
            &self.url("/console/login"),
            user,
            &self.url("/console/callback"),
        )
        .await;
        assert!(callback.contains("code="), "{callback}");
        let resp = browser.get(&callback).send().await.unwrap();
        (browser, resp)
    }

    pub(crate) async fn signed_in(&self, user: &str) -> reqwest::Client {
        let (browser, resp) = self.sign_in(user).await;
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
        browser
    }

    pub(crate) async fn stop(self) {
        self.s.stop().await;
        drop(self.op);
    }
}

pub(crate) async fn page(b: &reqwest::Client, url: &str) -> (u16, String) {
    let r = b.get(url).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The value of `name="…" value="…"` in a page.
pub(crate) fn field(html: &str, name: &str) -> String {
    let pat = format!("name=\"{name}\" value=\"");
    let i = html
        .find(&pat)
        .unwrap_or_else(|| panic!("no field {name} in {html}"))
        + pat.len();
    html[i..].split('"').next().unwrap().to_owned()
}

/// A sandbox task of a workload on `git_ref` (acting for alice) with a pending write to
/// `ci-cache`; returns (agent token, task, request id, digest).
pub(crate) async fn pending_write(
    s: &TestServer,
    git_ref: &str,
    run: &str,
) -> (String, String, String, String) {
    let agent = s
        .dev_token(
            json!({"kind": "workload", "repository": "acme/payments-api", "git_ref": git_ref,
            "actor": "alice", "run_id": run, "ttl_secs": 3600}),
        )
        .await;
    let task = s.open_task(&agent, "sandbox", 3600).await;
    let p = s
        .request(&agent, &task, "ci-cache", &["write"], Some(600))
        .await;
    assert_eq!(p.status, 202, "{}", p.body);
    let rid = p.body["request"]["id"].as_str().unwrap().to_owned();
    let digest = p.body["request"]["digest"].as_str().unwrap().to_owned();
    (agent, task, rid, digest)
}

#[tokio::test]
async fn sign_in_through_a_real_provider_opens_a_strict_server_side_session() {
    let Some(c) = Console::start().await else {
        return;
    };
    // Not signed in: to the sign-in, which sends the browser to the provider with PKCE S256,
    // state and nonce.
    let b = oidc::browser();
    let r = b.get(c.url("/console/")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/console/login");
    let r = b.get(c.url("/console/login")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let to = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(to.starts_with(&c.op.issuer), "{to}");
    for p in [
        "code_challenge_method=S256",
        "code_challenge=",
        "state=",
        "nonce=",
        "client_id=latch-console",
    ] {
        assert!(to.contains(p), "{p} missing from {to}");
    }
    let login_cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        login_cookie.starts_with("latch_console_login="),
        "{login_cookie}"
    );
    assert!(login_cookie.contains("HttpOnly") && login_cookie.contains("SameSite=Lax"));
    // With a provider configured, the development sign-in does not exist, dev issuer or not.
    let dev = b.get(c.url("/console/login/dev")).send().await.unwrap();
    assert_eq!(dev.status(), 404);

    let (browser, resp) = c.sign_in("bob").await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    let cookies: Vec<String> = h
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let session = cookies
        .iter()
        .find(|c| c.starts_with("latch_console="))
        .expect("session cookie");
    for attr in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/console",
        "Max-Age=3600",
    ] {
        assert!(session.contains(attr), "{attr} missing: {session}");
    }
    assert!(
        !session.contains("Secure"),
        "loopback http: a Secure cookie would be dropped by browsers"
    );
    let id = session["latch_console=".len()..].split(';').next().unwrap();
    assert!(id.len() >= 43, "a 256-bit session id");
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("latch_console_login=;")),
        "the login state is cleared"
    );
    assert_eq!(
        h["content-security-policy"],
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["cache-control"], "no-store");

    let (status, html) = page(&browser, &c.url("/console/")).await;
    assert_eq!(status, 200);
    assert!(html.contains("Signed in as <strong>bob</strong>"), "{html}");
    assert!(html.contains("prod-approvers"));
    assert!(!html.contains("<script"), "no script at all");
    assert!(!html.contains("style="), "no inline style");
    // The database holds only the HMAC of the session id.
    let stored = c.s.broker().console_session(id).await.unwrap().unwrap();
    assert_ne!(stored.id_hmac, id);
    assert_eq!(stored.human_id, "bob");
    assert_eq!(stored.groups, vec!["prod-approvers".to_owned()]);
    // Sign-in is audited, with no token.
    let ev = c.s.audit("kind=console.").await;
    let signed = ev
        .iter()
        .find(|e| e["kind"] == "console.signed_in")
        .expect("console.signed_in");
    assert_eq!(signed["actor"], "bob");
    assert_eq!(signed["detail"]["via"], "oidc");
    assert!(!signed.to_string().contains(id));
    c.stop().await;
}

#[tokio::test]
async fn a_replayed_or_forged_callback_is_refused_and_audited() {
    let Some(c) = Console::start().await else {
        return;
    };
    let browser = oidc::browser();
    let callback = oidc::sign_in(
        &browser,
        &c.url("/console/login"),
        "dave",
        &c.url("/console/callback"),
    )
    .await;
    // Another browser (no login cookie) cannot use the code.
    let other = oidc::browser();
    let r = other.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["x-latch-error"], "sign_in_failed");
    // A forged state is refused, and uses the login state up.
    let forged = callback.replace("state=", "state=x");
    let r = browser.get(&forged).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = browser.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 400, "the login cookie was cleared");
    // Audited, the first failure of the source in full and the rest in the per-source
    // summary (`auth.failed`), so a flood cannot grow the trail.
    let ev = c.s.audit("kind=console.sign_in_failed").await;
    assert!(!ev.is_empty(), "{ev:?}");
    assert!(ev.iter().all(|e| e["outcome"] == "sign_in_failed"));
    assert!(!serde_json::to_string(&ev).unwrap().contains("code="));
    c.stop().await;
}

/// Copies the pending request `rid` (and its task) into the broker's store as if its claims
/// held hostile text: the verifier refuses such claims today, but rows written before that
/// rule, or by another version, must still reach an approver's screen harmless. Returns the
/// copies' (task, request) ids.
async fn hostile_copy(s: &TestServer, task_id: &str, rid: &str, hostile: &str) -> (String, String) {
    let url = format!("sqlite://{}", s.dir.join("data/latch.db").display());
    let store = latch_store::open(&url).await.unwrap().store;
    let mut task = store.task(task_id).await.unwrap().unwrap();
    let mut req = store.request(rid).await.unwrap().unwrap();
    task.id = latch_core::model::new_id("task");
    task.branch = Some(hostile.to_owned());
    task.owner.claims.branch = Some(hostile.to_owned());
    task.repository = Some(format!("acme/pay\u{200b}ments{hostile}"));
    task.purpose = format!("deploy {hostile}");
    req.id = latch_core::model::new_id("req");
    req.task_id = task.id.clone();
    req.justification = format!("because {hostile}");
    let batch = latch_core::ports::WriteBatch::new()
        .write(latch_core::ports::Write::InsertTask(task.clone()))
        .write(latch_core::ports::Write::InsertRequest(req.clone()));
    store.apply(batch).await.unwrap();
    (task.id, req.id)
}

#[tokio::test]
async fn the_pending_page_shows_exactly_what_is_approved_with_hostile_text_escaped() {
    let Some(c) = Console::start().await else {
        return;
    };
    let (_agent, real_task, real_rid, _) = pending_write(&c.s, "refs/heads/main", "5101").await;
    let hostile = "evil\u{1b}[31m\r\nfake\u{202e}txt\u{200b}";
    let (task, rid) = hostile_copy(&c.s, &real_task, &real_rid, hostile).await;
    let digest =
        c.s.broker()
            .console_request(
                &latch_core::model::Human {
                    id: "bob".into(),
                    issuer: "x".into(),
                    groups: vec!["prod-approvers".into()],
                    groups_asserted_at_unix_secs: None,
                },
                &rid,
            )
            .await
            .unwrap()
            .digest;
    let bob = c.signed_in("bob").await;
    let (status, html) = page(&bob, &c.url("/console/")).await;
    assert_eq!(status, 200);
    assert!(html.contains(&rid), "{html}");
    for raw in ['\u{1b}', '\r', '\u{202e}', '\u{200b}'] {
        assert!(!html.contains(raw), "raw {raw:?} reached the page");
    }
    assert!(
        html.contains("evil\\u{001b}[31m\\u{000d}\\u{000a}fake\\u{202e}txt\\u{200b}"),
        "{html}"
    );
    assert!(html.contains("hidden characters shown"));
    assert!(
        html.contains("acme/pay\\u{200b}ments"),
        "the repository, escaped"
    );
    for shown in [
        "ci-cache",
        "sandbox",
        "internal",
        "write",
        "10m 00s",
        "console-test-cache-writes",
        "prod-approvers: 0 / 1",
        "alice",
        "acme/payments-api",
    ] {
        assert!(html.contains(shown), "{shown} not shown");
    }
    // alice (no groups, the agent's human) sees nothing to approve.
    let alice = c.signed_in("alice").await;
    let (_, html) = page(&alice, &c.url("/console/")).await;
    assert!(!html.contains(&rid));
    // The request page carries the digest it shows.
    let (status, html) = page(&bob, &c.url(&format!("/console/requests/{rid}"))).await;
    assert_eq!(status, 200);
    assert_eq!(field(&html, "digest"), digest);
    assert!(!html.contains('\u{202e}'));
    // An approver of a task's request reads its timeline.
    let (status, html) = page(&bob, &c.url(&format!("/console/tasks/{real_task}"))).await;
    assert_eq!(status, 200, "an approver of its request may read the task");
    assert!(html.contains("task.opened") && html.contains("request.decided"));
    // The task's own human and admins read the hostile task, escaped; others do not.
    let (status, html) = page(&alice, &c.url(&format!("/console/tasks/{task}"))).await;
    assert_eq!(status, 200);
    for raw in ['\u{1b}', '\r', '\u{202e}', '\u{200b}'] {
        assert!(!html.contains(raw), "raw {raw:?} reached the task page");
    }
    let carol = c.signed_in("carol").await; // latch-admins
    let (status, _) = page(&carol, &c.url(&format!("/console/tasks/{task}"))).await;
    assert_eq!(status, 200, "admins read every task");
    let mallory = c.signed_in("mallory").await; // no groups, not the task's human
    let (status, _) = page(&mallory, &c.url(&format!("/console/tasks/{task}"))).await;
    assert_eq!(status, 404, "no part in it: not found");
    c.stop().await;
}

#[tokio::test]
async fn forged_posts_are_refused_with_csrf_token_invalid() {
    let Some(c) = Console::start().await else {
        return;
    };
    let (_agent, _task, rid, digest) = pending_write(&c.s, "refs/heads/main", "5102").await;
    let bob = c.signed_in("bob").await;
    let (_, html) = page(&bob, &c.url(&format!("/console/requests/{rid}"))).await;
    let csrf = field(&html, "csrf");
    let path = c.url(&format!("/console/requests/{rid}"));
    for form in [
        vec![
            ("digest", digest.as_str()),
            ("verdict", "approve"),
            ("reason", "x"),
        ],
        vec![
            ("csrf", "0".repeat(64).as_str()),
            ("digest", digest.as_str()),
            ("verdict", "approve"),
            ("reason", "x"),
        ],
        vec![
            ("csrf", ""),
            ("digest", digest.as_str()),
            ("verdict", "approve"),
        ],
    ] {
        let r = bob.post(&path).form(&form).send().await.unwrap();
        assert_eq!(r.status(), 403);
        assert_eq!(r.headers()["x-latch-error"], "csrf_token_invalid");
        assert!(r.text().await.unwrap().contains("csrf_token_invalid"));
    }
    // Another human's token does not work in bob's session.
    let dave = c.signed_in("dave").await;
    let (_, dave_html) = page(&dave, &c.url(&format!("/console/requests/{rid}"))).await;
    let dave_csrf = field(&dave_html, "csrf");
    assert_ne!(dave_csrf, csrf);
    let r = bob
        .post(&path)
        .form(&[
            ("csrf", dave_csrf.as_str()),
            ("digest", &digest),
            ("verdict", "approve"),
            ("reason", "x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Without a session at all (a cross-site post arrives without the Strict cookie).
    let r = oidc::browser()
        .post(&path)
        .form(&[
            ("csrf", csrf.as_str()),
            ("digest", &digest),
            ("verdict", "approve"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Nothing was recorded.
    let still = c.s.broker().approvals(&rid).await.unwrap();
    assert!(still.is_empty());
    c.stop().await;
}

#[tokio::test]
async fn a_stale_digest_is_refused_and_a_vote_lands_only_on_what_was_shown() {
    let Some(c) = Console::start().await else {
        return;
    };
    let (agent, task, rid, digest) = pending_write(&c.s, "refs/heads/main", "5103").await;
    let bob = c.signed_in("bob").await;
    let (_, html) = page(&bob, &c.url(&format!("/console/requests/{rid}"))).await;
    let csrf = field(&html, "csrf");
    let path = c.url(&format!("/console/requests/{rid}"));
    let stale = "0".repeat(64);
    let r = bob
        .post(&path)
        .form(&[
            ("csrf", csrf.as_str()),
            ("digest", &stale),
            ("verdict", "approve"),
            ("reason", "ok"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(r.headers()["x-latch-error"], "approval_digest_mismatch");
    assert!(r.text().await.unwrap().contains("not what the page showed"));
    // The right digest approves; the agent's claim then succeeds.
    let r = bob
        .post(&path)
        .form(&[
            ("csrf", csrf.as_str()),
            ("digest", &digest),
            ("verdict", "approve"),
            ("reason", "looks right"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let (_, html) = page(&bob, &c.url(&format!("/console/requests/{rid}"))).await;
    assert!(html.contains("approved"), "{html}");
    assert!(html.contains("looks right"));
    let claim =
        c.s.post(
            Some(&agent),
            &format!("/v1/tasks/{task}/requests/{rid}/claim"),
            json!({}),
        )
        .await;
    assert_eq!(claim.status, 201, "{}", claim.body);
    assert!(claim.body["credential"]["value"].is_string());
    // A second vote on the decided request: a clear 409 page.
    let r = bob
        .post(&path)
        .form(&[
            ("csrf", csrf.as_str()),
            ("digest", &digest),
            ("verdict", "deny"),
            ("reason", "late"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("no longer pending"));
    // The credential is never rendered.
    let secret = claim.body["credential"]["value"].as_str().unwrap();
    let (_, task_html) = page(&bob, &c.url(&format!("/console/tasks/{task}"))).await;
    assert!(task_html.contains("credential.issued"));
    assert!(!task_html.contains(secret));
    c.stop().await;
}

#[tokio::test]
async fn sign_out_deletes_the_session() {
    let Some(c) = Console::start().await else {
        return;
    };
    let bob = c.signed_in("bob").await;
    let (_, html) = page(&bob, &c.url("/console/")).await;
    let csrf = field(&html, "csrf");
    // Without the token: refused, still signed in.
    let r = bob
        .post(c.url("/console/logout"))
        .form(&[("csrf", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = bob
        .post(c.url("/console/logout"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = bob.get(c.url("/console/")).send().await.unwrap();
    assert_eq!(r.status(), 303, "signed out");
    let ev = c.s.audit("kind=console.signed_out").await;
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["actor"], "bob");
    c.stop().await;
}

#[tokio::test]
async fn the_development_sign_in_takes_dev_human_tokens_only_when_enabled() {
    let s = TestServer::start_with(TestOptions {
        extra_config: "\n[console]\nenabled = true\n".into(),
        ..Default::default()
    })
    .await;
    let b = oidc::browser();
    let r = b
        .get(format!("{}/console/login", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "no provider: the development form");
    let html = r.text().await.unwrap();
    let login = field(&html, "login");
    let bob = s.human("bob", &["prod-approvers"]).await;
    // A workload token is refused.
    let agent = s.agent("5104").await;
    let r = b
        .post(format!("{}/console/login/dev", s.base))
        .form(&[("login", login.as_str()), ("token", agent.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // The form is single-use: start again, then sign in.
    let html = b
        .get(format!("{}/console/login/dev", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let login = field(&html, "login");
    let r = b
        .post(format!("{}/console/login/dev", s.base))
        .form(&[("login", login.as_str()), ("token", bob.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let r = b.get(format!("{}/console/", s.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("Signed in as <strong>bob</strong>")
    );
    let ev = s.audit("kind=console.signed_in").await;
    assert_eq!(ev[0]["detail"]["via"], "dev");
    s.stop().await;
}

/// The end-to-end test in a real browser: Debian's headless Chromium, driven by Python's
/// playwright (`testdata/console-e2e/e2e.py`), signs in through the provider as bob, finds
/// the pending request, approves it on its page; the agent's claim then succeeds. The pending
/// page's screenshot is written where `LATCH_CONSOLE_SCREENSHOT` says (the book's
/// `docs/src/images/console-pending.png` was made so), else to a temporary file.
#[tokio::test]
async fn a_human_approves_in_headless_chromium_and_the_claim_succeeds() {
    if !browser_available() {
        return;
    }
    let Some(c) = Console::start().await else {
        return;
    };
    let (agent, task, rid, _digest) = pending_write(&c.s, "refs/heads/main", "5105").await;
    let shot = std::env::var("LATCH_CONSOLE_SCREENSHOT").unwrap_or_else(|_| {
        std::env::temp_dir()
            .join(format!("latch-console-{rid}.png"))
            .display()
            .to_string()
    });
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/console-e2e/e2e.py");
    let out = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(&c.s.base)
        .arg(&rid)
        .arg("bob")
        .arg(&shot)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "e2e failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("approved"), "{stdout}");
    let claim =
        c.s.post(
            Some(&agent),
            &format!("/v1/tasks/{task}/requests/{rid}/claim"),
            json!({}),
        )
        .await;
    assert_eq!(claim.status, 201, "{}", claim.body);
    assert!(
        claim.body["credential"]["value"].is_string(),
        "{}",
        claim.body
    );
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);
    c.stop().await;
}

/// Chromium at `/usr/bin/chromium` and Python's playwright; missing: fails under `CI=true`,
/// else skips loudly.
fn browser_available() -> bool {
    let chromium = std::path::Path::new("/usr/bin/chromium").exists();
    let playwright = std::process::Command::new("python3")
        .args(["-c", "import playwright"])
        .output()
        .is_ok_and(|o| o.status.success());
    if chromium && playwright {
        return true;
    }
    let msg = "the console's browser test needs Debian's chromium (/usr/bin/chromium) and Python's playwright (scripts/test.sh installs both)";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}, and CI=true");
    }
    eprintln!("\n!!!!! SKIPPING: {msg} !!!!!\n");
    false
}

/// What `latch login` will rely on: the provider's public `latch-cli` client signs in with a
/// loopback redirect and PKCE (RFC 8252), and its access token for resource `urn:latch` (a JWT
/// with `groups`) is a human bearer token the broker accepts.
#[tokio::test]
async fn a_cli_access_token_from_the_provider_is_a_human_bearer_token() {
    use base64::Engine;
    let Some(c) = Console::start().await else {
        return;
    };
    let verifier = "a-pkce-verifier-of-enough-length-0123456789-abcdefghijklmnop";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()),
    );
    let redirect = "http://127.0.0.1:49152/callback";
    let auth = format!(
        "{}/auth?client_id=latch-cli&response_type=code&scope=openid%20groups%20offline_access\
         &redirect_uri={}&state=s1&code_challenge={challenge}&code_challenge_method=S256&resource={}",
        c.op.issuer, "http%3A%2F%2F127.0.0.1%3A49152%2Fcallback", "urn%3Alatch"
    );
    let b = oidc::browser();
    let back = oidc::sign_in(&b, &auth, "dave", redirect).await;
    let code = back
        .split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("code="))
        .unwrap()
        .to_owned();
    let tokens: serde_json::Value = b
        .post(format!("{}/token", c.op.issuer))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect),
            ("code_verifier", verifier),
            ("client_id", "latch-cli"),
            ("resource", RESOURCE),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    assert!(tokens["refresh_token"].is_string(), "{tokens}");
    let r = c.s.get(Some(access), "/v1/approvals/pending").await;
    assert_eq!(r.status, 200, "{}", r.body);
    c.stop().await;
}
