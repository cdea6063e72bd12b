#!/usr/bin/env python3
"""Runs every shell block of the book's pages against a broker started here.

Usage: doc_blocks.py --latch PATH/TO/latch [--repo ROOT] PAGE.md [PAGE.md ...]

For each page, the ```sh and ```bash blocks are joined in order into one bash script
(`set -euo pipefail`), so a variable set in one block is seen by the next. The script runs in a
fresh directory holding a copy of the repository's `examples/`, with `latch` on PATH, HOME and
LATCH_CONFIG_DIR in that directory, and LATCH_SERVER pointing at a broker started from
`examples/latch.toml` (unless the page starts its own with `latch serve`). The address
`127.0.0.1:8080` is replaced everywhere (blocks and copied examples) by a free port, so pages can
be written with the default address. A page passes when its script exits 0 within the time limit.

What is not run, because the test has already done it (each is listed in
docs/src/testing-the-docs.md): lines that build or install Latch (`cargo build`, `cargo install`,
`alias latch=`) and the test command itself (`./scripts/test.sh`). `cargo run -p latch-cli --` is
run as `latch`. Any other fenced block with a shell info string (`shell`, `console`, `zsh`) fails
the page: write it as `sh`, or as `text` when it is output.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

RUN = {"sh", "bash"}
REFUSED = {"shell", "console", "zsh", "fish", "shell-session", "shellsession"}
SKIP = (
    re.compile(r"^\s*cargo (build|install)\b"),
    re.compile(r"^\s*alias latch="),
    re.compile(r"^\s*\./scripts/test\.sh\b"),
)
DEFAULT_ADDR = "127.0.0.1:8080"
PAGE_TIMEOUT = int(os.environ.get("LATCH_DOC_TIMEOUT", "180"))


def blocks(page: Path) -> list[tuple[int, list[str]]]:
    """The page's shell blocks as (line number of the first line, lines)."""
    out: list[tuple[int, list[str]]] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)", lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.group(1), m.group(2), m.group(3).lower()
        body: list[str] = []
        start = i + 2
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            line = lines[i]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            i += 1
        i += 1
        if lang in REFUSED:
            raise SystemExit(f"{page}:{start - 1}: a `{lang}` block: write it as `sh` (run) or `text` (output)")
        if lang in RUN:
            out.append((start, body))
    return out


def script(page: Path, found: list[tuple[int, list[str]]], addr: str) -> tuple[str, dict[int, int]]:
    """The bash script of a page and the map of its lines to the page's lines."""
    head = [
        "set -euo pipefail",
        'trap \'echo "doc_blocks: failed at script line $LINENO (exit $?)" >&2\' ERR',
    ]
    text = list(head)
    where: dict[int, int] = {}
    for start, body in found:
        text.append(f"# --- {page.name}:{start}")
        for n, line in enumerate(body):
            line = line.replace(DEFAULT_ADDR, addr)
            line = re.sub(r"\bcargo run -p latch-cli --(?= |$)", "latch", line)
            if any(p.match(line) for p in SKIP):
                line = ": skipped by doc_blocks " + shlex.quote(line.strip()[:60])
            text.append(line)
            where[len(text)] = start + n
    return "\n".join(text) + "\n", where


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the broker exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the broker did not become ready in 60s")


def run_page(page: Path, latch: Path, repo: Path) -> bool:
    found = blocks(page)
    if not found:
        print(f"ok   {page} (no shell blocks)")
        return True
    port = free_port()
    addr = f"127.0.0.1:{port}"
    work = Path(tempfile.mkdtemp(prefix="latch-doc-"))
    broker = None
    try:
        shutil.copytree(repo / "examples", work / "examples")
        for f in (work / "examples").rglob("*"):
            if f.is_file() and f.suffix in {".toml", ".yml", ".yaml", ".cedar", ".py"}:
                f.write_text(f.read_text(encoding="utf-8").replace(DEFAULT_ADDR, addr), encoding="utf-8")
        (work / "home").mkdir()
        env = dict(os.environ)
        env.update(
            PATH=f"{latch.parent}:{env.get('PATH', '')}",
            HOME=str(work / "home"),
            LATCH_CONFIG_DIR=str(work / "home" / ".config" / "latch"),
            LATCH_SERVER=f"http://{addr}",
            NO_COLOR="1",
        )
        env.pop("LATCH_TOKEN", None)
        body, where = script(page, found, addr)
        if not any("latch serve" in line for _, b in found for line in b):
            log = work / "broker.log"
            broker = subprocess.Popen(
                [str(latch), "serve", "--config", str(work / "examples" / "latch.toml")],
                cwd=work, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            wait_ready(f"http://{addr}", broker, log)
        (work / "page.sh").write_text(body, encoding="utf-8")
        out_file = work / "page.out"
        with out_file.open("wb") as sink:
            # Output to a file, not a pipe: a background process the page started keeps its
            # copy of the descriptor, and waiting on a pipe would wait for it too.
            proc = subprocess.Popen(
                ["bash", str(work / "page.sh")], cwd=work, env=env,
                stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
            )
            try:
                code = proc.wait(timeout=PAGE_TIMEOUT)
            except subprocess.TimeoutExpired:
                code = f"timeout after {PAGE_TIMEOUT}s"
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        out = out_file.read_bytes()
        text = out.decode("utf-8", "replace")
        if code == 0:
            print(f"ok   {page} ({len(found)} blocks)")
            return True
        m = re.search(r"failed at script line (\d+)", text)
        line = where.get(int(m.group(1))) if m else None
        at = f"{page}:{line}" if line else str(page)
        tail = "\n".join(text.splitlines()[-60:])
        print(f"FAIL {at}: exit {code}\n----- output (last 60 lines)\n{tail}\n-----", flush=True)
        return False
    finally:
        if broker is not None:
            try:
                os.killpg(broker.pid, signal.SIGTERM)
                broker.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(broker.pid, signal.SIGKILL)
        if os.environ.get("LATCH_DOC_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)


LINK = re.compile(r"\]\(([^)\s]+)\)")


def broken_links(page: Path) -> list[str]:
    """Relative links of a page whose target file does not exist (anchors are not checked)."""
    bad = []
    inside = False
    for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if re.match(r"^\s*(`{3,}|~{3,})", line):
            inside = not inside
            continue
        if inside:
            continue
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue
            path = target.split("#", 1)[0]
            if path and not (page.parent / path).exists():
                bad.append(f"{page}:{n}: broken link {target}")
    return bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latch", required=True, type=Path)
    ap.add_argument("--repo", default=Path(__file__).resolve().parent.parent, type=Path)
    ap.add_argument("--jobs", type=int, default=1, help="pages run at once")
    ap.add_argument("pages", nargs="+", type=Path)
    a = ap.parse_args()
    bad = [b for p in a.pages for b in broken_links(p)]
    for b in bad:
        print(b)
    with ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        results = list(pool.map(lambda p: run_page(p, a.latch.resolve(), a.repo.resolve()), a.pages))
    return 0 if all(results) and not bad else 1


if __name__ == "__main__":
    sys.exit(main())
