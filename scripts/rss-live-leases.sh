#!/usr/bin/env bash
# Resident memory of a broker holding N live leases (issue 19 item 4), on the embedded SQLite.
#   1. a broker on a fresh data directory makes real grants (`latch bench`, 1 s), and stops;
#   2. sqlite3 copies one of those leases N times (fresh ids, credential HMACs and handles,
#      expiring in a day) over TASKS copies of its task (default N: one task per lease, as
#      agents use tasks, and the most task reads at start-up; memory hardly depends on it, since
#      each lease's slot holds its task id), so the database holds N active leases, plus the
#      few the grants of step 1 left (and TASKS tasks plus theirs);
#   3. the broker starts on it, loads its live-lease index (every active lease), and its VmRSS
#      and VmHWM are read from /proc once /healthz answers and the index is loaded.
# Prints one line: live_leases, tasks, rss_kib, peak_kib, rss_bytes_per_lease (the whole RSS,
# the ≈ 43 MB of an idle broker included, over the live leases), startup_s, db_bytes.
# Usage: [TASKS=T] scripts/rss-live-leases.sh [path/to/latch] [N]
#        (defaults: target/release/latch, 1000000, T = N)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=$(realpath "${1:-$repo/target/release/latch}"); n=${2:-1000000}; tasks=${TASKS:-$n}; port=${PORT:-18971}
work=$(mktemp -d); cp -r "$repo/examples/." "$work/"
sed -i "s/^listen = .*/listen = \"127.0.0.1:$port\"/; s#^data_dir = .*#data_dir = \"$work/data\"#; s/^watch = true/watch = false/" "$work/latch.toml"
up() { for _ in $(seq 600); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && return; sleep 0.5; done; echo "no broker" >&2; exit 1; }
LATCH_LOG=warn "$bin" serve --config "$work/latch.toml" > "$work/serve1.log" 2>&1 & pid=$!
up; "$bin" bench --server "http://127.0.0.1:$port" --concurrency 4 --duration 1s --warmup 0s >/dev/null 2>&1
kill "$pid"; wait "$pid" 2>/dev/null || true
db="$work/data/latch.db"; now=$(date +%s); until=$((now + 86400))
sqlite3 "$db" >/dev/null <<SQL
PRAGMA journal_mode = WAL;
UPDATE tasks SET expires_at = $until, body = json_set(body, '\$.expires_at_unix_secs', $until);
CREATE TEMP TABLE one AS SELECT * FROM leases WHERE state = 'active' LIMIT 1;
-- Materialised first: a CTE's randomblob() may be evaluated once per reference.
CREATE TEMP TABLE fresh_tasks AS WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < $tasks - 1)
SELECT i, 'task_' || lower(hex(randomblob(16))) AS id FROM k;
INSERT INTO tasks (id, owner_id, state, created_at, expires_at, version, body)
SELECT f.id, t.owner_id, t.state, t.created_at, t.expires_at, t.version, json_set(t.body, '\$.id', f.id)
FROM fresh_tasks f, tasks t WHERE t.id = (SELECT task_id FROM one);
CREATE TEMP TABLE fresh AS WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < $n - 1)
SELECT i, 'lease_' || lower(hex(randomblob(16))) AS id, lower(hex(randomblob(32))) AS hmac FROM k;
INSERT INTO leases (id, task_id, request_id, state, issued_at, expires_at, next_revoke_at, credential_hmac, version, body)
SELECT f.id, ft.id, o.request_id, 'active', $now, $until, NULL, f.hmac, 1,
       json_set(o.body, '\$.id', f.id, '\$.task_id', ft.id, '\$.credential_hmac', f.hmac, '\$.revocation_handle', f.id,
                '\$.issued_at_unix_secs', $now, '\$.expires_at_unix_secs', $until, '\$.max_expires_at_unix_secs', $until)
FROM fresh f JOIN fresh_tasks ft ON ft.i = f.i % $tasks, one o;
SQL
live=$(sqlite3 "$db" "SELECT count(*) FROM leases WHERE state = 'active'")
start=$(date +%s.%N)
LATCH_LOG=warn "$bin" serve --config "$work/latch.toml" > "$work/serve2.log" 2>&1 & pid=$!
up; ready=$(date +%s.%N); sleep 5
rss=$(awk '/VmRSS/{print $2}' "/proc/$pid/status"); hwm=$(awk '/VmHWM/{print $2}' "/proc/$pid/status")
kill "$pid"; wait "$pid" 2>/dev/null || true
echo "RSS live_leases=$live tasks=$(sqlite3 "$db" "SELECT count(*) FROM tasks") rss_kib=$rss peak_kib=$hwm rss_bytes_per_lease=$(( rss * 1024 / live )) startup_s=$(echo "$ready - $start" | bc) db_bytes=$(stat -c %s "$db")"
rm -rf "$work"
