//! What `latch bench` prints: one line per level while it runs, the table, the per-replica
//! lines and the summary.

use hdrhistogram::Histogram;

use super::{LevelResult, ReplicaResult};

/// Per-replica figures of a level (none for a single server).
pub(super) fn replica_results(
    servers: &[String],
    per: &[(Histogram<u64>, u64, u64)],
    secs: f64,
) -> Vec<ReplicaResult> {
    if servers.len() < 2 {
        return Vec::new();
    }
    let q = |h: &Histogram<u64>, p: f64| {
        if h.is_empty() {
            0.0
        } else {
            h.value_at_quantile(p) as f64 / 1000.0
        }
    };
    servers
        .iter()
        .zip(per)
        .map(|(server, (h, ok, errors))| ReplicaResult {
            server: server.clone(),
            requests: *ok,
            errors: *errors,
            rate_per_sec: *ok as f64 / secs,
            p50_ms: q(h, 0.50),
            p99_ms: q(h, 0.99),
        })
        .collect()
}

pub(super) fn one_line(r: &LevelResult) -> String {
    format!(
        "{} c={}: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
        r.mode, r.concurrency, r.rate_per_sec, r.p50_ms, r.p99_ms, r.errors
    )
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map(|x| format!("{x:.prec$}"))
        .unwrap_or_else(|| "-".into())
}

pub(super) fn print_table(rs: &[LevelResult]) {
    println!(
        "{:<13} {:>5} {:>9} {:>6} {:>10} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>9}",
        "mode",
        "conc",
        "requests",
        "errors",
        "rate/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "drv cpu",
        "srv cpu",
        "srv µs/op"
    );
    for r in rs {
        println!(
            "{:<13} {:>5} {:>9} {:>6} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>7} {:>9}",
            r.mode,
            r.concurrency,
            r.requests,
            r.errors,
            r.rate_per_sec,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.max_ms,
            opt(r.driver_cpu, 2),
            opt(r.server_cpu, 2),
            opt(r.server_cpu_us_per_call, 0)
        );
    }
    for r in rs {
        for p in &r.replicas {
            println!(
                "  {} c={} replica {}: {} requests, {} errors, {:.0}/s, p50 {:.2} ms, p99 {:.2} ms",
                r.mode,
                r.concurrency,
                p.server,
                p.requests,
                p.errors,
                p.rate_per_sec,
                p.p50_ms,
                p.p99_ms
            );
        }
    }
    for r in rs {
        if let Some(e) = &r.first_error {
            println!("first error ({} c={}): {}", r.mode, r.concurrency, e);
        }
    }
}

pub(super) fn summary(rs: &[LevelResult]) -> String {
    let best = |m: &str| {
        rs.iter()
            .filter(|r| r.mode == m)
            .max_by(|a, b| a.rate_per_sec.total_cmp(&b.rate_per_sec))
    };
    let at32 = rs.iter().find(|r| r.mode == "grant" && r.concurrency == 32);
    let mut s = String::from("summary:");
    if let Some(g) = best("grant") {
        s.push_str(&format!(
            " grants best {:.0}/s (c={}, p99 {:.1} ms)",
            g.rate_per_sec, g.concurrency, g.p99_ms
        ));
    }
    if let Some(g) = at32 {
        s.push_str(&format!(
            "; at c=32 {:.0}/s p99 {:.1} ms",
            g.rate_per_sec, g.p99_ms
        ));
    }
    if let Some(i) = best("introspect") {
        s.push_str(&format!(
            "; introspections best {:.0}/s (c={}, p99 {:.1} ms)",
            i.rate_per_sec, i.concurrency, i.p99_ms
        ));
    }
    if let (Some(i), Some(e)) = (best("introspect"), best("empty_handler")) {
        s.push_str(&format!(
            "; empty handler best {:.0}/s (introspection at {:.0} % of it)",
            e.rate_per_sec,
            100.0 * i.rate_per_sec / e.rate_per_sec.max(f64::MIN_POSITIVE)
        ));
    }
    let errors: u64 = rs.iter().map(|r| r.errors).sum();
    s.push_str(&format!("; {errors} errors"));
    s
}
