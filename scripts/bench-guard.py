#!/usr/bin/env python3
"""Compares a `latch bench --json` run with the last committed figures (issue 19, item 2).

A measurement, not a test: run it by hand (or in a benchmark job) on a quiet machine after
`latch bench --json ... > run.json`:

    python3 scripts/bench-guard.py run.json                    # against benchmarks/baseline.json
    python3 scripts/bench-guard.py run.json --tolerance 0.15
    python3 scripts/bench-guard.py run.json --update           # make this run the new baseline

For every level (mode and concurrency) in both documents it compares the rate (must not fall
below baseline x (1 - tolerance)), the p99 latency (must not rise above baseline x
(1 + 2 x tolerance): tails are noisier) and, when both runs had `--server-pid`, the broker CPU
per call (must not rise above baseline x (1 + tolerance)). CPU per call is the figure that
holds best across machines; rates only compare on the same machine, so the baseline records
the machine it was measured on and the guard says when the machines differ.

Exit status: 0 when nothing regressed, 1 when something did, 2 on bad input.
"""

import argparse
import json
import os
import platform
import sys

DEFAULT_BASELINE = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "baseline.json")


def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"bench-guard: cannot read {path}: {e}")
    if not isinstance(doc, dict) or not isinstance(doc.get("levels"), list):
        sys.exit(f"bench-guard: {path} is not `latch bench --json` output (no `levels`)")
    return doc


def levels(doc):
    return {(lv["mode"], lv["concurrency"]): lv for lv in doc["levels"]}


def machine():
    return {"cores": os.cpu_count(), "machine": platform.machine(), "system": platform.system()}


def compare(base, run, tol):
    """Yields (level, figure, baseline, current, limit, ok) for every compared figure."""
    b, r = levels(base), levels(run)
    for key in sorted(set(b) & set(r)):
        bl, rl = b[key], r[key]
        yield key, "rate/s", bl["rate_per_sec"], rl["rate_per_sec"], \
            bl["rate_per_sec"] * (1 - tol), rl["rate_per_sec"] >= bl["rate_per_sec"] * (1 - tol)
        p99_limit = bl["p99_ms"] * (1 + 2 * tol)
        yield key, "p99 ms", bl["p99_ms"], rl["p99_ms"], p99_limit, rl["p99_ms"] <= p99_limit
        bc, rc = bl.get("server_cpu_us_per_call"), rl.get("server_cpu_us_per_call")
        if bc is not None and rc is not None:
            yield key, "srv µs/call", bc, rc, bc * (1 + tol), rc <= bc * (1 + tol)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="`latch bench --json` output of the run to judge")
    ap.add_argument("--baseline", default=DEFAULT_BASELINE)
    ap.add_argument("--tolerance", type=float, default=0.20,
                    help="allowed relative loss (default 0.20)")
    ap.add_argument("--update", action="store_true",
                    help="write the run as the new baseline (with this machine's description)")
    a = ap.parse_args()
    if not 0 <= a.tolerance < 1:
        sys.exit("bench-guard: --tolerance must be in [0, 1)")
    run = load(a.run)
    if a.update:
        run = dict(run, machine=machine())
        with open(a.baseline, "w", encoding="utf-8") as f:
            json.dump(run, f, indent=2, ensure_ascii=False)
            f.write("\n")
        print(f"bench-guard: {a.baseline} now holds this run")
        return 0
    base = load(a.baseline)
    if base.get("machine") and base["machine"] != machine():
        print(f"note: the baseline was measured on {base['machine']}, this is {machine()}: "
              "compare CPU per call, not rates", file=sys.stderr)
    rows = list(compare(base, run, a.tolerance))
    if not rows:
        print("bench-guard: no level in common with the baseline", file=sys.stderr)
        return 2
    bad = 0
    print(f"{'level':<16} {'figure':<12} {'baseline':>10} {'this run':>10} {'limit':>10}  verdict")
    for (mode, conc), fig, b, r, limit, ok in rows:
        bad += not ok
        print(f"{mode + ' c=' + str(conc):<16} {fig:<12} {b:>10.2f} {r:>10.2f} {limit:>10.2f}  "
              f"{'ok' if ok else 'REGRESSED'}")
    print(f"bench-guard: {bad} regression(s) at tolerance {a.tolerance:.0%}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
