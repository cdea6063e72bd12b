//! Continuous enforcement: policies reload without a restart; an invalid set is refused and the
//! old one stays; live leases are re-evaluated and those no longer allowed are revoked.

use latch_testkit::{TestOptions, TestServer};

const FORBID_STAGING: &str = r#"
@id("freeze-staging")
@reason("staging is frozen")
forbid (principal, action, resource) when { resource.environment == "staging" };
"#;

#[tokio::test]
async fn reload_re_evaluates_live_leases_and_revokes_what_is_no_longer_allowed() {
    let s = TestServer::start().await;
    let agent = s.agent("1").await;
    let t = s.open_task(&agent, "sandbox", 3600).await;
    let staging = s.request(&agent, &t, "staging-db", &["read"], None).await;
    let cache = s.request(&agent, &t, "ci-cache", &["read"], None).await;
    let st = staging.body["credential"]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let ct = cache.body["credential"]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = s.broker().policy().fingerprint().to_owned();

    std::fs::write(s.dir.join("policies/30-freeze.cedar"), FORBID_STAGING).unwrap();
    let config = latch_server::Config::load(&s.config_path()).unwrap();
    let report = latch_server::startup::reload_now(&config, s.broker(), "test")
        .await
        .expect("valid set");
    assert_ne!(report.fingerprint, before);
    assert_eq!(
        report.leases_revoked,
        vec![staging.body["lease"]["id"].as_str().unwrap().to_owned()]
    );
    assert_eq!(
        s.introspect(&st).await["active"],
        false,
        "no longer allowed: revoked"
    );
    assert_eq!(
        s.introspect(&ct).await["active"],
        true,
        "still allowed: untouched"
    );
    let d = s.request(&agent, &t, "staging-db", &["read"], None).await;
    assert_eq!(d.status, 403);
    assert_eq!(
        d.body["request"]["decision"]["reasons"][0],
        "staging is frozen"
    );
    let ev = s.audit("kind=policy.").await;
    assert!(ev.iter().any(|e| e["kind"] == "policy.reloaded"));
    let ev = s.audit("kind=credential.policy_revoked").await;
    assert_eq!(ev.len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn an_invalid_policy_set_is_refused_and_the_old_one_stays() {
    let s = TestServer::start().await;
    let agent = s.agent("2").await;
    let t = s.open_task(&agent, "sandbox", 3600).await;
    let before = s.broker().policy().fingerprint().to_owned();
    // A syntax error on line 3, and separately a type error against the schema.
    std::fs::write(
        s.dir.join("policies/40-broken.cedar"),
        "// broken\n\npermit (principal, action, resource) when { principal.nope == };\n",
    )
    .unwrap();
    let config = latch_server::Config::load(&s.config_path()).unwrap();
    let err = latch_server::startup::reload_now(&config, s.broker(), "test")
        .await
        .unwrap_err();
    assert!(
        err.contains("40-broken.cedar:3:"),
        "names file, line and column: {err}"
    );
    assert_eq!(s.broker().policy().fingerprint(), before);
    std::fs::write(
        s.dir.join("policies/40-broken.cedar"),
        "permit (principal, action, resource) when {\n  resource.colour == \"red\"\n};\n",
    )
    .unwrap();
    let err = latch_server::startup::reload_now(&config, s.broker(), "test")
        .await
        .unwrap_err();
    assert!(
        err.contains("40-broken.cedar:2:"),
        "validation error position: {err}"
    );
    assert_eq!(s.broker().policy().fingerprint(), before);
    // The old policies still decide.
    assert_eq!(
        s.request(&agent, &t, "ci-cache", &["read"], None)
            .await
            .status,
        201
    );
    let ev = s.audit("kind=policy.reload_refused").await;
    assert_eq!(ev.len(), 2);
    s.stop().await;
}

#[tokio::test]
async fn the_watcher_reloads_on_file_change() {
    let s = TestServer::start_with(TestOptions {
        policy_watch: true,
        ..Default::default()
    })
    .await;
    let before = s.broker().policy().fingerprint().to_owned();
    std::fs::write(s.dir.join("policies/30-freeze.cedar"), FORBID_STAGING).unwrap();
    // The watcher polls every 100 ms; wait for the swap (bounded), not for a fixed time.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while s.broker().policy().fingerprint() == before {
        if std::time::Instant::now() >= deadline {
            panic!(
                "policy watcher did not reload; policy audit: {:?}",
                s.audit("kind=policy.").await
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        s.broker()
            .policy()
            .policy_ids()
            .iter()
            .any(|p| p == "freeze-staging")
    );
    s.stop().await;
}

#[tokio::test]
async fn an_invalid_policy_stops_the_server_at_start_with_its_position() {
    let dir = std::env::temp_dir().join(format!("latch-bad-{}", uuid::Uuid::new_v4().simple()));
    let path = latch_server::examples::write_example(&dir, "127.0.0.1:0").unwrap();
    std::fs::write(
        dir.join("policies/99-bad.cedar"),
        "permit (principal, action, resource)\n  when { true }\n  oops;\n",
    )
    .unwrap();
    let config = latch_server::Config::load(&path).unwrap();
    let err = latch_server::start(config, Default::default())
        .await
        .err()
        .expect("refused");
    assert!(err.0.contains("99-bad.cedar:3:"), "{}", err.0);
    let _ = std::fs::remove_dir_all(dir);
}
