#!/usr/bin/python3
"""jwt_mint.py: provider keys and tokens for test_jwks_it.c, made with
Debian's python3-jwt (PyJWT) and python3-cryptography, so the relay's
RS256/ES256 checks meet tokens from a library no one here wrote.

Usage:
    jwt_mint.py key DIR KID rsa|ec    make DIR/KID.pem (private key)
    jwt_mint.py jwks DIR KID...       write DIR/jwks.json with those keys' public parts
    jwt_mint.py token DIR KID SUB ISS AZP TTL [CLAIMS]
                                      print a token signed by KID (RS256 for an RSA
                                      key, ES256 for EC); AZP "-" leaves azp out;
                                      CLAIMS, a JSON object, adds claims (email,
                                      first_name, ...: test_identity_it.c)
"""
import json
import sys
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


def load(d, kid):
    with open("%s/%s.pem" % (d, kid), "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


def main(argv):
    cmd, d = argv[1], argv[2]
    if cmd == "key":
        kid, kind = argv[3], argv[4]
        if kind == "rsa":
            k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            k = ec.generate_private_key(ec.SECP256R1())
        pem = k.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        with open("%s/%s.pem" % (d, kid), "wb") as f:
            f.write(pem)
    elif cmd == "jwks":
        keys = []
        for kid in argv[3:]:
            k = load(d, kid)
            if isinstance(k, rsa.RSAPrivateKey):
                j = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(k.public_key()))
                j["alg"] = "RS256"
            else:
                j = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(k.public_key()))
                j["alg"] = "ES256"
            j["kid"] = kid
            j["use"] = "sig"
            keys.append(j)
        with open("%s/jwks.json.new" % d, "w") as f:
            json.dump({"keys": keys}, f)
        import os

        os.replace("%s/jwks.json.new" % d, "%s/jwks.json" % d)
    elif cmd == "token":
        kid, sub, iss, azp, ttl = argv[3], argv[4], argv[5], argv[6], int(argv[7])
        k = load(d, kid)
        alg = "RS256" if isinstance(k, rsa.RSAPrivateKey) else "ES256"
        now = int(time.time())
        claims = {"sub": sub, "iss": iss, "iat": now, "nbf": now, "exp": now + ttl}
        if azp != "-":
            claims["azp"] = azp
        if len(argv) > 8:
            claims.update(json.loads(argv[8]))
        print(jwt.encode(claims, k, algorithm=alg, headers={"kid": kid}))
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main(sys.argv)
