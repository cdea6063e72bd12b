"""An upstream MCP server for Latch's gateway tests, written with the official MCP Python SDK
(MCPServer, formerly FastMCP). It records every call it receives (tool, arguments, and whether
the credential Latch holds for it arrived) as JSON lines in a log file, so a test can check what
reached it and what never did. It never echoes the credential.

    python3 upstream.py http  <port> <log> <sha256 of the expected bearer token>
    python3 upstream.py stdio <log> <sha256 of the expected token in $UPSTREAM_TOKEN>
"""
import hashlib
import json
import os
import sys

from mcp.server.mcpserver import Context, MCPServer

mode = sys.argv[1]
if mode == "http":
    port, log_path, expected = int(sys.argv[2]), sys.argv[3], sys.argv[4]
else:
    log_path, expected = sys.argv[2], sys.argv[3]

server = MCPServer("latch-test-upstream")


def digest(v):
    return hashlib.sha256(v.encode()).hexdigest() if v else ""


def authenticated(ctx: Context) -> bool:
    if mode == "http":
        h = (ctx.headers or {}).get("authorization", "")
        return h.startswith("Bearer ") and digest(h[len("Bearer "):]) == expected
    return digest(os.environ.get("UPSTREAM_TOKEN", "")) == expected


def record(tool, args, ctx):
    ok = authenticated(ctx)
    with open(log_path, "a") as f:
        f.write(json.dumps({"transport": mode, "tool": tool, "args": args, "auth_ok": ok}) + "\n")
    return ok


@server.tool()
def query(query: str, ctx: Context) -> dict:
    """Run a read-only SQL query and return the row count."""
    ok = record("query", {"query": query}, ctx)
    return {"rows": 1, "authenticated": ok, "transport": mode}


@server.tool()
def admin_reset(target: str, ctx: Context) -> dict:
    """Reset a cache (administrative)."""
    ok = record("admin_reset", {"target": target}, ctx)
    return {"reset": target, "authenticated": ok}


if mode == "http":
    server.run("streamable-http", host="127.0.0.1", port=port)
else:
    server.run("stdio")
