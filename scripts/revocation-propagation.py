#!/usr/bin/env python3
"""Measures how long a revocation on one replica takes to reach another replica's introspection.

Usage: scripts/revocation-propagation.py http://127.0.0.1:PORT_A http://127.0.0.1:PORT_B [rounds]

Both replicas must share one PostgreSQL store and have the development issuer and the example
introspection client (`demo-resource-server` / `demo-secret`). Each round: grant on B, introspect
on A (active, so A has it cached), revoke on B, then poll A's introspection back to back until it
answers inactive. Prints the delay from the revocation's acknowledgement to A answering inactive.
"""
import base64, http.client, json, sys, time
from urllib.parse import urlparse, urlencode

def conn(base):
    u = urlparse(base)
    return http.client.HTTPConnection(u.hostname, u.port)

def call(c, method, path, body=None, token=None, form=False):
    headers = {}
    if token:
        headers["Authorization"] = "Bearer " + token
    data = None
    if form:
        headers["Authorization"] = "Basic " + base64.b64encode(b"demo-resource-server:demo-secret").decode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        data = urlencode(body)
    elif body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body)
    c.request(method, path, body=data, headers=headers)
    r = c.getresponse()
    return r.status, json.loads(r.read() or b"null")

def main():
    a, b = conn(sys.argv[1]), conn(sys.argv[2])
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 50
    _, t = call(b, "POST", "/v1/dev/tokens", {"kind": "workload", "repository": "acme/payments-api",
        "git_ref": "refs/heads/main", "actor": "alice", "run_id": "9", "ttl_secs": 3600})
    tok = t["token"]
    s, task = call(b, "POST", "/v1/tasks", {"purpose": "propagation", "environment": "sandbox"}, tok)
    assert s == 201, task
    delays = []
    for _ in range(rounds):
        s, g = call(b, "POST", f"/v1/tasks/{task['id']}/requests",
                    {"resource": "ci-cache", "actions": ["read"], "justification": "j"}, tok)
        assert s == 201, g
        cred, lease = g["credential"]["value"], g["lease"]["id"]
        s, i = call(a, "POST", "/v1/oauth/introspect", {"token": cred}, form=True)
        assert i["active"] is True, i
        s, r = call(b, "POST", f"/v1/leases/{lease}/revoke", {}, tok)
        assert s == 200, r
        acked = time.perf_counter()
        polls = 0
        while True:
            polls += 1
            _, i = call(a, "POST", "/v1/oauth/introspect", {"token": cred}, form=True)
            if not i["active"]:
                break
        delays.append((time.perf_counter() - acked) * 1000)
    delays.sort()
    pct = lambda p: delays[min(len(delays) - 1, int(p * len(delays)))]
    print(f"rounds {len(delays)}: after the revocation was acknowledged on B, A answered inactive in "
          f"p50 {pct(0.5):.2f} ms, p99 {pct(0.99):.2f} ms, max {delays[-1]:.2f} ms "
          "(each figure includes one introspection round trip)")

main()
