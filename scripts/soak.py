#!/usr/bin/env python3
"""Constant-load soak (issue 19 item 4): a fixed number of live leases for a long time, and the
database's size sampled every minute.

Workers each keep LIVE / WORKERS tasks open, every one with one granted lease: a worker opens a
task, is granted `read` on `ci-cache` in it, and completes its oldest task (which revokes that
task's lease), at RATE tasks per second in all. So the broker always holds LIVE live leases
while tasks, requests, leases and audit records churn through it. An audit sink (a webhook
served here that discards what it is sent) lets audit retention prune what it delivered.

Prints one JSON line per sample (minute, seconds, file bytes, pages in use, live leases known to
the driver, tasks completed, errors, records the sink received) and a summary at the end.

DB is the SQLite file, or a postgres:// URL (sized with pg_database_size, through psql).

Usage: soak.py BASE_URL DB [--minutes 60] [--rate 100] [--live 200] [--workers 8] [--pid N]
       soak.py --sink PORT    (only the discarding webhook, for the broker's configuration)
"""

import argparse
import collections
import http.client
import http.server
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.parse

SINK_LINES = [0]


class Discard(http.server.BaseHTTPRequestHandler):
    """Accepts every POST (an audit sink page), counts its lines, keeps nothing."""

    def do_POST(self):  # noqa: N802 (http.server's naming)
        n = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(n)
        SINK_LINES[0] += body.count(b"\n")
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_):
        pass


def serve_sink(port):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), Discard)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


class Client:
    def __init__(self, base):
        u = urllib.parse.urlparse(base)
        self.host, self.port = u.hostname, u.port
        self.conn = None

    def call(self, method, path, body=None, token=None):
        for attempt in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                headers = {"content-type": "application/json"}
                if token:
                    headers["authorization"] = "Bearer " + token
                self.conn.request(method, path, json.dumps(body or {}), headers)
                r = self.conn.getresponse()
                data = r.read()
                return r.status, (json.loads(data) if data else None)
            except (http.client.HTTPException, OSError):
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.completed = 0
        self.errors = 0
        self.live = 0
        self.last_error = ""

    def add(self, completed=0, errors=0, live=0, error=""):
        with self.lock:
            self.completed += completed
            self.errors += errors
            self.live += live
            if error:
                self.last_error = error


def worker(base, n, per_worker, interval, stop, stats):
    c = Client(base)
    token, minted = None, 0.0
    open_tasks = collections.deque()
    next_at = time.monotonic()
    while not stop.is_set():
        try:
            if token is None or time.monotonic() - minted > 1200:
                st, b = c.call("POST", "/v1/dev/tokens", {
                    "kind": "workload", "repository": "acme/payments-api",
                    "git_ref": "refs/heads/main", "run_id": f"soak-{os.getpid()}-{n}",
                    "ttl_secs": 3600})
                assert st == 200, (st, b)
                token, minted = b["token"], time.monotonic()
            st, b = c.call("POST", "/v1/tasks", {"purpose": "soak", "environment": "sandbox",
                                                 "ttl_secs": 120}, token)
            assert st == 201, ("open task", st, b)
            task = b["id"]
            st, b = c.call("POST", f"/v1/tasks/{task}/requests",
                           {"resource": "ci-cache", "actions": ["read"]}, token)
            assert st == 201, ("grant", st, b)
            open_tasks.append(task)
            stats.add(live=1)
            if len(open_tasks) > per_worker:
                old = open_tasks.popleft()
                st, b = c.call("POST", f"/v1/tasks/{old}/complete", {}, token)
                assert st == 200, ("complete", st, b)
                stats.add(completed=1, live=-1)
        except (AssertionError, OSError, http.client.HTTPException, ValueError) as e:
            stats.add(errors=1, error=str(e)[:300])
            time.sleep(1)
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_at = time.monotonic()  # behind: do not burst to catch up


def rss_kib(pid):
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def sample_postgres(url):
    """The database's size (heap, TOAST, indexes, free space map) and row counts, by psql."""
    q = ("SELECT pg_database_size(current_database()), (SELECT count(*) FROM tasks), "
         "(SELECT count(*) FROM leases), (SELECT count(*) FROM requests), "
         "(SELECT count(*) FROM audit_log)")
    out = subprocess.run(["psql", "-qAt", "-F", " ", "-d", url, "-c", q], check=True,
                         capture_output=True, text=True).stdout.split()
    size, tasks, leases, requests, audit = (int(x) for x in out)
    return {"file_bytes": size, "wal_bytes": 0, "in_use_bytes": size,
            "rows": {"tasks": tasks, "leases": leases, "requests": requests,
                     "audit_events": audit}}


def sample(db_path):
    if db_path.startswith("postgres://"):
        return sample_postgres(db_path)
    size = os.path.getsize(db_path)
    wal = db_path + "-wal"
    wal_size = os.path.getsize(wal) if os.path.exists(wal) else 0
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        pages, free, page_size = (con.execute(q).fetchone()[0] for q in (
            "PRAGMA page_count", "PRAGMA freelist_count", "PRAGMA page_size"))
        counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("tasks", "leases", "requests", "audit_events")}
    finally:
        con.close()
    return {"file_bytes": size, "wal_bytes": wal_size, "in_use_bytes": (pages - free) * page_size,
            "rows": counts}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base", nargs="?")
    ap.add_argument("db", nargs="?")
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--rate", type=float, default=100)
    ap.add_argument("--live", type=int, default=200)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--sink", type=int, help="serve only the discarding webhook on this port")
    ap.add_argument("--sink-port", type=int, default=0)
    ap.add_argument("--pid", type=int, help="the broker's process id, to sample its RSS")
    a = ap.parse_args()
    if a.sink:
        serve_sink(a.sink)
        while True:
            time.sleep(3600)
    if a.sink_port:
        serve_sink(a.sink_port)
    stop, stats = threading.Event(), Stats()
    per_worker = a.live // a.workers
    threads = [threading.Thread(target=worker, daemon=True,
                                args=(a.base, n, per_worker, a.workers / a.rate, stop, stats))
               for n in range(a.workers)]
    for t in threads:
        t.start()
    start = time.monotonic()
    samples = []
    minute = 0
    while True:
        minute += 1
        until = start + 60 * min(minute, a.minutes)
        time.sleep(max(0.0, until - time.monotonic()))
        s = sample(a.db)
        s.update(minute=min(minute, a.minutes), seconds=round(time.monotonic() - start),
                 live_leases=stats.live, tasks_completed=stats.completed, errors=stats.errors,
                 sink_lines=SINK_LINES[0], rss_kib=rss_kib(a.pid),
                 last_error=stats.last_error)
        samples.append(s)
        print(json.dumps(s), flush=True)
        if minute >= a.minutes:
            break
    stop.set()
    ten = next((s for s in samples if s["minute"] >= 10), samples[0])
    end = samples[-1]
    summary = {
        "summary": True, "minutes": a.minutes, "rate": a.rate, "live": a.live,
        "tasks_completed": stats.completed, "errors": stats.errors,
        "file_bytes_at_10_min": ten["file_bytes"], "file_bytes_at_end": end["file_bytes"],
        "in_use_bytes_at_10_min": ten["in_use_bytes"], "in_use_bytes_at_end": end["in_use_bytes"],
        "rss_kib_at_10_min": ten["rss_kib"], "rss_kib_at_end": end["rss_kib"],
        "flat": end["file_bytes"] <= ten["file_bytes"],
    }
    print(json.dumps(summary), flush=True)
    sys.exit(0 if summary["flat"] and stats.errors == 0 else 1)


if __name__ == "__main__":
    main()
