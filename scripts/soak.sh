#!/usr/bin/env bash
# Constant-load soak (issue 19 item 4), on the embedded SQLite store or, with STORE=postgres, on a
# fresh PostgreSQL database: a broker on the example
# configuration with retention of ended tasks and audit records turned on (an audit sink that
# discards what it is sent, served by the driver), then `scripts/soak.py` keeps LIVE leases
# live for MINUTES at RATE tasks per second, sampling the database every minute. Passes when
# the database file at the end is no larger than after ten minutes, with no failed call.
# Usage: scripts/soak.sh [path/to/latch]   (default target/release/latch)
# Env:   MINUTES=60 RATE=100 LIVE=200 WORKERS=8 PORT=18974 SINK_PORT=18975
#        ENDED=1m AUDIT=2m INTERVAL=15s CHECKPOINT=15s (the retention settings), KEEP=1 keeps
#        the work directory (its path is printed), STORE=sqlite|postgres, PGHOST=127.0.0.1,
#        PGUSER=postgres, TASK_MAX=2m (the tasks' longest and default TTL).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=$(realpath "${1:-$repo/target/release/latch}")
MINUTES=${MINUTES:-60}; RATE=${RATE:-100}; LIVE=${LIVE:-200}; WORKERS=${WORKERS:-8}
port=${PORT:-18974}; sink_port=${SINK_PORT:-18975}
STORE=${STORE:-sqlite}
export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres}
work=$(mktemp -d); pid=; pgdb="latch_soak_$$"
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    [ -n "${vacuum:-}" ] && kill "$vacuum" 2>/dev/null || true
    wait 2>/dev/null || true
    [ "$STORE" = postgres ] && [ -z "${KEEP:-}" ] && \
        psql -qd postgres -c "DROP DATABASE IF EXISTS $pgdb WITH (FORCE)" >/dev/null 2>&1 || true
    if [ -n "${KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
cp -r "$repo/examples/." "$work/"
sed -i "s/^listen = .*/listen = \"127.0.0.1:$port\"/; s#^data_dir = .*#data_dir = \"$work/data\"#; s/^watch = true/watch = false/" "$work/latch.toml"
# Tasks of at most TASK_MAX (audit retention is at least the longest task).
sed -i "s/^default_ttl = \"1h\"/default_ttl = \"${TASK_MAX:-2m}\"/; s/^max_ttl = \"8h\"/max_ttl = \"${TASK_MAX:-2m}\"/" "$work/latch.toml"
db="$work/data/latch.db"
if [ "$STORE" = postgres ]; then
    db="postgres://$PGUSER@$PGHOST:5432/$pgdb"
    psql -qd postgres -c "CREATE DATABASE $pgdb" -c "REVOKE CONNECT ON DATABASE $pgdb FROM PUBLIC"
    sed -i "s#^\[store\]#[store]\nurl = \"$db\"#" "$work/latch.toml"
fi
cat >> "$work/latch.toml" <<TOML

[retention]
ended_tasks = "${ENDED:-1m}"
interval = "${INTERVAL:-15s}"
audit = "${AUDIT:-2m}"

[audit]
checkpoint_interval = "${CHECKPOINT:-15s}"

[[audit.sinks]]
kind = "webhook"
name = "archive"
url = "http://127.0.0.1:$sink_port/audit"
TOML
echo "== $(git -C "$repo" rev-parse --short HEAD) $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)," \
     "$STORE, $MINUTES min, $RATE tasks/s, $LIVE live leases, $WORKERS workers"
vacuum=
if [ "$STORE" = postgres ] && [ "$(psql -qAtd postgres -c 'SHOW autovacuum')" = off ]; then
    # This machine's PostgreSQL runs with autovacuum off (CI's conf.d): stand in for it with a
    # plain VACUUM of the soak's database every minute, as autovacuum would run.
    echo "autovacuum is off here: VACUUM every minute stands in for it"
    ( while sleep 60; do psql -qd "$db" -c "VACUUM" >/dev/null 2>&1 || true; done ) & vacuum=$!
fi
LATCH_LOG=warn "$bin" serve --config "$work/latch.toml" > "$work/serve.log" 2>&1 & pid=$!
for _ in $(seq 150); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
python3 "$repo/scripts/soak.py" "http://127.0.0.1:$port" "$db" \
    --minutes "$MINUTES" --rate "$RATE" --live "$LIVE" --workers "$WORKERS" --sink-port "$sink_port" --pid "$pid"
