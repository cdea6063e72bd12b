"""A Shared Signals receiver for Latch's tests, independent of Latch's code.

Accepts Security Event Tokens pushed over HTTP (RFC 8935) and verifies each with PyJWT against
the transmitter's published JWK Set: the `typ` header (`secevent+jwt`, RFC 8417 section 2.3),
the signature, `iss`, `aud`, `iat` and `jti` present, no `sub` and no `exp` (OpenID Shared
Signals Framework 1.0 section 4.1), one event in `events`, a `sub_id` object. Every push is
appended to --out as one JSON line: {"status": ..., "header": ..., "claims": ...} for a
verified SET, {"status": ..., "error": ...} otherwise.

  receiver.py --out FILE --settings FILE [--fail-first N] [--refuse-first N]
              [--authorization VALUE]

--settings names a JSON file {"issuer": ..., "jwks_url": ..., "audience": ...}, read at each
push (so it can be written once the transmitter's address is known).

--fail-first N answers the first N pushes 500 (the transmitter must retry them);
--refuse-first N answers the first N verified SETs 400 {"err": "invalid_request"} (the
transmitter must drop them). Prints "PORT <n>" once listening on 127.0.0.1.
"""

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt

EVENTS = {
    "https://schemas.openid.net/secevent/caep/event-type/session-revoked",
    "https://schemas.openid.net/secevent/caep/event-type/credential-change",
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--settings", required=True)
    p.add_argument("--fail-first", type=int, default=0)
    p.add_argument("--refuse-first", type=int, default=0)
    p.add_argument("--authorization")
    a = p.parse_args()
    lock = threading.Lock()
    budget = {"fail": a.fail_first, "refuse": a.refuse_first}

    def record(entry):
        with lock, open(a.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")

    def verify(token):
        with open(a.settings, encoding="utf-8") as f:
            settings = json.load(f)
        jwks = jwt.PyJWKClient(settings["jwks_url"], cache_keys=False)
        header = jwt.get_unverified_header(token)
        if header.get("typ") != "secevent+jwt":
            raise ValueError(f"typ is {header.get('typ')!r}")
        key = jwks.get_signing_key_from_jwt(token)
        claims = jwt.decode(
            token,
            key.key,
            algorithms=["EdDSA", "ES256"],
            audience=settings["audience"],
            issuer=settings["issuer"],
            options={"require": ["iss", "aud", "iat", "jti"], "verify_exp": False},
        )
        if "sub" in claims or "exp" in claims:
            raise ValueError("a SET carries neither sub nor exp")
        events = claims.get("events")
        if not isinstance(events, dict) or len(events) != 1 or not set(events) <= EVENTS:
            raise ValueError(f"unexpected events {events!r}")
        if not isinstance(claims.get("sub_id"), dict):
            raise ValueError("no sub_id object")
        return header, claims

    class Handler(BaseHTTPRequestHandler):
        def answer(self, status, body=None):
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            if body is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            token = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
            with lock:
                fail = budget["fail"] > 0
                budget["fail"] -= 1 if fail else 0
            if fail:
                record({"status": 500, "error": "failing on purpose"})
                return self.answer(500)
            if a.authorization and self.headers.get("Authorization") != a.authorization:
                record({"status": 400, "error": "authorization header missing or wrong"})
                return self.answer(400, {"err": "authentication_failed"})
            if self.headers.get("Content-Type") != "application/secevent+jwt":
                record({"status": 400, "error": "content type"})
                return self.answer(400, {"err": "invalid_request"})
            try:
                header, claims = verify(token)
            except Exception as e:  # noqa: BLE001 - every failure is recorded and refused
                record({"status": 400, "error": f"{type(e).__name__}: {e}"})
                return self.answer(400, {"err": "invalid_key", "description": str(e)})
            with lock:
                refuse = budget["refuse"] > 0
                budget["refuse"] -= 1 if refuse else 0
            status = 400 if refuse else 202
            record({"status": status, "header": header, "claims": claims})
            if refuse:
                return self.answer(400, {"err": "invalid_request", "description": "refused on purpose"})
            return self.answer(202)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
