#!/usr/bin/env bash
# The test command (README, docs/src/getting-started.md): makes a fresh Debian machine able to run Latch's suite, then runs it.
# Installs what is missing (Python's PyJWT for the interoperability test, the MCP Python SDK for
# the MCP server test, Node.js and the pinned oauth4webapi npm package for the OAuth client test,
# the pinned oidc-provider npm package, Debian's chromium and Python's playwright for the sign-in
# and console tests,
# openapi-spec-validator and schemathesis for the OpenAPI conformance test, OpenSSH server and
# client and OpenSSL for the certificate provider tests, PostgreSQL and Redis when they are not
# already listening on loopback, and starts those two) and runs clippy and rustdoc with warnings
# denied and every test of the workspace. With CI=true a test that cannot reach what it needs
# fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }

apt_install() {
  if command -v apt-get >/dev/null 2>&1; then
    say "installing Debian packages: $*"
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
    else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; fi
  else
    echo "cannot install $* (no apt-get)" >&2
  fi
}

# A C compiler (aws-lc-sys, bundled SQLite) and Python for the independent verifier.
command -v cc >/dev/null 2>&1 || apt_install build-essential
command -v python3 >/dev/null 2>&1 || apt_install python3 python3-pip
if ! python3 -c 'import jwt, cryptography' >/dev/null 2>&1; then
  say "installing PyJWT (independent JWT verifier for the interop test)"
  python3 -m pip install -q 'pyjwt[crypto]>=2.8' 2>/dev/null \
    || python3 -m pip install -q --break-system-packages 'pyjwt[crypto]>=2.8' \
    || apt_install python3-jwt python3-cryptography
fi
python3 -c 'import jwt, cryptography; print("PyJWT", jwt.__version__)'
# SPIFFE tests: the `spiffe` package (py-spiffe) judges every JWT-SVID before Latch does.
if ! python3 -c 'import spiffe.svid.jwt_svid' >/dev/null 2>&1; then
  say "installing spiffe (independent JWT-SVID parser for the SPIFFE tests)"
  python3 -m pip install -q 'spiffe>=0.2,<1' 2>/dev/null \
    || python3 -m pip install -q --break-system-packages 'spiffe>=0.2,<1'
fi
python3 -c 'import importlib.metadata as m; print("spiffe", m.version("spiffe"))'
# URL-mode elicitation (MCP 2025-11-25) needs a recent SDK: upgrade one that lacks it.
if ! python3 -c 'import mcp.types as t; t.ElicitRequestURLParams' >/dev/null 2>&1; then
  say "installing the MCP Python SDK (independent MCP client for the MCP server test)"
  python3 -m pip install -q -U 'mcp' 2>/dev/null \
    || python3 -m pip install -q -U --break-system-packages 'mcp'
fi
python3 -c 'import importlib.metadata as m; print("mcp", m.version("mcp"))'
# Notification tests: an SMTP sink (aiosmtpd) and an independent Standard Webhooks verifier.
if ! python3 -c 'import aiosmtpd, standardwebhooks' >/dev/null 2>&1; then
  say "installing aiosmtpd and standardwebhooks (receivers for the notification tests)"
  python3 -m pip install -q 'aiosmtpd>=1.4' 'standardwebhooks>=1.0' 2>/dev/null \
    || python3 -m pip install -q --break-system-packages 'aiosmtpd>=1.4' 'standardwebhooks>=1.0'
fi
python3 -c 'import importlib.metadata as m; print("aiosmtpd", m.version("aiosmtpd"), "standardwebhooks", m.version("standardwebhooks"))'
# The metrics test parses `/metrics` with the Prometheus project's own Python client.
if ! python3 -c 'import prometheus_client' >/dev/null 2>&1; then
  say "installing prometheus_client (independent parser of the /metrics exposition)"
  python3 -m pip install -q 'prometheus_client>=0.20' 2>/dev/null \
    || python3 -m pip install -q --break-system-packages 'prometheus_client>=0.20'
fi
python3 -c 'import importlib.metadata as m; print("prometheus_client", m.version("prometheus_client"))'
# The OAuth interoperability test drives panva's oauth4webapi (npm) from Node.js: the version
# pinned by testdata/oauth4webapi/package-lock.json, installed there (node_modules is not
# committed). Node 20 or newer (WebCrypto Ed25519).
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || apt_install nodejs npm
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || echo "warning: Node.js $node_major is older than 20; the oauth4webapi test may fail" >&2
if ! (cd testdata/oauth4webapi && npm ls oauth4webapi >/dev/null 2>&1); then
  say "installing oauth4webapi (independent OAuth client for the interop test)"
  (cd testdata/oauth4webapi && npm ci --no-audit --no-fund)
fi
(cd testdata/oauth4webapi && node -p '"oauth4webapi " + require("./node_modules/oauth4webapi/package.json").version')
# Sign-in tests run a real OpenID Provider, panva's oidc-provider (npm, OpenID Certified), pinned
# by testdata/oidc-provider/package-lock.json and started by the tests on a free loopback port.
if ! (cd testdata/oidc-provider && npm ls oidc-provider >/dev/null 2>&1); then
  say "installing oidc-provider (a real OpenID Provider for the sign-in tests)"
  (cd testdata/oidc-provider && npm ci --no-audit --no-fund)
