#!/usr/bin/env bash
# Group commit on PostgreSQL, measured in one run on one machine (issue 19 item 3):
#   1. SQLite control: one broker on the embedded store, grants at C clients;
#   2. one PostgreSQL replica, grants at C clients;
#   3. two PostgreSQL replicas of one database, grants at C clients in all (C/2 each).
# For 2 and 3 it reads PostgreSQL's own counters: transactions committed in the database
# (pg_stat_database.xact_commit, read-only ones included) and WAL flushes of the cluster
# (pg_stat_wal.wal_sync), each divided by the grants made (leases inserted) in that step.
#
# Usage: scripts/bench-postgres.sh [path/to/latch]   (default target/release/latch)
# Env:   C=32 clients, DUR=10s measured, WARMUP=3s, PGHOST=127.0.0.1, PGUSER=postgres,
#        BASE_PORT=18911. Needs psql and a PostgreSQL that lets PGUSER create databases.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=$(realpath "${1:-$repo/target/release/latch}")
C=${C:-32}; DUR=${DUR:-10s}; WARMUP=${WARMUP:-3s}; BASE_PORT=${BASE_PORT:-18911}
export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres}
work=$(mktemp -d); db="latch_bench_$$"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    psql -qd postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# config NAME PORT [STORE_URL]: a copy of the example configuration on its own port.
config() {
    local dir="$work/$1"; mkdir -p "$dir"; cp -r "$repo/examples/." "$dir/"
    sed -i "s/^listen = .*/listen = \"127.0.0.1:$2\"/; s#^data_dir = .*#data_dir = \"$work/data-${4:-$1}\"#; s/^watch = true/watch = false/" "$dir/latch.toml"
    if [ -n "${3:-}" ]; then sed -i "s#^\[store\]#[store]\nurl = \"$3\"#" "$dir/latch.toml"; fi
    echo "$dir/latch.toml"
}
serve() { # serve CONFIG PORT -> pid on stdout
    LATCH_LOG=warn "$bin" serve --config "$1" > "$work/serve-$2.log" 2>&1 &
    local pid=$!
    for _ in $(seq 150); do curl -sf "http://127.0.0.1:$2/healthz" >/dev/null && { echo "$pid"; return; }; sleep 0.2; done
    echo "broker on :$2 did not start" >&2; tail -20 "$work/serve-$2.log" >&2; exit 1
}
pg() { psql -qAtd "$db" -c "$1"; }
# The statistics of idle backends reach pg_stat_* within 10 s (PostgreSQL 15 flushes them then).
settle() { sleep 11; }
stats() { pg "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()), (SELECT wal_sync FROM pg_stat_wal), (SELECT count(*) FROM leases)"; }
report() { # report LABEL BEFORE AFTER
    python3 - "$1" "$2" "$3" <<'PY'
import sys
label, a, b = sys.argv[1], [int(x) for x in sys.argv[2].split("|")], [int(x) for x in sys.argv[3].split("|")]
grants = b[2] - a[2]
print(f"PGSTAT {label}: grants={grants} xact_commit={b[0]-a[0]} ({(b[0]-a[0])/max(grants,1):.3f}/grant) "
      f"wal_sync={b[1]-a[1]} ({(b[1]-a[1])/max(grants,1):.3f}/grant)")
PY
}
bench() { "$bin" bench --concurrency "$C" --duration "$DUR" --warmup "$WARMUP" "$@"; }

echo "== $(git -C "$repo" rev-parse --short HEAD), c=$C, $DUR, load $(cut -d' ' -f1 /proc/loadavg), $(nproc) cores, $(psql -qAtd postgres -c 'SHOW server_version')"
echo "== 1. SQLite control"
p=$(serve "$(config sqlite $BASE_PORT)" $BASE_PORT); pids+=("$p")
bench --server "http://127.0.0.1:$BASE_PORT" --server-pid "$p"
kill "$p"; wait "$p" 2>/dev/null || true

psql -qd postgres -c "CREATE DATABASE $db" -c "REVOKE CONNECT ON DATABASE $db FROM PUBLIC"
url="postgres://$PGUSER@$PGHOST:5432/$db"
a=$(serve "$(config a $((BASE_PORT+1)) "$url" shared)" $((BASE_PORT+1))); pids+=("$a")
b=$(serve "$(config b $((BASE_PORT+2)) "$url" shared)" $((BASE_PORT+2))); pids+=("$b")
echo "== 2. one PostgreSQL replica (the other up, idle)"
settle; s0=$(stats)
bench --server "http://127.0.0.1:$((BASE_PORT+1))" --server-pid "$a"
settle; s1=$(stats); report "one replica" "$s0" "$s1"
echo "== 3. two PostgreSQL replicas, $C clients in all"
bench --server "http://127.0.0.1:$((BASE_PORT+1))" --server "http://127.0.0.1:$((BASE_PORT+2))" --server-pid "$a" --server-pid "$b"
settle; s2=$(stats); report "two replicas" "$s1" "$s2"
echo "== the audit chain after both: $(pg "SELECT count(*), min(seq), max(seq) FROM audit_events") (count, first, last seq)"
