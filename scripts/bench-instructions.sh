#!/usr/bin/env bash
# Instructions per grant and per introspection, counted by valgrind's callgrind: counts, unlike
# seconds, hold across machines and do not move with the load of the machine (issue 19).
#
# usage: scripts/bench-instructions.sh [path/to/release/latch] [out-dir]
#
# Three runs of `latch serve` (example config, fresh data dir) under callgrind: idle (start and
# stop), 20 s of grants at 4 clients, and the same with `--introspect` (which first collects
# 1,000 granted tokens). Per grant = (grant run - idle run) / grants; per introspection = (the
# third run - idle - its grants, the 1,000 included, x per grant) / introspections. Everything a
# run does besides the calls (start-up, the background jobs) is in the idle run and cancels.
# Prints the two figures and, per grant, the instructions by component
# (scripts/callgrind-buckets.py). Needs valgrind and a release build (`cargo build --release
# -p latch-cli`); takes about 3 minutes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(realpath "${1:-$root/target/release/latch}")
out=${2:-$(mktemp -d /tmp/latch-instr.XXXXXX)}
mkdir -p "$out"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

run() { # label [bench args...]
  local label=$1; shift
  local w="$out/$label"
  rm -rf "$w"; mkdir -p "$w"; cp -r "$root/examples" "$w/examples"
  sed -i "s/127.0.0.1:8080/127.0.0.1:$port/" "$w/examples/latch.toml"
  (cd "$w" && exec valgrind --tool=callgrind --callgrind-out-file="$w/cg.out" \
      "$bin" serve --config examples/latch.toml > "$w/serve.log" 2>&1) &
  local vp=$!
  for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.5; done
  if [ $# -gt 0 ]; then
    "$bin" bench --server "http://127.0.0.1:$port" "$@" --json > "$w/bench.json"
  fi
  kill -TERM "$vp"; wait "$vp" || true
}

run idle
run grant --concurrency 4 --duration 20s --warmup 0s
run introspect --concurrency 4 --duration 20s --warmup 0s --introspect
python3 - "$out" <<'PY'
import json, re, sys
out = sys.argv[1]
def total(label):
    for line in open(f"{out}/{label}/cg.out"):
        if line.startswith("summary:") or line.startswith("totals:"):
            return int(line.split()[1])
def count(label, mode):
    levels = json.load(open(f"{out}/{label}/bench.json"))["levels"]
    return sum(l["requests"] for l in levels if l["mode"] == mode)
idle = total("idle")
grants = count("grant", "grant")
per_grant = (total("grant") - idle) / grants
intro_grants = count("introspect", "grant") + 1000
intros = count("introspect", "introspect")
per_intro = (total("introspect") - idle - intro_grants * per_grant) / intros
print(f"instructions per grant: {per_grant:,.0f} ({grants} grants)")
print(f"instructions per introspection: {per_intro:,.0f} ({intros} introspections)")
open(f"{out}/grants.txt", "w").write(str(grants))
PY
python3 "$root/scripts/callgrind-buckets.py" "$out/grant/cg.out" "$out/idle/cg.out" "$(cat "$out/grants.txt")"
echo "callgrind files in $out (callgrind_annotate $out/grant/cg.out)"
