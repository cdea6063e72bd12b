"""A local copilot signing in to Latch by OAuth with the official MCP Python SDK.

    python3 copilot.py <dcr|cimd> <latch base url> <user>

`mcp.client.auth.OAuthClientProvider` drives the whole flow: the 401 from /mcp, RFC 9728 and
RFC 8414 discovery, then dynamic client registration (`dcr`) or a Client ID Metadata Document
served by this script on loopback http (`cimd`), the authorization code flow with PKCE, the
token request, tool calls and a refresh. The redirect handler plays the human's browser: it
follows the authorization URL with an HTTP client (cookie jar), signs `user` in on the
OpenID Provider's login form (panva oidc-provider, started by the Rust test), approves Latch's
consent page and hands the code to the SDK's callback. Prints one JSON line of results.
"""

import asyncio, json, re, sys, threading, http.server
from urllib.parse import urljoin, urlparse, parse_qs

import httpx2
from mcp import ClientSession
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

mode, base, user = sys.argv[1:4]
REDIRECT = "http://127.0.0.1:53682/callback"  # never listened on: the handler stops before it


class Memory:
    def __init__(self):
        self.tokens = None
        self.client = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, t):
        self.tokens = t

    async def get_client_info(self):
        return self.client

    async def set_client_info(self, c):
        self.client = c


def serve_metadata():
    """Serves the client's metadata document on loopback http; returns its URL."""
    holder = {}

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            doc = {"client_id": holder["url"], "client_name": "Test Copilot (CIMD)",
                   "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none",
                   "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"]}
            body = json.dumps(doc).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    holder["url"] = f"http://127.0.0.1:{srv.server_address[1]}/copilot/client.json"
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return holder["url"]


FORM = re.compile(r'(?s)<form[^>]*action="([^"]*)"[^>]*>(.*?)</form>')
HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"\s*/?>')
REFRESH = re.compile(r'http-equiv="refresh" content="0;\s*url=([^"]+)"', re.I)
seen = {"pages": []}


async def browse(url):
    """The human's browser: follow `url` to the redirect URI; returns its query."""
    async with httpx2.AsyncClient(follow_redirects=False, timeout=20) as b:
        r = await b.get(url)
        for _ in range(30):
            if r.status_code in (301, 302, 303, 307, 308):
                nxt = urljoin(str(r.url), r.headers["location"])
                if nxt.startswith(REDIRECT):
                    return parse_qs(urlparse(nxt).query)
                r = await b.get(nxt)
                continue
            text = r.text
            m = REFRESH.search(text)
            if m:
                r = await b.get(urljoin(str(r.url), m.group(1).replace("&amp;", "&")))
                continue
            forms = FORM.findall(text)
            # Latch's consent page also has the header's sign-out form: take the consent one.
            f = next((x for x in forms if "/console/authorize" in x[0]), forms[0] if forms else None)
            if not f:
                raise RuntimeError(f"stuck at {r.url} ({r.status_code}): {text[:500]}")
            action, inner = f[0].replace("&amp;", "&"), f[1]
            fields = dict(HIDDEN.findall(inner))
            fields = {k: v.replace("&amp;", "&").replace("&quot;", '"').replace("&#39;", "'")
                      for k, v in fields.items()}
            if 'name="login"' in inner:
                fields.update(login=user, password="any password")
            if 'name="decision"' in inner:
                seen["pages"].append(text)
                fields["decision"] = "approve"
            r = await b.post(urljoin(str(r.url), action), data=fields)
    raise RuntimeError("the sign-in did not end")


def result(r):
    data = r.structured_content
    if data is None:
        data = json.loads(r.content[0].text)
    return {"error": bool(r.is_error), **data}


