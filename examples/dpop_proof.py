#!/usr/bin/env python3
"""Print a DPoP proof (RFC 9449) for METHOD URL [ACCESS_TOKEN] [NONCE].

The client key (Ed25519) is kept in ./dpop-key.pem, created on first use. Needs PyJWT with
cryptography (`pip install 'pyjwt[crypto]'`). Example:

    curl -H "DPoP: $(python3 examples/dpop_proof.py POST http://127.0.0.1:8080/oauth/token)" ...
"""
import base64
import hashlib
import json
import os
import sys
import time
import uuid

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

KEY = os.environ.get("DPOP_KEY", "dpop-key.pem")


def b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def key() -> Ed25519PrivateKey:
    if os.path.exists(KEY):
        with open(KEY, "rb") as f:
            return serialization.load_pem_private_key(f.read(), password=None)
    k = Ed25519PrivateKey.generate()
    fd = os.open(KEY, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()))
    return k


def main() -> None:
    method, url = sys.argv[1], sys.argv[2]
    token = sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] else None
    nonce = sys.argv[4] if len(sys.argv) > 4 else None
    k = key()
    pub = k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64(pub)}
    claims = {"jti": str(uuid.uuid4()), "htm": method, "htu": url, "iat": int(time.time())}
    if token:
        claims["ath"] = b64(hashlib.sha256(token.encode()).digest())
    if nonce:
        claims["nonce"] = nonce
    print(jwt.encode(claims, k, algorithm="EdDSA", headers={"typ": "dpop+jwt", "jwk": jwk}))
    if os.environ.get("DPOP_PRINT_JKT"):
        canon = json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode()
        print(b64(hashlib.sha256(canon).digest()), file=sys.stderr)


if __name__ == "__main__":
    main()
