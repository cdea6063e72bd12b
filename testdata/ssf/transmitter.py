"""An identity provider's side of Shared Signals for Latch's tests: keys and SETs made with
PyJWT, independent of Latch's code.

  transmitter.py keygen DIR KID   writes DIR/key.pem (EC P-256) and DIR/jwks.json (its public
                                  JWK with `kid` KID, `alg` ES256, `use` sig)
  transmitter.py sign DIR KID TYP reads the claims (JSON) on stdin and prints the compact JWS
                                  signed with DIR/key.pem, header {alg: ES256, kid: KID,
                                  typ: TYP} (TYP "-" leaves `typ` out)
"""

import json
import os
import sys

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def keygen(directory, kid):
    os.makedirs(directory, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with open(os.path.join(directory, "key.pem"), "wb") as f:
        f.write(pem)
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": kid, "alg": "ES256", "use": "sig"})
    with open(os.path.join(directory, "jwks.json"), "w", encoding="utf-8") as f:
        json.dump({"keys": [jwk]}, f)


def sign(directory, kid, typ):
    with open(os.path.join(directory, "key.pem"), "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    claims = json.load(sys.stdin)
    # PyJWT writes `typ: JWT` unless given another, and none at all for `None`.
    headers = {"kid": kid, "typ": None if typ == "-" else typ}
    token = jwt.encode(claims, key, algorithm="ES256", headers=headers)
    print(token)


def main():
    cmd = sys.argv[1]
    if cmd == "keygen":
        keygen(sys.argv[2], sys.argv[3])
    elif cmd == "sign":
        sign(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        raise SystemExit(f"unknown command {cmd!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