fi
(cd testdata/oidc-provider && node -p '"oidc-provider " + require("./node_modules/oidc-provider/package.json").version')
# The console's end-to-end test drives Debian's headless Chromium with Python's playwright (no
# browser download: the test points playwright at /usr/bin/chromium).
[ -x /usr/bin/chromium ] || apt_install chromium
if ! python3 -c 'import playwright' >/dev/null 2>&1; then
  say "installing playwright (Python; drives Debian's chromium for the console test)"
  python3 -m pip install -q 'playwright>=1.40,<2' 2>/dev/null \
    || python3 -m pip install -q --break-system-packages 'playwright>=1.40,<2'
fi
python3 -c 'import importlib.metadata as m; print("playwright", m.version("playwright"))'
# The HTTP API against its OpenAPI document: openapi-spec-validator (the document is valid
# OpenAPI 3.1) and schemathesis (a property-based fuzzer run against a live broker, `--checks all`).
if ! python3 -c 'import openapi_spec_validator, schemathesis' >/dev/null 2>&1; then
  say "installing openapi-spec-validator and schemathesis (independent checks of the OpenAPI document)"
  python3 -m pip install -q 'openapi-spec-validator>=0.9,<1' 'schemathesis>=4,<5' 2>/dev/null \
    || python3 -m pip install -q --break-system-packages 'openapi-spec-validator>=0.9,<1' 'schemathesis>=4,<5'
fi
python3 -c 'import importlib.metadata as m; print("openapi-spec-validator", m.version("openapi-spec-validator"), "schemathesis", m.version("schemathesis"))'

# The provider tests drive a real sshd (started by the tests themselves on a free loopback port),
# the ssh client and ssh-keygen, and `openssl verify`. Only installed when missing.
[ -x /usr/sbin/sshd ] || apt_install openssh-server
command -v ssh >/dev/null 2>&1 && command -v ssh-keygen >/dev/null 2>&1 || apt_install openssh-client
command -v openssl >/dev/null 2>&1 || apt_install openssl
# The replica failure test restarts a private PostgreSQL of its own (initdb + pg_ctl on a temp dir,
# run as the `postgres` user), so it needs the server binaries even where the shared service runs
# elsewhere.
[ -x /usr/lib/postgresql/15/bin/initdb ] || apt_install postgresql-15
# PostgreSQL (127.0.0.1:5432, user postgres, trust auth on loopback) and Redis (127.0.0.1:6379):
# used where they run; otherwise installed and started here. Tests that still cannot reach them
# print a loud SKIPPING warning (and fail with CI=true).
reachable() { (exec 3<>"/dev/tcp/127.0.0.1/$1") >/dev/null 2>&1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! reachable 5432; then
  [ -x /usr/lib/postgresql/15/bin/postgres ] || apt_install postgresql-15
  hba=$(ls /etc/postgresql/*/main/pg_hba.conf 2>/dev/null | head -n 1)
  if [ -n "$hba" ] && ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
    say "PostgreSQL: trust auth on loopback for the tests ($hba)"
    as_root sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
  fi
  say "starting PostgreSQL"
  as_root service postgresql start || as_root pg_ctlcluster 15 main start || true
  for _ in $(seq 1 30); do reachable 5432 && break; sleep 1; done
fi
if ! reachable 6379; then
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  say "starting Redis"
  redis-server --port 6379 --bind 127.0.0.1 --save '' --appendonly no --daemonize yes || true
  for _ in $(seq 1 30); do reachable 6379 && break; sleep 1; done
fi

command -v cargo >/dev/null 2>&1 || { echo "cargo is required (rustup)" >&2; exit 1; }
# The book's shell blocks (it::docs) use curl, jq, the sqlite3 shell, psql and redis-cli.
command -v curl >/dev/null 2>&1 || apt_install curl
command -v jq >/dev/null 2>&1 || apt_install jq
command -v sqlite3 >/dev/null 2>&1 || apt_install sqlite3
command -v psql >/dev/null 2>&1 || apt_install postgresql-client
command -v redis-cli >/dev/null 2>&1 || apt_install redis-tools
# The book (docs/) is built with mdBook by it::docs (the HTML renderer only: no server, no
# watcher). Pinned, and built from crates.io where it is missing.
if ! mdbook --version 2>/dev/null | grep -q 'v0\.5\.4'; then
  say "installing mdBook 0.5.4 (cargo install)"
  cargo install mdbook --version 0.5.4 --locked --no-default-features --quiet
fi
# The rules the build enforces (workspace lints in Cargo.toml, thresholds in clippy.toml): no
# unwrap/expect/panic in library code, documented public items, no function over 120 lines.
lint_status=0
say "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings || lint_status=1
say "cargo doc --workspace --no-deps (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked || lint_status=1
say "cargo test --workspace"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
# Two cores: keep parallel tests from oversubscribing the machine.
cargo test --workspace --locked --no-fail-fast -- --test-threads 4 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# cargo's last summary is a doc-test run that may count 0; close with the workspace total.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "workspace: %d passed, %d failed\n", p, f }' "$log"
[ "$lint_status" = 0 ] || { echo "clippy or rustdoc reported problems (above)" >&2; [ "$status" != 0 ] || status=1; }
exit "$status"
