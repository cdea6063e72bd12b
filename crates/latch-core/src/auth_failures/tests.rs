//! The windows, the limit, eviction and the row bound, on a hand-moved clock.

use super::*;
use proptest::prelude::*;

fn tracker(window_secs: i64, max_failures: u64, max_sources: usize) -> AuthFailures {
    AuthFailures::new(AuthFailureSettings {
        window_secs,
        max_failures,
        max_sources,
    })
}

#[test]
fn sources_are_addresses_and_ipv6_networks() {
    assert_eq!(source_key("203.0.113.7"), "203.0.113.7");
    assert_eq!(source_key("::ffff:203.0.113.7"), "203.0.113.7");
    assert_eq!(source_key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
    assert_eq!(
        source_key("2001:db8:1:2:bbbb::9"),
        source_key("2001:db8:1:2::1")
    );
    assert_ne!(source_key("2001:db8:1:3::1"), source_key("2001:db8:1:2::1"));
    assert_eq!(source_key(&"x".repeat(100)).len(), 64);
}

#[test]
fn a_flood_from_one_source_is_one_row_per_code_and_one_summary_per_window() {
    let t = tracker(60, u64::MAX, 10);
    let mut audited = 0;
    for i in 0..10_000 {
        let code = if i % 2 == 0 {
            ErrorCode::SignatureInvalid
        } else {
            ErrorCode::TokenMalformed
        };
        if let Recorded::AuditNow {
            window_start_unix_secs,
        } = t.record("10.0.0.1", code, 1_000 + i / 1_000)
        {
            assert_eq!(window_start_unix_secs, 1_000);
            audited += 1;
        }
    }
    assert_eq!(audited, 2, "the first of each code, at once");
    assert!(t.take_due(1_059, false).is_empty(), "the window is open");
    let due = t.take_due(1_060, false);
    assert_eq!(due.len(), 1);
    let s = &due[0];
    assert_eq!(s.count, 10_000);
    assert_eq!(s.recorded, 2);
    assert_eq!(s.codes["signature_invalid"], 5_000);
    assert_eq!(s.codes["token_malformed"], 5_000);
    assert_eq!(
        (s.window_start_unix_secs, s.window_end_unix_secs),
        (1_000, 1_060)
    );
    assert!(!s.evicted);
    let ev = s.event();
    assert_eq!(ev.kind, "auth.failed");
    assert_eq!(ev.outcome, "repeated");
    assert_eq!(ev.detail["count"], 10_000);
    assert_eq!(ev.detail["source_ip"], "10.0.0.1");
    assert!(t.take_due(2_000, true).is_empty(), "nothing twice");
    assert_eq!(t.tracked_sources(), 0);
}

#[test]
fn a_single_failure_is_one_row_and_no_summary() {
    let t = tracker(60, 30, 10);
    assert!(matches!(
        t.record("10.0.0.1", ErrorCode::TokenExpired, 5),
        Recorded::AuditNow { .. }
    ));
    assert!(t.take_due(100, false).is_empty());
    assert!(t.take_due(100, true).is_empty());
}

#[test]
fn failures_past_the_limit_are_refused_until_the_window_ends() {
    let t = tracker(60, 3, 10);
    for _ in 0..3 {
        assert_eq!(t.check("10.0.0.1", 100), None);
        t.record("10.0.0.1", ErrorCode::SignatureInvalid, 100);
    }
    assert_eq!(t.check("10.0.0.1", 100), Some(60));
    assert_eq!(t.check("10.0.0.1", 130), Some(30));
    assert_eq!(t.retry_after("10.0.0.1", 159), Some(1));
    assert_eq!(
        t.check("10.0.0.2", 130),
        None,
        "other sources are not limited"
    );
    assert_eq!(t.check("10.0.0.1", 160), None, "a new window");
    let due = t.take_due(160, false);
    assert_eq!(due.len(), 1);
    assert_eq!(
        (due[0].count, due[0].rate_limited),
        (3, 2),
        "retry_after does not count"
    );
    // The next failure opens a new window, audited at once again.
    assert_eq!(
        t.record("10.0.0.1", ErrorCode::SignatureInvalid, 161),
        Recorded::AuditNow {
            window_start_unix_secs: 161
        }
    );
}

#[test]
fn memory_is_bounded_and_evicted_windows_keep_their_counts() {
    let t = tracker(60, 100, 2);
    for (i, ip) in ["10.0.0.1", "10.0.0.2", "10.0.0.3"].iter().enumerate() {
        for _ in 0..5 {
            t.record(ip, ErrorCode::SignatureInvalid, 100 + i as i64);
        }
        assert!(t.tracked_sources() <= 2);
    }
    let due = t.take_due(103, false);
    assert_eq!(due.len(), 1, "the oldest window was evicted");
    assert_eq!(due[0].source, "10.0.0.1");
    assert_eq!(due[0].count, 5);
    assert!(due[0].evicted);
    assert_eq!(due[0].window_end_unix_secs, 102);
    // At shutdown every open window is summarised, marked closed early.
    let rest = t.take_due(110, true);
    assert_eq!(rest.len(), 2);
    assert!(
        rest.iter()
            .all(|s| s.evicted && s.window_end_unix_secs == 110)
    );
}

#[test]
fn summaries_beyond_the_cap_merge_and_requeue_keeps_them() {
    let t = tracker(1, 100, 2);
    for i in 0..6 {
        let ip = format!("10.0.0.{i}");
        t.record(&ip, ErrorCode::SignatureInvalid, 100);
        t.record(&ip, ErrorCode::SignatureInvalid, 100);
    }
    let due = t.take_due(200, false);
    assert_eq!(due.len(), 3, "two queued, the rest merged under `*`");
    assert_eq!(due.iter().map(|s| s.count).sum::<u64>(), 12);
    assert_eq!(due.last().map(|s| s.source.as_str()), Some("*"));
    t.requeue(due);
    let again = t.take_due(200, false);
    assert_eq!(again.iter().map(|s| s.count).sum::<u64>(), 12);
}

proptest! {
    /// Whatever the order of failures, sources and time: no failure or refusal is lost (the
    /// summaries plus the rows written on their own account for all of them), at most
    /// `max_sources` windows are held, a summary is written only for a window that also wrote
    /// a row at once, and without eviction a source writes at most (codes + 1) rows per window
    /// of time it was seen in.
    #[test]
    fn rows_are_bounded_and_counts_are_kept(
        ops in proptest::collection::vec((0usize..6, 0usize..3, 0i64..8), 1..400),
        flush_every in 1usize..50,
        max_sources in 3usize..7,
    ) {
        let codes = [ErrorCode::SignatureInvalid, ErrorCode::TokenExpired, ErrorCode::UnknownKid];
        let window = 10;
        let t = tracker(window, 5, max_sources);
        let start = 1_000;
        let mut now = start;
        let (mut failures, mut refused, mut immediate) = (0u64, 0u64, 0u64);
        let mut sources = std::collections::HashSet::new();
        let mut summaries = Vec::new();
        for (i, (src, code, dt)) in ops.into_iter().enumerate() {
            now += dt;
            let ip = format!("192.0.2.{src}");
            if t.check(&ip, now).is_some() {
                refused += 1;
            } else {
                failures += 1;
                sources.insert(ip.clone());
                if let Recorded::AuditNow { .. } = t.record(&ip, codes[code], now) {
                    immediate += 1;
                }
            }
            prop_assert!(t.tracked_sources() <= max_sources);
            if i % flush_every == 0 {
                summaries.extend(t.take_due(now, false));
            }
        }
        summaries.extend(t.take_due(now, true));
        let counted: u64 = summaries.iter().map(|s| s.count).sum();
        let recorded: u64 = summaries.iter().map(|s| s.recorded).sum();
        prop_assert_eq!(counted + (immediate - recorded), failures);
        prop_assert_eq!(summaries.iter().map(|s| s.rate_limited).sum::<u64>(), refused);
        for s in &summaries {
            prop_assert_eq!(s.codes.values().sum::<u64>(), s.count);
        }
        prop_assert!(summaries.len() as u64 <= immediate.max(1));
        if max_sources >= 6 {
            // A source's windows start at least `window` apart.
            let windows_per_source = (now - start) / window + 1;
            let bound = sources.len() as u64 * windows_per_source as u64 * (codes.len() as u64 + 1);
            prop_assert!(immediate + summaries.len() as u64 <= bound);
        }
    }
}
