#!/usr/bin/env python3
"""Instructions per call by component: the exclusive cost of every function in a callgrind run,
minus the same in an idle run, grouped by where the function lives, divided by the calls.

Usage: callgrind-buckets.py RUN.cg.out IDLE.cg.out CALLS
(used by scripts/bench-instructions.sh). Prints a Markdown table.
"""
import collections
import re
import subprocess
import sys

BUCKETS = [
    ("crypto: aws-lc (SHA-2, HMAC, Ed25519 sign and verify)", r"aws-lc|aws_lc|/ring-"),
    ("SQLite engine", r"sqlite3\.c|libsqlite3"),
    ("sqlx", r"sqlx"),
    ("Cedar policy evaluation", r"cedar"),
    ("allocator (malloc, free, realloc)", r"malloc|arena\.c|__rdl_|alloc/src/alloc"),
    ("memcpy, memmove, memset, memcmp", r"memmove|memcpy|memset|memcmp|strlen"),
    ("JSON (serde_json)", r"serde_json"),
    ("logs and spans (tracing)", r"tracing"),
    ("HTTP (hyper, axum, tower, form decoding)", r"hyper|axum|tower|/http-|httparse|percent_encoding|form_urlencoded"),
    ("async runtime and threads (tokio, futures, flume, pthread)", r"tokio|futures|flume|pthread|nptl|parking_lot|crossbeam|event_listener"),
    ("hash maps (SipHash)", r"sip\.rs|hash/mod\.rs|BuildHasher"),
    ("UTF-8 checks, string formatting (core::str, fmt)", r"str/|fmt/|string\.rs|char/"),
    ("jsonwebtoken, base64", r"jsonwebtoken|base64"),
    ("metrics (prometheus)", r"prometheus|metrics"),
    ("Latch's own code", r"/crates/latch-"),
]


def exclusive(path):
    out = subprocess.run(["callgrind_annotate", "--threshold=100", "--auto=no", path],
                         capture_output=True, text=True, check=True).stdout
    costs = collections.Counter()
    listing = False
    for line in out.splitlines():
        if "file:function" in line:
            listing = True
            continue
        if not listing or line.startswith("---"):
            continue
        if not line.strip():
            if costs:
                break
            continue
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(.*)", line)
        if m:
            costs[m.group(2)] += int(m.group(1).replace(",", ""))
    return costs


def bucket(name):
    for label, pattern in BUCKETS:
        if re.search(pattern, name):
            return label
    return "other"


def main():
    run, idle, calls = exclusive(sys.argv[1]), exclusive(sys.argv[2]), int(sys.argv[3])
    by = collections.Counter()
    for name, cost in run.items():
        by[bucket(name)] += cost
    for name, cost in idle.items():
        by[bucket(name)] -= cost
    total = sum(by.values())
    print(f"| component | share | instructions per call |\n|---|---|---|")
    for label, cost in by.most_common():
        print(f"| {label} | {100 * cost / total:.1f} % | {cost / calls / 1000:,.0f}k |")
    print(f"| **total** | 100 % | **{total / calls / 1000:,.0f}k** |")


if __name__ == "__main__":
    main()