async def main():
    out = {}
    codes = asyncio.Queue()

    async def redirect_handler(url):
        out.setdefault("authorization_urls", []).append(url)
        codes.put_nowait(await browse(url))

    async def callback_handler():
        q = await codes.get()
        if "error" in q:
            raise RuntimeError(f"authorization refused: {q}")
        return AuthorizationCodeResult(code=q["code"][0], state=q.get("state", [None])[0],
                                       iss=q.get("iss", [None])[0])

    storage = Memory()
    meta = OAuthClientMetadata(client_name="Test Copilot", redirect_uris=[REDIRECT],
                               grant_types=["authorization_code", "refresh_token"],
                               response_types=["code"], token_endpoint_auth_method="none")
    cimd_url = serve_metadata() if mode == "cimd" else None
    provider = OAuthClientProvider(
        server_url=f"{base}/mcp", client_metadata=meta, storage=storage,
        redirect_handler=redirect_handler, callback_handler=callback_handler,
        # The SDK accepts only https metadata URLs; the test serves its document on loopback
        # http (Latch allows that only while it runs on loopback http itself), so the URL is
        # set on the context after the constructor's check.
        client_metadata_url="https://placeholder.invalid/client.json" if cimd_url else None)
    if cimd_url:
        provider.context.client_metadata_url = cimd_url
    async with httpx2.AsyncClient(auth=provider, timeout=30) as http:
        async with streamable_http_client(f"{base}/mcp", http_client=http) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
                out["client_id"] = storage.client.client_id
                t = result(await session.call_tool("open_task", {
                    "purpose": "fix the flaky cache test", "environment": "sandbox"}))
                out["sandbox_task"] = t
                out["granted"] = result(await session.call_tool("request_access", {
                    "task_id": t["id"], "resource": "ci-cache", "actions": ["read"],
                    "justification": "read cached deps"}))
                p = result(await session.call_tool("open_task", {
                    "purpose": "look at a production incident", "environment": "production"}))
                out["prod_task"] = p
                out["pending"] = result(await session.call_tool("request_access", {
                    "task_id": p["id"], "resource": "payments-db", "actions": ["read"],
                    "ttl_secs": 300, "justification": "read the failing rows"}))
                first = storage.tokens
                # The access token expired (as far as the client knows): it refreshes.
                provider.context.token_expiry_time = 1  # (0 would mean "no expiry")
                out["after_refresh"] = result(await session.call_tool("list_leases", {"task_id": t["id"]}))
                second = storage.tokens
                out["rotated"] = (first.access_token != second.access_token
                                  and first.refresh_token != second.refresh_token)
    out["consent_page"] = seen["pages"][0] if seen["pages"] else ""
    # A fresh connection per request: when a keep-alive connection is closed by the broker just
    # as the next request goes out (seen once under a loaded CI run: "Server disconnected
    # without sending a response"), httpx does not retry the POST; that race between client
    # and server is not what these checks are about.
    async with httpx2.AsyncClient(timeout=30,
                                  limits=httpx2.Limits(max_keepalive_connections=0)) as raw:
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "t", "version": "0"}}}
        hdr = {"Accept": "application/json, text/event-stream"}

        async def mcp_status(tok):
            r = await raw.post(f"{base}/mcp", json=init, headers={**hdr, "Authorization": f"Bearer {tok}"})
            return r.status_code

        out["mcp_with_token"] = await mcp_status(second.access_token)
        # The token is for /mcp only: the REST API itself refuses it.
        r = await raw.get(f"{base}/v1/tasks", headers={"Authorization": f"Bearer {second.access_token}"})
        out["rest_direct"] = {"status": r.status_code, "body": r.json()}
        # A refresh for another resource.
        r = await raw.post(f"{base}/oauth/token", data={
            "grant_type": "refresh_token", "refresh_token": second.refresh_token,
            "client_id": out["client_id"], "resource": "https://elsewhere.example/mcp"})
        out["other_resource"] = {"status": r.status_code, "body": r.json()}
        if mode == "dcr":
            # Replay of the rotated-away refresh token: refused, and the grant is revoked.
            r = await raw.post(f"{base}/oauth/token", data={
                "grant_type": "refresh_token", "refresh_token": first.refresh_token,
                "client_id": out["client_id"]})
            out["replay"] = {"status": r.status_code, "body": r.json()}
        else:
            r = await raw.post(f"{base}/oauth/revoke", data={"token": second.refresh_token})
            out["revoke"] = r.status_code
        out["mcp_after"] = await mcp_status(second.access_token)
        r = await raw.post(f"{base}/oauth/token", data={
            "grant_type": "refresh_token", "refresh_token": second.refresh_token,
            "client_id": out["client_id"]})
        out["refresh_after"] = {"status": r.status_code, "body": r.json()}
    # No secret in what the test prints: the lease's credential and any token are dropped.
    out["granted"].pop("credential", None)
    for k in ("replay", "refresh_after", "other_resource"):
        if k in out:
            out[k]["body"] = {"error": out[k]["body"].get("error")}
    print(json.dumps(out))


asyncio.run(main())
