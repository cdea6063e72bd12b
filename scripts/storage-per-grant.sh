#!/usr/bin/env bash
# Bytes stored per grant (issue 19 item 4), on the embedded SQLite and on PostgreSQL, each on a
# fresh database: a broker on the example configuration makes grants (`latch bench`, C clients
# for DUR), stops, and each table with its indexes is measured and divided by the grants made
# (leases inserted). Two figures per store:
#   live      everything, while the grants' tasks, requests and leases are still stored;
#   retained  the audit trail with its indexes: what a grant leaves once retention has pruned
#             its ended task, request and lease (`[retention] ended_tasks`; the audit trail
#             keeps every record).
# SQLite is measured with the dbstat table (pages in use, after a WAL checkpoint), PostgreSQL
# with pg_total_relation_size (heap, TOAST and indexes) after a VACUUM.
# Usage: scripts/storage-per-grant.sh [path/to/latch]   (default target/release/latch)
# Env:   C=8 clients, DUR=5s, PGHOST=127.0.0.1, PGUSER=postgres, PORT=18973, KEEP=1 keeps
#        the PostgreSQL database (its name is printed).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=$(realpath "${1:-$repo/target/release/latch}")
C=${C:-8}; DUR=${DUR:-5s}; port=${PORT:-18973}
export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres}
work=$(mktemp -d); db="latch_storage_$$"; pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    wait 2>/dev/null || true
    [ -n "${KEEP:-}" ] && echo "kept database $db" || psql -qd postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# grants NAME [STORE_URL]: a broker on its own copy of the example configuration, C clients
# for DUR, then stopped.
grants() {
    local dir="$work/$1"; mkdir -p "$dir"; cp -r "$repo/examples/." "$dir/"
    sed -i "s/^listen = .*/listen = \"127.0.0.1:$port\"/; s#^data_dir = .*#data_dir = \"$dir/data\"#; s/^watch = true/watch = false/" "$dir/latch.toml"
    if [ -n "${2:-}" ]; then sed -i "s#^\[store\]#[store]\nurl = \"$2\"#" "$dir/latch.toml"; fi
    LATCH_LOG=warn "$bin" serve --config "$dir/latch.toml" > "$dir/serve.log" 2>&1 & pid=$!
    for _ in $(seq 150); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
    "$bin" bench --server "http://127.0.0.1:$port" --concurrency "$C" --duration "$DUR" --warmup 0s >/dev/null 2>&1
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
}

echo "== $(git -C "$repo" rev-parse --short HEAD), c=$C, $DUR"
grants sqlite
f="$work/sqlite/data/latch.db"
sqlite3 "$f" "PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null
sqlite3 "$f" <<'SQL'
.mode list
WITH g AS (SELECT count(*) AS n FROM leases),
     t AS (SELECT CASE WHEN d.name IN (SELECT name FROM sqlite_schema WHERE type = 'index')
                       THEN (SELECT tbl_name FROM sqlite_schema s WHERE s.name = d.name) ELSE d.name END AS tbl,
                  d.pgsize - d.unused AS used, d.pgsize FROM dbstat d)
SELECT 'SQLITE grants=' || g.n || ' page_size=' || (SELECT page_size FROM pragma_page_size)
    || ' live=' || ((SELECT sum(pgsize) FROM t) / g.n)
    || ' retained=' || ((SELECT sum(pgsize) FROM t WHERE tbl = 'audit_events') / g.n)
    || ' leases=' || ((SELECT sum(pgsize) FROM t WHERE tbl = 'leases') / g.n)
    || ' requests=' || ((SELECT sum(pgsize) FROM t WHERE tbl = 'requests') / g.n)
    || ' (bytes per grant, pages)'
FROM g;
SQL

psql -qd postgres -c "CREATE DATABASE $db" -c "REVOKE CONNECT ON DATABASE $db FROM PUBLIC"
grants postgres "postgres://$PGUSER@$PGHOST:5432/$db"
psql -qd "$db" -c "VACUUM ANALYZE" >/dev/null
psql -qAtd "$db" <<'SQL'
WITH g AS (SELECT count(*) AS n FROM leases)
SELECT 'POSTGRES grants=' || g.n
    || ' live=' || ((SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
                    WHERE s.nspname = 'public' AND c.relkind = 'r')::bigint / g.n)
    || ' retained=' || (pg_total_relation_size(CASE WHEN to_regclass('audit_log') IS NULL THEN 'audit_events' ELSE 'audit_log' END) / g.n)
    || ' leases=' || (pg_total_relation_size('leases') / g.n)
    || ' requests=' || (pg_total_relation_size('requests') / g.n)
    || ' (bytes per grant, relations with TOAST and indexes)'
FROM g;
SQL
