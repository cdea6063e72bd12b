//! Scan throughput on a generated CI/agent log (MB/s), with a few planted secrets.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unimplemented,
    clippy::too_many_lines,
    reason = "test code: a failed step fails the test, and a scenario reads best in one piece"
)]
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use latch_scan::Scanner;

fn corpus(bytes: usize) -> Vec<u8> {
    let lines = [
        "2026-11-29T16:00:00.123Z INFO  agent step=plan tokens=1834 model=large latency_ms=812\n",
        "2026-11-29T16:00:00.456Z DEBUG http GET https://api.internal/v1/orders?id=9f1c2e status=200 bytes=5123\n",
        "  sha256:9b74c9897bac770ffc029102a200c5de1a9c5b1f0e6a1bd4bd1c3f5ae0d4b6d2 layer pulled\n",
        "tool_call {\"name\":\"sql\",\"args\":{\"query\":\"select * from orders limit 10\"}} id=0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b\n",
        "  at org.example.Service.handle(Service.java:42) cache key=dGhpcyBpcyBub3QgYSBzZWNyZXQgYnV0IGEgYmxvYg==\n",
        "user: please fix the failing test in crates/foo/src/lib.rs; assistant: running cargo test -p foo\n",
    ];
    let mut out = Vec::with_capacity(bytes + 200);
    let mut i = 0usize;
    while out.len() < bytes {
        out.extend_from_slice(lines[i % lines.len()].as_bytes());
        if i % 50_000 == 7 {
            out.extend_from_slice(b"export AWS_ACCESS_KEY_ID=AKIAQYLPMN5HHHFPZAM2\n");
        }
        i += 1;
    }
    out
}

fn bench(c: &mut Criterion) {
    let scanner = Scanner::new();
    let data = corpus(16 << 20);
    let mut g = c.benchmark_group("scan");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("ci_log_16MiB", |b| b.iter(|| scanner.scan(&data)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
